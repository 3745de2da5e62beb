"""Unrelated programs as clients of one ``mplog serve`` server, every record
counted in the files (rotated ones included): a plain script run again and
again (cron-like, through ``mplog run`` with ``MPLOG_ADDRESS``), a ``Pool``
program that configures its own ``RotatingFileHandler`` in every process
(spawn and fork), hostile clients cut off and counted, and users admitted
or refused by uid and group."""

from __future__ import annotations

import array
import logging
import os
import pwd
import socket
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Dict, List

import pytest

import mplog
from mplog import _codec
from mplog.exceptions import SetupError
from tests.conftest import NEEDS_ROOT, run_in_child, wait_until
from tests.servers import RotatedLog
from tests.serving import ENV, USER_CONFIG, lines_of, rotating_config, running_server

MAX_BYTES = 20_000
CRON_RUNS = 5
CRON_RECORDS = 1000
POOL_TASKS = 6
TASK_RECORDS = 1000


CRON = """
import logging, sys
from userconfig import configure

configure(sys.argv[1])
log = logging.getLogger("cron")
for seq in range(int(sys.argv[3])):
    log.info("%s %d", sys.argv[2], seq)
"""

POOL = """
import logging, multiprocessing, os, sys
from userconfig import configure

def task(args):
    tag, count = args
    log = logging.getLogger("pool")
    for seq in range(count):
        log.info("%s %d", tag, seq)

if __name__ == "__main__":
    log_path, tasks, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if os.environ.get("MPLOG_ADDRESS"):
        import mplog
        mplog.connect()
    configure(log_path)
    for method in ("spawn", "fork"):
        # Each worker configures logging itself, as frameworks' workers do.
        with multiprocessing.get_context(method).Pool(3, initializer=configure, initargs=(log_path,)) as pool:
            pool.map(task, [(f"{method}{n}", count) for n in range(tasks)])
            pool.close()
            pool.join()
"""


def _write_programs(directory: Path) -> None:
    (directory / "userconfig.py").write_text(textwrap.dedent(USER_CONFIG))
    (directory / "cron.py").write_text(textwrap.dedent(CRON))
    (directory / "pool.py").write_text(textwrap.dedent(POOL))


def _run_programs(directory: Path, log: Path, env: Dict[str, str], via_mplog: bool) -> None:
    """The Pool program, and meanwhile the cron script run ``CRON_RUNS`` times
    in a row, each a new interpreter (through ``mplog run`` when ``via_mplog``)."""
    env = dict(env, PYTHONPATH=os.pathsep.join([str(directory), env.get("PYTHONPATH", "")]))
    pool = subprocess.Popen(
        [sys.executable, str(directory / "pool.py"), str(log), str(POOL_TASKS), str(TASK_RECORDS)],
        env=env,
        stderr=subprocess.PIPE,
    )
    runner = [sys.executable, "-m", "mplog", "run", "--"] if via_mplog else [sys.executable]
    try:
        for run in range(CRON_RUNS):
            command = [*runner, str(directory / "cron.py"), str(log), f"cron{run}", str(CRON_RECORDS)]
            result = subprocess.run(command, env=env, capture_output=True, timeout=120)
            assert result.returncode == 0, result.stderr.decode()[-2000:]
        _, errors = pool.communicate(timeout=180)
        assert pool.returncode == 0, errors.decode()[-2000:]
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait()


def _expected() -> Dict[str, int]:
    tags = {f"cron{run}": CRON_RECORDS for run in range(CRON_RUNS)}
    tags.update({f"{method}{n}": TASK_RECORDS for method in ("spawn", "fork") for n in range(POOL_TASKS)})
    return tags


def _count(lines: List[str]) -> "tuple[Dict[str, Counter[int]], List[str]]":
    """Per tag, how many times each seq is there; and the lines that are not ``tag seq``."""
    counts: Dict[str, Counter[int]] = {}
    other = []
    for line in lines:
        parts = line.split(" ")
        if len(parts) == 2 and parts[1].isdigit():
            counts.setdefault(parts[0], Counter())[int(parts[1])] += 1
        else:
            other.append(line)
    return counts, other


