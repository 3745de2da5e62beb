"""SIGTERM in a process that buffers records: send them, then die of the signal.

Python runs a signal handler in the main thread, between bytecodes. A main
thread blocked in C code can miss that turn: an idle ``Pool`` worker waiting on
its task queue's semaphore, terminated by ``Pool.terminate()``, sometimes never
ran the handler and never exited, hanging the pool (in a loop of ``with
Pool(4)`` blocks, within 56 pools in each of 5 runs). The kernel has delivered
the signal by then, and Python's C-level handler has written its number to the
wakeup fd. So a watcher thread reads the wakeup fd, and while the handler has
not finished, it sends SIGTERM to the main thread again (every 50 ms), which
interrupts the blocking call and runs the handler.

The watcher is started only where the wakeup fd is free (an asyncio loop in the
main thread owns it and wakes up for signals itself), and only in the main
thread of a process whose SIGTERM is unhandled.
"""

from __future__ import annotations

import functools
import operator
import os
import select
import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

from . import _fork
from ._marks import here, on_this_stack

__all__ = ["catch", "release", "run_deferred"]

_RESEND_SECONDS = 0.05

# Sends every buffered record; returns False if it must wait because this
# thread is in the middle of writing a buffer (the signal interrupted it).
_flush_all: Optional[Callable[[], bool]] = None
_deferred = False  # the handler ran mid-write: the write finishes, then terminates
# The frame of the handler while it runs (see mplog._marks): the watcher's
# repeated SIGTERMs land inside it (say, while it waits for another thread's
# write) and must not start it again, nesting until the stack overflows.
_terminating: Optional[FrameType] = None
_wakeup_write = -1  # our end of the wakeup fd, while Python writes signal numbers to it
_wakeup_read = -1
_watcher_pid = 0  # the process whose watcher thread reads _wakeup_read


def block_in_this_thread() -> None:
    """Keep SIGTERM away from the calling mplog thread, so that the kernel
    delivers it to a thread that can run the handler. Not in a greenlet
    (gevent or eventlet patched threading): it shares the main thread's mask."""
    if threading.get_native_id() != threading.main_thread().native_id:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def catch(flush_all: Callable[[], bool]) -> None:
    """On SIGTERM, call ``flush_all``, then die of the signal; if nobody else
    handles SIGTERM. Only the main thread can install a handler: elsewhere this
    does nothing."""
    global _flush_all
    _flush_all = flush_all
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, say
        return
    _start_watcher()


def release() -> None:
    """Put SIGTERM (and the wakeup fd) back as they were, if mplog took them here."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _stop_watcher()


def run_deferred() -> None:
    """Terminate now if a SIGTERM came in the middle of a write that has just
    finished (called by the writer, after the write)."""
    if _deferred and threading.current_thread() is threading.main_thread():
        _terminate()


def _on_sigterm(signum: int, frame: Any) -> None:
    _terminate()


def _terminate() -> None:
    global _deferred, _terminating
    if on_this_stack(_terminating):
        return
    try:
        _terminating = here()
        _deferred = False
        if _flush_all is not None and not _flush_all():
            _deferred = True
            return
        _die_of_sigterm()
    finally:
        _terminating = None


def _die_of_sigterm() -> None:
    """Put SIGTERM's default action back and send it to this process, in one
    step that no signal handler can cut in two: two C calls made from C
    (``map``), with no bytecode between them. A handler that raised between
    the two (before 3.11 one can run between any two bytecodes) would leave
    this process alive, and the next SIGTERM would end it unflushed."""
    steps = (
        functools.partial(signal.signal, signal.SIGTERM, signal.SIG_DFL),
        functools.partial(os.kill, os.getpid(), signal.SIGTERM),
    )
    tuple(map(operator.methodcaller("__call__"), steps))


def _start_watcher() -> None:
    global _wakeup_read, _wakeup_write, _watcher_pid
    _forget_inherited()
    if _wakeup_write >= 0:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # as set_wakeup_fd requires
    os.set_blocking(read_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except (ValueError, OSError):
        previous = None
    if previous != -1:  # taken (an event loop's): leave it, and do without the watcher
        if previous is not None:
            signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)
        return
    _wakeup_read, _wakeup_write, _watcher_pid = read_end, write_end, os.getpid()
    main = threading.main_thread().ident
    threading.Thread(target=_watch, args=(read_end, main), name="mplog-sigterm", daemon=True).start()


def _stop_watcher() -> None:
    global _wakeup_read, _wakeup_write
    _forget_inherited()
    if _wakeup_write < 0:
        return
    _give_back_wakeup_fd()
    os.close(_wakeup_write)  # the watcher reads end-of-file and closes its end
    _wakeup_read = _wakeup_write = -1


def _give_back_wakeup_fd() -> None:
    """Stop Python writing signal numbers to our pipe, unless someone has
    replaced it with their own since (theirs stays)."""
    current = signal.set_wakeup_fd(-1)
    if current != _wakeup_write:
        signal.set_wakeup_fd(current)


def _forget_inherited() -> None:
    """In a forked child: let go of the parent's wakeup pipe, whose watcher
    thread is the parent's (the child's signals must not wake it)."""
    global _wakeup_read, _wakeup_write
    if _wakeup_write < 0 or _watcher_pid == os.getpid():
        return
    try:
        _give_back_wakeup_fd()
    except ValueError:  # forked by C code from a thread other than the main one
        pass
    for fd in (_wakeup_read, _wakeup_write):
        try:
            os.close(fd)
        except OSError:
            pass
    _wakeup_read = _wakeup_write = -1


def _watch(read_end: int, main_thread: int) -> None:
    block_in_this_thread()
    try:
        while True:
            select.select([read_end], [], [])  # gevent's patched select yields here
            try:
                numbers = os.read(read_end, 512)
            except BlockingIOError:
                continue
            if not numbers:
                return
            if signal.SIGTERM not in numbers:
                continue
            # Until the handler has finished (it puts the default back) or
            # someone else's handler has replaced it.
            while True:
                threading.Event().wait(_RESEND_SECONDS)  # sleep, in a way gevent's patching understands
                if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
                    break
                signal.pthread_kill(main_thread, signal.SIGTERM)
    finally:
        os.close(read_end)


class _AfterFork:
    """A forked child does not inherit the watcher thread: it starts its own if
    it inherited the handler."""

    def _after_fork_in_child(self) -> None:
        global _deferred, _terminating
        _deferred = False
        _terminating = None
        _forget_inherited()
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            _start_watcher()


_after_fork = _AfterFork()  # held here: _fork keeps weak references
_fork.register(_after_fork)
