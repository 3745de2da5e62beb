"""Starting mplog's threads without waiting for them to run.

``threading.Thread.start()`` waits until the new thread has taken its first
steps, and those can need logging's module lock: cyclic garbage is collected
by whichever thread allocates, and a handler collected there runs logging's
weakref callback, which takes that lock. mplog starts threads where the
starting thread may hold that lock (a lane for a handler taken over, made
while the takeover holds it; a flusher started by a record logged during a
``dictConfig``): waiting there deadlocks (seen in CI).
"""

from __future__ import annotations

import _thread
import threading
from typing import Callable

__all__ = ["start_thread"]


def start_thread(target: Callable[[], object], name: str) -> threading.Event:
    """Run ``target()`` in a new daemon thread named ``name``, without
    waiting for it to start; return an event set once it has returned (or
    raised)."""
    ended = threading.Event()

    def run() -> None:
        threading.current_thread().name = name
        try:
            target()
        finally:
            ended.set()

    _thread.start_new_thread(run, ())
    return ended
