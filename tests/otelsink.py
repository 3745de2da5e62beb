"""oteltest's otelsink (a real OTLP/HTTP receiver) on 127.0.0.1 and a free port,
writing each log record it receives as a JSON line: run as a script,
``python tests/otelsink.py RECORDS [PORT]``; it prints ``port N`` once it
listens (on PORT, or on a free port).

The ``otelsink`` command binds every interface on port 4318, with no option
to change either; its ``HttpSink`` makes its ``HTTPServer`` by the module's
name, so this gives it one that binds the loopback address and the port
asked for (0: any free one). Everything else is oteltest's own: the HTTP
server, the request parsing, the handler interface.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any

import oteltest.sink as sink
from oteltest.sink.handler import RequestHandler


class LoopbackHTTPServer(sink.HTTPServer):
    """oteltest's HTTP server, bound to 127.0.0.1 whatever host it is given."""

    def __init__(self, address: Any, handler: Any) -> None:
        super().__init__(("127.0.0.1", address[1]), handler)


class RecordWriter(RequestHandler):
    """Writes each received log record as a JSON line: [body, trace id, span id] (hex)."""

    def __init__(self, path: str) -> None:
        self._out = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def handle_logs(self, request: Any, headers: Any) -> None:
        lines = [
            json.dumps([record.body.string_value, record.trace_id.hex(), record.span_id.hex()])
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]
        with self._lock:
            self._out.write("".join(line + "\n" for line in lines))
            self._out.flush()

    def handle_metrics(self, request: Any, headers: Any) -> None:
        pass

    def handle_trace(self, request: Any, headers: Any) -> None:
        pass


def main() -> None:
    sink.HTTPServer = LoopbackHTTPServer
    receiver = sink.HttpSink(
        RecordWriter(sys.argv[1]),
        logging.getLogger("otelsink"),
        port=int(sys.argv[2]) if len(sys.argv) > 2 else 0,
        daemon=False,
    )
    receiver.start()
    while receiver.httpd is None:
        time.sleep(0.01)
    print(f"port {receiver.httpd.server_address[1]}", flush=True)


if __name__ == "__main__":
    main()
