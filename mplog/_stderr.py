"""The one way mplog writes to stderr: its own notices, and records that could
not reach the listener.

Both follow ``logging.Handler.handleError``'s rules for stderr: nothing is
written when ``sys.stderr`` is ``None`` (a ``pythonw`` process, a daemon that
closed it), and a failing write is swallowed, so reporting a problem never
raises into the code that logged. Notices are also silenced by
``logging.raiseExceptions = False``, as logging's own error reports are;
records are not, since stderr is then the only place they can still go.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from typing import Iterable, Optional, Tuple

__all__ = ["last_notice", "note", "report", "report_exception", "write_lines"]

#: The last notice reported in this process, and when (``time.time()``);
#: ``mplog status`` shows a server's.
last_notice: Optional[Tuple[float, str]] = None


def note(message: str) -> None:
    """Remember ``message`` as the last notice (said elsewhere, or by :func:`report`)."""
    global last_notice
    last_notice = (time.time(), message)


def report(message: str) -> None:
    """Write ``mplog: <message>`` on stderr, if logging's rules allow."""
    note(message)
    if logging.raiseExceptions:
        _write(f"mplog: {message}\n")


def report_exception(message: str) -> None:
    """:func:`report` ``message`` with the traceback of the exception being handled."""
    note(f"{message}: {traceback.format_exc().strip().splitlines()[-1]}")
    if logging.raiseExceptions:
        _write(f"mplog: {message}:\n{traceback.format_exc()}")


def write_lines(lines: Iterable[str]) -> None:
    """Write log lines that have nowhere else to go, one per line."""
    _write("".join(line + "\n" for line in lines))


def _write(text: str) -> None:
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except Exception:  # a closed or broken stderr: there is nowhere left to say it
        pass
