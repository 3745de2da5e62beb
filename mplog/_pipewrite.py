"""Writes to a pipe that an exception cannot cut in two: a write of more
than ``PIPE_BUF`` bytes whose count survives a signal handler raising partway.

A signal that cuts ``os.write`` short runs its Python handler as soon as the
call returns, before the count it returns can be kept: if the handler raises
(``KeyboardInterrupt``, ``SystemExit`` from a SIGTERM handler), where the frame
was cut is lost, and the stream's framing with it. A ``BufferedWriter`` keeps
the count in C: its ``flush()`` records each partial write before it runs the
handlers, so after any exception, calling it again writes exactly the rest.
"""

from __future__ import annotations

import functools
import io
import operator
import select

from ._buffered import BUFFER_BYTES

__all__ = ["ATOMIC_BYTES", "SPARE_BYTES", "PipeWrite"]

#: A write of at most this many bytes to a pipe is atomic: all of it goes in, or none.
ATOMIC_BYTES = select.PIPE_BUF
#: A writer with room for at most this much is kept for the next write to
#: its pipe (making one costs 3 us): each gets room for twice its first write.
SPARE_BYTES = 4 * BUFFER_BYTES

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
