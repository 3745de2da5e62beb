"""Django settings of the example: LOGGING is an ordinary one, unchanged for mplog."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["myapp"]
ROOT_URLCONF = "urls"
WSGI_APPLICATION = "wsgi.application"
DATABASES: dict = {}
USE_TZ = True

# One RotatingFileHandler shared by the app's logger and django.request (4xx
# and 5xx), neither propagating: every gunicorn worker configures it when it
# loads Django, and mplog's listener writes and rotates the file for them all.
# The environment variables let the tests rotate often.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": BASE_DIR / "django.log",
            "maxBytes": int(os.environ.get("LOG_MAX_BYTES", 10 * 1024 * 1024)),
            "backupCount": int(os.environ.get("LOG_BACKUP_COUNT", 5)),
            "formatter": "plain",
        },
    },
    "loggers": {
        "myapp": {"handlers": ["file"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["file"], "level": "WARNING", "propagate": False},
    },
}
