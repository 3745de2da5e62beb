"""The queue's writes under signals: SIGTERM while another thread's send is
stuck, and signal handlers that raise while a write waits for room in the pipe."""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, List, Optional, Set, Tuple

import pytest

import mplog
from mplog import _buffered
from tests import workload
from tests.conftest import (
    blocked_in_pipe_write,
    file_handler,
    fork_running,
    killed_on_error,
    wait_for_path,
    wait_pid,
    wait_until,
)

_RECORD = "x" * 4000


def _child_stuck_then_terminated(stderr_path: str, stuck_path: str) -> None:
    """In a forked child of a buffered session whose listener gets stuck (and
    says so by creating ``stuck_path``): one thread logs until its send blocks
    on the full pipe (holding the buffer's lock) while the listener is stuck,
    the main thread buffers three more records, then SIGTERM."""
    sys.stderr = open(stderr_path, "w", encoding="utf-8")
    log = logging.getLogger("child")

    def fill_the_pipe() -> None:
        while True:
            log.warning(_RECORD)

    threading.Thread(target=fill_the_pipe, daemon=True).start()
    # Blocked while the listener is stuck: for good. (A block seen before the
    # listener's first read may end when it reads, taking the three records.)
    wait_until(
        lambda: os.path.exists(stuck_path) and blocked_in_pipe_write(os.getpid()),
        "the sending thread blocked on the full pipe of a stuck listener",
        30,
    )
    for number in range(3):
        log.warning("buffered while stuck %d", number)
    os.kill(os.getpid(), signal.SIGTERM)  # the handler flushes, then the process dies of the signal
    time.sleep(_buffered.SIGNAL_LOCK_SECONDS + 30)
    os._exit(4)  # never reached if SIGTERM ended the process


