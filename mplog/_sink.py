"""What the listener's server hands on, and to whom: the :class:`Sink` protocol."""

from __future__ import annotations

import logging
import socket
from typing import Optional, Protocol, Tuple

from . import _codec

__all__ = ["Sink"]


class Sink(Protocol):
    """Where the server hands on what it receives."""

    def on_frame(
        self,
        route: int,
        created: float,
        record: Optional[logging.LogRecord],
        texts: Optional[Tuple[Optional[str], ...]],
        size: int,
    ) -> None:
        """A record frame of ``size`` bytes."""

    def on_text(self, route: int, frames: _codec.Frames) -> None:
        """A run of complete text frames."""

    def has_route(self, route: int) -> bool:
        """Whether ``route`` is one of this listener's."""

    def on_batch_end(self) -> None:
        """Everything one wake-up brought in has been handed on (and at least
        every WATCH_SECONDS)."""

    def on_sync(self, sock: socket.socket) -> None:
        """A process waits on ``sock`` until everything read so far is handled."""

    def on_declare(self, sock: socket.socket, header: bytes) -> None:
        """A process asks, on ``sock``, to have a file handler of its taken
        over; ``header`` starts the request (see :mod:`mplog._declare`)."""

    def on_stopping(self) -> None:
        """Stopping: what is read from now on is the drain."""

    def report(self, message: str) -> None:
        """One of mplog's own notices, for the log."""
