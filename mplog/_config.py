"""What a worker needs to log like its parent, in a form that crosses
processes (pickled with the initializer, or as JSON in the environment), and
the checks of what users pass in."""

from __future__ import annotations

import json
import logging
import math
import pickle
import pwd
import time
from typing import Any, Callable, Iterable, NamedTuple, Optional, Set, Tuple, Union

from . import _stderr
from ._buffered import check_flush_interval
from ._format import PercentFormatter, SecondCachingFormatter
from ._json import JsonFormatter

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "RouteConfig",
    "TextTarget",
    "TracebackFormatters",
    "WorkerConfig",
    "check_handlers",
    "check_worker_user",
    "explicit_logger_levels",
]

# The largest uid: (uid_t)-1 means "no change" to chown and setuid.
_MAX_UID = 2**32 - 2

#: Set by ``mplog.setup()`` for child processes that inherit the environment.
ENVIRONMENT_VARIABLE = "MPLOG_CONFIG"


class TextTarget(NamedTuple):
    """How to format a record for one listener handler that only writes text
    (a plain ``StreamHandler``/``FileHandler`` with a plain ``Formatter``), or
    only sends it (a plain ``mplog.SyslogHandler``), so the worker formats and
    the listener only writes."""

    level: int
    fmt: Optional[str]
    datefmt: Optional[str]
    style: str  # "%", "{", "$", or "json" for mplog.JsonFormatter
    utc: bool
    #: When the handler can take text frames (UTF-8 bytes, terminated as the
    #: handler terminates lines, written as they are): how the worker encodes
    #: them, as in ``str.encode``.
    raw_errors: Optional[str] = None
    #: For a ``SyslogHandler``: its RFC 5424 fields (facility code, hostname,
    #: app-name, SD-ID); the worker formats the whole message, whose text is
    #: the formatter above (``fmt`` None: the default message).
    syslog: Optional[Tuple[int, str, str, str]] = None

    def formatter(self) -> logging.Formatter:
        """A formatter equal to the handler's."""
        if self.syslog is None:
            return self._line_formatter()
        # Imported here: only a worker whose listener forwards needs it.
        from ._rfc5424 import Rfc5424Formatter

        default = self.fmt is None and self.style == "%"
        return Rfc5424Formatter(self.syslog, None if default else self._line_formatter())

    def _line_formatter(self) -> logging.Formatter:
        if self.style == "json":
            return JsonFormatter()
        if self.style == "%":
            formatter: logging.Formatter = PercentFormatter(self.fmt, self.datefmt)
        else:
            formatter = SecondCachingFormatter(self.fmt, self.datefmt, self.style, validate=False)  # type: ignore[arg-type]
        if self.utc:
            formatter.converter = time.gmtime
        return formatter


class TracebackFormatters(Tuple[Optional[logging.Formatter], ...]):
    """Per listener handler of a route, in order: its formatter if it renders
    tracebacks its own way (overrides ``formatException``), else ``None``.

    Only the worker has the exception, so it renders their tracebacks. A
    spawned worker gets the formatters pickled one by one: one that cannot
    cross (a class defined in a function, a lock held) costs that handler its
    own rendering in that worker, said once on stderr, and nothing else.
    """

    def __reduce__(self) -> Tuple[Callable[..., "TracebackFormatters"], Tuple[Any, ...]]:
        return (_unpickled, tuple(_pickled(formatter) for formatter in self))


# What was already said about formatters that do not cross to a spawned
# worker, so that starting a pool says it once, not once per worker.
_reported: Set[str] = set()


def _pickled(formatter: Optional[logging.Formatter]) -> Optional[bytes]:
    if formatter is None:
        return None
    try:
        return pickle.dumps(formatter)
    except Exception as exc:  # any reason at all: the worker must still start
        _report_once(
            f"{formatter!r} cannot be pickled ({type(exc).__name__}: {exc}); spawned workers "
            "render its handler's tracebacks as logging.Formatter does"
        )
        return None


def _unpickled(*pickled: Optional[bytes]) -> "TracebackFormatters":
    formatters = []
    for data in pickled:
        formatter = None
        if data is not None:
            try:
                formatter = pickle.loads(data)
            except Exception as exc:  # its class cannot be imported here, say
                _report_once(
                    f"a listener handler's formatter cannot be unpickled here ({type(exc).__name__}: {exc}); "
                    "this worker renders its tracebacks as logging.Formatter does"
                )
        formatters.append(formatter)
    return TracebackFormatters(formatters)


