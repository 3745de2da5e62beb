"""``mplog serve`` with 1,000 idle clients connected: each holds one pipe
(one descriptor) in the server and nothing else grows without bound (no
thread per client; memory measured); real clients logging meanwhile, and a
client sending garbage, lose nothing of theirs and cost the others nothing;
once the idle clients go, the server's descriptors are back."""

from __future__ import annotations

import array
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import textwrap
from typing import Dict, List

import pytest

from mplog import _codec
from tests.conftest import wait_until
from tests.serving import ENV, lines_of, rotating_config, running_server

IDLE = 1000
RUNS = 3
RECORDS = 2000

CLIENT = """
import logging, sys
import mplog

mplog.connect()
for seq in range(int(sys.argv[2])):
    logging.getLogger("job").info("%s %d", sys.argv[1], seq)
"""


def _proc(pid: int) -> Dict[str, int]:
    """The server's resident memory (KiB), threads and open descriptors
    other than regular files (a RotatingFileHandler's file is closed for a
    moment at each rollover)."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "Threads"):
                fields[name] = int(value.split()[0])
    fields["fds"] = sum(not _is_file(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    return fields


def _is_file(link: str) -> bool:
    try:
        return os.readlink(link).startswith("/") and not os.readlink(link).startswith("/dev/")
    except OSError:  # closed meanwhile
        return True


def _connect_idle(address: str, n: int) -> int:
    """Connect as a client does (a hello passing a pipe's read end), send one
    record, and keep the pipe's write end open without writing more; return it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(30)
        sock.connect(address)
        read_end, write_end = os.pipe()
        sock.sendmsg([_codec.hello(0)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [read_end]))])
        os.close(read_end)
        assert sock.recv(1) == _codec.HELLO_TAKEN
    finally:
        sock.close()
    record = logging.LogRecord("idle", logging.INFO, __file__, 1, f"idle {n}", None, None)
    os.write(write_end, _codec.encode(record, route=0))
    return write_end


def _status(address: str) -> Dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "mplog", "status", "--socket", address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def open_files_limit():
    """At least 4,096 descriptors for this process (the idle clients' pipes)
    and the server it starts (which raises its soft limit to its hard one)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = before
    wanted = 4096
    if hard != resource.RLIM_INFINITY and hard < wanted:
        hard = wanted  # root only; CI runs as root
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.mark.timeout(300)
def test_a_thousand_idle_clients_cost_one_descriptor_each_and_real_clients_lose_nothing(tmp_path, open_files_limit):
    """1,000 idle connections, a garbage one, and a script run 3 times
    (2,000 records each): the server holds one descriptor per idle client,
    starts no thread for them, its memory grows by a bounded amount; every
    record (the idle clients' one each too) is in the files once; after the
    idle clients close, its descriptors are back to where they were."""
    log = tmp_path / "app.log"
    address = str(tmp_path / "s" / "serve.sock")
    env = dict(ENV, MPLOG_ADDRESS=address)
    run = [sys.executable, "-c", textwrap.dedent(CLIENT)]
    pipes: List[int] = []
    config = rotating_config(log)
    config["handlers"]["app"]["backupCount"] = 1_000  # a rollover stats every backup's name
    with running_server(config, tmp_path, address=address) as server:
        assert server.process is not None
        pid = server.process.pid
        warm = subprocess.run([*run, "warm", "100"], env=env, capture_output=True, text=True, timeout=60)
        assert warm.returncode == 0, warm.stderr
        wait_until(lambda: _status(address)["processes"] == 0, "the warm-up client gone")
        base = _proc(pid)
        try:
            for n in range(IDLE):
                pipes.append(_connect_idle(address, n))
            wait_until(lambda: _status(address)["pipes"] == IDLE, "the idle clients served")
            idle = _proc(pid)
            garbage = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            garbage.connect(address)
            garbage.sendall(b"\x00" + os.urandom(63))
            garbage.close()
            for n in range(RUNS):
                result = subprocess.run(
                    [*run, f"run{n}", str(RECORDS)], env=env, capture_output=True, text=True, timeout=120
                )
                assert result.returncode == 0, result.stderr
            loaded = _proc(pid)
            status = _status(address)
        finally:
            for fd in pipes:
                os.close(fd)
        wait_until(lambda: _proc(pid)["fds"] <= base["fds"], "the idle clients' descriptors closed")
        after = _proc(pid)
        print(f"server before: {base}; {IDLE} idle: {idle}; after the runs: {loaded}; idle gone: {after}")
        shown = {key: status[key] for key in ("rss", "fds", "pipes", "processes", "closed")}
        print(f"status with {IDLE} idle: {shown}")
        assert idle["fds"] - base["fds"] == IDLE  # one descriptor each
        assert idle["Threads"] == base["Threads"] == loaded["Threads"]
        # Measured: about 2 MiB for 1,000 (a connection and its parser each); bounded well above.
        assert idle["VmRSS"] - base["VmRSS"] < 32 * 1024, (base, idle)
        assert loaded["VmRSS"] - base["VmRSS"] < 64 * 1024, (base, loaded)
        assert status["closed"] == 1 and status["pipes"] == IDLE
    counts: Dict[str, List[int]] = {}
    idle_seen = []
    for line in lines_of(log):
        tag, seq = line.split(" ")
        (idle_seen if tag == "idle" else counts.setdefault(tag, [])).append(int(seq))
    assert sorted(idle_seen) == list(range(IDLE))
    assert counts == {"warm": list(range(100)), **{f"run{n}": list(range(RECORDS)) for n in range(RUNS)}}
