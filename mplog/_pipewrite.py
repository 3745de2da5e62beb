"""Writing whole frames into this process's pipe to the listener, so that
an exception cannot cut one in two: what :class:`mplog.Queue` sends with.

Up to ``PIPE_BUF`` bytes go in one ``os.write``, which is atomic. A longer
write's count must survive a signal handler raising partway. A signal that
cuts ``os.write`` short runs its Python handler as soon as the call returns,
before the count it returns can be kept: if the handler raises
(``KeyboardInterrupt``, ``SystemExit`` from a SIGTERM handler), where the frame
was cut is lost, and the stream's framing with it. A ``BufferedWriter`` keeps
the count in C: its ``flush()`` records each partial write before it runs the
handlers, so after any exception, calling it again writes exactly the rest.
"""

from __future__ import annotations

import functools
import io
import operator
import os
import select
from time import monotonic_ns
from types import FrameType
from typing import NoReturn, Optional

from ._buffered import BUFFER_BYTES, SpilledError, spill
from ._hello import connect
from ._marks import here, on_this_stack
from ._order import MARKED, mark

__all__ = ["ATOMIC_BYTES", "HELD_BYTES", "SPARE_BYTES", "PipeSender", "PipeWrite", "take_all"]

#: A write of at most this many bytes to a pipe is atomic: all of it goes in, or none.
ATOMIC_BYTES = select.PIPE_BUF
#: A writer with room for at most this much is kept for the next write to
#: its pipe (making one costs 3 us): each gets room for twice its first write.
SPARE_BYTES = 4 * BUFFER_BYTES

#: How much a thread may log while it is itself in the middle of a write to
#: the listener (from a signal handler or a finalizer that interrupted it): such
#: records are held and sent right after that write; past this many bytes they
#: go to stderr instead, so that a write stuck on a full pipe cannot make them
#: hold memory without end.
HELD_BYTES = 1024 * 1024

_CALL = operator.methodcaller("__call__")


class PipeWrite:
    """Whole frames on their way into a pipe: ``writer.write(data)`` only
    copies them in, each ``writer.flush()`` writes what is not in the pipe yet."""

    __slots__ = ("pipe", "data", "capacity", "writer")

    def __init__(self, pipe: int, size: int) -> None:
        self.pipe = pipe
        self.data = b""  # what is being written: it goes to stderr if the listener is gone
        # Room for more than ``size`` bytes (a write as big as the buffer would
        # go to the pipe directly, uncounted), and for later writes a bit longer.
        self.capacity = max(size + 1, min(2 * size, SPARE_BYTES))
        self.writer = io.BufferedWriter(io.FileIO(pipe, "wb", closefd=False), self.capacity)

    def take(self, buffer: bytearray, size: int) -> None:
        """Move the first ``size`` bytes of ``buffer`` (which ``data`` holds)
        into the writer, in one step that no exception can cut in two: a
        signal handler runs only between bytecodes, and these are two C calls
        made from C (``map``), with no bytecode between them."""
        moves = (functools.partial(self.writer.write, self.data), functools.partial(buffer.__delitem__, slice(0, size)))
        tuple(map(_CALL, moves))

    def discard(self) -> None:
        """Drop what is not written yet, which the writer would otherwise
        write when it is collected (to whatever file has the fd by then)."""
        self.writer.raw.close()


