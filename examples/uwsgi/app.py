"""A WSGI app module that configures logging at import, as many do:
``dictConfig`` at the top, unchanged for mplog (see uwsgi.ini beside it)."""

from __future__ import annotations

import logging.config
import os
from typing import Callable, Iterable
from urllib.parse import parse_qs

# The environment variables let the tests rotate often.
logging.config.dictConfig(
    {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "file": {
                "class": "logging.handlers.RotatingFileHandler",
                "filename": os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.log"),
                "maxBytes": int(os.environ.get("LOG_MAX_BYTES", 10 * 1024 * 1024)),
                "backupCount": int(os.environ.get("LOG_BACKUP_COUNT", 5)),
                "formatter": "plain",
            },
        },
        "root": {"level": "INFO", "handlers": ["file"]},
    }
)
log = logging.getLogger("app")


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Answer ``GET /?rid=N`` with ``ok N`` and log ``rid=N``."""
    rid = parse_qs(environ.get("QUERY_STRING", "")).get("rid", ["-"])[0]
    log.info("rid=%s", rid)
    body = f"ok {rid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
