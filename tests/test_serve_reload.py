"""``mplog serve`` reloads its configuration on ``SIGHUP`` under load: a
renamed file is honoured, records written before the reload are in the old
files and those after in the new ones, none lost or duplicated; a reload that
would change what connected clients send, or that fails halfway, is refused,
the files reopened, and nothing of it kept open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List

import pytest

from tests.conftest import wait_for_path, wait_until
from tests.serving import ENV, lines_of, running_server


# Root: a RotatingFileHandler (records cross, the server formats); logger
# "lines": a lone plain FileHandler (clients send formatted lines as bytes).
def _config(directory: Path, suffix: str, fmt: str = "%(message)s") -> Dict[str, object]:
    return {
        "version": 1,
        "formatters": {"plain": {"format": fmt}},
        "handlers": {
            "app": {
                "class": "logging.handlers.RotatingFileHandler",
                "filename": str(directory / f"app{suffix}.log"),
                "maxBytes": 20_000,
                "backupCount": 1_000,
                "formatter": "plain",
            },
            "lines": {
                "class": "logging.FileHandler",
                "filename": str(directory / f"lines{suffix}.log"),
                "formatter": "plain",
            },
        },
        "loggers": {"lines": {"handlers": ["lines"], "level": "INFO", "propagate": False}},
        "root": {"handlers": ["app"], "level": "INFO"},
    }


# A client that logs ``first`` records to both routes, says so in ``logged``,
# goes on logging (a tag starting "busy") or waits until ``go`` exists, then
# logs ``after`` more records; prints how many it logged.
CLIENT = """
import logging, os, sys, time
import mplog

mplog.connect()
tag, first, after, logged, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
app, lines = logging.getLogger("app"), logging.getLogger("lines")
seq = 0
def one():
    global seq
    app.info("%s %d", tag, seq)
    lines.info("%s %d", tag, seq)
    seq += 1
for _ in range(first):
    one()
open(logged, "w").close()
while not os.path.exists(go):
    one() if tag.startswith("busy") else time.sleep(0.01)
for _ in range(after):
    one()
