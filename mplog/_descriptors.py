"""The listener's file descriptors: it holds one per worker's pipe, so it
raises its own limit where it may, keeps a few free for its handlers, holds
one back to turn a connection away when it has no other left, and says how
many it turned away."""

from __future__ import annotations

import os
import resource
import socket
import time
from typing import List, Optional

from ._hello import REFUSED_SECONDS

__all__ = [
    "HEADROOM",
    "RAISE_TO",
    "Reserve",
    "TurnedAway",
    "cannot_hold",
    "leaves_headroom",
    "open_files_limit",
    "raise_open_files_limit",
]

#: Descriptors the listener keeps free besides the pipes, for its handlers
#: (opening, rotating, compressing and reopening files; reconnecting): a pipe
#: that would leave fewer is turned away, and its process offers it again.
HEADROOM = 8
#: The listener raises its soft RLIMIT_NOFILE to the hard limit, up to this:
#: room for that many workers, and no more (a program or child that closes
#: every possible descriptor one by one pays for each).
RAISE_TO = 65536


class TurnedAway:
    """Counts the pipes the listener turned away for want of descriptors, and
    has it say so at most every ``every`` seconds."""

    def __init__(self, every: float = 10.0) -> None:
        self._every = every
        self._count = 0  # since the last notice
        self._noticed = -every

    def note(self, pipes: int) -> Optional[str]:
        """Count ``pipes`` more (0: the listener could not even turn them away,
        and they wait); return the notice to log, if one is due."""
        self._count += pipes
        now = time.monotonic()
        if now - self._noticed < self._every:
            return None
        count, self._count, self._noticed = self._count, 0, now
        return (
            f"the listener is out of file descriptors (RLIMIT_NOFILE {open_files_limit()}, of which it "
            f"keeps {HEADROOM} free for its handlers): since its last notice it turned away {count} "
            f"worker pipe(s); each worker offers its pipe again for up to {REFUSED_SECONDS:g} s, its "
            "logging calls waiting meanwhile; raise the limit"
        )


def open_files_limit() -> int:
    """This process's soft RLIMIT_NOFILE (RLIM_INFINITY as is)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_open_files_limit() -> None:
    """Raise this process's soft RLIMIT_NOFILE towards its hard limit (up to
    ``RAISE_TO``); never lower it. Where that is not allowed, leave it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = RAISE_TO if hard == resource.RLIM_INFINITY else min(hard, RAISE_TO)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # a sandbox that forbids it: the limit stays
        pass


def cannot_hold(fds: List[int], flags: int) -> bool:
    """Whether the pipe a hello passed (``fds``, as ``recvmsg`` returned them
    with ``flags``) cannot be held: the kernel dropped it in transit, having no
    descriptor free (``MSG_CTRUNC`` with nothing received), or holding it
    would leave fewer than ``HEADROOM`` free."""
    if not fds:
        return bool(flags & socket.MSG_CTRUNC)
    return not leaves_headroom(fds[0])


def leaves_headroom(fd: int) -> bool:
    """Whether ``HEADROOM`` more descriptors can still be opened, now that
    ``fd`` is open: tried by duplicating it that many times (the duplicates
    are closed again)."""
    duplicates = []
    try:
        for _ in range(HEADROOM):
            duplicates.append(os.dup(fd))
    except OSError:  # EMFILE, ENFILE
        return False
    finally:
        for duplicate in duplicates:
            os.close(duplicate)
    return True


class Reserve:
    """One descriptor held back, so that a listener with no other left can
    still accept a waiting connection, only to close it at once: its process
    then sees the refusal and tries again later, instead of waiting unanswered."""

    def __init__(self) -> None:
        self._fd = _hold()

    def turn_away(self, listening: socket.socket) -> Optional[bool]:
        """Accept one waiting connection on ``listening`` with the reserved
        descriptor and close it. Return whether one was turned away (False:
        none was waiting), or ``None`` if no descriptor could be reserved."""
        if self._fd < 0:
            self._fd = _hold()
            if self._fd < 0:
                return None
        os.close(self._fd)
        try:
            sock, _ = listening.accept()
        except OSError:  # nothing waiting any more (or it went away)
            return False
        else:
            sock.close()
            return True
        finally:
            self._fd = _hold()

    def close(self) -> None:
        """Give the reserved descriptor back."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _hold() -> int:
    """A descriptor to hold in reserve, or -1 if none is free."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
