"""Opening and making files in a log directory other users may write to (a
group-writable one, say), for a listener that may run as root.

Whoever can write to a directory can put a symbolic link, a FIFO or a file of
their own at any name in it, and remove or rename what is there. So:

* a file mplog makes is made with ``O_CREAT|O_EXCL|O_NOFOLLOW``: never
  through a link, never by reusing (or truncating) a file already there;
* a file it reads or appends to is opened with ``O_NOFOLLOW``, except the live
  log file, which may be a link made by this process's user, root or the
  directory's owner (the kernel's ``protected_symlinks`` rule, applied in
  every directory rather than only sticky world-writable ones); and with
  ``O_NONBLOCK``, so that a FIFO nobody reads fails at once instead of
  stalling the listener;
* a file made from, or in place of, another (an archive, the live file after
  a rotation) gets that file's permission bits and, where this process may
  (as root), its owner and group; until then it is 0600.

A regular file someone else put at the live file's name is still opened: a log
handed to another user by ``chown`` is an ordinary setup.

:func:`write_and_close` writes bytes whole to a file so opened (``os.write``
may write less than it is given) and closes it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Optional

__all__ = ["copy_owner_and_mode", "create_like", "open_append", "open_regular", "write_and_close"]

_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
# A log's first file: as before, and as the stdlib's FileHandler makes one (less the umask).
_FIRST_FILE_MODE = 0o644
# Made, removed or replaced by someone else between two steps of opening: tries before giving up.
_TRIES = 3


def open_append(path: str, like: Optional[os.stat_result], follow_trusted_link: bool = False) -> int:
    """Open ``path`` to append to it, making it if missing (with the mode and
    owner of ``like``, see :func:`create_like`); return the descriptor.

    Raises:
        OSError: as ``os.open`` does; also for a symbolic link not followed
            (only with ``follow_trusted_link``, and only a link of this
            process's user, root or the directory's owner, is), and ENXIO
            for a FIFO nobody reads.
    """
    for _ in range(_TRIES):
        try:
            return _open_existing(path, follow_trusted_link)
        except FileNotFoundError:
            pass
        try:
            return create_like(path, _APPEND, like)
        except FileExistsError:  # made since we looked: open that
            continue
    raise OSError(errno.EAGAIN, "made and removed again while being opened", path)


def _open_existing(path: str, follow_trusted_link: bool) -> int:
    try:
        fd = os.open(path, _APPEND | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        fd = _open_link(path, follow_trusted_link, exc)
    # Non-blocking only to open: writes to a FIFO or terminal block as usual.
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def _open_link(path: str, follow: bool, error: OSError) -> int:
    """Open ``path``, a symbolic link, through the link if it may be followed."""
    link = os.lstat(path)
    if not stat.S_ISLNK(link.st_mode):  # ELOOP from a link earlier in the path
        raise error
    if not follow:
        raise OSError(errno.ELOOP, "is a symbolic link; not followed", path)
    trusted = (0, os.geteuid(), os.stat(os.path.dirname(path)).st_uid)
    if link.st_uid not in trusted:
        raise PermissionError(
            errno.EACCES,
            f"is a symbolic link of uid {link.st_uid}; "
            "only links of this user, root or the directory's owner are followed",
            path,
        )
    fd = os.open(path, _APPEND | os.O_CREAT | os.O_NONBLOCK, _FIRST_FILE_MODE)
    try:
        again = os.lstat(path)
    except OSError:
        again = None
    if again is None or (again.st_dev, again.st_ino) != (link.st_dev, link.st_ino):
        os.close(fd)
        raise PermissionError(errno.EACCES, "was replaced while being opened", path)
    return fd


def create_like(path: str, flags: int, like: Optional[os.stat_result]) -> int:
    """Make ``path`` (``O_CREAT|O_EXCL|O_NOFOLLOW``: it must not exist, not even
    as a link) and open it with ``flags``; give it the permission bits and, where
    permitted, the owner of ``like`` (:func:`copy_owner_and_mode`), or, without
    ``like``, 0644 less the umask. Return the descriptor.

    Raises:
        FileExistsError: something is at ``path``, a link included.
        OSError: as ``os.open``, ``os.fchown`` and ``os.fchmod`` do.
    """
    mode = _FIRST_FILE_MODE if like is None else 0o600  # private until it is like ``like``
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    if like is not None:
        try:
            copy_owner_and_mode(fd, like)
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
    return fd


def copy_owner_and_mode(fd: int, like: os.stat_result) -> None:
    """Give the file open as ``fd`` the permission bits (0o777) of ``like`` and
    its owner and group where this process may: as root, both; otherwise the
    group if this process belongs to it. Where the group cannot be copied, the
    group's bits are cleared, so that no one gets through the group what they
    could not read before."""
    mode = stat.S_IMODE(like.st_mode) & 0o777
    try:
        os.fchown(fd, like.st_uid, like.st_gid)
    except PermissionError:  # not root: this user owns it; the group, if ours
        try:
            os.fchown(fd, -1, like.st_gid)
        except PermissionError:
            mode &= ~0o070
    os.fchmod(fd, mode)


def open_regular(path: str) -> int:
    """Open ``path`` to read it, only if it is a regular file (not a link, a
    FIFO or a device); return the descriptor.

    Raises:
        OSError: as ``os.open`` does; ELOOP for a symbolic link, EINVAL for
            anything but a regular file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP and stat.S_ISLNK(os.lstat(path).st_mode):
            raise OSError(errno.ELOOP, "is a symbolic link; not followed", path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    return fd


def write_and_close(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, then close ``fd`` (also when a write fails)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
