"""One framework row of issue 20: an example app served by gunicorn with or
without mplog's one-line hook, under load, with a worker killed mid-way; then
every answered request's app line is looked for in the rotated files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Sequence

from tests.servers import Load, RotatedLog, count_lines, kill_a_worker, stop_server, wait_for_line

#: The hook line of examples/*/gunicorn.conf.py; "without mplog" drops it.
HOOK = "from mplog.gunicorn import"
#: Small enough that 5,000 app lines rotate well over 20 times.
MAX_BYTES = 8000
#: Far more backups than a run makes (none is deleted), yet few: each rollover
#: of a RotatingFileHandler looks for every backup number up to it (0.29 s a
#: rollover at 100,000, which made the listener the bottleneck of a run).
BACKUP_COUNT = 1000
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+"


class Outcome:
    """What one run left: the load, the log's lines and its rotations."""

    def __init__(self, load: Load, log: RotatedLog, app_line: "re.Pattern[str]", seconds: float, output: str) -> None:
        self.load, self.log, self.seconds, self.output = load, log, seconds, output
        self.lines = log.lines()
        self.app, self.torn = count_lines(self.lines, " rid=", app_line)
        self.lost = sorted(rid for rid in load.answered if self.app[rid] == 0)
        self.doubled = sorted(rid for rid, n in self.app.items() if n > 1)
        self.rotations = len(log.backups)
        self.not_one_writer = log.not_as_one_writer()

    def report(self, name: str) -> str:
        """One line of numbers for the README's table; printed by the tests."""
        return (
            f"{name}: {len(self.load.answered)} answered of {self.load.requests}, app lines lost {len(self.lost)}, "
            f"doubled {len(self.doubled)}, torn {len(self.torn)}; {self.rotations} rotations, "
            f"{len(self.not_one_writer)} backups unlike a single writer's; {self.seconds:.1f} s"
        )


def serve(
    example: Path,
    tmp_path: Path,
    app: str,
    app_line: "re.Pattern[str]",
    hook: bool,
    args: Sequence[str] = (),
    requests: int = 5000,
    during: Sequence[Callable[[int], None]] = (),
    config: str = "gunicorn.conf.py",
    prepare: Callable[[Path], None] = lambda directory: None,
) -> Outcome:
    """Copy ``example`` to ``tmp_path`` (without the hook line of ``config``
    unless ``hook``) and call ``prepare`` with it; serve ``app`` with 3
    workers, send ``requests`` requests, and at evenly spaced points of them
    kill a worker, then call each of ``during`` with the port; stop the server."""
    shutil.copytree(example, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.log*"))
    prepare(tmp_path)
    conf = tmp_path / config
    lines = conf.read_text().splitlines(keepends=True)
    assert any(line.startswith(HOOK) for line in lines), f"{conf} has no line {HOOK!r}"
    if not hook:
        conf.write_text("".join(line for line in lines if not line.startswith(HOOK)))
    env = {"LOG_MAX_BYTES": str(MAX_BYTES), "LOG_BACKUP_COUNT": str(BACKUP_COUNT)}
    command = [sys.executable, "-m", "gunicorn", "-c", config, "--bind", "127.0.0.1:0", "--workers", "3"]
    started = time.monotonic()
    with open(tmp_path / "stdout.txt", "wb") as out:
        server = subprocess.Popen(
            [*command, *args, app], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    error_log = str(tmp_path / "gunicorn-error.log")
    killed: List[int] = []
    try:
        port = int(wait_for_line(error_log, r"Listening at: http://127\.0\.0\.1:(\d+)", process=server))
        load = Load(port, requests, deadline=90)
        actions = [lambda: killed.append(kill_a_worker(server))] + [lambda act=act: act(port) for act in during]
        load.run(during=actions)
        # gunicorn restarts the killed worker: 3 boots, then a 4th.
        wait_for_line(error_log, r"Booting worker with pid: (\d+)", process=server, count=4)
    finally:
        stop_server(server)
    output = (tmp_path / "stdout.txt").read_text(errors="replace")
    assert server.returncode == 0, output[-3000:]
    assert killed and len(load.answered) + len(load.failed) == requests, "the load ran out of time"
    log = RotatedLog(str(tmp_path / _log_name(tmp_path)), MAX_BYTES)
    return Outcome(load, log, app_line, time.monotonic() - started, output)


def _log_name(tmp_path: Path) -> str:
    """The one app log the example's configuration writes (``*.log`` other
    than gunicorn's error log)."""
    names = {path.name for path in tmp_path.glob("*.log")} - {"gunicorn-error.log"}
    assert len(names) == 1, f"expected one app log in {tmp_path}, found {sorted(names)}"
    return names.pop()


def assert_as_one_writer(outcome: Outcome, requests: int) -> None:
    """With mplog: every answered request has exactly one whole app line, and
    the file rotated as one RotatingFileHandler alone would have."""
    assert outcome.torn == [], f"torn app lines: {outcome.torn[:3]}"
    assert outcome.lost == [], f"{len(outcome.lost)} answered requests have no app line, e.g. {outcome.lost[:10]}"
    assert outcome.doubled == [], f"app lines written twice: {outcome.doubled[:10]}"
    # Only the requests in flight on the killed worker may go unanswered.
    assert len(outcome.load.answered) >= requests - outcome.load.concurrency
    assert outcome.rotations >= 20
    assert outcome.not_one_writer == [], outcome.not_one_writer[:5]
    assert "Traceback" not in outcome.output, outcome.output[-3000:]
