"""mplog: logging from many processes into one place, with nothing lost, torn or hung."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, List

# What every worker needs is imported now; the parent's side (the listener,
# file handlers, setup) on first use: a spawned worker imports mplog to unpickle
# its initializer, and compiling the parent's modules too cost it ~50 ms of CPU.
from ._transport import Queue, flush
from ._worker import QueueHandler, initializer
from .exceptions import SetupError

if TYPE_CHECKING:
    from ._files import FileHandler
    from ._json import JsonFormatter
    from ._listener import QueueListener
    from ._setup import Session, setup

#: Also the package's version in setup.cfg (``attr: mplog.__version__``); a
#: literal, because importlib.metadata would add ~10 ms to every spawned worker's start.
__version__ = "0.1.0"

__all__ = [
    "FileHandler",
    "JsonFormatter",
    "Queue",
    "QueueHandler",
    "QueueListener",
    "Session",
    "SetupError",
    "__version__",
    "flush",
    "initializer",
    "setup",
]

_IMPORTED_ON_FIRST_USE = {
    "FileHandler": "._files",
    "JsonFormatter": "._json",
    "QueueListener": "._listener",
    "Session": "._setup",
    "setup": "._setup",
}


def __getattr__(name: str) -> Any:
    module = _IMPORTED_ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'mplog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