def _losses(counts: Dict[str, Counter[int]]) -> "tuple[int, int]":
    """Records missing, and records written more than once."""
    missing = sum(1 for tag, n in _expected().items() for seq in range(n) if counts.get(tag, Counter())[seq] == 0)
    duplicated = sum(c - 1 for counter in counts.values() for c in counter.values() if c > 1)
    return missing, duplicated


@pytest.mark.timeout(600)
def test_a_cron_script_and_a_pool_program_log_into_one_server(tmp_path):
    """Five runs of a plain script (through ``mplog run`` with MPLOG_ADDRESS)
    and a spawn and fork Pool program (``mplog.connect()``), each process with
    its own RotatingFileHandler on the server's file: 17,000 records, every
    one once, none torn, and the backups as one writer leaves them. Without
    the server (each process rotating the file itself), the loss is printed."""
    _write_programs(tmp_path)
    log = tmp_path / "app.log"
    with running_server(rotating_config(log, MAX_BYTES), tmp_path) as server:
        _run_programs(tmp_path, log, dict(ENV, MPLOG_ADDRESS=server.address), via_mplog=True)
    counts, other = _count(lines_of(log))
    assert not other, other[:5]
    assert set(counts) == set(_expected())
    assert _losses(counts) == (0, 0)
    rotated = RotatedLog(str(log), MAX_BYTES)
    assert not rotated.not_as_one_writer(), rotated.not_as_one_writer()[:5]
    print(f"with mplog serve: {sum(_expected().values())} records, 0 lost, {len(rotated.backups)} rotations")

    alone = tmp_path / "alone"
    alone.mkdir()
    _write_programs(alone)
    log = alone / "app.log"
    _run_programs(alone, log, ENV, via_mplog=False)
    counts, other = _count(lines_of(log))
    missing, duplicated = _losses(counts)
    rotated = RotatedLog(str(log), MAX_BYTES)
    print(
        f"without: {missing} of {sum(_expected().values())} missing, {duplicated} duplicated, {len(other)} other, "
        f"{len(rotated.backups)} backups, {len(rotated.not_as_one_writer())} not as one writer leaves them"
    )


def _hostile(address: str, kind: int) -> None:
    """One hostile client of kind ``kind``: 0, garbage instead of a hello; with
    a hello and a pipe, then 1, an undecodable frame, 3, a frame header
    claiming 2 GiB; 2, a hello for a route the server does not have;
    4, a request header and a body never sent whole."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        if kind == 0:
            sock.sendall(b"\x00" + os.urandom(63))
            return
        if kind == 4:
            sock.sendall(bytes([0xFB, 0xFF, 0xFF]) + b'{"requ')
            return
        read_end, write_end = os.pipe()
        route = 7 if kind == 2 else 0
        sock.sendmsg([_codec.hello(route)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [read_end]))])
        os.close(read_end)
        sock.settimeout(30)
        if kind == 2:  # a pipe for a route the server does not have: refused at once
            os.close(write_end)
            assert sock.recv(1) == b""
            return
        assert sock.recv(1) == _codec.HELLO_TAKEN
        frames = {
            1: _codec.HEADER.pack(_codec.RECORD_START, 100) + bytes(100),
            3: _codec.HEADER.pack(_codec.RECORD_START, 2**31),
        }
        try:
            os.write(write_end, frames[kind])
        finally:
            os.close(write_end)
    finally:
        sock.close()


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hostile_clients_are_cut_off_and_counted_while_real_clients_lose_nothing(tmp_path):
    """200 hostile connections (garbage, garbage frames, a frame for no route,
    an oversized frame, a request never finished) while the cron script and
    the Pool program log: every hostile one with a pipe or garbage is closed
    and said on the server's stderr; nothing of theirs reaches the file; the
    real clients lose nothing; the server's descriptors come back to where they were."""
    _write_programs(tmp_path)
    log = tmp_path / "app.log"
    with running_server(rotating_config(log, MAX_BYTES), tmp_path) as server:
        assert server.process is not None
        fds_before = _fd_count(server.process.pid)
        done = threading.Event()
        failures: List[BaseException] = []

        def attack() -> None:
            try:
                for n in range(200):
                    _hostile(server.address, n % 5)
            except BaseException as exc:  # reported by the test
                failures.append(exc)
            finally:
                done.set()

        attacker = threading.Thread(target=attack)
        attacker.start()
        _run_programs(tmp_path, log, dict(ENV, MPLOG_ADDRESS=server.address), via_mplog=True)
        attacker.join(120)
        assert done.is_set() and not failures, failures
        closed = lambda: server.stderr().count("; connection closed")  # noqa: E731
        wait_until(lambda: closed() >= 160, "hostile connections closed", timeout=30)
        wait_until(lambda: _fd_count(server.process.pid) <= fds_before + 2, "the server's descriptors", timeout=30)
        print(f"closed: {closed()} of 160 hostile streams; fds {fds_before} -> {_fd_count(server.process.pid)}")
    counts, other = _count(lines_of(log))
    assert not other, other[:5]
    assert _losses(counts) == (0, 0)


