"""Guarantees 2, 3 and 8: killed workers, abrupt exits and a dead listener never
lose a returned record, tear a line or hang anyone."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import mplog
from mplog import _hello
from tests import workload
from tests.conftest import START_METHODS, file_handler, join_all, run_in_child, wait_for_path, wait_until

SURVIVOR_RECORDS = 300
# 200 B to 256 KiB: killing one of 4 workers logging records of these sizes
# through a multiprocessing.Queue left the queue's shared write lock held in
# 6-22% of kills (every other worker then stalled; counted over repeated
# trials on CPython 3.11). Here: small records, and records as large as a
# worker's whole pipe, whose write always waits partway for the listener.
KILL_SIZES = (200, 200, 200, 4000, 65536, _hello.PIPE_BYTES)
SURVIVOR_SIZES = (200,) * 10 + (4000, 65536)


def _kill_trials(log_path: str, listener: str, trials: int) -> None:
    context = multiprocessing.get_context("fork")
    rng = random.Random(1234)
    victims = []
    with mplog.setup(file_handler(log_path), level="INFO", listener=listener):
        for trial in range(trials):
            base = trial * 10
            victim = context.Process(target=workload.log_forever, args=(None, base, KILL_SIZES))
            survivors = [
                context.Process(
                    target=workload.init_and_log, args=(mplog.initializer, base + k, SURVIVOR_RECORDS, SURVIVOR_SIZES)
                )
                for k in (1, 2, 3)
            ]
            for process in [victim, *survivors]:
                process.start()
            time.sleep(rng.uniform(0.0, 0.03))
            victim.kill()
            victim.join(10)
            # The other workers must finish: a stall here is the stdlib failure.
            join_all(survivors, timeout=30)
            logging.getLogger("parent").info("w=%d seq=0 size=0 ", base + 4)
            victims.append(base)
    tally = workload.tally(log_path)
    assert not tally.torn, f"torn lines reached the file: {tally.torn[:3]!r}"
    for base in victims:
        expected = {base + k: SURVIVOR_RECORDS for k in (1, 2, 3)}
        expected[base + 4] = 1
        for worker, count in expected.items():
            assert not tally.missing(worker, range(count)), f"worker {worker} lost records"
        got = sorted(tally.seqs.get(base, {}))
        # Every record whose logging call returned before the kill is there:
        # what the victim logged is an unbroken prefix 0..n-1.
        assert got == list(range(len(got))), f"victim {base}: gaps in {got[:20]}..."
    assert not tally.duplicated()
    notices = [line for line in tally.other if "probably killed while logging" in line]
    # Most kills land mid-frame (large records): the discard path must have run.
    assert notices, "no kill landed mid-record; the trials did not test tearing"
    assert all("discarded" in line for line in notices)


def test_sigkill_mid_logging_thread_listener(log_path):
    """100 trials: one of four workers SIGKILLed at a random moment while logging."""
    _kill_trials(log_path, "thread", trials=100)


def test_sigkill_mid_logging_process_listener(log_path):
    """The same with the listener in its own process (30 trials)."""
    _kill_trials(log_path, "process", trials=30)


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("how", ["os._exit", "SIGTERM", "SIGKILL"])
def test_records_survive_abrupt_exit(tmp_path, log_path, method, how):
    """Every record whose call returned is delivered after os._exit(0), SIGTERM or SIGKILL."""
    context = multiprocessing.get_context(method)
    count = 2000
    done = str(tmp_path / "done")
    with mplog.setup(file_handler(log_path), level="INFO"):
        process = context.Process(target=workload.log_then_exit, args=(mplog.initializer, 1, count, how, done))
        process.start()
        if how != "os._exit":
            wait_for_path(done)  # every logging call of the child has returned
            os.kill(process.pid, signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
        process.join(60)
        if process.exitcode is None:
            process.kill()
            process.join(10)
            pytest.fail(f"child {process.pid} did not exit within 60 s")
    workload.tally(log_path).assert_complete({1: count})


def test_raw_fork_child_os_exit(log_path):
    """A raw os.fork() child that logs and calls os._exit(0) loses nothing, after
    the parent has been logging (through a multiprocessing.Queue, 78-98% of
    such a child's records were lost, counted end to end on CPython 3.11; none
    of 100 arrived when the parent's feeder thread was already running)."""
    with mplog.setup(file_handler(log_path), level="INFO"):
        workload.log_records(0, 100)
        assert run_in_child(workload.log_records, 1, 1000) == 0  # leaves through os._exit(0)
    workload.tally(log_path).assert_complete({0: 100, 1: 1000})


@pytest.mark.parametrize("buffered", [False, True], ids=["durable", "buffered"])
@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("ending", ["terminate", "with-exit"])
def test_pool_terminate(log_path, method, ending, buffered):
    """Pool.terminate() (and `with Pool()`, whose exit terminates) right after the
    results arrive loses nothing (through a multiprocessing.Queue, counted end
    to end on CPython 3.11: 36-55% lost at 1,000 records per worker, ~82% at
    10,000).
    Buffered, with a flush interval too long to help: SIGTERM sends the buffer."""
    count = 1000 if method == "fork" else 500
    with mplog.setup(file_handler(log_path), level="INFO", buffered=buffered, flush_interval=30):
        pool = multiprocessing.get_context(method).Pool(4, initializer=mplog.initializer)
        if ending == "terminate":
            pool.map(workload.pool_task, [(w, count, (100,)) for w in range(4)])
            pool.terminate()
        else:
            with pool:
                pool.map(workload.pool_task, [(w, count, (100,)) for w in range(4)])
        pool.join()
    workload.tally(log_path).assert_complete({w: count for w in range(4)})


def test_pool_terminate_never_hangs_a_buffered_worker(log_path):
    """150 pools in a row, each terminated right after its results arrive
    (with a long flush interval, so SIGTERM sends each buffer). Python had
    left the SIGTERM handler of an idle worker unrun about once in 30 pools,
    and that worker (and Pool.terminate()) waited forever; mplog's watcher
    thread sends the signal again until the handler has run. Every record
    arrives, and every terminate returns within 20 s."""
    context = multiprocessing.get_context("fork")
    pools = 150
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=30):
        for attempt in range(pools):
            pool = context.Pool(4, initializer=mplog.initializer)
            pool.map(workload.pool_task, [(attempt * 4 + w, 20, (100,)) for w in range(4)])
            terminating = threading.Thread(target=pool.terminate, daemon=True)
            terminating.start()
            terminating.join(20)
            if terminating.is_alive():
                stuck = [worker.pid for worker in pool._pool if worker.exitcode is None]  # type: ignore[attr-defined]
                for pid in stuck:
                    workload.kill_quietly(pid)
                terminating.join(20)
                pytest.fail(f"pool {attempt}: terminate() hung on workers {stuck}")
    workload.tally(log_path).assert_complete({w: 20 for w in range(pools * 4)})


