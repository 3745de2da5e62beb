"""How a process introduces itself to the listener: it connects to the
socket, sends a hello naming its route with the read end of a new pipe, and
writes nothing until the listener answers that it holds the pipe; a pipe the
listener turns away (out of file descriptors) is offered again, a little later.
A listener that does not admit the process's user says so, and that is final."""

from __future__ import annotations

import _socket
import array
import errno
import fcntl
import os
import socket
import time
from time import sleep as _sleep  # bound now: a gevent patch applied later does not reach it
from typing import Optional, Tuple

from . import _codec

__all__ = ["F_SETPIPE_SZ", "PIPE_BYTES", "REFUSED_SECONDS", "ListenerRefused", "check_refused", "connect"]

#: A worker's pipe holds this much, so bursts do not wait for the listener.
#: It counts against the user's pipe quota (the kernel's default is 64 KiB).
PIPE_BYTES = 256 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # named in fcntl from Python 3.10
#: How long a process keeps offering its pipe to a listener that turns it
#: away (out of file descriptors) before it gives up and logs to stderr.
REFUSED_SECONDS = 10.0
#: The first wait before offering a pipe again, and the longest (it doubles).
RETRY_FIRST_SECONDS = 0.001
RETRY_MAX_SECONDS = 0.05


class ListenerRefused(PermissionError):
    """The listener does not admit this process's user (see ``setup(worker_user=...)``)."""


def check_refused(answer: bytes) -> None:
    """Raise :class:`ListenerRefused` if ``answer`` is the listener's refusal.

    Raises:
        ListenerRefused: it is.
    """
    if answer == _codec.REFUSED:
        raise ListenerRefused(
            errno.EACCES,
            f"the log listener refused this process: its user (uid {os.geteuid()}) may not log there",
        )


def connect(address: str, route: int, stream: Optional[Tuple[int, int]] = None) -> int:
    """Introduce this process to the listener at ``address`` for frames of
    ``route``; return the write end of the pipe it now holds. ``stream``: a
    resuming client's stream id and the offset of what it writes first.

    While the listener turns the pipe away (it is out of file descriptors),
    try again with a new one, waiting a little longer each time (up to
    ``RETRY_MAX_SECONDS``), for at most ``REFUSED_SECONDS``.

    Raises:
        ListenerRefused: the listener does not admit this process's user.
        OSError: the listener cannot be reached, or kept turning the pipe away.
    """
    delay = RETRY_FIRST_SECONDS
    give_up = 0.0  # set at the first refusal: a wait for a busy listener's answer is not one
    while True:
        pipe = _introduce(address, _codec.hello(route, stream))
        if pipe >= 0:
            return pipe
        give_up = give_up or time.monotonic() + REFUSED_SECONDS
        if time.monotonic() >= give_up:
            raise OSError(
                errno.EMFILE,
                f"the log listener turned this process's pipe away for {REFUSED_SECONDS:g} s "
                "(it is out of file descriptors: raise its RLIMIT_NOFILE)",
            )
        _sleep(delay)
        delay = min(delay * 2, RETRY_MAX_SECONDS)


def _introduce(address: str, hello: bytes) -> int:
    """Send the listener a hello with a new pipe's read end, and wait for
    its answer: return the pipe's write end, or -1 if it turned the pipe away.

    Nothing is written to the pipe before the listener has said it holds
    it: a pipe it could not take would lose whatever was in it.

    Raises:
        ListenerRefused: the listener does not admit this process's user.
        OSError: the listener cannot be reached.
    """
    # The C socket type, whatever gevent or eventlet patched: connecting is
    # a plain blocking call, as is every later write to the pipe, and none
    # waits on an event loop (which may be the very thing that is stuck
    # when something needs logging).
    read_end, write_end = os.pipe()
    try:
        try:
            fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:  # over the user's pipe quota: a smaller pipe still works, with earlier back-pressure
            pass
        sock = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
            answer = _answer_to_hello(sock, read_end, hello)
            check_refused(answer)
        finally:
            sock.close()
    except BaseException:  # a signal handler's exception too: no descriptor may leak
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    if answer != _codec.HELLO_TAKEN:
        os.close(write_end)
        return -1
    return write_end


def _answer_to_hello(sock: "_socket.socket", read_end: int, hello: bytes) -> bytes:
    """Send ``hello`` with ``read_end`` on a connected socket; return the
    listener's answer: :data:`~mplog._codec.HELLO_TAKEN`,
    :data:`~mplog._codec.REFUSED`, or nothing (it closed the socket).

    Waiting for the answer is back-pressure like a full pipe's: a listener busy
    in a slow handler answers when it gets to it.
    """
    fds = array.array("i", [read_end])
    try:
        sock.sendmsg([hello], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
    except (BrokenPipeError, ConnectionResetError):  # closed before it read the hello: a refusal may be waiting
        pass
    try:
        return sock.recv(1)
    except ConnectionResetError:
        return b""
