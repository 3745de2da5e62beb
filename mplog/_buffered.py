"""Buffered mode: the flusher thread that sends each process's gathered
records in time, :func:`mplog.flush`, SIGTERM, and records spilled to stderr
when the listener cannot take them."""

from __future__ import annotations

import atexit
import os
import queue as stdlib_queue
import sys
import threading
import weakref
from typing import Optional, Protocol

from . import _codec, _fork, _sigterm, _stderr
from ._marks import here, on_this_stack
from ._threads import start_thread

__all__ = [
    "BUFFER_BYTES",
    "SIGNAL_LOCK_SECONDS",
    "BufferedQueue",
    "SpilledError",
    "catch_sigterm",
    "check_flush_interval",
    "flush",
    "flusher",
    "spill",
]

#: A buffered queue sends its records once this many bytes have gathered.
BUFFER_BYTES = 64 * 1024
#: How long a SIGTERM handler waits for another thread that is sending a
#: queue's buffer before it writes what is left to stderr instead.
SIGNAL_LOCK_SECONDS = 1.0


class BufferedQueue(Protocol):
    """What the flusher needs of a buffered :class:`mplog.Queue`."""

    flush_interval: Optional[float]

    def flush(self) -> None:
        """Send what is buffered (never raises)."""

    def _flush_for_signal(self, timeout: float) -> bool:
        """Send or spill what is buffered; False if this thread is mid-write."""


class SpilledError(OSError):
    """The listener could not be reached, and the buffered records, the one
    being sent among them, were written to stderr instead."""


def check_flush_interval(value: Optional[float]) -> Optional[float]:
    """``value`` if it is ``None`` or a usable flush interval.

    Raises:
        ValueError: not a positive number of seconds up to 60.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 60:
        raise ValueError(f"flush_interval must be a number of seconds > 0 and <= 60, got {value!r}")
    return float(value)


def spill(data: "bytes | bytearray", why: str) -> None:
    """Write buffered frames that can no longer reach the listener to stderr."""
    _stderr.report(f"{why}; {len(data)} bytes of buffered records follow")
    _stderr.write_lines(_codec.readable_lines(bytes(data)))


def flush() -> None:
    """Send every record this process has buffered (``setup(buffered=True)``).

    mplog does this itself at exit, before a fork, on SIGTERM when no other
    SIGTERM handler is installed, and at least every ``flush_interval``; call it
    from your own SIGTERM handler, or before ``os._exit``."""
    for queue in list(flusher.queues):
        queue.flush()


def catch_sigterm() -> None:
    """On SIGTERM (``Pool.terminate()``, ``kill``), send what this process has
    buffered, then die of the signal, if nobody else handles SIGTERM (and if
    called from the main thread, the only one that can install the handler)."""
    _sigterm.catch(_flush_for_sigterm)


def _stop_buffering() -> None:
    """At exit: send what every queue has buffered, and from then on each
    record as it is logged (by a later exit hook, or by a ``__del__`` while
    the interpreter finalizes), since no flusher thread runs any more."""
    flusher.stopped = True
    flush()


def _flush_for_sigterm() -> bool:
    for queue in list(flusher.queues):
        if not queue._flush_for_signal(SIGNAL_LOCK_SECONDS):
            return False  # the signal came in the middle of this thread's write of it
    return True


class _Flusher:
    """Sends each buffered queue's records at most ``flush_interval`` seconds
    after the first of them was logged: one daemon thread per process, started
    with its first buffered record, idle while nothing is buffered."""

    def __init__(self) -> None:
        self.queues: "weakref.WeakSet[BufferedQueue]" = weakref.WeakSet()
        #: Past this process's exit hook: a queue's first record after each
        #: flush (the one that arms the flusher) is sent at once, with the rest.
        self.stopped = False
        self._pid = 0
        # What wakes the flusher: an item put here. Not an Event: its set()
        # takes a lock, and a signal handler (or a finalizer) that logs in the
        # middle of it would wait for that lock forever, in the thread that
        # holds it. SimpleQueue.put is reentrant.
        self._due: "stdlib_queue.SimpleQueue[None]" = stdlib_queue.SimpleQueue()
        self._starting = threading.Lock()
        self._local = threading.local()  # .starting: this thread is starting the flusher
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._starting = threading.Lock()  # a thread of the parent may have held it
        self._local = threading.local()
        self.stopped = False  # this process's exit hooks have not run

    def arm(self) -> None:
        """A queue holds a frame that no flush has been promised for."""
        if self.stopped or sys.is_finalizing():  # no flusher thread runs (or can start) any more
            _stop_buffering()
            return
        if self._pid != os.getpid() and not self._start_once():
            return
        self._due.put(None)

    def _start_once(self) -> bool:
        """Start this process's flusher, unless another thread has; return
        False if this call interrupted this thread's own start (a finalizer
        or a signal handler that logs meanwhile), which wakes the flusher
        once it runs: waiting for the lock that start holds would be forever."""
        local = self._local
        if on_this_stack(getattr(local, "starting", None)):
            return False
        try:
            local.starting = here()
            with self._starting:  # two threads' first records: one flusher
                if self._pid != os.getpid():
                    self._start()
        finally:
            local.starting = None
        return True

    def _start(self) -> None:
        self._pid = os.getpid()
        self._due = stdlib_queue.SimpleQueue()  # looked up now: gevent's, if it has patched queue
        # Not waiting for the thread to start: this runs inside a logging call,
        # perhaps under logging's lock, which the new thread's first steps may
        # need (logging's weakref callback, if the garbage collector frees a
        # handler there): Thread.start() would then wait for ever.
        due = self._due
        start_thread(lambda: self._run(due), "mplog-flusher")
        # Ways out of a process that skip the flusher's next tick:
        atexit.register(_stop_buffering)  # normal exit (logging.shutdown flushes handlers too)
        for name in ("multiprocessing.util", "multiprocess.util"):
            util = sys.modules.get(name)
            if util is not None:  # children of these leave through os._exit, after their finalizers
                util.Finalize(None, _stop_buffering, exitpriority=100)
        catch_sigterm()

    def _run(self, due: "stdlib_queue.SimpleQueue[None]") -> None:
        _sigterm.block_in_this_thread()
        while True:
            due.get()
            while not due.empty():  # one flush for every arm() until now
                due.get()
            queues = list(self.queues)
            interval = min((q.flush_interval or 0.0) for q in queues) if queues else 0.0
            threading.Event().wait(interval)  # sleep, in a way gevent's patching understands
            for queue in queues:
                queue.flush()


#: The flusher of this process; buffered queues add themselves to its ``queues``.
flusher = _Flusher()
