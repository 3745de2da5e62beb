"""The channel between processes: a private Unix socket address where each
process introduces itself, and one pipe per process to the listener.

A process connects to the socket once, sends the route of its records and the
read end of a new pipe (``SCM_RIGHTS``), waits for the listener to answer that
it holds the pipe (a listener out of file descriptors turns it away instead,
and the process offers a new one a little later), and from then on writes
whole frames to the pipe. No lock is ever shared between processes: a process
killed mid-write can only cut off its own last frame, which the listener
discards.
``os.write`` returns once the frame is in the pipe, whose only read end the
listener holds, so a record survives its sender calling ``os._exit`` or being
killed right after the logging call returns. A pipe rather than the socket
itself, because small writes to a pipe share its pages, while each send on a
socket is a kernel buffer of its own: 0.8 us per 100-byte record for writer
and reader together, against 4.0 us (measured on this project's machines).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Optional, Tuple

from . import _codec, _fork, _sigterm
from ._address import new_private_address
from ._buffered import BUFFER_BYTES, SpilledError, check_flush_interval, flusher, spill
from ._marks import here, on_this_stack
from ._pipewrite import ATOMIC_BYTES, PipeSender, take_all

__all__ = ["LocalHandle", "Queue"]

#: How a listener thread takes records from its own process: ``handle(record, route)``.
LocalHandle = Callable[[logging.LogRecord, int], None]
# A frame up to this long goes out in one atomic write, with its mark and end.
_SURELY_ATOMIC = ATOMIC_BYTES - 64


class Queue(PipeSender):
    """Where workers put log records for the listener: the mplog counterpart
    of the ``multiprocessing.Queue`` in the logging cookbook.

    It pickles as its address, so it can be passed to a child any way at all
    (``initargs``, task arguments, ``Process`` args), and every process opens its
    pipe to the listener on first use. ``put_nowait`` returns once the record is in
    the kernel, in this process's pipe to the listener.

    With ``flush_interval`` set, the queue is *buffered*: records gather in
    this process and go to the listener together, at most ``flush_interval``
    seconds after they were logged, once 64 KiB have gathered,
    before this process forks, when it exits (normally, through
    ``multiprocessing``, or on SIGTERM when no other handler is installed) and
    on :func:`mplog.flush`; from the exit hook on, each record is sent as it
    is logged (by ``__del__`` while the interpreter finalizes, say). What is
    still buffered when the process is killed with SIGKILL or calls
    ``os._exit`` is lost.

    Args:
        address: path of the listener's Unix socket; by default a new path in a
            fresh directory that only the current user can enter.
        route: which of the listener's handler groups records put here are for
            (0: the root logger's handlers).
        flush_interval: ``None`` (every record reaches the listener's pipe
            before the logging call returns), or the seconds a record may wait
            in a buffer.

    Raises:
        ValueError: ``flush_interval`` is not a positive number of seconds up to 60.
    """

    # The package's own protocol with this class, besides the public methods:
    # the worker handler sends ready-made frames with _send() and asks
    # _local_pid whether records go to a listener thread of this process
    # (set with _deliver_here() by that listener); the flusher calls
    # _flush_for_signal() on SIGTERM.

    def __init__(self, address: Optional[str] = None, route: int = 0, flush_interval: Optional[float] = None) -> None:
        super().__init__(address if address is not None else new_private_address(), route)
        self.flush_interval = check_flush_interval(flush_interval)
        self._buffer = bytearray()
        self._pipe_pid = os.getpid()
        # Serialises writes (_writing is set only while it is held). Reentrant,
        # so that a logging call that interrupts this thread's own write (a
        # signal handler's, a finalizer's) can take it and find that write's
        # frame (_writing) on its stack.
        self._lock = threading.RLock()
        self._armed = False  # the flusher will send this buffer within flush_interval
        if self.flush_interval is not None:
            flusher.queues.add(self)
        # The pid of a process whose listener thread takes records put here
        # directly (with _local_handle) instead of across a pipe; 0: none.
        self._local_pid = 0
        self._local_handle: Optional[LocalHandle] = None
        _fork.register(self)

    def __repr__(self) -> str:
        return f"<mplog.Queue {self.address!r}>"

    def __reduce__(self) -> Tuple[type, Tuple[str, int, Optional[float]]]:
        return (Queue, (self.address, self.route, self.flush_interval))

    def _deliver_here(self, handle: Optional[LocalHandle]) -> None:
        """Hand records put here in this process to ``handle`` directly (a
        listener thread of this process), or again across the pipe (``None``)."""
        self._local_handle = handle
        self._local_pid = 0 if handle is None else os.getpid()

    def _delivers_locally(self) -> bool:
        """Whether records put here go straight to a listener thread of this process."""
        return self._local_pid == os.getpid()

    def put_nowait(self, record: logging.LogRecord) -> None:
        """Hand a prepared record to the listener (blocking only while the
        listener is too far behind to take it: back-pressure, never growth).

        Raises:
            OSError: the listener cannot be reached (stopped, killed, never started).
        """
        handle = self._local_handle
        if handle is not None and self._local_pid == os.getpid():
            handle(record, self.route)
            return
        self._send(_codec.encode(record, route=self.route), getattr(record, "process", None))

    def _send(self, frame: bytes, created_in: Optional[int] = None, end: bytes = b"") -> None:
        """Write one encoded frame to this process's pipe (opening it first
        if needed), or add it to the buffer.

        Args:
            frame: an encoded frame.
            created_in: the pid of the process that created the frame's record
                (``record.process``), if known. A frame whose record was
                created in the process this queue last saw is sent without
                asking the kernel for the pid (a ``getpid`` system call per
                record: 2-4% of a logging call). A fork that the at-fork hooks
                miss is still seen at its first record created in the child;
                buffered, the pid is also checked when the buffer is sent.
                Durable, a frame too long for one atomic write is always
                checked: in a child such a fork made, a record created before
                it (a ``MemoryHandler``'s, say) may go through its parent's
                pipe only in one write, which no write of the parent's can tear.
            end: what completes the frame (``TEXT_END`` after a line):
                durable, it is added with the write's mark in one step.

        A call made while this thread is itself in the middle of a send (from
        a signal handler or a finalizer that interrupted it) holds ``frame``,
        which goes right after the interrupted write (see ``HELD_BYTES``).

        Raises:
            OSError: the listener cannot be reached; ``frame`` was not taken.
            SpilledError: (buffered) the listener cannot be reached; ``frame``
                and the records buffered with it went to stderr.
        """
        if created_in != self._pipe_pid or len(frame) > _SURELY_ATOMIC:
            self._check_fork()
        if self.flush_interval is None:
            with self._lock:
                if self._held or self._writing is not None:  # (_send_nested tells a write under way)
                    self._send_nested(frame + end)
                    return
                self._send_locked(frame, end)
            return
        self._add(frame + end)

    def _add(self, frame: bytes) -> None:
        """(Buffered.) Add ``frame`` to the buffer; send the buffer once full."""
        if (self._writing or self._held) and self._sent_nested(frame):
            return
        # No lock to add a frame: ``bytearray +=`` is one step under the GIL,
        # so the buffer holds whole frames whenever another thread or a signal
        # handler looks. Only taking frames out (flushing) is locked.
        buffer = self._buffer
        buffer += frame
        if len(buffer) >= BUFFER_BYTES:
            self._flush(timeout=-1)
        elif not self._armed:
            self._armed = True
            flusher.arm()

    def _sent_nested(self, frame: bytes) -> bool:
        """(Buffered; some thread is writing, or frames are held.) If this
        thread holds the lock (a signal handler or a finalizer that
        interrupted its write logs), send ``frame`` as :meth:`_send_nested`
        does and return True. Such a frame must not go into the buffer: the
        write may be taking frames out of it, and held frames logged before it
        would be sent first."""
        # Asked, not taken: a signal handler's exception right after taking
        # it could not release it.
        if not self._lock._is_owned():  # type: ignore[attr-defined]  # (every RLock has it; typeshed omits it)
            return False  # another thread's write
        self._send_nested(frame)
        return True

    def _check_fork(self) -> None:
        if self._pipe_pid != os.getpid():
            # A fork the at-fork hook did not see (e.g. from C code): the lock
            # and pipe may be mid-use by a thread that does not exist here,
            # and the buffer is the parent's (with, buffered, the frames of
            # records the parent created and this child handled: a
            # MemoryHandler's, say, which the parent holds too).
            self._after_fork_in_child()

    def flush(self) -> None:
        """Send what this process has buffered here, if anything (never raises:
        if the listener is gone, the records go to stderr)."""
        try:
            self._flush(timeout=-1)
        except SpilledError:
            pass

    def _flush_for_signal(self, timeout: float) -> bool:
        """Send what is buffered, from a signal handler: return False, sending
        nothing, if the signal interrupted this thread's own write of the
        buffer (it must finish first). If another thread holds the buffer's
        lock for ``timeout`` seconds (its write is stuck on a full pipe), the
        frames still buffered go to stderr, so dying now loses none of them."""
        try:
            return self._flush(timeout)
        except SpilledError:
            return True

    def _flush(self, timeout: float) -> bool:
        """Send the buffer under the lock, waiting at most ``timeout`` seconds
        for it (-1: as long as it takes). Return False, sending nothing, if
        this thread is in the middle of writing the buffer already (a signal
        handler or a finalizer interrupted it): what it writes must not be
        cut into.

        Raises:
            SpilledError: the listener cannot be reached, or the lock stayed
                taken for ``timeout`` seconds; the buffer went to stderr.
        """
        self._check_fork()
        if not self._lock.acquire(timeout=timeout):
            self._spill_unlocked(timeout)
            return True  # nothing was buffered
        try:
            if on_this_stack(self._writing):
                return False
            if self._held:  # logged before what is buffered (see _send_nested)
                self._send_held()
            try:
                self._writing = here()
                self._flush_locked()
            finally:
                self._writing = None
                if self._held:
                    self._send_held()
            return True
        finally:
            self._lock.release()
            _sigterm.run_deferred()

    def _spill_unlocked(self, timeout: float) -> None:
        """Write what is buffered to stderr, if anything, and raise SpilledError."""
        # Taking frames out without the lock is safe here: the holder is in
        # the middle of writing frames it took out earlier, and what is in the
        # buffer now is whole frames (see _send). So are the frames held for
        # it to send after that write, which it may never finish.
        data = take_all(self._held) + take_all(self._buffer)
        if not data:
            return
        why = f"pid {os.getpid()} waited {timeout:g} s for another thread's write to the log listener"
        spill(data, why)
        raise SpilledError(f"{why}; the buffer went to stderr")

    def _flush_locked(self) -> None:
        self._armed = False  # before taking the frames: one added after this arms the flusher again
        self._write_out(self._buffer)

    def close(self) -> None:
        """Send what is buffered, then close this process's pipe; the next
        record opens a new one."""
        self.flush()
        with self._lock:
            if on_this_stack(self._writing) or self._unfinished is not None:
                # Called from a signal handler (or a finalizer) that interrupted
                # this thread's write: the write goes on, on this pipe.
                return
            # Let go of the pipe before closing it: a send that interrupts
            # this (a signal handler's) opens a new one rather than write to
            # a closed descriptor.
            pipe = self._pipe
            self._pipe = -1
            self._spare = None
            if pipe >= 0 and self._pipe_pid == os.getpid():
                os.close(pipe)

    def _before_fork(self) -> None:
        # A child must not inherit records it would send a second time.
        self.flush()

    def _after_fork_in_child(self) -> None:
        self._drop_inherited_pipe()
        self._lock = threading.RLock()
        self._buffer = bytearray()  # the parent's, flushed before the fork
        self._armed = False  # this process has no flusher yet
        # Records from this child always cross the pipe (a listener process
        # sets its own delivery after the fork).
        self._deliver_here(None)
        # Last: until now a signal handler that sends sees the fork not yet handled.
        self._pipe_pid = os.getpid()
