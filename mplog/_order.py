"""Causal order across processes: each write to a pipe starts with a mark,
the time it began (``CLOCK_MONOTONIC``: one clock for every process of the
host), and the listener hands on what it read from several pipes in the
order of their marks.

A record logged after another in an order the program can see (one process
wrote it, then told a second, which then logged) has the later mark: the
first write was complete before the second's mark was taken. The listener
hands on, in each wake-up, only what was marked before that wake-up began to
read, and before whatever a pipe still held after its read: everything
written before then has been read, so nothing marked earlier can come later.
What was marked after waits for the next wake-up.

A mark is a text frame of its own: ``MARK_START``, 16 hex digits and
``TEXT_END``. Split at ``MARK_START``, a run of text frames gives one piece
per write, each led by its time, and pieces from several pipes sort into
order as plain bytes, in C: the listener does no work per record in Python
for lines, only per record frame and per long line (which it keeps uncopied).
"""

from __future__ import annotations

import bisect
import itertools
import operator
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import _codec
from ._framing import LONG_FRAME, FrameError

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["MARKED", "Merge", "mark"]

#: A mark, for ``MARK % time.monotonic_ns()``.
MARK = b"\xfc%016x\xff"
#: A write: its mark, its frames and what completes the last, for
#: ``MARKED % (time.monotonic_ns(), frames, end)`` (one step, no concatenation).
MARKED = MARK + b"%b%b"
_MARK_BYTE = bytes([_codec.MARK_START])
_KEY_SIZE = 16
_KEY = b"%016x"
#: A piece that goes on with a write marked in an earlier read: its time, then the text.
_CONTINUED = _KEY + _codec.TEXT_END + b"%b"
#: What a piece starts with: its time as 16 hex digits, then ``TEXT_END``.
_PREFIX_SIZE = _KEY_SIZE + 1
_BODY = operator.itemgetter(slice(_PREFIX_SIZE, None))
_ORDER = operator.itemgetter(0, 1)
#: A mark further ahead of the listener's clock than this is not a time this
#: host's processes can have taken (a client of ``mplog serve`` that lies):
#: what such a client sent is not waited for.
_FUTURE_NS = 1_000_000_000
#: Past this many pieces held for a route, they are handed on anyway: a
#: client that lies about its times cannot make the listener hold without end.
HOLD_PIECES = 100_000

# A piece of text or a record frame of a route that has record frames or long
# lines this wake-up: (time, arrival, body or payload, the record's
# connection or None for text, and when counting: the connection it came
# from and its size in that connection's stream; else None and 0).
_Item = Tuple[bytes, int, Any, "Optional[Connection]", "Optional[Connection]", int]


def mark() -> bytes:
    """The mark to write before a write's frames (its time, now)."""
    return MARK % time.monotonic_ns()