ADMITTED = 500


def _client_as(address: str, uid: int, gid: int, tag: str) -> int:
    """In a forked child: become ``uid``/``gid``, connect and log; 3 if it
    cannot reach the socket, 4 if the server refused its user."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    try:
        mplog.connect(address)
    except SetupError as exc:
        print(exc, file=sys.stderr)
        return 4 if "refused this process: its user" in str(exc) else 3
    for seq in range(ADMITTED):
        logging.getLogger("other-user").info("%s %d", tag, seq)
    return 0


@NEEDS_ROOT
@pytest.mark.parametrize("option", ["--allow-group", "--allow-uid"])
def test_another_user_admitted_and_one_refused(tmp_path, second_user, option):
    """``--allow-group G``: a process of uid nobody and group G logs every
    record; one of uid nobody in its own group cannot even connect (the
    socket is 0660, G's). ``--allow-uid U``: a process of U logs every record;
    one of uid nobody reaches the socket (0666) and is refused by
    ``SO_PEERCRED``, said on the server's stderr. A refused connect() raises
    SetupError at once, saying so."""
    nobody = pwd.getpwnam("nobody")
    log = tmp_path / "app.log"
    with running_server(rotating_config(log, MAX_BYTES), tmp_path, option, second_user.pw_name) as server:
        status = os.stat(server.address)
        if option == "--allow-group":
            assert (status.st_mode & 0o777, status.st_gid) == (0o660, second_user.pw_gid)
            admitted = (nobody.pw_uid, second_user.pw_gid)
        else:
            assert status.st_mode & 0o777 == 0o666
            admitted = (second_user.pw_uid, second_user.pw_gid)
        assert run_in_child(_client_as, server.address, *admitted, "admitted") == 0
        refused = 3 if option == "--allow-group" else 4
        assert run_in_child(_client_as, server.address, nobody.pw_uid, nobody.pw_gid, "refused", timeout=5) == refused
        if option == "--allow-uid":
            wait_until(lambda: f"of uid {nobody.pw_uid} (gid {nobody.pw_gid})" in server.stderr(), "the refusal said")
        wait_until(lambda: len(lines_of(log)) >= ADMITTED, "the admitted records")
    counts, other = _count(lines_of(log))
    assert not other and set(counts) == {"admitted"}
    assert sorted(counts["admitted"].elements()) == list(range(ADMITTED))


def test_a_client_cannot_run_a_session_of_its_own(tmp_path):
    """connect() then setup() raises SetupError, and so does connect() in a
    session; a file the server does not write stays the client's own."""
    log = tmp_path / "app.log"
    script = f"""
        import logging, mplog
        from mplog.exceptions import SetupError
        mplog.connect()
        try:
            mplog.setup()
        except SetupError as exc:
            print("refused:", exc)
        mine = logging.FileHandler({str(tmp_path / "mine.log")!r})
        logging.getLogger("mine").addHandler(mine)
        logging.getLogger("mine").warning("kept")
    """
    with running_server(rotating_config(log, MAX_BYTES), tmp_path) as server:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(ENV, MPLOG_ADDRESS=server.address),
        )
    assert result.returncode == 0, result.stderr
    assert "refused: this process is a client of the mplog server at" in result.stdout
    assert f"not configured to write {tmp_path / 'mine.log'}" in result.stderr
    assert (tmp_path / "mine.log").read_text() == "kept\n"
    assert lines_of(log) == ["kept"]  # and, through the root, the server's file
    with mplog.setup(logging.NullHandler()):
        with pytest.raises(SetupError, match="cannot also be a client"):
            mplog.connect(str(tmp_path / "no.sock"))
