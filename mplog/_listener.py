"""The listener: the one place where the real handlers run.

:class:`QueueListener` accepts one connection per worker process on the
queue's Unix socket, takes the pipe the worker sends over it, decodes whole
frames as they arrive on the pipe and passes each record to its handlers. It
runs as a thread of the process that started it, or as a process of its own
forked from it.
"""

from __future__ import annotations

import array
import codecs
import errno
import fcntl
import functools
import io
import logging
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
import time
import traceback
from typing import Callable, List, Optional, Sequence, Set, Tuple

from . import _codec, _fork
from ._files import FileHandler
from ._transport import F_SETPIPE_SZ, Queue, remove_address
from ._worker import TextTarget

__all__ = ["QueueListener"]

_RECV_SIZE = 256 * 1024
#: Lines arriving in one wake-up are written in pieces of about this many characters.
WRITE_CHUNK = 256 * 1024
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
# After a wake-up that read less than _COALESCE_BELOW bytes, the listener
# sleeps _COALESCE_SECONDS (bounded added latency; a worker's pipe holds far
# more than it can log in that time, so no sender blocks on it). Each wake-up
# costs tens of microseconds of CPU in select, read, write and sleep: 2 ms
# rather than 0.5 ms took a third off the listener's CPU per record.
_COALESCE_BELOW = 64 * 1024
_COALESCE_SECONDS = 0.002
# How long a fork waits for the listener thread and handlers to go idle.
_QUIESCE_SECONDS = 2.0
_READY_SECONDS = 30.0
_CONTROL = object()
REOPEN = b"r"
RUNNERS = ("thread", "process")


def _notice(message: str) -> logging.LogRecord:
    """A record mplog itself writes into the log, e.g. to report a discarded frame."""
    return logging.LogRecord("mplog", logging.WARNING, __file__, 0, message, None, None)


