"""OpenTelemetry: one exporter in the listener for every process of the program,
and each record exported with the trace and span ids of the span its worker
logged in::

    from mplog.integrations.opentelemetry import ExportHandler
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    with mplog.setup(ExportHandler(OTLPLogExporter())):
        ...

Workers need nothing: a process that has imported ``opentelemetry.trace``
sends the ids of the span active at each logging call with the record
(``mplog/_spans.py``), and the handlers here make that span current again
around the OpenTelemetry SDK's ``LoggingHandler``, which reads the current
context (in the listener's thread: empty).

:class:`ExportHandler` also keeps the SDK's ``BatchLogRecordProcessor`` from
dropping records: its queue drops the oldest record when full, silently, so
the handler waits for room instead (the listener's backlog and back-pressure
take over), and counts what is exported, what the exporter failed to export
and anything dropped all the same, and says so on stderr.

Both handlers keep the records of OpenTelemetry's own loggers (``opentelemetry``
and below: the SDK, its exporters) out of the export: logged in the listener's
process, they reach every handler, and the exporter's report of a failed
export would be exported and fail in turn, once per failed export for as long
as the collector is down. The other handlers (a file) still get them.

Importing this module imports the OpenTelemetry SDK (``opentelemetry-sdk``).
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from typing import Any, NamedTuple, Optional, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from .. import _stderr
from .._spans import CARRIERS, exception_fields, span_ids

__all__ = ["ExportCounts", "ExportHandler", "OwnRecordsFilter", "SpanContextHandler"]


class OwnRecordsFilter(logging.Filter):
    """Keeps out the records of OpenTelemetry's own loggers (``opentelemetry``
    and below: the SDK, its exporters, instrumentations), and counts them.

    On a handler that exports to OpenTelemetry: the exporter logs each export
    it fails, so exporting those records would make one more failed export,
    and one more record, for as long as the collector is down.
    """

    def __init__(self) -> None:
        super().__init__()
        #: How many records this filter has kept out.
        self.kept_out = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` comes from a logger other than OpenTelemetry's own."""
        name = record.name
        if name != "opentelemetry" and not name.startswith("opentelemetry."):
            return True
        with self._lock:  # a handler may be called from several threads
            self.kept_out += 1
        return False


