"""Where a listener can be reached: a Unix socket in a fresh directory that
only the current user can enter (and, if asked, the one user its workers
become), made when a listener starts and removed when it stops."""

from __future__ import annotations

import os
import stat
import sys

__all__ = ["admit_user", "claim_address", "new_private_address", "remove_address"]

# sockaddr_un holds 108 bytes on Linux, including the terminating NUL.
_MAX_ADDRESS_BYTES = 107
_SOCKET_NAME = "listener.sock"


def new_private_address() -> str:
    """Return a socket path inside a directory not made yet, in the first of
    the places ``tempfile`` would use (``tempfile.tempdir``, ``$TMPDIR``,
    ``$TEMP``, ``$TMP``, /tmp, /var/tmp, /usr/tmp, the working directory)
    where this process may create one and the path fits in a socket address.

    The directory is made, private to this user, only when a listener starts
    serving the address (:func:`claim_address`), and removed when it stops: a
    queue no listener ever serves leaves nothing behind.

    Not ``tempfile.mkdtemp``: importing tempfile would add 1.6 ms to every
    spawned worker's start, and only the parent ever calls this.

    Raises:
        OSError: no such place.
    """
    chosen = getattr(sys.modules.get("tempfile"), "tempdir", None)
    environment = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    candidates = [chosen, *environment, "/tmp", "/var/tmp", "/usr/tmp", os.curdir]
    problems = []
    for parent in dict.fromkeys(os.path.abspath(path) for path in candidates if path):
        if not os.path.isdir(parent) or not _may_create_in(parent):
            problems.append(f"{parent}: not a directory this process may create in")
            continue
        address = os.path.join(parent, "mplog-" + os.urandom(6).hex(), _SOCKET_NAME)
        if len(os.fsencode(address)) <= _MAX_ADDRESS_BYTES:
            return address
        problems.append(f"{address!r} is longer than a Unix socket path can be")
    raise OSError(f"cannot make a private directory for the listener's socket ({'; '.join(problems)})")


def _may_create_in(parent: str) -> bool:
    if os.access in os.supports_effective_ids:  # a setuid program creates as its effective user
        return os.access(parent, os.W_OK | os.X_OK, effective_ids=True)
    return os.access(parent, os.W_OK | os.X_OK)


def claim_address(address: str) -> None:
    """Make ``address`` ready for a listener to bind: create its private
    directory if it is mplog's own (0700, this user's), and check that no
    listener is serving it already.

    Raises:
        RuntimeError: a socket is at ``address`` already: another listener
            serves it (or one that was killed left it behind).
        PermissionError: the directory exists but is not this user's private
            one (someone else made it, or it is writable by others).
        OSError: the directory cannot be made.
    """
    directory = os.path.dirname(address)
    if os.path.basename(directory).startswith("mplog-"):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            _check_private(directory)
    if os.path.lexists(address):
        raise RuntimeError(
            f"another listener is already serving {address!r}: a QueueListener serves an address "
            f"one at a time (stop the other first; if none is running, a listener that was killed "
            f"left the socket behind: remove it)"
        )


def _check_private(directory: str) -> None:
    """Raise PermissionError unless ``directory`` is a real directory of this
    user's that nobody else may write in (as mplog makes them: 0700, or 0711
    with ``worker_user``)."""
    status = os.lstat(directory)
    if stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid() and not status.st_mode & 0o022:
        return
    raise PermissionError(
        f"{directory!r} exists but is not a private directory of uid {os.geteuid()} "
        f"(owner uid {status.st_uid}, mode {stat.S_IMODE(status.st_mode):o}); not serving a listener in it"
    )


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
