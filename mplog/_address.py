"""Where a listener can be reached: a Unix socket in a fresh directory that
only the current user can enter, and its removal when the listener stops."""

from __future__ import annotations

import os
import sys

__all__ = ["new_private_address", "remove_address"]

# sockaddr_un holds 108 bytes on Linux, including the terminating NUL.
_MAX_ADDRESS_BYTES = 107
_SOCKET_NAME = "listener.sock"


def new_private_address() -> str:
    """Return a socket path inside a fresh directory only this user can enter,
    in the first of the places ``tempfile`` would use (``tempfile.tempdir``,
    ``$TMPDIR``, ``$TEMP``, ``$TMP``, /tmp, /var/tmp, /usr/tmp, the working
    directory) where one can be made and the path fits in a socket address.

    Not ``tempfile.mkdtemp``: importing tempfile would add 1.6 ms to every
    spawned worker's start, and only the parent ever calls this.
    """
    chosen = getattr(sys.modules.get("tempfile"), "tempdir", None)
    environment = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    candidates = [chosen, *environment, "/tmp", "/var/tmp", "/usr/tmp", os.curdir]
    problems = []
    for parent in dict.fromkeys(os.path.abspath(path) for path in candidates if path):
        try:
            directory = _new_private_directory(parent)
        except OSError as exc:
            problems.append(f"{parent}: {exc}")
            continue
        address = os.path.join(directory, _SOCKET_NAME)
        if len(os.fsencode(address)) <= _MAX_ADDRESS_BYTES:
            return address
        os.rmdir(directory)
        problems.append(f"{address!r} is longer than a Unix socket path can be")
    raise OSError(f"cannot make a private directory for the listener's socket ({'; '.join(problems)})")


def _new_private_directory(parent: str) -> str:
    for _ in range(100):
        directory = os.path.join(parent, "mplog-" + os.urandom(6).hex())
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        return directory
    raise FileExistsError(f"no free name for a new directory in {parent}")


def remove_address(address: str) -> None:
    """Remove the socket file and, if it is mplog's own, its private directory
    (quietly: a process that has given up its rights since may not be able to)."""
    directory = os.path.dirname(address)
    own = os.path.basename(directory).startswith("mplog-")
    try:
        os.unlink(address)
    except FileNotFoundError:
        pass
    except OSError:
        if not own:
            raise
    if own:
        try:
            os.rmdir(directory)
        except OSError:  # gone already, not ours to remove any more, or holding something of someone else's
            pass
