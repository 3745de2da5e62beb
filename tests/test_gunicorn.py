"""Gunicorn with mplog's hooks, under load, reloads, recycling and worker timeouts:
every answered request has exactly one app line and one access line, none torn."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Optional

import pytest

from tests.conftest import NEEDS_ROOT, wait_until
from tests.servers import Load, descendants, stop_server, wait_for_line

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gunicorn"
ERROR_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")
APP_LINE = re.compile(r"^\[[^]]+\] \[(\d+)\] \[INFO\] app rid=(\d+) pid=(\d+)$")
ACCESS_LINE = re.compile(
    r'^127\.0\.0\.1 - - \[[^]]+\] "GET /\?rid=(\d+)(?:&sleep=[\d.]+)? HTTP/1\.1" (\d{3}) \d+ "-" "[^"]*"$'
)


def _start(tmp_path: Path, *args: str, conf_extra: str = "") -> subprocess.Popen:
    for name in ("app.py", "gunicorn.conf.py"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    with open(tmp_path / "gunicorn.conf.py", "a") as conf:
        conf.write(conf_extra)
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0", *args, "app:app"]
    with open(tmp_path / "stdout.txt", "wb") as out:
        return subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)


def _output(tmp_path: Path) -> str:
    """The ends of the master's output (its stacks, if stop_server had to
    abort it) and of gunicorn's error log: what a failed stop leaves to read."""
    error_log = tmp_path / "gunicorn-error.log"
    errors = error_log.read_text(errors="replace")[-3000:] if error_log.exists() else ""
    return f"{(tmp_path / 'stdout.txt').read_text(errors='replace')[-6000:]}\n--- gunicorn-error.log:\n{errors}"


def _check_logs(tmp_path: Path, answered) -> None:
    error_lines = (tmp_path / "gunicorn-error.log").read_text().splitlines()
    access_lines = (tmp_path / "gunicorn-access.log").read_text().splitlines()
    app = Counter()
    for line in error_lines:
        if " app rid=" in line:
            match = APP_LINE.match(line)
            assert match, f"torn app line: {line[:300]!r}"
            assert match[1] == match[3]
            app[int(match[2])] += 1
        elif line.startswith("["):
            assert ERROR_LINE.match(line), f"torn error-log line: {line[:300]!r}"
    access = Counter()
    for line in access_lines:
        match = ACCESS_LINE.match(line)
        assert match, f"torn access line: {line[:300]!r}"
        if match[2] == "200":
            access[int(match[1])] += 1
    # A record delivered twice would be the same line twice. (For a request it
    # kills on timeout, gunicorn may itself log a 200 and then a 500 line.)
    repeated = [line for line, n in Counter(error_lines + access_lines).items() if n > 1 and "rid=" in line]
    assert not repeated, f"lines written twice: {repeated[:3]}"
    assert [rid for rid, n in app.items() if n > 1] == []
    assert [rid for rid in answered if access[rid] != 1] == []
    missing_app = [rid for rid in answered if rid not in app]
    assert not missing_app, f"{len(missing_app)} answered requests have no app line, e.g. {missing_app[:10]}"


SLOW_EVERY = 997


