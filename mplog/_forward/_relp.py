"""The RELP client protocol (librelp's, as rsyslog's imrelp speaks it): an
``open`` offering the ``syslog`` command, one ``syslog`` frame per message
with its transaction number, ``rsp 200`` acknowledgements in order, within a
window of unacknowledged messages, and ``close``.

A frame is ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``; transaction numbers
run from 1 to 999,999,999 and wrap to 1.
"""

from __future__ import annotations

import collections
import re
import socket
import time
from typing import Deque, List, Optional, Tuple

from ._tcp import SEND_SECONDS, ProtocolError, readable, refusal

__all__ = ["RelpTransport"]

#: Messages sent and not yet acknowledged, at most.
WINDOW = 2048
#: How long acknowledgements may be awaited before the receiver counts as gone.
ACK_SECONDS = 10.0
_OFFERS = b"relp_version=0\nrelp_software=mplog\ncommands=syslog"
_MAX_TXNR = 999_999_999
_OK = b" rsp 6 200 OK\n"
_RSP = re.compile(rb"(\d{1,9}) (\w{1,32}) (\d{1,9})[ \n]")


def _next(txnr: int) -> int:
    return 1 if txnr >= _MAX_TXNR else txnr + 1


class RelpTransport:
    """A RELP session on a connected socket.

    Args:
        sock: a connected socket (see :func:`mplog._forward._tcp.connect`).

    Raises:
        ProtocolError: the receiver refused the session.
        OSError: the connection failed.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._txnr = 1
        self._expected = 1  # the next acknowledgement
        # How many messages each batch in flight holds, and how many of the
        # first one are acknowledged.
        self._batches: Deque[int] = collections.deque()
        self._front_acked = 0
        self._unacked = 0
        self._acked_batches = 0
        try:
            self._command(b"open", _OFFERS)
            data = self._response(ACK_SECONDS)
        except ProtocolError:
            raise
        except OSError as exc:  # refused after the handshake?
            raise refusal(sock, exc) from exc
        if not data.startswith(b"200"):
            raise ProtocolError(f"the RELP receiver refused the session: {data[:200]!r}")

    def send(self, messages: List[bytes]) -> None:
        """Send one batch (a frame per message)."""
        txnr = self._txnr
        frames = []
        for message in messages:
            frames.append(b"%d syslog %d %b\n" % (txnr, len(message), message))
            txnr = _next(txnr)
        # Counted before it is sent: a send that fails half-way may have
        # delivered some of it, which is then sent again.
        self._txnr = txnr
        self._batches.append(len(messages))
        self._unacked += len(messages)
        self._sock.sendall(b"".join(frames))

    def pending(self) -> int:
        """Messages sent and not acknowledged."""
        return self._unacked

    def room(self) -> int:
        """How many more messages the window of unacknowledged ones has room for."""
        return WINDOW - self._unacked

    def acknowledged(self, timeout: float) -> int:
        """Read the acknowledgements there are (waiting up to ``timeout`` s for
        one if none is there); return how many more batches are wholly acknowledged.

        Raises:
            ProtocolError: a message was refused, or an answer is out of order.
            OSError: the connection failed or ended.
        """
        if readable(self._sock, timeout):
            self._receive()
        count, self._acked_batches = self._acked_batches, 0
        return count

    def close(self) -> None:
        """End the session (``close``, answered within a second or not), and the connection."""
        try:
            if not self._unacked:
                self._command(b"close", b"")
                self._response(1.0)
        except OSError:
            pass
        finally:
            self._sock.close()

    def _command(self, command: bytes, data: bytes) -> None:
        txnr = self._txnr
        self._txnr = _next(txnr)
        self._expected = self._txnr
        separator = b" " if data else b""
        self._sock.sendall(b"%d %b %d%b%b\n" % (txnr, command, len(data), separator, data))

    def _response(self, timeout: float) -> bytes:
        """The data of the answer to the last command."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                frame = self._frame()
                if frame is not None:
                    return frame[2]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not readable(self._sock, remaining):
                    raise ProtocolError("the RELP receiver did not answer")
                # Readable may be TLS 1.3 session tickets only: the read then
                # waits for data, no longer than the answer may take.
                self._sock.settimeout(remaining)
                self._read()
        finally:
            self._sock.settimeout(SEND_SECONDS)

    def _frame(self) -> Optional[Tuple[int, bytes, bytes]]:
        """The first whole frame received (taken from the buffer): its
        transaction number, command and data; None if there is none yet."""
        buffer = self._buffer
        match = _RSP.match(buffer)
        if match is None:
            if len(buffer) > 40 or (buffer and not buffer[:1].isdigit()):
                raise ProtocolError(f"not a RELP frame: {buffer[:200]!r}")
            return None
        start = match.end()
        if buffer[start - 1 : start] == b"\n":  # no data
            self._buffer = buffer[start:]
            return int(match.group(1)), match.group(2), b""
        end = start + int(match.group(3))
        if len(buffer) <= end:
            return None
        self._buffer = buffer[end + 1 :]
        return int(match.group(1)), match.group(2), buffer[start:end]

    def _read(self) -> None:
        data = self._sock.recv(65536)
        if not data:
            raise ConnectionError("the RELP receiver closed the connection")
        self._buffer += data

    def _receive(self) -> None:
        self._read()
        buffer = self._buffer
        end = buffer.rfind(b"\n") + 1
        complete = buffer[:end]
        acks = complete.count(b"\n")
        # Most often every answer is "TXNR rsp 6 200 OK": count them, and check
        # the last one's number; anything else is read frame by frame.
        if acks and complete.count(_OK) == acks:
            last = int(complete[complete.rfind(b"\n", 0, end - 1) + 1 : end - len(_OK)])
            self._buffer = buffer[end:]
            self._acked_upto(last, acks)
        else:
            self._receive_slowly()

    def _receive_slowly(self) -> None:
        while True:
            frame = self._frame()
            if frame is None:
                return
            txnr, command, data = frame
            if command != b"rsp" or not data.startswith(b"200"):
                raise ProtocolError(f"the RELP receiver sent {txnr} {command!r} {data[:200]!r}")
            self._acked_upto(txnr, 1)

    def _acked_upto(self, last: int, count: int) -> None:
        """``count`` answers in order, the last for transaction ``last``."""
        expected_last = (self._expected - 1 + count - 1) % _MAX_TXNR + 1
        if last != expected_last or count > self._unacked:
            raise ProtocolError(f"RELP answers out of order: {count} up to {last}, expected up to {expected_last}")
        self._expected = _next(last)
        self._unacked -= count
        batches = self._batches
        while count:
            left = batches[0] - self._front_acked
            if count < left:
                self._front_acked += count
                return
            count -= left
            batches.popleft()
            self._front_acked = 0
            self._acked_batches += 1