class _Connection:
    """One worker process's channel: its socket until it has sent its pipe, then the pipe."""

    __slots__ = ("sock", "pipe", "pid", "route", "pending")

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock: Optional[socket.socket] = sock
        self.pipe = -1  # the read end, once received
        self.pid = pid
        self.route = -1  # until the connection's hello names it
        self.pending = bytearray()

    def channel(self) -> "socket.socket | int":
        """What the selector watches for this connection."""
        return self.sock if self.sock is not None else self.pipe

    def close(self) -> None:
        """Close the socket or pipe."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1


FrameHandler = Callable[[int, float, Optional[logging.LogRecord], Optional[Tuple[Optional[str], ...]]], None]
TextHandler = Callable[[int, _codec.Frames], None]
# A text frame at least this long is handed on as a view of the read, not copied.
_LONG_FRAME = 4096
_TEXT_FRAME_LIMIT = _codec.MAX_PAYLOAD + 1024  # a longer unterminated line is not from a worker
_RECORD_START_BYTE = bytes([_codec.RECORD_START])
_FD_BYTES = array.array("i").itemsize
# How long stopping may spend on one pipe whose writer keeps writing.
_DRAIN_SECONDS = 2.0


class _Server:
    """Accepts worker connections and turns their frames into records and texts.

    ``on_frame(route, created, record, texts)`` is called for every record
    frame, ``on_text(route, frames)`` for each run of complete text frames,
    ``on_batch_end()`` after everything one wake-up brought in (so writes can
    be batched), ``report(record)`` for mplog's own notices.
    """

    def __init__(
        self,
        address: str,
        on_frame: FrameHandler,
        on_text: TextHandler,
        on_batch_end: Callable[[], None],
        report: Callable[[logging.LogRecord], None],
    ) -> None:
        self.address = address
        self._on_frame = on_frame
        self._on_text = on_text
        self._on_batch_end = on_batch_end
        self._report_record = report
        self._uid = os.getuid()
        self._received = 0  # bytes read in the current wake-up
        self._connections: Set[_Connection] = set()
        self._listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listening.bind(address)
            os.chmod(address, 0o600)  # the directory is 0700 already; belt and braces
            self._listening.listen(socket.SOMAXCONN)
            self._listening.setblocking(False)
        except OSError:
            self._listening.close()
            raise
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listening, selectors.EVENT_READ, None)

    def serve(self, control_fd: int, busy: threading.RLock, reopen: Callable[[], None]) -> None:
        """Handle frames until ``control_fd`` says stop (or is at EOF), then drain.

        The control pipe carries one byte per command: ``REOPEN`` to reopen the
        log files, anything else to stop.
        """
        self._selector.register(control_fd, selectors.EVENT_READ, _CONTROL)
        while True:
            events = self._selector.select()
            self._received = 0
            with busy:
                stopping = False
                for key, _ in events:
                    if key.data is None:
                        self._accept_pending()
                    elif key.data is _CONTROL:
                        command = os.read(control_fd, 1)
                        if command == REOPEN:
                            reopen()
                        else:
                            stopping = True
                    else:
                        self._read(key.data)
                if stopping:
                    self._selector.unregister(control_fd)
                    self._drain()
                self._on_batch_end()
                if stopping:
                    return
            if self._received < _COALESCE_BELOW:
                # A trickle: let more arrive before the next wake-up, so a
                # wake-up's fixed cost (select, read, write) is shared by many
                # records, and senders skip waking the listener meanwhile.
                time.sleep(_COALESCE_SECONDS)

    def close(self) -> None:
        """Close every connection and remove the address."""
        for conn in list(self._connections):
            self._disconnect(conn, stopping=True)
        self._selector.close()
        self._listening.close()
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

    def _accept_pending(self) -> None:
        while True:
            try:
                sock, _ = self._listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._report(f"cannot accept a worker connection: {exc}; retrying")
                return
            pid, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            if uid not in (self._uid, 0):
                sock.close()
                self._report(f"refused a connection from pid {pid} of uid {uid}: only uid {self._uid} may log here")
                continue
            sock.setblocking(False)
            conn = _Connection(sock, pid)
            self._connections.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Connection, stopping: bool = False) -> bool:
        """Read what one connection has; return False once it is closed, or
        (when ``stopping``) once there is nothing more to read for now."""
        if conn.sock is not None:
            return self._introduce(conn, stopping)
        try:
            data = os.read(conn.pipe, _RECV_SIZE)
        except BlockingIOError:
            return not stopping
        except OSError:
            data = b""
        if not data:
            self._disconnect(conn, stopping)
            return False
        self._received += len(data)
        return self._consume(conn, data)

    def _introduce(self, conn: _Connection, stopping: bool) -> bool:
        """Take a new connection's hello and pipe; from then on, read the pipe."""
        sock = conn.sock
        assert sock is not None
        try:
            data, ancillary, _, _ = sock.recvmsg(_codec.HELLO.size, socket.CMSG_SPACE(_FD_BYTES))
        except (BlockingIOError, InterruptedError):
            return not stopping
        except OSError:
            data, ancillary = b"", []
        fds = _received_fds(ancillary)
        if not data and not fds:  # gone before it said anything
            self._disconnect(conn, stopping)
            return False
        pipe = fds.pop(0) if fds else -1
        for extra in fds:
            os.close(extra)
        try:
            conn.route = _codec.parse_hello(data)
            if pipe < 0 or not _is_read_end(pipe):
                raise ValueError(f"pid {conn.pid} sent a hello without the read end of a pipe")
        except ValueError as exc:
            if pipe >= 0:
                os.close(pipe)
            return self._refuse(conn, str(exc))
        os.set_blocking(pipe, False)
        self._selector.unregister(sock)
        sock.close()
        conn.sock, conn.pipe = None, pipe
        self._selector.register(pipe, selectors.EVENT_READ, conn)
        return True

    def _consume(self, conn: _Connection, data: bytes) -> bool:
        pending = conn.pending
        start = 0  # where the frames that begin in this read start
        if pending:
            # First complete the frame an earlier read began. A text frame takes
            # only this read's bytes up to its end; the rest is parsed in place.
            if pending[0] == _codec.RECORD_START:
                start = len(data)
            else:
                start = data.find(_codec.TEXT_END) + 1
                if not start:  # still inside one long line: nothing to parse
                    pending += data
                    return self._check_unterminated(conn)
            pending += memoryview(data)[:start]
            pos = self._take_frames(pending, 0, conn)
            if pos < 0:
                return False
            if pos == len(pending):  # the listener may hold on to what it took: start afresh
                conn.pending = pending = bytearray()
            else:
                del pending[:pos]
        if start < len(data):  # pending is empty: the text frame it completed was taken
            pos = self._take_frames(data, start, conn)
            if pos < 0:
                return False
            pending += memoryview(data)[pos:]
        return self._check_unterminated(conn)

    def _take_frames(self, buf: "bytes | bytearray", pos: int, conn: _Connection) -> int:
        """Deliver every complete frame from ``pos``; return where the first
        incomplete one starts, or -1 if the connection was refused."""
        while pos < len(buf):
            if buf[pos] == _codec.RECORD_START:
                end = self._take_record(buf, pos, conn)
            else:
                end = self._take_texts(buf, pos, conn)
            if end <= pos:
                return end if end < 0 else pos
            pos = end
        return pos

    def _take_record(self, buf: "bytes | bytearray", pos: int, conn: _Connection) -> int:
        """Deliver the record frame at ``pos``; return where it ends, ``pos`` if
        it is incomplete, -1 if the connection was refused."""
        if len(buf) - pos < _codec.HEADER.size:
            return pos
        _, size = _codec.HEADER.unpack_from(buf, pos)
        if size > _codec.MAX_PAYLOAD:
            self._refuse(conn, f"pid {conn.pid} sent a {size}-byte frame (limit {_codec.MAX_PAYLOAD})")
            return -1
        end: int = pos + _codec.HEADER.size + size
        if end > len(buf):
            return pos
        self._deliver(buf[pos + _codec.HEADER.size : end], conn)
        return end

    def _take_texts(self, buf: "bytes | bytearray", pos: int, conn: _Connection) -> int:
        """Deliver the complete text frames from ``pos`` (up to the next record
        frame); return where they end, ``pos`` if there are none, -1 if the
        connection was refused."""
        record_at = buf.find(_RECORD_START_BYTE, pos)
        if record_at < 0:
            end = buf.rfind(_codec.TEXT_END, pos) + 1
            if end <= pos:
                return pos
        elif buf[record_at - 1 : record_at] == _codec.TEXT_END:
            end = record_at
        else:
            self._refuse(conn, f"pid {conn.pid} sent a text frame cut short by a record frame")
            return -1
        if type(buf) is bytes:
            # Long lines are passed on as views of this read, uncopied: copying
            # was most of the listener's work for 64 KiB records.
            view = memoryview(buf)
            while True:
                stop = buf.find(_codec.TEXT_END, pos, end) + 1
                if stop - pos < _LONG_FRAME:
                    break
                self._deliver_text(view[pos:stop], conn)
                pos = stop
                if pos == end:
                    return end
        self._deliver_text(buf if pos == 0 and end == len(buf) else buf[pos:end], conn)
        return end

    def _check_unterminated(self, conn: _Connection) -> bool:
        pending = conn.pending
        if len(pending) > _TEXT_FRAME_LIMIT and pending[0] != _codec.RECORD_START:
            return self._refuse(conn, f"pid {conn.pid} sent a line of over {_codec.MAX_PAYLOAD} bytes")
        return True

    def _refuse(self, conn: _Connection, why: str) -> bool:
        """Close a connection whose stream is not mplog's; return False."""
        self._report(f"{why}; connection closed")
        conn.pending = bytearray()
        self._disconnect(conn)
        return False

    def _deliver_text(self, frames: _codec.Frames, conn: _Connection) -> None:
        try:
            self._on_text(conn.route, frames)
        except Exception:  # a handler bug must not stop the listener
            sys.stderr.write("mplog: error while handling log lines:\n" + traceback.format_exc())

    def _deliver(self, payload: "bytes | bytearray", conn: _Connection) -> None:
        try:
            route, created, record, texts = _codec.decode(payload)
        except ValueError as exc:
            self._report(f"dropped a frame from pid {conn.pid}: {exc}")
            return
        try:
            self._on_frame(route, created, record, texts)
        except Exception:  # a handler or filter bug must not stop the listener
            sys.stderr.write("mplog: error while handling a record:\n" + traceback.format_exc())

    def _disconnect(self, conn: _Connection, stopping: bool = False) -> None:
        self._connections.discard(conn)
        try:
            self._selector.unregister(conn.channel())
        except (KeyError, ValueError):
            pass
        conn.close()
        if conn.pending:
            why = (
                "was cut off when the listener stopped (the sender got EPIPE and wrote it to its own stderr)"
                if stopping
                else "ended early: the process was probably killed while logging"
            )
            self._report(f"a record from pid {conn.pid} {why}; its {len(conn.pending)} bytes received were discarded")
            conn.pending = bytearray()

    def _drain(self) -> None:
        """Read everything sent before the stop.

        After ``shutdown`` of the listening socket new connections are refused,
        yet the backlog can still be accepted; after ``SHUT_RD`` on a connection
        that has not sent its pipe yet, the sender gets EPIPE, while a pipe it
        sent before stays readable. Each pipe is then drained and sealed (see
        :meth:`_drain_pipe`); only one that cannot be sealed within
        ``_DRAIN_SECONDS``, or without ``/proc``, is closed unsealed (and reported).
        """
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

    def _drain_pipe(self, conn: _Connection) -> None:
        """Read a pipe until its writer has closed it, or can add nothing more;
        then close it.

        A pipe cannot be shut down like a socket, and closing it while its
        writer still writes would lose what arrived after the last read. So,
        once a read leaves the pipe empty between two frames, the listener
        seals it (see :func:`_seal`): then no writer can add a byte, a later
        write blocks until the close and fails with EPIPE, and its sender falls
        back to stderr. If the writer got a byte in first, the seal writes
        nothing, and the listener reads on and tries again.
        """
        padder = -1
        deadline = time.monotonic() + _DRAIN_SECONDS
        try:
            while True:
                while self._read(conn, stopping=True) and time.monotonic() <= deadline:
                    pass
                if conn not in self._connections:  # at its end, and closed
                    return
                if time.monotonic() > deadline:
                    self._report_unsealed(conn, "it kept logging while the listener stopped")
                    break
                if conn.pending:  # the writer is in the middle of a frame
                    time.sleep(0.001)
                    continue
                if padder < 0:
                    padder = os.open(f"/proc/self/fd/{conn.pipe}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                if _seal(conn.pipe, padder):
                    break
        except OSError as exc:  # no /proc, say: close it now, unsealed
            self._report_unsealed(conn, f"it could not be sealed: {exc}")
        finally:
            if padder >= 0:
                os.close(padder)
        self._disconnect(conn, stopping=True)

    def _report_unsealed(self, conn: _Connection, why: str) -> None:
        self._report(
            f"the pipe of pid {conn.pid} was closed unsealed ({why}), so what it wrote since the last read may be lost"
        )

    def _report(self, message: str) -> None:
        try:
            self._report_record(_notice(message))
        except Exception:
            sys.stderr.write(f"mplog: {message}\n")


class _Route:
    """One group of handlers (the root logger's, or a named logger's) and the
    lines waiting to be written to its text handlers."""

    def __init__(self, handlers: Sequence[logging.Handler]) -> None:
        targets = [(handler, TextTarget.of(handler)) for handler in handlers]
        self.handlers = tuple(handlers)
        # Plain text handlers get lines the workers formatted; the listener
        # only writes them, once per wake-up. The rest get records.
        self.text_targets = tuple(target for _, target in targets if target is not None)
        self.writers = [_writer_for(handler) for handler, target in targets if target is not None]
        self.record_handlers = tuple(handler for handler, target in targets if target is None)
        self.pending: List[List[Tuple[float, str]]] = [[] for _ in self.writers]
        # A lone text handler that takes UTF-8 bytes gets text frames, written as they came.
        self.raw_errors: Optional[str] = None
        self.raw_pending: List[_codec.Frames] = []
        self.write_frames: Callable[[List[_codec.Frames]], None] = _no_frames
        if len(handlers) == 1 and self.text_targets and self.text_targets[0].raw_errors:
            self.raw_errors = self.text_targets[0].raw_errors
            self.write_frames = _frame_writer_for(handlers[0])


class QueueListener:
    """Owns the real handlers and feeds them every record put on the queue by
    any process: the mplog counterpart of ``logging.handlers.QueueListener``.

    Args:
        queue: the :class:`mplog.Queue` workers log to.
        *handlers: the handlers that do the writing; only the listener calls them.
        respect_handler_level: pass a record to a handler only if its level is
            at least the handler's level (as the stdlib listener does when asked).
        runner: ``"thread"`` (a daemon thread of this process) or ``"process"``
            (a process forked from this one, which ignores SIGINT and SIGTERM and
            stops when told to, or when this process dies).
        routes: more groups of handlers, for queues made with ``route=1, 2, ...``
            (``handlers`` serve route 0).

    Raises:
        ValueError: ``runner`` is not one of the above.
        TypeError: a handler is not a ``logging.Handler``.
    """

    def __init__(
        self,
        queue: Queue,
        *handlers: logging.Handler,
        respect_handler_level: bool = True,
        runner: str = "thread",
        routes: Sequence[Sequence[logging.Handler]] = (),
    ) -> None:
        if runner not in RUNNERS:
            raise ValueError(f"runner must be 'thread' or 'process', got {runner!r} ({type(runner).__name__})")
        for group in (handlers, *routes):
            for position, handler in enumerate(group):
                if not isinstance(handler, logging.Handler):
                    raise TypeError(
                        f"handler {position} must be a logging.Handler, got {handler!r} ({type(handler).__name__})"
                    )
        self.queue = queue
        self.handlers = handlers
        self.respect_handler_level = respect_handler_level
        self.runner = runner
        self._routes = [_Route(group) for group in (handlers, *routes)]
        #: Every handler the listener owns, each once.
        self.all_handlers: Tuple[logging.Handler, ...] = tuple(
            dict.fromkeys(handler for route in self._routes for handler in route.handlers)
        )
        self._owner_pid = 0
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._process_pid = 0
        self._control_r = -1
        self._control_w = -1
        self._busy = threading.RLock()
        self._held: List[threading.RLock] = []
        _fork.register(self)

    def start(self) -> None:
        """Start listening; returns once workers can connect.

        Raises:
            RuntimeError: the listener was already started.
            OSError: the socket cannot be created or bound.
        """
        if self._owner_pid:
            raise RuntimeError("this QueueListener was already started; create a new one")
        if self.runner == "thread":
            self._start_thread()
        else:
            self._start_process()
        self._owner_pid = os.getpid()

    def stop(self) -> None:
        """Handle every record sent before this call, then stop. Idempotent.

        Handlers are not closed (as with the stdlib listener), except in a
        listener process, which closes its own copies before it exits.
        """
        if self._owner_pid != os.getpid():
            return
        self._owner_pid = 0
        try:
            os.write(self._control_w, b"x")
        except OSError:  # the listener process is already gone
            pass
        os.close(self._control_w)
        if self._thread is not None:
            self._thread.join()
            self.queue._local = None
        else:
            self._reap_process()

    def reopen_files(self) -> None:
        """Close and reopen every file handler by name, e.g. after logrotate
        moved the files away (``mplog.FileHandler`` also notices that by itself).

        With a listener process, the request is sent to it and done there.
        """
        if self._process_pid and self._owner_pid == os.getpid():
            os.write(self._control_w, REOPEN)
            return
        for handler in self.all_handlers:
            if isinstance(handler, FileHandler):
                handler.reopen()
            elif isinstance(handler, logging.FileHandler):
                with handler.lock:  # type: ignore[union-attr]
                    if handler.stream is not None:
                        handler.stream.close()
                        handler.stream = handler._open()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Return the record to pass to the handlers; override to change it."""
        return record

    def handle(self, record: logging.LogRecord, route: int = 0) -> None:
        """Pass one record to every handler of ``route`` that wants it."""
        self._handle(self.prepare(record), self._routes[route].handlers)

    def _handle(self, record: logging.LogRecord, handlers: Sequence[logging.Handler]) -> None:
        for handler in handlers:
            if not self.respect_handler_level or record.levelno >= handler.level:
                handler.handle(record)

    def route_targets(self, route: int) -> Tuple[Tuple[TextTarget, ...], bool]:
        """What a worker needs for ``route``: the lines to format, and whether
        any handler needs the record itself."""
        return self._routes[route].text_targets, bool(self._routes[route].record_handlers)

    def _on_frame(
        self,
        route_number: int,
        created: float,
        record: Optional[logging.LogRecord],
        texts: Optional[Tuple[Optional[str], ...]],
    ) -> None:
        if not 0 <= route_number < len(self._routes):
            raise ValueError(f"a frame for route {route_number}; this listener has {len(self._routes)}")
        route = self._routes[route_number]
        if texts is None or len(texts) != len(route.pending):  # a worker that did not format
            if record is not None:
                self._handle(self.prepare(record), route.handlers)
            return
        if route.raw_errors is not None:  # keep the order of the text frames around it
            lines = [text + "\n" for text in texts if text is not None]
            route.raw_pending.append(_codec.text_frames(lines, route.raw_errors))
            return
        for pending, text in zip(route.pending, texts):
            if text is not None:
                pending.append((created, text))
        if record is not None:
            self._handle(self.prepare(record), route.record_handlers)

    def _on_text(self, route_number: int, frames: _codec.Frames) -> None:
        if not 0 <= route_number < len(self._routes):
            raise ValueError(f"text frames for route {route_number}; this listener has {len(self._routes)}")
        route = self._routes[route_number]
        if route.raw_errors is not None:
            route.raw_pending.append(frames)
            return
        # Not expected (a worker decides by the same config), but not to be lost either.
        for line in bytes(frames).split(_codec.TEXT_END)[:-1]:
            text = line.decode("utf-8", "backslashreplace").rstrip("\n")
            for pending in route.pending:
                pending.append((time.time(), text))

    def _write_pending(self) -> None:
        for route in self._routes:
            if route.raw_pending:
                frames, route.raw_pending = route.raw_pending, []
                route.write_frames(frames)
            for write, pending in zip(route.writers, route.pending):
                if pending:
                    write(pending)
                    pending.clear()

    # --- thread runner ---------------------------------------------------

    def _start_thread(self) -> None:
        self._server = self._new_server()
        self._control_r, self._control_w = os.pipe()
        self.queue._local = (os.getpid(), self.handle)
        self._thread = threading.Thread(target=self._run_thread, name="mplog-listener", daemon=True)
        self._thread.start()

    def _new_server(self) -> _Server:
        return _Server(self.queue.address, self._on_frame, self._on_text, self._write_pending, self.handle)

    def _run_thread(self) -> None:
        assert self._server is not None
        try:
            self._server.serve(self._control_r, self._busy, self.reopen_files)
        except BaseException:
            sys.stderr.write("mplog: the listener thread failed; workers now log to stderr:\n" + traceback.format_exc())
        finally:
            self._server.close()
            os.close(self._control_r)

    # --- process runner --------------------------------------------------

    def _start_process(self) -> None:
        ready_r, ready_w = os.pipe()
        control_r, control_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the listener process; it never returns from here
            os.close(ready_r)
            os.close(control_w)
            self._serve_as_process(ready_w, control_r)
        os.close(ready_w)
        os.close(control_r)
        self._process_pid, self._control_w = pid, control_w
        answer = _read_all(ready_r, _READY_SECONDS)
        if answer != b"ready":
            self._control_w = -1
            os.close(control_w)
            self._reap_process()
            detail = answer.decode(errors="replace") or f"no answer in {_READY_SECONDS:.0f} s"
            raise OSError(f"the mplog listener process failed to start: {detail}")

    def _serve_as_process(self, ready_w: int, control_r: int) -> None:
        status = 1
        try:
            # The parent decides when we stop; a Ctrl-C or a SIGTERM sent to the
            # whole process group must not lose what is still to be written.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.queue._local = (os.getpid(), self.handle)
            try:
                server = self._new_server()
            except BaseException as exc:
                os.write(ready_w, f"{type(exc).__name__}: {exc}".encode())
                raise
            os.write(ready_w, b"ready")
            os.close(ready_w)
            try:
                server.serve(control_r, self._busy, self.reopen_files)
            finally:
                server.close()
            status = 0
        except BaseException:
            sys.stderr.write("mplog: the listener process failed:\n" + traceback.format_exc())
        finally:
            for handler in self.all_handlers:
                try:
                    handler.flush()
                    handler.close()
                except Exception:
                    pass
            os._exit(status)

    def _reap_process(self) -> None:
        try:
            _, status = os.waitpid(self._process_pid, 0)
        except ChildProcessError:  # someone else reaped it (a SIGCHLD handler)
            status = 0
        # A listener process that was killed could not remove its socket.
        remove_address(self.queue.address)
        if os.WIFSIGNALED(status):
            sys.stderr.write(
                f"mplog: the listener process {self._process_pid} had been killed by signal "
                f"{os.WTERMSIG(status)}; workers fell back to stderr\n"
            )

    # --- fork participation ------------------------------------------------

    def _running_thread_here(self) -> bool:
        return self._thread is not None and self._owner_pid == os.getpid()

    def _before_fork(self) -> None:
        # Let the listener thread and every handler finish what they are
        # writing, so the child never inherits a stream lock held by a thread
        # that does not exist in it. Bounded: a stuck handler delays a fork by
        # at most _QUIESCE_SECONDS.
        if not self._running_thread_here():
            return
        deadline = time.monotonic() + _QUIESCE_SECONDS
        locks = [self._busy] + [h.lock for h in self.all_handlers if h.lock is not None]
        for lock in locks:
            if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                self._held.append(lock)

    def _after_fork_in_parent(self) -> None:
        held, self._held = self._held, []
        for lock in reversed(held):
            lock.release()

    def _after_fork_in_child(self) -> None:
        self._held = []
        if self._owner_pid == 0 or self._owner_pid == os.getpid():
            return
        # This child is a worker: the listener and its handlers stay the
        # parent's. Close our copies of its descriptors (so the parent's death
        # is seen as EOF/EPIPE) and never flush or close the handlers here.
        if self._server is not None:
            self._server.close_in_child()
        for fd in (self._control_r, self._control_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        owned = set(self.all_handlers)
        logging._handlerList[:] = [ref for ref in logging._handlerList if ref() not in owned]  # type: ignore[attr-defined]
        _fork.keep_alive(self.all_handlers)
        self._owner_pid = 0
        self._server = None
        self._thread = None
        self._process_pid = 0
        self._control_r = self._control_w = -1


Writer = Callable[[List[Tuple[float, str]]], None]


def _writer_for(handler: logging.Handler) -> Writer:
    """How the listener writes preformatted lines to a text handler."""
    if isinstance(handler, FileHandler):  # files each line by its time
        return handler.write_lines
    assert isinstance(handler, logging.StreamHandler)  # TextTarget.of admits nothing else
    return functools.partial(_write_to_stream, handler)


def _no_frames(frames: List[_codec.Frames]) -> None:
    raise AssertionError("text frames for a route that does not take them")  # _on_text routes them elsewhere


def _frame_writer_for(handler: logging.Handler) -> Callable[[List[_codec.Frames]], None]:
    """How the listener writes text frames to a handler whose target has ``raw_errors``."""
    if isinstance(handler, FileHandler):
        return handler.write_frames
    assert isinstance(handler, logging.StreamHandler)
    return functools.partial(_write_frames_to_stream, handler)


def _write_frames_to_stream(handler: logging.StreamHandler, frames: List[_codec.Frames]) -> None:  # type: ignore[type-arg]
    """Write text frames to a handler's stream as bytes, under its lock."""
    texts = _codec.frame_texts(frames)
    with handler.lock:  # type: ignore[union-attr]
        try:
            if handler.stream is None:  # a FileHandler opened with delay=True
                handler.stream = handler._open()  # type: ignore[attr-defined]
            stream = handler.stream
            stream.flush()  # whatever the listener's own process wrote as text goes first
            if type(stream) is io.TextIOWrapper and codecs.lookup(stream.encoding).name == "utf-8":
                stream.buffer.writelines(texts)  # a long line bypasses the buffer, uncopied
                stream.buffer.flush()
            else:  # the stream was replaced since setup(): hand it text
                stream.write(b"".join(texts).decode("utf-8", "backslashreplace"))
                stream.flush()
        except Exception:
            lines = b"".join(texts).count(b"\n")
            handler.handleError(_notice(f"mplog: writing {lines} lines to {handler!r} failed"))


def _write_to_stream(handler: logging.StreamHandler, lines: List[Tuple[float, str]]) -> None:  # type: ignore[type-arg]
    """Write preformatted lines as ``StreamHandler.emit`` would: in one write, or
    in pieces of about WRITE_CHUNK characters when they are many and large (a
    text stream encodes one huge string several times slower than a few
    smaller ones: 64 KiB lines, 256 at a time, measured 5x slower)."""
    terminator = handler.terminator
    texts = [text for _, text in lines]
    with handler.lock:  # type: ignore[union-attr]
        try:
            if handler.stream is None:  # a FileHandler opened with delay=True
                handler.stream = handler._open()  # type: ignore[attr-defined]
            if sum(map(len, texts)) <= WRITE_CHUNK:
                handler.stream.write(terminator.join(texts) + terminator)
            else:
                group: List[str] = []
                size = 0
                for text in texts:
                    group.append(text)
                    size += len(text)
                    if size >= WRITE_CHUNK:
                        handler.stream.write(terminator.join(group) + terminator)
                        group, size = [], 0
                if group:
                    handler.stream.write(terminator.join(group) + terminator)
            handler.stream.flush()
        except Exception:
            handler.handleError(_notice(f"mplog: writing {len(lines)} lines to {handler!r} failed"))


def _received_fds(ancillary: List[Tuple[int, int, bytes]]) -> List[int]:
    """The file descriptors passed in ``recvmsg`` ancillary data."""
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _is_read_end(fd: int) -> bool:
    return stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY


def _seal(pipe: int, padder: int) -> bool:
    """Make an empty ``pipe`` full, so no writer can add to it; return whether
    it worked (if a writer wrote first, nothing is done and it is still open).

    The pipe is shrunk to one page (the kernel refuses while it holds more),
    then ``padder``, a non-blocking write end, writes one page of padding in one
    write: into an empty one-page pipe that fits whole, and into a pipe holding
    any byte of a writer's it writes nothing, since the page it would need is
    taken. So padding never lands among a writer's frames, and the listener
    never reads it: a sealed pipe is closed unread.
    """
    try:
        capacity = fcntl.fcntl(pipe, F_SETPIPE_SZ, 1)  # the kernel rounds up to one page
        return os.write(padder, bytes(capacity)) == capacity
    except OSError as exc:  # EBUSY: it holds bytes again; EAGAIN: its page is taken
        if exc.errno in (errno.EBUSY, errno.EAGAIN):
            return False
        raise


def _read_all(fd: int, timeout: float) -> bytes:
    """Read from a pipe until EOF or ``timeout`` seconds, then close it."""
    chunks = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while selector.select(max(0.0, deadline - time.monotonic())):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)
