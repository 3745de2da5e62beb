"""Hang nothing, ever: no logging call waits on a handler, a handler that
stops making progress is reported and does not hold up the others, stop()
returns within its drain bound, and a record the program logged after
another (through a join) lands after it; mplog.complete() waits for delivery."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading

import pytest

import mplog
from tests import workload
from tests.conftest import file_handler, join_all

BLOCKED_FOR_GOOD = 600.0  # longer than any test: "forever"


class Stuck(logging.Handler):
    """An emit that never returns until the test ends, like a SysLogHandler or
    HTTPHandler to a peer that hangs, or a disk that stalls."""

    def __init__(self) -> None:
        super().__init__()
        self.unblock = threading.Event()
        self.entered = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.unblock.wait(BLOCKED_FOR_GOOD)


def _in_thread(function, *args) -> threading.Thread:
    """Run ``function`` in a daemon thread (left behind if it hangs)."""
    thread = threading.Thread(target=function, args=args, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(60)
def test_parent_logging_calls_return_while_a_handler_blocks(log_path):
    """Thread listener, a handler stuck in emit from the first record: each of
    the parent's 2,000 logging calls returns, and the file handler beside the
    stuck one gets every record."""
    stuck = Stuck()
    session = mplog.setup(stuck, file_handler(log_path), level="INFO", stall_timeout=0.5, drain_timeout=2.0)
    try:
        workload.log_records(0, 1)
        assert stuck.entered.wait(10)
        caller = _in_thread(workload.log_records, 0, 1999, (100,), 1)
        caller.join(30)
        assert not caller.is_alive(), "a logging call of the parent waited on the stuck handler"
        assert mplog.complete(0.2) is False  # the stuck handler has not got there
    finally:
        stopper = _in_thread(session.stop)
        stopper.join(30)
        stuck.unblock.set()
    assert not stopper.is_alive()
    workload.tally(log_path).assert_complete({0: 2000})


def _log_and_exit(worker: int, count: int) -> None:
    workload.log_records(worker, count)


@pytest.mark.timeout(90)
def test_workers_wait_then_go_on_when_a_handler_stalls(log_path, capfd):
    """4 fork workers log 20,000 records each while one handler is stuck: they
    are held back while its backlog is full, go on once it has not returned
    for stall_timeout, and every record reaches the file handler beside it.
    The stall is said once on stderr, with the handler's name."""
    stuck = Stuck()
    session = mplog.setup(stuck, file_handler(log_path), level="INFO", stall_timeout=1.0, drain_timeout=2.0)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_log_and_exit, args=(w, 20_000)) for w in range(4)]
    try:
        for worker in workers:
            worker.start()
        join_all(workers, timeout=60)
        assert mplog.complete(0.5) is False
    finally:
        session.stop()
        stuck.unblock.set()
    workload.tally(log_path).assert_complete({w: 20_000 for w in range(4)})
    err = capfd.readouterr().err
    assert err.count("has not returned for") == 1, err
    assert "<Stuck (NOTSET)> has not returned for" in err
    assert "records were not handled by it" in err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("runner", ["thread", "process"])
def test_stop_returns_within_the_drain_timeout(log_path, capfd, runner):
    """A worker logs 50 records to a handler stuck in emit and exits: stop()
    returns within drain_timeout (and a margin), says on stderr how many
    records that handler did not get, and the file handler beside it has all."""
    stuck = Stuck()
    session = mplog.setup(stuck, file_handler(log_path), level="INFO", listener=runner, drain_timeout=1.0)
    worker = multiprocessing.get_context("fork").Process(target=_log_and_exit, args=(1, 50))
    worker.start()
    join_all([worker])
    stopper = _in_thread(session.stop)
    stopper.join(30)
    stuck.unblock.set()
    assert not stopper.is_alive(), "stop() waited on the stuck handler"
    workload.tally(log_path).assert_complete({1: 50})
    err = capfd.readouterr().err
    if runner == "thread":  # the listener process's stderr is the same; it says it there
        assert "<Stuck (NOTSET)>: 49 records were not handled by it" in err, err
    else:
        assert "records were not handled by it" in err, err


