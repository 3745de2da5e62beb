"""Reloading an ``mplog serve`` server's configuration (``SIGHUP``): the new
file is read beside the running handlers (which keep writing meanwhile), and
is taken only if clients already connected would send the same: each handler
of the new configuration then replaces the one at its place in the old."""

from __future__ import annotations

import logging
from typing import Dict, Optional

from ._config import WorkerConfig
from ._serveconfig import ConfigError, ServeConfig, load

__all__ = ["difference", "handler_map", "load_beside"]


def load_beside(path: str) -> ServeConfig:
    """Read and build the configuration at ``path`` while the running
    handlers stay open: ``dictConfig`` and ``fileConfig`` would otherwise
    flush and close every handler that exists, in the middle of their writes.
    Loggers start again as in a new process (no level, no handlers), so that
    one the new file does not name keeps nothing from the old.

    Raises:
        ConfigError: as :func:`mplog._serveconfig.load`.
    """
    with logging._lock:  # type: ignore[attr-defined]
        running = list(logging._handlerList)  # type: ignore[attr-defined]
        del logging._handlerList[:]  # type: ignore[attr-defined]
        _reset_loggers()
        try:
            return load(path)
        except ConfigError:
            _close_built()  # a configuration that failed halfway keeps no file open
            raise
        finally:
            logging._handlerList[:0] = running  # type: ignore[attr-defined]


def _close_built() -> None:
    """Close the handlers built since ``logging._handlerList`` was emptied."""
    for reference in list(logging._handlerList):  # type: ignore[attr-defined]
        handler = reference()
        if handler is not None:
            try:
                handler.close()
            except Exception:  # one handler's failure must not keep the others open
                pass


def _reset_loggers() -> None:
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
            logger.disabled = False


def difference(old: WorkerConfig, new: WorkerConfig) -> Optional[str]:
    """Why clients connected under ``old`` could not log under ``new``, or
    ``None`` if they send the same (same loggers and levels, and the same
    lines to format for the same handlers).

    A client formats the lines of the server's plain text handlers and
    filters by the levels it was given when it connected; the server cannot
    tell it of new ones, and never writes a line formatted for one handler
    through another."""
    old_names = [route.logger or "root" for route in old.routes]
    new_names = [route.logger or "root" for route in new.routes]
    if old_names != new_names:
        return f"it serves loggers {', '.join(new_names)} instead of {', '.join(old_names)}"
    for before, after in zip(old.routes, new.routes):
        if before[:5] != after[:5]:
            name = before.logger or "root"
            return (
                f"logger {name}'s handlers changed how clients format or filter "
                "(a format, a level, a handler added, removed or of another class)"
            )
    if (old.root_level, old.logger_levels) != (new.root_level, new.logger_levels):
        return "logger levels changed"
    return None


def handler_map(old: ServeConfig, new: ServeConfig) -> Dict[logging.Handler, logging.Handler]:
    """Each handler of ``old`` and the one of ``new`` at its place (the same
    logger, the same position in its list): its successor."""
    return {
        before: after
        for old_group, new_group in zip(old.groups, new.groups)
        for before, after in zip(old_group, new_group)
    }
