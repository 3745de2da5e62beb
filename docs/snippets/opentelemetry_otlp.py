import logging
import multiprocessing

import mplog
from mplog.integrations.opentelemetry import ExportHandler
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

# Every process makes its own spans (spawned workers run this line too);
# add a span processor to export the spans as well.
trace.set_tracer_provider(TracerProvider())


def work(n):
    with trace.get_tracer("app").start_as_current_span(f"task {n}"):
        logging.getLogger("app").info("task %d", n)


if __name__ == "__main__":
    # The endpoint: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, else
    # OTEL_EXPORTER_OTLP_ENDPOINT + /v1/logs, else http://localhost:4318/v1/logs.
    exporter = OTLPLogExporter()
    resource = Resource.create({"service.name": "myapp"})
    handler = ExportHandler(exporter, resource=resource)
    with mplog.setup(handler, level="INFO"):
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(1000))
