"""A Celery prefork worker (examples/celery) with mplog's one import, under
load, recycling its pool children and with one of them SIGKILLed: every
finished task has exactly one line in the user's rotating ``app.log`` and in
``--logfile``, none torn, and ``app.log`` is rotated as by a single writer.
The same worker without the import runs too, and reports what it loses."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Set

import pytest
from celery import Celery

from tests.conftest import WITHOUT_MPLOG_RUN_ONCE, requires
from tests.servers import descendants, stop_server, wait_for_line

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "celery"
MPLOG_LINE = "import mplog.integrations.celery  # noqa: F401  (the one line for mplog)\n"
TASKS = 5000
MAX_BYTES = 50_000  # about 35 rotations of app.log for 5,000 tasks
RECYCLE_AFTER = 400  # --max-tasks-per-child: each of 4 children is replaced about 3 times
DEADLINE = 90.0  # seconds for the worker to finish every task

TIMESTAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
RECORD_START = re.compile(rf"^{TIMESTAMP} \d+ [A-Z]+ \S+: ")
APP_LINE = re.compile(rf"^{TIMESTAMP} (\d+) INFO tasks: task n=(\d+)$")
LOGFILE_LINE = re.compile(rf"^\[{TIMESTAMP}: INFO/ForkPoolWorker-\d+\] tasks\.work\[[0-9a-f-]{{36}}\]: task n=(\d+)$")
# A record's time past a line's opening "[": two records torn into one line.
GLUED = re.compile(rf"^.{{2,}}{TIMESTAMP}")

pytestmark = [
    pytest.mark.framework,
    requires(shutil.which("redis-server") is not None, "needs redis-server (.ci/run installs it)"),
]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own on a free loopback port, stopped by its pid."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(tmp_path / "redis.txt", "wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_line(str(tmp_path / "redis.txt"), r"(Ready to accept connections)", timeout=15, process=process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_server(process, timeout=10)


@dataclass
class Outcome:
    """What one run of the worker left: which tasks finished, and the lines found."""

    succeeded: Set[int]
    app: Counter = field(default_factory=Counter)  # task n -> lines in app.log*
    logfile: Counter = field(default_factory=Counter)  # task n -> lines in --logfile
    torn: List[str] = field(default_factory=list)
    rotations: int = 0
    unlike_one_writer: List[str] = field(default_factory=list)  # backups a single writer would not have left
    kill_seen: bool = False  # the worker logged that its SIGKILLed child exited

    def lost(self, counts: Counter) -> int:
        """Finished tasks with no line in ``counts``."""
        return sum(1 for n in self.succeeded if counts[n] == 0)

    def summary(self) -> str:
        """One line for the test's output (and the README's table)."""
        return (
            f"{len(self.succeeded)} tasks finished; app.log: {self.rotations} rotations, "
            f"{self.lost(self.app)} lost, {sum(n > 1 for n in self.app.values())} repeated, "
            f"{len(self.unlike_one_writer)} backups unlike a single writer's; --logfile: "
            f"{self.lost(self.logfile)} lost; {len(self.torn)} torn lines"
        )


def _start_worker(tmp_path: Path, redis_url: str, with_mplog: bool, conf_extra: str = "") -> subprocess.Popen:
    source = (EXAMPLE / "tasks.py").read_text()
    assert MPLOG_LINE in source, "the example's mplog line changed; update MPLOG_LINE"
    (tmp_path / "tasks.py").write_text((source if with_mplog else source.replace(MPLOG_LINE, "")) + conf_extra)
    env = dict(os.environ, CELERY_BROKER_URL=redis_url, APP_LOG_MAX_BYTES=str(MAX_BYTES))
    command = [
        *(sys.executable, "-m", "celery", "-A", "tasks", "worker", "-P", "prefork", "-c", "4"),
        *("--loglevel", "INFO", "--logfile", "worker.log", "--max-tasks-per-child", str(RECYCLE_AFTER)),
        *("--without-mingle", "--without-gossip", "--without-heartbeat", "--hostname", "test@%h"),
    ]
    with open(tmp_path / "stdout.txt", "wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_line(str(tmp_path / "worker.log"), r"(ready)\.$", timeout=60, process=process)
    except BaseException:
        stop_server(process)
        raise
    return process


def _pool_children(pid: int) -> List[int]:
    """The worker's pool processes: its direct children."""
    children = []
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(child)
        except (OSError, IndexError, ValueError):
            continue
    return children


