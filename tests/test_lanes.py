"""A handler's lane (``mplog._lanes``): its thread never sleeps through a put,
a put that a signal handler interrupts and re-enters neither deadlocks nor
loses an item, and a handler that calls ``sys.exit()`` does not end it.

The interleavings are forced with a line trace on the putting thread: a signal
handler runs at the same points (between two lines of the interrupted code),
and the CPU scheduler can stop a thread there too."""

from __future__ import annotations

import inspect
import sys
import threading
from typing import Any, Callable, List

from mplog._lanes import BACKLOG_BYTES, Lane
from tests.conftest import wait_until

TraceFunction = Callable[[Any, str, Any], Any]


def _at_line(function: Callable[..., Any], text: str, action: Callable[[], None]) -> TraceFunction:
    """A trace function (for ``sys.settrace``) that runs ``action()`` once, when
    the thread is about to run the line of ``function`` that reads ``text``."""
    lines, first = inspect.getsourcelines(function)
    found = [first + index for index, line in enumerate(lines) if line.strip() == text]
    assert len(found) == 1, f"{function.__qualname__} no longer has one line {text!r}"
    code, target, done = function.__code__, found[0], []

    def local(frame: Any, event: str, arg: Any) -> TraceFunction:
        if event == "line" and frame.f_lineno == target and not done:
            done.append(True)
            action()
        return local

    def trace(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code is code else None

    return trace


def _asleep(lane: Lane) -> bool:
    """Whether the lane's thread waits for items (CPython's Condition keeps its waiters)."""
    return bool(lane._has_items._waiters)  # type: ignore[attr-defined]


def test_a_lane_woken_for_an_item_it_already_took_still_wakes_for_the_next():
    """The put that appends an item is stopped before it looks whether the
    lane's thread sleeps; meanwhile the thread (busy when the item came) takes
    it, handles it and sleeps. The put then wakes it for nothing, and it sleeps
    again: the next put must still wake it. (On Python 3.8 a busy machine
    makes this interleaving alone; the thread then slept for good, its backlog
    filled, and whoever put more waited for ever: a gunicorn master in CI.)"""
    handled: List[str] = []
    release = threading.Event()
    lane = Lane("test", 10.0, lambda message: None)
    lane.put(lambda _: release.wait(10), None)  # keeps the thread busy until released
    wait_until(lambda: lane.busy_since > 0, "the lane's thread busy")

    def let_the_lane_take_it_and_sleep() -> None:
        release.set()
        wait_until(lambda: handled == ["second"] and _asleep(lane), "the lane handling the item and sleeping", 10)

    sys.settrace(_at_line(Lane._push, "if self._idle:", let_the_lane_take_it_and_sleep))
    try:
        lane.put(handled.append, "second")
    finally:
        sys.settrace(None)
    wait_until(lambda: _asleep(lane), "the lane's thread asleep again", 10)  # woken for nothing
    lane.put(handled.append, "third")
    wait_until(lambda: handled == ["second", "third"], "the next item handled (the lane slept through its put)", 5)
    lane.stop()


def test_a_put_reentered_while_it_holds_the_lanes_lock_neither_deadlocks_nor_loses():
    """A put on a sleeping lane takes the lane's lock to wake it; a signal
    handler that logs there puts again, in the same thread. Both items are
    handled, and the put returns (with a plain lock, it waited for itself)."""
    handled: List[str] = []
    lane = Lane("test", 10.0, lambda message: None)
    wait_until(lambda: _asleep(lane), "the lane's thread asleep")

    def put_as_a_signal_handler_would() -> None:
        lane.put(handled.append, "nested")

    def putter() -> None:
        sys.settrace(
            _at_line(
                Lane._push,
                "self._idle = False  # woken: later items need not wake it again",
                put_as_a_signal_handler_would,
            )
        )
        try:
            lane.put(handled.append, "outer")
        finally:
            sys.settrace(None)

    thread = threading.Thread(target=putter, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the put re-entered under the lane's lock deadlocked"
    wait_until(lambda: sorted(handled) == ["nested", "outer"], "both items handled", 10)
    lane.stop()


def test_a_handler_that_calls_sys_exit_does_not_end_its_lane(capfd):
    """``sys.exit()`` in a handler is reported as its error, and the lane
    handles the next item (before, its thread ended, and the lane took items
    it would never handle)."""
    handled: List[str] = []
    lane = Lane("exiting", 10.0, lambda message: None)
    lane.put(lambda _: sys.exit(3), None)
    lane.put(handled.append, "after")
    wait_until(lambda: handled == ["after"], "the item after the sys.exit() handled", 10)
    assert "error in handler exiting" in capfd.readouterr().err
    lane.stop()


def test_a_put_on_a_lane_whose_thread_has_ended_never_waits():
    """Once the lane's thread has ended (stopped), puts past a full backlog
    are dropped and counted at once: nothing is left to make room."""
    lane = Lane("ended", 10.0, lambda message: None)
    lane.stop()
    wait_until(lane._ended.is_set, "the lane's thread ended", 10)
    results: List[bool] = []

    def fill() -> None:
        chunk = "x" * 65536
        for _ in range(BACKLOG_BYTES // len(chunk) + 2):
            results.append(lane.put(str, chunk, len(chunk)))

    thread = threading.Thread(target=fill, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "a put waited for room on a lane whose thread has ended"
    assert results[-1] is False and lane.dropped_total >= 1
