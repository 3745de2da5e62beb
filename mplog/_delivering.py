"""Handing on what the listener's server read, in order (see ``_order``):
lines and record frames to its sink. A frame that cannot be handled is
dropped and said, or, from a client of ``mplog serve`` (``strict``), closes
its connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Set

from . import _codec, _stderr
from ._connection import Connection

if TYPE_CHECKING:
    from ._sink import Sink

__all__ = ["Delivering"]


class Delivering:
    """The server's handing on (a part of :class:`~mplog._server.Server`,
    kept apart for its size)."""

    if TYPE_CHECKING:  # what the server provides
        _sink: Sink
        _strict: bool
        _connections: Set[Connection]

        def _refuse(self, conn: Connection, why: str) -> bool: ...
        def _report(self, message: str) -> None: ...

    def _deliver_text(self, route: int, frames: _codec.Frames) -> None:
        """Hand on lines for ``route``."""
        try:
            self._sink.on_text(route, frames)
        except ValueError as exc:  # no such route
            self._report(f"dropped log lines: {exc}")
        except Exception:  # a handler bug must not stop the listener
            _stderr.report_exception("error while handling log lines")

    def _deliver(self, payload: "bytes | bytearray", conn: Connection) -> None:
        """Hand on the record frame ``payload`` that ``conn`` sent."""
        try:
            route, created, record, texts = _codec.decode(payload)
            if self._strict and route != conn.route:
                raise ValueError(f"a frame for route {route} on its pipe for route {conn.route}")
        except ValueError as exc:
            self._misframed(conn, exc)
            return
        try:
            self._sink.on_frame(route, created, record, texts, len(payload))
        except ValueError as exc:  # no such route
            self._misframed(conn, exc)
        except Exception:  # a handler or filter bug must not stop the listener
            _stderr.report_exception("error while handling a record")

    def _misframed(self, conn: Connection, exc: ValueError) -> None:
        """A frame that cannot be handled (undecodable, or for no route of
        this listener's): dropped and said, or, ``strict``, its connection is
        closed."""
        if not self._strict:
            self._report(f"dropped a frame from pid {conn.pid}: {exc}")
        elif conn in self._connections:
            self._refuse(conn, f"pid {conn.pid} sent a frame that cannot be handled: {exc}")