def _app_files(tmp_path: Path) -> List[Path]:
    """app.log and its backups, oldest first."""
    backups = sorted(tmp_path.glob("app.log.*"), key=lambda path: -int(path.suffix[1:]))
    return [*backups, tmp_path / "app.log"]


def _task_lines_so_far(tmp_path: Path) -> int:
    return sum(path.read_bytes().count(b" task n=") for path in _app_files(tmp_path) if path.exists())


def _run_load(
    tmp_path: Path, redis_url: str, worker: subprocess.Popen, count: int = TASKS, kill: bool = True
) -> Set[int]:
    """Send ``count`` tasks, SIGKILL one pool child once 40% have logged (if
    ``kill``), and return the numbers of the tasks that finished. In a spawned process of its own:
    Celery's client leaves threads behind, and a fork of this process in a
    later test would inherit the locks they hold."""
    result = tmp_path / "succeeded.json"
    process = multiprocessing.get_context("spawn").Process(
        target=_load_in_a_child, args=(str(tmp_path), redis_url, worker.pid, str(result), count, kill)
    )
    process.start()
    process.join(DEADLINE + 60)
    if process.is_alive():
        process.kill()
        process.join()
    assert process.exitcode == 0, f"the load's process ended with {process.exitcode}"
    return set(json.loads(result.read_text()))


def _load_in_a_child(directory: str, redis_url: str, worker_pid: int, result: str, count: int, kill: bool) -> None:
    """:func:`_run_load`'s work, writing the finished tasks' numbers to ``result``."""
    tmp_path = Path(directory)
    client = Celery("client", broker=redis_url, backend=redis_url)
    try:
        ids: Dict[str, int] = {}
        for n in range(1, count + 1):
            ids[client.send_task("tasks.work", args=(n,)).id] = n
        deadline = time.monotonic() + DEADLINE
        while kill and _task_lines_so_far(tmp_path) < count * 2 // 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        if kill:
            _kill_a_child(tmp_path, worker_pid)
        finished = client.backend.get_many(set(ids), timeout=max(1.0, deadline - time.monotonic()), interval=0.05)
        succeeded = [ids[task_id] for task_id, meta in finished if meta["status"] == "SUCCESS"]
    finally:
        client.close()
    Path(result).write_text(json.dumps(succeeded))


