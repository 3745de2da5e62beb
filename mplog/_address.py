"""Where a listener can be reached: a Unix socket in a fresh directory that
only the current user can enter (and, if asked, the one user its workers
become), and its removal when the listener stops."""

from __future__ import annotations

import os
import sys

__all__ = ["admit_user", "new_private_address", "remove_address"]

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


def admit_user(address: str, uid: int) -> None:
    """Let processes of user ``uid`` connect to the socket at ``address`` too:
    the socket becomes theirs, still 0600 (connecting needs write permission
    on it), and mplog's own directory becomes 0711, so they can pass through it
    to the socket but not list it or create anything in it. Nobody else
    gains anything, and since mplog's directory stays the listener's, the
    socket in it cannot be replaced.

    Raises:
        PermissionError: this process may not give the socket away (only root
            can).
    """
    try:
        # Not following a link: in a directory that is not mplog's own,
        # someone may have swapped the socket for one since it was bound.
        os.chown(address, uid, -1, follow_symlinks=False)
    except PermissionError as exc:
        raise PermissionError(
            exc.errno, f"cannot give the listener's socket to uid {uid} (worker_user): {exc.strerror}; only root can"
        ) from None
    directory = os.path.dirname(address)
    if os.path.basename(directory).startswith("mplog-"):
        os.chmod(directory, 0o711)


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
