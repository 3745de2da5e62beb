"""Shared fixtures and helpers: a clean root logger per test, a log file,
bounded joins and waits, forked children, a handler that keeps records."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Iterator, List, Optional

import pytest

import mplog
from mplog import _lanes, _setup

START_METHODS = ["fork", "spawn", "forkserver"]
IN_CI = os.environ.get("CI") == "true"
# Every Python process a test starts can print its threads' stacks: a server
# that does not stop gets SIGABRT from stop_server before SIGKILL, so a hang in
# CI leaves its stacks in the server's output instead of nothing.
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


def requires(available: bool, reason: str) -> pytest.MarkDecorator:
    """Skip a test on a machine that lacks what it needs (a laptop without root,
    say), but never in CI: .ci/run provides everything, and a missing piece there
    must fail, not skip."""
    return pytest.mark.skipif(not available and not IN_CI, reason=reason)


#: For the without-mplog runs of the framework tests: they print what a
#: server loses without mplog and assert nothing about it, so one Python is
#: enough (the newest, which CI runs); they cost ~1.5 min of CI per Python.
WITHOUT_MPLOG_RUN_ONCE = pytest.mark.skipif(
    sys.version_info < (3, 13), reason="the without-mplog comparison runs once, on Python 3.13"
)


NEEDS_ROOT = requires(os.getuid() == 0, "needs root (mounts a tmpfs or switches uid); CI runs as root")


#: The name of the real second user that tests switch to (made by useradd).
SECOND_USER = "mplog-test"


@pytest.fixture(scope="session")
def second_user() -> pwd.struct_passwd:
    """A real second user, with a group of its own: made with ``useradd`` if
    missing (as root: mark the test NEEDS_ROOT), and left in place for later
    runs."""
    try:
        return pwd.getpwnam(SECOND_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", SECOND_USER],
        capture_output=True,
        text=True,
    )
    try:  # a concurrent run may have added it first (useradd then fails, and that is fine)
        return pwd.getpwnam(SECOND_USER)
    except KeyError:
        pytest.fail(f"useradd {SECOND_USER} failed: {result.stderr}")


@pytest.fixture(autouse=True)
def clean_logging():
    """Restore the root logger and stop any session a test left running."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield
    active = _setup._active
    if active is not None:
        active.stop()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


@pytest.fixture
def log_path(tmp_path) -> str:
    return str(tmp_path / "app.log")


@pytest.fixture
def no_backlog(monkeypatch) -> None:
    """Each handler's lane holds one item at a time: a handler that blocks
    stops the listener reading the pipes at once (rather than after 16 MiB),
    for tests of what the workers do against a full pipe."""
    monkeypatch.setattr(_lanes, "BACKLOG_BYTES", 1)


def file_handler(path: str, fmt: str = "%(message)s") -> logging.FileHandler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(fmt))
    return handler


class Collect(logging.Handler):
    """Keeps every record it is given (in the listener: use a listener thread
    to read them in the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def join_all(processes: Iterable[multiprocessing.process.BaseProcess], timeout: float = 120.0) -> None:
    """Join every process; kill (by pid) and fail on any that overruns or fails."""
    processes = list(processes)
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [p for p in processes if p.is_alive()]
    for process in hung:
        process.kill()
        process.join(5)
    assert not hung, f"{len(hung)} processes did not finish within {timeout} s: {[p.pid for p in hung]}"
    failed = [(p.pid, p.exitcode) for p in processes if p.exitcode != 0]
    assert not failed, f"processes failed: {failed}"


def fork_running(body: Callable[..., Optional[int]], *args: Any, fork: Callable[[], int] = os.fork) -> int:
    """Fork (with ``fork``) a child that runs ``body(*args)`` and leaves through
    ``os._exit``: with the code ``body`` returns, 0 if it returns None, 1 (after
    printing the traceback) if it raises. Return the child's pid."""
    pid = fork()
    if pid == 0:
        code = 1
        try:
            result = body(*args)
            code = 0 if result is None else int(result)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def run_in_child(
    body: Callable[..., Optional[int]], *args: Any, timeout: float = 60.0, fork: Callable[[], int] = os.fork
) -> int:
    """Run ``body(*args)`` in a forked child (see :func:`fork_running`) and
    return its exit code, killing it and failing if it overruns ``timeout``."""
    return wait_pid(fork_running(body, *args, fork=fork), timeout)


def wait_pid(pid: int, timeout: float = 60.0) -> int:
    """waitpid with a deadline; kills the child and fails if it overruns.

    Returns the exit code (negative signal number if killed by a signal).
    """
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} did not exit within {timeout} s (deadlock?)")
        time.sleep(0.005)


@contextlib.contextmanager
def killed_on_error(pid: int) -> Iterator[None]:
    """Kill (SIGKILL) and reap the child ``pid`` if the block raises, so that a
    failed wait leaves no process of the test's behind, blocked or stopped."""
    try:
        yield
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        raise


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0, poll: float = 0.005) -> None:
    """Poll ``condition`` every ``poll`` seconds until it is true; fail, saying
    ``what`` was awaited, if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(poll)


def wait_for_path(path, timeout: float = 60.0) -> None:
    """Wait until ``path`` exists (a file another process creates as a signal)."""
    wait_until(lambda: os.path.exists(path), f"waiting for {path} to appear", timeout)


def blocked_in_pipe_write(pid: int) -> bool:
    """Whether a thread of process ``pid`` sleeps in the kernel writing to a
    pipe, i.e. waits for room in a full one (``/proc/PID/task/*/wchan`` names
    ``pipe_write``, or ``anon_pipe_write`` on newer kernels)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/wchan") as wchan:
                if "pipe_write" in wchan.read():
                    return True
        except (FileNotFoundError, ProcessLookupError):
            continue
    return False


__all__ = [
    "IN_CI",
    "NEEDS_ROOT",
    "SECOND_USER",
    "START_METHODS",
    "Collect",
    "blocked_in_pipe_write",
    "file_handler",
    "fork_running",
    "join_all",
    "killed_on_error",
    "mplog",
    "requires",
    "run_in_child",
    "wait_for_path",
    "wait_pid",
    "wait_until",
]
