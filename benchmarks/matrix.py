"""mplog against every common way of logging from many processes into one file.

For each payload size, worker count W and start method, W worker processes each
log N INFO records into one log file (format
``%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s``, a message with
four arguments), through each of these methods:

``mplog-rotating``   the headline: ``mplog.setup(mplog.FileHandler(max_bytes=...))``,
                     mplog's own rotating file, owned by the listener thread.
``mplog-buffered``   the same with ``mplog.setup(..., buffered=True)``.
``mplog``            ``mplog.setup(logging.FileHandler)``: no rotation.
``filehandler``      every worker has its own ``logging.FileHandler`` on the file.
``rotating``         every worker has its own ``RotatingFileHandler`` on the file
                     (not process-safe: it loses records when it rotates).
``queue``            the cookbook: ``QueueHandler`` -> ``multiprocessing.Queue`` ->
                     ``QueueListener`` with a ``FileHandler``.
``queue-rotating``   the same with a ``RotatingFileHandler``.
``mp-logging``       the ``multiprocessing-logging`` package (fork only).
``clh``              ``concurrent-log-handler``: a ``ConcurrentRotatingFileHandler``
                     in every worker (a lock file serialises the writers).
``loguru``           ``loguru`` with a file sink and ``enqueue=True``.
``single``           ceiling: this one process logs all W*N records through a
                     ``FileHandler`` itself (no workers).
``raw``              ceiling: this one process ``os.write``-s W*N preformatted lines.

Every rotating method rotates at 50 MiB. The stdlib's and
concurrent-log-handler's keep backupCount=20 rotated files (``bench.log.1``...);
mplog's keep every one (``backup_count=None``: ``bench.log.<time>[.N]``), so
mplog must show zero loss with rotation on. Every log file left (the live file
and each rotated one, whichever the naming) is read back. Each line is verified: each record names its worker and
sequence number and carries a payload derived from both, so a line is either
exactly right or counted as torn; records never seen are lost, records seen
twice duplicated.

Reported per cell (the median of ``--repeat`` runs; lost/dup/torn are totals):
wall time (from just before the first worker starts until every record is in
the file, listeners drained), intact records per second (a method is not
credited for time saved by losing records), microseconds per logging call
inside the worker's loop (mean over workers), CPU seconds of the whole trial
(the trial process with its listener threads, plus every worker, from
``getrusage``), and the method's rate divided by that of per-process
``FileHandler`` (``vs FileHandler``) and of ``QueueListener`` + ``FileHandler``
(``vs queue``) at the same W and start method: on the mplog rows, how mplog
compares with the fastest unsafe way and with the stdlib's safe way. The
``--json`` file has them too (``ratios``: ``vs_filehandler`` and ``vs_queue``
per table row).

Each trial runs in a fresh Python process (so no method inherits another's
threads, at-fork hooks or imports), in its own temporary directory that is
removed afterwards. Workers are joined with a deadline and killed by pid when
they overrun; a trial process that does not finish is killed with its process
group and its cell says "hung". mplog, this script and ``workload.py`` are
copied at start (someone may be editing them), so every trial runs the same
code. What a worker runs lives in ``workload.py``, and the trial process
imports this script rather than running it, so a spawned worker imports only
``workload.py`` and the method under test, not this script's own imports
(~34 ms of CPU for every spawned worker of every method, before the split).

Usage::

    python benchmarks/matrix.py [--workers 1 2 4 8 16] [--records 50000]
        [--sizes 100 64KiB@4] [--start-methods fork spawn] [--methods ...]
        [--repeat 3] [--quick] [--rst] [--plot [PNG]] [--json [PATH]]
    python benchmarks/matrix.py --from-json benchmarks/results/matrix.json [--rst] [--plot]

``--sizes`` takes payload sizes in bytes (``100``, ``64KiB``); ``SIZE@W,W``
runs that size only at those worker counts. Payloads larger than 4 KiB log
``--big-records`` (2,000) records per worker instead of ``--records``, which
the output says. ``--quick`` means W in {2, 4}, N = 10,000, one run.

Install the peers with ``pip install -e . -r benchmarks/requirements-matrix.txt``;
a peer that is missing is reported as "not installed". Exit status: 1 if
mplog lost, duplicated or tore a record or a trial of it failed; 2 on a usage
error.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import faulthandler
import hashlib
import importlib.util
import json
import logging
import logging.handlers
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
RESULTS_DIR = HERE / "results"

sys.path.insert(0, str(HERE))  # also when imported by the trial process, from a copy
from workload import (  # noqa: E402
    BACKUP_COUNT,
    FORMAT,
    LOGGER_NAME,
    LOGURU_FORMAT,
    MAX_BYTES,
    MESSAGE,
    Load,
    clh_handler,
    file_handler,
    inherited_worker,
    log_through_root,
    loguru_worker,
    mplog_file_handler,
    mplog_worker,
    own_handler_worker,
    payload_variants,
    queue_worker,
    rotating_handler,
    status_of,
    variant_index,
)

LINE = re.compile(
    rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\d+) INFO "
    + LOGGER_NAME.encode()
    + rb": w=(\d+) seq=(\d+) status=([a-z]+) data=([0-9A-Za-z]*)$"
)
BIG_PAYLOAD = 4096  # payloads above this log --big-records records per worker
LOG_NAME = "bench.log"


class Method(NamedTuple):
    label: str
    module: Optional[str]  # the peer package it needs, if any
    fork_only: bool
    rotating: bool
    ceiling: bool  # one process, no workers


METHODS: Dict[str, Method] = {
    # mplog as its users are told to run it: rotation on, zero loss. The first
    # row of each W in the tables, and the mplog the README cites.
    "mplog-rotating": Method("mplog (rotating)", None, False, True, False),
    "mplog-buffered": Method("mplog buffered (rotating)", None, False, True, False),
    "mplog": Method("mplog, stdlib FH, no rotation", None, False, False, False),
    "filehandler": Method("per-process FileHandler", None, False, False, False),
    "rotating": Method("per-process RotatingFileHandler", None, False, True, False),
    "queue": Method("QueueListener + FileHandler", None, False, False, False),
    "queue-rotating": Method("QueueListener + RotatingFH", None, False, True, False),
    "mp-logging": Method("multiprocessing-logging", "multiprocessing_logging", True, False, False),
    "clh": Method("concurrent-log-handler", "concurrent_log_handler", False, True, False),
    "loguru": Method("loguru enqueue=True", "loguru", False, False, False),
    "single": Method("ceiling: 1 process FileHandler", None, False, False, True),
    "raw": Method("ceiling: 1 process os.write", None, False, False, True),
}


# --- one trial, in its own process ----------------------------------------------------


class Clock:
    """Started by run_workers just before the first worker starts."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def cpu_seconds() -> float:
    """User + system CPU of this process (all its threads) and of its reaped children.

    getrusage rather than os.times(): the latter counts in 10 ms clock ticks,
    too coarse for short trials.
    """
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