def test_sigterm_spills_the_buffer_when_another_threads_send_is_stuck(tmp_path, no_backlog):
    """SIGTERM gives up waiting for a send stuck on a full pipe after
    ``SIGNAL_LOCK_SECONDS``; the records still in the buffer then go to stderr
    rather than dying with the process."""
    release = threading.Event()
    stuck_path = str(tmp_path / "stuck")

    class Stuck(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            open(stuck_path, "w").close()
            release.wait(120)

    stderr_path = str(tmp_path / "child.stderr")
    # The listener stops reading as soon as the handler is stuck (no backlog),
    # and never gives up on it during the test.
    with mplog.setup(Stuck(), buffered=True, flush_interval=60, stall_timeout=300):
        try:
            status = wait_pid(fork_running(_child_stuck_then_terminated, stderr_path, stuck_path))
        finally:
            release.set()
    with open(stderr_path, encoding="utf-8") as stderr:
        spilled = stderr.read()
    assert status == -signal.SIGTERM
    for number in range(3):
        assert f"buffered while stuck {number}" in spilled


# Records of 5 KB to 70 KB: more than a pipe takes in one atomic write
# (PIPE_BUF, 4 KiB), so a write of one waits partway through for room.
_LONG_SIZES = (5000, 20_000, 70_000, 9000)
_MPLOG_DIR = os.path.dirname(mplog.__file__)
# Before CPython 3.11 a signal handler can run as a finally block starts while
# an exception is on its way out (3.8 and 3.9: between any two bytecodes), so
# one that raises there skips the cleanup (CPython's own ``with lock:`` leaks
# its lock then). From 3.11 the handler below raises anywhere in mplog; before,
# only in the functions that write to the pipe.
_WRITING = None if sys.version_info >= (3, 11) else ("_send_locked", "_complete_write", "_finish")


class _FileSubclass(logging.FileHandler):
    """Writes like a FileHandler, but is not one to mplog: workers send it
    record frames instead of lines."""


# Calls that must raise before a worker of the test below stops logging.
_RAISED = 40


def _log_while_alarms_raise(worker: int, result_path: str) -> None:
    """Log long records while SIGALRM comes every millisecond, its handler
    raising KeyboardInterrupt whenever it interrupts mplog's code (see
    ``_WRITING``; in practice: a write waiting for room in the pipe), until
    ``_RAISED`` calls have raised (or 10,000 were made). Write how many calls
    were made, and the sequence numbers of those that raised, to
    ``result_path``."""
    logger = logging.getLogger(workload.LOGGER)

    def interrupt(signum: int, frame: Optional[FrameType]) -> None:
        if frame is None or not frame.f_code.co_filename.startswith(_MPLOG_DIR):
            return
        if _WRITING is None or frame.f_code.co_name in _WRITING:
            raise KeyboardInterrupt

    raised: List[int] = []
    workload.open_pipe()  # first: the wait for the listener's answer is no write to interrupt
    signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    seq = 0
    while len(raised) < _RAISED and seq < 10_000:
        text = workload.message(worker, seq, _LONG_SIZES[seq % len(_LONG_SIZES)])
        try:
            logger.info("%s", text)
        except KeyboardInterrupt:
            raised.append(seq)
        seq += 1
    signal.setitimer(signal.ITIMER_REAL, 0)
    mplog.flush()
    with open(result_path, "w") as out:
        json.dump({"count": seq, "raised": raised}, out)


@pytest.mark.parametrize("frames", ["text", "record"])
@pytest.mark.parametrize("buffered", [False, True])
def test_exceptions_raised_mid_write_leave_no_partial_frame(tmp_path, capfd, frames, buffered):
    """A worker's long records wait for room in its pipe (the listener is held
    for most of each 10 ms) while a signal handler raises KeyboardInterrupt
    every millisecond, until 40 calls have raised. Every frame is written
    whole or not at all: every call that returned is in the file once, one
    that raised at most once (whole if its write had begun, absent if the
    exception came first), nothing is torn, and the worker keeps its
    connection to the listener (nothing on stderr)."""
    log_path = str(tmp_path / "app.log")
    count, raised = _run_under_alarms(log_path, str(tmp_path / "result"), frames, buffered)
    err = capfd.readouterr().err
    tally = workload.tally(log_path)
    assert not tally.torn, f"{len(tally.torn)} torn lines, e.g. {tally.torn[0][:200]!r}"
    assert not tally.duplicated(), tally.duplicated()[:10]
    missing = tally.missing(1, (seq for seq in range(count) if seq not in raised))
    assert not missing, f"{len(missing)} records whose call returned are missing, e.g. {missing[:10]}"
    assert "mplog:" not in err, err[:2000]
    assert len(raised) == _RAISED, f"{len(raised)} of {count} calls raised: the signals did not interrupt writes"
    # Calls that raised once their record was in: writes the exception cut short, then finished.
    assert raised & set(tally.seqs[1]), "no call raised in the middle of its write"


def _run_under_alarms(log_path: str, result_path: str, frames: str, buffered: bool) -> Tuple[int, Set[int]]:
    """One run of the worker under alarms, in a session of its own; its
    number of calls, and the sequence numbers of those that raised."""
    handler = file_handler(log_path) if frames == "text" else _FileSubclass(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    holding = threading.Event()
    holding.set()
    with mplog.setup(handler, level="INFO", buffered=buffered, flush_interval=60 if buffered else None) as session:

        def hold_the_listener() -> None:
            while holding.is_set():
                with session.listener._busy:
                    time.sleep(0.01)
                time.sleep(0.001)

        holder = threading.Thread(target=hold_the_listener)
        holder.start()
        try:
            assert wait_pid(fork_running(_log_while_alarms_raise, 1, result_path), 120) == 0
        finally:
            holding.clear()
            holder.join()
    with open(result_path) as stream:
        result = json.load(stream)
    return result["count"], set(result["raised"])


def _log_until_sigterm_raises(worker: int, returned: Any) -> None:
    """A Process target: log long records until SIGTERM, whose handler raises
    SystemExit; on the way out, log one record more, as worker ``worker + 1``."""

    def exit_now(signum: int, frame: Optional[FrameType]) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_now)
    try:
        workload.log_records(worker, 10**9, _LONG_SIZES, returned=returned)
    finally:
        logging.getLogger(workload.LOGGER).info("%s", workload.message(worker + 1, 0, 100))


@pytest.mark.parametrize("frames", ["text", "record"])
@pytest.mark.parametrize("buffered", [False, True])
def test_sigterm_raising_system_exit_mid_write(log_path, capfd, frames, buffered):
    """Workers whose SIGTERM handler raises SystemExit, each terminated while
    its write of long records waits for room in the pipe (the listener is
    held), log one last record as they leave. Every call that returned is in
    the file once, the interrupted one at most once, the last record too,
    and nothing is torn."""
    handler = file_handler(log_path) if frames == "text" else _FileSubclass(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    context = multiprocessing.get_context("fork")
    trials = 5
    returned = [context.RawArray("q", 1) for _ in range(trials)]
    with mplog.setup(handler, level="INFO", buffered=buffered, flush_interval=60 if buffered else None) as session:
        for trial in range(trials):
            ready, go = context.Event(), context.Event()
            args = (ready, go, _log_until_sigterm_raises, trial * 2, returned[trial])
            worker = context.Process(target=workload.open_pipe_then, args=args)
            worker.start()
            with killed_on_error(worker.pid):
                # Its pipe taken first: a process's first record waits for the listener's answer.
                assert ready.wait(30), f"worker {trial} never opened its pipe"
            with session.listener._busy:  # the listener reads nothing: the worker's pipe fills
                go.set()
                with killed_on_error(worker.pid):
                    blocked = functools.partial(blocked_in_pipe_write, worker.pid)
                    wait_until(blocked, f"worker {trial} blocked mid-write", 30)
                os.kill(worker.pid, signal.SIGTERM)
            worker.join(30)
            if worker.exitcode is None:
                worker.kill()
                worker.join(5)
            assert worker.exitcode == 0, f"trial {trial}: exit code {worker.exitcode}"
    err = capfd.readouterr().err
    tally = workload.tally(log_path)
    assert not tally.torn, f"{len(tally.torn)} torn lines, e.g. {tally.torn[0][:200]!r}"
    assert not tally.duplicated(), tally.duplicated()[:10]
    for trial in range(trials):
        count = returned[trial][0]
        assert count > 0
        assert not tally.missing(trial * 2, range(count)), f"trial {trial}: returned calls missing"
        assert set(tally.seqs[trial * 2]) <= set(range(count + 1)), f"trial {trial}: a record logged after the exit"
        assert not tally.missing(trial * 2 + 1, [0]), f"trial {trial}: the record logged on the way out is missing"
    assert "mplog:" not in err, err[:2000]


def _interrupted_while_the_listener_dies(stderr_path: str, raised_path: str, result_path: str) -> None:
    """Log 70 KB records until SIGUSR1, whose handler says so by creating
    ``raised_path`` and raises KeyboardInterrupt; then log one more record
    (as worker 2), and write the sequence number of the call that raised to
    ``result_path``."""
    sys.stderr = open(stderr_path, "w", encoding="utf-8")
    logger = logging.getLogger(workload.LOGGER)
    workload.open_pipe()  # before the listener stops: a first record waits for its answer
    open(stderr_path + ".opened", "w").close()

    def interrupt(signum: int, frame: Optional[FrameType]) -> None:
        open(raised_path, "w").close()
        raise KeyboardInterrupt

    signal.signal(signal.SIGUSR1, interrupt)
    seq = 0
    while True:  # the signal comes while a call waits for room in the pipe
        try:
            logger.info("%s", workload.message(1, seq, 70_000))
        except KeyboardInterrupt:
            break
        seq += 1
    logger.info("%s", workload.message(2, 0, 100))
    with open(result_path, "w") as out:
        out.write(str(seq))


def test_a_write_cut_short_when_the_listener_dies_goes_to_stderr(tmp_path, log_path):
    """A worker's write of a 70 KB record waits for room in the pipe of a
    stopped listener process, a signal handler raises KeyboardInterrupt in it,
    and while the worker waits to write the rest of the record, the listener is
    killed: the record goes to the worker's stderr, whole, as does the next one."""
    stderr_path, raised_path, result_path = (str(tmp_path / name) for name in ("stderr", "raised", "result"))
    with mplog.setup(file_handler(log_path), level="INFO", listener="process") as session:
        listener = session.listener._process_pid
        pid = fork_running(_interrupted_while_the_listener_dies, stderr_path, raised_path, result_path)
        try:
            with killed_on_error(pid):
                wait_for_path(stderr_path + ".opened", 30)
                os.kill(listener, signal.SIGSTOP)  # it reads nothing: the worker's pipe fills
                wait_until(functools.partial(blocked_in_pipe_write, pid), "the worker blocked mid-write", 30)
                os.kill(pid, signal.SIGUSR1)
                wait_for_path(raised_path)
        finally:
            os.kill(listener, signal.SIGKILL)
        assert wait_pid(pid) == 0
    with open(result_path) as stream:
        interrupted = int(stream.read())
    with open(stderr_path, encoding="utf-8") as stream:
        err = stream.read()
    assert "cannot reach the log listener" in err
    lines = err.splitlines()
    assert lines.count(workload.message(1, interrupted, 70_000)) == 1, "the interrupted record is not on stderr, whole"
    assert any(line.endswith(workload.message(2, 0, 100)) for line in lines), "the next record is not on stderr"
    assert not workload.tally(log_path).torn
