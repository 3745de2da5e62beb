"""One framework row of issue 20: an example app served by a real server
(gunicorn with or without mplog's one-line hook, uvicorn or ``fastapi run``
with or without ``mplog run --`` in front), under load, with a worker killed
mid-way; then every answered request's app line is looked for in the rotated
files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, NamedTuple, Sequence

from tests.servers import Load, RotatedLog, count_lines, kill_a_worker, stop_server, wait_for_line, wait_for_port

#: The hook line of examples/*/gunicorn.conf.py; "without mplog" drops it.
HOOK = "from mplog.gunicorn import"
#: Small enough that 5,000 app lines rotate well over 20 times.
MAX_BYTES = 8000
#: Backups kept: more than the runs make. (A RotatingFileHandler looks for
#: every one of them at each rollover: 100,000 made the Django runs' writer
#: fall seconds behind, and their stop wait for it.)
BACKUP_COUNT = 1000
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+"
#: This environment's console scripts (``mplog``, ``uvicorn``, ``fastapi``), run as a user types them.
BIN = Path(sys.executable).parent
#: Where a server's own output goes (stdout and stderr).
OUTPUT = "stdout.txt"


class Server(NamedTuple):
    """How to run a server from the example's copy and see what it does:
    ``log`` (a file there) gets a ``listening`` line (the port as its first
    group) and a ``booted`` line each time a worker starts."""

    command: List[str]
    workers: int
    log: str
    listening: str
    booted: str


def gunicorn(
    directory: Path, app: str, hook: bool, args: Sequence[str] = (), workers: int = 3, config: str = "gunicorn.conf.py"
) -> Server:
    """gunicorn with the example's ``config`` (gunicorn.conf.py), without its
    hook line unless ``hook``."""
    conf = directory / config
    lines = conf.read_text().splitlines(keepends=True)
    assert any(line.startswith(HOOK) for line in lines), f"{conf} has no line {HOOK!r}"
    if not hook:
        conf.write_text("".join(line for line in lines if not line.startswith(HOOK)))
    command = [sys.executable, "-m", "gunicorn", "-c", config, "--bind", "127.0.0.1:0"]
    return Server(
        [*command, "--workers", str(workers), *args, app],
        workers,
        "gunicorn-error.log",
        r"Listening at: http://127\.0\.0\.1:(\d+)",
        r"Booting worker with pid: (\d+)",
    )


def uvicorn_family(command: Sequence[str], with_mplog: bool, workers: int) -> Server:
    """A console script that runs uvicorn's multiprocess supervisor
    (``uvicorn``, ``fastapi run``), with ``mplog run --`` in front if
    ``with_mplog``; uvicorn's own records on stderr."""
    prefix = [str(BIN / "mplog"), "run", "--"] if with_mplog else []
    return Server(
        [*prefix, str(BIN / command[0]), *command[1:]],
        workers,
        OUTPUT,
        r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
        r"Started server process \[(\d+)\]",
    )


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
        """One line of numbers for the docs' tables; printed by the tests."""
        return (
            f"{name}: {len(self.load.answered)} answered of {self.load.requests}, app lines lost {len(self.lost)}, "
            f"doubled {len(self.doubled)}, torn {len(self.torn)}; {self.rotations} rotations, "
            f"{len(self.not_one_writer)} backups unlike a single writer's; {self.seconds:.1f} s"
        )


def copy_example(example: Path, tmp_path: Path) -> Path:
    """A copy of ``example`` in ``tmp_path`` (without caches and logs); ``tmp_path``."""
    shutil.copytree(example, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.log*"))
    return tmp_path


def run(
    directory: Path,
    server: Server,
    app_line: "re.Pattern[str]",
    requests: int = 5000,
    during: Sequence[Callable[[int], None]] = (),
    kill: bool = True,
    max_bytes: int = MAX_BYTES,
) -> Outcome:
    """Start ``server`` in ``directory`` (an example's copy), send ``requests``
    requests, and at evenly spaced points of them kill a worker (if ``kill``),
    then call each of ``during`` with the port; once the killed worker is
    replaced, stop the server."""
    env = {"LOG_MAX_BYTES": str(max_bytes), "LOG_BACKUP_COUNT": str(BACKUP_COUNT)}
    started = time.monotonic()
    with open(directory / OUTPUT, "wb") as out:
        process = subprocess.Popen(
            server.command, cwd=directory, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    server_log = str(directory / server.log)
    killed: List[int] = []
    try:
        port = int(wait_for_line(server_log, server.listening, process=process, timeout=60))
        wait_for_line(server_log, server.booted, process=process, count=server.workers, timeout=60)
        wait_for_port(port)
        load = Load(port, requests, deadline=90)
        actions = [lambda: killed.append(kill_a_worker(process))] if kill else []
        load.run(during=actions + [lambda act=act: act(port) for act in during])
        # The server replaces the killed worker: one more boot than it has workers.
        wait_for_line(server_log, server.booted, process=process, count=server.workers + len(killed))
    finally:
        stop_server(process)
    output = (directory / OUTPUT).read_text(errors="replace")
    assert process.returncode == 0, output[-3000:]
    assert len(killed) == kill and len(load.answered) + len(load.failed) == requests, "the load ran out of time"
    log = RotatedLog(str(directory / _log_name(directory, server.log)), max_bytes)
    return Outcome(load, log, app_line, time.monotonic() - started, output)


def _log_name(directory: Path, server_log: str) -> str:
    """The one app log the example's configuration writes (``*.log`` other
    than the server's own)."""
    names = {path.name for path in directory.glob("*.log")} - {server_log}
    assert len(names) == 1, f"expected one app log in {directory}, found {sorted(names)}"
    return names.pop()


def serve(
    example: Path,
    tmp_path: Path,
    app: str,
    app_line: "re.Pattern[str]",
    hook: bool,
    args: Sequence[str] = (),
    requests: int = 5000,
    during: Sequence[Callable[[int], None]] = (),
) -> Outcome:
    """Copy ``example`` to ``tmp_path`` and serve ``app`` with gunicorn and 3
    workers (with the hook line if ``hook``): see :func:`run`."""
    directory = copy_example(example, tmp_path)
    return run(directory, gunicorn(directory, app, hook, args), app_line, requests, during)


def assert_as_one_writer(outcome: Outcome, requests: int, rotations: int = 20) -> None:
    """With mplog: every answered request has exactly one whole app line, and
    the file rotated as one RotatingFileHandler alone would have."""
    assert outcome.torn == [], f"torn app lines: {outcome.torn[:3]}"
    assert outcome.lost == [], f"{len(outcome.lost)} answered requests have no app line, e.g. {outcome.lost[:10]}"
    assert outcome.doubled == [], f"app lines written twice: {outcome.doubled[:10]}"
    # Only the requests in flight on the killed worker may go unanswered.
    assert len(outcome.load.answered) >= requests - outcome.load.concurrency
    assert rotations <= outcome.rotations < BACKUP_COUNT
    assert outcome.not_one_writer == [], outcome.not_one_writer[:5]
    assert "Traceback" not in outcome.output, outcome.output[-3000:]
