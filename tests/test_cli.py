"""``mplog run``: a Python program started from its own command line runs in
an mplog session, with nothing changed in it or in its logging configuration."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

from tests.servers import Load, descendants, stop_server, wait_for_line

WORKERS = 3
MAX_BYTES = 4_000
APP = """
import logging
from urllib.parse import parse_qs

log = logging.getLogger("app")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    rid = parse_qs(scope["query_string"].decode()).get("rid", ["-"])[0]
    log.info("app rid=%s", rid)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": f"ok {rid}\\n".encode()})
"""


def _log_config(directory: Path) -> Dict[str, object]:
    """A user's --log-config: the app's records rotated at 4 KB, uvicorn's in a file of their own."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(process)d %(name)s %(message)s"}},
        "handlers": {
            "app": {
                "class": "logging.handlers.RotatingFileHandler",
                "filename": str(directory / "app.log"),
                "maxBytes": MAX_BYTES,
                "backupCount": 10000,
                "formatter": "plain",
            },
            "server": {"class": "logging.FileHandler", "filename": str(directory / "server.log"), "formatter": "plain"},
        },
        "loggers": {
            "app": {"handlers": ["app"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"handlers": ["server"], "level": "INFO", "propagate": False},
        },
    }


def _app_lines(directory: Path) -> List[str]:
    lines: List[str] = []
    for path in sorted(directory.glob("app.log*")):
        lines.extend(path.read_text().splitlines())
    return lines


def _serve(directory: Path, with_mplog: bool) -> Load:
    """Run ``uvicorn --workers 3 --log-config`` (under ``mplog run`` or not),
    send 5,000 requests, SIGKILL one worker in the middle (uvicorn starts
    another), stop it; return the load."""
    (directory / "app.py").write_text(APP)
    (directory / "logging.json").write_text(json.dumps(_log_config(directory)))
    uvicorn = ["uvicorn", "app:app", "--workers", str(WORKERS), "--port", "0", "--log-config", "logging.json"]
    prefix = [sys.executable, "-m", "mplog", "run", "--"] if with_mplog else [sys.executable, "-m"]
    with open(directory / "out.txt", "wb") as out:
        server = subprocess.Popen(prefix + uvicorn, cwd=directory, stdout=out, stderr=out)
    server_log = str(directory / "server.log")
    try:
        port = int(wait_for_line(server_log, r"Uvicorn running on http://127\.0\.0\.1:(\d+)", process=server))
        wait_for_line(server_log, r"(Application startup complete)", process=server, count=WORKERS)
        load = Load(port, 5000)
        load.run(during=[lambda: _kill_a_worker(server.pid)])
    finally:
        stop_server(server)
    return load


def _kill_a_worker(server_pid: int) -> None:
    workers = [pid for pid in descendants(server_pid) if "multiprocessing" in _command_line(pid)]
    assert workers, f"no worker among {descendants(server_pid)}"
    os.kill(workers[0], signal.SIGKILL)


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.timeout(180)
def test_uvicorn_workers_with_a_log_config_under_mplog_run(tmp_path):
    """``mplog run -- uvicorn app:app --workers 3 --log-config logging.json``:
    5,000 requests, a worker SIGKILLed and replaced mid-load; every answered
    request has exactly one line, whole, in files rotated as by one writer
    (each under 4 KB: a single writer's rotations, 30 or more)."""
    load = _serve(tmp_path, with_mplog=True)
    lines = _app_lines(tmp_path)
    counts = Counter()
    for line in lines:
        match = re.fullmatch(r"(\d+) app app rid=(\d+)", line)
        assert match, f"torn line: {line[:300]!r}"
        counts[int(match[2])] += 1
    assert [rid for rid, n in counts.items() if n > 1] == []
    missing = [rid for rid in load.answered if rid not in counts]
    assert missing == [], f"{len(missing)} answered requests without a line, e.g. {missing[:10]}"
    sizes = [path.stat().st_size for path in tmp_path.glob("app.log*")]
    assert len(sizes) >= 20 and max(sizes) <= MAX_BYTES, sizes


@pytest.mark.timeout(180)
def test_uvicorn_workers_with_a_log_config_alone(tmp_path, capsys):
    """The same server without mplog: each worker rotates app.log on its own
    (the numbers are printed for the README; only their being counted is asserted)."""
    load = _serve(tmp_path, with_mplog=False)
    counts = Counter(re.findall(r"app rid=(\d+)", "\n".join(_app_lines(tmp_path))))
    missing = [rid for rid in load.answered if str(rid) not in counts]
    sizes = [path.stat().st_size for path in tmp_path.glob("app.log*")]
    with capsys.disabled():
        print(f"\nwithout mplog: {len(missing)} of {len(load.answered)} answered without a line, {len(sizes)} files")
    assert len(load.answered) > 4000


def test_run_gives_the_program_s_exit_status_and_its_children_join(tmp_path):
    """``mplog run -- script.py ARGS``: the script sees its arguments, its
    basicConfig(filename=...) configures as without mplog (the file is then
    the listener's), its forked workers' records reach that file, and its exit
    status is the command's."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import logging, multiprocessing, sys

            def work(n):
                logging.getLogger("w").info("task %d", n)

            if __name__ == "__main__":
                logging.basicConfig(filename={str(tmp_path / "out.log")!r}, level="INFO", format="%(message)s")
                with multiprocessing.get_context("fork").Pool(2) as pool:
                    pool.map(work, range(int(sys.argv[1])))
                sys.exit(3)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mplog", "run", "--", str(script), "50"], capture_output=True, timeout=120
    )
    assert result.returncode == 3, result.stderr.decode()[-2000:]
    lines = (tmp_path / "out.log").read_text().splitlines()
    assert sorted(lines) == sorted(f"task {n}" for n in range(50))


def test_run_says_what_it_cannot_find():
    """A program that is neither a file nor a command: usage error 2, naming it."""
    result = subprocess.run(
        [sys.executable, "-m", "mplog", "run", "--", "no-such-program-here"], capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert "no program 'no-such-program-here'" in result.stderr.decode()


def test_run_without_a_program_is_a_usage_error():
    """``mplog run`` alone: usage error 2, with an example."""
    result = subprocess.run([sys.executable, "-m", "mplog", "run"], capture_output=True, timeout=60)
    assert result.returncode == 2
    assert "mplog run -- uvicorn app:app --workers 4" in result.stderr.decode()