def _report_once(message: str) -> None:
    if message not in _reported:
        _reported.add(message)
        _stderr.report(message)


class RouteConfig(NamedTuple):
    """One logger that ships to the listener, and what its handler sends."""

    logger: str  # "" for the root logger
    propagate: bool
    handler_level: int
    text_targets: Tuple[TextTarget, ...] = ()
    send_record: bool = True
    #: Empty when every handler's tracebacks are the stock ones; not carried
    #: in JSON (a child that finds its config in the environment renders them all the stock way).
    traceback_formatters: TracebackFormatters = TracebackFormatters()


class WorkerConfig(NamedTuple):
    """What a worker needs to log like its parent: where the listener is, which
    loggers ship to it (route ``i`` is ``routes[i]``), and the parent's levels."""

    address: str
    root_level: int
    routes: Tuple[RouteConfig, ...]
    logger_levels: Tuple[Tuple[str, int], ...] = ()
    flush_interval: Optional[float] = None  # None: durable, else buffered
    #: Whether the file handlers of the session's processes are taken over.
    takeover: bool = True
    #: Whether the root's route is only mplog's stand-in for "not configured"
    #: (setup() had no handlers to adopt): basicConfig() then still configures.
    stand_in_root: bool = False
    #: Whether the listener is an ``mplog serve`` server (the process is its
    #: client, and cannot also run a session of its own).
    served: bool = False

    def to_json(self) -> str:
        """Serialise for the environment variable (without the routes' traceback formatters)."""
        routes = [route[:5] for route in self.routes]
        return json.dumps(
            (
                self.address,
                self.root_level,
                routes,
                self.logger_levels,
                self.flush_interval,
                self.takeover,
                self.stand_in_root,
                self.served,
            )
        )

    @classmethod
    def from_json(cls, text: str) -> "WorkerConfig":
        """Parse what :meth:`to_json` wrote.

        Raises:
            ValueError: ``text`` is not such a config.
        """
        try:
            address, root_level, routes, logger_levels, flush_interval, takeover, stand_in, served = json.loads(text)
            return cls(
                address,
                root_level,
                tuple(
                    RouteConfig(name, propagate, level, tuple(map(_text_target, targets)), send_record)
                    for name, propagate, level, targets, send_record in routes
                ),
                tuple((name, level) for name, level in logger_levels),
                check_flush_interval(flush_interval),
                bool(takeover),
                bool(stand_in),
                bool(served),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{ENVIRONMENT_VARIABLE} is not an mplog config: {text!r} ({exc})") from None


def _text_target(fields: Any) -> TextTarget:
    """A :class:`TextTarget` from its JSON form (a list; its ``syslog`` too)."""
    target = TextTarget(*fields)
    if target.syslog is None:
        return target
    facility, hostname, app_name, sd_id = target.syslog
    return target._replace(syslog=(int(facility), str(hostname), str(app_name), str(sd_id)))


def check_handlers(handlers: Iterable[object], caller: str) -> None:
    """Check that every one of ``handlers`` is a ``logging.Handler``.

    Raises:
        TypeError: one is not; the message names ``caller`` and its position.
    """
    for position, handler in enumerate(handlers, 1):
        if not isinstance(handler, logging.Handler):
            raise TypeError(
                f"{caller} argument {position} must be a logging.Handler, got {handler!r} ({type(handler).__name__})"
            )


def check_seconds(name: str, value: float) -> float:
    """``value`` as a number of seconds for the option ``name``.

    Raises:
        TypeError: it is not a number.
        ValueError: it is not finite and > 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r} ({type(value).__name__})")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def check_worker_user(user: Union[str, int, None]) -> Optional[int]:
    """The uid of ``worker_user``: a user name (looked up now) or a uid; None
    for None.

    Raises:
        TypeError: ``user`` is neither a str nor an int.
        ValueError: no user has that name, or the number is no uid.
    """
    if user is None:
        return None
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise TypeError(f"worker_user must be a user name or a uid, got {user!r} ({type(user).__name__})")
    if isinstance(user, int):
        if not 0 <= user <= _MAX_UID:
            raise ValueError(f"worker_user must be a uid from 0 to {_MAX_UID}, got {user}")
        return user
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ValueError(f"worker_user {user!r}: no such user") from None


def explicit_logger_levels() -> Tuple[Tuple[str, int], ...]:
    """The level of every logger of this process that has one set (not ``NOTSET``)."""
    return tuple(
        (name, logger.level)
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
    )
