"""mplog.integrations.opentelemetry: the OpenTelemetry SDK's log pipeline in
the listener, fed by workers that each log inside their own span; every
exported record is counted and carries its worker's trace and span ids."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import pytest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

import mplog
from mplog.integrations.opentelemetry import ExportHandler, SpanContextHandler
from tests.frameworks import OUTPUT, copy_example, gunicorn
from tests.servers import Load, kill_a_worker, stop_server, wait_for_line, wait_for_port

try:  # SDK 1.34+ (Python 3.9+)
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryExporter
except ImportError:  # SDK 1.33, the last for Python 3.8
    from opentelemetry.sdk._logs.export import InMemoryLogExporter as InMemoryExporter  # type: ignore[no-redef]
try:
    from opentelemetry.sdk._logs.export import LogRecordExportResult as _Result
except ImportError:
    from opentelemetry.sdk._logs.export import LogExportResult as _Result  # type: ignore[no-redef]
SUCCESS = _Result.SUCCESS

WORKERS = 4
HERE = Path(__file__).resolve().parent
#: The SDK 1.39+ deprecates its LoggingHandler (the tests of the SDK's own pipeline use it).
SDK_HANDLER_DEPRECATED = pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")
#: oteltest installs on Python 3.10+ only (the test extra's marker); CI runs 3.13.
NEEDS_OTELSINK = pytest.mark.skipif(sys.version_info < (3, 10), reason="oteltest (otelsink) needs Python 3.10+")
#: A worker's record: who logged it, its sequence number, and the ids of the
#: span the worker logged it in (0 outside any span), as the worker saw them.
LINE = re.compile(r"worker (\d+) seq (\d+) trace ([0-9a-f]{32}) span ([0-9a-f]{16})")

log = logging.getLogger("otel.worker")


def log_in_span(worker: int, records: int, outside: int) -> None:
    """In a worker: log ``records`` records inside a span of this worker's
    own trace, then ``outside`` records outside any span."""
    tracer = TracerProvider().get_tracer("tests.otel")
    with tracer.start_as_current_span(f"worker-{worker}") as span:
        ids = span.get_span_context()
        for seq in range(records):
            log.info("worker %d seq %d trace %032x span %016x", worker, seq, ids.trace_id, ids.span_id)
    for seq in range(records, records + outside):
        log.info("worker %d seq %d trace %032x span %016x", worker, seq, 0, 0)


def run_workers(method: str, records: int, outside: int = 0) -> None:
    """Start the workers with ``method`` and wait for them (each exits 0)."""
    context = multiprocessing.get_context(method)
    processes = [context.Process(target=log_in_span, args=(i, records, outside)) for i in range(WORKERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0, f"{process} exit code {process.exitcode}"


def check_exported(exported: Sequence[Tuple[str, int, int]], per_worker: int) -> Dict[str, int]:
    """Every worker's ``per_worker`` records exactly once, each with the ids
    its worker logged it in; returns how many records and traces there were."""
    seen: Counter = Counter()
    wrong: List[str] = []
    for body, trace_id, span_id in exported:
        match = LINE.fullmatch(body)
        assert match, f"not a worker's record: {body!r}"
        worker, seq, want_trace, want_span = match.groups()
        seen[int(worker), int(seq)] += 1
        if (trace_id, span_id) != (int(want_trace, 16), int(want_span, 16)):
            wrong.append(f"{body}: exported with trace {trace_id:032x} span {span_id:016x}")
    want = {(w, s) for w in range(WORKERS) for s in range(per_worker)}
    missing = sorted(want - set(seen))
    doubled = sorted(key for key, n in seen.items() if n > 1)
    assert not missing, f"{len(missing)} records missing, e.g. {missing[:5]}"
    assert not doubled, f"{len(doubled)} records exported twice, e.g. {doubled[:5]}"
    assert not wrong, f"{len(wrong)} records with another span's ids, e.g. {wrong[:3]}"
    traces = {trace_id for _, trace_id, _ in exported if trace_id}
    return {"records": len(exported), "traces": len(traces)}


def in_memory(exporter: InMemoryExporter) -> List[Tuple[str, int, int]]:
    """What ``exporter`` got: each record's body and ids; no record carries mplog's own attribute."""
    got = []
    for data in exporter.get_finished_logs():
        record = data.log_record
        assert not any(key.startswith("_mplog") for key in record.attributes or {}), record.attributes
        got.append((str(record.body), record.trace_id or 0, record.span_id or 0))
    return got


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_every_exported_record_carries_its_workers_span(method):
    """4 workers, each logging 2,500 records inside its own span and 100
    outside any: the in-memory exporter in the listener gets all 10,400,
    each with the trace and span ids of the span its worker was in (none
    outside), and mplog's carrier attribute is not exported."""
    exporter = InMemoryExporter()
    handler = ExportHandler(exporter)
    with mplog.setup(handler, level=logging.INFO):
        run_workers(method, 2500, outside=100)
    counted = check_exported(in_memory(exporter), 2600)
    assert counted == {"records": WORKERS * 2600, "traces": WORKERS}
    assert handler.counts == (WORKERS * 2600, WORKERS * 2600, 0, 0)
    print(f"{method}: {counted['records']} records exported from {WORKERS} workers, ids all theirs")


