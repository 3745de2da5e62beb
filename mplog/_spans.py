"""The OpenTelemetry span a record was logged in, captured in the worker.

A listener handler that exports to OpenTelemetry runs in the listener's
thread, whose context holds no span: the ids of the span that was active at
the logging call must travel with the record. :func:`capture` adds them to a
prepared record under :data:`SPAN_CONTEXT`, and
``mplog.integrations.opentelemetry`` makes them current again around the
exporting handler.

Nothing here imports OpenTelemetry: only a process that has imported
``opentelemetry.trace`` itself (to start spans) looks for one, and any other
pays one dictionary lookup per record sent whole.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Tuple

__all__ = ["SPAN_CONTEXT", "SpanIds", "capture", "span_ids"]

#: The record attribute that carries ``(trace_id, span_id, trace_flags)`` of
#: the span active in the worker at the logging call; absent if none was.
SPAN_CONTEXT = "_mplog_span"

#: ``(trace_id, span_id, trace_flags)``, as OpenTelemetry's ``SpanContext`` has them.
SpanIds = Tuple[int, int, int]


def capture(state: Dict[str, Any]) -> None:
    """Add the ids of the span current in this thread to a record's ``state``
    (its ``__dict__``), if OpenTelemetry is in use here and a span is."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    try:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            state[SPAN_CONTEXT] = (int(context.trace_id), int(context.span_id), int(context.trace_flags))
    except Exception:  # a module still being imported, or a broken SDK: the record goes without ids
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
