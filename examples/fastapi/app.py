"""A FastAPI app that logs one line per request to the ``myapp`` logger.

Its logging configuration is the user's own, given to the server: run (from
this directory) ``mplog run -- uvicorn app:app --workers 4 --log-config
logging.yaml`` (or ``logging.json``, ``logging.ini``). For ``fastapi run``,
which has no ``--log-config``, see main.py.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

log = logging.getLogger("myapp")
app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
async def index(rid: str = "-") -> str:
    """Log ``rid=<id>`` and answer ``ok <id>``."""
    log.info("rid=%s", rid)
    return f"ok {rid}\n"