Target = Tuple[Callable[..., None], Tuple[Any, ...]]  # worker function and its leading args


@contextlib.contextmanager
def mplog_session(
    ctx: Any, path: str, make_handler: Callable[[str], logging.Handler], buffered: bool = False
) -> Iterator[Target]:
    import mplog

    handler = make_handler(path)
    session = mplog.setup(handler, level="INFO", buffered=True) if buffered else mplog.setup(handler, level="INFO")
    with session:
        yield mplog_worker, (mplog.initializer,)
    # Leaving setup() has drained the listener and closed the file.


@contextlib.contextmanager
def per_process_session(make_handler: Callable[[str], logging.Handler], path: str) -> Iterator[Target]:
    yield own_handler_worker, (make_handler, path)


@contextlib.contextmanager
def queue_session(ctx: Any, path: str, rotating: bool) -> Iterator[Target]:
    handler = rotating_handler(path) if rotating else file_handler(path)
    # From the workers' context: a fork-context queue's semaphores cannot be
    # handed to a spawned child.
    queue = ctx.Queue()
    listener = logging.handlers.QueueListener(queue, handler)
    listener.start()
    try:
        yield queue_worker, (queue,)
    finally:
        # stop() enqueues a sentinel behind every record and waits for it.
        listener.stop()
        handler.close()
        queue.close()
        queue.join_thread()


@contextlib.contextmanager
def mp_logging_session(ctx: Any, path: str) -> Iterator[Target]:
    from multiprocessing_logging import MultiProcessingHandler

    # What install_mp_handler() does, without its check of the global default
    # start method: the workers here use an explicit fork context.
    handler = MultiProcessingHandler("mp-handler-0", sub_handler=file_handler(path))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield inherited_worker, (None,)
    finally:
        root.removeHandler(handler)
        handler.close()  # waits (up to 5 s, its own limit) for the queue to empty


@contextlib.contextmanager
def loguru_session(ctx: Any, path: str) -> Iterator[Target]:
    from loguru import logger

    logger.remove()  # its default stderr sink
    sink = logger.add(path, format=LOGURU_FORMAT, level="INFO", enqueue=True, context=ctx)
    try:
        yield loguru_worker, (logger,)
    finally:
        logger.remove(sink)  # drains the queue and joins loguru's writer thread


SESSIONS: Dict[str, Callable[[Any, str], "contextlib.AbstractContextManager[Target]"]] = {
    "mplog-rotating": lambda ctx, path: mplog_session(ctx, path, mplog_file_handler),
    "mplog-buffered": lambda ctx, path: mplog_session(ctx, path, mplog_file_handler, buffered=True),
    "mplog": lambda ctx, path: mplog_session(ctx, path, file_handler),
    "filehandler": lambda ctx, path: per_process_session(file_handler, path),
    "rotating": lambda ctx, path: per_process_session(rotating_handler, path),
    "queue": lambda ctx, path: queue_session(ctx, path, False),
    "queue-rotating": lambda ctx, path: queue_session(ctx, path, True),
    "mp-logging": mp_logging_session,
    "clh": lambda ctx, path: per_process_session(clh_handler, path),
    "loguru": loguru_session,
}


def run_workers(
    ctx: Any, target: Target, loads: Sequence[Load], timeout: float, clock: Clock
) -> Tuple[List[int], List[str]]:
    """Start one process per load, join them all, kill any that overrun.

    Returns the workers' pids and a list of problems (killed, non-zero exit).
    """
    function, leading = target
    procs = [ctx.Process(target=function, args=(*leading, load), name=f"bench-{load.worker}") for load in loads]
    clock.start()
    for proc in procs:
        proc.start()
    # One deadline for the batch: a slow first worker must not extend the others'.
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
    return [int(proc.pid or 0) for proc in procs], problems


def run_single_ceiling(path: str, loads: Sequence[Load]) -> float:
    """This process logs every worker's records through one FileHandler."""
    handler = file_handler(path)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        seconds = sum(log_through_root(load) for load in loads)
    finally:
        root.removeHandler(handler)
        handler.close()
    return seconds


