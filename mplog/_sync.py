"""``mplog.complete()``: wait until what was logged has been handled.

The process sends what it has buffered, then connects to the listener's
socket and sends :data:`REQUEST` instead of a hello. The listener reads
every pipe that has something in it (so everything written before the
request: this process's records, and those of every process that has
exited), passes a marker down every handler's lane after them, and answers
:data:`HANDLED` once each handler has got to its marker.
"""

from __future__ import annotations

import _socket
import math
import socket
import time

from . import _install
from ._buffered import flush

__all__ = ["HANDLED", "REQUEST", "answer_handled", "complete"]

#: What a process sends, in place of a hello, to wait for delivery (the size of a hello).
REQUEST = b"\xfc\x00\x00"
#: The listener's answer once everything before the request is handled.
HANDLED = b"\x07"


def complete(timeout: float = 10.0) -> bool:
    """Wait until every record this process has logged so far, and every
    record logged by processes that have exited (a joined child's, say), has
    been handled by the listener's handlers.

    Returns True once it has, or False if ``timeout`` seconds passed first
    (a handler still busy, or stalled). In a process that does not log
    through mplog there is nothing to wait for: True.

    Args:
        timeout: the longest to wait, in seconds.

    Raises:
        TypeError: ``timeout`` is not a number.
        ValueError: ``timeout`` is negative or not finite.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r} ({type(timeout).__name__})")
    if not (math.isfinite(timeout) and timeout >= 0):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
    config = _install.current()
    if config is None:
        return True
    deadline = time.monotonic() + timeout
    flush()
    return _wait_handled(config.address, deadline)


def _wait_handled(address: str, deadline: float) -> bool:
    """Ask the listener at ``address`` to answer once everything before is
    handled; return whether it did by ``deadline`` (False too if it is gone)."""
    sock = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        sock.connect(address)
        sock.sendall(REQUEST)
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        return sock.recv(1) == HANDLED
    except OSError:  # a timeout, or no listener
        return False
    finally:
        sock.close()


def answer_handled(sock: socket.socket) -> None:
    """Tell a process waiting in mplog.complete() that all it waited for is handled."""
    try:
        sock.send(HANDLED, socket.MSG_NOSIGNAL)
    except OSError:  # it gave up waiting
        pass
    finally:
        sock.close()
