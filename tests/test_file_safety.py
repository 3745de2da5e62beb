"""Log files in a directory another user can write to, with the listener
running as root: nothing that user plants (a symbolic link, a FIFO) makes
mplog write, truncate or reveal a file it should not, or hang; and rotated,
compressed and new live files keep the mode and owner of the file they come
from, so a ``chmod 600`` log stays unreadable to others after a rotation.

The other user is a real one (``useradd``), acting from forked children that
switch to its uid."""

from __future__ import annotations

import gzip
import logging
import multiprocessing
import os
import pwd
import shutil
import stat
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, Iterator, List, Tuple

import pytest

import mplog
from mplog._rotation import gzip_file
from tests import workload
from tests.conftest import NEEDS_ROOT, join_all, run_in_child, wait_until

pytestmark = NEEDS_ROOT

SECRET = b"root only: not for the log directory's other users\n"


@pytest.fixture
def shared(second_user) -> Iterator[SimpleNamespace]:
    """A log directory, 0775 and of the other user's group (so that user can
    put anything in it), and beside it a root-only file of known content."""
    base = Path(tempfile.mkdtemp(prefix="mplog-test-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)  # reachable by the other user (pytest's tmp_path is not)
        logs = base / "logs"
        logs.mkdir()
        os.chown(logs, 0, second_user.pw_gid)
        os.chmod(logs, 0o775)
        victim = base / "victim"
        victim.write_bytes(SECRET)
        os.chmod(victim, 0o600)
        yield SimpleNamespace(logs=logs, log=logs / "app.log", victim=victim, user=second_user)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _as_user(user: pwd.struct_passwd, action: Callable[..., object], *args: object) -> int:
    """In a forked child, become ``user`` (groups, gid, then uid) and run
    ``action(*args)``; return the child's exit code (0: it did not raise)."""

    def body() -> None:
        os.setgroups([])
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        action(*args)

    return run_in_child(body)


def _can_read(user: pwd.struct_passwd, path: str) -> bool:
    """Whether ``user`` can open ``path`` for reading (tried as that user)."""

    def read() -> None:
        try:
            with open(path, "rb"):
                pass
        except PermissionError:
            os._exit(13)

    code = _as_user(user, read)
    assert code in (0, 13), f"reading {path} as {user.pw_name} failed otherwise: exit code {code}"
    return code == 0


def _victim_untouched(shared: SimpleNamespace) -> None:
    st = os.lstat(shared.victim)
    assert stat.S_ISREG(st.st_mode) and shared.victim.read_bytes() == SECRET, "the root-only file was written"
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)


def _handler(path: Path, **options: object) -> mplog.FileHandler:
    handler = mplog.FileHandler(path, **options)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _lines(worker: int, seqs: range, created: float) -> List[Tuple[float, str]]:
    """Workload lines, each with the record time ``created``, as the listener
    hands them to ``FileHandler.write_lines``."""
    return [(created, workload.message(worker, seq, 100)) for seq in seqs]


def _tally(paths: List[Path]) -> workload.Tally:
    """What ``paths`` (gzip or not) hold together, counted by worker and sequence."""
    plain = Path(tempfile.mkdtemp(prefix="mplog-tally-"))
    try:
        whole = plain / "all"
        with open(whole, "wb") as out:
            for path in paths:
                out.write(gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes())
        return workload.tally(str(whole))
    finally:
        shutil.rmtree(plain)


def _mode_and_owner(path: Path) -> Tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


# --- item 5: links and FIFOs planted by another user -------------------------------------------


def test_a_link_planted_at_the_compressors_temporary_is_not_followed(shared):
    """The other user links ``<log>.<stamp>.gz.tmp`` to a root-only file before
    the period is rotated and compressed: that file is untouched, and the
    compression still happens (the link is removed, not followed), every line
    in the archive or the live file."""
    handler = _handler(shared.log, when="D", compress="gzip")
    now = time.time()
    today = handler.periods.start(now)
    tomorrow = handler.periods.end(today) + 1
    planted = f"{shared.log}.{handler.periods.stamp(today)}.gz.tmp"
    assert _as_user(shared.user, os.symlink, str(shared.victim), planted) == 0
    handler.write_lines(_lines(0, range(1000), now) + _lines(0, range(1000, 1010), tomorrow))
    handler.close()  # compresses what waits, at once
    _victim_untouched(shared)
    archive = Path(planted[: -len(".tmp")])
    assert sorted(os.listdir(shared.logs)) == sorted(["app.log", archive.name])
    _tally([archive]).assert_complete({0: 1000})
    assert _tally([shared.log]).missing(0, range(1000, 1010)) == []


def _plant(kind: str, target: str, path: str) -> None:
    """As the other user: put a ``kind`` ("link" to ``target``, or "fifo") at
    ``path``, moving what is there aside first (to ``path + ".moved"``)."""
    if os.path.lexists(path):
        os.rename(path, path + ".moved")
    if kind == "link":
        os.symlink(target, path)
    else:
        os.mkfifo(path, 0o666)


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_link_or_fifo_planted_at_the_live_file_is_not_written(shared, capfd, kind):
    """The other user moves the live file aside and puts a link to a root-only
    file (or a FIFO nobody reads) in its place. The next write neither follows
    the link nor hangs on the FIFO: it is refused, said once on stderr, and the
    lines are held; once an administrator removes the plant, they are written.
    Every line is in the moved file or the new one. A link of root's own (the
    directory owner's) is still followed."""
    assert run_in_child(_live_file_attack, shared, kind, timeout=60) == 0
    _victim_untouched(shared)
    err = capfd.readouterr().err
    assert err.count(f"mplog: cannot write {shared.log}") == 1, err
    assert err.count(f"mplog: writing {shared.log} again") == 1, err
    assert ("symbolic link" in err) if kind == "link" else ("No such device or address" in err), err
    moved, elsewhere = Path(f"{shared.log}.moved"), shared.logs.parent / "elsewhere.log"
    _tally([moved]).assert_complete({0: 10})
    _tally([shared.log, elsewhere]).assert_complete({1: 20})
    assert _tally([elsewhere]).count(1) == 5  # written through root's link


def _live_file_attack(shared: SimpleNamespace, kind: str) -> None:
    """In a forked child (a FIFO would hang the code before the fix)."""
    handler = _handler(shared.log)
    handler.write_lines(_lines(0, range(10), time.time()))
    assert _as_user(shared.user, _plant, kind, str(shared.victim), str(shared.log)) == 0
    handler.write_lines(_lines(1, range(10), time.time()))  # refused and held
    assert handler._fault is not None and handler._held, "the write after the plant went somewhere"
    os.unlink(shared.log)  # the administrator removes the plant
    wait_until(lambda: time.monotonic() >= handler._retry_at, "the next retry", 30)
    handler.write_lines(_lines(1, range(10, 15), time.time()))  # the held lines first, then these
    assert handler._fault is None
    elsewhere = shared.logs.parent / "elsewhere.log"
    os.rename(shared.log, f"{shared.log}.second")  # root's own link, to a file of root's: followed
    os.symlink(str(elsewhere), shared.log)
    handler.write_lines(_lines(1, range(15, 20), time.time()))
    handler.close()
    os.unlink(shared.log)
    os.rename(f"{shared.log}.second", shared.log)


def test_a_link_planted_at_a_late_periods_name_is_not_followed(shared):
    """A line for a period already rotated goes to that period's file, made if
    missing: with the live file's mode (0600 here), and never through a link
    the other user planted at that name (refused, held, then written to the
    live file once writing is retried)."""
    handler = _handler(shared.log, when="D")
    now = time.time()
    today = handler.periods.start(now)
    yesterday = handler.periods.start(today - 1)
    before = handler.periods.start(yesterday - 1)
    handler.write_lines(_lines(0, range(10), now))
    os.chmod(shared.log, 0o600)
    handler.write_lines(_lines(1, range(10), before + 1))  # late: the file of the day before yesterday is made
    planted = f"{shared.log}.{handler.periods.stamp(yesterday)}"
    assert _as_user(shared.user, os.symlink, str(shared.victim), planted) == 0
    handler.write_lines(_lines(2, range(10), yesterday + 1))  # late, through the plant: refused and held
    _victim_untouched(shared)
    wait_until(lambda: time.monotonic() >= handler._retry_at, "the next retry", 30)
    handler.write_lines(_lines(0, range(10, 20), now))
    handler.close()
    _victim_untouched(shared)
    made = Path(f"{shared.log}.{handler.periods.stamp(before)}")
    assert _mode_and_owner(made) == (0o600, 0, 0)
    assert not _can_read(shared.user, str(made))
    _tally([made]).assert_complete({1: 10})
    _tally([shared.log]).assert_complete({0: 20, 2: 10})


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_a_rotated_file_swapped_for_a_link_or_fifo_is_not_compressed(shared, capfd, kind):
    """Between a rotation and its compression (a time rotation waits 5 s for
    late lines), the other user moves the rotated file aside and puts a link to
    a root-only file (or a FIFO) at its name. The compressor neither copies the
    root-only file into an archive nor hangs: it says it cannot compress that
    name and leaves it. Every line is in the moved file or the live one."""
    assert run_in_child(_rotated_file_attack, shared, kind, timeout=60) == 0
    _victim_untouched(shared)
    archives = [name for name in os.listdir(shared.logs) if name.endswith(".gz")]
    for name in archives:  # an archive of the root-only file, readable by the other user, before the fix
        assert SECRET not in gzip.decompress((shared.logs / name).read_bytes())
    assert not archives
    err = capfd.readouterr().err
    assert "mplog: cannot compress" in err and ("symbolic link" if kind == "link" else "not a regular file") in err
    rotated = [name for name in os.listdir(shared.logs) if name.endswith(".moved")]
    assert len(rotated) == 1
    _tally([shared.logs / rotated[0]]).assert_complete({0: 100})
    _tally([shared.log]).assert_complete({1: 10})


def _rotated_file_attack(shared: SimpleNamespace, kind: str) -> None:
    handler = _handler(shared.log, when="D", compress="gzip")
    now = time.time()
    tomorrow = handler.periods.end(handler.periods.start(now)) + 1
    handler.write_lines(_lines(0, range(100), now) + _lines(1, range(10), tomorrow))
    rotated = f"{shared.log}.{handler.periods.stamp(handler.periods.start(now))}"
    assert os.path.exists(rotated)  # rotated, and waiting for late lines before it is compressed
    assert _as_user(shared.user, _plant, kind, str(shared.victim), rotated) == 0
    handler.close()  # compresses what waits, at once


# --- item 6: modes and owners ---------------------------------------------------------------------


def _log_workers(count: int, pause: float) -> None:
    """Two forked workers, ``count`` records each, ``pause`` seconds apart."""

    def work(worker: int) -> None:
        for seq in range(count):
            workload.log_records(worker, 1, start=seq)
            time.sleep(pause)

    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=work, args=(worker,)) for worker in (1, 2)]
    for process in processes:
        process.start()
    join_all(processes)


