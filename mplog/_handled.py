"""Asking the listener to answer once what was written is handled: the
wire side of :func:`mplog.complete` (and of a ``mplog serve`` client's
confirmations).

A process connects to the listener's socket and sends :data:`REQUEST`
instead of a hello. The listener reads every pipe that has something in it
(so everything written before the request: this process's records, and
those of every process that has exited), passes a marker down every
handler's lane after them, and answers :data:`HANDLED` once each handler
has got to its marker.
"""

from __future__ import annotations

import _socket
import socket
import time

__all__ = ["HANDLED", "REQUEST", "answer_handled", "wait_handled"]

#: What a process sends, in place of a hello, to wait for delivery (the size of a hello).
REQUEST = b"\xfc\x00\x00"
#: The listener's answer once everything before the request is handled.
HANDLED = b"\x07"


def wait_handled(address: str, deadline: float) -> bool:
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
