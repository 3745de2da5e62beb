"""Throughput of logging from several processes into one file, four ways.

Each of ``--workers`` processes logs ``--records`` INFO records into the same
file through:

``mplog``
    ``mplog.setup(mplog.FileHandler(max_bytes=4 MiB))``: a listener thread in
    the parent owns the file and rotates it by size; workers ship each record
    to it over their own Unix socket before the logging call returns.
``mplog-buffered``
    the same with ``setup(buffered=True)``: workers send records in batches.
``filehandler``
    every worker opens its own ``logging.FileHandler`` on the file (mode
    ``"a"``); nothing is shared but the file.
``queue``
    the logging cookbook pattern: ``logging.handlers.QueueHandler`` in the
    workers, a ``logging.handlers.QueueListener`` in the parent, joined by a
    ``multiprocessing.Queue``.

The clock starts just before the first worker is started and stops once every
record is in the file: after all workers have exited and, for the listener
methods, after the listener has been stopped (which drains it). Starting the
listener is not timed. The files (mplog's rotated ones too) are then read back
and every line checked: each record says which worker logged it and its
sequence number, and carries a payload derived from both, so a line is either
exactly right or counted as torn.

Usage::

    python benchmarks/throughput.py [--workers 4] [--records 50000] [--repeat 3]
        [--methods mplog mplog-buffered filehandler queue] [--start-methods fork spawn] [--rst]

The tables show the median of ``--repeat`` runs and, in ``lost/dup/torn``, the
totals over all runs. Records/s counts only records that arrived intact, so a
method is not credited for time saved by losing records. The exit status is 1
if mplog lost, duplicated or tore any record (the other methods' losses are
only reported), 2 on a usage error or a listener that would not stop.
"""

from __future__ import annotations

import argparse
import faulthandler
import glob
import logging
import logging.handlers
import multiprocessing
import os
import platform
import re
import signal
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

# Import mplog from this checkout rather than whatever may be installed.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import mplog  # noqa: E402

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
LOGGER_NAME = "bench"
#: mplog's file rotates at this size (4 x 50,000 records of ~100 B: a few times a run).
ROTATE_BYTES = 4 * 1024 * 1024
# A message with arguments, as real code logs it: formatting is part of the cost.
MESSAGE = "w=%d seq=%d %s"
# One whole line as FORMAT renders a record of ours; anything else is torn.
LINE = re.compile(
    rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\d+) INFO "
    + LOGGER_NAME.encode()
    + rb": w=(\d+) seq=(\d+) ([0-9A-Za-z]+)$"
)

METHODS: Dict[str, str] = {
    "mplog": "mplog",
    "mplog-buffered": "mplog buffered",
    "filehandler": "FileHandler",
    "queue": "stdlib queue",
}

_ALPHABET = (string.ascii_letters + string.digits) * 3


def payload(worker: int, seq: int) -> str:
    """Return the deterministic 24..80-character payload of one record.

    Start and length both vary with worker and sequence number, so a line cut
    short or spliced from two records does not match what it claims to be.
    """
    start = (worker * 7919 + seq * 31) % 62
    length = 24 + (seq * 13 + worker * 5) % 57
    return _ALPHABET[start : start + length]


# --- workers (module level, so spawn and forkserver children can import them) ---


def _log_records(worker: int, count: int) -> None:
    log = logging.getLogger(LOGGER_NAME)
    for seq in range(count):
        log.info(MESSAGE, worker, seq, payload(worker, seq))


def mplog_worker(initializer: Callable[[], None], worker: int, count: int) -> None:
    """Log through mplog; ``initializer`` wires a spawned child (no-op under fork)."""
    initializer()
    _log_records(worker, count)


def _log_through(handler: logging.Handler, worker: int, count: int) -> None:
    """Log ``count`` records with ``handler`` as the root logger's only addition."""
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        _log_records(worker, count)
    finally:
        root.removeHandler(handler)


def filehandler_worker(path: str, worker: int, count: int) -> None:
    """Log through this process's own FileHandler appending to the shared file."""
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(FORMAT))
    try:
        _log_through(handler, worker, count)
    finally:
        # Fork children leave through os._exit(), which skips logging.shutdown().
        handler.close()


def queue_worker(queue: Any, worker: int, count: int) -> None:
    """Log through the cookbook QueueHandler onto a multiprocessing.Queue."""
    try:
        _log_through(logging.handlers.QueueHandler(queue), worker, count)
    finally:
        # The cookbook's orderly exit: wait until the queue's feeder thread has
        # written every buffered record to the pipe, so none is lost with us.
        queue.close()
        queue.join_thread()