def preformatted_lines(loads: Sequence[Load]) -> List[bytes]:
    """Every line as FORMAT would render it, with one timestamp (not timed)."""
    formatter = logging.Formatter(FORMAT)
    record = logging.LogRecord(LOGGER_NAME, logging.INFO, __file__, 0, "", (), None)
    prefix = f"{formatter.formatTime(record)} {os.getpid()} INFO {LOGGER_NAME}: "
    lines = []
    for load in loads:
        variants = payload_variants(load.size)
        w = load.worker
        for seq in range(load.records):
            message = MESSAGE % (w, seq, status_of(w, seq), variants[variant_index(w, seq)])
            lines.append(f"{prefix}{message}\n".encode())
    return lines


def run_raw_ceiling(path: str, lines: Sequence[bytes]) -> float:
    """One os.write per line on an O_APPEND descriptor: the kernel's own cost."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        started = time.perf_counter()
        for line in lines:
            os.write(fd, line)
        return time.perf_counter() - started
    finally:
        os.close(fd)


class Tally(NamedTuple):
    """What the log files held, compared with what was logged."""

    lost: int
    duplicated: int
    torn: int
    files: int
    samples: List[str]  # a few torn lines, for the report


def _check_line(line: bytes, pids: Sequence[int], records: int, variants: Sequence[bytes]) -> Optional[Tuple[int, int]]:
    """The (worker, seq) a line intact records, or None if it is torn or foreign."""
    match = LINE.match(line)
    if match is None:
        return None
    pid, w, seq = int(match.group(1)), int(match.group(2)), int(match.group(3))
    if w >= len(pids) or seq >= records or pid != pids[w]:
        return None
    if match.group(4) != status_of(w, seq).encode() or match.group(5) != variants[variant_index(w, seq)]:
        return None
    return w, seq


def log_files(directory: Path) -> List[Path]:
    """The live log file and every rotated file of it, under either naming:
    ``bench.log.1``, ``bench.log.2``... (RotatingFileHandler,
    concurrent-log-handler) or ``bench.log.<time>`` and ``bench.log.<time>.N``
    (``mplog.FileHandler``; what its ``rotated_files()`` lists)."""
    live = directory / LOG_NAME
    return ([live] if live.exists() else []) + sorted(directory.glob(LOG_NAME + ".*"))


def verify(directory: Path, pids: Sequence[int], records: int, size: int) -> Tally:
    """Read the log file and every rotated file of it; count lost, duplicated and torn records."""
    seen = [bytearray(records) for _ in pids]
    variants = [variant.encode() for variant in payload_variants(size)]
    duplicated = torn = 0
    samples: List[str] = []
    paths = log_files(directory)
    for path in paths:
        with path.open("rb") as file:
            for raw in file:
                line = raw[:-1] if raw.endswith(b"\n") else raw
                found = _check_line(line, pids, records, variants)
                if found is None:
                    torn += 1
                    if len(samples) < 3:
                        samples.append(line[:160].decode("utf-8", "replace"))
                elif seen[found[0]][found[1]]:
                    duplicated += 1
                else:
                    seen[found[0]][found[1]] = 1
    lost = sum(flags.count(0) for flags in seen)
    return Tally(lost, duplicated, torn, len(paths), samples)


def read_loop_times(timing_dir: Path, workers: int) -> List[Optional[float]]:
    times: List[Optional[float]] = []
    for w in range(workers):
        try:
            times.append(float(Path(timing_dir, str(w)).read_text()))
        except (OSError, ValueError):
            times.append(None)  # the worker died before reporting
    return times


def time_ceiling(name: str, path: str, loads: Sequence[Load]) -> Tuple[float, float, float, List[int]]:
    """Run a ceiling in this process: (wall s, CPU s, loop s, pids)."""
    lines = preformatted_lines(loads) if name == "raw" else []
    cpu = cpu_seconds()
    clock = Clock()
    loop = run_raw_ceiling(path, lines) if name == "raw" else run_single_ceiling(path, loads)
    wall = clock.elapsed()
    return wall, cpu_seconds() - cpu, loop, [os.getpid()] * len(loads)


def run_trial(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Time one method once and verify its files. Runs in a fresh process."""
    name = spec["method"]
    directory = Path(spec["dir"])
    logs, timing = directory / "logs", directory / "timing"
    logs.mkdir()
    timing.mkdir()
    path = str(logs / LOG_NAME)
    loads = [Load(w, spec["records"], spec["size"], str(timing)) for w in range(spec["workers"])]
    problems: List[str] = []
    if METHODS[name].ceiling:
        wall, cpu, loop, pids = time_ceiling(name, path, loads)
        per_call = loop / (spec["workers"] * spec["records"])
    else:
        ctx = multiprocessing.get_context(spec["start_method"])
        started_cpu = cpu_seconds()
        clock = Clock()
        with SESSIONS[name](ctx, path) as target:
            pids, problems = run_workers(ctx, target, loads, spec["timeout"], clock)
        wall = clock.elapsed()
        cpu = cpu_seconds() - started_cpu
        loops = [t for t in read_loop_times(timing, spec["workers"]) if t is not None]
        per_call = statistics.mean(loops) / spec["records"] if loops else float("nan")
    tally = verify(logs, pids, spec["records"], spec["size"])
    mplog_module = sys.modules.get("mplog")
    return {
        "status": trial_status(problems),
        "wall": wall,
        "cpu": cpu,
        "us_per_call": per_call * 1e6,
        "lost": tally.lost,
        "duplicated": tally.duplicated,
        "torn": tally.torn,
        "files": tally.files,
        "samples": tally.samples,
        "problems": problems,
        "mplog_file": getattr(mplog_module, "__file__", None),
    }


def trial_status(problems: Sequence[str]) -> str:
    if any("killed" in problem for problem in problems):
        return "worker hung"
    return "worker crashed" if problems else "ok"


