"""Octet-counted syslog over TCP (RFC 6587 framing, RFC 5425 over TLS), and
what every transport shares: connecting, and noticing a receiver that left.

TCP has no acknowledgements: a batch counts as delivered once the kernel took
it. What a receiver that crashes had not yet processed (its socket buffer, its
own queue) and what was sent before its end was noticed are lost.
"""

from __future__ import annotations

import select
import socket
import sys
from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:  # ssl costs milliseconds to import; only TLS needs it
    import ssl

__all__ = ["OctetTransport", "ProtocolError", "closed", "connect", "refusal"]

#: How long connecting, and each send, may take before the receiver counts as down.
CONNECT_SECONDS = 5.0
SEND_SECONDS = 10.0


class ProtocolError(OSError):
    """The receiver answered something unexpected (or refused a message)."""


def connect(address: Tuple[str, int], ssl_context: Optional["ssl.SSLContext"]) -> socket.socket:
    """A connected (and, with ``ssl_context``, TLS-wrapped) blocking socket."""
    sock = socket.create_connection(address, timeout=CONNECT_SECONDS)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=address[0])
        sock.settimeout(SEND_SECONDS)
    except BaseException:
        sock.close()
        raise
    return sock


def readable(sock: socket.socket, timeout: float) -> bool:
    """Whether ``sock`` has something to read within ``timeout`` seconds."""
    pending = getattr(sock, "pending", None)  # a TLS socket's decrypted bytes
    if pending is not None and pending():
        return True
    return bool(select.select([sock], [], [], timeout)[0])


def closed(sock: socket.socket) -> bool:
    """Whether the receiver closed ``sock``, which has something to read
    (anything it sent besides is discarded: octet-counted syslog has no answers).

    Raises:
        OSError: the connection failed.
    """
    # Without waiting: over TLS 1.3 the receiver's first bytes are session
    # tickets, which hold no application data, and a blocking recv would then
    # wait the whole send timeout for data that never comes.
    sock.settimeout(0)
    try:
        return not sock.recv(4096)
    except OSError as exc:
        ssl = sys.modules.get("ssl")  # loaded if the socket is a TLS one
        if isinstance(exc, BlockingIOError) or (ssl is not None and isinstance(exc, ssl.SSLWantReadError)):
            return False
        raise
    finally:
        sock.settimeout(SEND_SECONDS)


def refusal(sock: socket.socket, error: OSError) -> OSError:
    """Why the receiver ended the connection as the session opened: its TLS
    alert if it sent one (it does not accept this client's certificate, say),
    else ``error``, said as a session the receiver ended without a reason.

    Over TLS 1.3 the client's handshake ends before the receiver has checked
    the client's certificate: the receiver's alert and close may come before
    the client's first send, which then fails with a broken pipe that names
    no reason, while the alert waits to be read. A receiver may also close
    without an alert the client can read (rsyslogd's imrelp, now and then):
    the client then sees only the end of the stream.
    """
    ssl = sys.modules.get("ssl")  # loaded if the socket is a TLS one
    if ssl is None or not isinstance(sock, ssl.SSLSocket):
        return error
    # An alert is an SSLError; a clean close, an end of stream or nothing yet is not a reason.
    no_reason = (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError)

    def is_alert(exc: OSError) -> bool:
        return isinstance(exc, ssl.SSLError) and not isinstance(exc, no_reason)

    if is_alert(error):
        return error  # the read that failed got the alert itself
    sock.settimeout(0)
    try:
        sock.recv(1)
    except OSError as exc:
        if is_alert(exc):
            return exc
    finally:
        sock.settimeout(SEND_SECONDS)
    return ConnectionError(
        f"the receiver ended the TLS session as it opened, without saying why ({error}): "
        "a receiver that does not accept this client's certificate may do that; its log says"
    )


class OctetTransport:
    """Sends each message as ``LENGTH SP MESSAGE``; nothing is acknowledged,
    so every batch counts as delivered once sent.

    Args:
        sock: a connected socket (see :func:`connect`).
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sent = 0
        self._sending = 0

    def send(self, messages: List[bytes]) -> None:
        """Send one batch.

        Raises:
            OSError: the receiver is gone (seen as end of stream, or a failed send).
        """
        # A receiver that crashed closed its end: the kernel has the end of
        # stream for us. Without this check the batch would go into the send
        # buffer and be lost with the reset that follows.
        if readable(self._sock, 0) and closed(self._sock):
            raise ConnectionError("the receiver closed the connection")
        # Until it is sent, the batch may be partly delivered: if the send
        # fails, it is sent again and counted as such.
        self._sending = len(messages)
        self._sock.sendall(b"".join([b"%d %b" % (len(message), message) for message in messages]))
        self._sending = 0
        self._sent += 1

    def pending(self) -> int:
        """Messages sent and not acknowledged: with TCP, only those of a send that failed."""
        return self._sending

    def room(self) -> int:
        """How many more messages may be sent before acknowledgements: any number, with TCP."""
        return 1 << 30

    def acknowledged(self, timeout: float) -> int:
        """Batches acknowledged since the last call (every one sent)."""
        sent, self._sent = self._sent, 0
        return sent

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()
