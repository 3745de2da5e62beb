"""``mplog serve``: one listener, in the foreground, for processes that are
not its children (cron jobs, services, other users' programs), writing
through the handlers of a configuration file. ``SIGTERM`` or ``SIGINT`` drain
and stop it; ``SIGHUP`` reloads the configuration (or, if it cannot, reopens
the files, as after an external rotation)."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import signal
import socket
import stat
import sys
from typing import TYPE_CHECKING, Iterable, NamedTuple, Optional, Tuple

from . import _serveconfig, _stderr
from ._access import Access
from ._endpoint import resolve_address
from ._listening import inherited_listening

if TYPE_CHECKING:  # the listener is imported when serving, not for --check or --help
    from ._servelistener import ServeListener

__all__ = ["ServeOptions", "StartError", "UsageError", "check", "serve"]

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_SIGNALS = _STOP_SIGNALS | {signal.SIGHUP}


class UsageError(ValueError):
    """A bad option or configuration: the command exits with status 2."""


class StartError(RuntimeError):
    """The server cannot start (its socket is in use, say): status 1."""


class ServeOptions(NamedTuple):
    """What ``mplog serve`` was asked to do."""

    config: str
    socket: Optional[str] = None
    allow_groups: Iterable[str] = ()
    allow_uids: Iterable[str] = ()
    drain_timeout: float = 10.0


def access_of(options: ServeOptions) -> Access:
    """Who may connect, from ``--allow-group`` and ``--allow-uid``.

    Raises:
        UsageError: an unknown group or user, or more than one group.
    """
    groups = list(options.allow_groups)
    if len(groups) > 1:
        raise UsageError("--allow-group may be given once (make one group of the users who may log)")
    gid = _gid(groups[0]) if groups else None
    return Access([_uid(user) for user in options.allow_uids], gid)


def _gid(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid if not name.isdigit() else int(name)
    except KeyError:
        raise UsageError(f"--allow-group {name}: no such group") from None


def _uid(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid if not name.isdigit() else int(name)
    except KeyError:
        raise UsageError(f"--allow-uid {name}: no such user") from None


def check(options: ServeOptions) -> str:
    """Validate the configuration (its handlers are built, then closed) and
    the access options; return a one-line summary.

    Raises:
        UsageError: they are not valid.
    """
    access_of(options)
    config = _load(options.config)
    try:
        names = [logger.name for logger, group in zip(config.loggers, config.groups) if group]
        return f"{options.config}: OK, {len(config.handlers)} handler(s) on logger(s) {', '.join(names)}"
    finally:
        _serveconfig.close(config)


def _load(path: str) -> _serveconfig.ServeConfig:
    try:
        return _serveconfig.load(path)
    except _serveconfig.ConfigError as exc:
        raise UsageError(str(exc)) from None


def serve(options: ServeOptions, ready: Optional[str] = None) -> None:
    """Serve until ``SIGTERM`` or ``SIGINT``, then drain and return.

    ``ready``: a line to print on stderr once clients can connect (``{address}``
    is filled in).

    Raises:
        UsageError: bad options or configuration.
        StartError: the socket cannot be served.
    """
    from ._servelistener import ServeListener

    access = access_of(options)
    inherited, address = _listening(options)
    config = _load(options.config)
    # Blocked before the listener's threads start, so they inherit the mask:
    # only the main thread's sigwait ever takes these signals.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    listener = None
    try:
        if inherited is None:  # systemd made its socket, and its directory
            _prepare_directory(address, access)
            _remove_stale_socket(address)
        listener = ServeListener(address, config, access, drain_timeout=options.drain_timeout, listening=inherited)
        try:
            listener.start()
        except (OSError, RuntimeError) as exc:
            raise StartError(f"cannot serve {address}: {exc}") from None
        if ready is not None:
            print(ready.format(address=address), file=sys.stderr, flush=True)
        _wait(listener, options.config)
    finally:
        if listener is not None:
            listener.stop()
            config = listener.config  # the one reloaded last
        _serveconfig.close(config)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def _listening(options: ServeOptions) -> Tuple[Optional[socket.socket], str]:
    """The listening socket systemd passed (``None`` if none) and the address served.

    Raises:
        UsageError: systemd passed something else, or ``--socket`` names
            another address than its socket's.
    """
    try:
        inherited = inherited_listening()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if inherited is None:
        return None, resolve_address(options.socket)
    address = inherited.getsockname()
    if not isinstance(address, str) or not os.path.isabs(address):
        raise UsageError(f"the socket from systemd is not at a path ({address!r}); give ListenStream=/path")
    if options.socket is not None and resolve_address(options.socket) != address:
        raise UsageError(f"--socket {options.socket}: systemd passed the socket at {address}; give one or the other")
    return inherited, address


def _wait(listener: "ServeListener", path: str) -> None:
    """Take signals until one says stop; ``SIGHUP`` reloads the configuration
    at ``path``, or, if it cannot be, reopens the files (logrotate's
    ``postrotate`` sends it too, and a file being edited must not stop that)."""
    while True:
        number = signal.sigwait(_SIGNALS)
        if number in _STOP_SIGNALS:
            return
        try:
            said = listener.reload(path)
        except _serveconfig.ConfigError as exc:
            listener.reopen_files()
            said = f"error: {exc}; the files were reopened"
            _stderr.note(said)
        print(f"mplog serve: {said}", file=sys.stderr, flush=True)


def _prepare_directory(address: str, access: Access) -> None:
    """Make the socket's directory if missing: 0700, or 0711 when other users
    are admitted (they may pass through it, not list it or add to it). One
    that exists must not let others replace the socket.

    Raises:
        StartError: it cannot be made, or others may write in it.
    """
    directory = os.path.dirname(address)
    others = bool(access.group is not None or access.uids - {os.getuid(), 0})
    try:
        os.makedirs(directory, 0o711 if others else 0o700, exist_ok=True)
        status = os.stat(directory)
    except OSError as exc:
        raise StartError(f"cannot make the socket's directory {directory}: {exc.strerror}") from None
    writable_by_others = status.st_mode & 0o022 and not status.st_mode & stat.S_ISVTX
    if status.st_uid not in (os.getuid(), 0) or writable_by_others:
        raise StartError(
            f"{directory} is not a safe place for the socket (owner uid {status.st_uid}, mode "
            f"{stat.S_IMODE(status.st_mode):o}): others could replace it; give --socket in a directory of yours"
        )


def _remove_stale_socket(address: str) -> None:
    """Remove a socket left at ``address`` by a server that was killed.

    Raises:
        StartError: a server is serving it, or something else is there.
    """
    try:
        mode = os.lstat(address).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartError(f"{address} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(address)
    except OSError as exc:
        if exc.errno != errno.ECONNREFUSED:
            raise StartError(f"cannot tell whether a server serves {address}: {exc}") from None
        os.unlink(address)  # nobody listens: a killed server's
        return
    finally:
        probe.close()
    raise StartError(f"another server is serving {address}")


def main(options: ServeOptions, check_only: bool) -> int:
    """Run ``mplog serve``; return its exit status (0, 1 cannot start, 2 bad
    options or configuration), errors said in one line on stderr."""
    try:
        if check_only:
            print(check(options))
        else:
            serve(options, ready="mplog serve: serving {address}")
    except UsageError as exc:
        return _fail(str(exc), 2)
    except StartError as exc:
        return _fail(str(exc), 1)
    return 0


def _fail(message: str, status: int) -> int:
    print(f"mplog serve: error: {message}", file=sys.stderr)
    return status
