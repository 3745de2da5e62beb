"""The listener's server: accepts worker connections on the Unix socket,
checks who they are, takes each worker's pipe and says so (or turns it away
when it has no descriptor to hold it), reads it and hands on the frames,
holding a bounded amount of incomplete ones, answers requests to wait for
delivery, and at stop drains every pipe to its end before closing it."""

from __future__ import annotations

import array
import errno
import os
import selectors
import socket
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

from . import _codec, _declare, _descriptors, _handled, _pipes, _stderr
from ._access import Access, Peer, peer_of
from ._address import remove_address
from ._connection import RECV_SIZE, Connection, answer_taken, hello_pipe, read_chunk, refuse, rest_of_hello
from ._delivering import Delivering
from ._draining import DRAIN_SECONDS, PENDING_LIMIT, Draining
from ._framing import FrameError
from ._listening import bind_listening
from ._order import Merge
from ._pipes import seal
from ._sink import Sink

__all__ = [
    "COALESCE_SECONDS",
    "DRAIN_SECONDS",
    "PENDING_LIMIT",
    "RECV_SIZE",
    "REOPEN",
    "Server",
    "seal",
]

_FD_BYTES = array.array("i").itemsize
#: The control pipe's command to reopen the log files (anything else: stop).
REOPEN = b"r"
_CONTROL = object()
_WAKE = object()
_PIPE_EVENTS = selectors.EVENT_READ | selectors.EVENT_WRITE
#: The longest the server waits for something to happen before it looks at
#: the handlers anyway (to notice one that stalled).
WATCH_SECONDS = 1.0
# A pipe has at most this many reads of RECV_SIZE in it (PIPE_BYTES and a
# frame's rest): a sweep reads no more of a pipe still being written.
_SWEEP_READS = 8
# Sweeps to hand on everything written before a call, while processes write
# faster than the listener reads: then what they write waits a little.
_CATCH_UP_SWEEPS = 8
# What a connection that asks something, instead of sending a pipe, starts with.
_REQUEST_STARTS = (_handled.REQUEST[:1], _declare.START_BYTE)
# After a wake-up that read less than COALESCE_BELOW bytes, the listener
# sleeps COALESCE_SECONDS (bounded added latency; a worker's pipe holds far
# more than it can log in that time, so no sender blocks on it). Each wake-up
# costs tens of microseconds of CPU in select, read, write and sleep: 2 ms
# rather than 0.5 ms took a third off the listener's CPU per record.
COALESCE_BELOW = 64 * 1024
COALESCE_SECONDS = 0.002


