"""Exceptions raised by mplog's public API."""

from __future__ import annotations

__all__ = ["SetupError"]


class SetupError(RuntimeError):
    """``mplog.setup()`` cannot start: another setup is active in this process,
    or the listener failed to come up.

    Raised in the parent at setup time, never later in a worker.
    """
