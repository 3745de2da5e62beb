"""``mplog status``: a running server's connected processes, records and
bytes per handler, connections closed for garbage, and last notice, as
text and as JSON; one line and status 1 when no server answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import wait_for_path, wait_until
from tests.serving import ENV, lines_of, running_server

RECORDS = 1500

CONFIG = {
    "version": 1,
    "formatters": {"plain": {"format": "%(message)s"}},
    "handlers": {
        "app": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": "APP",
            "maxBytes": 20_000,
            "backupCount": 100,
            "formatter": "plain",
        },
        "lines": {"class": "logging.FileHandler", "filename": "LINES", "formatter": "plain"},
    },
    "loggers": {"lines": {"handlers": ["lines"], "level": "INFO", "propagate": False}},
    "root": {"handlers": ["app"], "level": "INFO"},
}

# Logs RECORDS records to each route, waits until they are written, says so
# in ``logged``, and stays connected until ``go`` exists.
CLIENT = """
import logging, os, sys, time
import mplog

mplog.connect()
tag, count, logged, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for seq in range(count):
    logging.getLogger("app").info("%s %d", tag, seq)
    logging.getLogger("lines").info("%s %d", tag, seq)
assert mplog.complete(30)
open(logged, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
"""


def _status(address: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mplog", "status", "--socket", address, *options],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )


@pytest.mark.timeout(180)
def test_status_shows_processes_handlers_drops_and_last_notice(tmp_path):
    """Two clients connected after logging 1,500 records to each of two
    handlers: status names their pids and counts 3,000 records per handler;
    a connection that sent garbage is counted as closed and is the last
    notice; with no server, one line and status 1."""
    address = str(tmp_path / "s" / "serve.sock")
    config = json.loads(
        json.dumps(CONFIG).replace("APP", str(tmp_path / "app.log")).replace("LINES", str(tmp_path / "lines.log"))
    )
    env = dict(ENV, MPLOG_ADDRESS=address)
    go = tmp_path / "go"
    with running_server(config, tmp_path, address=address):
        clients = [
            subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(CLIENT), tag, str(RECORDS), str(tmp_path / tag), str(go)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tag in ("a", "b")
        ]
        try:
            for tag in ("a", "b"):
                wait_for_path(tmp_path / tag)
            result = _status(address, "--json")
            assert result.returncode == 0, result.stderr
            status = json.loads(result.stdout)
            assert status["pids"] == sorted(client.pid for client in clients)
            assert status["processes"] == 2 and status["pipes"] == 4  # two routes each
            by_name = {entry["handler"]: entry for entry in status["handlers"]}
            app = by_name[f"<RotatingFileHandler {tmp_path / 'app.log'} (NOTSET)>"]
            lines = by_name[f"<FileHandler {tmp_path / 'lines.log'} (NOTSET)>"]
            for entry in (app, lines):
                assert entry["records"] == 2 * RECORDS and entry["dropped"] == 0, entry
                assert entry["bytes"] >= 2 * RECORDS * len("a 0"), entry
            assert status["closed"] == status["refused"] == 0 and status["last_notice"] is None
            assert status["rss"] > 0 and status["fds"] > 4
            # Garbage instead of a hello: closed, counted, and the last notice.
            garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            garbage.connect(address)
            garbage.sendall(b"\x00GARBAGE")
            garbage.settimeout(30)
            try:
                assert garbage.recv(100) == b""
            except ConnectionResetError:  # closed with the garbage unread
                pass
            garbage.close()
            text = _status(address)
            assert text.returncode == 0, text.stderr
            print(text.stdout)
            assert "processes: 2 connected, 4 pipe(s): pids" in text.stdout
            assert f"{2 * RECORDS} records" in text.stdout
            assert "closed for what they sent: 1" in text.stdout
            assert "connection closed" in text.stdout.split("last notice:")[1]
            go.touch()
            for client in clients:
                _, err = client.communicate(timeout=60)
                assert client.returncode == 0, err[-2000:]
        finally:
            go.touch()
            for client in clients:
                if client.poll() is None:
                    client.kill()
                    client.wait()
        wait_until(lambda: json.loads(_status(address, "--json").stdout)["processes"] == 0, "the clients gone")
    assert len(lines_of(tmp_path / "app.log")) == len(lines_of(tmp_path / "lines.log")) == 2 * RECORDS
    gone = _status(address)
    assert gone.returncode == 1 and gone.stdout == ""
    assert gone.stderr.startswith(f"mplog status: error: no mplog serve answers at {address}: ")
    assert gone.stderr.count("\n") == 1
    assert not os.path.exists(address)
