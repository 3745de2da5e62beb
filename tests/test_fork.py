"""Guarantee 4: forking while the listener thread is busy writing never
deadlocks the child (the model is CPython's test_post_fork_child_no_deadlock)."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os

import mplog
from tests import workload
from tests.conftest import file_handler, join_all, wait_pid

FORKS = 300


def test_fork_while_listener_busy(tmp_path, log_path):
    """300 forks while two workers keep the listener writing large records to a
    FileHandler and to a StreamHandler on a plain buffered file; each child logs,
    runs logging.shutdown() (as a normal exit would) and a GC pass, and must exit 0."""
    stream = open(tmp_path / "stream.log", "w")  # buffered: FACTS.md saw 100% deadlocks with it
    stream_handler = logging.StreamHandler(stream)
    context = multiprocessing.get_context("fork")
    with mplog.setup(file_handler(log_path), stream_handler, level="INFO"):
        busy = [context.Process(target=workload.log_records, args=(100 + w, 3000, (20000, 500))) for w in range(2)]
        for process in busy:
            process.start()
        for child in range(FORKS):
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    logging.getLogger("fork").info("%s", workload.message(1000 + child, 0, 10))
                    logging.shutdown()  # would flush the parent's handlers if the child still had them
                    gc.collect()
                    status = 0
                finally:
                    os._exit(status)
            assert wait_pid(pid, timeout=30) == 0, f"fork {child} failed"
        join_all(busy)
    stream.close()
    tally = workload.tally(log_path)
    tally.assert_complete({**{1000 + c: 1 for c in range(FORKS)}, 100: 3000, 101: 3000})
    assert workload.tally(str(tmp_path / "stream.log")).count(100) == 3000