class SpanContextHandler(logging.Handler):
    """Passes each record to ``handler`` with the span it was logged in current.

    For a handler that reads OpenTelemetry's current context when it emits
    (the SDK's ``LoggingHandler``, with a ``LoggerProvider`` of your own) and
    runs in the listener: the ids the worker captured at the logging call
    become the current span's (a non-recording span) while ``handler``
    handles the record, and leave the record, so that they are not exported
    as an attribute too. Records logged outside any span reach ``handler`` as
    they are. A record's exception, which the listener has as text only,
    becomes the attributes the SDK makes of one: ``exception.stacktrace``,
    and ``exception.type`` and ``exception.message`` when the worker had
    OpenTelemetry imported (only then does it send them).

    Args:
        handler: the handler to wrap; its own level and filters still apply.
        level: records below this level are not passed on.
    """

    def __init__(self, handler: logging.Handler, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.handler = handler
        self._own_records = OwnRecordsFilter()
        self.addFilter(self._own_records)

    @property
    def kept_out(self) -> int:
        """How many records of OpenTelemetry's own loggers were kept out of
        the export (in this process: a listener process counts its own)."""
        return self._own_records.kept_out

    def emit(self, record: logging.LogRecord) -> None:
        """Have the wrapped handler handle ``record`` inside its worker's span."""
        ids = span_ids(record.__dict__)
        if not record.exc_info and (record.exc_text or not CARRIERS.isdisjoint(record.__dict__)):
            record = _with_exception_attributes(record)
        if ids is None:
            self.handler.handle(record)
            return
        trace_id, span_id, flags = ids
        span = trace.NonRecordingSpan(
            trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            self.handler.handle(record)
        finally:
            otel_context.detach(token)

    def flush(self) -> None:
        """Flush the wrapped handler."""
        self.handler.flush()

    def close(self) -> None:
        """Close the wrapped handler, then this one."""
        self.handler.close()
        super().close()


def _with_exception_attributes(record: logging.LogRecord) -> logging.LogRecord:
    """A copy of ``record`` (other handlers may hold it) without mplog's
    carriers, and with the attributes the SDK would have made of its
    exception, had the listener its ``exc_info``: ``exception.stacktrace``
    (the traceback's text), and ``exception.type`` and ``exception.message``
    if the worker sent them."""
    state = record.__dict__
    name, message = exception_fields(state)
    copied = copy.copy(record)
    for key in CARRIERS:
        copied.__dict__.pop(key, None)
    if record.exc_text:
        if name is not None:
            copied.__dict__["exception.type"] = name
        if message is not None:
            copied.__dict__["exception.message"] = message
        copied.__dict__["exception.stacktrace"] = record.exc_text
    return copied


class ExportCounts(NamedTuple):
    """What an :class:`ExportHandler` has passed to its exporter so far."""

    #: Records taken by the SDK's logger (its processors saw them).
    accepted: int
    #: Records in batches the exporter exported.
    exported: int
    #: Records in batches the exporter failed to export (or raised on).
    failed: int
    #: Records the batch processor has not handed to the exporter yet; after
    #: :meth:`ExportHandler.close`, the records it dropped.
    pending: int


class _Tally:
    """Counts records from the SDK's logger to the exporter, and lets the
    handler wait until the batch processor's queue has room."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.accepted = self.exported = self.failed = 0
        self.reported_failure = False
        self.changed = threading.Condition()

    def pending(self) -> int:
        return self.accepted - self.exported - self.failed

    def counts(self) -> ExportCounts:
        with self.changed:
            return ExportCounts(self.accepted, self.exported, self.failed, self.pending())

    def wait_for_room(self, timeout: float) -> None:
        """Wait until fewer than ``capacity`` records are pending, at most ``timeout`` seconds."""
        with self.changed:
            self.changed.wait_for(lambda: self.pending() < self.capacity, timeout)

    def accept(self) -> None:
        with self.changed:
            self.accepted += 1

    def done(self, count: int, exported: bool) -> bool:
        """Count a batch the exporter took; return whether this is the first failure."""
        with self.changed:
            if exported:
                self.exported += count
            else:
                self.failed += count
            self.changed.notify_all()
            first_failure = not exported and not self.reported_failure
            self.reported_failure = self.reported_failure or first_failure
            return first_failure


class _Accepting(LogRecordProcessor):
    """The provider's first processor: counts each record the SDK's logger takes."""

    def __init__(self, tally: _Tally) -> None:
        self._tally = tally

    def on_emit(self, log_record: Any) -> None:
        """Count a record (SDK 1.34 and later)."""
        self._tally.accept()

    def emit(self, log_data: Any) -> None:
        """Count a record (SDK up to 1.33, the last for Python 3.8)."""
        self._tally.accept()

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is held here."""
        return True


class _CountingExporter:
    """Wraps the user's exporter: counts each batch as exported or failed."""

    def __init__(self, exporter: Any, tally: _Tally) -> None:
        self._exporter = exporter
        self._tally = tally

    def export(self, batch: Sequence[Any]) -> Any:
        """Export ``batch`` through the user's exporter, counting the outcome."""
        exported = False
        try:
            result = self._exporter.export(batch)
            # SDK 1.33's LogExportResult or a later LogRecordExportResult: both say SUCCESS.
            exported = getattr(result, "name", None) == "SUCCESS"
            return result
        finally:
            if self._tally.done(len(batch), exported):
                _stderr.report(
                    f"{self._exporter!r} failed to export {len(batch)} log records; "
                    "failures are counted and the total reported when its handler is closed"
                )

    def shutdown(self) -> None:
        """Shut the user's exporter down."""
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the user's exporter."""
        return bool(self._exporter.force_flush(timeout_millis))


class ExportHandler(SpanContextHandler):
    """Exports records through an OpenTelemetry log exporter, from the listener.

    Made in the process that calls :func:`mplog.setup` and given to it (or
    added to the root logger before it), it runs in the listener only: one
    exporter, one batch thread and one connection for every process of the
    program, none of them forked. Each record is exported with the trace and
    span ids of the span its worker logged it in (see
    :class:`SpanContextHandler`).

    It builds the SDK's pipeline: a ``LoggerProvider``, a
    ``BatchLogRecordProcessor`` with ``exporter``, and the SDK's
    ``LoggingHandler``. Where that processor would drop the oldest record
    because its queue is full, this handler waits for room first (up to
    ``wait_timeout`` seconds a record; the listener's own back-pressure then
    slows the workers), so nothing is dropped while the exporter keeps up
    on average. What is still lost is counted (:attr:`counts`): the first
    failed export is reported on stderr at once, and :meth:`close` reports
    the totals if anything failed or was dropped.

    Args:
        exporter: an OpenTelemetry ``LogRecordExporter`` (``OTLPLogExporter``,
            say, or the SDK's in-memory one).
        level: records below this level are not exported.
        resource: the ``Resource`` the records are exported with
            (``service.name`` and so on); the SDK's default if ``None``.
        max_queue_size: records the batch processor holds at most.
        max_export_batch_size: records in one export at most.
        schedule_delay_millis: how long a record may wait for a fuller batch.
        wait_timeout: how long a record may wait for room in the queue.
    """

    def __init__(
        self,
        exporter: Any,
        level: int = logging.NOTSET,
        *,
        resource: Optional[Resource] = None,
        max_queue_size: int = 2048,
        max_export_batch_size: int = 512,
        schedule_delay_millis: float = 1000.0,
        wait_timeout: float = 10.0,
    ) -> None:
        self._tally = _Tally(max_queue_size)
        self._wait_timeout = wait_timeout
        self._closed = False
        # shutdown_on_exit=False: close() shuts it down, after the listener
        # has handled every record (mplog drains at exit before closing).
        self.provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_log_record_processor(_Accepting(self._tally))
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(
                _CountingExporter(exporter, self._tally),  # type: ignore[arg-type]
                schedule_delay_millis=schedule_delay_millis,
                max_export_batch_size=max_export_batch_size,
                max_queue_size=max_queue_size,
            )
        )
        with warnings.catch_warnings():
            # SDK 1.39+ deprecates its LoggingHandler for a package's not yet
            # stable one; it still translates records as the SDK documents.
            warnings.simplefilter("ignore", DeprecationWarning)
            sdk_handler = LoggingHandler(logger_provider=self.provider)
        super().__init__(sdk_handler, level)

    @property
    def counts(self) -> ExportCounts:
        """Records taken, exported, failed and pending (dropped, once closed)."""
        return self._tally.counts()

    def emit(self, record: logging.LogRecord) -> None:
        """Wait for room in the batch processor's queue, then export ``record``."""
        self._tally.wait_for_room(self._wait_timeout)
        super().emit(record)

    def flush(self) -> None:
        """Export every record taken so far, now (nothing once closed)."""
        if not self._closed:
            self.provider.force_flush()

    def close(self) -> None:
        """Export what is left, shut the exporter down, and report on stderr
        how many records failed or were dropped, if any. Idempotent."""
        if self._closed:  # logging closes every handler again at exit
            return
        self._closed = True
        self.provider.shutdown()
        logging.Handler.close(self)
        counts = self.counts
        if counts.failed or counts.pending:
            _stderr.report(
                f"OpenTelemetry export: of {counts.accepted} log records, {counts.exported} were exported, "
                f"{counts.failed} failed to export and {counts.pending} were dropped; "
                f"records of OpenTelemetry's own loggers kept out of the export: {self.kept_out}"
            )
