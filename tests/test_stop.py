"""Stopping while a worker still logs: every record is in the file or on the
worker's stderr, exactly once, and the file holds an unbroken prefix."""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import time

import pytest

import mplog
from mplog import _server
from tests import workload
from tests.conftest import (
    blocked_in_pipe_write,
    file_handler,
    fork_running,
    killed_on_error,
    wait_for_path,
    wait_pid,
    wait_until,
)

# Records the child logs after it has noticed the stop (its handler fell back to stderr).
AFTER_THE_STOP = 50


def _stderr_into(path: str) -> None:
    """Send this process's stderr (the fd and ``sys.stderr``) to ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    sys.stderr = open(2, "w", closefd=False)


def _log_through_the_stop(stderr_path: str, count_path: str, started_path: str, sizes) -> None:
    """A forked child: log until well after the listener has gone, with this
    process's stderr in a file; then write how many records were logged."""
    _stderr_into(stderr_path)
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, mplog.QueueHandler)]
    logger = logging.getLogger(workload.LOGGER)
    seq = after = 0
    while after < AFTER_THE_STOP and seq < 10**6:
        logger.info("%s", workload.message(0, seq, sizes[seq % len(sizes)]))
        seq += 1
        if seq == 100:
            open(started_path, "w").close()
        if any(h._fallback is not None for h in handlers):
            after += 1
    sys.stderr.flush()
    with open(count_path, "w") as stream:
        stream.write(str(seq))


def _seqs_on_stderr(path: str) -> list:
    """The workload records the fallback handler wrote, in order."""
    seqs = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            if line.startswith("mplog:"):
                continue  # the one notice that the listener is gone
            body = line.rstrip("\n").split(f" {workload.LOGGER}: ", 1)[1]
            match = workload.LINE.match(body)
            assert match is not None and body == workload.message(0, int(match[2]), int(match[3])), line[:200]
            seqs.append(int(match[2]))
    return seqs


@pytest.mark.parametrize("listener", ["thread", "process"])
@pytest.mark.parametrize("sizes", [(100,), (100, 100_000)], ids=["100B", "100KB"])
def test_a_worker_logging_through_the_stop_loses_nothing(tmp_path, listener, sizes):
    """A child logs flat out while the parent stops the listener, 10 times: the
    file holds its records 0..a-1, its stderr a..K-1, none twice, none torn."""
    rng = random.Random(7)
    for trial in range(10):
        log_path, stderr_path = str(tmp_path / f"{trial}.log"), str(tmp_path / f"{trial}.err")
        count_path, started_path = str(tmp_path / f"{trial}.count"), str(tmp_path / f"{trial}.started")
        with mplog.setup(file_handler(log_path), level="INFO", listener=listener):
            pid = fork_running(_log_through_the_stop, stderr_path, count_path, started_path, sizes)
            wait_for_path(started_path)
            if rng.random() < 0.5:
                os.sched_yield()
        assert wait_pid(pid) == 0
        logged = int(open(count_path).read())
        in_file = workload.tally(log_path)
        assert not in_file.torn and not in_file.other, (in_file.torn + in_file.other)[:3]
        delivered = sorted(in_file.seqs.get(0, {}))
        assert not in_file.duplicated()
        assert delivered == list(range(len(delivered))), f"trial {trial}: a gap in the file"
        assert _seqs_on_stderr(stderr_path) == list(range(len(delivered), logged)), f"trial {trial}"


def test_a_seal_fills_an_empty_pipe_and_never_joins_a_writers_bytes():
    """The stop's seal: an empty pipe is filled (no write can go in), while a
    pipe holding one byte of a writer's gets no padding at all."""
    read_end, write_end = os.pipe()
    padder = os.open(f"/proc/self/fd/{read_end}", os.O_WRONLY | os.O_NONBLOCK)
    os.set_blocking(write_end, False)
    try:
        assert _server.seal(read_end, padder)
        with pytest.raises(BlockingIOError):
            os.write(write_end, b"x")
        assert os.read(read_end, 1 << 20) == bytes(os.sysconf("SC_PAGE_SIZE"))
        os.write(write_end, b"x")
        assert not _server.seal(read_end, padder)
        assert os.read(read_end, 1 << 20) == b"x"
    finally:
        for fd in (read_end, write_end, padder):
            os.close(fd)


def _write_one_huge_record(stderr_path: str, size: int, ready_path: str, go_path: str) -> None:
    """A forked child: opens its pipe, says so with ``ready_path``, waits for
    ``go_path``, then logs one record far larger than a pipe, then a small one."""
    _stderr_into(stderr_path)
    workload.open_pipe()
    open(ready_path, "w").close()
    wait_for_path(go_path)
    logger = logging.getLogger(workload.LOGGER)
    logger.info("%s", workload.message(0, 0, size))
    logger.info("%s", workload.message(0, 1, 10))
    sys.stderr.flush()


def test_a_writer_stopped_mid_frame_delays_the_stop_boundedly_and_loses_nothing(tmp_path):
    """A worker SIGSTOPped in the middle of writing a 4 MB record holds the stop
    for at most its bound; the part the listener had is discarded and reported,
    and once the worker runs again the whole record goes to its stderr."""
    log_path, stderr_path = str(tmp_path / "app.log"), str(tmp_path / "err")
    ready, go = str(tmp_path / "ready"), str(tmp_path / "go")
    size = 4 * 1024 * 1024
    with mplog.setup(file_handler(log_path), level="INFO") as session:
        pid = fork_running(_write_one_huge_record, stderr_path, size, ready, go)
        with killed_on_error(pid):
            wait_for_path(ready)  # the listener has taken its pipe
            with session.listener._busy:  # the listener reads nothing: the worker's pipe fills
                open(go, "w").close()
                wait_until(lambda: blocked_in_pipe_write(pid), "the worker blocking in the middle of its write", 30)
                os.kill(pid, signal.SIGSTOP)
    stopping = time.monotonic()
    took = time.monotonic() - stopping
    os.kill(pid, signal.SIGCONT)
    assert wait_pid(pid) == 0
    assert took < _server.DRAIN_SECONDS + 1.0
    text = open(log_path, encoding="utf-8").read()
    assert "bytes received were discarded" in text and workload.message(0, 0, size) not in text
    assert _seqs_on_stderr(stderr_path) == [0, 1]


class _Slow(logging.FileHandler):
    """A file handler that takes 20 ms per record, and keeps returning."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(0.02)
        super().emit(record)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_stop_waits_for_a_slow_handler_that_keeps_returning(log_path, capfd, listener):
    """drain_timeout=1 and 150 records that take 3 s to write: stop() waits
    for them all (the handler returns every 20 ms), and says nothing."""
    handler = _Slow(log_path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    with mplog.setup(handler, level="INFO", listener=listener, drain_timeout=1.0):
        workload.log_records(0, 150)
    workload.tally(log_path).assert_complete({0: 150})
    assert "mplog" not in capfd.readouterr().err
