"""Causal order across processes: each write to a pipe starts with a mark,
the time it began (``CLOCK_MONOTONIC``: one clock for every process of the
host), and the listener hands on what it read from several pipes in the
order of their marks.

A record logged after another in an order the program can see (one process
wrote it, then told a second, which then logged) has the later mark: the
first write was complete before the second's mark was taken. The listener
hands on, in each wake-up, only what was marked before that wake-up began to
read: everything written before then is in the pipes and is read in that
wake-up, so nothing marked earlier can come later. What was marked after it
began waits for the next wake-up.

A mark is a text frame of its own: ``MARK_START``, 16 hex digits and
``TEXT_END``. Split at ``MARK_START``, a run of text frames gives one piece
per write, each led by its time, and pieces from several pipes sort into
order as plain bytes, in C: the listener does no work per record in Python.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

from . import _codec
from ._codec import MARK_START
from ._framing import FrameError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["NO_MARK", "Merge", "is_mark", "mark", "mark_key"]

_MARK_BYTE = bytes([MARK_START])
#: What a piece starts with: its time as 16 hex digits, then ``TEXT_END``.
_KEY_SIZE = 16
_PREFIX_SIZE = _KEY_SIZE + 1
#: The prefix of what a process sent before its first mark.
NO_MARK = b"0" * _KEY_SIZE + _codec.TEXT_END
_BODY = operator.itemgetter(slice(_PREFIX_SIZE, None))
#: A mark further ahead of the listener's clock than this is not a time this
#: host's processes can have taken (a client of ``mplog serve`` that lies):
#: what such a client sent is not waited for.
_FUTURE_NS = 1_000_000_000

# A record frame, or a piece of text, in a route that has record frames this
# wake-up: (time, arrival, body or payload, connection for a record or None).
_Item = Tuple[bytes, int, Any, "Connection | None"]


def mark() -> bytes:
    """The mark to write before a write's frames (its time, now)."""
    return b"\xfc%016x\xff" % time.monotonic_ns()


def mark_key(ns: int) -> bytes:
    """The key that sorts after everything marked before ``ns``."""
    return b"%016x" % ns


def is_mark(frames: "bytes | bytearray", pos: int) -> bool:
    """Whether the text frame at ``pos`` is a mark."""
    return frames[pos] == MARK_START


class Merge:
    """What one wake-up of the listener read from the pipes, handed on in the
    order of the marks.

    ``deliver_text(route, frames)`` gets the lines of a route (marks taken
    out), ``deliver_record(payload, conn)`` a record frame; both in order.
    """

    __slots__ = ("_texts", "_items", "_arrival", "_deliver_text", "_deliver_record")

    def __init__(
        self,
        deliver_text: Callable[[int, bytes], None],
        deliver_record: Callable["[_codec.Frames, Connection]", None],
    ) -> None:
        # Per route, its pieces of text (led by their prefix), while it has
        # no record frame waiting: these sort and join in C.
        self._texts: Dict[int, List[bytes]] = {}
        # Per route with record frames waiting: its items, in Python.
        self._items: Dict[int, List[_Item]] = {}
        self._arrival = itertools.count()
        self._deliver_text = deliver_text
        self._deliver_record = deliver_record

    @property
    def holding(self) -> bool:
        """Whether something read waits for a later wake-up."""
        return bool(self._texts or self._items)

    def take_text(self, run: _codec.Frames, conn: "Connection") -> None:
        """Keep a run of whole text frames that ``conn`` sent."""
        if type(run) is memoryview:  # one long line, cut from its write's mark by a read
            pieces = [_continued(conn) + run.tobytes()]
        else:
            pieces = bytes(run).split(_MARK_BYTE)
            marked = len(pieces) > 1
            first = pieces[0]
            if first:  # the rest of a write whose mark an earlier read had
                pieces[0] = _continued(conn) + first
            else:
                del pieces[0]
            if marked:  # the last mark is the key of what follows
                last = pieces[-1]
                try:
                    conn.key, conn.prefix = int(last[:_KEY_SIZE], 16), last[:_PREFIX_SIZE]
                except ValueError:
                    raise FrameError(f"sent a mark that is not one: {last[:_PREFIX_SIZE]!r}") from None
        items = self._items.get(conn.route)
        if items is None:
            self._texts.setdefault(conn.route, []).extend(pieces)
        else:
            arrival = self._arrival
            items.extend((piece[:_KEY_SIZE], next(arrival), _BODY(piece), None) for piece in pieces)

    def take_record(self, payload: _codec.Frames, conn: "Connection") -> None:
        """Keep a record frame that ``conn`` sent (it follows ``conn``'s last mark)."""
        route = conn.route
        items = self._items.get(route)
        if items is None:
            arrival = self._arrival
            pieces = self._texts.pop(route, ())
            items = self._items[route] = [
                (piece[:_KEY_SIZE], next(arrival), _BODY(piece), None) for piece in pieces
            ]
        items.append((conn.prefix[:_KEY_SIZE], next(self._arrival), payload, conn))

    def hand_on(self, began: "int | None") -> None:
        """Hand on, in order, what was marked before ``began`` (the
        listener's ``time.monotonic_ns()`` before it read); keep the rest.
        ``None``: hand on everything (nothing more will be read)."""
        until = None if began is None else mark_key(began)
        future = None if began is None else mark_key(began + _FUTURE_NS)
        for route in list(self._texts):
            pieces = self._texts[route]
            pieces.sort()
            cut = _cut(pieces, until, future)
            lines = b"".join(map(_BODY, pieces[:cut]))
            if lines:
                self._deliver_text(route, lines)
            _keep(self._texts, route, pieces, cut)
        for route in list(self._items):
            items = self._items[route]
            items.sort(key=_ORDER)
            cut = _cut(items, (until,) if until is not None else None, (future,) if future is not None else None)
            self._hand_on_items(route, items[:cut])
            _keep(self._items, route, items, cut)

    def _hand_on_items(self, route: int, items: List[_Item]) -> None:
        """Hand on a route's items: runs of text joined, each record frame alone."""
        lines: List[bytes] = []
        for _, _, body, conn in items:
            if conn is None:
                lines.append(body)
                continue
            if lines:
                self._deliver_text(route, b"".join(lines))
                lines = []
            self._deliver_record(body, conn)
        if lines:
            self._deliver_text(route, b"".join(lines))


_ORDER = operator.itemgetter(0, 1)


def _continued(conn: "Connection") -> bytes:
    """The prefix for more of the write ``conn`` marked last: its time and a
    nanosecond more for each such piece, so that they sort after one another
    (and before its next write, which began microseconds later at least)."""
    conn.key += 1
    conn.prefix = b"%016x\xff" % conn.key
    return conn.prefix


def _cut(ordered: List[Any], until: Any, future: Any) -> int:
    """How many of ``ordered`` to hand on: those before ``until``; all if
    ``until`` is None, or if the last is further ahead than any process can be."""
    if until is None or not ordered or ordered[-1] >= future:
        return len(ordered)
    return bisect.bisect_left(ordered, until)


def _keep(held: Dict[int, List[Any]], route: int, ordered: List[Any], cut: int) -> None:
    """Keep what was not handed on of ``route`` for the next wake-up."""
    if cut == len(ordered):
        del held[route]
    elif cut:
        held[route] = ordered[cut:]
