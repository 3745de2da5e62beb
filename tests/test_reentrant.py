"""Logging calls that interrupt another logging call of the same thread: a
signal handler's (SIGALRM, SIGTERM) or a finalizer's (``__del__``). None may
deadlock, tear a frame or lose a record; a record logged while the thread's own
write to the listener is under way is sent right after that write, before
anything the thread logs next.

Each worker is a forked process of a real session writing a real file. When it
has logged everything it reports its counts and idles, logging nothing more and
flushing nothing, until the parent has found every record in the file: in
buffered mode too, a record must get there without a later call to send it.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import os
import random
import select
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest

import mplog
from mplog import _codec, _hello
from mplog._pipewrite import HELD_BYTES
from tests import workload
from tests.conftest import file_handler, fork_running, wait_pid, wait_until

_MPLOG_DIR = os.path.dirname(mplog.__file__)
# Bigger than the worker's pipe (256 KiB): each write waits for the listener
# partway, so a signal mostly lands in the middle of one.
_BIG = 300_000
# Worker ids: the big records, and those the interrupting code logs.
_OUTER, _INNER = 1, 2
# Seconds to wait for a worker's report, or for its records to reach the file.
_WAIT = 60.0


def _session(log_path: str, mode: str) -> Any:
    """A session writing ``%(message)s`` lines to ``log_path``, durable or buffered."""
    return mplog.setup(file_handler(log_path), level="INFO", buffered=mode == "buffered")


def _worker_main(body: Callable[..., Dict[str, Any]], args: Tuple[Any, ...], report: int, release: int) -> None:
    """In the forked worker: run ``body(*args)``, write what it returns to
    ``report`` (one JSON line), then idle until the parent writes to
    ``release``, so that nothing but the queue itself sends what is left."""
    result = body(*args)
    os.write(report, json.dumps(result).encode() + b"\n")
    select.select([release], [], [], 2 * _WAIT)


class _Worker:
    """A forked worker running ``body(*args)`` (see :func:`_worker_main`).
    Used as a context manager: if the block raises, the worker is killed
    (SIGKILL, by pid) and reaped."""

    def __init__(self, body: Callable[..., Dict[str, Any]], *args: Any) -> None:
        report_read, report_write = os.pipe()
        release_read, release_write = os.pipe()
        self.pid = fork_running(_worker_main, body, args, report_write, release_read)
        os.close(report_write)
        os.close(release_read)
        self._report, self._release = report_read, release_write
        self.exit_code: Optional[int] = None

    def __enter__(self) -> "_Worker":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        os.close(self._report)
        if self._release >= 0:
            os.close(self._release)
        if self.exit_code is None:  # a failed check: the worker may be hung, or gone already
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):  # wait_pid killed and reaped it
                pass

    def result(self) -> Dict[str, Any]:
        """The worker's report, waiting ``_WAIT`` seconds at most for each part of it."""
        data = b""
        while not data.endswith(b"\n"):
            ready, _, _ = select.select([self._report], [], [], _WAIT)
            assert ready, f"worker {self.pid} reported nothing within {_WAIT} s (a deadlock?)"
            chunk = os.read(self._report, 65536)
            if not chunk:
                self.exit_code = wait_pid(self.pid)
                raise AssertionError(f"worker {self.pid} exited {self.exit_code} before it reported")
            data += chunk
        return dict(json.loads(data))

    def release(self) -> int:
        """Let the worker exit; return its exit code."""
        os.write(self._release, b"x")  # not just a close: the worker holds this end too
        os.close(self._release)
        self._release = -1
        self.exit_code = wait_pid(self.pid)
        return self.exit_code


def _lines(log_path: str) -> List[Tuple[int, int]]:
    """The (worker, sequence number) of each workload line in the file, in file order."""
    with open(log_path, encoding="utf-8", newline="\n") as stream:
        matches = (workload.LINE.match(line.rstrip("\n")) for line in stream)
        return [(int(m[1]), int(m[2])) for m in matches if m is not None]


def _read(path: str) -> str:
    """The text of a file, or "" if it is not there yet."""
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError:
        return ""


