"""Buffered mode (``setup(buffered=True)``): records gather in each process and
are sent together; every way out of a process but SIGKILL and ``os._exit``
sends them first, and those two lose at most one buffer, as an unbroken prefix
survives. (Pool.terminate() is in test_faults.py, in both modes.)"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import functools
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Iterator, Optional, TextIO

import pytest

import mplog
from mplog import _buffered, _codec, _hello
from tests import workload
from tests.conftest import (
    START_METHODS,
    blocked_in_pipe_write,
    file_handler,
    fork_running,
    join_all,
    killed_on_error,
    run_in_child,
    wait_for_path,
    wait_pid,
    wait_until,
)


def _frame_bytes(worker: int, seq: int, size: int) -> int:
    """Bytes of one workload record on the wire, in the text frame a worker
    sends for a lone ``%(message)s`` handler."""
    return len(_codec.text_frames([workload.message(worker, seq, size) + logging.StreamHandler.terminator], "strict"))


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
        wait_for_path(done)  # every logging call of the child has returned
        os.kill(terminated.pid, signal.SIGTERM)
        terminated.join(60)
        assert terminated.exitcode == -signal.SIGTERM  # it still dies of the signal
        join_all([returns])
    workload.tally(log_path).assert_complete({1: 500, 2: 500})


def test_records_arrive_within_the_flush_interval(log_path):
    """A worker that logs one record and then stays idle: the timer sends it."""
    read, write = os.pipe()
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=0.05):
        pid = fork_running(_log_one_then_idle, read, write)
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


def _log_one_then_idle(read: int, write: int) -> None:
    os.close(read)
    workload.log_records(1, 1)
    os.write(write, b"x")
    time.sleep(30)  # the parent kills us


@pytest.mark.parametrize("flush_first", [False, True])
def test_os_exit_loses_at_most_one_buffer(log_path, flush_first):
    """os._exit skips every exit hook: what was buffered is lost, never more
    than one buffer, and what arrives is an unbroken prefix. mplog.flush()
    before it loses nothing."""
    count = 5 * _buffered.BUFFER_BYTES // _frame_bytes(1, 0, 100)  # about five buffers
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=60):
        assert run_in_child(_log_then_os_exit, count, flush_first) == 0
    tally = workload.tally(log_path)
    got = sorted(tally.seqs.get(1, {}))
    assert got == list(range(len(got))) and not tally.torn and not tally.duplicated()
    lost_bytes = sum(_frame_bytes(1, seq, 100) for seq in range(len(got), count))
    if flush_first:
        assert lost_bytes == 0
    else:
        # Something was lost (else os._exit came right after a flush and this
        # count proves nothing), and less than a buffer holds.
        assert 0 < lost_bytes < _buffered.BUFFER_BYTES, f"{count - len(got)} of {count} lost: {lost_bytes} bytes"


def _log_then_os_exit(count: int, flush_first: bool) -> None:
    workload.log_records(1, count)
    if flush_first:
        mplog.flush()
    # fork_running leaves through os._exit


def test_sigkill_mid_write_leaves_a_prefix(log_path):
    """20 buffered workers, each SIGKILLed in the middle of a write to the
    listener while another worker logs: nothing torn, each victim's records an
    unbroken prefix, never empty, the other worker's all there. The listener
    is held meanwhile, and the victim's first write holds a record bigger than
    its pipe: the write waits, partway through that record, for room."""
    context = multiprocessing.get_context("fork")
    victims = {}
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True) as session:
        for trial in range(20):
            # The third size varies: the big record is cut at another place each time.
            sizes = (200, 200, 4000 + 997 * trial, _hello.PIPE_BYTES + 1)
            ready, go = context.Event(), context.Event()
            victim = context.Process(
                target=workload.open_pipe_then, args=(ready, go, workload.log_forever, None, trial * 2, sizes)
            )
            survivor = context.Process(target=workload.init_and_log, args=(mplog.initializer, trial * 2 + 1, 300))
            victim.start()
            assert ready.wait(30), f"victim {trial} did not open its pipe"
            with session.listener._busy:  # the listener reads nothing: the victim's pipe fills
                go.set()
                survivor.start()
                try:
                    wait_until(
                        functools.partial(blocked_in_pipe_write, victim.pid), f"victim {trial} blocking mid-write", 30
                    )
                finally:
                    victim.kill()
                    victim.join(10)
            join_all([survivor], timeout=30)
            victims[victim.pid] = trial * 2
    tally = workload.tally(log_path)
    assert not tally.torn and not tally.duplicated()
    for worker in victims.values():
        assert not tally.missing(worker + 1, range(300))
        got = sorted(tally.seqs.get(worker, {}))
        assert got, f"victim {worker}: nothing arrived, so it was killed before it logged"
        assert got == list(range(len(got))), f"victim {worker}: gaps"
    # Each kill cut a frame short: the listener received part of it, and said so
    # ("ended early", or "cut off when the listener stopped" if it came to the
    # victim's pipe only while stopping).
    cut = {
        int(pid)
        for line in tally.other
        for pid in re.findall(r"a record from pid (\d+) .* received were discarded", line)
    }
    assert set(victims) <= cut, f"kills that cut no frame short: {sorted(set(victims) - cut)}"


def test_fork_sends_the_buffer_first(log_path):
    """A buffered process forks: the child does not inherit (and resend) the
    parent's gathered records, and the parent's arrive once."""
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=60, listener="process"):
        workload.log_records(0, 100)
        assert run_in_child(_log_and_flush, 1, 100) == 0
        workload.log_records(0, 100, start=100)
    workload.tally(log_path).assert_complete({0: 200, 1: 100})


def _log_and_flush(worker: int, count: int) -> None:
    workload.log_records(worker, count)
    mplog.flush()


# Bigger than a whole buffer, and bigger than a worker's pipe (a write that
# blocks until the listener reads, while other threads run).
OVER_A_BUFFER = _buffered.BUFFER_BYTES + 1
OVER_THE_PIPE = _hello.PIPE_BYTES + 1
# Small, page-sized, and those two.
THREAD_SIZES = (100, 100, 3000, 100, 4000, 100, OVER_A_BUFFER, 100, 100, OVER_THE_PIPE)


def test_threads_of_one_process_share_its_buffer(log_path):
    """Six threads of one worker fill one buffer at once while its flusher
    (every millisecond) and the size limit both empty it: every record arrives
    once and whole."""
    context = multiprocessing.get_context("fork")
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=0.001):
        worker = context.Process(target=workload.log_from_threads, args=(0, 6, 300, THREAD_SIZES))
        worker.start()
        join_all([worker])
    workload.tally(log_path).assert_complete({w: 300 for w in range(6)})


def test_sigterm_while_threads_log(log_path):
    """SIGTERM while four threads log, and a slow reader of the listener's
    output keeps writes to the pipe waiting. The main thread (where the handler
    runs) logs 30 small records, then one bigger than the pipe, whose flush
    takes them along: the signal mostly lands mid-write, or while it waits for
    another thread's write. The process still dies of it, every record whose
    call returned in the main thread arrives, and each thread's records arrive
    as an unbroken prefix, none torn or twice."""
    context = multiprocessing.get_context("fork")
    trials = 12
    main_returned = []
    with _slow_stream(log_path) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        with mplog.setup(handler, level="INFO", buffered=True, flush_interval=60):
            for trial in range(trials):
                returned = context.RawArray("q", 1)
                worker = context.Process(
                    target=workload.log_from_threads,
                    args=(trial * 4, 4, None, (100,), (100,) * 30 + (OVER_THE_PIPE,), returned),
                )
                worker.start()
                time.sleep(0.05 + trial * 0.01)
                os.kill(worker.pid, signal.SIGTERM)
                worker.join(30)
                if worker.is_alive():
                    worker.kill()
                    worker.join(5)
                    pytest.fail(f"trial {trial}: SIGTERM did not end the worker within 30 s")
                assert worker.exitcode == -signal.SIGTERM
                main_returned.append(returned[0])
    tally = workload.tally(log_path)
    assert not tally.torn and not tally.duplicated()
    for worker_id in range(trials * 4):
        got = sorted(tally.seqs.get(worker_id, {}))
        assert got == list(range(len(got))), f"worker {worker_id}: gaps"
    delivered = [tally.count(trial * 4 + 3) for trial in range(trials)]
    assert all(d >= r for d, r in zip(delivered, main_returned)), f"main thread: {delivered} of {main_returned}"
    assert sum(main_returned) > trials * 10  # the signal came while it logged


def test_sigterm_mid_write_waits_for_the_write(tmp_path, log_path, no_backlog):
    """The main thread logs 30 small records and two of 600 KB, whose write
    blocks (the handler is stuck on the small ones, so the listener holds the
    first big one, and the pipe fills with the second) when
    a second thread logs 20 records and sends the process SIGTERM. The handler,
    in the main thread, must neither wait for the lock that thread holds nor
    write into the middle of its write: the write finishes, then the 20 records
    are sent, then the process dies of the signal."""
    sent = str(tmp_path / "sent")
    gate = threading.Event()
    with _slow_stream(log_path, gate) as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(message)s"))
        with mplog.setup(handler, level="INFO", buffered=True, flush_interval=60, stall_timeout=300):
            pid = fork_running(_log_big_records_while_a_thread_sends_sigterm, sent)
            try:
                with killed_on_error(pid):
                    wait_for_path(sent)
            finally:
                gate.set()
            assert wait_pid(pid) == -signal.SIGTERM
    workload.tally(log_path).assert_complete({1: 32, 2: 20})


def _log_big_records_while_a_thread_sends_sigterm(sent: str) -> None:
    returned = [0]  # how many of this thread's logging calls have returned

    def second_big_write_blocked() -> bool:
        return returned[0] == 31 and blocked_in_pipe_write(os.getpid())

    # The signal comes while this (main) thread is blocked in the second big record's write.
    threading.Thread(
        target=workload.log_then_kill_self, args=(2, 20, sent, second_big_write_blocked), daemon=True
    ).start()
    # More than the gated stream holds: the handler blocks on the first of these.
    workload.log_records(1, 30, sizes=(300,), returned=returned)
    workload.log_records(1, 2, sizes=(600_000,), start=30, returned=returned)
    time.sleep(60)  # the signal ends this process


@contextlib.contextmanager
def _slow_stream(path: str, gate: Optional[threading.Event] = None) -> Iterator[TextIO]:
    """A text stream into a pipe that a thread copies to ``path`` at about
    30 MB/s (once ``gate`` is set): slower than the workers log, so their
    writes wait for it. Gated, the pipe holds one page: the handler's first
    write of more blocks."""
    read_end, write_end = os.pipe()
    if gate is not None:
        fcntl.fcntl(write_end, _hello.F_SETPIPE_SZ, 4096)
    stream = open(write_end, "w", encoding="utf-8")

    def copy() -> None:
        if gate is not None:
            gate.wait(60)
        with open(path, "wb") as out, open(read_end, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    return
                out.write(chunk)
                time.sleep(0.002)

    copier = threading.Thread(target=copy)
    copier.start()
    try:
        yield stream
    finally:
        if gate is not None:
            gate.set()
        stream.close()
        copier.join(60)
    assert not copier.is_alive()


def test_bad_buffering_arguments_fail_at_the_call():
    with pytest.raises(TypeError, match="buffered must be True or False"):
        mplog.setup(logging.NullHandler(), buffered="yes")
    for interval in (0, -1, 61, "1s", True):
        with pytest.raises(ValueError, match="flush_interval must be"):
            mplog.setup(logging.NullHandler(), buffered=True, flush_interval=interval)
    with pytest.raises(ValueError, match="flush_interval must be"):
        mplog.setup(logging.NullHandler(), flush_interval=0)


FINALIZING_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import logging
    import mplog
    from tests import workload

    class LogsWhenCollected:
        def __init__(self, worker):
            self.worker = worker

        def __del__(self):
            logging.getLogger(workload.LOGGER).info("%s", workload.message(self.worker, 0, 100))

    mplog.initializer()  # a buffered session's, through MPLOG_CONFIG
    workload.log_records(0, {before})
    # Collected while the interpreter finalizes, after every exit hook has run:
    KEPT_TO_THE_END = LogsWhenCollected(1)  # when the module's globals are cleared
    cycle = LogsWhenCollected(2)
    cycle.itself = cycle  # by the collector's last pass
    del cycle
    """
)


@pytest.mark.parametrize("before", [100, 0])
def test_records_logged_while_the_interpreter_finalizes(log_path, capfd, before):
    """A buffered process logs from the ``__del__`` of a global and of a
    reference cycle, both run after the exit hooks that flush the buffer,
    having logged 100 records before, or none (so no flusher thread has
    started, and none can start any more): the records still reach the
    file, as they would with the stdlib, and the process exits."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = FINALIZING_CHILD.format(root=root, before=before)
    with mplog.setup(file_handler(log_path), level="INFO", buffered=True, flush_interval=60):
        child = subprocess.run([sys.executable, "-c", script], timeout=60)  # killed if it overruns
    assert child.returncode == 0
    workload.tally(log_path).assert_complete({0: before, 1: 1, 2: 1})
    assert "mplog:" not in capfd.readouterr().err
