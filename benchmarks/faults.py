#!/usr/bin/env python3
"""Run the same process faults against several multi-process logging methods.

This is the script behind the fault-comparison table in the README (it is a
benchmark, not a test: it measures the peers too, and they are expected to fail).
Every record carries a worker id and a sequence number and is written as one
line of known length, so reading the log file back tells exactly which records
were lost, duplicated or torn.

Methods:

* ``mplog``: ``mplog.setup(FileHandler)``; fork children inherit it, spawn
  children call ``mplog.initializer``.
* ``stdlib-queue``: the logging cookbook's ``multiprocessing.Queue`` +
  ``QueueHandler`` in the workers + ``QueueListener`` in the parent.
* ``loguru``: ``logger.add(file, enqueue=True)``.
* ``concurrent-log-handler``: a ``ConcurrentRotatingFileHandler`` in every process.
* ``multiprocessing-logging``: ``install_mp_handler()`` around a FileHandler.

Scenarios (``--scenarios``):

* ``kill``: 4 workers log in a tight loop (200 B records, then 64 KiB
  records); one of them is SIGKILLed at a random moment, ``--trials`` times.
  A trial *froze* if the other workers had not exited ``--timeout`` seconds after
  the kill, or if the parent's stop/drain did not return within
  ``--stop-timeout`` seconds. The random moment (``--kill-at``): by default a
  delay drawn uniformly from the first 70 % of the time the victim needs to log
  all its records and exit (measured by one run without a kill per method and
  size; a trial whose victim finished first is run again with a narrower
  window, so every counted trial is a real kill). ``--kill-at records`` kills
  it instead once it has logged a random number (up to 70 %) of its records:
  while every worker is writing flat out, which is the worst case for the
  queue-based methods, whose feeder threads then all compete for the pipe.
* ``exit``: a child logs 1,000 records, then calls ``os._exit(0)``.
* ``terminate``: ``Pool(4)`` tasks log 1,000 records each; ``pool.terminate()``
  as soon as the results are back.
* ``raw-fork``: the parent logs a record, then ``os.fork()``; the child logs 100
  records and calls ``os._exit(0)`` (as gunicorn and tornado workers do).
* ``spawn``: whether a spawn child's 100 records arrive at all.

Each trial's parent side runs in a process of its own (forked from this one)
that is killed by pid, with every process it started, when it overruns a
timeout: a hung peer can never hang this script. Each trial works in a fresh
temporary directory, removed afterwards (also mplog's socket directory and
concurrent-log-handler's lock file live there).

Usage::

    python3 -m venv /tmp/faults-venv
    /tmp/faults-venv/bin/pip install -r benchmarks/requirements-faults.txt
    /tmp/faults-venv/bin/python benchmarks/faults.py [--trials 30] [--rst]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import logging.handlers
import mmap
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

# Benchmark the working tree's mplog, not an installed copy. At module level so
# that spawn children, which re-import this file, find it too.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKERS = 4
LOG_NAME = "faults.log"
SMALL = 200  # bytes per record line (without the newline)
LARGE = 64 * 1024
# Records per worker in the kill scenario: enough for the victim to be busy
# when it is killed, few enough to keep a 64 KiB trial's file near 40 MB.
KILL_RECORDS = {SMALL: 2000, LARGE: 150}
# The kill comes within the first KILL_SHARE % of the victim's records (or
# time): the parent polls, and on 2 busy cores it may see the victim's
# progress late; the margin keeps the victim from finishing first.
KILL_SHARE = 70
RETRIES = 8  # --kill-at time: new tries for a trial whose victim finished first
EXIT_RECORDS = 1000
TERMINATE_RECORDS = 1000
FORK_RECORDS = 100
SPAWN_RECORDS = 100
PARENT_WID = 100  # records the parent itself logs; never counted as expected
# Scheduling only (what is measured is decided by the timeouts): a trial whose
# workers have not finished after FOREGROUND_WORKERS seconds, or whose stop has
# not returned after FOREGROUND_STOP seconds, is watched in the background while
# the next trial runs. A healthy trial is done well within both; a frozen one
# would otherwise keep the machine idle for its whole timeout (and
# multiprocessing-logging's close() waits 5 s whenever a record went missing).
FOREGROUND_WORKERS = 2.5
FOREGROUND_STOP = 0.3
MAX_PENDING = 12
# Generous allowance for a runner's own setup (imports, forks) before its
# worker timeout starts; only a runner stuck outside any timeout hits it.
SETUP_ALLOWANCE = 30.0

_log = logging.getLogger("faults")
_PROGRESS = struct.Struct("q")
_RECORD = re.compile(rb"<<w(\d+) s(\d+) ~*>>")


def make_line(wid: int, seq: int, size: int) -> str:
    """One record's text: ``size`` characters, self-checking by its length."""
    head = f"<<w{wid} s{seq} "
    return head + "~" * (size - len(head) - 2) + ">>"


# --------------------------------------------------------------------------
# Methods: each sets up logging in a trial's parent and in its children.
# --------------------------------------------------------------------------


def _file_handler(path: str) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _install_root(handler: logging.Handler) -> None:
    """Make ``handler`` the root logger's only handler, at INFO.

    Inherited handlers are removed but not closed: in a forked child they are
    the parent's, and closing them here could flush the parent's buffers.
    """
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