print(seq)
"""


def _seqs(lines: List[str]) -> Dict[str, List[int]]:
    found: Dict[str, List[int]] = {}
    for line in lines:
        tag, seq = line.split(" ")
        found.setdefault(tag, []).append(int(seq))
    return found


@pytest.mark.timeout(240)
def test_sighup_reload_renames_files_mid_load_and_loses_nothing(tmp_path):
    """Three clients log while the config is rewritten with other file names
    and SIGHUP sent: per client and file, the old files hold exactly its
    records 0..k-1 and the new ones k..n-1 (k: where the reload fell), each
    once, in order; the client that stops until the reload is done has all
    its records before in the old files and all after in the new. Then a
    reload that changes the format is refused, said, and changes nothing,
    and one that fails halfway leaves none of its files open."""
    address = str(tmp_path / "s" / "serve.sock")
    env = dict(ENV, MPLOG_ADDRESS=address)
    go = tmp_path / "go"
    with running_server(_config(tmp_path, ""), tmp_path, address=address) as server:
        # Two clients keep logging through the reload; "step" logs 1,000,
        # then waits until it is done.
        clients = {
            tag: subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(CLIENT), tag, first, after, str(tmp_path / tag), str(go)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tag, first, after in (("busy0", "2000", "1000"), ("busy1", "2000", "1000"), ("step", "1000", "1000"))
        }
        try:
            for tag in clients:
                wait_for_path(tmp_path / tag)
            server.config_path.write_text(json.dumps(_config(tmp_path, "-new")))
            assert server.process is not None
            server.process.send_signal(signal.SIGHUP)
            wait_until(lambda: "mplog serve: reloaded" in server.stderr(), "the reload")
            go.touch()
            totals = {}
            for tag, client in clients.items():
                out, err = client.communicate(timeout=120)
                assert client.returncode == 0, err[-2000:]
                totals[tag] = int(out)
        finally:
            for client in clients.values():
                if client.poll() is None:
                    client.kill()
                    client.wait()
        # A new format: clients connected now format lines the old way; refused.
        server.config_path.write_text(json.dumps(_config(tmp_path, "-refused", fmt="X %(message)s")))
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "not reloaded" in server.stderr(), "the refusal")
        # One that fails halfway (its first handler built, the second a bad
        # class): nothing of it stays open in the server.
        half = _config(tmp_path, "-half")
        half["handlers"]["lines"]["class"] = "logging.NoSuchHandler"
        server.config_path.write_text(json.dumps(half))
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: server.stderr().count("the files were reopened") == 2, "the failed reload")
        fds = Path(f"/proc/{server.process.pid}/fd")
        assert not [fd for fd in fds.iterdir() if "-half" in os.readlink(fd)]
        late = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CLIENT), "late", "100", "0", str(tmp_path / "late"), str(go)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert late.returncode == 0, late.stderr[-2000:]
        assert server.stop() == 0
    stderr = server.stderr()
    print(stderr)
    assert "handlers changed how clients format" in stderr and "the files were reopened" in stderr
    # Built to be compared (as --check does), so created, but never written.
    assert all(path.stat().st_size == 0 for path in tmp_path.glob("*-refused.log*"))
    totals["late"] = 100
    for old_name, new_name in (("app.log", "app-new.log"), ("lines.log", "lines-new.log")):
        before, after = _seqs(lines_of(tmp_path / old_name)), _seqs(lines_of(tmp_path / new_name))
        rotated = len(list(tmp_path.glob(old_name + ".*"))) + len(list(tmp_path.glob(new_name + ".*")))
        print(f"{old_name} -> {new_name}: {rotated} rotated files")
        for tag, total in totals.items():
            k = len(before.get(tag, []))
            print(f"  {tag}: {total} records, {k} in {old_name}, {len(after.get(tag, []))} in {new_name}")
            assert before.get(tag, []) == list(range(k)), (old_name, tag)
            assert after.get(tag, []) == list(range(k, total)), (new_name, tag)
        assert len(before["step"]) == 1000  # logged before the reload: all in the old file
        assert "late" not in before  # connected after it
    assert "Traceback" not in stderr and "discarded" not in stderr


# A client that logs one record, has the server reload (SIGHUP) while its
# slow handler is writing it, then asks for a confirmation during the reload;
# prints what mplog.complete() said and whether the record was in the file.
CONFIRMING_CLIENT = """
import logging, os, signal, sys, time
import mplog

mplog.connect()
logging.getLogger("app").info("before the reload")
time.sleep(0.3)  # the server has handed it to the slow handler
os.kill(int(sys.argv[1]), signal.SIGHUP)
time.sleep(0.3)  # the reload has replaced the handler, and waits for the old one
print(mplog.complete(10), "before the reload" in open(sys.argv[2]).read())
"""


@pytest.mark.timeout(60)
def test_a_confirmation_asked_during_a_reload_waits_for_the_old_handlers(tmp_path):
    """A record the old handler (one second a record) is still writing when
    the configuration is reloaded: mplog.complete(), asked during the reload,
    returns True only once the record is in the old handler's file."""
    config = _config(tmp_path, "")
    config["handlers"]["app"] = {
        "class": "tests.serving.SlowFileHandler",
        "filename": str(tmp_path / "app.log"),
        "formatter": "plain",
    }
    address = str(tmp_path / "s" / "serve.sock")
    with running_server(config, tmp_path, address=address) as server:
        server.config_path.write_text(json.dumps(_config(tmp_path, "-new")))
        assert server.process is not None
        pid, log = str(server.process.pid), str(tmp_path / "app.log")
        client = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CONFIRMING_CLIENT), pid, log],
            env=dict(ENV, MPLOG_ADDRESS=address),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert client.returncode == 0, client.stderr[-2000:]
        wait_until(lambda: "mplog serve: reloaded" in server.stderr(), "the reload")
    assert client.stdout.split() == ["True", "True"], (client.stdout, client.stderr[-2000:])
