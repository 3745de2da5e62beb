"""The socket a listener accepts connections on: bound by the listener at
its address, with the permissions that admit its users, or inherited from
systemd (socket activation: ``LISTEN_FDS``/``LISTEN_PID``, descriptor 3),
which made it, set its permissions and keeps it across restarts."""

from __future__ import annotations

import os
import socket
from typing import MutableMapping, Optional

from ._access import Access
from ._address import admit_user

__all__ = ["ACTIVATION_FD", "bind_listening", "inherited_listening"]

#: The first descriptor systemd passes (``SD_LISTEN_FDS_START``).
ACTIVATION_FD = 3
_VARIABLES = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def bind_listening(address: str, access: Optional[Access], worker_uid: Optional[int]) -> socket.socket:
    """A Unix socket bound and listening at ``address``, 0600 (the
    directory is 0700 already; belt and braces), or as ``access`` says, or
    also open to ``worker_uid``.

    Raises:
        OSError: it cannot be bound, or given its permissions.
    """
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listening.bind(address)
        if access is not None:
            access.open_socket(address)
        else:
            os.chmod(address, 0o600)
            if worker_uid is not None and worker_uid not in (os.getuid(), 0):
                admit_user(address, worker_uid)
        listening.listen(socket.SOMAXCONN)
    except OSError:
        listening.close()
        raise
    return listening


def inherited_listening(environ: MutableMapping[str, str] = os.environ) -> Optional[socket.socket]:
    """The listening Unix socket systemd passed this process, or ``None`` if
    it passed none (no ``LISTEN_FDS``, or ``LISTEN_PID`` is another process's:
    a parent's, whose environment this one inherited). The variables are
    removed either way, so that the program's children do not take them as theirs.

    Raises:
        ValueError: systemd passed more than one descriptor, or one that is
            not a listening Unix stream socket.
    """
    count, pid = environ.get("LISTEN_FDS"), environ.get("LISTEN_PID")
    for name in _VARIABLES:
        environ.pop(name, None)
    if count is None or pid != str(os.getpid()):
        return None
    if count != "1":
        raise ValueError(f"LISTEN_FDS={count}: mplog serve serves one socket (give its .socket unit one ListenStream=)")
    try:
        listening = socket.socket(fileno=ACTIVATION_FD)
    except OSError as exc:
        raise ValueError(f"LISTEN_FDS=1, but descriptor {ACTIVATION_FD} is not a socket: {exc.strerror}") from None
    accepting = listening.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if listening.family != socket.AF_UNIX or listening.type != socket.SOCK_STREAM or not accepting:
        listening.detach()  # not ours to close
        raise ValueError(
            f"descriptor {ACTIVATION_FD} from systemd is not a listening Unix stream socket "
            "(the .socket unit needs ListenStream=/path)"
        )
    listening.set_inheritable(False)
    return listening
