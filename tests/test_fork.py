"""Guarantee 4: forking while the listener thread is busy writing never
deadlocks the child (the model is CPython's test_post_fork_child_no_deadlock)."""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import sys
import threading
import time
from typing import Any

import mplog
from tests import workload
from tests.conftest import file_handler, join_all, run_in_child

FORKS = 50


def test_fork_while_listener_busy(tmp_path, log_path):
    """50 forks while two workers keep the listener writing 4 KB records to a
    FileHandler and to a StreamHandler on a plain buffered file (until the last
    fork is done); each child logs, runs logging.shutdown() (as a normal exit
    would) and a GC pass, and must exit 0."""
    # 4 KB, not 20 KB: without the fork hooks, 7 of 30 children still hang,
    # and a run writes 2.6 times less (20 KB records wrote 2.7 GB in CI).
    # A plain buffered file: forking while a listener thread of the stdlib's
    # wrote to one (CPython 3.11-3.13), 100% of the children deadlocked in
    # their first flush of it; through FileHandler or StreamHandler(stderr),
    # 50-75%; with the listener idle, none.
    stream = open(tmp_path / "stream.log", "w")
    stream_handler = logging.StreamHandler(stream)
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    logged = [context.Value("i", 0) for _ in range(2)]
    with mplog.setup(file_handler(log_path), stream_handler, level="INFO"):
        busy = [context.Process(target=_log_until, args=(100 + w, stop, logged[w])) for w in range(2)]
        for process in busy:
            process.start()
        for child in range(FORKS):
            assert run_in_child(_log_shut_down_and_collect, child, timeout=30) == 0, f"fork {child} failed"
        assert all(process.is_alive() for process in busy), "the listener went idle before the last fork"
        stop.set()
        join_all(busy)
    stream.close()
    counts = {100 + w: logged[w].value for w in range(2)}
    tally = workload.tally(log_path)
    tally.assert_complete({**{1000 + c: 1 for c in range(FORKS)}, **counts})
    assert workload.tally(str(tmp_path / "stream.log")).count(100) == counts[100]


def _log_until(worker: int, stop: Any, logged: Any) -> None:
    """Log large and small records until ``stop`` is set; say how many in ``logged``."""
    seq = 0
    while not stop.is_set():
        workload.log_records(worker, 100, (4000, 200), start=seq)
        seq += 100
    logged.value = seq


def _log_shut_down_and_collect(child: int) -> None:
    logging.getLogger("fork").info("%s", workload.message(1000 + child, 0, 10))
    logging.shutdown()  # would flush the parent's handlers if the child still had them
    gc.collect()


def _fork_in_c() -> int:
    """fork() straight from libc: no at-fork hooks run (PyDLL keeps the GIL held).

    Only once every other thread of this process is blocked: a thread that
    woke and asked for the GIL just before the fork never takes it in the
    child, and the child's main thread, asked to let it, waits for it forever
    (CPython's switch wait). The buffered tests' flusher wakes at the first
    record, so the fork waits for it to sleep again (60 s ticks)."""
    _wait_for_other_threads_to_block()
    return int(ctypes.PyDLL(None).fork())


def _wait_for_other_threads_to_block(timeout: float = 10.0) -> None:
    """Return once every other thread sits in the same call, at the same
    instruction, over two looks 50 ms apart (blocked in C, not asking for the GIL)."""
    deadline = time.monotonic() + timeout
    me = threading.get_ident()
    while time.monotonic() < deadline:
        before = {ident: frame.f_lasti for ident, frame in sys._current_frames().items() if ident != me}
        time.sleep(0.05)
        after = {ident: frame.f_lasti for ident, frame in sys._current_frames().items() if ident != me}
        if before == after:
            return
    raise AssertionError(f"threads still running after {timeout} s: {threading.enumerate()}")


def test_fork_from_c_without_hooks(log_path):
    """A child forked by C code (no at-fork hooks) sees the fork itself and opens a
    pipe of its own, instead of writing into its parent's: each record arrives once."""
    with mplog.setup(file_handler(log_path), level="INFO", listener="process"):
        workload.log_records(1, 10)
        assert run_in_child(_log_on_a_pipe_of_its_own, timeout=30, fork=_fork_in_c) == 0
        workload.log_records(1, 10, start=10)
    workload.tally(log_path).assert_complete({1: 20, 2: 10})


