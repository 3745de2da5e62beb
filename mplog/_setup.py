"""``mplog.setup()``: start a listener for this process and its children, and
route the root logger (and any named loggers) through it."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
from types import TracebackType
from typing import Iterable, List, Optional, Tuple, Type, Union

from . import _install, _sigterm, _takeover
from ._address import remove_address
from ._buffered import check_flush_interval
from ._config import (
    ENVIRONMENT_VARIABLE,
    WorkerConfig,
    check_handlers,
    check_seconds,
    check_worker_user,
    explicit_logger_levels,
)
from ._handler import QueueHandler
from ._lanes import STALL_SECONDS
from ._listener import DRAIN_TIMEOUT, RUNNERS, QueueListener
from ._queue import Queue
from ._targets import route_configs
from .exceptions import SetupError

__all__ = ["Session", "active_session", "setup"]

_lock = threading.Lock()
_active: Optional["Session"] = None


def setup(
    *handlers: logging.Handler,
    level: Union[int, str, None] = None,
    listener: str = "thread",
    loggers: Iterable[str] = (),
    buffered: bool = False,
    flush_interval: float = 0.025,
    worker_user: Union[str, int, None] = None,
    drain_timeout: float = DRAIN_TIMEOUT,
    stall_timeout: float = STALL_SECONDS,
    takeover: bool = True,
) -> "Session":
    """Start logging from every process of this program through one listener.

    The listener owns ``handlers`` (with their formatters, filters and levels)
    and is the only code that calls them. The root logger of this process, of
    every process forked from it, and of every process started with
    :data:`mplog.initializer` gets a handler that ships records to it. Use the
    result as a context manager, or call its ``stop()``; a session never stopped
    is stopped (and drained) at interpreter exit.

    Args:
        *handlers: where records end up. With none, the root logger's current
            handlers are adopted (so a ``basicConfig``/``dictConfig`` setup becomes
            multi-process safe), or a stderr handler if it has none.
        level: root logger level for this process and all workers; ``None``
            keeps the current one.
        listener: ``"thread"`` (default) or ``"process"``.
        loggers: names of loggers that have handlers of their own (e.g.
            ``"gunicorn.access"``): the listener adopts those too, and records of
            these loggers reach them as before, in every process. Each keeps its
            ``propagate`` setting.
        buffered: ``False`` (default): every record is in the listener's
            pipe, in the kernel, before the logging call returns, so it
            survives its process being killed right after. ``True``: each
            process gathers its records and sends them together (less work
            per record, the listener's about half): at most ``flush_interval`` seconds after
            they were logged, every 64 KiB, before a fork, at exit and on
            SIGTERM; records still gathered when a process is SIGKILLed or
            calls ``os._exit`` are lost (call :func:`mplog.flush` first).
        flush_interval: with ``buffered``, the longest a record waits in its
            process, in seconds.
        worker_user: for a program started as root whose workers switch to
            another user (gunicorn's ``user=``, a ``setuid`` of your own): that
            user's name or uid. Its processes may then log here too: the
            listener's socket becomes theirs (still 0600) and its private
            directory 0711 (enterable, not listable). Any other user is still
            refused. ``None`` (default): only this process's own user, and root.
        drain_timeout: ``stop()``, and so the interpreter's exit, waits for the
            handlers to handle what was logged before it as long as they keep
            returning; a handler whose call has not returned for this many
            seconds is given up on, and what it has not handled is counted
            and said on stderr.
        stall_timeout: a handler whose call has not returned for this many
            seconds is stalled: said once on stderr (and in the log once it
            returns), and from then on nothing waits for it; what does not fit
            in its backlog (2 MiB) is dropped and counted. Until then, a full
            backlog makes the logging calls wait (back-pressure).
        takeover: ``True`` (default): the stdlib file handlers that any
            process of the session configures itself (``dictConfig`` in every
            worker, say) or inherits at fork, on any logger, are taken over:
            they keep their level, filters and formatter there, and the
            listener writes (and rotates) each file through one handler for
            all processes. ``False``: they write their files themselves. One
            handler stays in its process with ``handler.mplog_takeover = False``.

    Raises:
        SetupError: a session is already active in this process, this
            process is a client of an ``mplog serve`` server
            (:func:`mplog.connect`), or the listener could not start (as
            when a process that is not root names another ``worker_user``).
        TypeError: a handler is not a ``logging.Handler``, ``level`` is
            neither an int nor a str, or ``worker_user`` neither a str nor an int.
        ValueError: an unknown level name or listener kind, a named logger with
            no handlers, a handler attached to a logger mplog was not told
            about, a ``flush_interval`` that is not > 0 and <= 60 seconds, a
            ``worker_user`` that names no user, or a timeout that is not > 0.
    """
    global _active
    resolved_level = _check_level(level)
    for name, flag in (("buffered", buffered), ("takeover", takeover)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r} ({type(flag).__name__})")
    interval = check_flush_interval(flush_interval)  # checked even unused: a typo should not pass silently
    if not buffered:
        interval = None
    if listener not in RUNNERS:
        raise ValueError(f"listener must be 'thread' or 'process', got {listener!r} ({type(listener).__name__})")
    names = _check_logger_names(loggers)
    worker_uid = check_worker_user(worker_user)
    timeouts = (check_seconds("drain_timeout", drain_timeout), check_seconds("stall_timeout", stall_timeout))
    _refuse_in_a_client()
    with _lock:
        if _active is not None and _active.pid == os.getpid():
            raise SetupError(
                "mplog.setup() is already active in this process; leave its `with` block "
                "or call its stop() before setting up again"
            )
        session = Session(handlers, resolved_level, listener, names, interval, worker_uid, timeouts, takeover)
        _active = session
    return session


def _refuse_in_a_client() -> None:
    """Raise if this process is a client of an ``mplog serve`` server.

    A session of its own would write the files its processes configure
    itself, beside the server that writes them for every client.

    Raises:
        SetupError: it is.
    """
    current = _install.current()
    if current is not None and current.served:
        raise SetupError(
            f"this process is a client of the mplog server at {current.address} (mplog.connect() or "
            "mplog run with MPLOG_ADDRESS); it cannot also run a session: its children are clients already"
        )


def active_session() -> Optional["Session"]:
    """The session this process started, if it is running."""
    session = _active
    return session if session is not None and session.active else None


def _check_level(level: Union[int, str, None]) -> Optional[int]:
    if level is None:
        return None
    if isinstance(level, bool) or not isinstance(level, (int, str)):
        raise TypeError(f"level must be an int or a level name, got {level!r} ({type(level).__name__})")
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown level name {level!r}; expected e.g. 'DEBUG', 'INFO', 'WARNING'")
        return resolved
    return level


def _check_logger_names(loggers: Iterable[str]) -> Tuple[str, ...]:
    if isinstance(loggers, str):
        raise TypeError(f"loggers must be an iterable of logger names, got the string {loggers!r}")
    names = tuple(loggers)
    for name in names:
        if not isinstance(name, str) or not name or name == "root":
            raise ValueError(f"loggers must hold names of non-root loggers, got {name!r} ({type(name).__name__})")
        if not logging.getLogger(name).handlers:
            raise ValueError(f"logger {name!r} has no handlers for mplog to take over")
    return names


def _check_handlers(handlers: Tuple[logging.Handler, ...], allowed: Tuple[str, ...]) -> None:
    check_handlers(handlers, "mplog.setup()")
    wanted = set(handlers)
    elsewhere = [
        name
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name not in allowed and wanted.intersection(logger.handlers)
    ]
    if elsewhere:
        raise ValueError(
            f"a handler given to mplog.setup() is also attached to logger(s) {elsewhere}; "
            "remove it there first (or name the logger in loggers=), or every process "
            "would write through it directly"
        )


class Session:
    """An active ``mplog.setup()``: a context manager; ``stop()`` ends it."""

    def __init__(
        self,
        handlers: Tuple[logging.Handler, ...],
        level: Optional[int],
        runner: str,
        names: Tuple[str, ...],
        flush_interval: Optional[float] = None,
        worker_uid: Optional[int] = None,
        timeouts: Tuple[float, float] = (DRAIN_TIMEOUT, STALL_SECONDS),
        takeover: bool = True,
    ) -> None:
        _check_handlers(handlers, names)
        self.pid = os.getpid()
        self._loggers = [logging.getLogger()] + [logging.getLogger(name) for name in names]
        # What stop() puts back: each logger's handlers, and the root's level.
        self._saved: List[List[logging.Handler]] = [logger.handlers[:] for logger in self._loggers]
        self._saved_level = self._loggers[0].level
        root_handlers = handlers or tuple(self._saved[0]) or (_default_handler(),)
        groups = [root_handlers] + [tuple(saved) for saved in self._saved[1:]]
        self.queue = Queue(flush_interval=flush_interval)
        drain_timeout, stall_timeout = timeouts
        self.listener = QueueListener(
            self.queue,
            *root_handlers,
            respect_handler_level=True,  # each handler's level holds, as where the handlers were before
            runner=runner,
            routes=groups[1:],
            worker_user=worker_uid,
            drain_timeout=drain_timeout,
            stall_timeout=stall_timeout,
        )
        config = self._worker_config(groups, flush_interval, self._saved_level if level is None else level)
        config = config._replace(takeover=takeover, stand_in_root=self._root_stands_in(handlers))
        if runner == "process":
            self.listener._in_listener_process = functools.partial(self._log_in_listener_process, config)
        try:
            self.listener.start()
        except OSError as exc:
            remove_address(self.queue.address)
            raise SetupError(f"mplog.setup() could not start its listener: {exc}") from exc
        if level is not None:
            self._loggers[0].setLevel(level)
        self._handlers = self._install_handlers(config, delivered_here=runner == "thread")
        self._saved_config = _install.current()
        self._saved_environment = os.environ.get(ENVIRONMENT_VARIABLE)
        _install.load_process_modules()
        _install.set_current(config, self._local_listener())
        os.environ[ENVIRONMENT_VARIABLE] = config.to_json()
        atexit.register(self.stop)

    def _root_stands_in(self, handlers: Tuple[logging.Handler, ...]) -> bool:
        """Whether the root's handler in every process stands for "not
        configured": setup() had no handlers, and the root none to adopt."""
        return not handlers and not self._saved[0]

    def _local_listener(self) -> Optional[_takeover.Local]:
        """This process's listener thread, to ask and feed without the socket."""
        if self.listener.runner != "thread":
            return None
        return _takeover.Local(self.pid, self.listener.declare, self.listener.handle)

    def _worker_config(
        self, groups: List[Tuple[logging.Handler, ...]], flush_interval: Optional[float], root_level: int
    ) -> WorkerConfig:
        """What every process needs to log through this session's listener."""
        routes = route_configs(self._loggers, groups)
        return WorkerConfig(self.queue.address, root_level, routes, explicit_logger_levels(), flush_interval)

    def _log_in_listener_process(self, config: WorkerConfig) -> None:
        """In the listener process, before it serves: what is logged there (by
        a handler, say) goes to the handlers there, as in the process of a
        listener thread, rather than to the loggers' handlers from before setup()."""
        self._loggers[0].setLevel(config.root_level)
        self._install_handlers(config, delivered_here=True)

    def _install_handlers(self, config: WorkerConfig, delivered_here: bool) -> List[QueueHandler]:
        """Make a worker handler the only handler of each of this session's
        loggers; ``delivered_here``: its records go to a listener of this
        process directly, not across a pipe."""
        handlers = []
        for route, logger in enumerate(self._loggers):
            queue = self.queue if route == 0 else Queue(self.queue.address, route, config.flush_interval)
            if delivered_here:
                queue._deliver_here(self.listener.handle)
            handler = _install.worker_handler(config, route, queue)
            logger.handlers[:] = [handler]
            handlers.append(handler)
        return handlers

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped"
        return f"<mplog.Session {state} listener={self.listener.runner} address={self.queue.address!r}>"

    def __enter__(self) -> "Session":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def handlers(self) -> Tuple[logging.Handler, ...]:
        """The handlers the root logger's records go to (owned by the listener)."""
        return self.listener.handlers

    @property
    def active(self) -> bool:
        """Whether this session is running in this process."""
        return _active is self and self.pid == os.getpid()

    def reopen_files(self) -> None:
        """Reopen the listener's log files by name (after an external rotation)."""
        if self.active:
            self.listener.reopen_files()

    def reclaim_loggers(self) -> List[logging.Handler]:
        """Make mplog's handler the only one on each logger of this session again,
        and return the handlers found there besides it (closed).

        For after something reconfigured logging in this process while the
        session runs, e.g. a server reloading its configuration: those new
        handlers would write directly, beside the listener.
        """
        strays: List[logging.Handler] = []
        for logger, handler in zip(self._loggers, self._handlers):
            strays.extend(h for h in logger.handlers if h is not handler)
            logger.handlers[:] = [handler]
        owned = set(self.listener.all_handlers)
        for stray in strays:
            if stray not in owned:
                stray.close()
        return strays

    def stop(self) -> None:
        """Write every record sent so far, close the handlers and give each
        logger back its previous handlers (and the root its level). Idempotent;
        does nothing in a forked child. A handler stuck for the session's
        ``drain_timeout`` is not waited for (see :func:`setup`)."""
        global _active
        with _lock:
            if not self.active:
                return
            _active = None
        atexit.unregister(self.stop)
        _takeover.deactivate()  # this process's file handlers write their files again
        for handler in self._handlers:  # this process's own buffered records, if any
            handler.flush()
        _sigterm.release()
        self.listener.stop()
        for handler in self._handlers:
            # This process's pipe of each route (a listener process's only):
            # the listener has closed its end, and nothing else ever would.
            handler.queue.close()
        for logger, handler, saved in zip(self._loggers, self._handlers, self._saved):
            logger.removeHandler(handler)
            for previous in saved:
                logger.addHandler(previous)
        self._loggers[0].setLevel(self._saved_level)
        _install.set_current(self._saved_config)
        if self._saved_environment is None:
            os.environ.pop(ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[ENVIRONMENT_VARIABLE] = self._saved_environment
        # With a listener process these are this process's unused copies;
        # closing them still matters (a file handler reopens the current file
        # on its next use instead of writing through a stale descriptor).
        for owned in self.listener.all_handlers:
            if owned not in self.listener.stuck_handlers:  # its lock is held for good
                owned.close()


def _default_handler() -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    return handler
