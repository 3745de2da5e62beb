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


def reap_listener_process(pid: int, deadline: float, address: str) -> None:
    """Wait for listener process ``pid`` to exit, until ``deadline``
    (monotonic): then kill it; remove the socket at ``address`` it may have
    left; say on stderr if it had been killed."""
    status = wait_for_exit(pid, deadline)
    if status is None:
        _stderr.report(f"the listener process {pid} had not exited by the end of its drain; killed it")
        os.kill(pid, signal.SIGKILL)
        status = wait_for_exit(pid, float("inf"))
    # A listener process that was killed could not remove its socket.
    remove_address(address)
    if status is not None and os.WIFSIGNALED(status):
        _stderr.report(
            f"the listener process {pid} had been killed by signal {os.WTERMSIG(status)}; workers fell back to stderr"
        )


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