def test_listener_process_killed_workers_fall_back_to_stderr(log_path, capfd):
    """Kill the listener process: workers never hang; each says once on stderr
    that it lost the listener, and its later records go to stderr."""
    context = multiprocessing.get_context("fork")
    session = mplog.setup(file_handler(log_path), level="INFO", listener="process")
    try:
        workers = [context.Process(target=_log_across_listener_death, args=(w,)) for w in range(4)]
        for process in workers:
            process.start()
        wait_until(lambda: _all_have_logged(log_path, range(4)), "every worker's records reaching the file")
        os.kill(session.listener._process_pid, signal.SIGKILL)
        join_all(workers, timeout=60)
    finally:
        session.stop()
    err = capfd.readouterr().err
    for process in workers:
        notices = [line for line in err.splitlines() if f"pid {process.pid} cannot reach the log listener" in line]
        assert len(notices) == 1, err[-2000:]
    assert "w=0 seq=" in err  # records after the death went to stderr
    assert "killed by signal 9" in err


def _all_have_logged(path: str, workers) -> bool:
    """Whether the log file holds a record of every worker in ``workers``."""
    return os.path.exists(path) and all(workload.tally(path).count(w) for w in workers)


def _log_across_listener_death(worker: int) -> None:
    for seq in range(400):
        logging.getLogger("work").info("%s", workload.message(worker, seq, 10))
        time.sleep(0.002)


PARENT_DIES = textwrap.dedent(
    """
    import logging, os, sys, time
    sys.path.insert(0, {root!r})
    import mplog
    handler = logging.FileHandler({path!r})
    session = mplog.setup(handler, level="INFO")
    pids = []
    for worker in range(3):
        pid = os.fork()
        if pid == 0:
            for seq in range(3000):
                logging.getLogger("work").info("w=%d seq=%d %s", worker, seq, "x" * 2000)
                time.sleep(0.0005)
            os._exit(0)
        pids.append(pid)
    print(" ".join(map(str, pids)), flush=True)
    print(session.queue.address, flush=True)
    time.sleep(60)
    """
)


def test_parent_with_listener_thread_killed(tmp_path):
    """SIGKILL the parent that runs the listener thread: its forked workers see
    EPIPE (they hold no copy of the listener's sockets) and finish on stderr."""
    log_path = str(tmp_path / "app.log")
    script = PARENT_DIES.format(root=os.getcwd(), path=log_path)
    # stderr to a file: the workers fall back to it and must never block on a full pipe.
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err_file:
        parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=err_file)
    workers = []
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        address = parent.stdout.readline().decode().strip()
        assert len(workers) == 3
        wait_until(lambda: _lines_of_every_worker(log_path, 3), "every worker's records reaching the file")
        parent.kill()
        parent.wait(10)
        wait_until(
            lambda: not any(_running(pid) for pid in workers), "the workers finishing after the listener's process died"
        )
        err = err_path.read_text()
        assert err.count("cannot reach the log listener") == 3, err[-2000:]
    finally:
        for pid in workers:
            workload.kill_quietly(pid)
        if parent.poll() is None:
            parent.kill()
        if workers:  # the killed parent could not remove its socket directory
            shutil.rmtree(os.path.dirname(address), ignore_errors=True)


def _lines_of_every_worker(path: str, workers: int) -> bool:
    """Whether the file holds a line ``w=<n> seq=...`` of every worker n < ``workers``."""
    try:
        with open(path, errors="replace") as stream:
            seen = {line.split(" ", 1)[0] for line in stream if line.startswith("w=")}
    except FileNotFoundError:
        return False
    return all(f"w={w}" in seen for w in range(workers))


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
