"""Forwarding throughput: mplog.SyslogHandler to a real rsyslogd, healthy.

``--workers`` forked processes each log ``--records`` INFO records (with an
``extra`` field), unpaced or paced to ``--rate`` records/s in all, through a
listener *process* whose only handler is:

``null``
    ``logging.NullHandler``: what the listener costs without forwarding;
``relp`` / ``tcp``
    ``mplog.SyslogHandler`` to an rsyslogd started here (RELP, or TCP with
    octet counting), which writes every message to a file.

Reported per run: how long the workers took to log (paced: from the
scheduled start to the last record, so that 1.00 s for 1 s of load is
keeping pace) and their slowest logging call (a call waits only when the
listener is behind: its handler's backlog full, which is back-pressure, or
its reading thread short of CPU), the rate they logged at, the rate at which
rsyslogd had written everything, the CPU time per record (user + system) of
the listener process (read from /proc before it stops), of the workers
(their own ``time.process_time``, the records' share of the machine's two
cores they need) and of rsyslogd, and the spool's largest size (records
spill there when the receiver is slower than the load). Every record is
counted in rsyslogd's file: lost or duplicated ones make the exit status 1.

Usage::

    python benchmarks/forward.py [--workers 4] [--records 25000] [--rate 0]
        [--handlers null relp tcp] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mplog  # noqa: E402
from tests.rsyslog import Rsyslog  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")


def _worker(worker: int, records: int, rate: float, start: float, results) -> None:
    """Log ``records`` records at ``rate`` a second (0: unpaced); report the
    time taken (paced: since ``start``), the slowest logging call and the CPU time."""
    log = logging.getLogger("bench")
    clock = time.perf_counter
    began = clock() - (time.time() - start if rate else 0.0)
    cpu = time.process_time()
    slowest = 0.0
    for seq in range(records):
        if rate and seq % 100 == 0:
            delay = start + seq / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        before = clock()
        log.info("w%d %d payload of a typical length for a request log line", worker, seq, extra={"user": "u1"})
        slowest = max(slowest, clock() - before)
    results.put((clock() - began, slowest, time.process_time() - cpu))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class _Lines:
    """Counts the lines of a growing file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.count = 0

    def __call__(self) -> int:
        if self._path.exists():
            with open(self._path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
            self._offset += len(data)
            self.count += data.count(b"\n")
        return self.count


def _largest_spool(directory: Path, stop: threading.Event, largest: List[int]) -> None:
    while not stop.wait(0.05):
        if directory.exists():
            sizes = [entry.stat().st_size for entry in os.scandir(directory) if entry.name.endswith(".seg")]
            largest[0] = max(largest[0], sum(sizes))


def run(kind: str, workers: int, records: int, rate: float, directory: Path) -> Dict[str, float]:
    """One run; returns its measures."""
    rsyslog: Optional[Rsyslog] = None
    if kind == "null":
        handler: logging.Handler = logging.NullHandler()
    else:
        rsyslog = Rsyslog(directory / "rsyslog", kind)
        rsyslog.start()
        handler = mplog.SyslogHandler(("127.0.0.1", rsyslog.port), kind, spool=str(directory / "spool"))
    stop, largest = threading.Event(), [0]
    watcher = threading.Thread(target=_largest_spool, args=(directory / "spool", stop, largest), daemon=True)
    watcher.start()
    total = workers * records
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    with mplog.setup(handler, level="INFO", listener="process") as session:
        pid = session.listener._process_pid
        cpu_before = _cpu_seconds(pid)
        rsyslog_pid = rsyslog.process.pid if rsyslog is not None and rsyslog.process is not None else 0
        rsyslog_before = _cpu_seconds(rsyslog_pid) if rsyslog_pid else 0.0
        received = _Lines(rsyslog.output) if rsyslog is not None else None
        began = time.monotonic()
        start = time.time() + 0.2
        per_worker = rate / workers
        processes = [
            context.Process(target=_worker, args=(w, records, per_worker, start, results)) for w in range(workers)
        ]
        for process in processes:
            process.start()
        reports = [results.get(timeout=600) for _ in processes]
        logging_seconds = max(report[0] for report in reports)
        for process in processes:
            process.join()
        mplog.complete(600)
        while received is not None and received() < total and time.monotonic() - began < 600:
            time.sleep(0.05)
        delivered = time.monotonic() - began - (0.2 if rate else 0.0)
        cpu = _cpu_seconds(pid) - cpu_before
        rsyslog_cpu = _cpu_seconds(rsyslog_pid) - rsyslog_before if rsyslog_pid else 0.0
    stop.set()
    lines = rsyslog.lines() if rsyslog is not None else []
    if rsyslog is not None:
        rsyslog.stop()
    distinct = len(set(line.split(" ", 2)[2] for line in lines if line.startswith("bench ")))
    return {
        "logging_s": logging_seconds,
        "slowest_ms": max(report[1] for report in reports) * 1e3,
        "logged_per_s": total / logging_seconds,
        "delivered_per_s": total / delivered if rsyslog is not None else 0.0,
        "listener_us": cpu / total * 1e6,
        "workers_us": sum(report[2] for report in reports) / total * 1e6,
        "rsyslogd_us": rsyslog_cpu / total * 1e6,
        "spool_peak": largest[0],
        "lost": total - distinct if rsyslog is not None else 0,
        "duplicates": len(lines) - distinct if rsyslog is not None else 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--records", type=int, default=25000, help="per worker")
    parser.add_argument("--rate", type=float, default=0.0, help="records/s in all (0: as fast as they can)")
    parser.add_argument("--handlers", nargs="+", default=["null", "relp", "tcp"], choices=["null", "relp", "tcp"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"{args.workers} workers x {args.records} records, rate {args.rate or 'unpaced'}"
    )
    print(
        "handler  logging s  slowest call ms  logged/s  delivered/s  CPU us/record: listener  workers  rsyslogd"
        "  spool peak B  lost  dup  (median of runs)"
    )
    failed = False
    for kind in args.handlers:
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="mplog-forward-") as directory:
                runs.append(run(kind, args.workers, args.records, args.rate, Path(directory)))
        median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        lost, dup = sum(r["lost"] for r in runs), sum(r["duplicates"] for r in runs)
        failed = failed or lost > 0 or dup > 0
        print(
            f"{kind:7}  {median['logging_s']:9.2f}  {median['slowest_ms']:15.1f}  {median['logged_per_s']:8.0f}"
            f"  {median['delivered_per_s']:11.0f}"
            f"  {median['listener_us']:23.1f}  {median['workers_us']:7.1f}  {median['rsyslogd_us']:8.1f}"
            f"  {median['spool_peak']:12.0f}  {lost:4d}  {dup:3d}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
