"""Socket activation of ``mplog serve`` as ``examples/systemd`` sets it up,
without systemd: the test binds the socket, passes it as descriptor 3 with
``LISTEN_FDS=1`` and ``LISTEN_PID`` (set by a wrapper that then execs the
server, as systemd does), stops and starts the server on the same socket,
and counts every record, including a client's that connected while no
server ran (it waits in the backlog)."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest

from mplog import _endpoint
from tests.conftest import wait_until
from tests.serving import ENV, lines_of

EXAMPLE = Path(__file__).parent.parent / "examples" / "systemd"
RECORDS = 2000

# What systemd does between fork and exec: the socket at descriptor 3, the
# variables naming this pid, then exec (the pid stays the same).
WRAPPER = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""

CLIENT = """
import logging, sys
import mplog

mplog.connect()
for seq in range(int(sys.argv[2])):
    logging.getLogger("job").info("%s %d", sys.argv[1], seq)
"""


def _unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(EXAMPLE / name)
    return unit


def _server_command(config: Path) -> List[str]:
    """The example service's ExecStart, with its config file replaced by ``config``."""
    words = shlex.split(_unit("mplog.service")["Service"]["ExecStart"])
    assert words[1:4] == ["serve", "--config", "/etc/mplog/logging.json"], words
    return ["-m", "mplog", "serve", "--config", str(config), *words[4:]]


def _start(listening: socket.socket, config: Path, stderr: Path) -> subprocess.Popen:
    with open(stderr, "ab") as err:
        before = err.tell()
        fd = listening.fileno()
        server = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRAPPER), str(fd), *_server_command(config)],
            pass_fds=[fd],
            stderr=err,
            env=ENV,
        )
    wait_until(lambda: b"mplog serve: serving" in stderr.read_bytes()[before:] or server.poll() is not None, "serving")
    assert server.poll() is None, stderr.read_text()
    return server


def _stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    assert server.wait(60) == 0


@pytest.mark.timeout(180)
def test_socket_activation_and_a_restart_on_the_same_socket(tmp_path, monkeypatch):
    """The example units agree with mplog's default address; a server given
    the socket as descriptor 3 serves it (and does not remove it at
    SIGTERM); a client that connects while no server runs is served by the
    next one; 3 x 2,000 records, each once."""
    socket_unit = _unit("mplog.socket")["Socket"]
    assert socket_unit["ListenStream"] == os.path.join(_endpoint.SYSTEM_DIRECTORY, _endpoint.SOCKET_NAME)
    log = tmp_path / "app.log"
    config = tmp_path / "logging.json"
    example = json.loads((EXAMPLE / "logging.json").read_text())
    example["handlers"]["file"].update(filename=str(log), maxBytes=20_000, backupCount=1_000)
    example["formatters"]["plain"]["format"] = "%(message)s"
    config.write_text(json.dumps(example))
    (tmp_path / "run").mkdir()
    address = str(tmp_path / "run" / "serve.sock")
    # A server that ignored the socket would bind its default address: here, not /run's.
    env = dict(ENV, MPLOG_ADDRESS=address, XDG_RUNTIME_DIR=str(tmp_path / "xdg"))
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(address)
    os.chmod(address, int(socket_unit["SocketMode"], 8))
    listening.listen(int(socket_unit["Backlog"]))
    stderr = tmp_path / "serve.stderr"
    waiting = None
    server = _start(listening, config, stderr)
    try:
        run = [sys.executable, "-c", textwrap.dedent(CLIENT)]
        first = subprocess.run([*run, "first", str(RECORDS)], env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        _stop(server)
        assert os.path.exists(address)  # systemd's, kept for the next start
        # Connects to the socket with no server: waits in the backlog.
        waiting = subprocess.Popen([*run, "waiting", str(RECORDS)], env=env, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: _backlog_has_one(waiting.pid), "the client waiting in the backlog")
        server = _start(listening, config, stderr)
        _, errors = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, errors
        third = subprocess.run([*run, "third", str(RECORDS)], env=env, capture_output=True, text=True, timeout=60)
        assert third.returncode == 0, third.stderr
        _stop(server)
    finally:
        for process in (server, waiting):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        listening.close()
    print(stderr.read_text())
    counts = {}
    for line in lines_of(log):
        tag, seq = line.split(" ")
        counts.setdefault(tag, []).append(int(seq))
    rotated = len(list(tmp_path.glob("app.log.*")))
    print(f"{sum(map(len, counts.values()))} records, {rotated} rotated files")
    assert counts == {tag: list(range(RECORDS)) for tag in ("first", "waiting", "third")}
    assert not (tmp_path / "xdg").exists()


def _backlog_has_one(pid: int) -> bool:
    """Whether process ``pid`` has a Unix socket connected (it has sent its
    request and waits for an answer no server gives yet)."""
    try:
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(target.startswith("socket:") for target in targets)


def test_a_socket_that_is_not_a_listening_unix_stream_is_refused(tmp_path):
    """Descriptor 3 a UDP socket: one line naming it, status 2."""
    config = tmp_path / "logging.json"
    config.write_text(
        json.dumps({"version": 1, "handlers": {"h": {"class": "logging.NullHandler"}}, "root": {"handlers": ["h"]}})
    )
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(WRAPPER),
                str(udp.fileno()),
                "-m",
                "mplog",
                "serve",
                "--config",
                str(config),
            ],
            pass_fds=[udp.fileno()],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
        )
    finally:
        udp.close()
    assert result.returncode == 2
    assert result.stderr == (
        "mplog serve: error: descriptor 3 from systemd is not a listening Unix stream socket "
        "(the .socket unit needs ListenStream=/path)\n"
    )
