"""A gunicorn app whose master is a client of ``mplog serve`` (``mplog run
--connect ADDRESS -- gunicorn ...``; its forked workers follow), under load,
with a worker SIGKILLed and the server SIGTERMed and started again on the
same socket: every answered request's app line is in the server's rotated
files once. Each worker configures its own ``RotatingFileHandler`` on the
server's file (taken over). The same app without mplog, every worker rotating
the file itself, is run once and what it lost printed."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import List, Optional

import pytest

from tests.conftest import WITHOUT_MPLOG_RUN_ONCE
from tests.servers import Load, kill_a_worker, stop_server, wait_for_line
from tests.serving import ENV, USER_CONFIG, Server, lines_of, rotating_config, socket_directory

REQUESTS = 4000
WORKERS = 3

APP = """
import logging, os

configure(LOG)
log = logging.getLogger("app")


def app(environ, start_response):
    rid = environ["QUERY_STRING"].split("=")[1]
    log.info("app rid=%s pid=%d", rid, os.getpid())
    body = f"ok {rid}\\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""
APP_LINE = re.compile(r"app rid=(\d+) pid=\d+")


def start_gunicorn(tmp_path: Path, log: Path, address: Optional[str]) -> subprocess.Popen:
    """gunicorn with WORKERS sync workers, as a client of ``address`` (or without mplog)."""
    (tmp_path / "app.py").write_text(f"LOG = {str(log)!r}\n" + textwrap.dedent(USER_CONFIG) + textwrap.dedent(APP))
    gunicorn = ["-m", "gunicorn", "--workers", str(WORKERS), "--bind", "127.0.0.1:0"]
    gunicorn += ["--error-logfile", str(tmp_path / "error.log"), "app:app"]
    mplog = ["-m", "mplog", "run", "--connect", address, "--"] if address else []
    command = [sys.executable, *mplog, *gunicorn]
    env = dict(ENV, PYTHONPATH=f"{tmp_path}:{ENV['PYTHONPATH']}")
    return subprocess.Popen(command, cwd=tmp_path, env=env, stderr=open(tmp_path / "stderr.txt", "ab"))


def app_lines(log: Path) -> "Counter[int]":
    """How many times each request's app line is in ``log`` and its backups; fails on a torn line."""
    found: Counter[int] = Counter()
    for line in lines_of(log):
        match = APP_LINE.fullmatch(line)
        assert match, f"torn line {line[:200]!r}"
        found[int(match[1])] += 1
    return found


def run_load(tmp_path: Path, log: Path, address: Optional[str], during: List) -> Load:
    gunicorn = start_gunicorn(tmp_path, log, address)
    try:
        port = int(
            wait_for_line(str(tmp_path / "error.log"), r"Listening at: http://127\.0\.0\.1:(\d+)", process=gunicorn)
        )
        load = Load(port, REQUESTS, concurrency=6, deadline=90)
        load.run(during=[functools.partial(action, gunicorn) for action in during])
    finally:
        stop_server(gunicorn)
    return load


@pytest.mark.framework
@pytest.mark.timeout(150)
def test_gunicorn_master_as_client(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    server = Server(rotating_config(log, max_bytes=20_000), tmp_path, socket_directory(), ())
    server.start()
    killed: List[int] = []

    def restart_server(_: subprocess.Popen) -> None:
        server.stop()
        time.sleep(0.3)  # requests are answered meanwhile, their lines held
        server.start()

    try:
        load = run_load(
            tmp_path, log, server.address, [lambda gunicorn: killed.append(kill_a_worker(gunicorn)), restart_server]
        )
    finally:
        server.stop()  # it drains: what the workers wrote before they exited is in the files
    found = app_lines(log)
    missing = [rid for rid in load.answered if found[rid] == 0]
    twice = [rid for rid, n in found.items() if n > 1]
    backups = len(list(tmp_path.glob("app.log.*")))
    print(
        f"with mplog serve: {len(load.answered)} answered, {len(missing)} missing, {len(twice)} twice, "
        f"{backups} backups"
    )
    assert killed and len(load.answered) > REQUESTS // 2
    assert not missing and not twice, f"missing {missing[:10]}, twice {twice[:10]}"


@pytest.mark.framework
@pytest.mark.timeout(150)
@WITHOUT_MPLOG_RUN_ONCE
def test_gunicorn_without_mplog(tmp_path: Path) -> None:
    """Report only: each worker rotates the file itself."""
    log = tmp_path / "app.log"
    load = run_load(tmp_path, log, None, [kill_a_worker])
    found = app_lines(log)
    missing = [rid for rid in load.answered if found[rid] == 0]
    print(f"without mplog: {len(load.answered)} answered, {len(missing)} missing")
