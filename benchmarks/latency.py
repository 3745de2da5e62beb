#!/usr/bin/env python3
"""Latency and memory of mplog's listener: how long from a logging call to its
line being written, at a moderate rate, and how much the listener grows under a
burst ten times that rate.

Run:  python benchmarks/latency.py [--rate 1000] [--seconds 5] [--burst 10] [--buffered]

Prints p50/p99/max latency (the logging call to the listener's write of its
line; each message carries the time of its call) at the steady rate, and the
listener's resident memory before and at its peak during the burst. A script,
not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mplog  # noqa: E402

WORKERS = 4
FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
_SENT = re.compile(rb" t=(\d+\.\d+)\n")


def _worker(worker: int, rate: float, seconds: float) -> None:
    """Log at ``rate`` records/s, paced against the clock (not sleep drift)."""
    logger = logging.getLogger("bench")
    start = time.monotonic()
    for seq in range(int(rate * seconds)):
        delay = start + seq / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        logger.info("worker %d seq %d %s t=%.6f", worker, seq, "10.0.0.1", time.time())


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _run(handler: mplog.FileHandler, rate_per_worker: float, seconds: float, buffered: bool) -> None:
    with mplog.setup(handler, level="INFO", buffered=buffered):
        context = multiprocessing.get_context("fork")
        processes = [context.Process(target=_worker, args=(w, rate_per_worker, seconds)) for w in range(WORKERS)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(seconds + 120)
            if process.is_alive():
                process.kill()
                raise SystemExit(f"worker {process.pid} overran; killed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="records/s, all workers together")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--burst", type=float, default=10.0, help="burst rate as a multiple of --rate")
    parser.add_argument("--buffered", action="store_true", help="mplog.setup(buffered=True)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        handler = mplog.FileHandler(os.path.join(directory, "app.log"))
        handler.setFormatter(logging.Formatter(FORMAT))
        latencies: List[float] = []
        write_frames = handler.write_frames

        def timed(frames: List[Any]) -> None:
            write_frames(frames)
            now = time.time()
            latencies.extend(now - float(sent) for sent in _SENT.findall(b"".join(frames)))

        handler.write_frames = timed  # type: ignore[method-assign]
        _run(handler, args.rate / WORKERS, args.seconds, args.buffered)
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(
            f"{'buffered' if args.buffered else 'durable'}, "
            f"steady {args.rate:.0f} records/s for {args.seconds:.0f} s, {WORKERS} workers: "
            f"{len(latencies)} records; latency p50 {statistics.median(latencies) * 1000:.2f} ms, "
            f"p99 {p99 * 1000:.2f} ms, max {latencies[-1] * 1000:.2f} ms"
        )

        peak = [0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], _rss_kib())
                time.sleep(0.01)

        before = _rss_kib()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        burst = mplog.FileHandler(os.path.join(directory, "burst.log"))
        burst.setFormatter(logging.Formatter(FORMAT))
        _run(burst, args.rate * args.burst / WORKERS, 2.0, args.buffered)
        sampling.set()
        sampler.join()
        print(
            f"burst {args.rate * args.burst:.0f} records/s for 2 s: listener RSS {before / 1024:.1f} MiB before, "
            f"peak {peak[0] / 1024:.1f} MiB (+{(peak[0] - before) / 1024:.1f} MiB)"
        )


if __name__ == "__main__":
    main()