def trial_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    # A parent stuck after its workers (e.g. a listener that never drains):
    # print every thread's stack for the report, then exit; the orchestrator
    # kills the whole process group later still, as a last resort.
    faulthandler.dump_traceback_later(spec["timeout"] + 60, exit=True)
    result = run_trial(spec)
    faulthandler.cancel_dump_traceback_later()
    Path(spec["dir"], "result.json").write_text(json.dumps(result))
    return 0


# --- the orchestrator: trials in subprocesses ------------------------------------------


def kill_group(proc: "subprocess.Popen[bytes]") -> None:
    """Kill a trial process and its workers: its process group, whose id is its pid
    (started with start_new_session), so nothing else on the machine is touched."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _failure(status: str, note: str) -> Dict[str, Any]:
    return {"status": status, "problems": [note] if note else []}


# The trial process imports the driver rather than running it as a script: a
# spawned worker re-runs its parent's main script (as __mp_main__), and with
# `-c` there is none, so a worker imports only workload.py and what the method
# under test needs.
TRIAL_COMMAND = "import sys; sys.path.insert(0, sys.argv[1]); import matrix; sys.exit(matrix.trial_main(sys.argv[2]))"


def run_in_subprocess(script: Path, spec: Dict[str, Any], env: Dict[str, str]) -> Dict[str, Any]:
    """Run one trial in a fresh interpreter, in a temporary directory removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="mplog-matrix-"))
    try:
        return _run_and_collect(script, dict(spec, dir=str(directory)), env, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run_and_collect(script: Path, spec: Dict[str, Any], env: Dict[str, str], directory: Path) -> Dict[str, Any]:
    err = directory / "stderr"
    limit = spec["timeout"] + 120
    with (directory / "stdout").open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", TRIAL_COMMAND, str(script.parent), json.dumps(spec)],
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=str(script.parent),  # `-c` puts the working directory on sys.path: the snapshot's
            start_new_session=True,
        )
        try:
            code = proc.wait(limit)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return _failure("hung", f"trial process killed after {limit:.0f} s: {_tail(err)}")
    result_file = directory / "result.json"
    if code == 0 and result_file.exists():
        result: Dict[str, Any] = json.loads(result_file.read_text())
        return result
    # A crashed trial may leave workers behind, still in its process group.
    kill_group(proc)
    stderr_text = _tail(err, 12)
    if "Timeout (" in err.read_text(errors="replace"):  # faulthandler's dump: the parent was stuck
        return _failure("hung", f"trial process stuck after its workers; last frames: {stderr_text}")
    return _failure("crashed", f"trial process exited with status {code}: {stderr_text}")


# --- mplog snapshot ------------------------------------------------------------------------


def _mplog_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        digest.update(source.relative_to(package).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def snapshot_mplog(into: Path, tries: int = 5) -> Dict[str, str]:
    """Copy mplog/ from this checkout into ``into`` and check that it imports.

    Someone may be editing mplog while the matrix runs; a copy taken once gives
    every trial the same code. A copy that does not import (an edit in
    progress) is taken again a minute later.
    """
    for attempt in range(1, tries + 1):
        target = into / "mplog"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(REPO_ROOT / "mplog", target, ignore=shutil.ignore_patterns("__pycache__"))
        # Byte-compiled as pip compiles an installed package (the peers' are):
        # where PYTHONDONTWRITEBYTECODE is set, every spawned worker would
        # otherwise compile mplog from source (~23 ms of CPU each, measured).
        compileall.compile_dir(str(target), quiet=1)
        check = subprocess.run(
            [sys.executable, "-c", "import mplog, sys; sys.stdout.write(mplog.__file__)"],
            env=dict(os.environ, PYTHONPATH=str(into)),
            cwd=str(into),  # `-c` puts the working directory first on sys.path
            capture_output=True,
            text=True,
        )
        if check.returncode == 0 and check.stdout.startswith(str(into)):
            dirty = bool(_git("status", "--porcelain", "--", "mplog"))
            return {
                "commit": _git("rev-parse", "--short", "HEAD") + ("+uncommitted" if dirty else ""),
                "sources_sha256": _mplog_digest(target),
            }
        print(
            f"mplog does not import from its copy (attempt {attempt}/{tries}): "
            f"{(check.stderr.strip() or 'imported ' + check.stdout)[-300:]}; retrying in 60 s",
            file=sys.stderr,
        )
        time.sleep(60)
    raise SystemExit("mplog would not import; giving up")


# --- planning --------------------------------------------------------------------------------


class Cell(NamedTuple):
    size: int
    workers: int
    start_method: str  # "-" for ceilings, which start no process
    method: str


def records_for(size: int, args: argparse.Namespace) -> int:
    records: int = min(args.records, args.big_records) if size > BIG_PAYLOAD else args.records
    return records


def cells(args: argparse.Namespace, run: int = 0) -> List[Cell]:
    """Every cell, in the order repetition ``run`` runs them.

    Each repetition starts a group (one size, W and start method) with the
    next method in turn: in the last release's matrix, the method that always
    went first was the slowest of mplog's rows, and moved by more than the
    differences between mplog's modes when run elsewhere in the order. (The
    methods keep their cyclic order, so each still follows the same one.)
    """
    planned: List[Cell] = []
    methods = [m for m in args.methods if not METHODS[m].ceiling]
    if methods:
        shift = run % len(methods)
        methods = methods[shift:] + methods[:shift]
    for size, workers_list in args.sizes:
        for workers in workers_list:
            for start_method in args.start_methods:
                planned.extend(Cell(size, workers, start_method, m) for m in methods)
            # Ceilings start no process: once per size and W, not per start method.
            planned.extend(Cell(size, workers, "-", m) for m in args.methods if METHODS[m].ceiling)
    return planned


def skip_reason(cell: Cell) -> Optional[str]:
    method = METHODS[cell.method]
    if method.fork_only and cell.start_method != "fork":
        return "n/a"
    if method.module is not None and importlib.util.find_spec(method.module) is None:
        return "not installed"
    return None


# --- summarising ----------------------------------------------------------------------------


class Summary(NamedTuple):
    cell: Cell
    records: int  # per worker
    runs: int  # trials that completed
    failures: List[str]  # status of each failed trial
    wall: float
    rate: float  # intact records/s
    slowest: float  # records/s of the slowest and fastest run: how noisy the median is
    fastest: float
    us_per_call: float
    cpu: float
    lost: int
    duplicated: int
    torn: int
    files: int
    notes: List[str]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(cell: Cell, records: int, trials: Sequence[Dict[str, Any]]) -> Summary:
    total = cell.workers * records
    done = [t for t in trials if "wall" in t]
    rates = [(total - t["lost"]) / t["wall"] for t in done]
    notes: List[str] = []
    for trial in trials:
        notes.extend(trial.get("problems", []))
        notes.extend(f"torn line: {sample!r}" for sample in trial.get("samples", []))
    return Summary(
        cell,
        records,
        len(done),
        [t["status"] for t in trials if t["status"] != "ok"],
        _median([t["wall"] for t in done]),
        _median(rates),
        min(rates, default=float("nan")),
        max(rates, default=float("nan")),
        _median([t["us_per_call"] for t in done]),
        _median([t["cpu"] for t in done]),
        sum(t["lost"] for t in done),
        sum(t["duplicated"] for t in done),
        sum(t["torn"] for t in done),
        max((t["files"] for t in done), default=0),
        notes,
    )


def status_text(summary: Summary, repeat: int) -> str:
    if summary.failures and summary.failures[0] in ("n/a", "not installed"):
        return summary.failures[0]
    if not summary.failures:
        return "ok"
    kinds = sorted(set(summary.failures))
    return ", ".join(f"{kind} {summary.failures.count(kind)}/{repeat}" for kind in kinds)


# --- tables ------------------------------------------------------------------------------------


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], rst: bool) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    rule = "  ".join(("=" if rst else "-") * width for width in widths)

    def line(cells_: Sequence[str], numbers: bool) -> str:
        # Numbers right-aligned; the first two columns (W, method) left.
        return "  ".join(
            cell.rjust(width) if numbers and position >= 2 else cell.ljust(width)
            for position, (cell, width) in enumerate(zip(cells_, widths))
        ).rstrip()

    body = [line(row, True) for row in rows]
    if rst:
        return "\n".join([rule, line(header, False), rule, *body, rule])
    return "\n".join([line(header, False), rule, *body])