ROTATIONS: Dict[str, Tuple[Dict[str, object], int, float]] = {
    # options, records per worker, pause: many size rotations, or at least two seconds' boundaries
    "size": ({"max_bytes": "4 KiB"}, 200, 0.0),
    "time": ({"when": "S"}, 250, 0.01),
}


@pytest.mark.parametrize("rotation", sorted(ROTATIONS))
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_archives_and_the_new_live_file_keep_a_private_logs_mode(shared, rotation, listener):
    """``chmod 600`` on the live log, then rotations (by size, by time) with
    compression: every archive and the live file made after a rotation are
    0600 and root's, and the other user cannot read any of them. Every record
    is in them once."""
    options, count, pause = ROTATIONS[rotation]
    handler = _handler(shared.log, compress="gzip", **options)
    with mplog.setup(handler, level="INFO", listener=listener):
        workload.log_records(0, 1)
        wait_until(lambda: shared.log.exists() and shared.log.stat().st_size > 0, "the first record in the file")
        os.chmod(shared.log, 0o600)
        _log_workers(count, pause)
    files = sorted(shared.logs.iterdir())
    archives = [path for path in files if path.name.endswith(".gz")]
    assert len(archives) >= 2 and len(files) == len(archives) + 1, [path.name for path in files]
    for path in files:
        assert _mode_and_owner(path) == (0o600, 0, 0), path.name
        assert not _can_read(shared.user, str(path)), f"the other user read {path.name}"
    _tally(files).assert_complete({0: 1, 1: count, 2: count})


