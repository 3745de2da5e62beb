"""Which of the listener's handlers take lines the workers formatted (a plain
``StreamHandler``, ``FileHandler`` or ``mplog.SyslogHandler`` with a plain
``Formatter``), and which of those take them as UTF-8 bytes, written (or
sent) as they arrive."""

from __future__ import annotations

import codecs
import io
import locale
import logging
import sys
import time
from typing import Optional, Sequence, Tuple

from ._config import RouteConfig, TextTarget, TracebackFormatters
from ._files import FileHandler
from ._json import JsonFormatter

__all__ = ["renders_tracebacks", "route_configs", "route_targets", "text_target_of", "traceback_formatters"]

_TEXT_HANDLERS = (logging.StreamHandler, logging.FileHandler, FileHandler)
_STYLES = {"%": logging.PercentStyle, "{": logging.StrFormatStyle, "$": logging.StringTemplateStyle}
# Error handlers under which UTF-8 output never holds bytes 0xF5-0xFF (so text
# frames stay unambiguous); the surrogate ones can produce any byte.
_SAFE_ERRORS = ("strict", "replace", "ignore", "backslashreplace", "xmlcharrefreplace", "namereplace")


def route_targets(handlers: Sequence[logging.Handler]) -> Tuple[Tuple[TextTarget, ...], bool]:
    """What a worker sends for one group of handlers: the lines to format
    (one per text handler, in order), and whether any handler needs the record."""
    targets = [text_target_of(handler) for handler in handlers]
    return tuple(t for t in targets if t is not None), None in targets


def route_configs(
    loggers: Sequence[logging.Logger], groups: Sequence[Sequence[logging.Handler]]
) -> Tuple[RouteConfig, ...]:
    """What a worker needs for each route: route ``i`` ships the records of
    ``loggers[i]`` (the first is the root) to the handlers ``groups[i]``."""
    routes = []
    for logger, group in zip(loggers, groups):
        targets, send_record = route_targets(group)
        name = "" if logger is loggers[0] else logger.name
        level = min((handler.level for handler in group), default=logging.NOTSET)
        formatters = TracebackFormatters(traceback_formatters(group))
        routes.append(RouteConfig(name, logger.propagate, level, targets, send_record, formatters))
    return tuple(routes)


def renders_tracebacks(handler: logging.Handler) -> bool:
    """Whether ``handler``'s formatter renders tracebacks its own way (it
    overrides ``formatException``): only the worker, which has the exception,
    can do that for it."""
    formatter = handler.formatter
    return isinstance(formatter, logging.Formatter) and (
        type(formatter).formatException is not logging.Formatter.formatException
    )


def traceback_formatters(handlers: Sequence[logging.Handler]) -> Tuple[Optional[logging.Formatter], ...]:
    """Per handler, its formatter if it renders tracebacks its own way, else
    ``None``; empty if none does (the common case, which costs nothing)."""
    formatters = tuple(handler.formatter if renders_tracebacks(handler) else None for handler in handlers)
    return formatters if any(formatter is not None for formatter in formatters) else ()


def text_target_of(handler: logging.Handler) -> Optional[TextTarget]:
    """The target for ``handler``, or ``None`` if only the handler itself can
    format and write its records (a subclass, filters, a custom formatter)."""
    syslog = _syslog_fields(handler)
    if (syslog is None and type(handler) not in _TEXT_HANDLERS) or handler.filters:
        return None
    target = _formatter_target(handler.formatter or logging.Formatter(), handler.level)
    if target is None:
        return None
    if syslog is not None:
        # The whole message is made by the worker; fmt None: the default message.
        fmt = target.fmt if handler.formatter is not None else None
        return target._replace(fmt=fmt, raw_errors="replace", syslog=syslog)
    return target._replace(raw_errors=_raw_errors(handler))


def _formatter_target(formatter: logging.Formatter, level: int) -> Optional[TextTarget]:
    """The target of a handler at ``level`` with ``formatter``, if a worker
    can format as it does (without ``raw_errors``)."""
    if type(formatter) is JsonFormatter:
        return TextTarget(level, None, None, "json", False)
    if not _is_stock_formatter(formatter):
        return None
    style = next((char for char, kind in _STYLES.items() if type(formatter._style) is kind), None)
    if style is None:
        return None
    return TextTarget(level, formatter._fmt, formatter.datefmt, style, formatter.converter is time.gmtime)


def _syslog_fields(handler: logging.Handler) -> Optional[Tuple[int, str, str, str]]:
    """The RFC 5424 fields of a plain ``mplog.SyslogHandler`` (not a
    subclass: it may make its messages its own way), else ``None``."""
    forward = sys.modules.get("mplog._forward._handler")  # loaded if there is one
    if forward is None or type(handler) is not forward.SyslogHandler:
        return None
    fields: Tuple[int, str, str, str] = handler.rfc5424  # type: ignore[attr-defined]
    return fields


def _is_stock_formatter(formatter: logging.Formatter) -> bool:
    """Whether ``formatter`` formats as a plain ``logging.Formatter`` does, so
    a worker's own formatter with the same format gives the same lines."""
    return (
        type(formatter) is logging.Formatter
        and formatter.converter in (time.localtime, time.gmtime)
        and formatter.default_time_format == logging.Formatter.default_time_format
        and formatter.default_msec_format == logging.Formatter.default_msec_format
        and not getattr(formatter._style, "_defaults", None)
    )


def _raw_errors(handler: logging.Handler) -> Optional[str]:
    """``TextTarget.raw_errors`` for a handler :func:`text_target_of` accepts:
    set when the listener can write UTF-8 bytes to it directly, else ``None``.

    Where the handler would fail on an unencodable character (``errors`` strict)
    the worker escapes it instead, keeping the line."""
    if handler.terminator != "\n":  # type: ignore[attr-defined]
        return None
    output = _encoding_and_errors(handler)
    if output is None:
        return None
    encoding, errors = output
    try:
        if codecs.lookup(encoding).name != "utf-8" or errors not in _SAFE_ERRORS:
            return None
    except LookupError:
        return None
    return "backslashreplace" if errors == "strict" else errors


def _encoding_and_errors(handler: logging.Handler) -> Optional[Tuple[str, str]]:
    """How ``handler`` encodes what it writes, if it writes to a byte buffer
    the listener can write to as well."""
    if isinstance(handler, FileHandler):
        # Time rotation files each line by its record's time, which text frames do not carry.
        return None if handler.periods is not None else (handler.encoding, "backslashreplace")
    stream = getattr(handler, "stream", None)
    if stream is None and isinstance(handler, logging.FileHandler):  # delay=True: not opened yet
        return handler.encoding or locale.getpreferredencoding(False), getattr(handler, "errors", None) or "strict"
    if type(stream) is io.TextIOWrapper and isinstance(getattr(stream, "buffer", None), io.BufferedWriter):
        return stream.encoding, stream.errors or "strict"
    return None
