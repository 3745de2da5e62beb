"""Recipes: a file handler a process configured, described in plain JSON, so
that the listener can build its own instance of it, one per file.

Only the stdlib's file handlers are described (``FileHandler``,
``RotatingFileHandler``, ``TimedRotatingFileHandler``, ``WatchedFileHandler``),
by their constructor arguments; the listener builds only those classes, from
those arguments, so a recipe can never make it run code of a process's
choosing. Level, filters and formatter are not part of a recipe: the process
that configured the handler applies them and sends the finished line.
"""

from __future__ import annotations

import datetime
import logging
import logging.handlers
import os
from typing import Any, Callable, Dict, Optional, Tuple, Type

__all__ = [
    "OWNED",
    "Recipe",
    "TAKEN_OVER",
    "build",
    "describe",
    "is_taken_over",
    "mark_owned",
    "owned_here",
    "recipe_of",
    "register",
    "same_file_handler",
]

#: Set on every handler a listener owns, to the pid of the listener's process:
#: there such a handler is never taken over. A process forked from it (a
#: worker, which inherits the handler on any logger it was attached to besides
#: the ones the listener routes) has its records sent to the listener instead.
OWNED = "_mplog_owned"

#: The classes whose instances are taken over, by name in a recipe
#: (``mplog.FileHandler`` adds itself: see :func:`register`).
TAKEN_OVER: Dict[str, Type[logging.Handler]] = {
    "FileHandler": logging.FileHandler,
    "RotatingFileHandler": logging.handlers.RotatingFileHandler,
    "TimedRotatingFileHandler": logging.handlers.TimedRotatingFileHandler,
    "WatchedFileHandler": logging.handlers.WatchedFileHandler,
}
_NAMES = {cls: name for name, cls in TAKEN_OVER.items()}

#: Seconds in one ``interval`` of each ``when`` (TimedRotatingFileHandler
#: keeps only their product).
_UNIT_SECONDS = {"S": 1, "M": 60, "H": 3600, "D": 86400, "MIDNIGHT": 86400, "W": 604800}

Recipe = Dict[str, Any]


def register(name: str, cls: Type[logging.Handler], arguments: Callable[[Any], Recipe]) -> None:
    """Take over instances of ``cls`` too, built from ``arguments(handler)``:
    the keyword arguments that make such a handler (``filename`` absolute)."""
    TAKEN_OVER[name] = cls
    _NAMES[cls] = name
    _ARGUMENTS[name] = arguments


def mark_owned(handler: logging.Handler) -> None:
    """``handler`` is a listener's of this process: it writes here, never taken over."""
    setattr(handler, OWNED, os.getpid())


def owned_here(handler: logging.Handler) -> bool:
    """Whether ``handler`` belongs to a listener of this process."""
    owner = handler.__dict__.get(OWNED)
    return owner is not None and owner == os.getpid()


def is_taken_over(handler: logging.Handler) -> bool:
    """Whether ``handler`` is an instance of exactly one of :data:`TAKEN_OVER`."""
    return type(handler) in _NAMES


def recipe_of(handler: logging.Handler) -> Recipe:
    """The recipe of ``handler``, an instance of exactly one of :data:`TAKEN_OVER`.

    Raises:
        ValueError: it has a ``namer`` or ``rotator`` (code, which cannot
            cross to the listener), or writes bytes.
    """
    name = _NAMES[type(handler)]
    recipe: Recipe = _stdlib_recipe(name, handler) if isinstance(handler, logging.FileHandler) else {"class": name}
    recipe.update(_ARGUMENTS[name](handler))
    return recipe


def _stdlib_recipe(name: str, handler: logging.FileHandler) -> Recipe:
    """What every stdlib file handler takes."""
    for hook in ("namer", "rotator"):
        if getattr(handler, hook, None) is not None:
            raise ValueError(
                f"{handler!r} has a {hook}, which the listener cannot run: set "
                "handler.mplog_takeover = False to keep it in this process (it then writes the file itself)"
            )
    if "b" in handler.mode:
        raise ValueError(f"{handler!r} opens its file in binary mode ({handler.mode!r}); the listener writes text")
    recipe: Recipe = {
        "class": name,
        "filename": handler.baseFilename,
        "mode": handler.mode,
        "encoding": handler.encoding,
        "errors": getattr(handler, "errors", None),
    }
    if name == "TimedRotatingFileHandler":  # always appends; it takes no mode
        del recipe["mode"]
    return recipe


def _size_rotation(handler: Any) -> Recipe:
    return {"maxBytes": handler.maxBytes, "backupCount": handler.backupCount}


def _time_rotation(handler: Any) -> Recipe:
    unit = _UNIT_SECONDS["W" if handler.when.startswith("W") else handler.when]
    at_time = handler.atTime
    return {
        "when": handler.when,
        "interval": handler.interval // unit,
        "backupCount": handler.backupCount,
        "utc": handler.utc,
        "atTime": None if at_time is None else at_time.isoformat(),
    }


def _no_rotation(handler: Any) -> Recipe:
    return {}


_ARGUMENTS: Dict[str, Callable[[Any], Recipe]] = {
    "FileHandler": _no_rotation,
    "RotatingFileHandler": _size_rotation,
    "TimedRotatingFileHandler": _time_rotation,
    "WatchedFileHandler": _no_rotation,
}


def build(recipe: Recipe) -> logging.Handler:
    """The listener's instance for ``recipe``: it writes each record's
    message (the line the sending process formatted), and opens its file at
    its first record.

    Raises:
        ValueError: ``recipe`` is not one :func:`recipe_of` makes, or the
            class refuses its arguments.
    """
    cls = TAKEN_OVER.get(recipe.get("class"))  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"not a handler the listener takes over: {recipe.get('class')!r}")
    arguments = {key: value for key, value in recipe.items() if key != "class"}
    if arguments.get("atTime") is not None:
        arguments["atTime"] = datetime.time.fromisoformat(arguments["atTime"])
    if "errors" in arguments and not _takes_errors(cls):  # Python 3.8
        if arguments.pop("errors") is not None:
            raise ValueError("this Python's file handlers take no errors= argument")
    if issubclass(cls, logging.FileHandler):
        arguments["delay"] = True
    try:
        handler = cls(**arguments)
    except (TypeError, ValueError, LookupError) as exc:
        raise ValueError(f"the listener cannot build {describe(recipe)}: {exc}") from None
    mark_owned(handler)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def _takes_errors(cls: Type[logging.Handler]) -> bool:
    return "errors" in cls.__init__.__code__.co_varnames


def same_file_handler(recipe: Recipe, other: Recipe) -> Optional[str]:
    """``None`` if ``other`` describes the same handler as ``recipe`` (the
    mode aside: the listener opens the file once), else what differs."""
    differ = sorted(key for key in set(recipe) | set(other) if key != "mode" and recipe.get(key) != other.get(key))
    if not differ:
        return None
    return ", ".join(f"{key}={other.get(key)!r} (taken over with {recipe.get(key)!r})" for key in differ)


def describe(recipe: Recipe) -> str:
    """``recipe`` as a constructor call, for messages."""
    arguments: Tuple[str, ...] = tuple(f"{key}={value!r}" for key, value in recipe.items() if key != "class")
    return f"{recipe.get('class')}({', '.join(arguments)})"
