"""tornado fork_processes and uvicorn --workers, run as real servers under load."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import wait_until
from tests.servers import Load, descendants, stop_server, wait_for_line

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\d+) (\S+) ([A-Z]+) (.*)$")


def _example_number(path: Path, pattern: str) -> int:
    """A number an example sets, read from its source (its first group of ``pattern``)."""
    match = re.search(pattern, path.read_text(), re.MULTILINE)
    assert match, f"{path} no longer matches {pattern!r}"
    return int(match[1])


TORNADO_WORKERS = _example_number(EXAMPLES / "tornado" / "server.py", r"^WORKERS = (\d+)$")
UVICORN_WORKERS = _example_number(EXAMPLES / "uvicorn" / "serve.py", r"\bworkers=(\d+)")


def _tally(path: Path, access_logger: str, access_pattern: str):
    app, access = Counter(), Counter()
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        assert match, f"torn or foreign line: {line[:300]!r}"
        pid, name, _, message = match.groups()
        if name == "app":
            found = re.fullmatch(r"app rid=(\d+) pid=(\d+)", message)
            assert found and found[2] == pid, f"torn app line: {line!r}"
            app[int(found[1])] += 1
        elif name == access_logger:
            found = re.search(access_pattern, message)
            if found:
                access[int(found[1])] += 1
    return app, access


def _assert_each_once(answered, app, access) -> None:
    assert [rid for rid, n in app.items() if n > 1] == []
    assert [rid for rid, n in access.items() if n > 1] == []
    assert not [rid for rid in answered if rid not in app], "answered requests without an app line"
    assert not [rid for rid in answered if rid not in access], "answered requests without an access line"


def test_tornado_fork_processes(tmp_path):
    """Three forked children, one SIGKILLed and restarted by tornado mid-load,
    then a SIGTERM shutdown: every answered request is logged exactly once."""
    log = tmp_path / "tornado.log"
    with open(tmp_path / "out.txt", "wb") as out:
        server = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "tornado" / "server.py"), "0", str(log)], stdout=out, stderr=out
        )
    try:
        port = int(wait_for_line(str(log), r"listening on port (\d+)", process=server))
        wait_until(lambda: len(descendants(server.pid)) == TORNADO_WORKERS, "tornado forking its children", 30)

        killed = []

        def kill_a_child() -> None:
            children = descendants(server.pid)
            assert children, "tornado started no children"
            os.kill(children[0], signal.SIGKILL)
            killed.append(children[0])

        load = Load(port, 5000)
        load.run(during=[kill_a_child])
    finally:
        stop_server(server)
    assert server.returncode == 0, (tmp_path / "out.txt").read_text()[-3000:]
    # Only requests in flight when the child was killed may go unanswered:
    # at most one per connection of the load.
    assert len(load.answered) + len(load.failed) == load.requests, "the load ran out of time"
    assert len(load.failed) <= load.concurrency, f"{len(load.failed)} requests failed"
    app, access = _tally(log, "tornado.access", r"^200 GET /\?rid=(\d+) ")
    # tornado writes the access line after sending the response: the child we
    # killed may have answered its last request and died before logging it.
    handled_by = {int(rid): int(pid) for rid, pid in re.findall(r"app rid=(\d+) pid=(\d+)", log.read_text())}
    unlogged = [rid for rid in load.answered if rid not in access]
    assert len(unlogged) <= 1 and all(handled_by.get(rid) in killed for rid in unlogged), unlogged
    _assert_each_once([rid for rid in load.answered if rid not in unlogged], app, access)
    assert "killed by signal 9, restarting" in log.read_text()


def test_uvicorn_workers(tmp_path):
    """uvicorn's spawned workers join the parent's listener through the environment."""
    for name in ("app.py", "serve.py"):
        shutil.copy(EXAMPLES / "uvicorn" / name, tmp_path / name)
    log = tmp_path / "uvicorn.log"
    with open(tmp_path / "out.txt", "wb") as out:
        server = subprocess.Popen([sys.executable, "serve.py", "0", str(log)], cwd=tmp_path, stdout=out, stderr=out)
    try:
        port = int(wait_for_line(str(log), r"Uvicorn running on http://127\.0\.0\.1:(\d+)", process=server))
        # Each worker logs this once it can take requests.
        wait_for_line(str(log), r"(Application startup complete)", process=server, count=UVICORN_WORKERS)
        load = Load(port, 3000)
        load.run()
    finally:
        stop_server(server)
    assert server.returncode == 0, (tmp_path / "out.txt").read_text()[-3000:]
    assert len(load.answered) == load.requests, f"{len(load.failed)} failed: {sorted(load.failed)[:10]}"
    app, access = _tally(log, "uvicorn.access", r'"GET /\?rid=(\d+) HTTP/1\.1" 200')
    _assert_each_once(load.answered, app, access)
    assert len({pid for pid in re.findall(r"app rid=\d+ pid=(\d+)", log.read_text())}) > 1
