"""The worker side: the handler that ships records to the listener, and the
initializer that installs it in processes that did not inherit it by fork."""

from __future__ import annotations

import codecs
import io
import json
import locale
import logging
import logging.handlers
import os
import sys
import threading
import time
from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

from . import _codec, _fork
from ._format import PercentFormatter, SecondCachingFormatter, line_function
from ._json import JsonFormatter
from ._transport import Queue, SpilledError, catch_sigterm, check_flush_interval

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "Initializer",
    "QueueHandler",
    "RouteConfig",
    "TextTarget",
    "WorkerConfig",
    "initializer",
]

#: Set by ``mplog.setup()`` for child processes that inherit the environment.
ENVIRONMENT_VARIABLE = "MPLOG_CONFIG"
_FALLBACK_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
_exception_formatter = logging.Formatter()


_STYLES = {"%": logging.PercentStyle, "{": logging.StrFormatStyle, "$": logging.StringTemplateStyle}


class TextTarget(NamedTuple):
    """How to format a record for one listener handler that only writes text
    (a plain ``StreamHandler``/``FileHandler`` with a plain ``Formatter``), so the
    worker formats and the listener only writes."""

    level: int
    fmt: Optional[str]
    datefmt: Optional[str]
    style: str
    utc: bool
    #: When the handler can take text frames (UTF-8 bytes, newline-terminated,
    #: written as they are): how the worker encodes them, as in ``str.encode``.
    raw_errors: Optional[str] = None

    @classmethod
    def of(cls, handler: logging.Handler) -> Optional["TextTarget"]:
        """The target for ``handler``, or ``None`` if only the handler itself can
        format and write its records (a subclass, filters, a custom formatter)."""
        from ._files import FileHandler  # late: _files needs nothing from here

        if type(handler) not in (logging.StreamHandler, logging.FileHandler, FileHandler) or handler.filters:
            return None
        formatter = handler.formatter or logging.Formatter()
        raw_errors = _raw_errors(handler)
        if type(formatter) is JsonFormatter:
            return cls(handler.level, None, None, "json", False, raw_errors)
        if (
            type(formatter) is not logging.Formatter
            or formatter.converter not in (time.localtime, time.gmtime)
            or formatter.default_time_format != logging.Formatter.default_time_format
            or formatter.default_msec_format != logging.Formatter.default_msec_format
            or getattr(formatter._style, "_defaults", None)
        ):
            return None
        style = next((char for char, kind in _STYLES.items() if type(formatter._style) is kind), None)
        if style is None:
            return None
        utc = formatter.converter is time.gmtime
        return cls(handler.level, formatter._fmt, formatter.datefmt, style, utc, raw_errors)

    def formatter(self) -> logging.Formatter:
        """A formatter equal to the handler's."""
        if self.style == "json":
            return JsonFormatter()
        if self.style == "%":
            formatter: logging.Formatter = PercentFormatter(self.fmt, self.datefmt)
        else:
            formatter = SecondCachingFormatter(self.fmt, self.datefmt, self.style, validate=False)  # type: ignore[arg-type]
        if self.utc:
            formatter.converter = time.gmtime
        return formatter


# Error handlers under which UTF-8 output never holds bytes 0xF5-0xFF (so text
# frames stay unambiguous); the surrogate ones can produce any byte.
_SAFE_ERRORS = ("strict", "replace", "ignore", "backslashreplace", "xmlcharrefreplace", "namereplace")


