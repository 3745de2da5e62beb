"""mplog.FileHandler and rotation: nothing lost, duplicated, torn or filed under
the wrong period, with rotation, compression, logrotate and a full disk."""

from __future__ import annotations

import calendar
import glob
import gzip
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from typing import Dict, List, Tuple

import pytest

import mplog
from mplog import _files
from mplog._rotation import Periods, parse_duration, parse_size
from mplog._targets import route_targets
from tests import workload
from tests.conftest import IN_CI, NEEDS_ROOT, join_all, requires, wait_for_path, wait_until

WORKERS = 8


def _log_for(worker: int, seconds: float, sizes=(100,), pause: float = 0.0) -> None:
    """Log as fast as possible for ``seconds``; the count goes in the last record."""
    logger = logging.getLogger("work")
    end = time.time() + seconds
    seq = 0
    while time.time() < end:
        logger.info("%s", workload.message(worker, seq, sizes[seq % len(sizes)]))
        seq += 1
        if pause:
            time.sleep(pause)
    logger.info("%s", workload.message(worker + 1000, 0, seq))  # "worker w sent seq records"


def _read_lines(path: str) -> List[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as stream:  # type: ignore[operator]
        return stream.read().splitlines()


def _check(lines_by_file: Dict[str, List[str]], workers: int, periods: Periods = None) -> Tuple[int, int]:
    """Every record once and whole; with ``periods``, each in its period's file.
    Lines are ``<created> <message>``. Returns (records, files)."""
    seen: Counter = Counter()
    sent: Dict[int, int] = {}
    for path, lines in lines_by_file.items():
        suffix = os.path.basename(path).split("app.log.", 1)[1] if "app.log." in path else None
        for line in lines:
            created, _, message = line.partition(" ")
            match = workload.LINE.match(message)
            assert match and message == workload.message(int(match[1]), int(match[2]), int(match[3])), line[:200]
            worker, seq = int(match[1]), int(match[2])
            if worker >= 1000:
                sent[worker - 1000] = int(match[3])
                continue
            seen[(worker, seq)] += 1
            if periods is not None and suffix is not None:
                stamp = periods.stamp(periods.start(float(created)))
                assert suffix.startswith(stamp), f"record of {stamp} in {os.path.basename(path)}"
    assert sorted(sent) == list(range(workers)), f"end markers from {sorted(sent)}"
    duplicated = [key for key, n in seen.items() if n > 1]
    assert not duplicated, f"duplicated: {duplicated[:5]}"
    missing = [(w, s) for w, count in sent.items() for s in range(count) if (w, s) not in seen]
    assert not missing, f"{len(missing)} records missing, e.g. {missing[:5]}"
    return sum(seen.values()), len(lines_by_file)


def _workers_in(lines: List[str]) -> set:
    """The workers with a record among ``lines`` (end markers aside)."""
    matches = (workload.LINE.match(line.partition(" ")[2]) for line in lines)
    return {int(match[1]) for match in matches if match and int(match[1]) < 1000}


def _run_workers(seconds: float, sizes=(100,), pause: float = 0.0) -> None:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_log_for, args=(w, seconds, sizes, pause)) for w in range(WORKERS)]
    for process in processes:
        process.start()
    join_all(processes, timeout=seconds + 120)


def _handler(path: str, **options) -> mplog.FileHandler:
    handler = mplog.FileHandler(path, **options)
    handler.setFormatter(logging.Formatter("%(created)r %(message)s"))
    return handler


def _all_files(directory) -> Dict[str, List[str]]:
    return {path: _read_lines(path) for path in glob.glob(os.path.join(str(directory), "app.log*"))}


def _wait_for_retry(handler: mplog.FileHandler) -> None:
    """Wait until the faulted ``handler``'s next write tries the file again
    (``_files.RETRY_SECONDS`` after its last try)."""
    wait_until(lambda: time.monotonic() >= handler._retry_at, "retry time", _files.RETRY_SECONDS + 30)


