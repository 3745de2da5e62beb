"""The OpenTelemetry span a record was logged in, and the type and message of
its exception, captured in the worker.

A listener handler that exports to OpenTelemetry runs in the listener's
thread, whose context holds no span: the ids of the span that was active at
the logging call must travel with the record. :func:`capture` adds them to a
prepared record under :data:`SPAN_CONTEXT`, and
``mplog.integrations.opentelemetry`` makes them current again around the
exporting handler.

The listener rebuilds a record's exception as text only (``exc_text``), so
the type and the message the SDK exports as ``exception.type`` and
``exception.message`` travel under :data:`EXCEPTION`, when OpenTelemetry is
in use in the worker.

Nothing here imports OpenTelemetry: only a process that has imported
``opentelemetry.trace`` itself (to start spans) looks for one, and any other
pays one dictionary lookup per record sent whole.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Tuple

__all__ = ["CARRIERS", "EXCEPTION", "SPAN_CONTEXT", "SpanIds", "capture", "exception_fields", "span_ids"]

#: The record attribute that carries ``(trace_id, span_id, trace_flags)`` of
#: the span active in the worker at the logging call; absent if none was.
SPAN_CONTEXT = "_mplog_span"

#: The record attribute that carries ``(type name, message or None)`` of the
#: exception a record was logged with, as the SDK's ``LoggingHandler`` would
#: export them; absent if there was none, or OpenTelemetry was not in use.
EXCEPTION = "_mplog_exception"

#: mplog's own attributes for OpenTelemetry, which other formatters leave out.
CARRIERS = frozenset({SPAN_CONTEXT, EXCEPTION})

#: ``(trace_id, span_id, trace_flags)``, as OpenTelemetry's ``SpanContext`` has them.
SpanIds = Tuple[int, int, int]


def capture(state: Dict[str, Any], exc_info: Any = None) -> None:
    """Add the ids of the span current in this thread to a record's ``state``
    (its ``__dict__``), if OpenTelemetry is in use here and a span is; and the
    type and message of ``exc_info``, the record's exception, if it has one."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    try:
        if exc_info and exc_info[0] is not None:
            value = exc_info[1]
            # As the SDK's LoggingHandler exports them: the class's name, the first argument.
            message = str(value.args[0]) if value is not None and value.args else None
            state[EXCEPTION] = (exc_info[0].__name__, message)
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            state[SPAN_CONTEXT] = (int(context.trace_id), int(context.span_id), int(context.trace_flags))
    except Exception:  # a module still being imported, a broken SDK or __str__: the record goes without
        return


def span_ids(state: Dict[str, Any]) -> Optional[SpanIds]:
    """The ids a record's ``state`` carries, or ``None`` if it carries none
    that could be a span's (a frame's contents are not trusted)."""
    ids = state.get(SPAN_CONTEXT)
    if type(ids) is not tuple or len(ids) != 3 or not all(type(value) is int for value in ids):
        return None
    trace_id, span_id, flags = ids
    if not (0 < trace_id < 2**128 and 0 < span_id < 2**64 and 0 <= flags < 2**8):
        return None
    return trace_id, span_id, flags


def exception_fields(state: Dict[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """The exception's type name and message a record's ``state`` carries
    (``None`` for what it does not carry, or what could not be them)."""
    fields = state.get(EXCEPTION)
    if type(fields) is not tuple or len(fields) != 2:
        return None, None
    name, message = fields
    return (name if type(name) is str else None), (message if type(message) is str else None)