def _raw_errors(handler: logging.Handler) -> Optional[str]:
    """``TextTarget.raw_errors`` for a handler ``TextTarget.of`` accepts: set when
    the listener can write UTF-8 bytes to it directly, else ``None``.

    Where the handler would fail on an unencodable character (``errors`` strict)
    the worker escapes it instead, keeping the line."""
    from ._files import FileHandler

    if handler.terminator != "\n":  # type: ignore[attr-defined]
        return None
    if isinstance(handler, FileHandler):
        encoding, errors = handler.encoding, "backslashreplace"
        if handler.periods is not None:  # time rotation files each line by its record's time
            return None
    else:
        stream = getattr(handler, "stream", None)
        if stream is None and isinstance(handler, logging.FileHandler):  # delay=True: not opened yet
            encoding = handler.encoding or locale.getpreferredencoding(False)
            errors = getattr(handler, "errors", None) or "strict"
        elif type(stream) is io.TextIOWrapper and isinstance(getattr(stream, "buffer", None), io.BufferedWriter):
            encoding, errors = stream.encoding, stream.errors or "strict"
        else:
            return None
    try:
        if codecs.lookup(encoding).name != "utf-8" or errors not in _SAFE_ERRORS:
            return None
    except LookupError:
        return None
    return "backslashreplace" if errors == "strict" else errors