class Server(Draining, Delivering):
    """Accepts worker connections and turns their frames into records and texts.

    Processes of the listener's own uid, of root and of ``worker_uid`` (if
    given) may connect, or those ``access`` admits (``mplog serve``); any
    other is refused. Everything received goes to ``sink``; stopping drains
    for at most ``drain_timeout`` seconds. ``strict``: a connection that
    sends a frame that cannot be handled is closed (else the frame is dropped).
    ``listening``: a listening socket at ``address`` to serve (systemd's),
    rather than one bound here. ``committed``: by stream id, the offset up to
    which a resuming client's stream is in the files (skipped if sent again).
    """

    def __init__(
        self,
        address: str,
        sink: Sink,
        drain_timeout: float,
        worker_uid: Optional[int] = None,
        access: Optional[Access] = None,
        strict: bool = False,
        listening: Optional[socket.socket] = None,
        committed: Optional[Callable[[int], int]] = None,
    ) -> None:
        self.address = address
        self._committed = committed
        self._sink = sink
        self._drain_timeout = drain_timeout
        self._deadline = float("inf")  # of the drain, once stopping
        self._access = access or Access(() if worker_uid is None else (worker_uid,))
        # Whether a frame that cannot be handled closes its connection (an
        # mplog serve client's, perhaps hostile), rather than being dropped.
        self._strict = strict
        #: Connections refused (a user not admitted), and those closed for
        #: what they sent (not a hello with a pipe, or not frames).
        self.refused = 0
        self.broken = 0
        self.turned_away = 0  # pipes, for want of descriptors
        self._received = 0  # bytes read in the current wake-up
        self._pending = 0  # bytes of incomplete frames held, over all connections
        self._turned_away = _descriptors.TurnedAway()
        self._connections: Set[Connection] = set()
        # One descriptor per worker: ask for as many as we may, before any is used.
        _descriptors.raise_open_files_limit()
        # An inherited socket (systemd's) stays at its address when this server stops.
        self._inherited = listening is not None
        self._listening = listening if listening is not None else bind_listening(address, access, worker_uid)
        self._listening.setblocking(False)
        self._reserve = _descriptors.Reserve()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listening, selectors.EVENT_READ, None)
        # Written by wake() (from any thread) to end a wait in select.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        # What a wake-up read, handed on in the order it was logged (see _order).
        # A server that journals how far each stream is written counts what
        # it holds back, which is not written yet.
        self._merge = Merge(self._deliver_text, self._deliver, counting=committed is not None)

    def serve(self, control_fd: int, busy: threading.RLock, reopen: Callable[[], None]) -> None:
        """Handle frames until ``control_fd`` says stop (or is at EOF), then drain.

        The control pipe carries one byte per command: ``REOPEN`` to reopen the
        log files, anything else to stop.
        """
        self._selector.register(control_fd, selectors.EVENT_READ, _CONTROL)
        while True:
            # Records that a wake-up read but left for the next go on soon.
            events = self._selector.select(0 if self._merge.holding else WATCH_SECONDS)
            self._received = 0
            with busy:
                stopping = self._handle_events(events, control_fd, reopen)
                if stopping:
                    self._selector.unregister(control_fd)
                    self._deadline = time.monotonic() + self._drain_timeout
                    self._sink.on_stopping()
                    self._drain()
                    self._merge.hand_on(None)
                self._sink.on_batch_end()
                if stopping:
                    return
            if self._received < COALESCE_BELOW:
                # A trickle: let more arrive before the next wake-up, so a
                # wake-up's fixed cost (select, read, write) is shared by many
                # records, and senders skip waking the listener meanwhile.
                time.sleep(COALESCE_SECONDS)

    def _handle_events(
        self, events: List[Tuple[selectors.SelectorKey, int]], control_fd: int, reopen: Callable[[], None]
    ) -> bool:
        """Handle what one wake-up brought; return whether the control pipe said stop."""
        stopping = False
        for key, _ in events:
            if key.data is None:
                self._accept_pending()
            elif key.data is _CONTROL:
                stopping = self._command(os.read(control_fd, 1), reopen) or stopping
            elif key.data is _WAKE:
                self._drain_wake_pipe()
            elif key.data.sock is not None:
                self._introduce(key.data, stopping=False)
        # One read of each pipe a wake-up: what more a pipe holds waits for
        # the next, and meanwhile its writer waits (back-pressure).
        self.sweep(1)
        return stopping

    def _command(self, command: bytes, reopen: Callable[[], None]) -> bool:
        """Carry out a command from the control pipe; return whether it says stop."""
        if command == REOPEN:
            reopen()
            return False
        return True

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        """Have the serving thread look at its sink soon (from any thread;
        never blocks)."""
        try:
            os.write(self._wake_w, b"w")
        except OSError:  # full (it will wake anyway), or closed at stop
            pass

    def catch_up(self) -> None:
        """Hand on everything written before this call (a sweep, or a few
        while processes write faster than one reads).

        Called by the serving thread, or by another holding ``busy``."""
        for _ in range(_CATCH_UP_SWEEPS):
            if self.sweep(_SWEEP_READS):
                return

    def sweep(self, reads: int) -> bool:
        """Read every pipe that has something in it now (up to ``reads``
        times each), and hand on, in the order it was logged, what was logged
        before this call; what was logged since waits for the next sweep (see
        ``_order``). Return False if a pipe still held more, of which what
        was logged before this call waits too."""
        if not self._connections and not self._merge.holding:  # no process has connected: no system call
            return True
        until = began = time.monotonic_ns()
        for key, _ in self._selector.select(0):
            conn = key.data
            if isinstance(conn, Connection) and conn.sock is None and not self._read_out(conn, reads):
                # What is still in its pipe was marked after what was read
                # of it (or is more of its last write), and may have come
                # before what other pipes gave.
                until = min(until, conn.key + 1)
        # Only once all that was read is parsed: a frame that the limit would
        # have dropped may have been completed by a read parsed after it.
        if self._pending > PENDING_LIMIT:
            self._shed_pending()
        self._merge.hand_on(until, began)
        return until == began

    def _read_out(self, conn: Connection, reads: int) -> bool:
        """Read ``conn``'s pipe until a read leaves it empty, for at most
        ``reads`` reads; return False if it may hold more."""
        for _ in range(reads):
            data = read_chunk(conn)
            if data is None or not self._take(conn, data, stopping=False) or len(data) < RECV_SIZE:
                return True
        return not conn.marked

    def positions(self) -> Dict[int, int]:
        """Each resuming client's stream served now: the offset just past
        the last whole frame handed on (call holding ``busy``)."""
        return {conn.stream: conn.position() for conn in self._connections if conn.stream and conn.sock is None}

    def peers(self) -> List[int]:
        """The pid of each pipe served now (call holding ``busy``)."""
        return [conn.pid for conn in self._connections if conn.sock is None]

    def close(self) -> None:
        """Close every connection and remove the address."""
        for conn in list(self._connections):
            self._disconnect(conn, stopping=True)
        self._selector.close()
        self._listening.close()
        self._reserve.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1
        if not self._inherited:
            remove_address(self.address)

    def close_in_child(self) -> None:
        """Close this forked child's copies of the sockets and pipes; the parent
        keeps serving (a pipe whose read end lingered in a child could never
        report a closed listener to its writer)."""
        for conn in self._connections:
            conn.close()
        self._connections = set()
        self._selector.close()
        self._listening.close()
        self._reserve.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def _accept_pending(self) -> None:
        while True:
            try:
                sock, _ = self._listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if not self._accept_failed(exc):
                    return
                continue
            peer = peer_of(sock)
            if not self._access.admits(peer):
                self._refuse_peer(sock, peer)
                continue
            sock.setblocking(False)
            merge = self._merge
            conn = Connection(sock, peer.pid, merge.take_record, merge.take_text)
            self._connections.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _refuse_peer(self, sock: socket.socket, peer: Peer) -> None:
        """Tell a process that may not log here so, close its connection, and say so."""
        refuse(sock)
        self.refused += 1
        who = f"pid {peer.pid} of uid {peer.uid} (gid {peer.gid})"
        self._report(f"refused a connection from {who}: only {self._access.describe()} may log here")

    def _accept_failed(self, exc: OSError) -> bool:
        """Handle a failed ``accept``; return whether to accept again.

        Out of descriptors (``accept`` says so even with nobody waiting), the
        reserved one turns away the connection waiting, if any.
        """
        if exc.errno not in (errno.EMFILE, errno.ENFILE):
            if exc.errno in (errno.ENOBUFS, errno.ENOMEM):
                self._report(f"cannot accept a worker connection: {exc}; retrying")
            return False
        turned_away = self._reserve.turn_away(self._listening)
        if turned_away is None:  # not even the reserve: the connections wait
            self._note_turned_away(0)
        elif turned_away:
            self._note_turned_away(1)
        return bool(turned_away)

    def _read(self, conn: Connection, stopping: bool = False) -> bool:
        """Read what one connection has; return False once it is closed, or
        (when ``stopping``) once there is nothing more to read for now."""
        if conn.sock is not None:
            return self._introduce(conn, stopping)
        got = self._read_pipe(conn, stopping)
        if got is None:
            return not stopping
        if got and self._pending > PENDING_LIMIT:
            self._shed_pending()
        return conn in self._connections

    def _read_pipe(self, conn: Connection, stopping: bool) -> Optional[bool]:
        """Read once from ``conn``'s pipe and hand on the frames completed:
        True if something was read, None if the pipe was empty, False if the
        connection is closed now."""
        data = read_chunk(conn)
        if data is None:
            return None
        return self._take(conn, data, stopping)

    def _take(self, conn: Connection, data: bytes, stopping: bool) -> bool:
        """Hand on the frames ``data`` completes; False if ``conn`` is closed now
        (``data`` empty: at its end; or not a worker's stream)."""
        if not data:
            self._disconnect(conn, stopping)
            return False
        self._received += len(data)
        conn.read += len(data)
        if conn.skip:
            data = conn.skipped(data)
        held = len(conn.parser.pending)
        try:
            conn.parser.feed(data)
        except FrameError as exc:
            self._pending -= held  # feed dropped them
            return self._refuse(conn, f"pid {conn.pid} {exc}")
        self._pending += len(conn.parser.pending) - held
        return True

    def _introduce(self, conn: Connection, stopping: bool) -> bool:
        """Take a new connection's hello and pipe; from then on, read the pipe."""
        sock = conn.sock
        assert sock is not None
        try:
            data, ancillary, flags, _ = sock.recvmsg(_codec.HELLO.size, socket.CMSG_SPACE(_FD_BYTES))
        except (BlockingIOError, InterruptedError):
            return not stopping
        except OSError:
            data, ancillary, flags = b"", [], 0
        fds = _pipes.received_fds(ancillary)
        data += rest_of_hello(sock, data)
        if not data and not fds:  # gone before it said anything
            self._disconnect(conn, stopping)
            return False
        if not fds and data[:1] in _REQUEST_STARTS:
            return self._request(conn, sock, data)
        if _descriptors.cannot_hold(fds, flags):
            return self._turn_away(conn, fds)
        return self._take_pipe(conn, sock, data, fds)

    def _take_pipe(self, conn: Connection, sock: socket.socket, data: bytes, fds: List[int]) -> bool:
        """Take the pipe a hello passed, and say so; from then on, read it."""
        try:
            pipe = hello_pipe(conn, data, fds)
        except ValueError as exc:
            return self._refuse(conn, str(exc))
        if self._strict and not self._sink.has_route(conn.route):
            os.close(pipe)
            return self._refuse(conn, f"pid {conn.pid} asked for route {conn.route}, which this listener does not have")
        os.set_blocking(pipe, False)
        conn.skip_committed(self._committed)
        self._selector.unregister(sock)
        answer_taken(sock)
        sock.close()
        conn.sock, conn.pipe = None, pipe
        # Also "writable", which a read end never is: selectors then reports
        # the writer's hang-up (EPOLLHUP) as EVENT_WRITE, telling it from data.
        self._selector.register(pipe, _PIPE_EVENTS, conn)
        return True

    def _request(self, conn: Connection, sock: socket.socket, header: bytes) -> bool:
        """A connection that asks something instead of sending a pipe: hand it
        to the sink to answer. Return False (it is no longer served here)."""
        if header == _handled.REQUEST:
            return self._sync(conn, sock)
        if _declare.request_length(header) < 0:
            return self._refuse(conn, f"pid {conn.pid} sent an unknown request {header!r}")
        self._release(conn, sock)
        self._sink.on_declare(sock, header)
        return False

    def _sync(self, conn: Connection, sock: socket.socket) -> bool:
        """Hand everything written so far on, then have the sink answer ``sock``
        once it is handled; the connection is then the sink's. Return False."""
        self._release(conn, sock)
        self.catch_up()
        self._sink.on_sync(sock)
        return False

    def _release(self, conn: Connection, sock: socket.socket) -> None:
        """Stop serving ``conn``, whose socket is now someone else's to answer and close."""
        self._selector.unregister(sock)
        self._connections.discard(conn)
        conn.sock = None

    def _turn_away(self, conn: Connection, fds: List[int]) -> bool:
        """Close a connection whose pipe cannot be held (out of descriptors)
        without answering its hello: its process offers a new pipe later, and
        has written nothing to this one. Return False."""
        for fd in fds:
            os.close(fd)
        self._disconnect(conn)
        self._note_turned_away(1)
        return False

    def _note_turned_away(self, pipes: int) -> None:
        """Count ``pipes`` turned away for want of descriptors; say so when due."""
        self.turned_away += pipes
        notice = self._turned_away.note(pipes)
        if notice is not None:
            self._report(notice)

    def _refuse(self, conn: Connection, why: str) -> bool:
        """Close a connection whose stream cannot be taken, saying ``why``; return False."""
        self.broken += 1
        self._report(f"{why}; connection closed")
        self._pending -= len(conn.parser.pending)
        conn.parser.pending = bytearray()
        self._disconnect(conn)
        return False

    def _disconnect(self, conn: Connection, stopping: bool = False) -> None:
        self._connections.discard(conn)
        try:
            self._selector.unregister(conn.channel())
        except (KeyError, ValueError):
            pass
        conn.close()
        pending = conn.parser.pending
        if pending:
            why = (
                "was cut off when the listener stopped (the sender got EPIPE and wrote it to its own stderr)"
                if stopping
                else "ended early: the process was probably killed while logging"
            )
            self._report(f"a record from pid {conn.pid} {why}; its {len(pending)} bytes received were discarded")
            self._pending -= len(pending)
            conn.parser.pending = bytearray()

    def _report(self, message: str) -> None:
        try:
            self._sink.report(message)
        except Exception:  # the log itself is failing: say it where it can still be seen
            _stderr.report(message)
