"""Resource limits and malformed input: a listener out of file descriptors
turns workers away until it can take their pipes whole, and no frame, however
malformed or large, takes the listener's memory or its life."""

from __future__ import annotations

import os
import re
import resource
import sys

import pytest

import mplog
from tests import workload
from tests.conftest import file_handler, fork_running, run_in_child, wait_pid

# The reproducer: a listener process limited to 64 descriptors, and
# more workers than that released at once, each logging 1,000 records.
FD_LIMIT = 64
WORKERS = 80
RECORDS = 1000
STDERR_RECORD = re.compile(r"w=(\d+) seq=(\d+) size=")


def _stderr_records(path: str) -> list:
    """The workload records that went to stderr (after the fallback's prefix)."""
    with open(path, encoding="utf-8", errors="replace") as stream:
        return [match.groups() for match in map(STDERR_RECORD.search, stream) if match]


def _to_stderr_file(path: str) -> None:
    """Send this process's stderr, and its children's, to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - stays open for the process's life


def _released_worker(worker: int, go_r: int, go_w: int) -> None:
    """Wait until every worker has been forked, then log."""
    os.close(go_w)
    os.read(go_r, 1)  # EOF once the parent closes its end: all start together
    workload.log_records(worker, RECORDS)


def _own_listener_at_fd_limit(log_path: str, err_path: str, listener: str) -> int:
    """In a forked child: limit it to FD_LIMIT descriptors (hard limit too, so
    the listener cannot raise it), start mplog, fork WORKERS workers and
    release them together. 0 if every worker exited cleanly."""
    _to_stderr_file(err_path)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    with mplog.setup(file_handler(log_path), level="INFO", listener=listener):
        go_r, go_w = os.pipe()  # after the listener process forked: it must not hold the write end
        pids = [fork_running(_released_worker, worker, go_r, go_w) for worker in range(WORKERS)]
        os.close(go_w)
        os.close(go_r)
        codes = [wait_pid(pid, 120) for pid in pids]
    return 0 if codes == [0] * WORKERS else 2


@pytest.mark.parametrize("listener", ["thread", "process"])
def test_a_listener_out_of_descriptors_loses_no_record(tmp_path, listener):
    """80 workers start logging at once at a listener limited to 64 open files:
    it cannot hold every pipe at once, so it turns workers away until a
    descriptor is free, and each retries; every record reaches the file, none
    goes to stderr or nowhere."""
    log_path, err_path = str(tmp_path / "app.log"), str(tmp_path / "stderr")
    assert run_in_child(_own_listener_at_fd_limit, log_path, err_path, listener, timeout=180) == 0
    on_stderr = set(_stderr_records(err_path))
    tally = workload.tally(log_path)
    in_file = {(str(w), str(s)) for w, seqs in tally.seqs.items() for s in seqs}
    nowhere = WORKERS * RECORDS - len(in_file | on_stderr)
    assert not on_stderr and not nowhere, f"{len(on_stderr)} records went to stderr, {nowhere} nowhere"
    tally.assert_complete({worker: RECORDS for worker in range(WORKERS)})
    # The premise: the limit was reached, and the listener said so in the log.
    assert any("descriptors" in line for line in tally.other), tally.other[-5:]
