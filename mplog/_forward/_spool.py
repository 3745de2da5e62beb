"""The on-disk spool: records waiting for a receiver that is down, in order,
in segment files of a directory that one process at a time may use.

Each segment (``<number>.seg``) is what one spill wrote: records as a 4-byte
big-endian length and the message. ``cursor`` holds the position of the first
record the receiver has not acknowledged (rewritten at each acknowledgement,
without fsync: it survives the process, not the machine); segments wholly
before it are deleted. ``lock`` is held (``flock``) by the process that
opened the spool, so a second session on the same directory is refused.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from typing import Dict, List, Sequence, Tuple

from .. import _fork
from .._safefs import write_and_close
from ..exceptions import SpoolInUse

__all__ = ["Position", "Spool", "SpoolInUse"]

#: (segment number, byte offset in it).
Position = Tuple[int, int]
_LENGTH = struct.Struct(">I")
_CURSOR = "%020d %020d\n"


class Spool:
    """A spool directory, opened and locked.

    Args:
        directory: where the segments live (made if missing, mode 0700).
        max_bytes: the most the segments may hold together.

    Raises:
        SpoolInUse: another process holds the directory.
        OSError: it cannot be made, read or locked.
    """

    def __init__(self, directory: str, max_bytes: int) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock_fd = _lock(directory)
        self._sizes: Dict[int, int] = {}
        for name in os.listdir(directory):
            if name.endswith(".seg") and name[:-4].isdigit():
                self._sizes[int(name[:-4])] = os.path.getsize(self._path(int(name[:-4])))
        self._cursor_fd = os.open(os.path.join(directory, "cursor"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._commit = self._read_cursor()
        self._read = self._commit
        self._next = max(self._sizes, default=0) + 1
        self._cache: Tuple[int, bytes] = (0, b"")
        self.commit(self._commit)  # drop what was acknowledged before
        _fork.register(self)

    @property
    def size(self) -> int:
        """What the segments hold."""
        return sum(self._sizes.values())

    def kept(self) -> int:
        """How many segment files the directory holds now (in any process's view)."""
        return sum(1 for name in os.listdir(self.directory) if name.endswith(".seg"))

    def room_for(self, size: int) -> bool:
        """Whether ``size`` more bytes of segments stay within ``max_bytes``."""
        return self.size + size <= self.max_bytes

    def unread(self) -> bool:
        """Whether records wait after the read position."""
        number, offset = self._read
        return any(n > number for n in self._sizes) or offset < self._sizes.get(number, 0)

    def append(self, groups: Sequence[Sequence[bytes]]) -> List[Position]:
        """Write ``groups`` of messages as one new segment; return the position
        after each group."""
        number, self._next = self._next, self._next + 1
        ends: List[Position] = []
        chunks: List[bytes] = []
        offset = 0
        for messages in groups:
            for message in messages:
                chunks.append(_LENGTH.pack(len(message)))
                chunks.append(message)
                offset += 4 + len(message)
            ends.append((number, offset))
        data = b"".join(chunks)
        write_and_close(os.open(self._path(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), data)
        self._sizes[number] = len(data)
        return ends

    def read(self, limit: int) -> Tuple[List[bytes], Position]:
        """Up to ``limit`` messages from the read position (within one
        segment), and the position after them, which becomes the read position."""
        number, offset = self._read
        if offset >= self._sizes.get(number, 0):
            number, offset = min(n for n in self._sizes if n > number), 0
        data = self._segment(number)
        messages: List[bytes] = []
        while offset < len(data) and len(messages) < limit:
            (length,) = _LENGTH.unpack_from(data, offset)
            messages.append(data[offset + 4 : offset + 4 + length])
            offset += 4 + length
        self._read = (number, offset)
        return messages, self._read

    def skip_to(self, position: Position) -> None:
        """Move the read position to ``position`` (past records sent already)."""
        self._read = position

    def rewind(self) -> None:
        """Read again from the first record not acknowledged."""
        self._read = self._commit

    def commit(self, position: Position) -> None:
        """The receiver has every record before ``position``: forget them."""
        self._commit = position
        number, offset = position
        done = [n for n in self._sizes if n < number or (n == number and offset >= self._sizes[n])]
        for n in done:
            os.unlink(self._path(n))
            del self._sizes[n]
        os.pwrite(self._cursor_fd, (_CURSOR % position).encode(), 0)

    def close(self) -> None:
        """Let go of the directory (what it holds stays for the next session)."""
        for fd in (self._cursor_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._cursor_fd = self._lock_fd = -1

    def _segment(self, number: int) -> bytes:
        if self._cache[0] != number:
            with open(self._path(number), "rb") as file:
                self._cache = (number, file.read())
        return self._cache[1]

    def _path(self, number: int) -> str:
        return os.path.join(self.directory, f"{number:020d}.seg")

    def _read_cursor(self) -> Position:
        text = os.pread(self._cursor_fd, 64, 0).split()
        if len(text) == 2 and text[0].isdigit() and text[1].isdigit():
            return int(text[0]), int(text[1])
        return (min(self._sizes, default=0), 0)

    def _after_fork_in_child(self) -> None:
        # The lock belongs to the open file, shared with the parent, which
        # holds it until it closes the spool: a child's copy (a worker's) would
        # only keep the directory locked after the session ended.
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _lock(directory: str) -> int:
    path = os.path.join(directory, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SpoolInUse(f"the spool directory {directory!r} is in use by process {holder}") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    return fd
