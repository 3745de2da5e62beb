"""A WSGI app that logs one line per request on its own logger, ``app``; the
logging configuration is gunicorn's (see gunicorn.conf.py beside it)."""

from __future__ import annotations

import logging
from typing import Callable, Iterable
from urllib.parse import parse_qs

log = logging.getLogger("app")


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Answer ``GET /?rid=N`` with ``ok N`` and log ``rid=N``."""
    rid = parse_qs(environ.get("QUERY_STRING", "")).get("rid", ["-"])[0]
    log.info("rid=%s", rid)
    body = f"ok {rid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
