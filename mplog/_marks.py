"""Marks of a call under way that a skipped cleanup cannot leave behind.

Code that must know whether it interrupted itself (a logging call made by a
signal handler or a finalizer in the middle of this thread's own write) marks
the stretch with the frame running it, not with a flag. A flag is cleared in
a ``finally`` block, and before Python 3.11 a signal handler that raises as
such a block starts skips it: the flag stays set for good, and every later
call looks like one that interrupted the stretch. A frame that has returned
is on no thread's stack.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Optional

__all__ = ["here", "on_this_stack"]

#: The caller's frame, to mark a stretch with: ``mark = here()``.
here = sys._getframe


def on_this_stack(frame: Optional[FrameType]) -> bool:
    """Whether ``frame`` is running in this thread, below the caller: the
    call that marked a stretch with it is still under way, and this one
    interrupted it."""
    if frame is None:
        return False
    caller: Optional[FrameType] = here(1)
    while caller is not None:
        if caller is frame:
            return True
        caller = caller.f_back
    return False