@pytest.mark.parametrize(
    "worker_class, extra, requests",
    [
        ("sync", [], 20000),
        ("sync", ["--preload"], 5000),
        ("gthread", ["--threads", "4"], 5000),
        ("gevent", [], 5000),
    ],
)
def test_gunicorn_under_load_reload_recycling_and_timeouts(tmp_path, worker_class, extra, requests):
    """Load over 8 connections with HUP, TTIN, TTOU, max_requests recycling and
    workers killed on timeout; the logs hold every answered request exactly once."""
    server = _start(
        tmp_path, "--worker-class", worker_class, "--workers", "3", "--timeout", "2",
        "--max-requests", "400", "--max-requests-jitter", "100", "--graceful-timeout", "5", *extra,
    )  # fmt: skip
    try:
        port = int(
            wait_for_line(
                str(tmp_path / "gunicorn-error.log"), r"Listening at: http://127\.0\.0\.1:(\d+)", process=server
            )
        )
        signals = [signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU]
        load = Load(port, requests)
        # Every SLOW_EVERY-th request sleeps past the 2 s timeout: the master
        # kills that (sync) worker while its siblings keep logging.
        load.run(
            during=[lambda s=s: server.send_signal(s) for s in signals],
            extra_query=lambda rid: "&sleep=3" if rid % SLOW_EVERY == 0 else "",
        )
    finally:
        stop_server(server)
    assert server.returncode == 0, _output(tmp_path)
    # Reloads and recycling are graceful: only a worker killed for a sleeping
    # request drops requests, those in flight on it (at most one per
    # connection of the load). Seen: sync 18 of 20000, gthread and gevent 0.
    assert len(load.answered) + len(load.failed) == requests, "the load ran out of time"
    slow = requests // SLOW_EVERY
    assert len(load.failed) <= slow * load.concurrency, f"{len(load.failed)} of {requests} failed"
    _check_logs(tmp_path, load.answered)
    errors = (tmp_path / "gunicorn-error.log").read_text()
    assert "Hang up: Master" in errors and "Shutting down: Master" in errors
    if worker_class == "sync":
        assert "WORKER TIMEOUT" in errors


def test_sigusr1_reopens_the_listeners_files(tmp_path):
    """With logger_class mplog.gunicorn.Logger, logrotate's move + SIGUSR1 works:
    lines before go to the moved files, lines after to new ones."""
    server = _start(tmp_path, "--workers", "2", "--logger-class", "mplog.gunicorn.Logger")
    try:
        error_log, access_log = tmp_path / "gunicorn-error.log", tmp_path / "gunicorn-access.log"
        port = int(wait_for_line(str(error_log), r"Listening at: http://127\.0\.0\.1:(\d+)", process=server))
        before = Load(port, 100)
        before.run()
        # A worker logs the access line after it has sent the response.
        wait_until(lambda: _all_logged(access_log, before.answered), "the access lines of the first load")
        for path in (error_log, access_log):
            os.rename(path, f"{path}.1")
        server.send_signal(signal.SIGUSR1)
        # gunicorn logs this just before it reopens (so into the moved file).
        wait_for_line(f"{error_log}.1", r"(Handling signal: usr1)", process=server)
        # Reopening creates the files again.
        wait_until(lambda: error_log.exists() and access_log.exists(), "the listener reopening the log files", 30)
        after = Load(port, 100, first=1000)
        after.run()
    finally:
        stop_server(server)
    old_access = Path(f"{access_log}.1").read_text()
    new_access = access_log.read_text()
    assert len(before.answered) == 100 and len(after.answered) == 100
    assert all(f"rid={rid} " in old_access for rid in before.answered)
    assert all(f"rid={rid} " in new_access for rid in after.answered)
    assert "rid=1 " not in new_access and "rid=1001 " not in old_access


def _all_logged(access_log: Path, rids, also: Optional[Path] = None) -> bool:
    """Whether the access log (or ``also``) has a line for every request in ``rids``."""
    text = "".join(path.read_text() for path in (access_log, also) if path is not None and path.exists())
    return all(f"rid={rid} " in text for rid in rids)


# The workers' user may not be able to read the interpreter's files (in CI it
# lives under /root): import in the master, as root, what a sync worker
# imports after it has switched users.
IMPORTS_AFTER_THE_SWITCH = """
import hashlib  # noqa: E402,F401  (random.seed, in gunicorn's worker start)
"""


