"""Hooks for ``gunicorn.conf.py``: the master runs the listener, and every
worker, its error log, its access log and the application log through it.

Add one line to the config and nothing to the app::

    from mplog.gunicorn import on_starting, on_reload, post_fork, on_exit

* ``on_starting`` starts the listener in the master, open to the workers'
  user if gunicorn's ``user`` setting makes them switch to one (a master
  started as root with ``user = "www-data"``). It adopts the handlers
  gunicorn made for ``gunicorn.error`` and ``gunicorn.access`` and the root
  logger's (set them up in the master: ``logconfig_dict``, ``basicConfig`` in the
  config file, or an app loaded with ``--preload``). With none on the root, the
  application's records go to gunicorn's error log, at gunicorn's ``--log-level``.
* ``on_reload`` (SIGHUP): gunicorn has just made new handlers; they are closed
  and the listener keeps writing through the ones it adopted at start (changed
  log file names need a restart).
* ``post_fork``: a forked worker is already wired by mplog's at-fork hook; this
  only drops handlers a reload left behind in the master, without closing them.
* ``on_exit``: drain everything and close the files.

For logrotate's ``postrotate`` with ``kill -USR1``, also set::

    logger_class = "mplog.gunicorn.Logger"

so that gunicorn's "reopen the log files" reaches the listener's files.

Nothing here imports gunicorn until ``Logger`` is used.
"""

from __future__ import annotations

import logging
from typing import Any

from ._handler import QueueHandler
from ._setup import active_session, setup

# Logger is made on first use (see __getattr__), so it cannot be listed here.
__all__ = ["GUNICORN_LOGGERS", "on_exit", "on_reload", "on_starting", "post_fork"]

#: gunicorn's own loggers; neither propagates to the root logger.
GUNICORN_LOGGERS = ("gunicorn.error", "gunicorn.access")


def on_starting(server: Any) -> None:
    """gunicorn hook: start the listener in the master (once; a re-exec'd master
    starts its own), admitting the uid gunicorn's workers run as."""
    if active_session() is not None:
        return
    # gunicorn's uid setting: the workers' uid after they drop privileges
    # (by default the master's own, which needs nothing more).
    worker_user = server.cfg.uid
    names = [name for name in GUNICORN_LOGGERS if logging.getLogger(name).handlers]
    root = logging.getLogger()
    if root.handlers or "gunicorn.error" not in names:
        setup(loggers=names, worker_user=worker_user)
        return
    error_log = logging.getLogger("gunicorn.error")
    setup(*error_log.handlers, level=error_log.getEffectiveLevel(), loggers=names, worker_user=worker_user)


def on_reload(server: Any) -> None:
    """gunicorn hook: keep the loggers routed through the listener after SIGHUP."""
    session = active_session()
    if session is not None:
        session.reclaim_loggers()


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn hook: in a new worker, drop any handler beside mplog's on the
    root and gunicorn loggers (they belong to the master: never flush or close)."""
    for name in ("", *GUNICORN_LOGGERS):
        logger = logging.getLogger(name or None)
        ours = [handler for handler in logger.handlers if isinstance(handler, QueueHandler)]
        if ours:
            logger.handlers[:] = ours


def on_exit(server: Any) -> None:
    """gunicorn hook: write every record and close the log files."""
    session = active_session()
    if session is not None:
        session.stop()


def __getattr__(name: str) -> Any:
    # Logger subclasses gunicorn's own, so it is made on first use: importing
    # this module for the hooks must not import gunicorn.
    if name == "Logger":
        logger_class = globals()["Logger"] = _make_logger_class()
        return logger_class
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_logger_class() -> type:
    from gunicorn.glogging import Logger as GunicornLogger  # type: ignore[import-untyped,import-not-found,unused-ignore]

    class Logger(GunicornLogger):  # type: ignore[misc]
        """gunicorn's logger, whose "reopen log files" (SIGUSR1) also reopens
        the files mplog's listener writes."""

        def reopen_files(self) -> None:
            """Reopen gunicorn's own log files, then the listener's
            (:meth:`mplog.Session.reopen_files`)."""
            super().reopen_files()
            session = active_session()
            if session is not None:
                session.reopen_files()

    Logger.__module__, Logger.__qualname__ = __name__, "Logger"
    return Logger
