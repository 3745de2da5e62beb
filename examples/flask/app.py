"""A Flask app factory that configures logging itself, as Flask's docs show:
``dictConfig`` inside ``create_app()``, unchanged for mplog."""

from __future__ import annotations

import logging.config
import os

from flask import Flask, request

# The environment variables let the tests rotate often.
LOGGING = {
    "version": 1,
    # gunicorn made its loggers before the app: with --preload, the default
    # (True) would silence gunicorn's own error log, with or without mplog.
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": os.path.join(os.path.dirname(os.path.abspath(__file__)), "flask.log"),
            "maxBytes": int(os.environ.get("LOG_MAX_BYTES", 10 * 1024 * 1024)),
            "backupCount": int(os.environ.get("LOG_BACKUP_COUNT", 5)),
            "formatter": "plain",
        },
    },
    "root": {"level": "INFO", "handlers": ["file"]},
}


def create_app() -> Flask:
    """Configure logging, then make the app: each gunicorn worker runs this
    when it loads the app (the master does, with ``--preload``)."""
    logging.config.dictConfig(LOGGING)
    app = Flask(__name__)

    @app.route("/")
    def index() -> str:
        rid = request.args.get("rid", "-")
        app.logger.info("rid=%s", rid)
        return f"ok {rid}\n"

    return app