@NEEDS_ROOT
@pytest.mark.parametrize("extra", [[], ["--preload"]], ids=["app-in-workers", "preload"])
def test_workers_that_switch_to_gunicorns_user_log_to_the_files(second_user, extra):
    """gunicorn started as root with ``--user`` (its ``user`` setting), as it is
    commonly deployed: the workers run as that user, and all 100 app lines and
    100 access lines reach the files, none stderr."""
    # Not tmp_path: the workers import the app from here, as the second user.
    directory = Path(tempfile.mkdtemp(prefix="gunicorn-user-"))
    try:
        os.chmod(directory, 0o755)
        server = _start(
            directory, "--workers", "2", "--user", second_user.pw_name, *extra, conf_extra=IMPORTS_AFTER_THE_SWITCH
        )
        try:
            error_log, access_log = directory / "gunicorn-error.log", directory / "gunicorn-access.log"
            port = int(wait_for_line(str(error_log), r"Listening at: http://127\.0\.0\.1:(\d+)", process=server))
            wait_for_line(str(error_log), r"Booting worker with pid: (\d+)", process=server, count=2)
            wait_until(lambda: _uids(descendants(server.pid)) == [second_user.pw_uid] * 2, "workers switching user")
            load = Load(port, 100)
            load.run()
            # A worker logs the access line after it has sent the response:
            # wait for each, in the file or (where a worker fell back) on stderr.
            wait_until(
                lambda: _all_logged(access_log, load.answered, also=directory / "stdout.txt"), "the access lines"
            )
        finally:
            stop_server(server)
        output = (directory / "stdout.txt").read_text()
        assert server.returncode == 0, output[-3000:]
        assert len(load.answered) == 100, f"{len(load.failed)} requests failed: {output[-3000:]}"
        in_files = (error_log.read_text().count(" app rid="), access_log.read_text().count('"GET /?rid='))
        on_stderr = (output.count(" app rid="), output.count('"GET /?rid='))
        assert (in_files, on_stderr) == ((100, 100), (0, 0)), (
            f"(app, access) lines: in the files {in_files}, on stderr {on_stderr}"
        )
        assert "cannot reach the log listener" not in output, output[-3000:]
        _check_logs(directory, load.answered)
    finally:
        shutil.rmtree(directory)


def _uids(pids) -> list:
    """The real uid of each live process of ``pids``."""
    uids = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                uids.append(next(int(line.split()[1]) for line in status if line.startswith("Uid:")))
        except FileNotFoundError:  # gone meanwhile
            continue
    return uids


STUCK_ERROR_LOG = """
import logging, time
import mplog.gunicorn


class Stuck(logging.Handler):
    '''Like a SysLogHandler whose peer hangs: emit never returns.'''

    def emit(self, record):
        time.sleep(3600)


def on_starting(server):
    logging.getLogger("gunicorn.error").addHandler(Stuck())
    mplog.gunicorn.on_starting(server)
"""


@pytest.mark.timeout(120)
def test_master_supervises_while_a_handler_is_stuck(tmp_path):
    """A second error-log handler whose emit never returns, from the master's
    first line on: the master still logs to the file, answers, restarts a
    SIGKILLed worker, and shuts down within the drain bound."""
    server = _start(tmp_path, "--workers", "2", conf_extra=STUCK_ERROR_LOG)
    error_log = str(tmp_path / "gunicorn-error.log")
    try:
        port = int(wait_for_line(error_log, r"Listening at: http://127\.0\.0\.1:(\d+)", process=server))
        victim = int(wait_for_line(error_log, r"Booting worker with pid: (\d+)", process=server, count=2))
        os.kill(victim, signal.SIGKILL)
        wait_for_line(error_log, r"Booting worker with pid: (\d+)", process=server, count=3)
        load = Load(port, 50)
        load.run()
    finally:
        stop_server(server)
    assert server.returncode == 0, _output(tmp_path)
    assert len(load.answered) == 50
    errors = Path(error_log).read_text()
    assert "Shutting down: Master" in errors
    output = (tmp_path / "stdout.txt").read_text()
    assert "<Stuck (NOTSET)>" in output, output[-3000:]
