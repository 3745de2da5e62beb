"""mplog: logging from many processes into one place, with nothing lost, torn or hung."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

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

# What only the parent uses (setup, the listener, files, JSON) loads on first
# use: a spawned worker imports mplog just to log, and starts ~10 ms sooner.
_PARENT_SIDE = {
    "FileHandler": "_files",
    "JsonFormatter": "_json",
    "QueueListener": "_listener",
    "Session": "_setup",
    "setup": "_setup",
}


def __getattr__(name: str) -> Any:
    module = _PARENT_SIDE.get(name)
    if module is None:
        raise AttributeError(f"module 'mplog' has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