def _number(value: float, fmt: str) -> str:
    return "-" if value != value else format(value, fmt)  # NaN: no completed run


def _kilo(rate: float) -> str:
    return f"{rate / 1e6:.2f}M" if rate >= 1e6 else f"{rate / 1e3:.0f}k"


# Every row's records/s is divided by these methods' (same size, W and start
# method): per-process FileHandler, fast but unsafe, and the stdlib's safe way.
REFERENCES = ("filehandler", "queue")


def _divide(mine: Summary, other: Optional[Summary]) -> float:
    """``mine``'s rate over ``other``'s; NaN for the reference itself or a cell without a run."""
    if other is None or mine is other or not mine.runs or not other.runs or not other.rate:
        return float("nan")
    return mine.rate / other.rate


def ratios(summaries: Sequence[Summary], start_method: str) -> Dict[Cell, Tuple[float, ...]]:
    """Each cell shown in ``start_method``'s tables (ceilings included): its rate
    divided by that of each of REFERENCES at the same size and W."""
    refs = {
        (s.cell.size, s.cell.workers, s.cell.method): s
        for s in summaries
        if s.cell.start_method == start_method and s.cell.method in REFERENCES
    }
    return {
        s.cell: tuple(_divide(s, refs.get((s.cell.size, s.cell.workers, name))) for name in REFERENCES)
        for s in summaries
        if s.cell.start_method in (start_method, "-")
    }


def _ratio(value: float) -> str:
    return "-" if value != value else f"{value:.2f}x"


def table_rows(summaries: Sequence[Summary], start_method: str, repeat: int) -> List[List[str]]:
    """One row per (W, method) of one size and start method, ceilings last in each W."""
    of_rows = ratios(summaries, start_method)
    rows = []
    for s in summaries:
        if s.cell.start_method not in (start_method, "-"):
            continue
        rows.append(
            [
                str(s.cell.workers),
                METHODS[s.cell.method].label,
                _number(s.wall, ".2f"),
                _number(s.rate, ",.0f"),
                f"{_kilo(s.slowest)}-{_kilo(s.fastest)}" if s.runs else "-",
                _number(s.us_per_call, ".1f"),
                _number(s.cpu, ".2f"),
                *(_ratio(value) for value in of_rows[s.cell]),
                f"{s.lost}/{s.duplicated}/{s.torn}" if s.runs else "-",
                status_text(s, repeat),
            ]
        )
    return rows


HEADER = [
    "W",
    "method",
    "wall s",
    "records/s",
    "range",
    "µs/call",
    "CPU s",
    "vs FileHandler",
    "vs queue",
    "lost/dup/torn",
    "status",
]


