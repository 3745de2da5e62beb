"""A route: one group of the listener's handlers (the root logger's, or a
named logger's), which of them take worker-formatted lines, and those lines
held until the listener hands them to the handlers' lanes, once per wake-up."""

from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import _codec
from ._lanes import Lane
from ._targets import renders_tracebacks, text_target_of
from ._writers import Writer, frame_writer_for, no_frames, writer_for

__all__ = ["Route"]


class Route:
    """One group of handlers (the root logger's, or a named logger's) and the
    lines waiting to be written to its text handlers."""

    def __init__(self, handlers: Sequence[logging.Handler]) -> None:
        self.handlers = tuple(handlers)
        # Plain text handlers get lines the workers formatted; the listener
        # only writes them, once per wake-up. The rest get records.
        self.writers: List[Writer] = []
        self.writer_handlers: List[logging.Handler] = []
        record_handlers = []
        for handler in handlers:
            if text_target_of(handler) is None:
                record_handlers.append(handler)
            else:
                self.writers.append(writer_for(handler))
                self.writer_handlers.append(handler)
        self.record_handlers = tuple(record_handlers)
        self.pending: List[List[Tuple[float, str]]] = [[] for _ in self.writers]
        self.pending_bytes = 0  # of the lines held, about
        self._writer_lanes: List[Lane] = []
        # A lone text handler that takes UTF-8 bytes gets text frames, written as they came.
        target = text_target_of(handlers[0]) if len(handlers) == 1 else None
        self.raw_errors = target.raw_errors if target is not None else None
        # What ends each line in its text frames ("\n"; nothing for a SyslogHandler's messages).
        self.line_end: str = getattr(handlers[0], "terminator", "\n") if self.raw_errors is not None else "\n"
        self.raw_pending: List[_codec.Frames] = []
        self.write_frames = frame_writer_for(handlers[0]) if self.raw_errors is not None else no_frames
        # Records with an exception then carry the tracebacks that the worker rendered for them.
        self.renders_tracebacks = any(renders_tracebacks(handler) for handler in handlers)

    def take(
        self, created: float, record: Optional[logging.LogRecord], texts: Optional[Tuple[Optional[str], ...]]
    ) -> Sequence[logging.Handler]:
        """Hold a record frame's lines for writing; return the handlers that
        need its record."""
        if texts is None or len(texts) != len(self.pending):  # a worker that did not format
            return self.handlers
        if self.raw_errors is not None:  # keep the order of the text frames around it
            lines = [text + self.line_end for text in texts if text is not None]
            self.raw_pending.append(_codec.text_frames(lines, self.raw_errors))
            return ()
        for pending, text in zip(self.pending, texts):
            if text is not None:
                pending.append((created, text))
                self.pending_bytes += len(text)
        return self.record_handlers

    def take_text(self, frames: _codec.Frames) -> None:
        """Hold text frames for writing."""
        if self.raw_errors is not None:
            self.raw_pending.append(frames)
            return
        # Not expected (a worker decides by the same config), but not to be lost either.
        now = time.time()
        for line in bytes(frames).split(_codec.TEXT_END)[:-1]:
            text = line.decode("utf-8", "backslashreplace").rstrip("\n")
            self.pending_bytes += len(text)
            for pending in self.pending:
                pending.append((now, text))

    def attach(self, lanes: Dict[logging.Handler, Lane]) -> None:
        """Hand the lines held to these lanes of the handlers from now on."""
        self._writer_lanes = [lanes[handler] for handler in self.writer_handlers]
        if self.raw_errors is not None:
            self._writer_lanes = [lanes[self.handlers[0]]]

    def hand_over(self) -> None:
        """Pass every line held to the lane of its handler."""
        if self.raw_pending:
            frames, self.raw_pending = self.raw_pending, []
            size = sum(map(len, frames))
            lane = self._writer_lanes[0]
            if lane.put(self.write_frames, frames, size):
                lane.records += _lines_in(frames)
                lane.received += size
        size, self.pending_bytes = self.pending_bytes, 0
        for index, pending in enumerate(self.pending):
            if pending:
                self.pending[index] = []
                lane = self._writer_lanes[index]
                if lane.put(self.writers[index], pending, size):
                    lane.records += len(pending)
                    lane.received += sum(len(text) for _, text in pending)


def _lines_in(frames: List[_codec.Frames]) -> int:
    """How many text frames (lines) ``frames`` hold: a memoryview is one long
    line (see ``_codec.Frames``), counted without copying it."""
    return sum(1 if isinstance(chunk, memoryview) else chunk.count(_codec.TEXT_END) for chunk in frames)
