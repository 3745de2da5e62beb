"""Exceptions raised by mplog's public API."""

from __future__ import annotations

__all__ = ["SetupError", "SpoolInUse"]


class SetupError(RuntimeError):
    """``mplog.setup()`` cannot start: another setup is active in this process,
    or the listener failed to come up.

    Raised in the parent at setup time, never later in a worker.
    """


class SpoolInUse(RuntimeError):
    """A :class:`mplog.SyslogHandler`'s spool directory is held by another
    process (a second session, say): two senders would resend each other's
    records. The message names the pid that holds it."""
