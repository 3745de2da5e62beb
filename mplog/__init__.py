"""mplog: logging from many processes into one place, with nothing lost, torn or hung."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from . import _stdqueue
from ._buffered import flush
from ._handler import QueueHandler
from ._install import initializer
from ._json import JsonFormatter
from ._queue import Queue
from ._sync import complete
from .exceptions import SetupError

if TYPE_CHECKING:
    from ._client import connect
    from ._files import FileHandler
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
    "complete",
    "connect",
    "flush",
    "initializer",
    "setup",
]

# The listener side, loaded on first use only where it is rarely needed.
_LISTENER_SIDE = {
    "connect": "._client",  # only an mplog serve client needs it
    "FileHandler": "._files",
    "QueueListener": "._listener",
    "Session": "._setup",
    "setup": "._setup",
}


def __getattr__(name: str) -> Any:
    module = _LISTENER_SIDE.get(name)
    if module is None:
        raise AttributeError(f"module 'mplog' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def _listener_class() -> Any:
    return __getattr__("QueueListener")


# dictConfig may need the listener side in a worker that has not loaded it.
_stdqueue.listener_class = _listener_class


def _unpickling_in_a_new_worker() -> bool:
    """Whether this import comes from a spawn or forkserver child reading what
    its parent sent (``multiprocessing`` marks the process as inheriting then):
    such a worker only ever needs the worker side."""
    for name in ("multiprocessing.process", "multiprocess.process"):
        process = sys.modules.get(name)
        if process is not None and getattr(process.current_process(), "_inheriting", False):
            return True
    return False


if not _unpickling_in_a_new_worker():
    # Everywhere else, load the listener side now: a program may drop its
    # privileges or chroot after `import mplog` and set up only then, when
    # mplog's own files may be out of its reach.
    from ._files import FileHandler
    from ._listener import QueueListener
    from ._setup import Session, setup
