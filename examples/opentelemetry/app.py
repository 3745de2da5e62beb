"""A WSGI app that handles each request in a span and logs one line in it,
``rid=N trace=... span=...``: the exported record carries the same ids."""

from __future__ import annotations

import logging
from typing import Callable, Iterable
from urllib.parse import parse_qs

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

# Imported in each worker (no --preload); spans are made here and, in this
# example, exported nowhere: add a span processor to export them too.
trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("app")
log = logging.getLogger("app")


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Answer ``GET /?rid=N`` with ``ok N``, logging ``rid=N`` inside the request's span."""
    rid = parse_qs(environ.get("QUERY_STRING", "")).get("rid", ["-"])[0]
    with tracer.start_as_current_span("request") as span:
        ids = span.get_span_context()
        log.info("rid=%s trace=%032x span=%016x", rid, ids.trace_id, ids.span_id)
    body = f"ok {rid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