def test_archives_and_the_new_live_file_keep_the_logs_owner(shared):
    """A live log given to the other user (0640, its group): as root, mplog
    gives every rotated file, archive and new live file that owner, group and
    mode, so that user can still read them all."""
    user = shared.user
    handler = _handler(shared.log, max_bytes="4 KiB", compress="gzip")
    handler.write_lines(_lines(0, range(1), time.time()))
    os.chown(shared.log, user.pw_uid, user.pw_gid)
    os.chmod(shared.log, 0o640)
    for seq in range(1, 500, 10):
        handler.write_lines(_lines(0, range(seq, seq + 10), time.time()))
    handler.close()
    files = sorted(shared.logs.iterdir())
    assert len([path for path in files if path.name.endswith(".gz")]) >= 2
    for path in files:
        assert _mode_and_owner(path) == (0o640, user.pw_uid, user.pw_gid), path.name
        assert _can_read(user, str(path)), path.name
    _tally(files).assert_complete({0: 500})


def test_a_listener_that_is_not_root_copies_what_it_may_and_closes_the_rest(shared):
    """Not root, the listener cannot give an archive a group it is not in: the
    archive is then its own group's, without the group's permission bits, so
    no one gets through the group what they could not read before."""
    user = shared.user
    os.chown(shared.logs, user.pw_uid, user.pw_gid)
    rotated = shared.logs / "app.log.2000-01-01_00-00-00"
    rotated.write_bytes(workload.message(0, 0, 100).encode() + b"\n")
    os.chown(rotated, user.pw_uid, 0)  # root's group, which the user is not in
    os.chmod(rotated, 0o640)
    assert _as_user(user, gzip_file, str(rotated)) == 0
    archive = Path(f"{rotated}.gz")
    assert _mode_and_owner(archive) == (0o600, user.pw_uid, user.pw_gid)
    assert sorted(os.listdir(shared.logs)) == [archive.name]
    _tally([archive]).assert_complete({0: 1})


def test_a_dangling_link_among_the_rotated_files_does_not_stop_retention(shared):
    """The other user puts a dangling link at a rotated file's name: retention
    by age still deletes the files past ``max_age`` (it looks at the link's
    own time, not its target's, which does not exist)."""
    old = shared.logs / "app.log.2000-01-01_00-00-00"
    old.write_bytes(b"old\n")
    os.utime(old, (0, 0))
    planted = str(shared.logs / "app.log.2000-01-02_00-00-00")
    assert _as_user(shared.user, os.symlink, "/nonexistent", planted) == 0
    handler = _handler(shared.log, max_bytes=150, max_age="1d")
    handler.write_lines(_lines(0, range(2), time.time()))  # one rotation: retention runs
    handler.close()
    assert not old.exists()
    names = sorted(os.listdir(shared.logs))
    assert len(names) == 3 and names[0] == "app.log" and os.path.islink(planted), names
    rotated = [shared.logs / name for name in names if name not in ("app.log", os.path.basename(planted))]
    _tally([*rotated, shared.log]).assert_complete({0: 2})
