"""A WSGI app that logs one line per request; see gunicorn.conf.py beside it."""

from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable
from urllib.parse import parse_qs

log = logging.getLogger("app")


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    rid = query.get("rid", ["-"])[0]
    if "sleep" in query:  # lets a test make a worker miss its timeout
        time.sleep(float(query["sleep"][0]))
    log.info("app rid=%s pid=%d", rid, os.getpid())
    body = f"ok {rid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