def _wait_for_records(log_path: str, expected: Dict[int, int], pid: int, elsewhere: Set[int] = frozenset()) -> None:
    """Wait until the file holds every record ``expected`` names (worker:
    count), each once and whole, but for the inner records ``elsewhere``
    (on stderr), and nothing else; fail (after ``_WAIT`` seconds) saying what
    is missing."""
    deadline = time.monotonic() + _WAIT
    while True:
        try:
            _assert_holds(workload.tally(log_path), expected, elsewhere)
            return
        except AssertionError as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {pid}, after {_WAIT} s: {error}") from None
        time.sleep(0.01)


def _assert_holds(tally: workload.Tally, expected: Dict[int, int], elsewhere: Set[int]) -> None:
    """``tally`` is of every record ``expected`` names but the inner ones ``elsewhere``, each once and whole."""
    assert not tally.torn, f"{len(tally.torn)} torn lines, e.g. {tally.torn[0][:200]!r}"
    assert not tally.duplicated(), f"duplicated records: {tally.duplicated()[:10]}"
    assert not tally.other, f"other lines: {tally.other[:5]}"
    assert set(tally.seqs) <= set(expected), f"records from unexpected workers {sorted(tally.seqs)}"
    for worker, count in expected.items():
        want = set(range(count)) - (elsewhere if worker == _INNER else set())
        got = set(tally.seqs.get(worker, {}))
        missing, unexpected = sorted(want - got), sorted(got - want)
        assert got == want, f"worker {worker}: missing {missing[:10]}, not expected {unexpected[:10]}"


def _assert_in_order(lines: List[Tuple[int, int]], inner: List[List[Any]], outer_count: int) -> None:
    """Records are in the order they were logged, and each is sent right
    after the write it interrupted.

    ``inner[n]`` is ``[call, unordered]`` for inner record ``n``: logged while
    outer call ``call`` was under way (or after it returned, before the next
    began); ``unordered`` if it was logged by code that interrupted another
    inner record's call (which it precedes if that call had not begun its
    write), or in another thread (a finalizer run by the flusher's
    allocations). An inner record must come after the outer record before
    that call and before the one after it; the outer records, and the inner
    ones not marked unordered, in the order logged.
    """
    outer = [seq for worker, seq in lines if worker == _OUTER]
    assert outer == list(range(outer_count)), "outer records out of order"
    ordered = [seq for worker, seq in lines if worker == _INNER and not inner[seq][1]]
    assert ordered == sorted(ordered), "inner records out of order"
    position = {record: index for index, record in enumerate(lines)}
    for seq, (call, _) in enumerate(inner):
        where = position[(_INNER, seq)]
        if call > 0:
            assert position[(_OUTER, call - 1)] < where, f"inner {seq}, logged during call {call}, came too early"
        if call + 1 < outer_count:
            assert where < position[(_OUTER, call + 1)], f"inner {seq}, logged during call {call}, came too late"


def _interrupted_mplog(frame: Optional[FrameType]) -> bool:
    """Whether the interrupted code (``frame`` and its callers) is mplog's."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_MPLOG_DIR):
            return True
        frame = frame.f_back
    return False


def _log_big_records_under_alarms(interval: float, count: int) -> Dict[str, Any]:
    """Log ``count`` big records while SIGALRM comes every ``interval``
    seconds, its handler logging a short record of its own; report, for each
    of those, the outer call it came in and whether it interrupted another
    handler (see :func:`_assert_in_order`), and how many interrupted mplog's code."""
    logger = logging.getLogger(workload.LOGGER)
    numbers = itertools.count()  # next() is one step: a handler that interrupts another numbers its record anew
    current = [0]  # the outer call under way (or last returned)
    inner: Dict[int, List[Any]] = {}
    depth = [0]
    in_mplog = [0]
    stopped = [False]

    def on_alarm(signum: int, frame: Optional[FrameType]) -> None:
        if stopped[0]:  # a signal that came before the timer stopped, handled after
            return
        depth[0] += 1
        try:
            seq = next(numbers)
            inner[seq] = [current[0], depth[0] > 1]
            in_mplog[0] += _interrupted_mplog(frame)
            logger.info("%s", workload.message(_INNER, seq, 40))
        finally:
            depth[0] -= 1

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, interval, interval)
    for seq in range(count):
        current[0] = seq
        logger.info("%s", workload.message(_OUTER, seq, _BIG))
    signal.setitimer(signal.ITIMER_REAL, 0)
    stopped[0] = True
    return {"inner": [inner[seq] for seq in range(next(numbers))], "in_mplog": in_mplog[0]}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("interval", [0.0005, 0.005])