class QueueHandler(logging.handlers.QueueHandler):
    """Sends each record to the listener through an :class:`mplog.Queue`.

    A drop-in look-alike of ``logging.handlers.QueueHandler``: ``prepare`` renders
    the message and traceback in the worker (so arguments never need to be
    picklable), ``enqueue`` hands the result to the queue. If the listener cannot
    be reached (stopped, or its process killed), the handler says so once on
    stderr and writes this and every later record there instead: a logging call
    never blocks on a dead listener and never raises into the caller.

    When the listener's handlers include plain text handlers (see
    :class:`TextTarget`), the worker formats the line for each of them, so the
    listener only writes; the record itself is sent only if another handler
    needs it.

    Args:
        queue: where the listener reads.
        level: records below this level are not sent at all.
        text_targets: one per text handler of the listener, in its order.
        send_record: whether any other listener handler needs the record.
    """

    # mplog.Queue is write-only; typeshed's QueueHandler wants a get() it never calls.
    queue: Queue  # type: ignore[assignment]

    def __init__(
        self,
        queue: Queue,
        level: int = logging.NOTSET,
        text_targets: Sequence[TextTarget] = (),
        send_record: bool = True,
    ) -> None:
        super().__init__(queue)  # type: ignore[arg-type]
        self.setLevel(level)
        self._fallback: Optional[logging.Handler] = None
        self._send_record = send_record or not text_targets
        self._texts: List[Tuple[int, logging.Formatter]] = [(t.level, t.formatter()) for t in text_targets]
        # The route's only handler takes text frames: (its level, how to render its line, encode errors).
        self._raw: Optional[Tuple[int, Callable[[logging.LogRecord], str], str]] = None
        if len(text_targets) == 1 and not self._send_record and text_targets[0].raw_errors:
            self._raw = (text_targets[0].level, line_function(self._texts[0][1]), text_targets[0].raw_errors)

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit ``record`` without taking the handler's lock: the
        queue serialises sends itself, and a call is cheaper without it."""
        if self.filters:
            result = self.filter(record)
            if not result:
                return result
            if isinstance(result, logging.LogRecord):  # Python 3.12+: a filter may replace the record
                record = result
        self.emit(record)
        return record

    def emit(self, record: logging.LogRecord) -> None:
        """Send ``record``: formatted for the listener's text handlers, and
        prepared for its other handlers."""
        raw = self._raw
        queue = self.queue
        if raw is not None and queue._local is None:
            # The common case, kept in one function: one text frame, no record.
            level, render, errors = raw
            if record.levelno < level:
                return
            try:
                frame = render(record).encode("utf-8", errors) + _codec.TEXT_END
                created_in = record.process
            except Exception:  # unrenderable, or made without LogRecord's fields: the general path copes
                frame = b""
            if 0 < len(frame) <= _codec.MAX_PAYLOAD:
                try:
                    queue.send(frame, created_in)
                except OSError as exc:
                    self._fail_over(exc, record)
                return
        self._emit_general(record)

    def _emit_general(self, record: logging.LogRecord) -> None:
        try:
            if not self._texts or self._fallback is not None or self.queue.delivers_locally():
                self.enqueue(self.prepare(record))
                return
            prepared = self.prepare(record) if self._send_record else None
            try:
                texts = self._format_texts(record)
            except Exception:  # unrenderable message: the prepared copy carries it with a note
                prepared = prepared or self.prepare(record)
                texts = self._format_texts(prepared)
            try:
                frame = _codec.encode(prepared, texts, self.queue.route, record.created)
                self.queue.send(frame, getattr(record, "process", None))
            except OSError as exc:
                self._fail_over(exc, record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Send the records this process has buffered for the listener (buffered mode)."""
        self.queue.flush()

    def _format_texts(self, record: logging.LogRecord) -> List[Optional[str]]:
        levelno = record.levelno
        return [formatter.format(record) if levelno >= level else None for level, formatter in self._texts]

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Return a copy of ``record`` with its message rendered and its
        traceback formatted, leaving the original untouched for other handlers.

        Override to add or change fields; what you return is what is sent.
        """
        message = _render_message(record)
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = _exception_formatter.formatException(record.exc_info)
        prepared = logging.LogRecord.__new__(type(record))
        prepared.__dict__.update(record.__dict__)
        prepared.msg = prepared.message = message
        prepared.args = None
        prepared.exc_info = None
        prepared.exc_text = exc_text
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        """Put a prepared record on the queue, or on stderr if the listener is gone."""
        fallback = self._fallback
        if fallback is None:
            try:
                self.queue.put_nowait(record)
            except OSError as exc:
                self._fail_over(exc, record)
            return
        fallback.handle(record)

    def _fail_over(self, exc: OSError, record: logging.LogRecord) -> None:
        """``record`` could not be sent: switch to stderr, and write it there
        unless it already went there with the buffer it was added to."""
        fallback = self._fall_back(exc)
        if not isinstance(exc, SpilledError):
            fallback.handle(self.prepare(record))

    def _fall_back(self, exc: OSError) -> logging.Handler:
        """Switch to stderr for good, saying why once; return the stderr handler."""
        self._raw = None
        self._fallback = _stderr_handler()
        sys.stderr.write(
            f"mplog: pid {os.getpid()} cannot reach the log listener at {self.queue.address} "
            f"({type(exc).__name__}: {exc}); its records go to stderr from now on\n"
        )
        return self._fallback


def _render_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as exc:  # bad %-arguments or a broken __str__: keep the record
        try:
            shown = f"{record.msg!r} % {record.args!r}"
        except Exception:
            shown = f"<{type(record.msg).__name__} message with {type(record.args).__name__} arguments>"
        return f"{shown} [mplog: the message could not be rendered: {type(exc).__name__}: {exc}]"


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FALLBACK_FORMAT))
    return handler


class RouteConfig(NamedTuple):
    """One logger that ships to the listener, and what its handler sends."""

    logger: str  # "" for the root logger
    propagate: bool
    handler_level: int
    text_targets: Tuple[TextTarget, ...] = ()
    send_record: bool = True


class WorkerConfig(NamedTuple):
    """What a worker needs to log like its parent: where the listener is, which
    loggers ship to it (route ``i`` is ``routes[i]``), and the parent's levels."""

    address: str
    root_level: int
    routes: Tuple[RouteConfig, ...]
    logger_levels: Tuple[Tuple[str, int], ...] = ()
    flush_interval: Optional[float] = None  # None: durable, else buffered

    def handler(self, route: int, queue: Optional[Queue] = None) -> "QueueHandler":
        """A new worker handler for ``route`` (on ``queue``, or a new one)."""
        spec = self.routes[route]
        queue = queue if queue is not None else Queue(self.address, route, self.flush_interval)
        return QueueHandler(queue, spec.handler_level, spec.text_targets, spec.send_record)

    def to_json(self) -> str:
        """Serialise for the environment variable."""
        return json.dumps(self)

    @classmethod
    def from_json(cls, text: str) -> "WorkerConfig":
        """Parse what :meth:`to_json` wrote.

        Raises:
            ValueError: ``text`` is not such a config.
        """
        try:
            address, root_level, routes, logger_levels, flush_interval = json.loads(text)
            return cls(
                address,
                root_level,
                tuple(
                    RouteConfig(name, propagate, level, tuple(TextTarget(*t) for t in targets), send_record)
                    for name, propagate, level, targets, send_record in routes
                ),
                tuple((name, level) for name, level in logger_levels),
                check_flush_interval(flush_interval),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{ENVIRONMENT_VARIABLE} is not an mplog config: {text!r} ({exc})") from None


# The config this process's children should use: set by setup() in the parent,
# by install() in a worker, and inherited by forked children.
_current: Optional[WorkerConfig] = None
_install_lock = threading.Lock()


class _ForkHook:
    """A forked child of a buffered session catches SIGTERM at once, in its
    only thread: its first record may come from a thread it starts later."""

    def _after_fork_in_child(self) -> None:
        if _current is not None and _current.flush_interval is not None:
            catch_sigterm()


_fork_hook = _ForkHook()  # held here: _fork keeps weak references
_fork.register(_fork_hook)


def current() -> Optional[WorkerConfig]:
    """The config children of this process should use, if any."""
    return _current


def set_current(config: Optional[WorkerConfig]) -> None:
    """Record (or clear) the config for this process's children."""
    global _current
    _current = config


def install(config: WorkerConfig) -> None:
    """Make this process's loggers ship to the listener in ``config``.

    Handlers already on those loggers are closed and removed: in a spawned
    worker they are the worker's own (e.g. from module-level ``basicConfig``),
    and writing the log file directly from a worker is what mplog replaces.
    """
    with _install_lock:
        if config.flush_interval is not None:
            catch_sigterm()  # the initializer runs in the main thread; the first record may not
        root = logging.getLogger()
        if any(isinstance(h, QueueHandler) and h.queue.address == config.address for h in root.handlers):
            set_current(config)
            return  # inherited by fork, or installed before
        for route, spec in enumerate(config.routes):
            logger = logging.getLogger(spec.logger or None)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()
            logger.addHandler(config.handler(route))
            if spec.logger:
                logger.propagate = spec.propagate
        root.setLevel(config.root_level)
        for name, level in config.logger_levels:
            logging.getLogger(name).setLevel(level)
        set_current(config)


class Initializer:
    """``mplog.initializer``: pass it as ``initializer=`` to ``Pool`` or
    ``ProcessPoolExecutor`` (any start method), or call it at the top of a
    ``Process`` target.

    When pickled for a spawn or forkserver child it carries the parent's
    active config with it, so no ``initargs`` are needed. To run your own
    initializer as well, give it and its arguments as ``initargs``::

        Pool(initializer=mplog.initializer, initargs=(my_init, arg1, arg2))
    """

    def __init__(self, config: Optional[WorkerConfig] = None) -> None:
        self._config = config

    def __repr__(self) -> str:
        return "mplog.initializer"

    def __reduce__(self) -> Tuple[Callable[..., "Initializer"], Tuple[Optional[WorkerConfig]]]:
        return (Initializer, (self._config or _current,))

    def __call__(self, user_initializer: Optional[Callable[..., Any]] = None, *args: Any) -> None:
        """Install the worker handler, then call ``user_initializer(*args)``.

        Raises:
            TypeError: ``user_initializer`` is given but not callable.
        """
        if user_initializer is not None and not callable(user_initializer):
            raise TypeError(
                "mplog.initializer: the first initarg must be your initializer (a callable), "
                f"got {user_initializer!r} ({type(user_initializer).__name__})"
            )
        config = self._config or _current or _config_from_environment()
        if config is None:
            import warnings

            warnings.warn(
                "mplog.initializer ran, but no mplog.setup() is active in the parent; "
                "this process logs as it would without mplog",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            install(config)
        if user_initializer is not None:
            user_initializer(*args)


def _config_from_environment() -> Optional[WorkerConfig]:
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    return WorkerConfig.from_json(text) if text else None


initializer = Initializer()
