"""The channel between processes: a private Unix socket address, and one
connection per process to it.

Each process writes whole frames to its own connection, so no lock is ever
shared between processes: a process killed mid-write can only cut off its own
last frame, which the listener discards. ``sendall`` returns once the frame is
in the listener's receive queue in the kernel, so a record survives its sender
calling ``os._exit`` or being killed right after the logging call returns.
"""

from __future__ import annotations

import _socket
import logging
import os
import shutil
import socket
import tempfile
import threading
from typing import Callable, Optional, Tuple

from . import _codec, _fork

__all__ = ["Queue"]

# sockaddr_un holds 108 bytes on Linux, including the terminating NUL.
_MAX_ADDRESS_BYTES = 107
_SOCKET_NAME = "listener.sock"


def _new_private_address() -> str:
    """Return a socket path inside a fresh directory only this user can enter."""
    for parent in (None, "/tmp"):
        directory = tempfile.mkdtemp(prefix="mplog-", dir=parent)  # mode 0700
        address = os.path.join(directory, _SOCKET_NAME)
        if len(os.fsencode(address)) <= _MAX_ADDRESS_BYTES:
            return address
        os.rmdir(directory)
    raise OSError(f"cannot find a directory short enough for a Unix socket path: {address!r}")


def remove_address(address: str) -> None:
    """Remove the socket file and its private directory, if they exist."""
    directory = os.path.dirname(address)
    if os.path.basename(directory).startswith("mplog-"):
        shutil.rmtree(directory, ignore_errors=True)
    else:
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass


class Queue:
    """Where workers put log records for the listener: the mplog counterpart
    of the ``multiprocessing.Queue`` in the logging cookbook.

    It pickles as its address, so it can be passed to a child any way at all
    (``initargs``, task arguments, ``Process`` args), and every process opens its
    own connection on first use. ``put_nowait`` returns once the record is in
    the kernel, in the listener's receive queue.

    Args:
        address: path of the listener's Unix socket; by default a new path in a
            fresh directory that only the current user can enter.
        route: which of the listener's handler groups records put here are for
            (0: the root logger's handlers).
    """

    def __init__(self, address: Optional[str] = None, route: int = 0) -> None:
        self.address: str = address if address is not None else _new_private_address()
        self.route = route
        self._sock: Optional[_socket.socket] = None
        self._sock_pid = os.getpid()
        self._lock = threading.Lock()
        # Set by a listener thread of this process: records from this process
        # are handed to it directly instead of crossing the socket.
        self._local: Optional[Tuple[int, Callable[[logging.LogRecord, int], None]]] = None
        _fork.register(self)

    def __repr__(self) -> str:
        return f"<mplog.Queue {self.address!r}>"

    def __reduce__(self) -> Tuple[type, Tuple[str, int]]:
        return (Queue, (self.address, self.route))

    def delivers_locally(self) -> bool:
        """Whether records put here go straight to a listener thread of this process."""
        local = self._local
        return local is not None and local[0] == os.getpid()

    def put_nowait(self, record: logging.LogRecord) -> None:
        """Hand a prepared record to the listener (blocking only while the
        listener is too far behind to take it: back-pressure, never growth).

        Raises:
            OSError: the listener cannot be reached (stopped, killed, never started).
        """
        local = self._local
        if local is not None and local[0] == os.getpid():
            local[1](record, self.route)
            return
        self.send(_codec.encode(record, route=self.route))

    def send(self, frame: bytes) -> None:
        """Write one encoded frame to this process's connection, opening it first
        if needed.

        Raises:
            OSError: the listener cannot be reached.
        """
        if self._sock_pid != os.getpid():
            # A fork the at-fork hook did not see (e.g. from C code): the lock
            # and socket may be mid-use by a thread that does not exist here.
            self._after_fork_in_child()
        with self._lock:
            sock = self._sock
            if sock is None:
                sock = self._sock = self._connect()
            try:
                sock.sendall(frame)
            except OSError:
                self._sock = None
                sock.close()
                raise

    def close(self) -> None:
        """Close this process's connection; the next record opens a new one."""
        with self._lock:
            if self._sock is not None and self._sock_pid == os.getpid():
                self._sock.close()
            self._sock = None

    def _connect(self) -> _socket.socket:
        # The C socket type, whatever gevent or eventlet patched: a record is
        # one plain blocking sendall that never waits on an event loop (which
        # may be the very thing that is stuck when something needs logging).
        sock = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.address)
            sock.sendall(_codec.hello(self.route))
        except OSError:
            sock.close()
            raise
        return sock

    def _after_fork_in_child(self) -> None:
        # The inherited socket is the parent's connection: writing to it could
        # interleave with the parent's frames. Closing our copy of the fd does
        # not affect the parent.
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._sock_pid = os.getpid()
        self._lock = threading.Lock()
        # Records from this child always cross the socket (a listener process
        # sets its own marker after the fork).
        self._local = None
