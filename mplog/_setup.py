"""``mplog.setup()``: start a listener for this process and its children, and
route the root logger through it."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from types import TracebackType
from typing import List, Optional, Tuple, Type, Union

from . import _fork, _worker
from ._listener import RUNNERS, QueueListener
from ._transport import Queue, remove_address
from .exceptions import SetupError

__all__ = ["Session", "setup"]

_lock = threading.Lock()
_active: Optional["Session"] = None


def setup(
    *handlers: logging.Handler,
    level: Union[int, str, None] = None,
    listener: str = "thread",
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

    Raises:
        SetupError: a session is already active in this process, or the
            listener could not start.
        TypeError: a handler is not a ``logging.Handler``, or ``level`` is
            neither an int nor a str.
        ValueError: an unknown level name or listener kind, or a handler that
            is attached to a logger other than the root.
    """
    global _active
    resolved_level = _check_level(level)
    if listener not in RUNNERS:
        raise ValueError(f"listener must be 'thread' or 'process', got {listener!r} ({type(listener).__name__})")
    with _lock:
        if _active is not None and _active.pid == os.getpid():
            raise SetupError(
                "mplog.setup() is already active in this process; leave its `with` block "
                "or call its stop() before setting up again"
            )
        session = Session(handlers, resolved_level, listener)
        _active = session
    return session


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


def _attached_elsewhere(handlers: Tuple[logging.Handler, ...]) -> List[str]:
    wanted = set(handlers)
    found = []
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and wanted.intersection(logger.handlers):
            found.append(name)
    return found


class Session:
    """An active ``mplog.setup()``: a context manager; ``stop()`` ends it."""

    def __init__(self, handlers: Tuple[logging.Handler, ...], level: Optional[int], runner: str) -> None:
        root = logging.getLogger()
        for position, handler in enumerate(handlers):
            if not isinstance(handler, logging.Handler):
                raise TypeError(
                    f"mplog.setup() argument {position + 1} must be a logging.Handler, "
                    f"got {handler!r} ({type(handler).__name__})"
                )
        elsewhere = _attached_elsewhere(handlers)
        if elsewhere:
            raise ValueError(
                f"a handler given to mplog.setup() is also attached to logger(s) {elsewhere}; "
                "remove it there first, or every process would write through it directly"
            )
        self.pid = os.getpid()
        self._saved_root: Tuple[List[logging.Handler], int] = (root.handlers[:], root.level)
        if not handlers:
            handlers = tuple(root.handlers) or (_default_handler(),)
        self.handlers = handlers
        self.queue = Queue()
        self.listener = QueueListener(self.queue, *handlers, runner=runner)
        try:
            self.listener.start()
        except OSError as exc:
            remove_address(self.queue.address)
            raise SetupError(f"mplog.setup() could not start its listener: {exc}") from exc

        if level is not None:
            root.setLevel(level)
        handler_level = min(handler.level for handler in handlers)
        config = _worker.WorkerConfig(
            address=self.queue.address,
            root_level=root.level,
            handler_level=handler_level,
            logger_levels=_explicit_logger_levels(),
            text_targets=self.listener.text_targets,
            send_record=bool(self.listener.record_handlers),
        )
        self._handler = config.handler(self.queue)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.addHandler(self._handler)
        self._saved_config = _worker.current()
        self._saved_environment = os.environ.get(_worker.ENVIRONMENT_VARIABLE)
        _worker.set_current(config)
        os.environ[_worker.ENVIRONMENT_VARIABLE] = config.to_json()
        atexit.register(self.stop)
        _fork.register(self)

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
    def active(self) -> bool:
        """Whether this session is running in this process."""
        return _active is self and self.pid == os.getpid()

    def stop(self) -> None:
        """Write every record sent so far, close the handlers and give the root
        logger back its previous handlers and level. Idempotent; does nothing in
        a forked child."""
        global _active
        with _lock:
            if not self.active:
                return
            _active = None
        atexit.unregister(self.stop)
        self.listener.stop()
        root = logging.getLogger()
        root.removeHandler(self._handler)
        saved_handlers, saved_level = self._saved_root
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        _worker.set_current(self._saved_config)
        if self._saved_environment is None:
            os.environ.pop(_worker.ENVIRONMENT_VARIABLE, None)
        else:
            os.environ[_worker.ENVIRONMENT_VARIABLE] = self._saved_environment
        # With a listener process these are this process's unused copies;
        # closing them still matters (a file handler reopens the current file
        # on its next use instead of writing through a stale descriptor).
        for handler in self.handlers:
            handler.close()


def _default_handler() -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    return handler


def _explicit_logger_levels() -> Tuple[Tuple[str, int], ...]:
    return tuple(
        (name, logger.level)
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
    )
