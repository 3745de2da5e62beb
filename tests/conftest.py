"""Shared fixtures: a clean root logger per test, a log file, bounded joins."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from typing import Iterable

import pytest

import mplog
from mplog import _setup

START_METHODS = ["fork", "spawn", "forkserver"]
IN_CI = os.environ.get("CI") == "true"


def requires(available: bool, reason: str) -> pytest.MarkDecorator:
    """Skip a test on a machine that lacks what it needs (a laptop without root,
    say), but never in CI: .ci/run provides everything, and a missing piece there
    must fail, not skip."""
    return pytest.mark.skipif(not available and not IN_CI, reason=reason)


NEEDS_ROOT = requires(os.getuid() == 0, "needs root (mounts a tmpfs or switches uid); CI runs as root")


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


def file_handler(path: str, fmt: str = "%(message)s") -> logging.FileHandler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(fmt))
    return handler


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


def wait_for_path(path, timeout: float = 60.0) -> None:
    """Wait until ``path`` exists (a file another process creates as a signal)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared within {timeout} s"
        time.sleep(0.005)


__all__ = [
    "IN_CI",
    "NEEDS_ROOT",
    "START_METHODS",
    "file_handler",
    "join_all",
    "mplog",
    "requires",
    "wait_for_path",
    "wait_pid",
]
