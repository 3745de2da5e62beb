"""The merge of several pipes on its own: what it holds back for order is
never counted as handed on, so a server that journals how far each stream is
written never commits records it has not passed to the handlers."""

from __future__ import annotations

import logging
from typing import Dict, List, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from mplog import _codec
from mplog._connection import Connection
from mplog._order import MARK, Merge

# A frame as written, and what the merge hands on for it: ("t", text frame) or ("r", payload).
_Frame = Tuple[bytes, Tuple[str, bytes]]


def _text(length: int) -> _Frame:
    frame = b"t" * length + _codec.TEXT_END
    return frame, ("t", frame)


def _record(length: int) -> _Frame:
    frame = _codec.encode(logging.LogRecord("r", logging.INFO, __file__, 1, "r" * length, None, None))
    return frame, ("r", frame[_codec.HEADER.size :])


# Short lines (joined), long lines (handed on as views, uncopied) and record frames.
frames = st.one_of(
    st.integers(0, 300).map(_text), st.integers(4096, 9000).map(_text), st.integers(0, 5000).map(_record)
)
# A stream: writes, each of one or more frames.
writes = st.lists(st.lists(frames, min_size=1, max_size=4), min_size=1, max_size=4)


class _Delivered:
    """What the merge hands on, per route, one item per frame."""

    def __init__(self) -> None:
        self.items: Dict[int, List[Tuple[str, bytes]]] = {1: [], 2: []}

    def text(self, route: int, frames: _codec.Frames) -> None:
        self.items[route].extend(("t", line + _codec.TEXT_END) for line in bytes(frames).split(_codec.TEXT_END)[:-1])

    def record(self, payload: "bytes | bytearray", conn: Connection) -> None:
        self.items[conn.route].append(("r", bytes(payload)))


@settings(max_examples=100, deadline=None)
@given(
    streams=st.tuples(writes, writes),
    times=st.lists(st.integers(1, 10_000), min_size=8, max_size=8, unique=True),
    until=st.integers(0, 10_001),
    read_size=st.sampled_from([50, 333, 4096, 1 << 20]),
)
def test_a_counting_merge_says_how_far_each_stream_is_handed_on(streams, times, until, read_size):
    """Two pipes' writes (each marked with a time, read in pieces of
    ``read_size``): before anything is handed on, each connection's position
    is 0; handed on up to ``until``, it is just past its writes marked before
    ``until``, which are exactly what was handed on for it; after handing on
    the rest, just past all of it."""
    delivered = _Delivered()
    merge = Merge(delivered.text, delivered.record, counting=True)
    conns, expected = [], []
    for route, (stream, stamps) in enumerate(zip(streams, (sorted(times[:4]), sorted(times[4:]))), start=1):
        conn = Connection(None, route, merge.take_record, merge.take_text)  # type: ignore[arg-type]
        conn.route = route
        marked = [
            (stamp * 1000, MARK % (stamp * 1000) + b"".join(f for f, _ in write), write)
            for write, stamp in zip(stream, stamps)
        ]
        data = b"".join(written for _, written, _ in marked)
        for at in range(0, len(data), read_size):
            conn.read += read_size
            conn.parser.feed(data[at : at + read_size])
        conn.read = len(data)
        assert conn.position() == 0  # all of it taken, none handed on yet
        conns.append(conn)
        expected.append(marked)
    merge.hand_on(until * 1000, until * 1000)
    for conn, marked in zip(conns, expected):
        before = [(written, write) for stamp, written, write in marked if stamp < until * 1000]
        assert conn.position() == sum(len(written) for written, _ in before)
        assert delivered.items[conn.route] == [item for _, write in before for _, item in write]
    merge.hand_on(None)
    for conn, marked in zip(conns, expected):
        assert conn.position() == sum(len(written) for _, written, _ in marked)
        assert delivered.items[conn.route] == [item for _, _, write in marked for _, item in write]
