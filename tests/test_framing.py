"""The frame parser on its own: whole frames out, however the reads cut the
stream, and a clear refusal of what no worker sends."""

from __future__ import annotations

import logging
from typing import Any, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mplog import _codec
from mplog._framing import LONG_FRAME, TEXT_FRAME_LIMIT, FrameError, FrameParser


class Sink:
    """Collects what a parser hands on, in order, as ("record", message) and ("text", line)."""

    def __init__(self) -> None:
        self.items: List[Tuple[str, str]] = []
        self.views = 0

    def record(self, payload: Any, context: Any) -> None:
        assert context == "conn"
        _, _, record, _ = _codec.decode(bytes(payload))
        assert record is not None
        self.items.append(("record", record.getMessage()))

    def text(self, frames: Any, context: Any) -> None:
        assert context == "conn"
        self.views += type(frames) is memoryview
        for line in bytes(frames).split(_codec.TEXT_END)[:-1]:
            self.items.append(("text", line.decode()))


def _record_frame(message: str) -> bytes:
    return _codec.encode(logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None))


def _text_frame(line: str) -> bytes:
    return line.encode() + _codec.TEXT_END


def _parse(chunks: List[bytes]) -> Sink:
    sink = Sink()
    parser = FrameParser(sink.record, sink.text, "conn")
    for chunk in chunks:
        parser.feed(chunk)
    assert not parser.pending
    return sink


_frames = st.lists(
    st.tuples(st.sampled_from(["record", "text"]), st.text(st.characters(min_codepoint=32, max_codepoint=126))),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(frames=_frames, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
def test_every_frame_comes_out_whole_and_in_order_however_the_reads_cut_it(frames, cuts):
    stream = b"".join(_record_frame(m) if kind == "record" else _text_frame(m) for kind, m in frames)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    chunks = [stream[a:b] for a, b in zip(points, points[1:])]
    assert _parse(chunks).items == frames


def test_a_long_line_is_handed_on_as_a_view_of_the_read():
    long_line = "y" * LONG_FRAME
    sink = _parse([_text_frame(long_line) + _text_frame("short")])
    assert sink.items == [("text", long_line), ("text", "short")]
    assert sink.views == 1


def test_a_line_split_over_many_reads_waits_for_its_end():
    line = "z" * 10_000
    frame = _text_frame(line)
    sink = _parse([frame[i : i + 1000] for i in range(0, len(frame), 1000)])
    assert sink.items == [("text", line)]


@pytest.mark.parametrize(
    "stream, why",
    [
        (_codec.HEADER.pack(_codec.RECORD_START, _codec.MAX_PAYLOAD + 1), "byte frame"),
        (b"no end of line" + _record_frame("r"), "cut short by a record frame"),
        (b"x" * (TEXT_FRAME_LIMIT + 1), "line of over"),
    ],
    ids=["oversized record", "text cut by a record", "endless line"],
)
def test_a_stream_no_worker_writes_is_refused(stream, why):
    sink = Sink()
    parser = FrameParser(sink.record, sink.text, "conn")
    with pytest.raises(FrameError, match=why):
        parser.feed(stream)
    assert not parser.pending
