# gunicorn with OpenTelemetry logs: the master's listener runs the one OTLP
# exporter for every worker; each worker's records carry its spans' ids.
# Run:  OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=http://127.0.0.1:4318/v1/logs \
#       ../../.venv/bin/python -m gunicorn -c gunicorn.conf.py app:app
import logging

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

from mplog.gunicorn import on_exit, on_reload, on_starting, post_fork  # noqa: F401
from mplog.integrations.opentelemetry import ExportHandler

bind = "127.0.0.1:8000"
workers = 4

# Made in the master, before on_starting, which adopts the root logger's
# handlers: the exporter and its batch thread live in the listener only.
# OTLPLogExporter reads OTEL_EXPORTER_OTLP_LOGS_ENDPOINT (default: localhost:4318).
logging.getLogger().addHandler(ExportHandler(OTLPLogExporter()))
logging.getLogger().setLevel(logging.INFO)