# --- order and complete() ------------------------------------------------

ORDER_TRIALS = 50


def _log_one(trial: int) -> None:
    logging.getLogger("order").info("child %d", trial)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("buffered", [False, True], ids=["durable", "buffered"])
@pytest.mark.parametrize("runner", ["thread", "process"])
def test_a_joined_childs_record_lands_before_the_parents_next(log_path, runner, buffered):
    """50 trials of: a fork child logs and exits, the parent joins it, then
    logs. The child's line is before the parent's every time."""
    context = multiprocessing.get_context("fork")
    with mplog.setup(file_handler(log_path, "%(message)s"), level="INFO", listener=runner, buffered=buffered):
        for trial in range(ORDER_TRIALS):
            child = context.Process(target=_log_one, args=(trial,))
            child.start()
            join_all([child])
            logging.getLogger("order").info("parent %d", trial)
    with open(log_path, encoding="utf-8") as file:
        lines = file.read().splitlines()
    assert sorted(lines) == sorted(f"{who} {trial}" for who in ("child", "parent") for trial in range(ORDER_TRIALS))
    position = {line: index for index, line in enumerate(lines)}
    late = [trial for trial in range(ORDER_TRIALS) if position[f"parent {trial}"] < position[f"child {trial}"]]
    assert late == [], f"{len(late)} of {ORDER_TRIALS} parent records landed before the joined child's"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("buffered", [False, True], ids=["durable", "buffered"])
@pytest.mark.parametrize("runner", ["thread", "process"])
def test_complete_after_join_finds_the_childs_record_written(log_path, runner, buffered):
    """30 trials of: a fork child logs and exits, the parent joins it and calls
    mplog.complete(), then reads the file: the child's line is there."""
    context = multiprocessing.get_context("fork")
    with mplog.setup(file_handler(log_path, "%(message)s"), level="INFO", listener=runner, buffered=buffered):
        missing = []
        for trial in range(30):
            child = context.Process(target=_log_one, args=(trial,))
            child.start()
            join_all([child])
            assert mplog.complete(10)
            with open(log_path, encoding="utf-8") as file:
                if f"child {trial}\n" not in file.read():
                    missing.append(trial)
    assert missing == []


def _log_then_complete(path: str) -> None:
    logging.getLogger("order").info("worker %d", os.getpid())
    with open(path, "w") as answer:
        answer.write(str(mplog.complete(10)))


@pytest.mark.timeout(60)
def test_complete_in_a_worker(tmp_path, log_path):
    """A worker's complete() returns True once its own record is written."""
    answer = str(tmp_path / "answer")
    with mplog.setup(file_handler(log_path, "%(message)s"), level="INFO"):
        child = multiprocessing.get_context("fork").Process(target=_log_then_complete, args=(answer,))
        child.start()
        join_all([child])
        with open(log_path, encoding="utf-8") as file:
            written = file.read()
    assert open(answer).read() == "True"
    assert f"worker {child.pid}\n" in written


def test_complete_checks_its_timeout():
    """A bad timeout is a clear error at the call."""
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        mplog.complete("1")
    with pytest.raises(ValueError, match="finite number of seconds >= 0"):
        mplog.complete(-1)


def test_complete_without_mplog_has_nothing_to_wait_for():
    """No session and no worker config: True at once."""
    assert mplog.complete(0) is True


@pytest.mark.parametrize("option", ["drain_timeout", "stall_timeout"])
def test_setup_checks_the_timeouts(option):
    """A timeout that is not a positive number is refused at setup()."""
    with pytest.raises(ValueError, match=f"{option} must be a finite number of seconds > 0"):
        mplog.setup(logging.NullHandler(), **{option: 0})
    with pytest.raises(TypeError, match=f"{option} must be a number of seconds"):
        mplog.setup(logging.NullHandler(), **{option: "5"})
