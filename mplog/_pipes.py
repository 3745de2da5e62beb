"""The pipes as the listener holds them: the descriptors a hello passed,
whether one is the read end of a pipe, and sealing a pipe so that no writer
can add to it before the listener closes it."""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import stat
from types import TracebackType
from typing import List, Optional, Tuple, Type

from ._hello import F_SETPIPE_SZ

__all__ = ["Padder", "is_read_end", "received_fds", "seal"]


def received_fds(ancillary: List[Tuple[int, int, bytes]]) -> List[int]:
    """The file descriptors passed in ``recvmsg`` ancillary data."""
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def is_read_end(fd: int) -> bool:
    """Whether ``fd`` is the read end of a pipe."""
    return stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY


def seal(pipe: int, padder: int) -> bool:
    """Make an empty ``pipe`` full, so no writer can add to it; return whether
    it worked (if a writer wrote first, nothing is done and it is still open).

    The pipe is shrunk to one page (the kernel refuses while it holds more),
    then ``padder``, a non-blocking write end, writes one page of padding in one
    write: into an empty one-page pipe that fits whole, and into a pipe holding
    any byte of a writer's it writes nothing, since the page it would need is
    taken. So padding never lands among a writer's frames, and the listener
    never reads it: a sealed pipe is closed unread.
    """
    try:
        capacity = fcntl.fcntl(pipe, F_SETPIPE_SZ, 1)  # the kernel rounds up to one page
        return os.write(padder, bytes(capacity)) == capacity
    except OSError as exc:  # EBUSY: it holds bytes again; EAGAIN: its page is taken
        if exc.errno in (errno.EBUSY, errno.EAGAIN):
            return False
        raise


class Padder:
    """Seals one pipe the listener reads (see :func:`seal`) through a
    non-blocking write end of its own, opened through ``/proc`` when first
    needed; a context manager that closes it."""

    def __init__(self, pipe: int) -> None:
        self._pipe = pipe
        self._fd = -1

    def seal(self) -> bool:
        """Seal the pipe if it is empty; return whether it worked.

        Raises:
            OSError: no write end can be opened (no ``/proc``, say).
        """
        if self._fd < 0:
            self._fd = os.open(f"/proc/self/fd/{self._pipe}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        return seal(self._pipe, self._fd)

    def __enter__(self) -> "Padder":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
