"""uWSGI (``master``, 4 processes, with and without ``lazy-apps``), the app
module running ``dictConfig`` (a RotatingFileHandler on the root) at import:
with mplog's one line in uwsgi.ini (``shared-import``) every answered request
has exactly one app line and the file rotates as by a single writer; without
it, the loss is printed."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

import pytest

from tests.conftest import WITHOUT_MPLOG_RUN_ONCE, requires
from tests.frameworks import BACKUP_COUNT, MAX_BYTES, STAMP, Outcome, assert_as_one_writer
from tests.servers import Load, RotatedLog, stop_server, wait_for_line

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "uwsgi"
APP_LINE = re.compile(rf"{STAMP} INFO app: rid=(\d+)")
HOOK = "shared-import = mplog.integrations.uwsgi"
REQUESTS = 5000
PROCESSES = 4  # the example's
UWSGI = shutil.which("uwsgi", path=os.path.dirname(sys.executable))

pytestmark = requires(
    UWSGI is not None, "uwsgi is not installed beside this Python (pip install -e '.[uwsgi]' builds it: a C compiler)"
)


def _free_port() -> int:
    """A loopback port nothing listens on now (uWSGI prints the port it was
    given, so it cannot be given 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _copy_example(tmp_path: Path, hook: bool, port: int) -> None:
    """The example in ``tmp_path``, on ``port``, without the hook line unless ``hook``."""
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.log*"))
    ini = tmp_path / "uwsgi.ini"
    lines = ini.read_text().splitlines(keepends=True)
    assert sum(line.strip() == HOOK for line in lines) == 1, f"{ini} has no line {HOOK!r}"
    text = "".join(line for line in lines if hook or line.strip() != HOOK)
    text, count = re.subn(r"(?m)^http-socket = 127\.0\.0\.1:8000$", f"http-socket = 127.0.0.1:{port}", text)
    assert count == 1, f"{ini} no longer serves 127.0.0.1:8000"
    ini.write_text(text)


def _wait_until_loaded(output: str, server: subprocess.Popen, apps: int) -> None:
    """Wait for ``apps`` "app ready" lines (one per worker with lazy-apps,
    one in all without): a worker stopped while it loads the app makes the
    master wait for it, or, with need-app, give up (exit status 22)."""
    wait_for_line(output, r"(WSGI app 0 \(mountpoint=''\) ready)", process=server, count=apps)


def _wait_until_idle(pid: int, timeout: float = 30.0) -> None:
    """Wait until worker ``pid`` waits for requests (in ``epoll_wait``). A
    worker signalled before it has set its own signal handlers runs the
    master's, inherited at fork: it says "killing workers" and waits for
    them, and the master for it (seen after a respawn, with and without
    mplog)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/wchan") as wchan:
            if "epoll" in wchan.read():
                return
        time.sleep(0.05)
    raise TimeoutError(f"uWSGI worker {pid} did not wait for requests within {timeout} s")


def _kill_worker(output: str, killed: List[int]) -> None:
    """SIGKILL uWSGI's worker 1 (the master forks a new one)."""
    pid = int(wait_for_line(output, r"spawned uWSGI worker 1 \(pid: (\d+)"))
    os.kill(pid, 9)
    killed.append(pid)


def serve(tmp_path: Path, hook: bool, args: Sequence[str] = ()) -> Outcome:
    """Serve the example with uWSGI (plus ``args``), send ``REQUESTS``
    requests, SIGKILL a worker half-way, stop the master."""
    port = _free_port()
    _copy_example(tmp_path, hook, port)
    env = {**os.environ, "LOG_MAX_BYTES": str(MAX_BYTES), "LOG_BACKUP_COUNT": str(BACKUP_COUNT)}
    output = str(tmp_path / "uwsgi-output.txt")
    started = time.monotonic()
    with open(output, "wb") as out:
        server = subprocess.Popen(
            [str(UWSGI), "--ini", "uwsgi.ini", *args], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    killed: List[int] = []
    lazy = "--lazy-apps" in args
    try:
        wait_for_line(output, r"spawned uWSGI worker (\d+)", process=server, count=PROCESSES)
        _wait_until_loaded(output, server, PROCESSES if lazy else 1)
        load = Load(port, REQUESTS, deadline=90)
        load.run(during=[lambda: _kill_worker(output, killed)])
        respawned = int(wait_for_line(output, r"Respawned uWSGI worker 1 \(new pid: (\d+)\)", process=server))
        if lazy:  # the new worker loads the app too
            _wait_until_loaded(output, server, PROCESSES + 1)
        _wait_until_idle(respawned)
    finally:
        stop_server(server)
    text = Path(output).read_text(errors="replace")
    assert server.returncode == 0, text[-3000:]
    assert killed and len(load.answered) + len(load.failed) == REQUESTS, "the load ran out of time"
    log = RotatedLog(str(tmp_path / "app.log"), MAX_BYTES)
    return Outcome(load, log, APP_LINE, time.monotonic() - started, text)


@pytest.mark.framework
@pytest.mark.timeout(150)
@pytest.mark.parametrize("args", [[], ["--lazy-apps"]], ids=["app-in-master", "lazy-apps"])
def test_uwsgi_with_the_line_logs_every_request_once(tmp_path, args):
    """5,000 requests, a worker SIGKILLed mid-load: one whole app line per
    answered request, rotation as by one writer."""
    outcome = serve(tmp_path, hook=True, args=args)
    print(outcome.report(f"uwsgi {' '.join(args)} with mplog"))
    assert_as_one_writer(outcome, REQUESTS)


@WITHOUT_MPLOG_RUN_ONCE
@pytest.mark.framework
@pytest.mark.timeout(150)
@pytest.mark.parametrize("args", [[], ["--lazy-apps"]], ids=["app-in-master", "lazy-apps"])
def test_uwsgi_without_the_line_reports_its_loss(tmp_path, args):
    """The same app and uwsgi.ini without the line: every worker writes and
    rotates the file on its own (the numbers are printed for the docs; what is
    lost varies from run to run)."""
    outcome = serve(tmp_path, hook=False, args=args)
    print(outcome.report(f"uwsgi {' '.join(args)} without mplog"))
    assert len(outcome.load.answered) >= REQUESTS - outcome.load.concurrency


def test_imported_outside_uwsgi_it_starts_nothing():
    """A script or a test importing the app (and so the module) outside
    uWSGI: no session, nothing on stderr."""
    probe = (
        "import mplog.integrations.uwsgi, mplog._install as i, mplog._setup as s; "
        "print(s.active_session(), i.current())"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, "None None\n", "")


@pytest.mark.timeout(60)
def test_imported_in_lazy_workers_it_says_where_it_belongs(tmp_path):
    """Imported in each worker (``import`` with ``lazy-apps``: what importing it
    in the app module does) instead of the master: each worker says on stderr
    to use shared-import, and serves as it would without mplog."""
    port = _free_port()
    _copy_example(tmp_path, hook=False, port=port)
    output = str(tmp_path / "uwsgi-output.txt")
    with open(output, "wb") as out:
        server = subprocess.Popen(
            [str(UWSGI), "--ini", "uwsgi.ini", "--lazy-apps", "--import", "mplog.integrations.uwsgi"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(output, r"(mplog: .* imported in uWSGI worker)", process=server, count=PROCESSES)
        _wait_until_loaded(output, server, PROCESSES)
        load = Load(port, 20)
        load.run()
    finally:
        stop_server(server)
    assert server.returncode == 0
    assert sorted(load.answered) == list(range(1, 21))
    warnings = [line for line in Path(output).read_text().splitlines() if line.startswith("mplog:")]
    expected = [
        f"mplog: mplog.integrations.uwsgi was imported in uWSGI worker {n}, not in the master: "
        "use shared-import = mplog.integrations.uwsgi"
        for n in range(1, PROCESSES + 1)
    ]
    assert sorted(warnings) == expected