def _log_on_a_pipe_of_its_own() -> int:
    """In a child forked from C: log, then 0 if it opened a pipe of its own, 3
    if it is still on its parent's."""
    workload.log_records(2, 10)
    queue = logging.getLogger().handlers[0].queue
    return 0 if queue._pipe_pid == os.getpid() else 3


def test_fork_from_c_does_not_send_the_parents_buffer(log_path):
    """Buffered: a child forked by C code drops the records its parent had not sent
    yet (the parent sends them), so none arrives twice."""
    with mplog.setup(file_handler(log_path), level="INFO", listener="process", buffered=True, flush_interval=60):
        workload.log_records(1, 10)
        # Flush only: a child forked from C with the flusher thread running
        # cannot start threads of its own (CPython's state was not reset).
        assert run_in_child(mplog.flush, timeout=30, fork=_fork_in_c) == 0
    workload.tally(log_path).assert_complete({1: 10})


def test_fork_from_c_drops_a_parents_record_handled_in_the_child(log_path):
    """Buffered: a record the parent created before a C fork, handled in the child
    (as a MemoryHandler both hold would), is added to the inherited buffer without
    a pid check; sending that buffer finds the fork and drops it all, so nothing
    arrives twice and the child does not write through its parent's pipe."""
    with mplog.setup(file_handler(log_path), level="INFO", listener="process", buffered=True, flush_interval=60):
        workload.log_records(1, 10)
        held = logging.getLogger(workload.LOGGER).makeRecord(
            workload.LOGGER, logging.INFO, __file__, 1, "%s", (workload.message(3, 0, 10),), None
        )
        assert run_in_child(_handle_and_flush, held, timeout=30, fork=_fork_in_c) == 0
        logging.getLogger().handle(held)  # the parent's own copy
    workload.tally(log_path).assert_complete({1: 10, 3: 1})


def test_fork_from_c_a_parents_long_record_in_the_child_takes_a_pipe_of_its_own(log_path):
    """Durable: a record the parent created before a C fork and the child handles
    (as a MemoryHandler both hold would) is sent without a pid check when one
    atomic write takes it (it cannot tear a frame of the parent's in the
    parent's pipe); a record too long for that is checked, and goes through a
    pipe of the child's own. Each lands once."""
    with mplog.setup(file_handler(log_path), level="INFO", listener="process"):
        workload.log_records(1, 10)
        short, long = (_parents_record(3, 10), _parents_record(4, 20_000))
        assert run_in_child(_handle_short_then_long, short, long, timeout=30, fork=_fork_in_c) == 0
        workload.log_records(1, 10, start=10)
    workload.tally(log_path).assert_complete({1: 20, 3: 1, 4: 1})


def _parents_record(worker: int, size: int) -> logging.LogRecord:
    return logging.getLogger(workload.LOGGER).makeRecord(
        workload.LOGGER, logging.INFO, __file__, 1, "%s", (workload.message(worker, 0, size),), None
    )


def _handle_short_then_long(short: logging.LogRecord, long: logging.LogRecord) -> int:
    """In a child forked from C: 0 if the short record went through the
    parent's pipe and the long one through a pipe of the child's own, 3 if not."""
    queue = logging.getLogger().handlers[0].queue
    logging.getLogger().handle(short)
    on_the_parents = queue._pipe_pid != os.getpid()
    logging.getLogger().handle(long)
    return 0 if on_the_parents and queue._pipe_pid == os.getpid() else 3


def _handle_and_flush(held: logging.LogRecord) -> int:
    """In a child forked from C: handle the parent's record, then flush; 0 if
    the record went into the inherited buffer and the flush dropped it and
    opened a pipe of the child's own, 3 if not."""
    queue = logging.getLogger().handlers[0].queue
    logging.getLogger().handle(held)
    inherited = queue._pipe_pid != os.getpid() and len(queue._buffer) > 0
    mplog.flush()  # as in the test above: no flusher thread in this child
    return 0 if inherited and queue._pipe_pid == os.getpid() and not queue._buffer else 3