# --- running one trial ---------------------------------------------------------


class ListenerHung(Exception):
    """A trial did not finish: the parent is stuck (e.g. draining a listener)."""


def _on_alarm(signum: int, frame: Any) -> None:
    # Show where every thread is stuck before giving up on the run.
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    raise ListenerHung("the trial did not finish in time; thread stacks are above")


class Workers(NamedTuple):
    """What became of one trial's worker processes."""

    pids: List[int]
    problems: List[str]


def _run_workers(
    ctx: Any,
    target: Callable[..., None],
    first_arg: Any,
    workers: int,
    count: int,
    timeout: float,
    start_clock: Callable[[], None],
) -> Workers:
    """Start ``workers`` processes, join them all, and kill any that overrun.

    ``start_clock`` is called after the processes are created (pickling their
    arguments is cheap, but it is setup, not logging) and just before the first
    one starts.
    """
    procs = [ctx.Process(target=target, args=(first_arg, w, count), name=f"bench-{w}") for w in range(workers)]
    start_clock()
    for proc in procs:
        proc.start()
    # One deadline for the whole batch: a slow first worker must not extend
    # the time allowed to the others.
    deadline = time.monotonic() + timeout
    problems: List[str] = []
    for w, proc in enumerate(procs):
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            problems.append(f"worker {w} (pid {proc.pid}) still running after {timeout:.0f} s; killed")
        elif proc.exitcode != 0:
            problems.append(f"worker {w} (pid {proc.pid}) exited with status {proc.exitcode}")
    return Workers([int(proc.pid or 0) for proc in procs], problems)


def _file_handler(path: str) -> logging.FileHandler:
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


class _Clock:
    """Started by _run_workers just before the first worker starts."""

    def __init__(self) -> None:
        self.started = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _rotating_handler(path: str) -> logging.Handler:
    """mplog's own file handler, rotating by size (a few times per run)."""
    handler = mplog.FileHandler(path, max_bytes=ROTATE_BYTES)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def time_mplog(
    ctx: Any, path: str, workers: int, count: int, timeout: float, buffered: bool = False
) -> Tuple[float, Workers]:
    clock = _Clock()
    with mplog.setup(_rotating_handler(path), level="INFO", buffered=buffered):
        result = _run_workers(ctx, mplog_worker, mplog.initializer, workers, count, timeout, clock.start)
    # Leaving setup() has drained the listener and closed the file.
    return clock.elapsed(), result


def time_mplog_buffered(ctx: Any, path: str, workers: int, count: int, timeout: float) -> Tuple[float, Workers]:
    return time_mplog(ctx, path, workers, count, timeout, buffered=True)


def time_filehandler(ctx: Any, path: str, workers: int, count: int, timeout: float) -> Tuple[float, Workers]:
    clock = _Clock()
    result = _run_workers(ctx, filehandler_worker, path, workers, count, timeout, clock.start)
    return clock.elapsed(), result


def time_queue(ctx: Any, path: str, workers: int, count: int, timeout: float) -> Tuple[float, Workers]:
    clock = _Clock()
    handler = _file_handler(path)
    # The queue must come from the same context as the workers: a fork-context
    # queue's semaphores cannot be handed to a spawned child.
    queue = ctx.Queue()
    listener = logging.handlers.QueueListener(queue, handler)
    listener.start()
    try:
        result = _run_workers(ctx, queue_worker, queue, workers, count, timeout, clock.start)
    finally:
        # stop() enqueues a sentinel behind every worker record and waits until
        # the listener thread has handled them all.
        try:
            listener.stop()
        except ListenerHung:
            # A worker killed while holding the queue's lock wedges it for
            # good; do not let interpreter exit wait on its feeder thread too.
            queue.cancel_join_thread()
            raise
        handler.close()
    elapsed = clock.elapsed()
    queue.close()
    queue.join_thread()
    return elapsed, result


TIMERS: Dict[str, Callable[[Any, str, int, int, float], Tuple[float, Workers]]] = {
    "mplog": time_mplog,
    "mplog-buffered": time_mplog_buffered,
    "filehandler": time_filehandler,
    "queue": time_queue,
}


class Tally(NamedTuple):
    """What the log file held, compared with what was logged."""

    lost: int
    duplicated: int
    torn: int
    samples: List[str]  # a few torn lines, for the report


