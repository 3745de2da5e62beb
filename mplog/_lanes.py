"""Lanes: each of the listener's handlers runs in a thread of its own, fed in
order through a bounded backlog, so that no logging call and no other handler
ever waits on it.

A handler that is slower than what is logged fills its backlog, and whoever
passes it more (the thread reading the workers' pipes, or a logging call of
the listener's own process) then waits for room: back-pressure, which reaches
the workers as full pipes, and loses nothing. A handler whose current call
has not returned for ``stall_timeout`` seconds is *stalled*: nothing waits for
it any more; what would not fit in its backlog is dropped and counted, and
said on stderr, and in the log once the handler returns.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Sequence, Tuple

from . import _stderr
from ._threads import start_thread

__all__ = ["BACKLOG_BYTES", "STALL_SECONDS", "Lane", "Marker", "join_lanes", "joined", "wait_while_progressing"]

#: Once a lane holds this much (estimated bytes of the records and lines in
#: it), passing it more waits for room.
BACKLOG_BYTES = 2 * 1024 * 1024
#: How long a handler's call may go on before nothing waits for it any more.
STALL_SECONDS = 10.0
# How often a wait while stopping checks that the handlers still return.
_PROGRESS_CHECK_SECONDS = 0.05
# What an item costs besides its text: the tuple, the record, the deque slot.
ITEM_BYTES = 256

Item = Tuple[Callable[[Any], object], Any, int]


class Marker:
    """Passed down every lane: once each has handled everything put on it
    before, ``on_passed`` runs (in the last lane's thread)."""

    def __init__(self, lanes: int, on_passed: Callable[[], None]) -> None:
        self._left = lanes
        self._lock = threading.Lock()
        self._on_passed = on_passed
        if lanes == 0:
            on_passed()

    def passed(self, _: object = None) -> None:
        """One lane got here."""
        with self._lock:
            self._left -= 1
            done = self._left == 0
        if done:
            self._on_passed()


class Lane:
    """One handler's thread and backlog.

    Items are put by one thread at a time (the listener serialises them) and
    taken in order by the lane's own thread.

    Args:
        name: the handler, as reports name it.
        stall_timeout: seconds a call may go on before the lane counts as stalled.
        on_resumed: called in the lane's thread with a notice for the log when
            a handler that had stalled returns.
    """

    def __init__(self, name: str, stall_timeout: float, on_resumed: Callable[[str], None]) -> None:
        self.name = name
        self.stall_timeout = stall_timeout
        self._on_resumed = on_resumed
        self._items: Deque[Item] = collections.deque()
        # Two counters rather than one: each has a single writer (producers
        # are serialised; only the lane's thread takes), so no update is lost.
        self._put_bytes = 0
        self._done_bytes = 0
        # Reentrant: a signal handler that logs may interrupt this thread's
        # put in the middle of it (the gunicorn master's SIGCHLD handler logs).
        self._lock = threading.RLock()
        self._has_items = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._idle = False
        self._room_wanted = False
        #: monotonic time the current call began; 0.0 between calls.
        self.busy_since = 0.0
        #: Items dropped since the last report, and in all.
        self.dropped = 0
        self.dropped_total = 0
        #: Records (or lines) put for the handler, and their bytes as received
        #: (frames or lines): counted by whoever puts them (``mplog status``).
        self.records = 0
        self.received = 0
        self._stall_reported = False
        self._stopped = False
        # Not waited for: a lane may be made while logging's lock is held (see _threads).
        self._ended = start_thread(self._run, f"mplog-handler {name}")

    def put(self, function: Callable[[Any], object], argument: Any, size: int = 0, wait: bool = True) -> bool:
        """Queue ``function(argument)`` for the lane's thread; return False if
        it was dropped instead (the lane is stalled, or ``wait`` is False,
        and its backlog is full).

        ``size``: about how many bytes ``argument`` holds.
        """
        size += ITEM_BYTES
        if self._put_bytes - self._done_bytes >= BACKLOG_BYTES and not self._make_room(wait):
            self.dropped += 1
            self.dropped_total += 1
            return False
        self._push((function, argument, size))
        return True

    def backlog(self) -> int:
        """About how many bytes are put and not yet handled."""
        return self._put_bytes - self._done_bytes

    def _push(self, item: Item) -> None:
        self._items.append(item)
        self._put_bytes += item[2]
        if self._idle:
            with self._lock:
                self._idle = False  # woken: later items need not wake it again
                self._has_items.notify()

    def _make_room(self, wait: bool) -> bool:
        """Wait until the backlog is below its limit, while the handler makes
        progress; return False if it stalls first (or must not be waited for)."""
        if not wait:
            return False
        with self._lock:
            while self._put_bytes - self._done_bytes >= BACKLOG_BYTES:
                if self._ended.is_set():  # the lane's thread is gone: nothing will make room
                    return False
                remaining = self._stall_deadline() - time.monotonic()
                if remaining <= 0:
                    self._report_stall()
                    return False
                self._room_wanted = True
                self._has_room.wait(remaining)
        return True

    def _stall_deadline(self) -> float:
        busy_since = self.busy_since
        if not busy_since:  # between two calls: the next one starts now
            return time.monotonic() + self.stall_timeout
        return busy_since + self.stall_timeout

    def stalled_for(self) -> float:
        """How long the current call has gone on past ``stall_timeout`` (0: not stalled)."""
        busy_since = self.busy_since
        if not busy_since:
            return 0.0
        over = time.monotonic() - busy_since
        return over if over >= self.stall_timeout else 0.0

    def stuck(self, patience: float) -> bool:
        """Whether the current call has gone on for ``patience`` seconds."""
        busy_since = self.busy_since
        return bool(busy_since) and time.monotonic() - busy_since >= patience

    def stopping(self, patience: float) -> None:
        """The listener stops: a call that goes on for ``patience`` seconds
        (if less than ``stall_timeout``) is then enough to stop waiting for room."""
        self.stall_timeout = min(self.stall_timeout, patience)

    def check_stall(self) -> None:
        """Say on stderr, once per stall, that the handler has stalled."""
        if self.stalled_for():
            self._report_stall()

    def _report_stall(self) -> None:
        if self._stall_reported or not self.busy_since:
            return
        self._stall_reported = True
        took = time.monotonic() - self.busy_since
        _stderr.report(
            f"handler {self.name} has not returned for {took:.1f} s; records for it are dropped "
            "and counted while its backlog is full, until it returns"
        )

    def _run(self) -> None:
        items = self._items
        while True:
            if not items:
                self._wait_for_items()
            function, argument, size = items.popleft()
            if function is _stop:
                return
            self.busy_since = time.monotonic()
            try:
                function(argument)
            except BaseException:  # a handler bug, sys.exit() included, must not end its lane
                _stderr.report_exception(f"error in handler {self.name}")
            self._finished(size)

    def _wait_for_items(self) -> None:
        with self._lock:
            # Idle again before each look: a put whose item this thread has
            # already handled may wake it, and with ``_idle`` left False no
            # later put would wake it again (it slept for good, and a full
            # backlog then made the thread putting wait for ever).
            while True:
                self._idle = True
                if self._items:
                    break
                self._has_items.wait()
            self._idle = False

    def _finished(self, size: int) -> None:
        """Account for one item handled; wake a producer waiting for room."""
        began, self.busy_since = self.busy_since, 0.0
        self._done_bytes += size
        if self._room_wanted:
            with self._lock:
                self._room_wanted = False
                self._has_room.notify_all()
        if self._stall_reported:
            self._stall_reported = False
            self._resumed(time.monotonic() - began)

    def _resumed(self, took: float) -> None:
        dropped, self.dropped = self.dropped, 0
        message = f"handler {self.name} returned after {took:.1f} s; {dropped} records for it were dropped meanwhile"
        _stderr.report(message)
        self._on_resumed(message)

    def stop(self) -> None:
        """Let the lane's thread end once it has handled everything put before."""
        if not self._stopped:
            self._stopped = True
            self._push((_stop, None, 0))  # never dropped

    def join(self, patience: float) -> bool:
        """Wait until the lane's thread has ended, as long as its handler keeps
        returning: give up once a call has gone on for ``patience`` seconds.
        Return whether it ended."""
        return wait_while_progressing(self._ended.wait, [self], patience)

    def undelivered(self) -> int:
        """Items put on the lane and not handled (dropped ones not counted)."""
        return sum(1 for function, _, _ in list(self._items) if function is not _stop and function is not _marker)


def _stop(_: object) -> None:
    """The item that ends a lane's thread (never called)."""


def _marker(marker: Marker) -> None:
    marker.passed()


def pass_marker(lanes: List[Lane], on_passed: Callable[[], None]) -> None:
    """Put a :class:`Marker` on every lane; ``on_passed`` runs once all have
    handled what was put on them before it (at once if there are none)."""
    marker = Marker(len(lanes), on_passed)
    for lane in lanes:
        lane._push((_marker, marker, 0))  # never dropped, never waited for


def joined(thread: threading.Thread) -> Callable[[float], bool]:
    """``wait(timeout)`` for ``thread``: True once it has ended."""

    def wait(timeout: float) -> bool:
        thread.join(timeout)
        return not thread.is_alive()

    return wait


def wait_while_progressing(wait: Callable[[float], bool], lanes: Sequence[Lane], patience: float) -> bool:
    """Wait with ``wait(timeout)`` until it returns True, as long as no lane's
    current call has gone on for ``patience`` seconds; return whether it did.

    Stopping waits this way: a slow handler that keeps returning is waited
    for (what it holds is bounded by its backlog), a stuck one is not."""
    while not wait(_PROGRESS_CHECK_SECONDS):
        if any(lane.stuck(patience) for lane in lanes):
            return wait(0.0)
    return True


def join_lanes(
    lanes: Dict[logging.Handler, Lane], patience: float
) -> Tuple[Tuple[logging.Handler, ...], Tuple[logging.Handler, ...]]:
    """Wait for stopped lanes to end, each as long as its handler keeps
    returning (see :meth:`Lane.join`); return the handlers that finished and
    those stuck. For each stuck one, say on stderr
    what it has not handled, and leave it out of ``logging.shutdown()``,
    which would wait for its lock (held by the call that is stuck)."""
    finished: List[logging.Handler] = []
    stuck: List[logging.Handler] = []
    for handler, lane in lanes.items():
        if lane.join(patience):
            finished.append(handler)
            continue
        stuck.append(handler)
        _stderr.report(
            f"stopped without waiting longer for handler {lane.name}: {lane.undelivered()} records "
            f"were not handled by it ({lane.dropped_total} dropped before); its call had not returned "
            f"for {time.monotonic() - lane.busy_since:.1f} s"
        )
    if stuck:
        kept = [ref for ref in logging._handlerList if ref() not in stuck]  # type: ignore[attr-defined]
        logging._handlerList[:] = kept  # type: ignore[attr-defined]
    return tuple(finished), tuple(stuck)
