import os

# The one line mplog needs; the rest is the user's own configuration. gunicorn
# applies logconfig_dict in the master, before its on_starting hook, and the
# workers inherit its handlers at fork: the listener writes app.log for all.
# Run:  ../../.venv/bin/python -m gunicorn -c gunicorn.conf.py app:app
from mplog.gunicorn import on_exit, on_reload, on_starting, post_fork  # noqa: F401

bind = "127.0.0.1:8000"
workers = 4

# The environment variables let the tests rotate often.
HERE = os.path.dirname(os.path.abspath(__file__))
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        # One file for the app's lines and gunicorn's access lines.
        "app_file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": os.path.join(HERE, "app.log"),
            "maxBytes": int(os.environ.get("LOG_MAX_BYTES", 10 * 1024 * 1024)),
            "backupCount": int(os.environ.get("LOG_BACKUP_COUNT", 5)),
            "formatter": "plain",
        },
        "error_file": {
            "class": "logging.FileHandler",
            "filename": os.path.join(HERE, "gunicorn-error.log"),
            "formatter": "plain",
        },
    },
    "root": {"level": "WARNING", "handlers": ["error_file"]},
    "loggers": {
        "app": {"level": "INFO", "handlers": ["app_file"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["app_file"], "propagate": False},
        "gunicorn.error": {"level": "INFO", "handlers": ["error_file"], "propagate": False},
    },
}
