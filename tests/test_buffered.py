"""Buffered mode (``setup(buffered=True)``): records gather in each process and
are sent together; every way out of a process but SIGKILL and ``os._exit``
sends them first, and those two lose at most one buffer, as an unbroken prefix
survives. (Pool.terminate() is in test_faults.py, in both modes.)"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import signal
import time

import pytest

import mplog
from mplog._transport import BUFFER_BYTES
from tests import workload
from tests.conftest import START_METHODS, file_handler, join_all, wait_pid

# A workload record of size 100 is about 120 bytes on the wire.
RECORDS_PER_BUFFER = BUFFER_BYTES // 120 + 1


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_and_executor_deliver_everything(log_path, method):
    """Pool (closed and joined) and ProcessPoolExecutor workers: every record
    arrives once and whole, mixed sizes included."""
    context = multiprocessing.get_context(method)
    sizes = (100,) * 20 + (5000, 70_000)
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True):
        with context.Pool(4, initializer=mplog.initializer) as pool:
            pool.map(workload.pool_task, [(w, 3000, sizes) for w in range(4)])
            pool.close()
            pool.join()
        with concurrent.futures.ProcessPoolExecutor(4, context, mplog.initializer) as executor:
            list(executor.map(workload.pool_task, [(w, 3000, sizes) for w in range(4, 8)]))
    workload.tally(log_path).assert_complete({w: 3000 for w in range(8)})


@pytest.mark.parametrize("method", START_METHODS)
def test_sigterm_and_normal_exit_send_the_buffer(tmp_path, log_path, method):
    """A long flush interval, so only the exit path can deliver: a Process that
    returns, and one SIGTERMed while idle, both deliver every record."""
    context = multiprocessing.get_context(method)
    done = str(tmp_path / "done")
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=60):
        returns = context.Process(target=workload.init_and_log, args=(mplog.initializer, 1, 500))
        terminated = context.Process(target=workload.log_then_exit, args=(mplog.initializer, 2, 500, "SIGTERM", done))
        returns.start()
        terminated.start()
        deadline = time.monotonic() + 60
        while not os.path.exists(done):
            assert time.monotonic() < deadline, "the child never finished logging"
            time.sleep(0.005)
        os.kill(terminated.pid, signal.SIGTERM)
        terminated.join(60)
        assert terminated.exitcode == -signal.SIGTERM  # it still dies of the signal
        join_all([returns])
    workload.tally(log_path).assert_complete({1: 500, 2: 500})


def test_records_arrive_within_the_flush_interval(log_path):
    """A worker that logs one record and then stays idle: the timer sends it."""
    read, write = os.pipe()
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=0.05):
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read)
                workload.log_records(1, 1)
                os.write(write, b"x")
                time.sleep(30)
            finally:
                os._exit(0)
        os.close(write)
        try:
            assert os.read(read, 1) == b"x"
            logged = time.monotonic()
            while workload.tally(log_path).count(1) == 0:
                assert time.monotonic() - logged < 5, "a buffered record was not sent while its process idled"
                time.sleep(0.01)
            waited = time.monotonic() - logged
        finally:
            os.kill(pid, signal.SIGKILL)
            wait_pid(pid)
            os.close(read)
    assert waited < 2.0


@pytest.mark.parametrize("flush_first", [False, True])
def test_os_exit_loses_at_most_one_buffer(log_path, flush_first):
    """os._exit skips every exit hook: what was buffered is lost, never more
    than one buffer, and what arrives is an unbroken prefix. mplog.flush()
    before it loses nothing."""
    count = 5 * RECORDS_PER_BUFFER
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=60):
        pid = os.fork()
        if pid == 0:
            try:
                workload.log_records(1, count)
                if flush_first:
                    mplog.flush()
            finally:
                os._exit(0)
        assert wait_pid(pid) == 0
    tally = workload.tally(log_path)
    got = sorted(tally.seqs.get(1, {}))
    assert got == list(range(len(got))) and not tally.torn and not tally.duplicated()
    if flush_first:
        assert len(got) == count
    else:
        assert count - RECORDS_PER_BUFFER <= len(got) < count


def test_sigkill_mid_logging_leaves_a_prefix(log_path):
    """20 SIGKILLs of a buffered worker logging mixed sizes: nothing torn, no
    gaps, other workers unaffected."""
    context = multiprocessing.get_context("fork")
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True):
        for trial in range(20):
            victim = context.Process(target=workload.log_forever, args=(None, trial * 2, (200, 200, 4000, 65536)))
            survivor = context.Process(target=workload.init_and_log, args=(mplog.initializer, trial * 2 + 1, 300))
            victim.start()
            survivor.start()
            time.sleep(0.01 + trial * 0.002)
            victim.kill()
            victim.join(10)
            join_all([survivor], timeout=30)
    tally = workload.tally(log_path)
    assert not tally.torn and not tally.duplicated()
    for trial in range(20):
        assert not tally.missing(trial * 2 + 1, range(300))
        got = sorted(tally.seqs.get(trial * 2, {}))
        assert got == list(range(len(got))), f"victim {trial}: gaps"


def test_fork_sends_the_buffer_first(log_path):
    """A buffered process forks: the child does not inherit (and resend) the
    parent's gathered records, and the parent's arrive once."""
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=60, listener="process"):
        workload.log_records(0, 100)
        pid = os.fork()
        if pid == 0:
            try:
                workload.log_records(1, 100)
                mplog.flush()
            finally:
                os._exit(0)
        assert wait_pid(pid) == 0
        workload.log_records(0, 100, start=100)
    workload.tally(log_path).assert_complete({0: 200, 1: 100})


def test_bad_buffering_arguments_fail_at_the_call():
    with pytest.raises(TypeError, match="buffered must be True or False"):
        mplog.setup(logging.NullHandler(), buffered="yes")
    for interval in (0, -1, 61, "1s", True):
        with pytest.raises(ValueError, match="flush_interval must be"):
            mplog.setup(logging.NullHandler(), buffered=True, flush_interval=interval)
    with pytest.raises(ValueError, match="flush_interval must be"):
        mplog.setup(logging.NullHandler(), flush_interval=0)