class Method:
    """How one logging method is set up, used and stopped."""

    name = ""
    module: Optional[str] = None  # importable module the method needs
    spawn_supported = True

    def available(self) -> bool:
        return self.module is None or importlib.util.find_spec(self.module) is not None

    def start(self, path: str, start_method: str) -> None:
        """Set up logging to ``path`` in the trial's parent process."""
        raise NotImplementedError

    def child_init(self) -> None:
        """Run first in every fork child (Process target, Pool initializer)."""

    def log(self, message: str) -> None:
        _log.info(message)

    def stop(self) -> None:
        """What the parent does at the end: drain and close."""
        raise NotImplementedError

    def spawn_payload(self) -> Any:
        """What a spawn child is given to set up its logging."""
        return None

    def spawn_init(self, payload: Any) -> None:
        """Set up logging in a spawn child from ``spawn_payload()``."""
        raise NotImplementedError


class MplogMethod(Method):
    name = "mplog"

    def start(self, path: str, start_method: str) -> None:
        import mplog

        self._session = mplog.setup(_file_handler(path), level="INFO")

    def stop(self) -> None:
        self._session.stop()

    def spawn_payload(self) -> Any:
        import mplog

        return mplog.initializer

    def spawn_init(self, payload: Any) -> None:
        payload()


class StdlibQueueMethod(Method):
    name = "stdlib-queue"

    def start(self, path: str, start_method: str) -> None:
        self._queue = mp.get_context(start_method).Queue()
        self._handler = _file_handler(path)
        self._listener = logging.handlers.QueueListener(self._queue, self._handler)
        self._listener.start()
        # Fork children inherit this; the cookbook's worker_configurer does the same.
        _install_root(logging.handlers.QueueHandler(self._queue))

    def stop(self) -> None:
        self._listener.stop()
        self._handler.close()

    def spawn_payload(self) -> Any:
        return self._queue  # allowed as a Process argument (not as a Pool task's)

    def spawn_init(self, payload: Any) -> None:
        _install_root(logging.handlers.QueueHandler(payload))


class LoguruMethod(Method):
    name = "loguru"
    module = "loguru"

    def start(self, path: str, start_method: str) -> None:
        from loguru import logger

        logger.remove()  # the default stderr sink
        logger.add(path, format="{message}", enqueue=True, context=start_method)
        self._logger = logger

    def log(self, message: str) -> None:
        self._logger.info(message)

    def stop(self) -> None:
        self._logger.remove()  # joins the writer thread after it drains the queue

    def spawn_payload(self) -> Any:
        return self._logger  # loguru's documented way for spawn children

    def spawn_init(self, payload: Any) -> None:
        self._logger = payload


class ConcurrentLogHandlerMethod(Method):
    name = "concurrent-log-handler"
    module = "concurrent_log_handler"

    def _new_handler(self) -> logging.Handler:
        from concurrent_log_handler import ConcurrentRotatingFileHandler

        handler = ConcurrentRotatingFileHandler(self._path, "a", maxBytes=0, backupCount=0)
        handler.setFormatter(logging.Formatter("%(message)s"))
        return handler

    def start(self, path: str, start_method: str) -> None:
        self._path = path
        self._parent_handler = self._new_handler()
        _install_root(self._parent_handler)

    def child_init(self) -> None:
        _install_root(self._new_handler())  # one handler per process, as documented

    def stop(self) -> None:
        self._parent_handler.close()

    def spawn_payload(self) -> Any:
        return self._path

    def spawn_init(self, payload: Any) -> None:
        self._path = payload
        self.child_init()


class MultiprocessingLoggingMethod(Method):
    name = "multiprocessing-logging"
    module = "multiprocessing_logging"

    def start(self, path: str, start_method: str) -> None:
        import multiprocessing_logging

        # install_mp_handler() checks the global start method, not a context's;
        # forcing it matters only on Pythons whose default is not fork.
        mp.set_start_method(start_method, force=True)
        _install_root(_file_handler(path))
        multiprocessing_logging.install_mp_handler()

    def stop(self) -> None:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()  # waits up to 5 s for its receiving thread


METHODS: Dict[str, Callable[[], Method]] = {
    cls.name: cls
    for cls in (
        MplogMethod,
        StdlibQueueMethod,
        LoguruMethod,
        ConcurrentLogHandlerMethod,
        MultiprocessingLoggingMethod,
    )
}


# --------------------------------------------------------------------------
# Child process bodies (top level, so that spawn and Pool can find them).
# --------------------------------------------------------------------------


def _kill_worker(method: Method, wid: int, count: int, size: int, progress: mmap.mmap) -> None:
    method.child_init()
    for seq in range(count):
        method.log(make_line(wid, seq, size))
        # Lets the parent see when the victim has started (shared memory: no
        # lock a killed process could leave held).
        _PROGRESS.pack_into(progress, wid * _PROGRESS.size, seq + 1)


def _exit_child(method: Method, count: int) -> None:
    method.child_init()
    for seq in range(count):
        method.log(make_line(0, seq, SMALL))
    os._exit(0)


_pool_method: Optional[Method] = None


