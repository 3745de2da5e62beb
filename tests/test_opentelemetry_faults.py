"""mplog.integrations.opentelemetry beyond the healthy path: exceptions
exported as the SDK's ``exception.*`` attributes although the listener has
them as text only; a collector that is down, then back (failures counted and
reported); and the exporter in a listener process."""

from __future__ import annotations

import logging
import multiprocessing
import re
import subprocess
import sys
from pathlib import Path
from typing import Counter, Iterator, List, Tuple

import pytest
from opentelemetry.sdk.trace import TracerProvider

import mplog
from mplog.integrations.opentelemetry import ExportHandler
from tests.conftest import wait_until
from tests.rsyslog import free_port
from tests.test_opentelemetry import (
    HERE,
    NEEDS_OTELSINK,
    WORKERS,
    InMemoryExporter,
    check_exported,
    received_records,
    run_workers,
)

log = logging.getLogger("otel.worker")
FAILED_MESSAGE = re.compile(r"OpenTelemetry export: of (\d+) log records, (\d+) were exported, (\d+) failed")


def log_exceptions(worker: int, records: int) -> None:
    """In a worker: log ``records`` exceptions (``log.exception``) inside a span."""
    tracer = TracerProvider().get_tracer("tests.otel")
    with tracer.start_as_current_span(f"worker-{worker}"):
        for seq in range(records):
            try:
                raise ValueError(f"boom {worker} {seq}", "second argument")
            except ValueError:
                log.exception("worker %d seq %d failed", worker, seq)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_exceptions_are_exported_as_the_sdks_exception_attributes(method) -> None:
    """4 workers each log 250 exceptions: every exported record has
    ``exception.type``, ``exception.message`` (the first argument, as the SDK
    makes it) and ``exception.stacktrace`` (the worker's traceback, ending in
    the exception's line), and none of mplog's carriers."""
    exporter = InMemoryExporter()
    context = multiprocessing.get_context(method)
    records = 250
    with mplog.setup(ExportHandler(exporter), level=logging.INFO):
        processes = [context.Process(target=log_exceptions, args=(w, records)) for w in range(WORKERS)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
            assert process.exitcode == 0
    seen: Counter[Tuple[int, int]] = Counter()
    for data in exporter.get_finished_logs():
        record = data.log_record
        attributes = dict(record.attributes or {})
        worker, seq = map(int, re.fullmatch(r"worker (\d+) seq (\d+) failed", str(record.body)).groups())
        seen[worker, seq] += 1
        assert attributes["exception.type"] == "ValueError"
        assert attributes["exception.message"] == f"boom {worker} {seq}"
        stack = attributes["exception.stacktrace"]
        assert stack.startswith("Traceback (most recent call last):") and "log_exceptions" in stack
        assert stack.endswith(f"ValueError: ('boom {worker} {seq}', 'second argument')")
        assert not any(key.startswith("_mplog") for key in attributes), attributes
    assert set(seen) == {(w, s) for w in range(WORKERS) for s in range(records)}
    assert sum(seen.values()) == WORKERS * records
    print(f"{method}: {sum(seen.values())} exceptions exported with type, message and stacktrace")


@pytest.fixture
def otelsink_on() -> Iterator:
    """Starts otelsink on a given port when asked (by ``start(port, path)``); stops it at the end."""
    started = []

    def start(port: int, path: Path) -> None:
        path.touch()
        process = subprocess.Popen(
            [sys.executable, str(HERE / "otelsink.py"), str(path), str(port)],
            stdout=subprocess.PIPE,
            stderr=open(path.with_suffix(".err"), "wb"),
            text=True,
        )
        started.append(process)
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line == f"port {port}\n", f"otelsink did not start: {line!r}"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


@NEEDS_OTELSINK
@pytest.mark.timeout(120)
def test_collector_down_then_up_counts_and_reports_failures(otelsink_on, tmp_path, capfd) -> None:
    """OTLP/HTTP to a port nobody listens on: 4 workers' 800 records all fail,
    counted; the first failure is said on stderr at once. Then otelsink comes
    up on that port: the next 800 are exported and received once each, with
    their spans, and none of the first 800; at the stop the totals are
    reported, and they add up (nothing dropped)."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    port = free_port()
    received = tmp_path / "received.jsonl"
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=1)
    handler = ExportHandler(exporter, schedule_delay_millis=100)
    with mplog.setup(handler, level=logging.INFO):
        run_workers("fork", 200)
        wait_until(lambda: handler.counts.failed == 800, "800 records failed", 60, poll=0.05)
        first = capfd.readouterr().err
        otelsink_on(port, received)
        run_workers("fork", 200)
        wait_until(lambda: handler.counts.exported == 800, "800 records exported", 60, poll=0.05)
    counts = handler.counts
    last = capfd.readouterr().err
    print(f"\ncollector down then up: {counts}; stderr while down: {first!r}; at the stop: {last!r}")
    assert counts == (1600, 800, 800, 0)
    assert first.count("failed to export") == 1
    assert FAILED_MESSAGE.search(last).groups() == ("1600", "800", "800")
    assert "and 0 were dropped" in last
    assert check_exported(received_records(received, 800), 200) == {"records": 800, "traces": WORKERS}


def scope_names(exporter_class: type) -> Tuple[type, List[str]]:
    """A subclass of ``exporter_class`` that notes the scope (the logger's
    name) of every record it is asked to export, and the list it notes them in."""
    names: List[str] = []

    class Noting(exporter_class):  # type: ignore[misc, valid-type]
        def export(self, batch):  # type: ignore[no-untyped-def]
            names.extend(data.instrumentation_scope.name for data in batch)
            return super().export(batch)

    return Noting, names


def _forget_the_last_failure() -> None:
    """SDK 1.45's own loggers drop a message equal to the last one they let
    through in the same 20 s (its ``DuplicateFilter``): a failed export that
    an earlier test of this process logged would hide this test's."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("opentelemetry") and isinstance(logger, logging.Logger):
            for log_filter in logger.filters:
                log_filter.__dict__.pop("last_log", None)


@pytest.mark.timeout(60)
def test_the_exporters_own_failures_are_not_exported(tmp_path) -> None:
    """The collector down (a port nobody listens on): the OTLP exporter logs
    each failed export (loggers ``opentelemetry.*``, in the listener's
    process). Those records reach the file beside ExportHandler, counted, but
    not the export, where each would fail and log again, for as long as the
    collector is down: the exporter is given the workers' 200 records and
    nothing else."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    _forget_the_last_failure()
    exporter_class, names = scope_names(OTLPLogExporter)
    # One export of the 200 records: the batch is full at 200, long before the delay.
    exporter = exporter_class(endpoint=f"http://127.0.0.1:{free_port()}/v1/logs", timeout=1)
    handler = ExportHandler(exporter, max_export_batch_size=200, schedule_delay_millis=60_000)
    log_file = tmp_path / "app.log"
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(name)s %(message)s"))

    def own_records() -> List[str]:
        return [line for line in log_file.read_text().splitlines() if line.startswith("opentelemetry.")]

    with mplog.setup(handler, file_handler, level=logging.INFO):
        run_workers("fork", 50)
        wait_until(lambda: handler.counts.failed == 200, "200 records failed", 30, poll=0.05)
        # SDK 1.45's exporter logs its failure before export() returns, SDK
        # 1.33's batch processor after: once in the file, a record is in
        # every handler's lane, which the stop drains.
        wait_until(lambda: own_records(), "the failure logged", 30)
    counts, own = handler.counts, own_records()
    print(f"\ncollector down: {counts}, {len(names)} records given to the exporter; the exporter's own records:")
    print(f"{len(own)} in the file, {handler.kept_out} kept out of the export: {own}")
    assert counts == (200, 0, 200, 0)
    assert len(names) == 200 and set(names) == {"otel.worker"}
    assert len(own) == handler.kept_out >= 1


@NEEDS_OTELSINK
@pytest.mark.timeout(120)
def test_exporter_in_a_listener_process(otelsink_on, tmp_path) -> None:
    """``listener="process"``: the exporter runs in the listener process, and
    otelsink receives 4 forked workers' 4,000 records once each, each with
    its worker's span ids."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    port = free_port()
    received = tmp_path / "received.jsonl"
    otelsink_on(port, received)
    handler = ExportHandler(OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs"))
    with mplog.setup(handler, level=logging.INFO, listener="process"):
        run_workers("fork", 1000)
    counted = check_exported(received_records(received, 4000), 1000)
    print(f"\nlistener process: otelsink received {counted['records']} of 4000, {counted['traces']} traces")
    assert counted == {"records": 4000, "traces": WORKERS}


def test_carriers_are_not_syslog_structured_data() -> None:
    """mplog's carriers for OpenTelemetry (span ids, exception type) are not
    sent as a syslog message's structured data; a user's extra field is."""
    from mplog._rfc5424 import Rfc5424
    from mplog._spans import EXCEPTION, SPAN_CONTEXT

    record = logging.LogRecord("app", logging.ERROR, __file__, 1, "m", None, None)
    record.__dict__.update({SPAN_CONTEXT: (1, 2, 1), EXCEPTION: ("ValueError", "x")})
    assert Rfc5424(1, "h", "a", "mplog@32473").encode(record, "m").split(b" ")[-2:] == [b"-", b"m"]
    record.user = "u"
    assert b'[mplog@32473 user="u"] m' in Rfc5424(1, "h", "a", "mplog@32473").encode(record, "m")
