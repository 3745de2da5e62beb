"""Passing what the listener receives to its handlers' lanes, in the order it
came: records, the lines workers formatted (gathered per wake-up), and records
logged in the listener's own process."""

from __future__ import annotations

import copy
import logging
import threading
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from . import _codec
from ._lanes import Lane, pass_marker
from ._recipes import mark_owned
from ._routes import Route
from ._writers import reopen

__all__ = ["Dispatcher", "lane_depth"]


class _LaneThread(threading.local):
    """In a lane's thread: how deep the record it handles is (0: sent by a
    process; 1: logged by a handler); elsewhere None."""

    depth: Optional[int] = None


_lane_thread = _LaneThread()


def lane_depth() -> Optional[int]:
    """How deep the record this lane thread is handling is; None outside lanes."""
    return _lane_thread.depth


def _mark_lane_thread(_: object) -> None:
    """The first item of every lane: marks its thread as a lane's."""
    _lane_thread.depth = 0


class _Nested:
    """A handler's ``handle`` for a record a handler logged: a record logged
    while handling it is one level deeper still."""

    __slots__ = ("handle",)

    def __init__(self, handle: Callable[[logging.LogRecord], object]) -> None:
        self.handle = handle

    def __call__(self, record: logging.LogRecord) -> None:
        _lane_thread.depth = 1
        try:
            self.handle(record)
        finally:
            _lane_thread.depth = 0


class Dispatcher:
    """Puts everything for the handlers on their lanes, one lane per handler.

    Args:
        routes: the listener's routes (route 0: the root logger's handlers).
        respect_handler_level: pass a record to a handler only at its level or above.
        prepare: the listener's ``prepare``, applied to every record first.
        stall_timeout: see :class:`~mplog._lanes.Lane`.
        on_resumed: called with a notice when a stalled handler returns.
    """

    def __init__(
        self,
        routes: List[Route],
        respect_handler_level: bool,
        prepare: Callable[[logging.LogRecord], logging.LogRecord],
        stall_timeout: float,
        on_resumed: Callable[[str], None],
    ) -> None:
        self.routes = routes
        self._respect_level = respect_handler_level
        self._prepare = prepare
        self._stall_timeout = stall_timeout
        self._on_resumed = on_resumed
        #: Replaced, never changed, when a route is added: whoever iterates
        #: it meanwhile (another thread) goes on with the one it took.
        self.lanes: Dict[logging.Handler, Lane] = {}
        self.lanes = self._with_lanes_for(handler for route in routes for handler in route.handlers)
        for route in routes:
            route.attach(self.lanes)

    def _with_lanes_for(self, handlers: Iterable[logging.Handler]) -> Dict[logging.Handler, Lane]:
        """The lanes, and a new lane for each of ``handlers`` that has none."""
        lanes = dict(self.lanes)
        for handler in handlers:
            if handler not in lanes:
                mark_owned(handler)  # this process never takes it over
                lane = Lane(repr(handler), self._stall_timeout, self._on_resumed)
                lane.put(_mark_lane_thread, None)
                lanes[handler] = lane
        return lanes

    def add_route(self, route: Route) -> int:
        """Serve ``route`` too, from any thread; return its number. Its frames
        may come only after this returns."""
        self.lanes = self._with_lanes_for(route.handlers)
        route.attach(self.lanes)
        self.routes.append(route)
        return len(self.routes) - 1

    def replace_handlers(self, successors: Dict[logging.Handler, logging.Handler]) -> Dict[logging.Handler, Lane]:
        """Give every route, from now on, the successor of each of its
        handlers (each in a new lane), after handing over the lines held;
        return the lanes of the handlers replaced, for the caller to stop."""
        self.hand_over()
        replaced = self.lanes
        routes = [Route([successors.get(handler, handler) for handler in route.handlers]) for route in self.routes]
        self.lanes = {handler: lane for handler, lane in replaced.items() if handler not in successors}
        self.lanes = self._with_lanes_for(handler for route in routes for handler in route.handlers)
        for route in routes:
            route.attach(self.lanes)
        self.routes[:] = routes  # the listener's list too
        return {handler: lane for handler, lane in replaced.items() if handler not in self.lanes}

    def route(self, number: int) -> Route:
        """Route ``number``.

        Raises:
            ValueError: there is no such route.
        """
        if not 0 <= number < len(self.routes):
            raise ValueError(f"a frame for route {number}; this listener has {len(self.routes)}")
        return self.routes[number]

    def on_frame(
        self,
        route: int,
        created: float,
        record: Optional[logging.LogRecord],
        texts: Optional[Tuple[Optional[str], ...]],
        size: int,
    ) -> None:
        """Take one record frame from a process."""
        target = self.route(route)
        handlers = target.take(created, record, texts)
        if record is not None and handlers:
            if handlers is target.handlers and target.writers:
                self.hand_over()  # lines held for these handlers came first
            self._deliver(record, target, handlers, size, nested=False)

    def on_text(self, route: int, frames: _codec.Frames) -> None:
        """Take a run of text frames from a process."""
        self.route(route).take_text(frames)

    def hand_over(self) -> None:
        """Pass the lines gathered in this wake-up to their handlers' lanes."""
        for route in self.routes:
            route.hand_over()

    def deliver(self, record: logging.LogRecord, route: int, nested: bool) -> None:
        """Pass a record logged in the listener's own process (``nested``: by
        a handler) to every handler of ``route``, after everything before it."""
        target = self.route(route)
        self.hand_over()
        message = record.msg
        size = len(message) if isinstance(message, str) else 0
        self._deliver(record, target, target.handlers, size, nested)

    def _deliver(
        self,
        record: logging.LogRecord,
        route: Route,
        handlers: Sequence[logging.Handler],
        size: int,
        nested: bool,
    ) -> None:
        """Put ``record`` on the lane of each of ``handlers`` that wants it. On
        a route where some formatters render tracebacks their own way, each of
        those handlers gets a copy carrying the traceback its formatter
        rendered in the worker, the others the record's ``exc_text``."""
        own = _own_tracebacks(record, route) if route.renders_tracebacks else None
        record = self._prepare(record)
        respect_level = self._respect_level
        lanes = self.lanes
        for handler in handlers:
            if not respect_level or record.levelno >= handler.level:
                given = record
                if own and id(handler) in own:  # lanes run at once: each its own copy
                    given = copy.copy(record)
                    given.exc_text = own[id(handler)]
                lane = lanes[handler]
                if lane.put(_Nested(handler.handle) if nested else handler.handle, given, size):
                    lane.records += 1
                    lane.received += size

    def reopen_files(self) -> None:
        """Have each handler's lane reopen its file (after everything before)."""
        for handler, lane in self.lanes.items():
            lane.put(reopen, handler)

    def pass_marker(self, on_passed: Callable[[], None]) -> None:
        """Run ``on_passed`` once every handler has handled all put on its lane so far."""
        self.hand_over()
        pass_marker(list(self.lanes.values()), on_passed)


def _own_tracebacks(record: logging.LogRecord, route: Route) -> Dict[int, str]:
    """Take from ``record`` the tracebacks the worker rendered for the handlers
    of ``route`` whose formatters render their own, by handler id (none if
    they were cut with the frame)."""
    tracebacks = record.__dict__.pop(_codec.TRACEBACKS, None)
    if type(tracebacks) is not tuple or len(tracebacks) != len(route.handlers):
        return {}
    return {id(handler): text for handler, text in zip(route.handlers, tracebacks) if text is not None}
