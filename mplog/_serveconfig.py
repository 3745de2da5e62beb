"""The configuration of an ``mplog serve`` server: its handlers, read from a
file (``dictConfig`` as JSON, TOML or YAML, or a ``fileConfig`` ini file) and
built in the server's own process, grouped by the logger that holds them."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Tuple

__all__ = ["FORMATS", "ConfigError", "ServeConfig", "close", "load"]


class ConfigError(ValueError):
    """A configuration file that cannot be read, parsed or applied."""


class ServeConfig(NamedTuple):
    """The handlers a server writes through: ``groups[i]`` are the handlers of
    ``loggers[i]`` (the root first, then each named logger that has some)."""

    path: str
    loggers: Tuple[logging.Logger, ...]
    groups: Tuple[Tuple[logging.Handler, ...], ...]

    @property
    def handlers(self) -> Tuple[logging.Handler, ...]:
        """Every handler, each once."""
        return tuple(dict.fromkeys(handler for group in self.groups for handler in group))


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def _read_toml(path: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(
                f"{path}: TOML needs Python 3.11+ (tomllib) or, on this Python "
                f"{sys.version_info[0]}.{sys.version_info[1]}, the tomli package; or write the config as JSON"
            ) from None
    with open(path, "rb") as stream:
        return tomllib.load(stream)


def _read_yaml(path: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise ConfigError(f"{path}: YAML needs the PyYAML package, which this Python cannot import") from None
    with open(path, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


#: How each file name ending is read; "ini" is fileConfig's own.
FORMATS: Dict[str, Callable[[str], Any]] = {
    ".json": _read_json,
    ".toml": _read_toml,
    ".yaml": _read_yaml,
    ".yml": _read_yaml,
}
_INI = (".ini", ".cfg", ".conf")


def load(path: str) -> ServeConfig:
    """Read the configuration at ``path`` and build its handlers in this
    process (files are opened as the handlers open them), then take them off
    their loggers: from now on only the server's listener calls them.

    Raises:
        ConfigError: it cannot be read, parsed or applied, or has no handlers;
            the message names the file and says why, in one line.
    """
    _, suffix = os.path.splitext(path)
    suffix = suffix.lower()
    if suffix not in FORMATS and suffix not in _INI:
        known = ", ".join([*FORMATS, *_INI])
        raise ConfigError(f"{path}: cannot tell the format from the name; it must end in {known}")
    try:
        if suffix in _INI:
            _file_config(path)
        else:
            _dict_config(path, FORMATS[suffix](path))
    except ConfigError:
        raise
    except Exception as exc:  # dictConfig raises anything a handler's constructor may
        raise ConfigError(f"{path}: {_one_line(exc)}") from None
    return _collect(path)


def _file_config(path: str) -> None:
    if not os.path.isfile(path):  # fileConfig says only "No section: 'formatters'"
        raise ConfigError(f"{path}: no such file")
    logging.config.fileConfig(path, disable_existing_loggers=False)


def _dict_config(path: str, data: Any) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a dictConfig mapping, got {type(data).__name__}")
    logging.config.dictConfig(data)


def _one_line(exc: BaseException) -> str:
    """``exc`` and its causes in one line (dictConfig wraps the handler's error)."""
    parts: List[str] = []
    current: Any = exc
    while current is not None and len(parts) < 4:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__
    return " <- ".join(" ".join(part.split()) for part in parts)


def _collect(path: str) -> ServeConfig:
    """The handlers the config put on the root and named loggers, taken off them.

    Raises:
        ConfigError: there are none.
    """
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for _, logger in sorted(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and logger.handlers
    ]
    groups = tuple(tuple(logger.handlers) for logger in loggers)
    config = ServeConfig(path, tuple(loggers), groups)
    if not config.handlers:
        raise ConfigError(f"{path}: configures no handler; the server would have nowhere to write")
    for logger in loggers:
        logger.handlers[:] = []
    return config


def close(config: ServeConfig) -> None:
    """Close every handler of ``config`` (a checked config, or the server's at exit)."""
    for handler in config.handlers:
        try:
            handler.close()
        except Exception:  # one handler's failure must not keep the others open
            pass