@pytest.mark.parametrize("mode", ["durable", "buffered"])
def test_signal_handler_that_logs_during_big_writes(log_path, mode, interval):
    """A worker logs 200 records of 300 KB while SIGALRM comes every 0.5 or
    5 ms, its handler logging a short record: the worker neither deadlocks nor
    dies of nested handlers, and every record arrives once and whole, in
    order, each handler's record right after the write it interrupted."""
    count = 200
    with _session(log_path, mode):
        with _Worker(_log_big_records_under_alarms, interval, count) as worker:
            result = worker.result()
            _wait_for_records(log_path, {_OUTER: count, _INNER: len(result["inner"])}, worker.pid)
            assert worker.release() == 0
    assert result["in_mplog"] > 0, f"none of {len(result['inner'])} alarms interrupted mplog's code"
    _assert_in_order(_lines(log_path), result["inner"], count)


def _log_until_sigterm(started: int, warm_up: int) -> Dict[str, Any]:
    """Log big records until SIGTERM, whose handler logs that the worker is
    shutting down and tells the loop to stop; say on ``started`` when
    ``warm_up`` calls have returned (0: before the first, which connects to
    the listener). Report how many calls were made, and whether the signal
    interrupted mplog's code."""
    logger = logging.getLogger(workload.LOGGER)
    stop = [False]
    in_mplog = [False]

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        in_mplog[0] = _interrupted_mplog(frame)
        logger.info("%s", workload.message(_INNER, 0, 20))  # "shutting down"
        stop[0] = True

    signal.signal(signal.SIGTERM, on_sigterm)
    calls = 0
    while not stop[0]:
        if calls == warm_up:
            os.write(started, b"s")
        logger.info("%s", workload.message(_OUTER, calls, _BIG))
        calls += 1
    return {"calls": calls, "in_mplog": in_mplog[0]}


def _one_sigterm_trial(log_path: str, mode: str, warm_up: int, delay: float) -> bool:
    """Run one worker of :func:`_log_until_sigterm` in a session of its own,
    send it SIGTERM ``delay`` seconds after it says it started, and check its
    records. Return whether the signal interrupted mplog's code."""
    started_read, started_write = os.pipe()
    try:
        with _session(log_path, mode):
            with _Worker(_log_until_sigterm, started_write, warm_up) as worker:
                ready, _, _ = select.select([started_read], [], [], _WAIT)
                assert ready and os.read(started_read, 1) == b"s", "the worker did not start"
                time.sleep(delay)
                os.kill(worker.pid, signal.SIGTERM)
                result = worker.result()
                _wait_for_records(log_path, {_OUTER: result["calls"], _INNER: 1}, worker.pid)
                assert worker.release() == 0
    finally:
        os.close(started_read)
        os.close(started_write)
    return bool(result["in_mplog"])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["durable", "buffered"])
def test_sigterm_handler_that_logs(tmp_path, mode):
    """100 times: a worker logging 300 KB records gets SIGTERM a random 0-5 ms
    after it starts its first call (which connects to the listener), or its
    second; its own handler logs "shutting down" and stops the loop. It never
    hangs, exits 0, and every record it logged arrives, the handler's too. Most
    signals land in the middle of a logging call."""
    rng = random.Random(18)
    interrupted = [
        _one_sigterm_trial(str(tmp_path / f"trial{trial}.log"), mode, trial % 2, rng.uniform(0, 0.005))
        for trial in range(100)
    ]
    assert sum(interrupted) >= 50, f"only {sum(interrupted)} of 100 signals interrupted mplog's code"


# How many records finalizers log per call of the worker's: the first few that
# run inside the queue's send, where a nested call can deadlock or get
# stranded. Without a limit they would log for ever, as each record's own send
# makes garbage to collect.
_FINALIZER_RECORDS = 3
# The code of the queue's send: a finalizer run there interrupted it.
_QUEUE_FILES = tuple(os.path.join(_MPLOG_DIR, name) for name in ("_queue.py", "_pipewrite.py"))
_BUFFERED_FILE = os.path.join(_MPLOG_DIR, "_buffered.py")


def _in_queue_send(frame: Optional[FrameType]) -> bool:
    """Whether the code running at ``frame`` (or one of its callers) is the queue's send."""
    while frame is not None:
        if frame.f_code.co_filename in _QUEUE_FILES:
            return True
        frame = frame.f_back
    return False


