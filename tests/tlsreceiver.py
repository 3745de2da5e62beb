"""A syslog receiver over TLS (RFC 5425: octet-counted frames in a TLS
stream) for the forwarding tests, in a thread of the test process on
127.0.0.1 and a free port, with a certificate made by the ``openssl`` command;
and a TCP relay in front of it that keeps every byte the client sent, so a
test can see what went over the wire."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import List, Tuple

#: Whether the ``openssl`` command is here to make certificates.
AVAILABLE = shutil.which("openssl") is not None


def make_certificate(directory: Path, name: str) -> Tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and its key), made by ``openssl``."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def _unblock(sock: socket.socket) -> None:
    """Close a listening socket, waking the thread blocked in its accept()
    (closing alone does not, on Linux)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected: nothing to wake
    sock.close()


class TlsReceiver:
    """Accepts TLS connections with ``cert``/``key`` and keeps each message of
    their octet-counted frames in :attr:`messages`; counts failed handshakes
    in :attr:`refused`."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(str(cert), str(key))
        self._sock = _listening()
        self.port: int = self._sock.getsockname()[1]
        self.messages: List[bytes] = []
        self.refused = 0
        self.torn = 0  # frames whose length or end did not parse
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._sock.accept()
            except OSError:  # closed by stop()
                return
            try:
                conn = self._context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, ConnectionError):
                self.refused += 1
                raw.close()
                continue
            with conn:
                try:
                    self._read(conn)
                except (ssl.SSLEOFError, ConnectionError):
                    pass  # the client closed without a TLS close_notify: what was read is kept

    def _read(self, conn: ssl.SSLSocket) -> None:
        buffer = b""
        while True:
            data = conn.recv(65536)
            if not data:
                self.torn += bool(buffer)
                return
            buffer += data
            while b" " in buffer[:12]:
                length, _, rest = buffer.partition(b" ")
                if not length.isdigit():
                    self.torn += 1
                    return
                if len(rest) < int(length):
                    break
                self.messages.append(rest[: int(length)])
                buffer = rest[int(length) :]

    def stop(self) -> None:
        """Stop accepting (a connection in progress ends with its client)."""
        _unblock(self._sock)
        self._thread.join(10)


class Relay:
    """Relays TCP connections from its own port to ``port``, keeping every byte
    a client sent in :attr:`sent`."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._sock = _listening()
        self.port: int = self._sock.getsockname()[1]
        self._sent: List[bytes] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def sent(self) -> bytes:
        """Every byte clients sent so far."""
        with self._lock:
            return b"".join(self._sent)

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._target), timeout=10)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, keep: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if keep:
                    with self._lock:
                        self._sent.append(data)
                target.sendall(data)
        except OSError:
            pass  # the other side closed: the connection is over
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already shut
                sock.close()

    def stop(self) -> None:
        """Stop accepting."""
        _unblock(self._sock)
