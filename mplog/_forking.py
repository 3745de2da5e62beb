"""How a listener takes part in a fork of its process: quiet around the
fork, and in a worker child, letting go of its copies of the listener's
descriptors without ever flushing or closing its handlers."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, List, Optional, Tuple

from . import _fork

if TYPE_CHECKING:
    from ._server import Server

__all__ = ["ForkParticipation"]

#: The longest a fork waits for the listener thread and its handlers to finish a write.
_QUIESCE_SECONDS = 2.0


class ForkParticipation:
    """The at-fork hooks of :class:`~mplog._listener.QueueListener`."""

    if TYPE_CHECKING:  # what the listener provides
        _thread: Optional[threading.Thread]
        _owner_pid: int
        _busy: threading.RLock
        _held: List[threading.RLock]
        _server: Optional[Server]
        _control_r: int
        _control_w: int
        _process_pid: int
        all_handlers: Tuple[logging.Handler, ...]

    def _running_thread_here(self) -> bool:
        return self._thread is not None and self._owner_pid == os.getpid()

    def _before_fork(self) -> None:
        # Let the listener thread and every handler finish what they are
        # writing, so the child never inherits a stream lock held by a thread
        # that does not exist in it. Bounded: a stuck handler delays a fork by
        # at most _QUIESCE_SECONDS.
        if not self._running_thread_here():
            return
        deadline = time.monotonic() + _QUIESCE_SECONDS
        locks = [self._busy] + [h.lock for h in self.all_handlers if h.lock is not None]
        for lock in locks:
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                self._held.append(lock)

    def _after_fork_in_parent(self) -> None:
        held, self._held = self._held, []
        for lock in reversed(held):
            lock.release()

    def _after_fork_in_child(self) -> None:
        self._held = []
        if self._owner_pid == 0 or self._owner_pid == os.getpid():
            return
        # This child is a worker: the listener and its handlers stay the
        # parent's. Close our copies of its descriptors (so the parent's death
        # is seen as EOF/EPIPE) and never flush or close the handlers here.
        if self._server is not None:
            self._server.close_in_child()
        for fd in (self._control_r, self._control_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        owned = set(self.all_handlers)
        logging._handlerList[:] = [ref for ref in logging._handlerList if ref() not in owned]  # type: ignore[attr-defined]
        _fork.keep_alive(self.all_handlers)
        self._owner_pid = 0
        self._server = None
        self._thread = None
        self._process_pid = 0
        self._control_r = self._control_w = -1
