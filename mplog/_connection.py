"""One worker process's connection as the listener holds it: its socket
until its hello has passed a pipe, then that pipe, and the parser of what
arrives on it."""

from __future__ import annotations

import os
import socket
from typing import Callable, List, Optional

from . import _codec, _pipes
from ._framing import Buffer, FrameParser

__all__ = ["RECV_SIZE", "Connection", "answer_taken", "hello_pipe", "read_chunk", "refuse", "rest_of_hello"]

#: The most the listener reads from one pipe at a time.
RECV_SIZE = 256 * 1024


class Connection:
    """One worker process's channel: its socket until it has sent its pipe, then the pipe."""

    __slots__ = ("sock", "pipe", "pid", "route", "parser", "key", "marked", "stream", "read", "skip", "held")

    def __init__(
        self,
        sock: socket.socket,
        pid: int,
        on_record: Callable[[Buffer, "Connection"], None],
        on_text: Callable[[_codec.Frames, "Connection"], None],
    ) -> None:
        self.sock: Optional[socket.socket] = sock
        self.pipe = -1  # the read end, once received
        self.pid = pid
        self.route = -1  # until the connection's hello names it
        self.parser = FrameParser(on_record, on_text, self)
        # The time of the last mark read (see _order), plus a nanosecond for
        # each piece of its write read since.
        self.key = 0
        self.marked = False  # whether it sent a mark (every mplog process does)
        #: A resuming client's stream id (0: none), the offset in that stream
        #: of the next byte read, and how many bytes from there are skipped
        #: (written before the server was killed: see mplog._journal).
        self.stream = 0
        self.read = 0
        self.skip = 0
        #: For a server that counts what it holds back (see _order.Merge):
        #: the bytes of the stream taken and not yet handed on.
        self.held = 0

    def skip_committed(self, committed: Optional[Callable[[int], int]]) -> None:
        """Skip what a resuming client sends again that ``committed`` (offset
        by stream id) says is in the files already."""
        if self.stream and committed is not None:
            self.skip = max(0, committed(self.stream) - self.read)

    def skipped(self, data: bytes) -> bytes:
        """``data`` without the bytes still to skip."""
        cut = min(self.skip, len(data))
        self.skip -= cut
        return data[cut:]

    def position(self) -> int:
        """The offset in the client's stream just past the last whole frame
        handed on (or to be skipped)."""
        return self.read + self.skip - len(self.parser.pending) - self.held

    def channel(self) -> "socket.socket | int":
        """What the selector watches for this connection."""
        return self.sock if self.sock is not None else self.pipe

    def close(self) -> None:
        """Close the socket or pipe."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1


def hello_pipe(conn: Connection, data: bytes, fds: List[int]) -> int:
    """The pipe a connection's hello passed, with its route set on ``conn``;
    any other descriptors passed are closed.

    Raises:
        ValueError: not a hello with the read end of a pipe (it is closed).
    """
    pipe = fds.pop(0) if fds else -1
    for extra in fds:
        os.close(extra)
    try:
        conn.route = _codec.parse_hello(data)
        if data[0] == _codec.RESUME_START:
            if len(data) != _codec.HELLO.size + _codec.RESUME.size:
                raise ValueError(f"pid {conn.pid} sent a resuming hello cut short")
            conn.stream, conn.read = _codec.RESUME.unpack_from(data, _codec.HELLO.size)
        if pipe < 0 or not _pipes.is_read_end(pipe):
            raise ValueError(f"pid {conn.pid} sent a hello without the read end of a pipe")
    except ValueError:
        if pipe >= 0:
            os.close(pipe)
        raise
    return pipe


def read_chunk(conn: Connection) -> Optional[bytes]:
    """One read of ``conn``'s pipe: None if it is empty, b"" at its end."""
    try:
        return os.read(conn.pipe, RECV_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def answer_taken(sock: socket.socket) -> None:
    """Tell a connection's process that its pipe is held: it may write now."""
    try:
        sock.send(_codec.HELLO_TAKEN, socket.MSG_NOSIGNAL)
    except OSError:  # it is gone: its pipe is at its end, and read as such
        pass


def refuse(sock: socket.socket) -> None:
    """Tell a process whose user may not log here so (it gives up at once,
    instead of offering its pipe again as to a listener out of descriptors),
    and close its connection."""
    try:
        sock.send(_codec.REFUSED, socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
    except OSError:  # it is gone, or its buffer is full of what it sent: it sees the close
        pass
    sock.close()


def rest_of_hello(sock: socket.socket, start: bytes) -> bytes:
    """After a resuming hello's ``start``, the stream id and offset that
    follow it (sent with it: there now, or the hello is refused as cut short)."""
    if start[:1] != bytes([_codec.RESUME_START]):
        return b""
    try:
        return sock.recv(_codec.RESUME.size)
    except OSError:
        return b""