def size_label(size: int) -> str:
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def table_title(size: int, start_method: str, records: int, args: argparse.Namespace) -> str:
    reduced = (
        f" (N reduced from {args.records:,} to {records:,} for this payload size)" if records != args.records else ""
    )
    return (
        f"{size_label(size)} payload, {start_method} start method: W workers x {records:,} records each{reduced}; "
        f"median of {args.repeat} run(s), lost/dup/torn summed over runs."
    )


def ordered(summaries: Sequence[Summary], args: argparse.Namespace) -> List[Summary]:
    """Summaries in table order: by size, W, then the order of METHODS."""
    order = {name: i for i, name in enumerate(METHODS)}
    return sorted(summaries, key=lambda s: (s.cell.size, s.cell.workers, order[s.cell.method]))


def print_tables(summaries: Sequence[Summary], args: argparse.Namespace) -> None:
    for size, _ in args.sizes:
        of_size = [s for s in ordered(summaries, args) if s.cell.size == size]
        if not of_size:
            continue
        for start_method in args.start_methods:
            print()
            print(table_title(size, start_method, of_size[0].records, args))
            print()
            print(_render(HEADER, table_rows(of_size, start_method, args.repeat), args.rst))


def print_notes(summaries: Sequence[Summary], args: argparse.Namespace) -> None:
    notes: List[str] = []
    for s in ordered(summaries, args):
        where = f"{size_label(s.cell.size)}, W={s.cell.workers}, {s.cell.start_method}, {METHODS[s.cell.method].label}"
        notes.extend(f"{where}: {note}" for note in dict.fromkeys(s.notes))
        expected = s.cell.workers * s.records * line_bytes(s.cell.size)
        keeps_every_file = s.cell.method in ("mplog-rotating", "mplog-buffered")  # backup_count=None
        if METHODS[s.cell.method].rotating and not keeps_every_file and expected > (BACKUP_COUNT + 1) * MAX_BYTES:
            notes.append(f"{where}: ~{expected >> 20} MiB logged exceeds what backupCount keeps; losses expected")
    if notes:
        print()
        print("Notes:")
        print()
        for note in notes:
            print(f"- {note}")


def line_bytes(size: int) -> int:
    """Approximate bytes of one log line (timestamp, pid, names, message)."""
    return 60 + size


def describe(args: argparse.Namespace, snapshot: Dict[str, str]) -> str:
    return (
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs; mplog {snapshot['commit']} (sources {snapshot['sources_sha256']}). "
        f"vs FileHandler and vs queue: the row's records/s divided by that of per-process FileHandler "
        f"and of QueueListener + FileHandler at the same W and start method (on an mplog row, above 1: "
        f"mplog faster). mplog (rotating) and mplog buffered rotate with mplog.FileHandler at "
        f"{MAX_BYTES >> 20} MiB and keep every rotated file; all of them are read back. "
        f"records/s counts intact records only (range: slowest-fastest run); "
        f"µs/call: time in the worker's logging loop / N; "
        f"CPU s: trial process and all workers. Ceilings start no worker process: "
        f"they are run once per size and W and shown in every start method's table."
    )


# --- plot ------------------------------------------------------------------------------------------


def plot(summaries: Sequence[Summary], args: argparse.Namespace, path: Path) -> None:
    """records/s against W, one line per method; a row per payload size, a column per start method."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    sizes = [size for size, _ in args.sizes]
    fig, axes = plt.subplots(
        len(sizes), len(args.start_methods), figsize=(7 * len(args.start_methods), 5 * len(sizes)), squeeze=False
    )
    for row, (size, workers) in enumerate(args.sizes):
        for col, start_method in enumerate(args.start_methods):
            # A size measured at one W has no line to draw: bars compare it better.
            panel = _plot_panel if len(workers) > 1 else _bar_panel
            panel(axes[row][col], summaries, size, start_method)
    shown = [name for name in METHODS if any(s.cell.method == name and s.runs for s in summaries)]
    handles = [_legend_handle(name) for name in shown]
    fig.legend(handles, [METHODS[name].label for name in shown], loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(f"Records/s into one file (median of {args.repeat}; x = lost, duplicated or torn records)")
    fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}", file=sys.stderr)


def _legend_handle(name: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D(
        [],
        [],
        color=COLORS[name],
        linestyle="--" if METHODS[name].ceiling else "-",
        marker="o",
        linewidth=3.0 if name.startswith("mplog") else 1.5,
    )


def _bar_panel(ax: Any, summaries: Sequence[Summary], size: int, start_method: str) -> None:
    """One horizontal bar per method, for a size measured at a single W."""
    bars = [
        (name, points[0])
        for name in METHODS
        for points in [_panel_points(summaries, size, start_method, name)]
        if points
    ]
    rows = range(len(bars))
    rates = [rate for _, (_, rate, _) in bars]
    ax.barh(rows, rates, color=[COLORS[name] for name, _ in bars])
    for row, (_, (_, rate, damaged)) in zip(rows, bars):
        note = " (lost records)" if damaged else ""
        ax.text(rate, row, f" {_thousands(rate, None)}{note}", va="center", fontsize=8)
    ax.set_yticks(list(rows))
    ax.set_yticklabels([METHODS[name].label for name, _ in bars], fontsize=8)
    ax.invert_yaxis()  # the first method on top, as in the tables
    ax.set_xlim(0, max(rates, default=1) * 1.3)
    ax.xaxis.set_major_formatter(_tick_formatter())
    ax.set_xlabel("intact records/s")
    workers = bars[0][1][0] if bars else 0
    ax.set_title(f"{start_method}, {size_label(size)} payload, W={workers}")
    ax.grid(True, axis="x", alpha=0.3)


def _tick_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(_thousands)


# One distinct colour per method (tab10, tab20's light blue, black and grey for the ceilings),
# so no two lines share a colour; mplog's lines are drawn thicker.
COLORS: Dict[str, str] = {
    "mplog-rotating": "#1f77b4",
    "mplog-buffered": "#ff7f0e",
    "mplog": "#aec7e8",  # tab10 is used up: tab20's light blue, next to its rotating sibling
    "filehandler": "#2ca02c",
    "rotating": "#d62728",
    "queue": "#9467bd",
    "queue-rotating": "#8c564b",
    "mp-logging": "#e377c2",
    "clh": "#bcbd22",
    "loguru": "#17becf",
    "single": "#7f7f7f",
    "raw": "#000000",
}


def _panel_points(
    summaries: Sequence[Summary], size: int, start_method: str, name: str
) -> List[Tuple[int, float, bool]]:
    """(W, records/s, damaged) of one method's completed cells in one panel."""
    return sorted(
        (s.cell.workers, s.rate, bool(s.lost or s.duplicated or s.torn))
        for s in summaries
        if s.cell.size == size and s.cell.method == name and s.cell.start_method in (start_method, "-") and s.runs
    )


