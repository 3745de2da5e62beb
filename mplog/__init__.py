"""mplog: logging from many processes into one place, with nothing lost, torn or hung."""

from __future__ import annotations

from ._files import FileHandler
from ._json import JsonFormatter
from ._listener import QueueListener
from ._setup import Session, setup
from ._transport import Queue, flush
from ._worker import QueueHandler, initializer
from .exceptions import SetupError

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
