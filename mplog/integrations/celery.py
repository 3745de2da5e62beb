"""Celery: one import in the module that makes the Celery app, and a prefork
worker's pool children log through a listener in the worker's main process::

    import mplog.integrations.celery  # noqa: F401

Importing it connects to Celery's ``worker_init`` signal, which fires only in
a worker's main process, after its configuration is read and before it sets
up logging and forks the pool. There it starts an mplog session, so the file
handlers that logging set-up makes next (``--logfile``, handlers added in
``after_setup_logger`` or ``after_setup_task_logger``, a ``dictConfig`` in a
``setup_logging`` receiver) are taken over: the main process and every pool
child, including those that ``worker_max_tasks_per_child`` replaces, send their
records to the listener, which writes and rotates each file once. Any other
process that imports the app (a web app calling ``.delay()``, ``celery beat``
on its own, the ``celery`` command's other subcommands) is left as it is.
``worker_shutdown``, after the pool has stopped, drains the listener and
closes the files.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals  # type: ignore[import-untyped,import-not-found,unused-ignore]

from .._setup import active_session, setup

__all__ = ["start_listener", "stop_listener"]


def start_listener(sender: Any = None, **kwargs: Any) -> None:
    """``worker_init`` receiver: start a session in the worker's main process
    (once: a worker started again in the same process keeps it)."""
    if active_session() is not None:
        return
    root = logging.getLogger()
    unconfigured = not root.handlers
    session = setup()
    if unconfigured:
        # Celery configures a root logger that has no handlers (with
        # worker_hijack_root_logger = False, only such a one): leave it without,
        # as it was, rather than let mplog's handler, sending to stderr, stand in
        # for Celery's --logfile. The file handlers Celery adds are taken over.
        root.removeHandler(session._handlers[0])


def stop_listener(sender: Any = None, **kwargs: Any) -> None:
    """``worker_shutdown`` receiver: write every record and close the files."""
    session = active_session()
    if session is not None:
        session.stop()


# dispatch_uid: importing this module again (a reload) connects nothing twice.
signals.worker_init.connect(start_listener, dispatch_uid="mplog.start_listener")
signals.worker_shutdown.connect(stop_listener, dispatch_uid="mplog.stop_listener")