def _in_flusher_wake_up(frame: Optional[FrameType]) -> bool:
    """Whether the code running at ``frame`` (or one of its callers) is a
    queue waking the flusher up for its buffer (``flusher.arm()``)."""
    while frame is not None:
        if frame.f_code.co_filename == _BUFFERED_FILE and frame.f_code.co_name == "arm":
            return True
        frame = frame.f_back
    return False


class _LogsWhenCollected:
    """Garbage in a reference cycle whose finalizer logs a record to
    ``state["logger"]`` if it runs where ``state["inside"]`` says (while the
    worker's current call has some of ``state["left"]`` records left), and
    leaves another like it: with the collector run at almost every
    allocation, one is finalized wherever the worker is, in the middle of a
    send too (as it connects, prepares a big write, takes frames out of the
    buffer, wakes the flusher up)."""

    def __init__(self, state: Dict[str, Any]) -> None:
        self.state = state
        self.cycle = self

    def __del__(self) -> None:
        state = self.state
        if state["stopped"]:
            return
        if state["left"] and state["inside"](sys._getframe(1)):
            state["left"] -= 1
            seq = next(state["numbers"])
            # By seq: finalizers do not nest (the collector does not).
            state["inner"].append([state["current"], threading.current_thread() is not threading.main_thread()])
            logging.getLogger(state["logger"]).info("%s", workload.message(_INNER, seq, 40))
        _LogsWhenCollected(state)


def _finalizers_that_log(inside: Callable[[Optional[FrameType]], bool], logger: str) -> Dict[str, Any]:
    """Start finalizers logging to ``logger`` where ``inside`` says, with the
    collector run at (almost) every allocation; return their state (set
    ``"current"`` and ``"left"`` per call, ``"stopped"`` at the end)."""
    state = {"stopped": False, "numbers": itertools.count(), "inner": [], "current": 0, "left": 0}
    state.update(inside=inside, logger=logger)
    gc.freeze()  # what the worker inherited is never scanned: collections stay cheap
    gc.set_threshold(1)
    _LogsWhenCollected(state)
    return state


def _log_while_finalizers_log(count: int) -> Dict[str, Any]:
    """Log ``count`` big records while finalizers of cyclic garbage, run at
    (almost) every allocation, log records of their own from inside the
    queue's sends; report which call each of those came in."""
    logger = logging.getLogger(workload.LOGGER)
    thresholds = gc.get_threshold()
    state = _finalizers_that_log(_in_queue_send, workload.LOGGER)
    try:
        for seq in range(count):
            state["current"], state["left"] = seq, _FINALIZER_RECORDS
            logger.info("%s", workload.message(_OUTER, seq, _BIG))
    finally:
        state["stopped"] = True
        gc.set_threshold(*thresholds)
    return {"inner": state["inner"]}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["durable", "buffered"])
def test_finalizer_that_logs_during_a_send(log_path, mode):
    """A worker logs 100 records of 300 KB while finalizers run at almost
    every allocation, and log when they run in the middle of the queue's send
    (connecting to the listener, preparing a big write, flushing): no
    deadlock, and every record arrives once and whole, each finalizer's right
    after the write it interrupted, with no later call to send it."""
    count = 100
    with _session(log_path, mode):
        with _Worker(_log_while_finalizers_log, count) as worker:
            result = worker.result()
            _wait_for_records(log_path, {_OUTER: count, _INNER: len(result["inner"])}, worker.pid)
            assert worker.release() == 0
    assert len(result["inner"]) >= count, f"only {len(result['inner'])} finalizers logged"
    _assert_in_order(_lines(log_path), result["inner"], count)


def _wake_the_flusher_while_finalizers_log(count: int) -> Dict[str, Any]:
    """``count`` times: log a record (its queue wakes the flusher up), then
    flush, while finalizers run at (almost) every allocation, and log to the
    "audit" logger (another queue) when they run as a queue wakes the flusher
    up; report how many they logged."""
    logger = logging.getLogger(workload.LOGGER)
    thresholds = gc.get_threshold()
    state = _finalizers_that_log(_in_flusher_wake_up, "audit")
    try:
        for seq in range(count):
            state["current"], state["left"] = seq, 1
            logger.info("%s", workload.message(_OUTER, seq, 100))
            mplog.flush()  # each queue's next record wakes the flusher up again
    finally:
        state["stopped"] = True
        gc.set_threshold(*thresholds)
    return {"inner": len(state["inner"])}


