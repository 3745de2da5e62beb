"""Stopping the listener's server without losing a record: every pipe is
read to its end or sealed between two frames; and shedding the incomplete
frames that a listener holds past its limit."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Optional, Set

from . import _pipes
from ._connection import Connection

__all__ = ["DRAIN_SECONDS", "PENDING_LIMIT", "Draining"]

#: How long stopping may spend on one pipe whose writer keeps writing.
DRAIN_SECONDS = 2.0
#: The most the listener holds, over all its connections, of frames that have
#: not arrived whole (a frame is at most MAX_PAYLOAD). Past it, the connection
#: holding the most is closed once its writer is seen to be still writing that
#: frame (see Server._shed): the write fails with EPIPE, and its sender writes
#: the record to its own stderr.
PENDING_LIMIT = 128 * 1024 * 1024


class Draining:
    """The server's draining at stop and shedding over its limit (a part of
    :class:`~mplog._server.Server`, kept apart for its size)."""

    if TYPE_CHECKING:  # what the server provides
        _connections: Set[Connection]
        _listening: socket.socket
        _inherited: bool
        _deadline: float
        _pending: int

        def _read(self, conn: Connection, stopping: bool = False) -> bool: ...
        def _read_pipe(self, conn: Connection, stopping: bool) -> Optional[bool]: ...
        def _introduce(self, conn: Connection, stopping: bool) -> bool: ...
        def _accept_pending(self) -> None: ...
        def _disconnect(self, conn: Connection, stopping: bool = False) -> None: ...
        def _refuse(self, conn: Connection, why: str) -> bool: ...
        def _report(self, message: str) -> None: ...

    def _shed_pending(self) -> None:
        """Close the connections holding the largest incomplete frames until
        what is held of such frames is within ``PENDING_LIMIT``."""
        for conn in sorted(self._connections, key=lambda c: len(c.parser.pending), reverse=True):
            if self._pending <= PENDING_LIMIT:
                return
            if conn.parser.pending:
                self._shed(conn)

    def _shed(self, conn: Connection) -> None:
        """Close ``conn``, unless the frame it holds part of arrives whole
        meanwhile; no record whose write returned is lost.

        The listener reads what the pipe holds, and once a read leaves it empty
        in the middle of that frame, seals it (see :func:`seal`): its writer is
        then still in the write of that frame, which fails with EPIPE when the
        pipe is closed, and its sender writes the record to its own stderr.
        """
        size = len(conn.parser.pending)
        deadline = time.monotonic() + DRAIN_SECONDS
        over = f"while the listener held {self._pending} bytes of such frames, over its limit of {PENDING_LIMIT}"
        try:
            with _pipes.Padder(conn.pipe) as padder:
                while conn in self._connections and len(conn.parser.pending) >= size:
                    got = self._read_pipe(conn, stopping=False)
                    if got is None and padder.seal():
                        self._refuse(conn, f"{_shed_notice(conn, over)} (its sender writes that record to its stderr)")
                    elif time.monotonic() > deadline:
                        self._refuse(conn, f"{_shed_notice(conn, over)}; it kept writing, so {_UNSEALED}")
        except OSError as exc:  # no /proc, say
            self._refuse(conn, f"{_shed_notice(conn, over)}; the pipe could not be sealed ({exc}), so {_UNSEALED}")

    def _drain(self) -> None:
        """Read everything sent before the stop.

        After ``shutdown`` of the listening socket new connections are refused,
        yet the backlog can still be accepted. An inherited socket (systemd's)
        is neither shut down nor accepted from: it is shared with systemd,
        which keeps it for the next server, and what waits in its backlog is
        for that one to accept. After ``SHUT_RD`` on a connection
        that has not sent its pipe yet, the sender gets EPIPE, while a pipe it
        sent before stays readable. Each pipe is then drained and sealed (see
        :meth:`_drain_pipe`); only one that cannot be sealed within
        ``DRAIN_SECONDS``, or without ``/proc``, is closed unsealed (and reported).
        """
        if not self._inherited:
            try:
                self._listening.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._accept_pending()
        for conn in list(self._connections):
            if conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
                self._introduce(conn, stopping=True)
                if conn.sock is not None:  # connected, but never sent its pipe
                    self._disconnect(conn, stopping=True)
            if conn in self._connections:
                self._drain_pipe(conn)

    def _drain_pipe(self, conn: Connection) -> None:
        """Read a pipe until its writer has closed it, or can add nothing more;
        then close it.

        A pipe cannot be shut down like a socket, and closing it while its
        writer still writes would lose what arrived after the last read. So,
        once a read leaves the pipe empty between two frames, the listener
        seals it (see :func:`seal`): then no writer can add a byte, a later
        write blocks until the close and fails with EPIPE, and its sender falls
        back to stderr. If the writer got a byte in first, the seal writes
        nothing, and the listener reads on and tries again.
        """
        try:
            self._read_until_sealed(conn, min(time.monotonic() + DRAIN_SECONDS, self._deadline))
        except OSError as exc:  # no /proc, say: close it now, unsealed
            self._report_unsealed(conn, f"it could not be sealed: {exc}")
        if conn in self._connections:
            self._disconnect(conn, stopping=True)

    def _read_until_sealed(self, conn: Connection, deadline: float) -> None:
        """Read ``conn``'s pipe until it is at its end, or sealed between two
        frames, or ``deadline`` has passed (then say so)."""
        with _pipes.Padder(conn.pipe) as padder:
            while True:
                while self._read(conn, stopping=True) and time.monotonic() <= deadline:
                    pass
                if conn not in self._connections:  # at its end, and closed
                    return
                if time.monotonic() > deadline:
                    self._report_unsealed(conn, "it kept logging while the listener stopped")
                    return
                if conn.parser.pending:  # the writer is in the middle of a frame
                    time.sleep(0.001)
                    continue
                if padder.seal():
                    return

    def _report_unsealed(self, conn: Connection, why: str) -> None:
        self._report(
            f"the pipe of pid {conn.pid} was closed unsealed ({why}), so what it wrote since the last read may be lost"
        )


_UNSEALED = "it was closed unsealed: what its process wrote since the last read may be lost"


def _shed_notice(conn: Connection, over: str) -> str:
    """What the listener says when it drops ``conn``'s incomplete frame ``over`` its limit."""
    held = len(conn.parser.pending)
    return f"a frame from pid {conn.pid} had not arrived whole {over}: its {held} bytes were discarded"