def _kill_a_child(tmp_path: Path, worker_pid: int) -> None:
    """SIGKILL a pool child, and again another if the worker does not report
    the kill within 10 s (a child that was just being recycled exits without
    that report)."""
    for _ in range(3):
        os.kill(_pool_children(worker_pid)[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            logfile = tmp_path / "worker.log"
            if logfile.exists() and "exited with 'signal 9 (SIGKILL)'" in logfile.read_text(errors="replace"):
                return
            time.sleep(0.05)


def _check_torn(lines: List[str], outcome: Outcome, pattern: "re.Pattern[str]", counts: Counter) -> None:
    for line in lines:
        if GLUED.match(line):
            outcome.torn.append(line)
        elif " task n=" in line:
            match = pattern.match(line)
            if match:
                counts[int(match[match.lastindex or 0])] += 1
            else:
                outcome.torn.append(line)


def _first_record_length(text: str) -> int:
    """Characters of the first record of a file, its continuation lines and newline included."""
    lines = text.splitlines(keepends=True)
    end = 1
    while end < len(lines) and not RECORD_START.match(lines[end]):
        end += 1
    return sum(len(line) for line in lines[:end])


def _read_logs(tmp_path: Path, succeeded: Set[int]) -> Outcome:
    outcome = Outcome(succeeded)
    texts = [path.read_text(errors="replace") for path in _app_files(tmp_path)]
    outcome.rotations = len(texts) - 1
    for path, text, newer in zip(_app_files(tmp_path), texts, texts[1:]):
        # A single RotatingFileHandler rolls over just before the record that
        # would reach maxBytes: every backup is below it, and would reach it
        # with the next file's first record.
        size = len(text)
        if not (size < MAX_BYTES <= size + _first_record_length(newer)):
            outcome.unlike_one_writer.append(f"{path.name}: {size} characters")
    for text in texts:
        _check_torn(text.splitlines(), outcome, APP_LINE, outcome.app)
    logfile = (tmp_path / "worker.log").read_text(errors="replace")
    _check_torn(logfile.splitlines(), outcome, LOGFILE_LINE, outcome.logfile)
    outcome.kill_seen = "exited with 'signal 9 (SIGKILL)'" in logfile
    return outcome


def _run(tmp_path: Path, redis_url: str, with_mplog: bool) -> Outcome:
    started = time.monotonic()
    worker = _start_worker(tmp_path, redis_url, with_mplog)
    try:
        succeeded = _run_load(tmp_path, redis_url, worker)
    finally:
        stop_server(worker)  # warm shutdown (SIGTERM); SIGKILL for it and its pool after 30 s
    outcome = _read_logs(tmp_path, succeeded)
    label = "with mplog" if with_mplog else "without mplog"
    print(f"celery prefork -c 4 {label}: {outcome.summary()} ({time.monotonic() - started:.1f} s)")
    return outcome


def test_celery_prefork_with_mplog(tmp_path, redis_url):
    """With the example's one import: every finished task has exactly one line
    in app.log and in --logfile, none torn, and app.log rotated as one writer would."""
    outcome = _run(tmp_path, redis_url, with_mplog=True)
    assert outcome.kill_seen
    assert len(outcome.succeeded) >= TASKS - 4  # Celery itself may lose the tasks the killed child ran
    assert outcome.torn == []
    assert outcome.rotations >= 20
    assert outcome.unlike_one_writer == []
    assert [n for n in outcome.succeeded if outcome.app[n] != 1] == []
    assert [n for n in outcome.succeeded if outcome.logfile[n] != 1] == []
    assert [n for n, lines in (outcome.app + outcome.logfile).items() if lines > 2] == []


@WITHOUT_MPLOG_RUN_ONCE
def test_celery_prefork_without_mplog(tmp_path, redis_url):
    """The same worker without the import: its losses are printed (for the
    README), and only that the load ran is asserted."""
    outcome = _run(tmp_path, redis_url, with_mplog=False)
    assert outcome.kill_seen
    assert len(outcome.succeeded) >= TASKS - 4


def test_celery_root_logger_not_hijacked(tmp_path, redis_url):
    """With ``worker_hijack_root_logger = False`` and no root handlers, Celery
    still gives the root its --logfile handler: the worker's own lines and the
    tasks' reach worker.log, not stderr."""
    worker = _start_worker(tmp_path, redis_url, True, conf_extra="app.conf.worker_hijack_root_logger = False\n")
    try:
        assert _run_load(tmp_path, redis_url, worker, count=200, kill=False) == set(range(1, 201))
    finally:
        stop_server(worker)
    outcome = _read_logs(tmp_path, set(range(1, 201)))
    assert outcome.torn == []
    assert [n for n in outcome.succeeded if outcome.app[n] != 1 or outcome.logfile[n] != 1] == []
    assert "succeeded in" in (tmp_path / "worker.log").read_text()