class Merge:
    """What the listener read from the pipes, handed on in the order of the marks.

    ``deliver_text(route, frames)`` gets lines of a route (marks taken out),
    ``deliver_record(payload, conn)`` a record frame; both in order.
    ``counting``: keep each connection's ``held``, the bytes of its stream
    taken here and not yet handed on (a server that journals how far each
    stream is written must not count them; see ``Connection.position``).
    """

    __slots__ = ("_texts", "_items", "_arrival", "_deliver_text", "_deliver_record", "_counting", "_mark_size")

    def __init__(
        self,
        deliver_text: Callable[[int, _codec.Frames], None],
        deliver_record: Callable[["bytes | bytearray", "Connection"], None],
        counting: bool = False,
    ) -> None:
        # Per route, its pieces of text, each led by its prefix, while it has
        # no record frame or long line waiting (and nothing is counted): these
        # sort and join in C.
        self._texts: Dict[int, List[bytes]] = {}
        # Per route with a record frame or a long line waiting: its items.
        self._items: Dict[int, List[_Item]] = {}
        self._arrival = itertools.count()
        self._deliver_text = deliver_text
        self._deliver_record = deliver_record
        self._counting = counting
        # The size of a mark taken alone, counted with the long line after it.
        self._mark_size = 0

    @property
    def holding(self) -> bool:
        """Whether something read waits to be handed on."""
        return bool(self._texts or self._items)

    def take_text(self, run: _codec.Frames, conn: "Connection") -> None:
        """Keep a run of whole text frames that ``conn`` sent (a memoryview:
        one long line, or the mark before it).

        Raises:
            FrameError: a mark that is not one.
        """
        if type(run) is memoryview:
            self._take_view(run, conn)
            return
        if len(run) >= LONG_FRAME and run.find(_MARK_BYTE) < 0:  # the rest of a long write: kept uncopied
            self._add(conn, _KEY % _next_time(conn), run, None, len(run))
            return
        pieces = bytes(run).split(_MARK_BYTE)
        marked = len(pieces) > 1
        first = pieces[0]
        if first:  # the rest of a write whose mark came in an earlier read
            pieces[0] = _CONTINUED % (_next_time(conn), first)
        else:
            del pieces[0]
        if marked:  # the last mark is the time of what follows
            _set_mark(conn, pieces[-1])
        if self._counting:
            self._add_pieces(conn, pieces, len(first))
            return
        items = self._items.get(conn.route)
        if items is None:
            self._texts.setdefault(conn.route, []).extend(pieces)
        else:
            arrival = self._arrival
            items.extend((piece[:_KEY_SIZE], next(arrival), _BODY(piece), None, None, 0) for piece in pieces)

    def _take_view(self, view: memoryview, conn: "Connection") -> None:
        """Keep a long line, uncopied, or take the mark before one."""
        if _codec.is_mark(view, 0):
            _set_mark(conn, view[1:].tobytes())
            self._mark_size = len(view)  # the parser hands on its long line next
            return
        size, self._mark_size = len(view) + self._mark_size, 0
        self._add(conn, _KEY % _next_time(conn), view, None, size)

    def take_record(self, payload: "bytes | bytearray", conn: "Connection") -> None:
        """Keep a record frame that ``conn`` sent (it follows ``conn``'s last mark)."""
        key = _KEY % _next_time(conn)  # after what came before it in its write
        if self._counting:
            self._add(conn, key, payload, conn, _codec.HEADER.size + len(payload))
        else:  # one call fewer per record frame, in every session's listener
            self._items_of(conn.route).append((key, next(self._arrival), payload, conn, None, 0))

    def _add(self, conn: "Connection", key: bytes, body: Any, record_of: "Optional[Connection]", size: int) -> None:
        """Keep an item ``conn`` sent: ``size`` bytes of its stream at time ``key``."""
        if self._counting:
            conn.held += size
            self._items_of(conn.route).append((key, next(self._arrival), body, record_of, conn, size))
        else:
            self._items_of(conn.route).append((key, next(self._arrival), body, record_of, None, 0))

    def _add_pieces(self, conn: "Connection", pieces: List[bytes], continued: int) -> None:
        """Keep, counted, the pieces split from a run ``conn`` sent: each was
        a mark's byte and the piece; the first, if ``continued``, those bytes
        alone (more of a write marked in an earlier run)."""
        sizes = [len(piece) + 1 for piece in pieces]
        if continued:
            sizes[0] = continued
        arrival = self._arrival
        self._items_of(conn.route).extend(
            (piece[:_KEY_SIZE], next(arrival), _BODY(piece), None, conn, size) for piece, size in zip(pieces, sizes)
        )
        conn.held += sum(sizes)

    def _items_of(self, route: int) -> List[_Item]:
        """The items of ``route``, its pieces of text among them from now on."""
        items = self._items.get(route)
        if items is None:
            arrival = self._arrival
            pieces = self._texts.pop(route, ())
            items = self._items[route] = [
                (piece[:_KEY_SIZE], next(arrival), _BODY(piece), None, None, 0) for piece in pieces
            ]
        return items

    def hand_on(self, until: Optional[int], began: int = 0) -> None:
        """Hand on, in order, what was marked before ``until`` (times of
        ``time.monotonic_ns()``; ``began``: when the listener began to read);
        keep the rest. ``None``: hand on everything."""
        before = None if until is None else b"%016x" % until
        future = None if until is None else b"%016x" % (began + _FUTURE_NS)
        for route in list(self._texts):
            pieces = self._texts[route]
            pieces.sort()
            cut = _cut(pieces, before, future)
            lines = b"".join(map(_BODY, pieces[:cut]))
            if lines:
                self._deliver_text(route, lines)
            _keep(self._texts, route, pieces, cut)
        for route in list(self._items):
            items = self._items[route]
            items.sort(key=_ORDER)
            cut = _cut(items, None if before is None else (before,), None if future is None else (future,))
            self._hand_on_items(route, items[:cut])
            _keep(self._items, route, items, cut)

    def _hand_on_items(self, route: int, items: List[_Item]) -> None:
        """Hand on a route's items: short lines joined, long ones (uncopied)
        and record frames alone."""
        lines: List[bytes] = []
        for _, _, body, conn, owner, size in items:
            if owner is not None:
                owner.held -= size
            if conn is None and len(body) < LONG_FRAME:
                lines.append(body)
                continue
            if lines:
                self._deliver_text(route, b"".join(lines))
                lines = []
            if conn is None:
                self._deliver_text(route, body)
            else:
                self._deliver_record(body, conn)
        if lines:
            self._deliver_text(route, b"".join(lines))


def _set_mark(conn: "Connection", piece: bytes) -> None:
    """Take the time of the mark that ``piece`` (split from a run) starts with.

    Raises:
        FrameError: not a mark.
    """
    try:
        conn.key = int(piece[:_KEY_SIZE], 16)
    except ValueError:
        raise FrameError(f"sent a mark that is not one: {piece[:_PREFIX_SIZE]!r}") from None
    conn.marked = True


def _next_time(conn: "Connection") -> int:
    """The time for more of the write ``conn`` marked last: its time and a
    nanosecond more for each such piece, so that they sort after one another
    (and before its next write, which began microseconds later at least)."""
    conn.key += 1
    return conn.key


def _cut(ordered: List[Any], before: Any, future: Any) -> int:
    """How many of ``ordered`` to hand on: those that sort ``before``; all if
    that is None, or if the last is further ahead than any process can be, or
    if too many would be held."""
    if before is None or not ordered or ordered[-1] >= future:
        return len(ordered)
    cut = bisect.bisect_left(ordered, before)
    return cut if len(ordered) - cut <= HOLD_PIECES else len(ordered)


def _keep(held: Dict[int, List[Any]], route: int, ordered: List[Any], cut: int) -> None:
    """Keep what was not handed on of ``route`` for the next wake-up."""
    if cut == len(ordered):
        del held[route]
    elif cut:
        held[route] = ordered[cut:]