class PipeSender:
    """This process's pipe to the listener at ``address``, for frames of
    ``route``, opened on first use, and the writes on it. Callers serialise
    the writes with a reentrant lock (the queue's), and a call that takes it
    while the frame in ``_writing`` is on its stack has interrupted this
    thread's own write: its frames are held (``_send_nested``), and sent right
    after that write."""

    def __init__(self, address: str, route: int) -> None:
        self.address = address
        self.route = route
        self._pipe = -1  # this process's write end, once connected
        # The write of more than ATOMIC_BYTES under way, or one an exception
        # cut short: its pipe is set aside (_pipe is -1) until it is complete.
        self._unfinished: Optional[PipeWrite] = None
        self._spare: Optional[PipeWrite] = None  # a completed one, for the next on the same pipe
        # The frame of a write under way (or of a connection being opened for
        # it): set only while the lock is held, so a call that can take the
        # lock and finds it on its stack has interrupted that very write.
        self._writing: Optional[FrameType] = None
        # Frames logged by such calls, sent right after the write they
        # interrupted (before anything else this thread sends).
        self._held = bytearray()
        # Frames past HELD_BYTES, on their way to stderr (_spilling: being
        # written there; a call that interrupts that write adds its frame).
        self._overflow = bytearray()
        self._spilling: Optional[FrameType] = None

    def _send_nested(self, frame: bytes) -> None:
        """Send ``frame`` from a call that holds the lock and finds this thread
        writing, or frames held: the first is a call that interrupted this
        thread's write, whose frame waits for it; the second one made as such
        a write ended, or after an exception cut short the sending of held
        frames, which then go first."""
        self._hold(frame)
        if not on_this_stack(self._writing):
            self._send_held()

    def _hold(self, frame: bytes) -> None:
        """Keep ``frame`` for this thread to send once its write is done, or
        write it to stderr if ``HELD_BYTES`` are held already."""
        held = self._held
        if len(held) + len(frame) <= HELD_BYTES:
            held += frame
            return
        self._overflow += frame
        if not on_this_stack(self._spilling):
            self._spill_overflow()

    def _spill_overflow(self) -> None:
        """Write the frames past ``HELD_BYTES`` to stderr, with a note, and
        those added meanwhile: a call that interrupts this write to stderr
        adds its frame rather than write into the middle of it (the stream
        would refuse a reentrant write, and the record would be lost)."""
        while self._overflow:
            try:
                self._spilling = here()
                spill(
                    take_all(self._overflow),
                    f"pid {os.getpid()} logged more than {HELD_BYTES} bytes while its own write to "
                    f"the log listener at {self.address} waited (from a signal handler or a finalizer)",
                )
            finally:
                self._spilling = None

    def _send_held(self) -> None:
        """Send the frames held while this thread was writing, in order, and
        those held meanwhile (the lock held); to stderr if the listener is
        gone. An exception raised meanwhile (a signal handler's) is raised once
        they are all out. ``_writing`` is set while they are written, and
        cleared before the check for more, as in ``_send_locked``."""
        raised: Optional[BaseException] = None
        while self._held:
            try:
                self._writing = here()
                self._write_out(self._held)  # what it cannot write stays held, or is in the pipe whatever is raised
            except SpilledError:  # on stderr, with a note; the next send fails over
                pass
            except BaseException as exc:
                raised = raised or exc
            finally:
                self._writing = None
        if raised is not None:
            raise raised

    def _write_out(self, buffer: bytearray) -> None:
        """Write the frames in ``buffer`` (the queue's, or those held), taking
        them out; frames added meanwhile stay for the next write.

        Raises:
            SpilledError: the listener cannot be reached; the frames went to stderr.
        """
        if not buffer and self._unfinished is None:
            return
        try:
            # First, as it may wait: a SIGTERM handler that gives up waiting
            # for this takes the frames in the buffer (Queue._spill_unlocked).
            pipe = self._pipe if self._pipe >= 0 else self._open_pipe()
        except OSError as exc:
            data = bytes(buffer)
            del buffer[: len(data)]
            self._spill(data, exc)
        # A copy to write, so that other threads can go on adding frames (a
        # bytearray cannot grow while it is being written).
        size = len(buffer)
        if not size:
            return
        data = mark() + buffer[:size]  # the time, for the order across processes
        write = self._begin_write(pipe, data)
        write.take(buffer, size)  # the frames are in the buffer or the write, whatever is raised
        try:
            self._complete_write(write)
        except OSError as exc:
            self._spill(data, exc)

    def _spill(self, data: bytes, exc: OSError) -> NoReturn:
        """Write frames the listener cannot take to stderr; raise SpilledError."""
        spill(data, f"pid {os.getpid()} cannot reach the log listener at {self.address} ({exc})")
        raise SpilledError(*exc.args) from exc

    def _send_locked(self, data: bytes, end: bytes = b"") -> None:
        """Write whole frames to this process's pipe, connecting first if need be
        (``data``: the frames, ``end``: what completes the last one).

        Whatever an exception (a signal handler's) cuts short, the frames go
        into the pipe whole or not at all; a write it interrupts is finished
        first, then the exception is raised. Frames held meanwhile (logged by
        the code that interrupted it) are sent right after, raise or not.

        Raises:
            OSError: the listener cannot be reached; the pipe is closed.
        """
        try:
            self._writing = here()
            pipe = self._pipe
            if pipe < 0:
                pipe = self._open_pipe()
            # The time, for the order across processes (after a wait to connect).
            data = MARKED % (monotonic_ns(), data, end)
            if len(data) <= ATOMIC_BYTES:
                try:
                    os.write(pipe, data)  # atomic: a signal can interrupt it only before a byte is in
                except OSError:
                    self._pipe = -1
                    os.close(pipe)
                    raise
                return
            write = self._begin_write(pipe, data)
            write.writer.write(data)
            self._complete_write(write)
        finally:
            # Cleared first: a call that interrupts between the two finds
            # frames held, and sends them before its own.
            self._writing = None
            if self._held:
                self._send_held()

    def _open_pipe(self) -> int:
        """The pipe to write to next: the one a write was cut short on, once
        the rest of that write is in; or else a new connection to the listener."""
        write = self._unfinished
        if write is None:
            pipe = self._pipe = self._connect()
            return pipe
        try:
            self._complete_write(write)
        except OSError as exc:
            spill(write.data, f"pid {os.getpid()} cannot reach the log listener at {self.address} ({exc})")
            raise
        return write.pipe

    def _begin_write(self, pipe: int, data: bytes) -> PipeWrite:
        """A write of ``data`` (more than ATOMIC_BYTES) to ``pipe``, with
        nothing in it yet: until it is complete, the pipe is set aside, so that
        the next send finishes this write before anything else."""
        write = self._spare
        if write is None or write.pipe != pipe or len(data) >= write.capacity:
            write = PipeWrite(pipe, len(data))
            if write.capacity <= SPARE_BYTES:
                self._spare = write
        write.data = data
        self._unfinished = write
        self._pipe = -1
        return write

    def _complete_write(self, write: PipeWrite) -> None:
        """Write what ``write`` holds. If an exception cuts that short, write
        the rest, then raise it.

        Raises:
            OSError: the listener cannot be reached; the pipe is closed (and
                the listener, if still reading, discards a frame cut short).
        """
        try:
            write.writer.flush()
        except OSError:
            self._abandon(write)
            raise
        except BaseException:
            self._finish(write)
            raise
        self._completed(write)

    def _finish(self, write: PipeWrite) -> None:
        """Write the rest of ``write`` after an exception cut it short (the
        caller raises it next). Exceptions raised meanwhile, by further
        signals, are dropped: the frames come first, and one exception is
        raised for all. If the listener is gone, the frames go to stderr."""
        while True:
            try:
                write.writer.flush()
            except OSError as exc:
                self._abandon(write)
                spill(write.data, f"pid {os.getpid()} cannot reach the log listener at {self.address} ({exc})")
                return
            except BaseException:
                continue
            self._completed(write)
            return

    def _completed(self, write: PipeWrite) -> None:
        """``write`` is all in its pipe: the pipe takes the next send."""
        write.data = b""
        self._unfinished = None
        self._pipe = write.pipe

    def _abandon(self, write: PipeWrite) -> None:
        """Give up ``write`` and close its pipe (the next send connects anew)."""
        write.discard()
        self._unfinished = self._spare = None
        os.close(write.pipe)

    def _connect(self) -> int:
        """Introduce this process to the listener; return the pipe's write end.

        Raises:
            OSError: the listener cannot be reached, or kept turning the pipe away.
        """
        return connect(self.address, self.route)

    def _drop_inherited_pipe(self) -> None:
        """In a forked child: close this copy of the parent's pipe (writing to
        it could interleave with the parent's frames; closing our copy does
        not affect the parent), and drop the parent's unfinished write and
        held frames, which are the parent's to send."""
        pipe = self._pipe
        write = self._unfinished
        if write is not None:  # the parent's to finish
            write.discard()
            pipe = write.pipe
        if pipe >= 0:
            try:
                os.close(pipe)
            except OSError:
                pass
        self._pipe = -1
        self._unfinished = self._spare = None
        self._writing = self._spilling = None
        self._held = bytearray()
        self._overflow = bytearray()


def take_all(frames: bytearray) -> bytes:
    """Take the frames out of ``frames``: what is in it now (one added
    meanwhile, by another thread, stays)."""
    data = bytes(frames)
    del frames[: len(data)]
    return data
