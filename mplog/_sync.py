"""``mplog.complete()``: wait until what was logged has been handled.

The process sends what it has buffered, then asks the listener to answer
once everything written before is handled (see :mod:`mplog._handled`).
"""

from __future__ import annotations

import math
import time

from . import _install
from ._buffered import flush
from ._handled import wait_handled

__all__ = ["complete"]


def complete(timeout: float = 10.0) -> bool:
    """Wait until every record this process has logged so far, and every
    record logged by processes that have exited (a joined child's, say), has
    been handled by the listener's handlers.

    Returns True once it has, or False if ``timeout`` seconds passed first
    (a handler still busy, or stalled). In a process that does not log
    through mplog there is nothing to wait for: True.

    Args:
        timeout: the longest to wait, in seconds.

    Raises:
        TypeError: ``timeout`` is not a number.
        ValueError: ``timeout`` is negative or not finite.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r} ({type(timeout).__name__})")
    if not (math.isfinite(timeout) and timeout >= 0):
        raise ValueError(f"timeout must be a finite number of seconds >= 0, got {timeout!r}")
    config = _install.current()
    if config is None:
        return True
    deadline = time.monotonic() + timeout
    flush()
    return wait_handled(config.address, deadline)
