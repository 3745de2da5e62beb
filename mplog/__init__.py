"""mplog: logging from many processes into one place, with nothing lost, torn or hung."""

from __future__ import annotations

from ._files import FileHandler
from ._json import JsonFormatter
from ._listener import QueueListener
from ._setup import Session, setup
from ._transport import Queue, flush
from ._worker import QueueHandler, initializer
from .exceptions import SetupError

try:
    from importlib.metadata import version as _version

    __version__ = _version("mplog")
except Exception:  # running from a source tree that was never installed
    __version__ = "0+unknown"

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