class SlowExporter(InMemoryExporter):
    """The in-memory exporter behind a slow network: each export takes 2 ms."""

    def export(self, batch):  # type: ignore[no-untyped-def]
        time.sleep(0.002)
        return super().export(batch)


@SDK_HANDLER_DEPRECATED
def test_a_full_batch_queue_waits_instead_of_dropping():
    """4 workers log 500 records each into a batch processor whose queue
    holds 16 and whose exporter is slow: ExportHandler exports all 2,000 and
    counts no loss. The SDK's own pipeline (only made span-aware), in the
    same listener, drops records silently; its loss is printed."""
    exporter = SlowExporter()
    handler = ExportHandler(exporter, max_queue_size=16, max_export_batch_size=8)
    with mplog.setup(handler, level=logging.INFO):
        run_workers("fork", 500)
    check_exported(in_memory(exporter), 500)
    assert handler.counts == (2000, 2000, 0, 0)

    sdk_exporter = SlowExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(sdk_exporter, max_queue_size=16, max_export_batch_size=8))
    with mplog.setup(SpanContextHandler(LoggingHandler(logger_provider=provider)), level=logging.INFO):
        run_workers("fork", 500)
    provider.shutdown()
    got = [body for body, _, _ in in_memory(sdk_exporter) if LINE.fullmatch(body)]
    print(f"the SDK's BatchLogRecordProcessor alone: {len(got)} of 2000 exported, {2000 - len(got)} dropped")


class FileExporter:
    """An OpenTelemetry log exporter that appends each record to a file of its process's own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def export(self, batch):  # type: ignore[no-untyped-def]
        with open(self.directory / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as out:
            for data in batch:
                record = data.log_record
                out.write(json.dumps([str(record.body), record.trace_id or 0, record.span_id or 0]) + "\n")
        return SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def read_exported(directory: Path) -> List[Tuple[str, int, int]]:
    """Every record the FileExporters in ``directory`` wrote, from any process."""
    return [tuple(json.loads(line)) for path in directory.glob("*.jsonl") for line in path.read_text().splitlines()]


@SDK_HANDLER_DEPRECATED
@pytest.mark.timeout(120)
def test_forked_workers_lose_records_without_mplog(tmp_path):
    """The SDK's pipeline made in the parent, 4 forked workers logging 1,000
    records each inside their spans: without mplog each worker exports
    through its own copy, whose batch thread dies with it (multiprocessing
    ends a forked worker with os._exit), and the loss is printed; with the
    same exporter in mplog's listener, all 4,000 arrive with their ids."""
    without, with_mplog = tmp_path / "without", tmp_path / "with"
    without.mkdir()
    with_mplog.mkdir()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(FileExporter(without)))
    sdk_handler = LoggingHandler(logger_provider=provider)
    root = logging.getLogger()
    root.addHandler(sdk_handler)
    root.setLevel(logging.INFO)
    try:
        run_workers("fork", 1000)
    finally:
        root.removeHandler(sdk_handler)
        provider.shutdown()
    arrived = [body for body, _, _ in read_exported(without) if LINE.fullmatch(body)]
    print(f"without mplog: {len(arrived)} of 4000 exported, {4000 - len(arrived)} lost")

    handler = ExportHandler(FileExporter(with_mplog))
    with mplog.setup(handler, level=logging.INFO):
        run_workers("fork", 1000)
    counted = check_exported(read_exported(with_mplog), 1000)
    assert counted == {"records": 4000, "traces": WORKERS}
    assert {path.name for path in with_mplog.glob("*.jsonl")} == {f"{os.getpid()}.jsonl"}
    print(f"with mplog: {counted['records']} of 4000 exported, all from the listener's process")