def _thousands(value: float, _position: Any) -> str:
    # 40k and 1.2M read faster than 4x10^4 on a plot's axis.
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    return f"{value / 1e3:.3g}k" if value >= 1e3 else f"{value:.3g}"


def _plot_panel(ax: Any, summaries: Sequence[Summary], size: int, start_method: str) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    for name, method in METHODS.items():
        points = _panel_points(summaries, size, start_method, name)
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(
            xs,
            ys,
            "--" if method.ceiling else "-",
            marker="o",
            color=COLORS[name],
            linewidth=3.0 if name.startswith("mplog") else 1.5,
            label=method.label,
        )
        lossy = [(x, y) for x, y, damaged in points if damaged]
        if lossy:
            ax.plot([x for x, _ in lossy], [y for _, y in lossy], "x", color="black", markersize=11, mew=2.5)
    workers = sorted({s.cell.workers for s in summaries if s.cell.size == size})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    # Ticks at 1, 2, 3 and 5 of each decade: a panel often spans less than one decade.
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, pos: ""))
    ax.set_xticks(workers)
    ax.set_xticklabels([str(w) for w in workers])
    ax.set_xlabel("worker processes (W)")
    ax.set_ylabel("intact records/s")
    ax.set_title(f"{start_method}, {size_label(size)} payload")
    ax.grid(True, which="both", alpha=0.3)


# --- command line --------------------------------------------------------------------------------------