def test_per_second_rotation_files_every_record_in_its_period(tmp_path):
    """8 workers, 5 s, rotation every second: 0 lost, 0 duplicated, 0 torn, and
    every rotated record in the file of its own second."""
    handler = _handler(tmp_path / "app.log", when="S")
    with mplog.setup(handler, level="INFO"):
        _run_workers(5.0)
    lines_by_file = _all_files(tmp_path)
    _check(lines_by_file, WORKERS, handler.periods)
    # The premise: every worker was logging across the boundaries, i.e. its
    # records are in at least five of the per-second files.
    spread = Counter(worker for lines in lines_by_file.values() for worker in _workers_in(lines))
    assert min(spread[w] for w in range(WORKERS)) >= 5, spread


def test_size_rotation_at_64_kib(tmp_path):
    """8 workers, 5 s, mixed record sizes, rotation at 64 KiB: nothing lost, and
    no file grows past the limit unless a single record is larger."""
    handler = _handler(tmp_path / "app.log", max_bytes="64 KiB")
    with mplog.setup(handler, level="INFO"):
        _run_workers(5.0, sizes=(100, 100, 100, 3000, 70000))
    files = _all_files(tmp_path)
    records, count = _check(files, WORKERS)
    assert count > 50
    for path in files:
        size = os.path.getsize(path)
        assert size <= 64 * 1024 or max(len(line) for line in _read_lines(path)) > 60_000, (path, size)


@pytest.mark.parametrize("listener", ["thread", "process"])
def test_compression_and_retention(tmp_path, listener):
    """Rotated files are valid gzip (compressed in the background, in whichever
    process the listener runs); with the live file they add up to every record;
    backup_count keeps the newest."""
    handler = _handler(tmp_path / "app.log", max_bytes="16 KiB", compress="gzip")
    with mplog.setup(handler, level="INFO", listener=listener):
        _run_workers(1.0, pause=0.0005)
    files = _all_files(tmp_path)
    rotated = [path for path in files if path != str(tmp_path / "app.log")]
    assert rotated and all(path.endswith(".gz") for path in rotated), sorted(files)[:5]
    _check(files, WORKERS)

    kept = _handler(tmp_path / "kept" / "app.log", max_bytes="4 KiB", backup_count=3)
    os.makedirs(tmp_path / "kept")
    stale = tmp_path / "kept" / "app.log.2000-01-01_00-00-00"
    stale.write_text("old\n")
    aged = _handler(tmp_path / "kept" / "app.log", max_age="1d")
    assert aged.max_age == 86400
    with mplog.setup(kept, level="INFO"):
        workload.log_records(0, 2000)
    assert len(kept.rotated_files()) == 3
    assert not stale.exists()  # the oldest went first