@pytest.fixture
def otelsink(tmp_path: Path) -> Iterator[Tuple[int, Path]]:
    """A real OTLP/HTTP receiver (oteltest's otelsink) on 127.0.0.1: its port,
    and the file where it writes each log record it receives."""
    received = tmp_path / "received.jsonl"
    received.touch()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "otelsink.py"), str(received)],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "otelsink.err", "wb"),  # its access log: a line per request
        text=True,
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("port "), f"otelsink did not start: {line!r}"
        yield int(line.split()[1]), received
    finally:
        process.terminate()
        process.wait(10)


def received_records(path: Path, expected: int, timeout: float = 30.0) -> List[Tuple[str, int, int]]:
    """What the receiver wrote, once it has ``expected`` records or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines()
        if len(lines) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    records = [json.loads(line) for line in lines]
    return [(body, int(trace_id or "0", 16), int(span_id or "0", 16)) for body, trace_id, span_id in records]


@NEEDS_OTELSINK
@pytest.mark.timeout(120)
def test_otlp_http_to_a_real_receiver(otelsink):
    """The OTLP/HTTP exporter in the listener, to otelsink on loopback: 4
    forked workers log 1,000 records each inside their own spans, and the
    receiver gets every one once, with its worker's ids."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    port, received = otelsink
    handler = ExportHandler(OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs"))
    with mplog.setup(handler, level=logging.INFO):
        run_workers("fork", 1000)
    assert handler.counts == (4000, 4000, 0, 0)
    counted = check_exported(received_records(received, 4000), 1000)
    assert counted == {"records": 4000, "traces": WORKERS}
    print(f"otelsink received {counted['records']} of 4000 records over OTLP/HTTP")


@NEEDS_OTELSINK
@pytest.mark.timeout(120)
def test_the_otlp_snippet_exports_to_a_real_receiver(otelsink, tmp_path):
    """docs/snippets/opentelemetry_otlp.py as printed, its endpoint set by
    the environment: otelsink gets the 1,000 tasks' records once each, each
    in a trace of its own (a span per task, in 4 spawned workers)."""
    port, received = otelsink
    snippet = HERE.parent / "docs" / "snippets" / "opentelemetry_otlp.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPLOG", "PYTHONWARNINGS"))}
    env["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] = f"http://127.0.0.1:{port}/v1/logs"
    result = subprocess.run(
        [sys.executable, str(snippet)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    records = [(body, trace_id, span_id) for body, trace_id, span_id in received_records(received, 1000)]
    assert Counter(body for body, _, _ in records) == Counter(f"task {n}" for n in range(1000))
    assert all(trace_id and span_id for _, trace_id, span_id in records)
    assert len({trace_id for _, trace_id, _ in records}) == 1000


EXAMPLE = HERE.parent / "examples" / "opentelemetry"
REQUEST_LINE = re.compile(r"rid=(\d+) trace=([0-9a-f]{32}) span=([0-9a-f]{16})")
REQUESTS = 2000


def serve_example(
    directory: Path, sink: Tuple[int, Path], hook: bool, wait: float
) -> Tuple[Load, List[Tuple[str, int, int]], str]:
    """gunicorn with the example's config (without its hook line unless
    ``hook``) in ``directory``, 3 workers exporting to the receiver
    ``sink``: 2,000 requests, a worker SIGKILLed half-way; then the server
    is stopped. Returns the load, what the receiver got (waiting up to
    ``wait`` seconds for a record per answered request), and the server's output."""
    port, received = sink
    received.write_text("")
    copy_example(EXAMPLE, directory)
    server = gunicorn(directory, "app:app", hook)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"http://127.0.0.1:{port}/v1/logs"}
    output = directory / OUTPUT
    with open(output, "wb") as out:
        process = subprocess.Popen(server.command, cwd=directory, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        listening = int(wait_for_line(str(output), server.listening, process=process, timeout=60))
        wait_for_line(str(output), server.booted, process=process, count=server.workers, timeout=60)
        wait_for_port(listening)
        load = Load(listening, REQUESTS, deadline=90)
        load.run(during=[lambda: kill_a_worker(process)])
        wait_for_line(str(output), server.booted, process=process, count=server.workers + 1)
    finally:
        stop_server(process)
    return load, received_records(received, len(load.answered), wait), output.read_text()


def check_requests(load: Load, received: Sequence[Tuple[str, int, int]]) -> Tuple[List[int], List[int], List[str]]:
    """Answered requests with no exported record, those with more than one,
    and records exported with ids other than their request's span."""
    seen: Counter = Counter()
    wrong = []
    for body, trace_id, span_id in received:
        match = REQUEST_LINE.fullmatch(body)
        if match is None:
            continue
        seen[int(match.group(1))] += 1
        if (trace_id, span_id) != (int(match.group(2), 16), int(match.group(3), 16)):
            wrong.append(body)
    lost = sorted(rid for rid in load.answered if seen[rid] == 0)
    return lost, sorted(rid for rid, n in seen.items() if n > 1), wrong


@NEEDS_OTELSINK
@pytest.mark.framework
@pytest.mark.timeout(200)
def test_gunicorn_workers_export_through_the_listener(tmp_path, otelsink):
    """gunicorn, 3 sync workers, the example's config: the hook line and an
    ExportHandler with the OTLP/HTTP exporter on the root logger. 2,000
    requests, each logged inside its own span, a worker SIGKILLed half-way:
    with the hook, every answered request's record reaches otelsink once,
    with its span's ids. Without the hook line each worker exports through
    its own copy of the pipeline; its loss is printed."""
    load, received, output = serve_example(tmp_path / "with", otelsink, hook=True, wait=15)
    lost, doubled, wrong = check_requests(load, received)
    print(f"with mplog: {len(load.answered)} answered, {len(received)} records received, {len(lost)} lost")
    assert (lost, doubled, wrong) == ([], [], []), (lost[:10], doubled[:10], wrong[:3])
    assert len(load.answered) >= REQUESTS - load.concurrency
    assert "Traceback" not in output, output[-3000:]

    load, received, output = serve_example(tmp_path / "without", otelsink, hook=False, wait=3)
    lost, doubled, wrong = check_requests(load, received)
    print(f"without mplog: {len(load.answered)} answered, {len(lost)} lost, {len(doubled)} doubled, {len(wrong)} wrong")


def test_a_json_file_beside_the_exporter_does_not_show_the_span_carrier(tmp_path):
    """mplog.JsonFormatter on a listener handler beside ExportHandler: the
    records logged in a span (by the workers, and by the parent, whose
    records the listener formats itself) carry their ids to the listener, and
    the JSON lines do not show mplog's attribute for them."""
    json_file = logging.FileHandler(tmp_path / "app.jsonl")
    json_file.setFormatter(mplog.JsonFormatter())
    exporter = InMemoryExporter()
    with mplog.setup(ExportHandler(exporter), json_file, level=logging.INFO):
        run_workers("fork", 10)
        with TracerProvider().get_tracer("tests.otel").start_as_current_span("parent"):
            log.info("in the parent's span")
    documents = [json.loads(line) for line in (tmp_path / "app.jsonl").read_text().splitlines()]
    assert len(documents) == WORKERS * 10 + 1
    assert [key for document in documents for key in document if key.startswith("_mplog")] == []
    parent = [record for record in in_memory(exporter) if record[0] == "in the parent's span"]
    assert len(parent) == 1 and parent[0][1] != 0