def _log_files(path: str) -> List[str]:
    """The log file and the files mplog.FileHandler rotated it to, oldest first."""
    return sorted(glob.glob(glob.escape(path) + ".*")) + [path]


def verify(path: str, pids: Sequence[int], count: int) -> Tally:
    """Read the file back and count missing, duplicated and torn records.

    A line is torn if it is not one whole FORMAT line of ours, or if its pid or
    payload is not what that worker logged (a splice of two records, or a
    foreign line such as a warning from the logging machinery).
    """
    seen = [bytearray(count) for _ in pids]
    duplicated = torn = 0
    samples: List[str] = []
    data = b"".join(Path(name).read_bytes() for name in _log_files(path))
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the file ends with a newline, as it should
    expected = [[payload(w, seq).encode() for seq in range(count)] for w in range(len(pids))]
    for line in lines:
        match = LINE.match(line)
        good = False
        if match is not None:
            pid, w, seq = int(match.group(1)), int(match.group(2)), int(match.group(3))
            good = w < len(pids) and seq < count and pid == pids[w] and match.group(4) == expected[w][seq]
        if not good:
            torn += 1
            if len(samples) < 3:
                samples.append(line[:200].decode("utf-8", "replace"))
        elif seen[w][seq]:
            duplicated += 1
        else:
            seen[w][seq] = 1
    lost = sum(flags.count(0) for flags in seen)
    return Tally(lost, duplicated, torn, samples)


class Trial(NamedTuple):
    seconds: float
    tally: Tally
    problems: List[str]


def run_trial(
    method: str, start_method: str, workers: int, count: int, timeout: float, directory: str, tag: str
) -> Trial:
    """Time one method once, verify its file, then delete the file."""
    path = os.path.join(directory, f"{method}-{start_method}-{tag}.log")
    ctx = multiprocessing.get_context(start_method)
    # Workers are killed after `timeout`; a parent still busy long after that
    # is stuck in the listener's stop, which no timeout of ours can interrupt
    # otherwise.
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(2 * timeout) + 30)
    try:
        seconds, result = TIMERS[method](ctx, path, workers, count, timeout)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    try:
        tally = verify(path, result.pids, count)
    finally:
        for name in _log_files(path):
            os.unlink(name)
    return Trial(seconds, tally, result.problems)


# --- reporting -------------------------------------------------------------------


class Summary(NamedTuple):
    method: str
    start_method: str
    rate: float  # median records/s
    seconds: float  # median
    slowest_rate: float
    fastest_rate: float
    lost: int
    duplicated: int
    torn: int
    notes: List[str]


def trial_rate(trial: Trial, total: int) -> float:
    """Records/s that arrived intact: a method that loses records is not
    credited for the time it saved by losing them."""
    return (total - trial.tally.lost) / trial.seconds