@requires(shutil.which("logrotate", path=os.environ.get("PATH", "") + ":/usr/sbin") is not None, "needs logrotate")
@pytest.mark.parametrize("mode", ["create", "copytruncate"])
def test_external_rotation_by_logrotate(tmp_path, mode):
    """logrotate moves (create) or copies and truncates (copytruncate) the file
    under load, five times. create: nothing lost. copytruncate: lines written
    between its copy and its truncate are lost by design; measured, never torn."""
    path = tmp_path / "app.log"
    config = tmp_path / "logrotate.conf"
    config.write_text(f"{path} {{\n  rotate 100\n  {mode}\n  missingok\n}}\n")
    handler = _handler(path)
    with mplog.setup(handler, level="INFO"):
        context = multiprocessing.get_context("fork")
        processes = [context.Process(target=_log_for, args=(w, 3.0, (100,), 0.0002)) for w in range(4)]
        for process in processes:
            process.start()
        for _ in range(5):
            time.sleep(0.5)
            done = subprocess.run(
                ["logrotate", "-f", "-s", str(tmp_path / "state"), str(config)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, f"logrotate failed: {done.stdout}{done.stderr}"
        join_all(processes, timeout=120)
    files = _all_files(tmp_path)
    assert len(files) >= 5
    if mode == "create":
        _check(files, 4)
        return
    tally: Counter = Counter()
    sent: Dict[int, int] = {}
    for line in (line for chunk in files.values() for line in chunk):
        message = line.partition(" ")[2]
        match = workload.LINE.match(message)
        assert match and message == workload.message(int(match[1]), int(match[2]), int(match[3])), line[:200]
        if int(match[1]) >= 1000:
            sent[int(match[1]) - 1000] = int(match[3])
        else:
            tally[(int(match[1]), int(match[2]))] += 1
    assert max(tally.values()) == 1, "copytruncate duplicated a record"
    total = sum(sent.values())
    kept = sum(1 for (worker, _) in tally if worker in sent)
    # The inherent copytruncate window: what is written between logrotate's
    # copy and its truncate is gone. Measured here, stated in the README.
    print(f"\ncopytruncate: {total - kept} of {total} records lost over 5 rotations")
    assert kept > total * 0.5


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs, so the disk really fills up (needs root, as in CI)."""
    if os.getuid() != 0 and not IN_CI:
        pytest.skip("needs root to mount a tmpfs; CI runs as root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("size", [100, 20_000])
def test_disk_full_holds_then_drops_and_counts_exactly(small_disk, capfd, size):
    """ENOSPC: no crash and no hang; records are held up to max_buffer, then
    dropped and counted; when space returns, writing resumes and the log says how
    many were dropped. Lines in the file + the dropped count = records sent.
    With 20,000-byte lines the disk fills in the middle of one (a short write):
    it resumes where it stopped."""
    after = min(100, 200_000 // size)  # records logged once there is room again: they fit
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * (440 * 1024))
    handler = _handler(small_disk / "app.log", max_buffer="32 KiB")
    with mplog.setup(handler, level="INFO"):
        for seq in range(3000):
            logging.getLogger("work").info("%s", workload.message(0, seq, size))
        assert mplog.complete(30)
        assert handler._fault is not None, "the disk never filled up"
        filler.unlink()
        _wait_for_retry(handler)
        for seq in range(3000, 3000 + after):
            logging.getLogger("work").info("%s", workload.message(0, seq, size))
    lines = _read_lines(str(small_disk / "app.log"))
    notices = [line for line in lines if "records were dropped" in line]
    assert len(notices) == 1, notices
    dropped = int(notices[0].split(" ", 2)[1])
    kept = [line for line in lines if "w=0 seq=" in line]
    for line in kept:
        message = line.partition(" ")[2]
        match = workload.LINE.match(message)
        assert match and message == workload.message(0, int(match[2]), size), f"torn: {line[:200]!r}"
    assert len(kept) + dropped == 3000 + after
    assert dropped > 0
    err = capfd.readouterr().err
    assert err.count("No space left on device") == 1 and "writing" in err and "again" in err


def test_directory_removed_then_restored(tmp_path):
    """The log directory disappears under the listener: records are held (within
    the bound), then written once the directory is back; none is lost."""
    directory = tmp_path / "logs"
    directory.mkdir()
    handler = _handler(directory / "app.log")
    with mplog.setup(handler, level="INFO"):
        workload.log_records(0, 100)
        assert mplog.complete()
        for name in os.listdir(directory):
            os.unlink(directory / name)
        directory.rmdir()
        workload.log_records(0, 100, start=100)
        assert mplog.complete()
        assert handler._fault is not None
        directory.mkdir()
        _wait_for_retry(handler)
        workload.log_records(0, 100, start=200)
    seqs = [int(workload.LINE.match(line.partition(" ")[2])[2]) for line in _read_lines(str(directory / "app.log"))]
    assert sorted(seqs) == list(range(100, 300))  # the first 100 went with the removed file


def test_json_lines(tmp_path):
    """JsonFormatter: one object per line, from workers (formatted there) and the parent."""
    handler = mplog.FileHandler(tmp_path / "app.log")
    handler.setFormatter(mplog.JsonFormatter())
    with mplog.setup(handler, level="INFO") as session:
        assert route_targets(session.handlers)[0][0].style == "json"
        process = multiprocessing.get_context("spawn").Process(target=_log_json, args=(mplog.initializer,))
        process.start()
        join_all([process])
        _log_json(None)
    objects = [json.loads(line) for line in _read_lines(str(tmp_path / "app.log"))]
    assert len(objects) == 4
    for document in objects:
        assert {"time", "level", "logger", "process", "thread", "message"} <= set(document)
    plain, failed = objects[0], objects[1]
    assert plain["message"] == "héllo 3 ☃" and plain["user"] == "ada" and plain["level"] == "INFO"
    assert "ValueError: bad" in failed["exception"] and failed["level"] == "ERROR"


def _log_json(initializer) -> None:
    if initializer is not None:
        initializer()
    logging.getLogger("json").info("héllo %d ☃", 3, extra={"user": "ada"})
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("json").exception("failed")


@pytest.mark.parametrize("kind", ["size", "time"])
def test_stdlib_rotating_handlers_lose_nothing_under_mplog(tmp_path, kind):
    """The stdlib's RotatingFileHandler / TimedRotatingFileHandler, given to
    setup(): only the listener rotates, so nothing is lost. (Each of 4 processes
    with its own handler on one file, measured on CPython 3.11-3.13: the
    RotatingFileHandler at 64 KiB lost 1-9% of records per run, to a
    FileNotFoundError swallowed in doRollover; the TimedRotatingFileHandler
    rotating every second lost ~70-79%, and put ~25% of the rest in the wrong
    period's file.)"""
    from logging.handlers import RotatingFileHandler, TimedRotatingFileHandler

    path = str(tmp_path / "app.log")
    if kind == "size":
        handler = RotatingFileHandler(path, maxBytes=64 * 1024, backupCount=100000)
    else:
        handler = TimedRotatingFileHandler(path, when="S", backupCount=100000)
    handler.setFormatter(logging.Formatter("%(created)r %(message)s"))
    with mplog.setup(handler, level="INFO"):
        _run_workers(3.0)
    records, files = _check(_all_files(tmp_path), WORKERS)
    assert files > 2


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_bytes": "ten"}, "max_bytes must be a size"),
        ({"max_bytes": "10 ib"}, "max_bytes must be a size"),
        ({"max_buffer": "1 IB"}, "max_buffer must be a size"),
        ({"max_age": "5 \u017f"}, "max_age must be seconds"),
        ({"max_bytes": -1}, "max_bytes must be positive"),
        ({"when": "X"}, "when must be one of"),
        ({"when": "M", "interval": 7}, "does not divide a day"),
        ({"when": "H", "interval": 0}, "interval must be a positive int"),
        ({"backup_count": -1}, "backup_count must be a non-negative int"),
        ({"max_age": "forever"}, "max_age must be seconds"),
        ({"compress": "zip"}, "compress must be None or 'gzip'"),
        ({"compress_delay": "5m"}, "compress_delay='5m' needs compress='gzip'"),
        ({"compress": "gzip", "compress_delay": "soon"}, "compress_delay must be seconds"),
        ({"compress": "gzip", "compress_delay": 0}, "compress_delay must be positive"),
        ({"max_buffer": "lots"}, "max_buffer must be a size"),
        ({"encoding": "klingon"}, "unknown encoding"),
    ],
)
def test_bad_options_raise_value_error(tmp_path, options, message):
    """Options are parsed once, at construction, with a message naming the problem."""
    with pytest.raises(ValueError, match=message):
        mplog.FileHandler(tmp_path / "app.log", **options)


def test_compress_delay_leaves_rotated_files_readable_until_due(tmp_path):
    """With ``compress_delay``, rotated files stay uncompressed under their
    rotated names, also once the handler has closed (it does not compress
    what is not due); the next handler of the log compresses them when due,
    and every record is in the files once."""
    path = tmp_path / "app.log"
    waiting = _handler(path, max_bytes="4 KiB", compress="gzip", compress_delay="1h")
    with mplog.setup(waiting, level="INFO"):
        workload.log_records(0, 1000)
    rotated = waiting.rotated_files()
    assert len(rotated) > 10 and not any(name.endswith(".gz") for name in rotated), rotated[:5]
    assert _records(tmp_path) == Counter(range(1000))
    resumed = _handler(path, max_bytes="4 KiB", compress="gzip", compress_delay=0.5)
    with mplog.setup(resumed, level="INFO"):
        workload.log_records(0, 10, start=1000)
        wait_until(lambda: all(name.endswith(".gz") for name in resumed.rotated_files()), "compression", 60)
    assert len(resumed.rotated_files()) >= len(rotated)
    assert _records(tmp_path) == Counter(range(1010))


def _records(directory) -> "Counter[int]":
    """The sequence numbers of worker 0's records in the log's files, each as
    often as found (lines are ``<created> <message>``; a torn one fails)."""
    found: Counter = Counter()
    for lines in _all_files(directory).values():
        for line in lines:
            message = line.partition(" ")[2]
            match = workload.LINE.match(message)
            assert match and message == workload.message(0, int(match[2]), int(match[3])), line[:200]
            found[int(match[2])] += 1
    return found


@pytest.mark.parametrize(
    "value",
    ["10 ib", "10 i", "10 iB", "1 IB", "10 bi", "10 KiBs", "10 kb b", "ten", "", " ", "MiB", "-5", "1e3", "1,5 KiB"],
)
def test_a_size_that_cannot_be_parsed_names_the_option(value):
    """Every unparsable size is the ValueError naming the option and what was
    expected ("10 ib" used to escape as str.index's "substring not found")."""
    expected = f"max_bytes must be a size in bytes or a string like '10 MiB', got {value!r}"
    with pytest.raises(ValueError) as raised:
        parse_size(value, "max_bytes")
    assert str(raised.value) == expected


@pytest.mark.parametrize("value", [True, 1.5, None, b"10", [10]])
def test_a_size_of_the_wrong_type_names_the_option(value):
    """Only ints and strings are sizes: anything else names the option too."""
    with pytest.raises(ValueError, match=r"^max_buffer must be a size in bytes or a string like '10 MiB', got "):
        parse_size(value, "max_buffer")


@pytest.mark.parametrize("value", ["5 \u017f", "5 ms", "5 y", "7 days", "", "d", True, None, b"5"])
def test_a_duration_that_cannot_be_parsed_names_the_option(value):
    """Every unparsable duration is the ValueError naming the option ("5 \u017f",
    a long s that matches [smhdw] ignoring case, used to escape as a KeyError)."""
    with pytest.raises(ValueError) as raised:
        parse_duration(value, "max_age")
    assert str(raised.value) == f"max_age must be seconds or a string like '7d', got {value!r}"


@pytest.mark.parametrize("value, name", [(0, "max_bytes"), ("0 KiB", "max_bytes"), ("0.0001 b", "max_buffer")])
def test_a_size_that_is_not_positive_names_the_option(value, name):
    """Zero, or a fraction of a byte, is refused as not positive."""
    with pytest.raises(ValueError) as raised:
        parse_size(value, name)
    assert str(raised.value) == f"{name} must be positive, got {value!r}"


def test_sizes_durations_and_aligned_periods():
    """Units parse as documented; periods align to the clock, not to start time."""
    assert parse_size("64 KiB", "x") == 65536 and parse_size("10MB", "x") == 10_000_000
    assert parse_size(512, "x") == 512 and parse_size("1 GiB", "x") == 1 << 30
    assert parse_size("0.5 KiB", "x") == 512 and parse_size("2 k", "x") == 2000 and parse_size("3 B", "x") == 3
    assert parse_size(" 1.5 mib ", "x") == 1572864 and parse_size("1 Ti", "x") == 1 << 40 and parse_size("7", "x") == 7
    assert parse_duration("7d", "x") == 7 * 86400 and parse_duration(90, "x") == 90
    assert parse_duration("1.5 h", "x") == 5400 and parse_duration("2W", "x") == 14 * 86400
    assert parse_duration(0.25, "x") == 0.25 and parse_duration("30", "x") == 30 and parse_duration("2m", "x") == 120
    moment = calendar.timegm((2026, 11, 25, 10, 37, 12, 0, 0, 0))  # a Wednesday
    at = lambda *fields: calendar.timegm((2026, 11, *fields, 0, 0, 0))  # noqa: E731
    assert Periods("M", 15, utc=True).start(moment) == at(25, 10, 30, 0)
    assert Periods("M", 15, utc=True).end(at(25, 10, 30, 0)) == at(25, 10, 45, 0)
    assert Periods("S", 5, utc=True).start(moment) == at(25, 10, 37, 10)
    assert Periods("H", 6, utc=True).start(moment) == at(25, 6, 0, 0)
    assert Periods("midnight", utc=True).start(moment) == at(25, 0, 0, 0)
    assert Periods("midnight", utc=True).end(at(25, 0, 0, 0)) == at(26, 0, 0, 0)
    assert Periods("W0", utc=True).start(moment) == at(23, 0, 0, 0)  # Monday
    assert Periods("H", 1, utc=True).end(at(25, 23, 0, 0)) == at(26, 0, 0, 0)


@pytest.mark.parametrize("listener", ["thread", "process"])
def test_reopen_files_after_the_file_was_moved(tmp_path, listener):
    """Session.reopen_files() (what gunicorn's SIGUSR1 calls with mplog.gunicorn.Logger)
    makes a stdlib FileHandler write to a new file after logrotate moved the old one."""
    path = tmp_path / "app.log"
    with mplog.setup(_stdlib_handler(path), level="INFO") as session:
        workload.log_records(0, 10)
        wait_until(lambda: path.exists() and path.read_bytes().count(b"\n") == 10, "10 lines written", 30)
        os.rename(path, tmp_path / "app.log.1")
        session.reopen_files()
        wait_for_path(path)  # reopened: at once, or at a listener process's next wake-up
        workload.log_records(0, 10, start=10)
    assert _seqs(tmp_path / "app.log.1") == list(range(10))
    assert _seqs(path) == list(range(10, 20))


def _stdlib_handler(path) -> logging.FileHandler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(created)r %(message)s"))
    return handler


def _seqs(path) -> List[int]:
    return [int(workload.LINE.match(line.partition(" ")[2])[2]) for line in _read_lines(str(path))]


AS_NOBODY = """
import logging, os, sys, time
sys.path.insert(0, {root!r})
import mplog
from tests import workload
# Everything is imported first: the interpreter's files may be out of reach
# for uid nobody (e.g. under /root).
os.setgid(65534)
os.setuid(65534)

directory, signals = {directory!r}, {signals!r}

def signal(name):
    open(os.path.join(signals, name), "w").close()

def wait(name):
    while not os.path.exists(os.path.join(signals, name)):
        time.sleep(0.01)

def wait_for_retry():
    # Until the faulted handler's next write tries the file again.
    deadline = time.monotonic() + mplog._files.RETRY_SECONDS + 30
    while time.monotonic() < handler._retry_at:
        assert time.monotonic() < deadline, "retry time not within the deadline"
        time.sleep(0.005)

handler = mplog.FileHandler(os.path.join(directory, "app.log"), max_buffer=4000)
handler.setFormatter(logging.Formatter("%(created)r %(message)s"))
with mplog.setup(handler, level="INFO"):
    workload.log_records(0, 100)
    assert mplog.complete()
    signal("logged")
    wait("locked")  # the file is gone and the directory is not ours any more
    workload.log_records(0, 100, start=100)
    assert mplog.complete()
    assert isinstance(handler._fault, PermissionError), handler._fault
    signal("faulted")
    wait("writable")
    wait_for_retry()
    workload.log_records(0, 100, start=200)
"""


@pytest.fixture
def world_readable_dir():
    """A directory uid nobody can reach (pytest's tmp_path is inside a 0700 one)."""
    import shutil
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp(prefix="mplog-test-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@NEEDS_ROOT
def test_permission_denied_holds_drops_and_resumes(world_readable_dir):
    """EACCES (the file removed, the directory no longer writable for the
    listener's user): held up to the bound, the rest dropped and counted, and
    written again once the directory is writable."""
    directory, signals = world_readable_dir / "logs", world_readable_dir / "signals"
    for path in (directory, signals):
        path.mkdir()
        os.chown(path, 65534, 65534)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = AS_NOBODY.format(root=root, directory=str(directory), signals=str(signals))
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        wait_for_path(signals / "logged")
        os.unlink(directory / "app.log")
        os.chown(directory, 0, 0)  # 0755 root: closed to nobody
        (signals / "locked").touch()
        wait_for_path(signals / "faulted")
        os.chown(directory, 65534, 65534)
        (signals / "writable").touch()
        assert child.wait(60) == 0, child.stderr.read().decode()[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
    lines = _read_lines(str(directory / "app.log"))
    notices = [line for line in lines if "records were dropped" in line]
    dropped = int(notices[0].split(" ", 2)[1]) if notices else 0
    seqs = [int(workload.LINE.match(line.partition(" ")[2])[2]) for line in lines if "w=0 seq=" in line]
    # The first 100 went with the removed file; of the next 100, what fit in
    # max_buffer was held and written, the rest dropped and counted.
    assert seqs[-100:] == list(range(200, 300))
    assert len([s for s in seqs if 100 <= s < 200]) + dropped == 100 and dropped > 0
    assert child.stderr.read().decode().count("Permission denied") == 1
