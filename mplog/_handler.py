"""The worker side's handler: ships each record to the listener, formatted
where the listener only writes text, and falls back to stderr for good if the
listener cannot be reached."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _codec, _spans, _stderr, _stdqueue
from ._buffered import SpilledError
from ._config import RouteConfig, TextTarget
from ._format import line_function
from ._queue import Queue

__all__ = ["FALLBACK_FORMAT", "QueueHandler", "render_message", "route_handler"]

#: How records that cannot go to the listener's handlers are written on stderr.
FALLBACK_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
_exception_formatter = logging.Formatter()


class QueueHandler(logging.handlers.QueueHandler):
    """Sends each record to the listener through an :class:`mplog.Queue`.

    A drop-in look-alike of ``logging.handlers.QueueHandler``: ``prepare`` renders
    the message and traceback in the worker (so arguments never need to be
    picklable), ``enqueue`` hands the result to the queue. If the listener cannot
    be reached (stopped, or its process killed), the handler says so once on
    stderr and writes this and every later record there instead: a logging call
    never blocks on a dead listener and never raises into the caller.

    When the listener's handlers include plain text handlers (a stdlib
    ``StreamHandler`` or ``FileHandler``, or an :class:`mplog.FileHandler`,
    with a plain ``Formatter``), the worker formats the line for each of them,
    so the listener only writes; the record itself is sent only if another
    handler needs it. A formatter set on this handler is applied as the
    stdlib's ``prepare`` applies it: its output is the message every
    listener handler sees (and the listener formats the lines then).

    Given any other queue (``queue.Queue``, ``multiprocessing.Queue``, ...),
    it is the stdlib's handler, as on this Python, and nothing above applies.
    From ``dictConfig`` (Python 3.12+) with no ``queue`` key, it takes a new
    :class:`mplog.Queue` rather than dictConfig's ``queue.Queue``, so that
    forked children reach its ``listener`` too.

    Args:
        queue: where the listener reads; ``None``: a new :class:`mplog.Queue`.
        level: records below this level are not sent at all.
    """

    # mplog.Queue is write-only; typeshed's QueueHandler wants a get() it never calls.
    queue: Queue  # type: ignore[assignment]

    def __init__(self, queue: Any = None, level: int = logging.NOTSET) -> None:
        self._foreign = not isinstance(queue, Queue) and queue is not None  # the stdlib's handler
        super().__init__(Queue() if queue is None else queue)  # type: ignore[arg-type]
        self.setLevel(level)
        self._fallback: Optional[logging.Handler] = None
        self._send_record = True
        self._texts: List[Tuple[int, logging.Formatter]] = []
        # The route's only handler takes text frames: (its level, how to render its line, encode errors).
        self._raw: Optional[Tuple[int, Callable[[logging.LogRecord], str], str]] = None
        # Per listener handler, the formatter that renders its tracebacks (None: the stock one); () if none does.
        self._traceback_formatters: Sequence[Optional[logging.Formatter]] = ()

    def _format_for(self, text_targets: Sequence[TextTarget], send_record: bool) -> None:
        """Format the lines of the listener's text handlers here: one per
        target, in the listener's order; ``send_record``: whether any other
        listener handler needs the record as well."""
        self._send_record = send_record or not text_targets
        self._texts = [(t.level, t.formatter()) for t in text_targets]
        self._raw = None
        if len(text_targets) == 1 and not self._send_record and text_targets[0].raw_errors:
            self._raw = (text_targets[0].level, line_function(self._texts[0][1]), text_targets[0].raw_errors)

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit ``record`` without taking the handler's lock: the
        queue serialises sends itself, and a call is cheaper without it."""
        if self._foreign:
            return super().handle(record)
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
        if raw is not None and queue._local_pid == 0 and self.formatter is None:
            # The common case, kept in one function: one text frame, no record.
            level, render, errors = raw
            if record.levelno < level:
                return
            try:
                # Without its TEXT_END: the queue adds it with the write's mark, in one step.
                line = render(record).encode("utf-8", errors)
                created_in = record.process
            except Exception:  # unrenderable, or made without LogRecord's fields: the general path copes
                line = b""
            if 0 < len(line) < _codec.MAX_PAYLOAD:
                try:
                    queue._send(line, created_in, _codec.TEXT_END)
                except OSError as exc:
                    self._fail_over(exc, record)
                return
        self._emit_general(record)

    def _emit_general(self, record: logging.LogRecord) -> None:
        if self._foreign:
            super().emit(record)
            return
        try:
            if self._whole_record_only():
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
                self.queue._send(frame, getattr(record, "process", None))
            except OSError as exc:
                self._fail_over(exc, record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _whole_record_only(self) -> bool:
        """Whether the record goes without lines formatted here: there are
        none to format, this handler's formatter makes the message (so the
        listener formats), or the listener's handlers take it in this process
        or stderr does."""
        return (
            not self._texts
            or self.formatter is not None
            or self._fallback is not None
            or self.queue._delivers_locally()
        )

    def flush(self) -> None:
        """Send the records this process has buffered for the listener (buffered mode)."""
        if not self._foreign:
            self.queue.flush()

    def _format_texts(self, record: logging.LogRecord) -> List[Optional[str]]:
        levelno = record.levelno
        return [formatter.format(record) if levelno >= level else None for level, formatter in self._texts]

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Return a copy of ``record`` with its message rendered and its
        traceback formatted, leaving the original untouched for other handlers.

        The ids of the OpenTelemetry span active at the logging call, if
        any, and the type and message of the exception, go with it (see ``mplog.integrations.opentelemetry``).

        The traceback is formatted as ``logging.Formatter`` does, and also by
        each listener handler's formatter that overrides ``formatException``.
        With a formatter set on this handler (or another queue than an
        :class:`mplog.Queue`), it is the stdlib's ``prepare``: the message is
        the formatter's output, with no traceback or stack left beside it.
        Override to add or change fields; what you return is what is sent.
        """
        if self._foreign or self.formatter is not None:
            stdlib_prepared: logging.LogRecord = super().prepare(record)
            if not self._foreign:
                _spans.capture(stdlib_prepared.__dict__, record.exc_info)
            return stdlib_prepared
        message = render_message(record)
        exc_info = record.exc_info
        exc_text = record.exc_text
        if exc_info and not exc_text:
            exc_text = _exception_formatter.formatException(exc_info)
        prepared = logging.LogRecord.__new__(type(record))
        prepared.__dict__.update(record.__dict__)
        prepared.msg = prepared.message = message
        prepared.args = None
        prepared.exc_info = None
        prepared.exc_text = exc_text
        if exc_info and self._traceback_formatters:
            prepared.__dict__[_codec.TRACEBACKS] = _tracebacks(self._traceback_formatters, exc_info)
        _spans.capture(prepared.__dict__, exc_info)
        return prepared

    def enqueue(self, record: logging.LogRecord) -> None:
        """Put a prepared record on the queue, or on stderr if the listener is gone."""
        if self._foreign:
            super().enqueue(record)
            return
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
        try:
            fallback = self._fall_back(exc)
            if not isinstance(exc, SpilledError):
                fallback.handle(self.prepare(record))
        except RecursionError:
            raise
        except Exception:  # never into the caller: logging's own rules for handler errors
            self.handleError(record)

    def _fall_back(self, exc: OSError) -> logging.Handler:
        """Switch to stderr for good, saying why once; return the stderr handler."""
        self._raw = None
        self._fallback = _StderrHandler()
        _stderr.report(
            f"pid {os.getpid()} cannot reach the log listener at {self.queue.address} "
            f"({type(exc).__name__}: {exc}); its records go to stderr from now on"
        )
        return self._fallback

    if sys.version_info >= (3, 12):  # the stdlib's handler has this attribute from 3.12 on
        listener = property(_stdqueue.get_listener, _stdqueue.set_listener, doc=_stdqueue.LISTENER_DOC)


def render_message(record: logging.LogRecord) -> str:
    """``record``'s message, or, if it cannot be rendered, what it was and why not."""
    try:
        return record.getMessage()
    except Exception as exc:  # bad %-arguments or a broken __str__: keep the record
        try:
            shown = f"{record.msg!r} % {record.args!r}"
        except Exception:
            shown = f"<{type(record.msg).__name__} message with {type(record.args).__name__} arguments>"
        return f"{shown} [mplog: the message could not be rendered: {type(exc).__name__}: {exc}]"


def _tracebacks(formatters: Sequence[Optional[logging.Formatter]], exc_info: Any) -> Tuple[Optional[str], ...]:
    """The traceback as each formatter renders it (``None`` where there is
    none), as a handler with that formatter alone would write it in one process:
    rendered afresh, not taken from a text another formatter cached on the record."""
    rendered: Dict[int, Optional[str]] = {}  # one rendering per formatter, shared by its handlers
    for formatter in formatters:
        if formatter is not None and id(formatter) not in rendered:
            try:
                rendered[id(formatter)] = formatter.formatException(exc_info)
            except Exception:  # its handler gets the stock rendering; the others their own
                _stderr.report_exception(f"{formatter!r}.formatException failed; its handler gets the stock traceback")
                rendered[id(formatter)] = None
    return tuple(None if formatter is None else rendered[id(formatter)] for formatter in formatters)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records to whatever ``sys.stderr`` is when they come, as
    ``logging.lastResort`` does (so nothing if it is ``None``)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's: it would bind today's stream
        self.setFormatter(logging.Formatter(FALLBACK_FORMAT))

    @property
    def stream(self) -> Any:
        return sys.stderr


def route_handler(queue: Queue, route: RouteConfig) -> QueueHandler:
    """The worker handler for one route: what it sends on ``queue``, formatted as ``route`` says."""
    handler = QueueHandler(queue, route.handler_level)
    handler._format_for(route.text_targets, route.send_record)
    handler._traceback_formatters = route.traceback_formatters
    return handler