@pytest.mark.timeout(120)
def test_finalizer_that_logs_as_the_flusher_is_woken(tmp_path, log_path):
    """Buffered, two routes (root and "audit"): finalizers that log to
    "audit" while a root record wakes the flusher up (the first time, starts
    it), so that the audit record wakes it up in the middle of that, neither
    deadlock nor lose a record."""
    audit_path = str(tmp_path / "audit.log")
    audit = logging.getLogger("audit")
    audit.addHandler(file_handler(audit_path))
    audit.propagate = False
    try:
        with mplog.setup(file_handler(log_path), level="INFO", buffered=True, loggers=["audit"]):
            with _Worker(_wake_the_flusher_while_finalizers_log, 50) as worker:
                inner = worker.result()["inner"]
                _wait_for_records(log_path, {_OUTER: 50}, worker.pid)
                _wait_for_records(audit_path, {_INNER: inner}, worker.pid)
                assert worker.release() == 0
    finally:
        for handler in audit.handlers[:]:
            audit.removeHandler(handler)
            handler.close()
        audit.propagate = True


def _log_while_a_write_waits(stderr_path: str, ready: int, go: int) -> Dict[str, Any]:
    """Once told to on ``go`` (having said on ``ready`` that its pipe is
    open), log one record bigger than the pipe, whose write waits (the
    listener is held), while SIGALRM comes every millisecond, its handler
    logging 20 KB records: more than ``HELD_BYTES`` of them while the write
    waits. Report how many the handler logged."""
    sys.stderr = open(stderr_path, "w", encoding="utf-8")  # closed by os._exit
    workload.open_pipe()  # first: the wait is then for room in the pipe, not for the listener's answer
    os.write(ready, b"r")
    select.select([go], [], [], _WAIT)
    logger = logging.getLogger(workload.LOGGER)
    numbers = itertools.count()
    stopped = [False]

    def on_alarm(signum: int, frame: Optional[FrameType]) -> None:
        if not stopped[0]:
            logger.info("%s", workload.message(_INNER, next(numbers), 20_000))

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    logger.info("%s", workload.message(_OUTER, 0, 2 * _hello.PIPE_BYTES))
    signal.setitimer(signal.ITIMER_REAL, 0)
    stopped[0] = True
    sys.stderr.flush()
    return {"inner": next(numbers)}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["durable", "buffered"])
def test_records_held_during_a_stuck_write_are_bounded(tmp_path, log_path, mode):
    """While a write waits for a held listener, a signal handler logs 20 KB
    records: ``HELD_BYTES`` of them are held and sent after the write, the
    rest go to the worker's stderr with a note, each record to one place only,
    none torn (a handler that interrupts the writing of them to stderr
    included)."""
    stderr_path = str(tmp_path / "worker.stderr")
    note = f"logged more than {HELD_BYTES} bytes while its own write"
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    try:
        with _session(log_path, mode) as session:
            with _Worker(_log_while_a_write_waits, stderr_path, ready_write, go_read) as worker:
                ready, _, _ = select.select([ready_read], [], [], _WAIT)
                assert ready, "the worker did not open its pipe"
                with session.listener._busy:  # the listener reads nothing: the worker's write waits
                    os.write(go_write, b"g")
                    wait_until(lambda: _read(stderr_path).count(note) >= 5, "records past HELD_BYTES on stderr")
                count = worker.result()["inner"]
                spilled = workload.tally(stderr_path)
                on_stderr = set(spilled.seqs.get(_INNER, {}))
                _wait_for_records(log_path, {_OUTER: 1, _INNER: count}, worker.pid, on_stderr)
                assert worker.release() == 0
    finally:
        for fd in (ready_read, ready_write, go_read, go_write):
            os.close(fd)
    assert not spilled.torn and not spilled.duplicated() and set(spilled.seqs) == {_INNER}
    # Held up to HELD_BYTES, then sent: at least that much of them is in the file.
    frame_bytes = len(_codec.text_frames([workload.message(_INNER, count, 20_000) + "\n"], "strict"))
    assert count - len(on_stderr) >= HELD_BYTES // frame_bytes, f"{len(on_stderr)} of {count} on stderr"
