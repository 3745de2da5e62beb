"""Splitting one worker's byte stream into whole frames, with no sockets:
record frames (a header and a marshalled payload) and text frames (a line
ending in ``TEXT_END``), as the worker wrote them, however the reads cut them."""

from __future__ import annotations

from typing import Any, Callable, Union

from . import _codec

__all__ = ["FrameError", "FrameParser"]

Buffer = Union[bytes, bytearray]
# A text frame at least this long is handed on as a view of the read, not copied.
LONG_FRAME = 4096
#: A longer unterminated line is not from a worker (which never sends one).
TEXT_FRAME_LIMIT = _codec.MAX_PAYLOAD + 1024
_RECORD_START_BYTE = bytes([_codec.RECORD_START])


class FrameError(ValueError):
    """The stream is not one a worker writes; its message says what the sender sent."""


class FrameParser:
    """Hands on the complete frames of one connection as they arrive.

    ``on_record(payload, context)`` is called for each record frame's payload,
    ``on_text(frames, context)`` for each run of complete text frames (bytes,
    a bytearray, or for a long line a memoryview of the read, valid during the
    call). ``context`` is whatever the caller wants them to get.
    """

    __slots__ = ("pending", "_on_record", "_on_text", "_context")

    def __init__(
        self,
        on_record: Callable[[Buffer, Any], None],
        on_text: Callable[[_codec.Frames, Any], None],
        context: Any = None,
    ) -> None:
        #: The start of a frame that has not arrived whole yet.
        self.pending = bytearray()
        self._on_record = on_record
        self._on_text = on_text
        self._context = context

    def feed(self, data: bytes) -> None:
        """Hand on every frame that ``data`` completes.

        Raises:
            FrameError: the stream is not a worker's; ``pending`` is then empty
                and nothing more should be fed.
        """
        try:
            self._feed(data)
        except FrameError:
            self.pending = bytearray()
            raise

    def _feed(self, data: bytes) -> None:
        pending = self.pending
        start = 0  # where the frames that begin in this read start
        if pending:
            # First complete the frame an earlier read began. A text frame takes
            # only this read's bytes up to its end; the rest is parsed in place.
            start = self._complete_pending(data)
            if start < 0:
                return
            pending = self.pending
        if start < len(data):  # pending is empty: the text frame it completed was taken
            pos = self._take_frames(data, start)
            pending += memoryview(data)[pos:]
        self._check_unterminated()

    def _complete_pending(self, data: bytes) -> int:
        """Add the start of ``data`` to the pending frame and take what is then
        complete; return where this read's own frames start, or -1 if all of
        ``data`` went to a line that is still unterminated."""
        pending = self.pending
        if pending[0] == _codec.RECORD_START:
            start = len(data)
        else:
            start = data.find(_codec.TEXT_END) + 1
            if not start:  # still inside one long line: nothing to parse
                pending += data
                self._check_unterminated()
                return -1
        pending += memoryview(data)[:start]
        pos = self._take_frames(pending, 0)
        if pos == len(pending):  # the receiver may hold on to what it took: start afresh
            self.pending = bytearray()
        else:
            del pending[:pos]
        return start

    def _take_frames(self, buf: Buffer, pos: int) -> int:
        """Hand on every complete frame from ``pos``; return where the first
        incomplete one starts."""
        while pos < len(buf):
            if buf[pos] == _codec.RECORD_START:
                end = self._take_record(buf, pos)
            else:
                end = self._take_texts(buf, pos)
            if end == pos:
                return pos
            pos = end
        return pos

    def _take_record(self, buf: Buffer, pos: int) -> int:
        """Hand on the record frame at ``pos``; return where it ends, or ``pos``
        if it is incomplete."""
        if len(buf) - pos < _codec.HEADER.size:
            return pos
        _, size = _codec.HEADER.unpack_from(buf, pos)
        if size > _codec.MAX_PAYLOAD:
            raise FrameError(f"sent a {size}-byte frame (limit {_codec.MAX_PAYLOAD})")
        end: int = pos + _codec.HEADER.size + size
        if end > len(buf):
            return pos
        self._on_record(buf[pos + _codec.HEADER.size : end], self._context)
        return end

    def _take_texts(self, buf: Buffer, pos: int) -> int:
        """Hand on the complete text frames from ``pos`` (up to the next record
        frame); return where they end, or ``pos`` if there are none."""
        end = self._texts_end(buf, pos)
        if end == pos:
            return pos
        if type(buf) is bytes:
            # Long lines are passed on as views of this read, uncopied: copying
            # was most of the listener's work for 64 KiB records.
            pos = self._take_long_lines(buf, pos, end)
            if pos == end:
                return end
        self._on_text(buf if pos == 0 and end == len(buf) else buf[pos:end], self._context)
        return end

    def _texts_end(self, buf: Buffer, pos: int) -> int:
        """Where the run of complete text frames from ``pos`` ends."""
        record_at = buf.find(_RECORD_START_BYTE, pos)
        if record_at < 0:
            return max(buf.rfind(_codec.TEXT_END, pos) + 1, pos)
        if buf[record_at - 1 : record_at] != _codec.TEXT_END:
            raise FrameError("sent a text frame cut short by a record frame")
        return record_at

    def _take_long_lines(self, buf: bytes, pos: int, end: int) -> int:
        """Hand on the lines from ``pos`` one by one as views while they are
        long (with the mark before each, if any); return where the first
        short one starts."""
        view = memoryview(buf)
        while pos < end:
            stop = buf.find(_codec.TEXT_END, pos, end) + 1
            # A mark (the time its write began) goes along with the long line after it.
            if stop - pos < LONG_FRAME and not (buf[pos] == _codec.MARK_START and _long_at(buf, stop, end)):
                break
            self._on_text(view[pos:stop], self._context)
            pos = stop
        return pos

    def _check_unterminated(self) -> None:
        pending = self.pending
        if len(pending) > TEXT_FRAME_LIMIT and pending[0] != _codec.RECORD_START:
            raise FrameError(f"sent a line of over {_codec.MAX_PAYLOAD} bytes")


def _long_at(buf: bytes, pos: int, end: int) -> bool:
    """Whether the text frame at ``pos`` (before ``end``) is a long line."""
    return pos < end and buf.find(_codec.TEXT_END, pos, end) + 1 - pos >= LONG_FRAME