def summarise(method: str, start_method: str, trials: List[Trial], total: int) -> Summary:
    seconds = [trial.seconds for trial in trials]
    rates = [trial_rate(trial, total) for trial in trials]
    notes: List[str] = []
    for trial in trials:
        notes.extend(trial.problems)
        notes.extend(f"torn line: {sample!r}" for sample in trial.tally.samples)
    return Summary(
        method,
        start_method,
        statistics.median(rates),
        statistics.median(seconds),
        min(rates),
        max(rates),
        sum(trial.tally.lost for trial in trials),
        sum(trial.tally.duplicated for trial in trials),
        sum(trial.tally.torn for trial in trials),
        notes,
    )


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], rule_char: str, rst: bool) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    rule = "  ".join(rule_char * width for width in widths)

    def line(cells: Sequence[str], align_numbers: bool) -> str:
        # Numbers line up on the right; the first column (a name) on the left.
        return "  ".join(
            cell.rjust(width) if align_numbers and position else cell.ljust(width)
            for position, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    body = [line(row, True) for row in rows]
    if rst:
        return "\n".join([rule, line(header, False), rule] + body + [rule])
    return "\n".join([line(header, False), rule] + body)


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return _render(header, rows, "-", rst=False)


def rst_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An RST simple table (every first-column cell is non-empty, as it requires)."""
    return _render(header, rows, "=", rst=True)


def results_rows(summaries: Sequence[Summary]) -> Tuple[List[str], List[List[str]]]:
    header = ["method", "start", "records/s", "seconds", "records/s min-max", "lost/dup/torn"]
    rows = [
        [
            METHODS[s.method],
            s.start_method,
            f"{s.rate:,.0f}",
            f"{s.seconds:.2f}",
            f"{s.slowest_rate:,.0f}-{s.fastest_rate:,.0f}",
            f"{s.lost}/{s.duplicated}/{s.torn}",
        ]
        for s in summaries
    ]
    return header, rows


def ratio_rows(summaries: Sequence[Summary], start_methods: Sequence[str]) -> Tuple[List[str], List[List[str]]]:
    """Each mplog mode's median rate over each other method's, per start method."""
    rates = {(s.method, s.start_method): s.rate for s in summaries}
    others = [m for m in ("filehandler", "queue") if any(s.method == m for s in summaries)]
    header = ["mode", "start"] + [f"/ {METHODS[m]}" for m in others]
    rows = []
    for mode in ("mplog", "mplog-buffered"):
        for start_method in start_methods:
            mine = rates.get((mode, start_method))
            if mine is None:
                continue
            rows.append([METHODS[mode], start_method] + [f"{mine / rates[(m, start_method)]:.2f}x" for m in others])
    return header, rows


def describe(args: argparse.Namespace) -> str:
    return (
        f"{args.workers} workers x {args.records:,} records into one file. records/s: intact records "
        f"per second, median of {args.repeat} run(s); lost/dup/torn: totals over all runs. "
        f"Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs, mplog {mplog.__version__}."
    )


# --- command line ----------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--records", type=int, default=50_000, help="records per worker (default 50000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method; the median is shown (default 3)")
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="methods to compare (default all)"
    )
    parser.add_argument(
        "--start-methods",
        nargs="+",
        choices=multiprocessing.get_all_start_methods(),
        default=["fork", "spawn"],
        help="multiprocessing start methods (default fork spawn)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before workers are killed (default 300)")
    parser.add_argument("--rst", action="store_true", help="print reStructuredText tables, ready to paste")
    args = parser.parse_args(argv)
    for name in ("workers", "records", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    # A method named twice would be run twice and shown twice.
    args.methods = list(dict.fromkeys(args.methods))
    args.start_methods = list(dict.fromkeys(args.start_methods))
    return args


def trial_order(args: argparse.Namespace) -> Iterator[Tuple[int, str, str]]:
    # Interleave methods within each repeat so a noisy spell on the machine
    # hits all of them rather than one method's whole series.
    for run in range(args.repeat):
        for start_method in args.start_methods:
            for method in args.methods:
                yield run, start_method, method


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    total = args.workers * args.records
    trials: Dict[Tuple[str, str], List[Trial]] = {}
    with tempfile.TemporaryDirectory(prefix="mplog-bench-") as directory:
        for run, start_method, method in trial_order(args):
            try:
                trial = run_trial(method, start_method, args.workers, args.records, args.timeout, directory, str(run))
            except ListenerHung as exc:
                print(f"{METHODS[method]} / {start_method}, run {run + 1}: {exc}", file=sys.stderr)
                return 2
            trials.setdefault((method, start_method), []).append(trial)
            # Progress on stderr keeps stdout to the tables.
            print(
                f"run {run + 1}/{args.repeat} {start_method:<6} {METHODS[method]:<13} "
                f"{trial_rate(trial, total):>10,.0f} records/s  {trial.seconds:6.2f} s  "
                f"lost/dup/torn {trial.tally.lost}/{trial.tally.duplicated}/{trial.tally.torn}"
                + "".join(f"\n    {problem}" for problem in trial.problems),
                file=sys.stderr,
                flush=True,
            )

    summaries = [
        summarise(method, start_method, trials[(method, start_method)], total)
        for start_method in args.start_methods
        for method in args.methods
    ]
    render = rst_table if args.rst else plain_table
    print(describe(args))
    print()
    print(render(*results_rows(summaries)))
    if any(m.startswith("mplog") for m in args.methods) and len(args.methods) > 1:
        print()
        print(render(*ratio_rows(summaries, args.start_methods)))
    notes = [f"{METHODS[s.method]} / {s.start_method}: {note}" for s in summaries for note in s.notes]
    if notes:
        print()
        print("Notes:")
        print()
        for note in notes:
            print(f"- {note}")
    mplog_failed = any(s.lost or s.duplicated or s.torn for s in summaries if s.method.startswith("mplog"))
    return 1 if mplog_failed else 0


if __name__ == "__main__":
    sys.exit(main())