def _pool_init(method: Method) -> None:
    global _pool_method
    _pool_method = method
    method.child_init()


def _pool_task(task: int) -> int:
    assert _pool_method is not None
    for seq in range(TERMINATE_RECORDS):
        _pool_method.log(make_line(task, seq, SMALL))
    return task


def _spawn_child(method_name: str, payload: Any, count: int, error_path: str) -> None:
    try:
        method = METHODS[method_name]()
        method.spawn_init(payload)
        for seq in range(count):
            method.log(make_line(0, seq, SMALL))
    except BaseException as exc:
        # The parent reports this text; the child's stderr goes to a file.
        with open(error_path, "w") as out:
            out.write(f"{type(exc).__name__}: {exc}")
        raise


# --------------------------------------------------------------------------
# The trial runner: the parent side of one trial, in a process of its own.
# --------------------------------------------------------------------------

Report = Callable[[Dict[str, Any]], None]


def _join_all(processes: Sequence[Any], timeout: float) -> List[int]:
    """Join ``processes`` within ``timeout`` seconds in all; SIGKILL and reap the
    ones still running. Returns their indexes."""
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [i for i, process in enumerate(processes) if process.exitcode is None]
    for i in hung:
        _kill_pid(processes[i].pid)
        processes[i].join(5)
    return hung


