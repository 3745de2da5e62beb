"""``mplog serve`` restarted under its clients' load: SIGKILLed (several
times, at random points), or SIGTERMed (it drains), and started again on the
same socket. The clients (separate interpreters) hold what the server did not
confirm, reconnect by themselves and send it again; the restarted server cuts
its files back to its journal and skips what was written: every record is
counted in the files, rotated ones included, exactly once. A store too small
for the time the server is away drops records, exactly as many as the client
says on its stderr."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests.conftest import wait_until
from tests.serving import ENV, FORMAT, Server, lines_of, rotating_config, said_sent_again, socket_directory

CLIENTS = 2
RECORDS = 20_000

CLIENT = """
import logging, sys, time
import mplog

mplog.connect(sys.argv[1])
tag, count, pause = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
log = logging.getLogger("load")
for seq in range(count):
    log.info("%s %d", tag, seq)
    if pause and seq % 100 == 99:
        time.sleep(pause)
"""


def start_clients(
    address: str, tags: List[str], count: int, pause: float, env: Dict[str, str]
) -> List[subprocess.Popen]:
    """Client processes logging ``count`` records each; their stderr is piped."""
    return [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CLIENT), address, tag, str(count), str(pause)],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for tag in tags
    ]


def finish(clients: List[subprocess.Popen]) -> str:
    """Wait for the clients (each must exit 0); their stderr, joined."""
    errors = []
    for client in clients:
        _, err = client.communicate(timeout=60)
        assert client.returncode == 0, err[-3000:]
        errors.append(err)
    return "".join(errors)


def counted(log: Path, tags: List[str], count: int) -> Dict[str, Counter]:
    """Per tag, how many times each sequence number is in the files; fails on a torn line."""
    found: Dict[str, Counter] = {tag: Counter() for tag in tags}
    for line in lines_of(log):
        tag, seq = line.split(" ")
        assert tag in found and 0 <= int(seq) < count, f"torn or foreign line {line!r}"
        found[tag][int(seq)] += 1
    return found


def lines_in(log: Path) -> int:
    return len(lines_of(log))


def restarted(tmp_path: Path, kill: bool, env: Optional[Dict[str, str]] = None) -> Tuple[Dict[str, Counter], int]:
    """Run CLIENTS clients of RECORDS records; kill or stop the server once
    a quarter of them are in, start it again; the records found, per
    client, and how many the clients said they sent again unconfirmed."""
    log = tmp_path / "app.log"
    server = Server(rotating_config(log, max_bytes=200_000), tmp_path, socket_directory(), ())
    tags = [f"c{n}" for n in range(CLIENTS)]
    server.start()
    try:
        clients = start_clients(server.address, tags, RECORDS, 0.001, env or ENV)
        wait_until(lambda: lines_in(log) >= CLIENTS * RECORDS // 4, "a quarter of the records", poll=0.05)
        assert server.process is not None
        assert all(client.poll() is None for client in clients), "the clients finished before the restart"
        if kill:
            server.kill()
        else:
            server.stop()
        time.sleep(0.5)  # clients keep logging while it is away
        server.start()
        stderr = finish(clients)
        assert "cannot reach" not in stderr, stderr[-2000:]
    finally:
        server.stop()
    resent = said_sent_again(stderr)
    return counted(log, tags, RECORDS), resent


def missing_and_twice(found: Dict[str, Counter], count: int = RECORDS) -> Tuple[int, int]:
    """How many of ``count`` records per client are not in the files, and
    how many are there more than once."""
    missing = twice = 0
    for tag, seqs in found.items():
        lost = sum(1 for seq in range(count) if seqs[seq] == 0)
        doubled = sum(n - 1 for n in seqs.values() if n > 1)
        print(f"{tag}: {len(seqs)} of {count} found, {lost} missing, {doubled} written twice")
        missing, twice = missing + lost, twice + doubled
    return missing, twice


def kill_config(handlers: str, log: Path, copy: Path) -> Dict[str, Any]:
    """The root's records in ``log``, rotated at 20 kB: by a stdlib
    ``RotatingFileHandler`` (it formats records), by an ``mplog.FileHandler``
    alone (it writes the clients' text frames), or by one with a stdlib
    ``FileHandler`` writing ``copy`` too (lines the clients formatted; two
    lanes, one route)."""
    if handlers == "stdlib-rotating":
        config = rotating_config(log, max_bytes=20_000)
        config["handlers"]["app"]["backupCount"] = 1000  # its rollover looks for each of them
        return config
    chosen = {"app": {"class": "mplog.FileHandler", "filename": str(log), "max_bytes": 20_000, "formatter": "plain"}}
    if handlers == "mplog+stdlib":
        chosen["copy"] = {"class": "logging.FileHandler", "filename": str(copy), "formatter": "plain"}
    return {
        "version": 1,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": chosen,
        "root": {"handlers": list(chosen), "level": "INFO"},
    }


def counted_files(log: Path, tags: List[str], count: int) -> Tuple[Dict[str, Counter], int]:
    """As :func:`counted`, over ``log`` and every rotated file of it
    (whatever their names); and how many rotated files there are."""
    found: Dict[str, Counter] = {tag: Counter() for tag in tags}
    files = [path for path in log.parent.glob(log.name + "*") if path.is_file()]
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            tag, seq = line.split(" ")
            assert tag in found and 0 <= int(seq) < count, f"torn or foreign line {line!r} in {path}"
            found[tag][int(seq)] += 1
    return found, len(files) - 1


def newlines_in(log: Path) -> int:
    """How many lines ``log`` and its rotated files hold (whatever their names)."""
    total = 0
    for path in log.parent.glob(log.name + "*"):
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:  # rotated away meanwhile
            pass
    return total


KILLS = 3
KILL_RECORDS = 10_000


@pytest.mark.timeout(180)
@pytest.mark.parametrize("handlers", ["stdlib-rotating", "mplog-alone", "mplog+stdlib"])
def test_sigkilled_several_times_exactly_once(tmp_path: Path, handlers: str) -> None:
    """Killed three times at random points under two clients' load, and
    started again each time: every record exactly once in every file
    (rotated ones included), none lost, none twice."""
    seed = int(os.environ.get("MPLOG_TEST_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    log, copy = tmp_path / "app.log", tmp_path / "copy.log"
    server = Server(kill_config(handlers, log, copy), tmp_path, socket_directory(), ())
    tags = [f"c{n}" for n in range(CLIENTS)]
    server.start()
    try:
        clients = start_clients(server.address, tags, KILL_RECORDS, 0.01, ENV)
        for fraction in sorted(rng.uniform(0.05, 0.7) for _ in range(KILLS)):
            at = int(CLIENTS * KILL_RECORDS * fraction)
            wait_until(lambda at=at: newlines_in(log) >= at, f"{at} records", poll=0.01)  # type: ignore[misc]
            assert any(client.poll() is None for client in clients), "the clients finished before the kill"
            server.kill()
            time.sleep(rng.uniform(0.02, 0.2))  # clients keep logging while it is away
            server.start()
        stderr = finish(clients)
        assert "cannot reach" not in stderr, stderr[-2000:]
    finally:
        server.stop()
    resent = said_sent_again(stderr)
    took_back = server.stderr().count("took back")
    print(f"seed {seed}; sent again unconfirmed (said): {resent}; restarts that took back a tail: {took_back}")
    for path in [log, copy] if handlers == "mplog+stdlib" else [log]:
        found, rotated = counted_files(path, tags, KILL_RECORDS)
        print(f"{path.name}: {rotated} rotated files")
        twice = missing_and_twice(found, KILL_RECORDS)
        assert twice == (0, 0), f"seed {seed}; the server said: {server.stderr()[-3000:]}"


@pytest.mark.timeout(120)
def test_sigtermed_and_restarted(tmp_path: Path) -> None:
    """A server that stops drains: every record exactly once, none sent again unconfirmed."""
    found, resent = restarted(tmp_path, kill=False)
    assert missing_and_twice(found) == (0, 0)
    assert resent == 0


@pytest.mark.timeout(120)
def test_store_full_drops_and_counts(tmp_path: Path) -> None:
    """A 20,000-byte store, dropping when full, and the server away for 1.5 s:
    records are dropped, and the files miss exactly as many as the client said."""
    log = tmp_path / "app.log"
    server = Server(rotating_config(log, max_bytes=200_000), tmp_path, socket_directory(), ())
    env = dict(ENV, MPLOG_HOLD_BYTES="20000", MPLOG_WHEN_FULL="drop")
    server.start()
    try:
        clients = start_clients(server.address, ["c0"], RECORDS, 0.002, env)
        wait_until(lambda: lines_in(log) >= RECORDS // 10, "a tenth of the records", poll=0.05)
        assert clients[0].poll() is None, "the client finished before the server stopped"
        server.stop()
        time.sleep(1.5)
        server.start()
        stderr = finish(clients)
    finally:
        server.stop()
    said = sum(int(n) for n in re.findall(r"dropped (\d+) record\(s\)", stderr))
    seqs = counted(log, ["c0"], RECORDS)["c0"]
    missing = sum(1 for seq in range(RECORDS) if seqs[seq] == 0)
    print(f"dropped (said): {said}, missing: {missing}, found: {len(seqs)} of {RECORDS}")
    assert said > 0
    assert missing == said
    assert all(n == 1 for n in seqs.values())
