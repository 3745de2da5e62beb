"""A Celery app with its own logging, as Celery's documentation shows it: a
``RotatingFileHandler`` added to the root and the task logger in
``after_setup_logger`` and ``after_setup_task_logger``. For mplog it needs
one line (marked below); nothing else changes.

Run a prefork worker (a Redis server on 127.0.0.1:6379; see README.rst here)::

    ../../.venv/bin/python -m celery -A tasks worker -P prefork -c 4 --loglevel INFO

and send tasks from another shell::

    ../../.venv/bin/python -c "import tasks; [tasks.work.delay(n) for n in range(1000)]"

Every task's line is in ``app.log`` (and its backups) exactly once, and the
file is rotated as by a single writer. ``APP_LOG_MAX_BYTES`` and
``CELERY_BROKER_URL`` override the defaults.
"""

from __future__ import annotations

import logging
import os
from logging.handlers import RotatingFileHandler
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger
from celery.utils.log import get_task_logger

import mplog.integrations.celery  # noqa: F401  (the one line for mplog)

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
app = Celery("tasks", broker=BROKER, backend=BROKER)
app.conf.broker_connection_retry_on_startup = True

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
logger = get_task_logger(__name__)


@after_setup_logger.connect
@after_setup_task_logger.connect
def add_file_handler(logger: logging.Logger, **kwargs: Any) -> None:
    """Log to ``app.log`` too, rotated at ``APP_LOG_MAX_BYTES`` (1 MiB by default)."""
    max_bytes = int(os.environ.get("APP_LOG_MAX_BYTES", 1024 * 1024))
    handler = RotatingFileHandler("app.log", maxBytes=max_bytes, backupCount=1000)
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)


@app.task
def work(n: int) -> int:
    """Log one line naming ``n``, and return it."""
    logger.info("task n=%d", n)
    return n
