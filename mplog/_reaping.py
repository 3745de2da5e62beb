"""Ending a listener process within bounds: waiting for its first word and
for its exit, each with a deadline, and closing its handlers."""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from typing import Optional, Sequence

from . import _stderr
from ._address import remove_address

__all__ = ["close_handlers", "read_all", "reap_listener_process", "wait_for_exit"]


def close_handlers(handlers: Sequence[logging.Handler]) -> None:
    """Flush and close handlers, saying on stderr which could not be."""
    for handler in handlers:
        try:
            handler.flush()
            handler.close()
        except Exception:
            _stderr.report_exception(f"the listener process could not close {handler!r}")


def wait_for_exit(pid: int, deadline: float) -> Optional[int]:
    """The exit status of child ``pid`` once it exits, or None if it has not
    by ``deadline`` (monotonic); 0 if someone else reaped it."""
    delay = 0.001
    while True:
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG if deadline != float("inf") else 0)
        except ChildProcessError:  # someone else reaped it (a SIGCHLD handler)
            return 0
        if reaped:
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def reap_listener_process(pid: int, patience: float, address: str) -> None:
    """Wait for listener process ``pid`` to exit, as long as it keeps working
    (its CPU time grows) or has worked within ``patience`` seconds: then kill
    it; remove the socket at ``address`` it may have left; say on stderr if it
    had been killed. (It gives up on stuck handlers itself, so a slow drain
    ends, and only a process wedged for good is killed.)"""
    status = _wait_while_working(pid, patience)
    if status is None:
        _stderr.report(f"the listener process {pid} had not exited, nor worked, for {patience:g} s; killed it")
        os.kill(pid, signal.SIGKILL)
        status = wait_for_exit(pid, float("inf"))
    # A listener process that was killed could not remove its socket.
    remove_address(address)
    if status is not None and os.WIFSIGNALED(status):
        _stderr.report(
            f"the listener process {pid} had been killed by signal {os.WTERMSIG(status)}; workers fell back to stderr"
        )


def _wait_while_working(pid: int, patience: float) -> Optional[int]:
    """:func:`wait_for_exit`, the deadline ``patience`` seconds after the
    process last used CPU time (seen every half second)."""
    ticks = _cpu_ticks(pid)
    deadline = time.monotonic() + patience
    while True:
        status = wait_for_exit(pid, min(deadline, time.monotonic() + 0.5))
        if status is not None:
            return status
        now_ticks = _cpu_ticks(pid)
        if now_ticks != ticks:
            ticks, deadline = now_ticks, time.monotonic() + patience
        elif time.monotonic() >= deadline:
            return None


def _cpu_ticks(pid: int) -> Optional[int]:
    """The user and system CPU time of ``pid`` so far, in clock ticks (None without /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of stat(5)


def read_all(fd: int, timeout: float) -> bytes:
    """Read from a pipe until EOF or ``timeout`` seconds, then close it."""
    chunks = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while selector.select(max(0.0, deadline - time.monotonic())):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)