def _wait_pid(pid: int, timeout: float) -> Optional[int]:
    """waitpid with a timeout: the exit status, or None after SIGKILLing it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    _kill_pid(pid)
    os.waitpid(pid, 0)
    return None


def _stop(method: Method, report: Report) -> None:
    report({"phase": "stopping"})
    started = time.monotonic()
    method.stop()
    report({"phase": "stopped", "seconds": time.monotonic() - started})


def run_kill(method: Method, params: Dict[str, Any], directory: str, report: Report) -> None:
    size, count, timeout = params["size"], params["count"], params["timeout"]
    victim = params["victim"]
    kill_at, delay = params.get("kill_at"), params.get("delay")  # neither: calibration
    method.start(os.path.join(directory, LOG_NAME), "fork")
    progress = mmap.mmap(-1, WORKERS * _PROGRESS.size)
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=_kill_worker, args=(method, wid, count, size, progress)) for wid in range(WORKERS)]
    for worker in workers:
        worker.start()

    def victim_progress() -> int:
        return _PROGRESS.unpack_from(progress, victim * _PROGRESS.size)[0]

    target = workers[victim]
    deadline = time.monotonic() + timeout
    while victim_progress() == 0 and target.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.0005)
    started = time.monotonic()
    # Polling, not a signal from the victim: the kill must come from outside,
    # at a moment the victim does not choose.
    if kill_at is not None:
        until = deadline
        while victim_progress() < kill_at and target.exitcode is None and time.monotonic() < until:
            time.sleep(0.0005)
    else:
        until = started + delay if delay is not None else deadline
        while target.exitcode is None and time.monotonic() < until:
            time.sleep(0.0005)
    victim_seconds = time.monotonic() - started  # its whole run, if it is over
    progress_at_kill = victim_progress()
    # exitcode reaps a finished victim, so only a live one is killed: from
    # here on its pid stays reserved (as a zombie at worst) and cannot be reused.
    if (kill_at is not None or delay is not None) and target.exitcode is None:
        _kill_pid(target.pid)
    hung = _join_all(workers, timeout)
    report(
        {
            "phase": "workers",
            "at": time.monotonic(),
            "victim": victim,
            "victim_seconds": victim_seconds,
            "progress_at_kill": progress_at_kill,
            "hung": hung,
            "exitcodes": [worker.exitcode for worker in workers],
        }
    )
    _stop(method, report)


def run_exit(method: Method, params: Dict[str, Any], directory: str, report: Report) -> None:
    method.start(os.path.join(directory, LOG_NAME), "fork")
    child = mp.get_context("fork").Process(target=_exit_child, args=(method, EXIT_RECORDS))
    child.start()
    report({"phase": "workers", "at": time.monotonic(), "hung": _join_all([child], params["timeout"])})
    _stop(method, report)


def run_terminate(method: Method, params: Dict[str, Any], directory: str, report: Report) -> None:
    method.start(os.path.join(directory, LOG_NAME), "fork")
    pool = mp.get_context("fork").Pool(WORKERS, initializer=_pool_init, initargs=(method,))
    hung: List[int] = []
    try:
        pool.map_async(_pool_task, range(WORKERS), chunksize=1).get(params["timeout"])
    except mp.TimeoutError:
        hung = [-1]
    pool.terminate()  # what `with Pool(...)` does on leaving the block
    report({"phase": "workers", "at": time.monotonic(), "hung": hung})
    _stop(method, report)


def run_raw_fork(method: Method, params: Dict[str, Any], directory: str, report: Report) -> None:
    method.start(os.path.join(directory, LOG_NAME), "fork")
    method.log(make_line(PARENT_WID, 0, SMALL))  # the parent has used its logging
    pid = os.fork()
    if pid == 0:
        try:
            for seq in range(FORK_RECORDS):
                method.log(make_line(0, seq, SMALL))
        finally:
            os._exit(0)
    status = _wait_pid(pid, params["timeout"])
    report({"phase": "workers", "at": time.monotonic(), "hung": [0] if status is None else []})
    _stop(method, report)


def run_spawn(method: Method, params: Dict[str, Any], directory: str, report: Report) -> None:
    method.start(os.path.join(directory, LOG_NAME), "spawn")
    error_path = os.path.join(directory, "child-error.txt")
    child = mp.get_context("spawn").Process(
        target=_spawn_child, args=(method.name, method.spawn_payload(), SPAWN_RECORDS, error_path)
    )
    child.start()
    # A spawn child re-imports this script first: allow for that.
    hung = _join_all([child], params["timeout"] + 10)
    info: Dict[str, Any] = {"phase": "workers", "at": time.monotonic(), "hung": hung, "exitcodes": [child.exitcode]}
    if os.path.exists(error_path):
        with open(error_path) as text:
            info["child_error"] = text.read()
    report(info)
    _stop(method, report)


SCENARIO_RUNNERS: Dict[str, Callable[[Method, Dict[str, Any], str, Report], None]] = {
    "kill": run_kill,
    "exit": run_exit,
    "terminate": run_terminate,
    "raw-fork": run_raw_fork,
    "spawn": run_spawn,
}


def _runner_main(conn: Any, scenario: str, method_name: str, params: Dict[str, Any], directory: str) -> None:
    """Body of a trial's runner process. Always leaves through os._exit: the
    normal exit path (atexit, multiprocessing's finalizers) is exactly what
    hangs with some peers, and the caller already measures that with timeouts."""
    status = 1
    try:
        # Keep the table on stdout clean: whatever the trial prints goes to a file.
        with open(os.path.join(directory, "stderr.txt"), "ab") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
        # Temporary files of the trial (mplog's socket, spawn's helpers) go in
        # its directory, so removing that directory removes them all.
        tempfile.tempdir = directory
        os.environ["TMPDIR"] = directory
        try:
            SCENARIO_RUNNERS[scenario](METHODS[method_name](), params, directory, conn.send)
            status = 0
        except BaseException as exc:
            traceback.print_exc()
            conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        # Normally every child is reaped by now; after an error, workers may
        # still run, and once this process is gone nobody could find them.
        for child in _children_of(os.getpid()):
            _kill_tree(child)
        os._exit(status)


# --------------------------------------------------------------------------
# The driver side: start runners, watch their deadlines, read the files back.
# --------------------------------------------------------------------------


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _children_of(pid: int) -> List[int]:
    """Every live process whose parent is ``pid`` (from /proc; this kernel
    has no /proc/PID/task/TID/children)."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                # The command name may contain spaces: fields follow its ')'.
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants, children first (while they are still
    recognisably its children, so no recycled pid is ever hit)."""
    for child in _children_of(pid):
        _kill_tree(child)
    _kill_pid(pid)


@dataclass
class Scan:
    """What the log file of one trial held."""

    seqs: Dict[int, Set[int]] = field(default_factory=dict)
    duplicated: int = 0
    torn: int = 0
    notices: int = 0
    torn_examples: List[str] = field(default_factory=list)
    notice_examples: List[str] = field(default_factory=list)


def scan_log(path: str, size: int) -> Scan:
    """Read a trial's log: whole records, duplicates, torn lines, and lines the
    library wrote itself (notices, e.g. mplog reporting a cut-off frame)."""
    scan = Scan()
    try:
        with open(path, "rb") as log:
            data = log.read()
    except FileNotFoundError:
        return scan
    for line in data.split(b"\n"):
        if line:
            _scan_line(scan, line, size)
    return scan


def _scan_line(scan: Scan, line: bytes, size: int) -> None:
    if not (len(line) == size and _RECORD.fullmatch(line)):
        if b"<<" in line or b">>" in line or b"~~" in line:
            scan.torn += 1
            examples = scan.torn_examples
        else:
            scan.notices += 1
            examples = scan.notice_examples
        if len(examples) < 3:
            examples.append(_shorten(line))
    # A torn line may still hold whole records glued to it: count those as
    # delivered, so a tear is not reported as a loss as well.
    for match in _RECORD.finditer(line):
        if match.end() - match.start() != size:
            continue
        wid, seq = int(match.group(1)), int(match.group(2))
        seen = scan.seqs.setdefault(wid, set())
        if seq in seen:
            scan.duplicated += 1
        seen.add(seq)


def _shorten(line: bytes, keep: int = 60) -> str:
    text = line.decode("utf-8", "replace")
    text = re.sub(r"~{6,}", lambda m: f"~×{len(m.group(0))}", text)
    return text if len(text) <= 2 * keep else f"{text[:keep]}…{text[-keep:]}"


def missing(scan: Scan, wid: int, count: int) -> int:
    """How many of records 0..count-1 of worker ``wid`` are absent."""
    seen = scan.seqs.get(wid, set())
    return sum(1 for seq in range(count) if seq not in seen)


@dataclass
class Trial:
    """One run of one scenario for one method."""

    scenario: str
    method: str
    index: int
    params: Dict[str, Any]
    directory: str
    process: Any
    conn: Any
    info: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    runner_hung: bool = False  # stuck outside any of its own timeouts
    parent_hung: bool = False  # the method's stop did not return in time
    stop_seconds: Optional[float] = None
    workers_deadline: float = 0.0
    stop_deadline: float = 0.0
    done: bool = False
    eof: bool = False
    scan: Scan = field(default_factory=Scan)
    stderr: str = ""

    def handle(self, message: Dict[str, Any]) -> None:
        if message.get("phase") == "workers":
            self.info = message
            # CLOCK_MONOTONIC is shared by all processes: the stop's timeout
            # runs from when the runner began it, however late we look.
            self.stop_deadline = message["at"] + self.params["stop_timeout"]
        if message.get("phase") == "stopped":
            self.stop_seconds = message["seconds"]
        if "error" in message:
            self.error = message["error"]

    def receive(self, until: float, wanted: Callable[["Trial"], bool]) -> bool:
        """Handle messages until ``wanted(self)``, the runner's end, or ``until``."""
        while not wanted(self):
            remaining = until - time.monotonic()
            if self.eof:  # nothing more can come: just let the time pass, gently
                time.sleep(min(max(0.0, remaining), 0.05))
                return False
            try:
                if not self.conn.poll(max(0.0, remaining)):
                    return False
                self.handle(self.conn.recv())
            except (EOFError, OSError):
                self.eof = True  # every process holding the pipe has exited
                return wanted(self)
            except Exception as exc:  # a message cut off by a kill
                self.error = self.error or f"unreadable runner message: {exc!r}"
                return False
        return True


class Driver:
    """Runs trials one at a time, letting slow stops finish in the background."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ctx = mp.get_context("fork")
        self.pending: List[Trial] = []
        self.root = tempfile.mkdtemp(prefix="mplog-faults-")
        self.kept: List[str] = []
        self.began = time.monotonic()

    def close(self) -> None:
        for trial in self.pending:
            _kill_tree(trial.process.pid)
            trial.process.join(5)
        self.pending = []
        shutil.rmtree(self.root, ignore_errors=True)

    def run(self, scenario: str, method: str, index: int, params: Dict[str, Any]) -> Trial:
        """Start a trial and follow it for a while; if it is not over by then,
        it goes on in the background (see :meth:`finish`)."""
        directory = tempfile.mkdtemp(prefix=f"{index}-", dir=self.root)
        reader, writer = self.ctx.Pipe(duplex=False)
        sys.stdout.flush()
        sys.stderr.flush()
        process = self.ctx.Process(
            # Not a daemon: a daemon may not start children. Every runner is
            # joined or killed by pid before this script exits anyway.
            target=_runner_main,
            args=(writer, scenario, method, params, directory),
        )
        process.start()
        writer.close()
        trial = Trial(scenario, method, index, params, directory, process, reader)
        trial.workers_deadline = time.monotonic() + SETUP_ALLOWANCE + 2 * params["timeout"]
        now = time.monotonic()
        self._advance(trial, now + FOREGROUND_WORKERS, FOREGROUND_STOP)
        if not trial.done:
            self.pending.append(trial)
            self._poll_pending(block=len(self.pending) > MAX_PENDING)
        return trial

    def complete(self, trial: Trial) -> None:
        """Wait for one trial, up to its deadlines."""
        while not trial.done:
            self._advance(trial, trial.workers_deadline, self.args.stop_timeout)
        self.pending = [t for t in self.pending if not t.done]

    def finish(self) -> None:
        """Wait for every trial still going on, each up to its deadlines."""
        while self.pending:
            self._poll_pending(block=True)

    def _poll_pending(self, block: bool) -> None:
        for trial in list(self.pending):
            self._advance(trial, time.monotonic(), 0.0)
        if block and self.pending:
            oldest = self.pending[0]
            self._advance(oldest, oldest.workers_deadline, self.args.stop_timeout)
        self.pending = [trial for trial in self.pending if not trial.done]

    def _advance(self, trial: Trial, workers_until: float, stop_wait: float) -> None:
        """Follow ``trial`` until its workers are done (at most until
        ``workers_until``), then its stop for at most ``stop_wait`` seconds;
        end it when it is over or past a deadline."""
        if not trial.info and trial.error is None:
            until = min(workers_until, trial.workers_deadline)
            if not trial.receive(until, lambda t: bool(t.info) or t.error is not None):
                if time.monotonic() >= trial.workers_deadline:
                    trial.runner_hung = True
                    trial.error = "the runner overran its deadline before its workers finished"
                    self._end(trial, kill=True)
                elif not trial.process.is_alive():
                    self._end(trial, kill=False)
                return
            if trial.error is not None and not trial.info:
                self._end(trial, kill=False)
                return
        until = min(trial.stop_deadline, time.monotonic() + stop_wait)
        stopped = trial.receive(until, lambda t: t.stop_seconds is not None or t.error is not None)
        if stopped or not trial.process.is_alive():
            self._end(trial, kill=False)
        elif time.monotonic() >= trial.stop_deadline:
            trial.parent_hung = True
            self._end(trial, kill=True)

    def _end(self, trial: Trial, kill: bool) -> None:
        if kill:
            _kill_tree(trial.process.pid)
        trial.process.join(10)
        if trial.process.is_alive():  # left os._exit hanging?
            _kill_tree(trial.process.pid)
            trial.process.join(5)
        trial.conn.close()
        trial.scan = scan_log(os.path.join(trial.directory, LOG_NAME), trial.params["size"])
        try:
            with open(os.path.join(trial.directory, "stderr.txt"), errors="replace") as text:
                trial.stderr = text.read(4000)
        except OSError:
            pass
        trial.done = True
        if self.args.verbose:
            found = anomalies(trial)
            stop = "" if trial.stop_seconds is None else f", stop took {trial.stop_seconds:.1f} s"
            print(
                f"    {trial.scenario} {trial.method} #{trial.index}{stop}: {'; '.join(found) or 'ok'}",
                file=sys.stderr,
                flush=True,
            )
        if self.args.keep and anomalies(trial):
            kept = tempfile.mkdtemp(prefix="mplog-faults-kept-")
            shutil.move(trial.directory, kept)
            self.kept.append(kept)
        else:
            shutil.rmtree(trial.directory, ignore_errors=True)


# --------------------------------------------------------------------------
# Accounting per trial, and the table.
# --------------------------------------------------------------------------


def hung(trial: Trial) -> bool:
    """Logging froze: workers did not finish, or the parent's stop did not return."""
    return bool(trial.info.get("hung")) or trial.parent_hung or trial.runner_hung


def lost_records(trial: Trial) -> Tuple[int, int]:
    """(records lost, records expected) for one trial."""
    scenario, scan = trial.scenario, trial.scan
    if scenario == "kill":
        count, victim = trial.params["count"], trial.info.get("victim", -1)
        lost = total = 0
        for wid in range(WORKERS):
            if wid == victim:
                # What the victim sent before it died is unknowable; what is
                # missing before its last delivered record was lost.
                seen = scan.seqs.get(wid, set())
                expected = max(seen) + 1 if seen else 0
            else:
                expected = count
            lost += missing(scan, wid, expected)
            total += expected
        return lost, total
    expected = {
        "exit": {0: EXIT_RECORDS},
        "terminate": {task: TERMINATE_RECORDS for task in range(WORKERS)},
        "raw-fork": {0: FORK_RECORDS},
        "spawn": {0: SPAWN_RECORDS},
    }[scenario]
    return sum(missing(scan, wid, count) for wid, count in expected.items()), sum(expected.values())


def anomalies(trial: Trial) -> List[str]:
    """What went wrong in a trial, in words (used for the notes on mplog)."""
    found = []
    if trial.error:
        found.append(f"error: {trial.error}")
    if trial.info.get("hung"):
        found.append(f"workers hung: {trial.info['hung']}")
    if trial.parent_hung:
        found.append(f"parent's stop did not return within {trial.params['stop_timeout']:.0f} s")
    if trial.runner_hung:
        found.append("runner hung")
    lost, total = lost_records(trial)
    if lost:
        found.append(f"{lost} of {total} records lost")
    if trial.scan.duplicated:
        found.append(f"{trial.scan.duplicated} duplicated")
    if trial.scan.torn:
        found.append(f"{trial.scan.torn} torn lines, e.g. {trial.scan.torn_examples}")
    return found


def percent(part: float, whole: float) -> str:
    value = 100.0 * part / whole if whole else 0.0
    return f"{value:.0f}%" if value >= 1 or value == 0 else f"{value:.1g}%"


def kill_cells(trials: List[Trial]) -> Dict[str, str]:
    """The four kill rows' cells for one method and record size."""
    if trials and trials[0].error and all(t.error == trials[0].error for t in trials):
        return dict.fromkeys(("froze", "parent", "torn", "lost"), f"error: {trials[0].error}")
    frozen = [t for t in trials if hung(t)]
    parent = [t for t in trials if t.parent_hung]
    lost = sum(lost_records(t)[0] for t in trials if not hung(t))
    return {
        "froze": f"{len(frozen)}/{len(trials)} ({percent(len(frozen), len(trials))})",
        "parent": f"{len(parent)}/{len(trials)}",
        "torn": str(sum(t.scan.torn for t in trials)),
        "lost": str(lost),
    }


def loss_cell(trials: List[Trial]) -> str:
    """'x%' or 'min–max%' lost over the repeats, with any hang said."""
    if all(t.error for t in trials):
        return f"error: {trials[0].error}"
    shares = [lost_records(t) for t in trials if not t.error]
    numbers = [100.0 * lost / total for lost, total in shares]
    low, high = percent(min(numbers), 100), percent(max(numbers), 100)
    cell = low if low == high else f"{low[:-1]}–{high}"
    # Say which side hung: it is a different failure for a user.
    children = sum(1 for t in trials if t.info.get("hung") or t.runner_hung)
    stops = sum(1 for t in trials if t.parent_hung)
    said = [f"{what} hung {n}/{len(trials)}" for what, n in (("child", children), ("stop", stops)) if n]
    return f"{cell} ({', '.join(said)})" if said else cell


def spawn_cell(trials: List[Trial]) -> str:
    trial = trials[0]
    error = trial.info.get("child_error") or trial.error
    if error:
        return f"no: {error}"
    lost, total = lost_records(trial)
    if hung(trial):
        return "no: hung"
    return "yes" if lost == 0 else f"no: {percent(lost, total)} lost"


ROW_TITLES = {
    "froze": "logging froze (workers or parent hung)",
    "parent": "of which the parent's stop hung",
    "torn": "torn lines",
    "lost": "records lost (trials that did not freeze)",
}


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def render(header: List[str], rows: List[List[str]], rst: bool) -> str:
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]

    def line(cells: List[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    if rst:
        rule = "  ".join("=" * width for width in widths)
        return "\n".join([rule, line(header), rule] + [line(row) for row in rows] + [rule])
    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule] + [line(row) for row in rows])


