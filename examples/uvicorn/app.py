"""An ASGI app for ``uvicorn --workers N``; see serve.py beside it."""

from __future__ import annotations

import logging
import os
from urllib.parse import parse_qs

# uvicorn starts its workers with spawn; they join the listener the parent
# started with nothing to call here.
log = logging.getLogger("app")


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    rid = parse_qs(scope["query_string"].decode()).get("rid", ["-"])[0]
    log.info("app rid=%s pid=%d", rid, os.getpid())
    body = f"ok {rid}\n".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