def parse_size(text: str) -> Tuple[int, Optional[List[int]]]:
    """``100``, ``64KiB``, ``64K`` or ``1MiB``, optionally ``@W,W`` (worker counts for that size)."""
    size_text, _, workers_text = text.partition("@")
    match = re.fullmatch(r"(\d+)\s*([KkMm]i?[Bb]?|[Bb])?", size_text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100, 64KiB, 64KiB@4)")
    unit = (match.group(2) or "b")[0].lower()
    size = int(match.group(1)) * {"b": 1, "k": 1024, "m": 1024 * 1024}[unit]
    try:
        workers = [int(w) for w in workers_text.split(",")] if workers_text else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {workers_text!r}") from None
    return size, workers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--workers", type=int, nargs="+", help="worker counts W (default 1 2 4 8 16; --quick: 2 4)")
    add("--records", type=int, help="records per worker N (default 50000; --quick: 10000)")
    add("--big-records", type=int, default=2000, help=f"N for payloads over {BIG_PAYLOAD} B (default 2000)")
    add("--sizes", type=parse_size, nargs="+", help="payload sizes, SIZE[@W,W] (default 100 64KiB)")
    add("--start-methods", nargs="+", choices=multiprocessing.get_all_start_methods(), default=["fork", "spawn"])
    add("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="default: all")
    add("--repeat", type=int, help="runs per cell; the median is shown (default 3; --quick: 1)")
    add("--quick", action="store_true", help="W in {2, 4}, N = 10000, one run (explicit options still win)")
    add("--timeout", type=float, default=300.0, help="seconds before a trial's workers are killed (default 300)")
    add("--rst", action="store_true", help="print reStructuredText tables, ready for a README")
    add("--plot", nargs="?", const=str(RESULTS_DIR / "matrix.png"), help="write a PNG (default path: %(const)s)")
    add("--json", nargs="?", const=str(RESULTS_DIR / "matrix.json"), help="write raw results (default: %(const)s)")
    add("--from-json", metavar="PATH", help="print tables (and --plot) from a saved --json file; run nothing")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = {"workers": [2, 4], "records": 10_000, "repeat": 1} if args.quick else {}
    defaults = {"workers": [1, 2, 4, 8, 16], "records": 50_000, "repeat": 3, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.sizes is None:
        args.sizes = [(100, None), (64 * 1024, None)]
    # A size without @W runs at every --workers; duplicates would run twice.
    args.sizes = [(size, sorted(set(ws or args.workers))) for size, ws in dict(args.sizes).items()]
    args.methods = list(dict.fromkeys(args.methods))
    args.start_methods = list(dict.fromkeys(args.start_methods))
    counts = [args.records, args.big_records, args.repeat] + [w for _, ws in args.sizes for w in ws]
    if min(counts) < 1 or any(size < 1 for size, _ in args.sizes):
        parser.error("worker counts, records, repeat and sizes must be at least 1")
    return args


# --- main ------------------------------------------------------------------------------------------------


def run_matrix(args: argparse.Namespace, script: Path, env: Dict[str, str]) -> Dict[Cell, List[Dict[str, Any]]]:
    """Run every cell --repeat times, interleaved, so a noisy spell on the
    machine hits all methods rather than one method's whole series."""
    results: Dict[Cell, List[Dict[str, Any]]] = {cell: [] for cell in cells(args)}
    total = len(results) * args.repeat
    done = 0
    for run in range(args.repeat):
        for cell in cells(args, run):
            done += 1
            reason = skip_reason(cell)
            if reason is not None:
                results[cell].append({"status": reason})
                continue
            spec = {
                "method": cell.method,
                "start_method": cell.start_method,
                "workers": cell.workers,
                "records": records_for(cell.size, args),
                "size": cell.size,
                "timeout": args.timeout,
            }
            # The last trial's dirty pages go to disk now, not during this one.
            os.sync()
            trial = run_in_subprocess(script, spec, env)
            results[cell].append(trial)
            progress(done, total, run, cell, spec, trial)
    return results


def progress(done: int, total: int, run: int, cell: Cell, spec: Dict[str, Any], trial: Dict[str, Any]) -> None:
    # On stderr, so stdout holds only the tables.
    if "wall" in trial:
        intact = cell.workers * spec["records"] - trial["lost"]
        what = (
            f"{intact / trial['wall']:>10,.0f} rec/s {trial['wall']:6.2f} s {trial['us_per_call']:6.1f} µs/call "
            f"cpu {trial['cpu']:6.2f} s  lost/dup/torn {trial['lost']}/{trial['duplicated']}/{trial['torn']}"
        )
    else:
        what = trial["status"]
    notes = "".join(f"\n    {note[:400]}" for note in trial.get("problems", []))
    print(
        f"[{done}/{total}] run {run + 1} {size_label(cell.size):>6} W={cell.workers:<2} {cell.start_method:<6} "
        f"{METHODS[cell.method].label:<32} {what}{notes}",
        file=sys.stderr,
        flush=True,
    )


def _plain(value: Any) -> Any:
    # NaN (a cell with no completed run) is not JSON: write null.
    return None if isinstance(value, float) and value != value else value


def write_json(
    path: Path, args: argparse.Namespace, snapshot: Dict[str, str], results: Any, summaries: Any, elapsed: float
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "mplog": snapshot,
        "elapsed_seconds": round(elapsed, 1),
        "args": {name: getattr(args, name) for name in SAVED_ARGS},
        "trials": [{"cell": cell._asdict(), "runs": runs} for cell, runs in results.items()],
        "summaries": [{**{k: _plain(v) for k, v in s._asdict().items()}, "cell": s.cell._asdict()} for s in summaries],
        # One entry per table row: a ceiling appears once per start method.
        "ratios": [
            {
                **cell._asdict(),
                "start_method": start_method,
                **{f"vs_{name}": _plain(value) for name, value in zip(REFERENCES, values)},
            }
            for start_method in args.start_methods
            for cell, values in ratios(summaries, start_method).items()
        ],
    }
    path.write_text(json.dumps(document, indent=1))
    print(f"raw results written to {path}", file=sys.stderr)


# What a --json file keeps of the command line, so --from-json can rebuild the report.
SAVED_ARGS = ("workers", "records", "big_records", "sizes", "start_methods", "methods", "repeat", "timeout")


def load_json(path: Path, args: argparse.Namespace) -> Tuple[Dict[str, str], Dict[Cell, List[Dict[str, Any]]], float]:
    """Read a --json file back: its mplog snapshot, its trials and its run time.

    The matrix options in ``args`` are replaced by the saved ones; output
    options (--rst, --plot) stay as given.
    """
    document = json.loads(path.read_text())
    for name in SAVED_ARGS:
        setattr(args, name, document["args"][name])
    args.sizes = [(size, list(workers)) for size, workers in args.sizes]
    results = {Cell(**trial["cell"]): trial["runs"] for trial in document["trials"]}
    return document["mplog"], results, float(document.get("elapsed_seconds") or "nan")


def report(
    args: argparse.Namespace, snapshot: Dict[str, str], results: Dict[Cell, List[Dict[str, Any]]], elapsed: float
) -> int:
    """Print the tables and notes, write the JSON and plot; the exit status."""
    summaries = [summarise(cell, records_for(cell.size, args), runs) for cell, runs in results.items()]
    print(describe(args, snapshot))
    print_tables(summaries, args)
    print_notes(summaries, args)
    print()
    if elapsed == elapsed:  # a --json file written before run times were saved has none
        print(f"Total run time: {elapsed / 60:.1f} min ({elapsed:.0f} s).")
    if args.json:
        write_json(Path(args.json), args, snapshot, results, summaries, elapsed)
    if args.plot:
        plot(summaries, args, Path(args.plot))
    mplog_bad = any(
        s.lost or s.duplicated or s.torn or s.failures for s in summaries if s.cell.method.startswith("mplog")
    )
    return 1 if mplog_bad else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        snapshot, results, elapsed = load_json(Path(args.from_json), args)
        args.json = None  # the file read is the record; do not rewrite it
        return report(args, snapshot, results, elapsed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mplog-matrix-snapshot-") as snapshot_dir:
        snapshot = snapshot_mplog(Path(snapshot_dir))
        # Trials run a copy of this script too: editing it mid-run changes nothing.
        script = Path(snapshot_dir, "matrix.py")
        shutil.copyfile(__file__, script)
        shutil.copyfile(HERE / "workload.py", Path(snapshot_dir, "workload.py"))
        # Every spawned worker imports it: compiled once, as mplog's copy is.
        compileall.compile_file(str(Path(snapshot_dir, "workload.py")), quiet=1)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([snapshot_dir, os.environ.get("PYTHONPATH", "")]))
        results = run_matrix(args, script, env)
    return report(args, snapshot, results, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