# --------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------


def trial_seed(args: argparse.Namespace, *parts: Any) -> random.Random:
    # A str seed is hashed with SHA-512, so it is stable across runs.
    return random.Random(":".join(str(part) for part in (args.seed,) + parts))


@dataclass
class Cell:
    """The trials of one method in one row group (a scenario, or a kill size)."""

    group: str
    method: str
    trials: List[Trial] = field(default_factory=list)
    calibration: Optional[Trial] = None  # --kill-at time only
    retried: int = 0  # trials run again because the victim finished first


def victim_missed(trial: Trial) -> bool:
    """Whether the victim had finished (exit code 0) before the kill came."""
    codes = trial.info.get("exitcodes")
    return bool(codes) and codes[trial.info["victim"]] == 0


def run_kill_trials(driver: Driver, cell: Cell, size: int, args: argparse.Namespace) -> None:
    """``--trials`` kills of one method at one record size.

    With ``--kill-at time`` (the default) the victim dies after a random delay
    within the time it needs for all its records (measured by a run without a
    kill); a trial whose victim finished first is run again with the window
    narrowed to what that run took, so every counted trial is a real kill.
    With ``--kill-at records`` it dies once it has logged a random number of
    its records.
    """
    count = KILL_RECORDS[size]
    base = {"size": size, "count": count, "timeout": args.timeout, "stop_timeout": args.stop_timeout}
    window = 0.0
    if args.kill_at == "time":
        calibration = driver.run("kill", cell.method, -1, dict(base, victim=0))
        driver.complete(calibration)
        window = calibration.info.get("victim_seconds", 0.0) if not hung(calibration) else 0.0
        cell.calibration = calibration
    for index in range(args.trials):
        rng = trial_seed(args, "kill", size, cell.method, index)
        victim = rng.randrange(WORKERS)
        for attempt in range(1 + RETRIES):
            if args.kill_at == "records":
                params = dict(base, victim=victim, kill_at=rng.randint(1, count * KILL_SHARE // 100))
            else:
                params = dict(base, victim=victim, delay=rng.uniform(0.0, window * KILL_SHARE / 100))
            trial = driver.run("kill", cell.method, index, params)
            if not (trial.done and victim_missed(trial)) or args.kill_at == "records" or attempt == RETRIES:
                break
            window = min(window, trial.info["victim_seconds"])  # it can be this fast
            cell.retried += 1
        cell.trials.append(trial)


def run_loss_trials(driver: Driver, cell: Cell, scenario: str, args: argparse.Namespace) -> None:
    params = {"size": SMALL, "timeout": args.timeout, "stop_timeout": args.stop_timeout}
    repeats = 1 if scenario == "spawn" else args.repeats
    for index in range(repeats):
        cell.trials.append(driver.run(scenario, cell.method, index, params))


def kill_notes(cell: Cell) -> List[str]:
    """What a reader of the kill rows should know beyond the numbers."""
    notes = []
    where = f"{cell.method}, {cell.group}"
    missed = sum(1 for t in cell.trials if victim_missed(t))
    if missed:
        notes.append(f"{where}: in {missed} trial(s) the victim had finished before the kill")
    if cell.retried:
        notes.append(f"{where}: {cell.retried} trial(s) run again because the victim finished before the kill")
    notes += notice_notes(cell, where)
    if cell.calibration is not None:
        problems = anomalies(cell.calibration)
        if problems:
            notes.append(f"{where}: the calibration run, without a kill: {'; '.join(problems)}")
    errors = sorted({t.error for t in cell.trials if t.error and not t.runner_hung})
    if errors:
        notes.append(f"{where}: errors: {errors}")
    slow = [t.stop_seconds for t in cell.trials if t.stop_seconds is not None and t.stop_seconds >= 1.0]
    if slow:
        took = f"{min(slow):.1f}" if f"{min(slow):.1f}" == f"{max(slow):.1f}" else f"{min(slow):.1f}–{max(slow):.1f}"
        notes.append(f"{where}: the parent's stop took {took} s in {len(slow)} trial(s)")
    return notes


def notice_notes(cell: Cell, where: str) -> List[str]:
    """Lines a library wrote into the log itself (mplog says so when it discards
    a killed worker's cut-off record): neither records nor torn lines."""
    scans = [t.scan for t in cell.trials if t.scan.notices]
    if not scans:
        return []
    total = sum(scan.notices for scan in scans)
    example = scans[0].notice_examples[0]
    return [f"{where}: {total} line(s) written by the library itself in {len(scans)} trial(s), e.g. {example!r}"]


def table_rows(cells: List[Cell], methods: List[str], installed: Dict[str, bool]) -> List[List[str]]:
    """One row per kill measure and size, then one per loss scenario."""
    by_group: Dict[str, Dict[str, Cell]] = {}
    for cell in cells:
        by_group.setdefault(cell.group, {})[cell.method] = cell
    rows = []
    for group, members in by_group.items():
        if group in SCENARIO_TITLES:
            render_cell = spawn_cell if group == "spawn" else loss_cell
            row = [SCENARIO_TITLES[group]]
            for method in methods:
                row.append(render_cell(members[method].trials) if installed[method] else "not installed")
            rows.append(row)
            continue
        measures = {m: kill_cells(members[m].trials) for m in methods if installed[m]}
        for key, title in ROW_TITLES.items():
            row = [f"SIGKILL 1 of {WORKERS} workers, {group} records: {title}"]
            rows.append(row + [measures[m][key] if installed[m] else "not installed" for m in methods])
    return rows


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="SIGKILL trials per method and record size (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each loss scenario per method (default 3)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIO_RUNNERS), default=list(SCENARIO_RUNNERS))
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds workers get to finish (default 10)")
    parser.add_argument("--stop-timeout", type=float, default=15.0, help="seconds the parent's stop gets (default 15)")
    parser.add_argument(
        "--kill-at",
        choices=("records", "time"),
        default="time",
        help="kill the victim after a random delay (default) or a random number of its records",
    )
    parser.add_argument("--seed", default="mplog", help="seed of the random victims and kill moments")
    parser.add_argument("--rst", action="store_true", help="print a reStructuredText simple table")
    parser.add_argument("--keep", action="store_true", help="keep the directories of trials that went wrong")
    parser.add_argument("-v", "--verbose", action="store_true", help="say what each trial found")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.repeats < 1:
        parser.error("--trials and --repeats must be at least 1")
    return args


def run_all(driver: Driver, args: argparse.Namespace, methods: List[str], installed: Dict[str, bool]) -> List[Cell]:
    """Run every trial asked for; return them by cell, all finished."""
    cells: List[Cell] = []
    for scenario in [s for s in SCENARIO_RUNNERS if s in args.scenarios]:
        sizes = {size_label(size): size for size in (SMALL, LARGE)} if scenario == "kill" else {scenario: SMALL}
        for group, size in sizes.items():
            for method in methods:
                cell = Cell(group, method)
                cells.append(cell)
                if not installed[method]:
                    continue
                started = time.monotonic()
                if scenario == "kill":
                    run_kill_trials(driver, cell, size, args)
                else:
                    run_loss_trials(driver, cell, scenario, args)
                label = f"kill {group}" if scenario == "kill" else scenario
                print(
                    f"[{time.monotonic() - driver.began:6.1f} s] {label} {method}: {len(cell.trials)} trial(s) in "
                    f"{time.monotonic() - started:.1f} s ({len(driver.pending)} still finishing in the background)",
                    file=sys.stderr,
                    flush=True,
                )
    # Trials left in the background are all frozen or slow to stop: wait for
    # each up to its own deadline before counting anything.
    driver.finish()
    return cells


def report(cells: List[Cell], methods: List[str], installed: Dict[str, bool], args: argparse.Namespace) -> None:
    """Print the table, then what a reader should know about it."""
    print(render(["scenario"] + methods, table_rows(cells, methods, installed), args.rst))
    print()
    print(
        f"{args.trials} SIGKILL trials per cell (kill moment: random {args.kill_at}); "
        f"loss scenarios: {args.repeats} run(s) each (min–max shown); "
        f"workers' timeout {args.timeout:.0f} s, parent stop timeout {args.stop_timeout:.0f} s; "
        f"Python {sys.version.split()[0]}."
    )
    for cell in cells:
        if cell.group not in SCENARIO_TITLES:
            for note in kill_notes(cell):
                print(f"note: {note}")
    # Any loss, tear or hang of mplog's is a bug: show everything about it.
    for trial in [t for cell in cells if cell.method == "mplog" for t in cell.trials]:
        problems = anomalies(trial)
        if problems:
            print(f"mplog anomaly: {trial.scenario} #{trial.index} params={trial.params}: {'; '.join(problems)}")
            if trial.stderr.strip():
                print("  its stderr: " + trial.stderr.strip().replace("\n", "\n  "))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    methods = [name for name in METHODS if name in args.methods]
    installed = {name: METHODS[name]().available() for name in methods}
    driver = Driver(args)
    try:
        cells = run_all(driver, args, methods, installed)
    finally:
        driver.close()
    report(cells, methods, installed, args)
    print(f"{time.monotonic() - driver.began:.0f} s in all.")
    if driver.kept:
        print("kept for inspection: " + ", ".join(driver.kept))
    return 0


SCENARIO_TITLES: Dict[str, str] = {
    "exit": f"os._exit(0) after {EXIT_RECORDS:,} records: lost",
    "terminate": f"Pool({WORKERS}).terminate() after {TERMINATE_RECORDS:,} records a task: lost",
    "raw-fork": f"raw os.fork() child after the parent logged, {FORK_RECORDS} records: lost",
    "spawn": "spawn start method works",
}


if __name__ == "__main__":
    sys.exit(main())
