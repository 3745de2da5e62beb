"""Guarantee 7: a stalled handler back-pressures the workers instead of growing
memory without bound, and nothing is lost once it recovers."""

from __future__ import annotations

import logging
import multiprocessing
import threading

import mplog
from mplog import _hello, _lanes, _server
from tests import workload
from tests.conftest import blocked_in_pipe_write, file_handler, join_all, wait_until


class Gate(logging.Handler):
    """Blocks in emit until opened, like a stuck disk or a full pipe."""

    def __init__(self) -> None:
        super().__init__()
        self.opened = threading.Event()
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.opened.wait()
        self.seen += 1


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_stalled_handler_backpressures_with_bounded_memory(log_path):
    """4 workers try to send 4 × 40 MB while the handler is stuck: each ends up
    blocked in a write to its full pipe, the listener's memory grows by less
    than what can be in flight (a full pipe and one read per worker, and the
    stuck handler's backlog: its bytes, and as much again for the records
    holding them), and every record arrives after the stall."""
    gate = Gate()
    workers, count, size = 4, 10_000, 4000
    bound_kib = (workers * (_hello.PIPE_BYTES + _server.RECV_SIZE) + 2 * _lanes.BACKLOG_BYTES) / 1024
    context = multiprocessing.get_context("fork")
    with mplog.setup(gate, file_handler(log_path), level="INFO"):
        # Each opens its pipe before any logs: a worker's first record waits
        # for the listener to take its pipe, which the stuck handler would delay.
        go, ready = context.Event(), [context.Event() for _ in range(workers)]
        processes = [
            context.Process(target=workload.open_pipe_then, args=(event, go, workload.log_records, w, count, (size,)))
            for w, event in enumerate(ready)
        ]
        rss_before = _rss_kib()
        for process in processes:
            process.start()
        try:
            assert all(event.wait(30) for event in ready), "a worker did not open its pipe"
            go.set()
            wait_until(lambda: _all_blocked(processes), "every worker blocking on its full pipe")
            growth_kib = _rss_kib() - rss_before
        finally:
            gate.opened.set()
            join_all(processes)
    assert growth_kib < bound_kib, f"listener memory grew {growth_kib} KiB while stalled (bound {bound_kib:.0f})"
    assert gate.seen == workers * count
    workload.tally(log_path).assert_complete({w: count for w in range(workers)})


def _all_blocked(processes) -> bool:
    """Whether every process waits in a write to a full pipe; fails at once if
    one has finished (it was never held back)."""
    done = [p.pid for p in processes if not p.is_alive()]
    assert not done, f"workers {done} finished while the listener was stalled: no back-pressure"
    return all(blocked_in_pipe_write(p.pid) for p in processes)
