"""Guarantee 7: a stalled handler back-pressures the workers instead of growing
memory without bound, and nothing is lost once it recovers."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time

import mplog
from tests import workload
from tests.conftest import file_handler, join_all


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
    """4 workers try to send 4 × 40 MB while the handler is stuck: they block,
    the listener's memory stays flat, and every record arrives after the stall."""
    gate = Gate()
    workers, count, size = 4, 10_000, 4000
    with mplog.setup(gate, file_handler(log_path), level="INFO"):
        context = multiprocessing.get_context("fork")
        processes = [context.Process(target=workload.log_records, args=(w, count, (size,))) for w in range(workers)]
        rss_before = _rss_kib()
        for process in processes:
            process.start()
        time.sleep(2.0)
        growth_mib = (_rss_kib() - rss_before) / 1024
        still_running = sum(p.is_alive() for p in processes)
        gate.opened.set()
        join_all(processes)
    assert still_running == workers, "workers finished while the listener was stalled: no back-pressure?"
    assert growth_mib < 16, f"listener memory grew {growth_mib:.1f} MiB while stalled"
    assert gate.seen == workers * count
    workload.tally(log_path).assert_complete({w: count for w in range(workers)})
