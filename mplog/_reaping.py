"""Ending a listener process within bounds: waiting for its first word and
for its exit, each with a deadline, and closing its handlers."""

from __future__ import annotations

import logging
import os
import selectors
import time
from typing import Optional, Sequence

from . import _stderr

__all__ = ["close_handlers", "read_all", "wait_for_exit"]


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
