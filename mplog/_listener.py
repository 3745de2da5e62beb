"""The listener: the one place where the real handlers run.

:class:`QueueListener` owns the handlers, grouped in routes (the root
logger's, and one per named logger it took over); its :class:`~mplog._server.Server`
hands it every frame the workers send. It runs as a thread of the process that
started it, or as a process of its own forked from it, and takes part in every
fork so that a child never inherits a handler lock held mid-write.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple, Union

from . import _codec, _fork, _stderr
from ._address import remove_address
from ._config import check_handlers, check_worker_user
from ._handler import FALLBACK_FORMAT, render_message
from ._queue import Queue
from ._routes import Route
from ._server import REOPEN, Server
from ._writers import notice, reopen

__all__ = ["RUNNERS", "QueueListener"]

RUNNERS = ("thread", "process")
# How long a fork waits for the listener thread and handlers to go idle.
_QUIESCE_SECONDS = 2.0
_READY_SECONDS = 30.0
# A record logged while the handlers handle a record that was itself logged by
# a handler is this deep: it goes to stderr, formatted as a worker's records
# are when the listener is gone.
_RECURSION_DEPTH = 2
_stderr_formatter = logging.Formatter(FALLBACK_FORMAT)


class _Nesting:
    """How many records a thread is passing to the handlers through
    ``handle()``, one inside another, and whether it is the thread that reads
    the workers' frames."""

    __slots__ = ("depth", "serving")

    def __init__(self) -> None:
        self.depth = 0
        self.serving = False


class _PerThread(threading.local):
    """Each thread's :class:`_Nesting`: one thread-local lookup per record,
    the rest plain attribute access (several thread-local ones cost ~4x more)."""

    def __init__(self) -> None:
        self.nesting = _Nesting()


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
        worker_user: a user name or uid whose processes may log here too,
            for workers that drop privileges (see :func:`mplog.setup`).

    Raises:
        ValueError: ``runner`` is not one of the above, or ``worker_user``
            names no user.
        TypeError: a handler is not a ``logging.Handler``, or ``worker_user``
            is neither a str nor an int.
    """

    def __init__(
        self,
        queue: Queue,
        *handlers: logging.Handler,
        respect_handler_level: bool = True,
        runner: str = "thread",
        routes: Sequence[Sequence[logging.Handler]] = (),
        worker_user: Union[str, int, None] = None,
    ) -> None:
        if runner not in RUNNERS:
            raise ValueError(f"runner must be 'thread' or 'process', got {runner!r} ({type(runner).__name__})")
        check_handlers(handlers, "QueueListener")
        for number, group in enumerate(routes, 1):
            check_handlers(group, f"QueueListener route {number}")
        self._worker_uid = check_worker_user(worker_user)
        self.queue = queue
        self.handlers = handlers
        self.respect_handler_level = respect_handler_level
        self.runner = runner
        self._routes = [Route(group) for group in (handlers, *routes)]
        #: Every handler the listener owns, each once.
        self.all_handlers: Tuple[logging.Handler, ...] = tuple(
            dict.fromkeys(handler for route in self._routes for handler in route.handlers)
        )
        self._owner_pid = 0
        self._server: Optional[Server] = None
        self._thread: Optional[threading.Thread] = None
        self._process_pid = 0
        self._control_r = -1
        self._control_w = -1
        self._busy = threading.RLock()
        self._held: List[threading.RLock] = []
        self._per_thread = _PerThread()
        # 1 while the thread that reads frames passes a worker's record to the
        # handlers: a plain attribute, cheaper than a thread-local on that path.
        self._frame_depth = 0
        self._recursion_reported = False
        #: Run in a listener process before it serves: mplog.setup() routes
        #: that process's own logging (a handler's) to its handlers there, as a
        #: listener thread's process does.
        self._in_listener_process: Optional[Callable[[], None]] = None
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
            self.queue._deliver_here(None)
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
            reopen(handler)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Return the record to pass to the handlers; override to change it."""
        return record

    def handle(self, record: logging.LogRecord, route: int = 0) -> None:
        """Pass one record to every handler of ``route`` that wants it.

        A record that a handler (or its filter or formatter) logs while it
        handles one comes here as well, and is handled as any other, once; a
        record logged while handling such a record goes to stderr instead, so
        that a handler logging for every record it handles stops there.
        """
        nesting = self._per_thread.nesting
        depth = nesting.depth
        if nesting.serving:
            depth += self._frame_depth
            if depth:
                # Logged by a handler while handling a worker's record: the lines
                # held for the text handlers (that record's among them) go first.
                self._write_pending()
        if depth >= _RECURSION_DEPTH:
            self._to_stderr(record)
            return
        target = self._routes[route]
        nesting.depth += 1
        try:
            if target.renders_tracebacks:
                self._deliver_tracebacks(record, target, target.handlers)
            else:
                self._handle(self.prepare(record), target.handlers)
        finally:
            nesting.depth -= 1

    def _deliver_tracebacks(self, record: logging.LogRecord, route: Route, handlers: Sequence[logging.Handler]) -> None:
        """Pass ``record`` to ``handlers`` of a route where some formatters
        render tracebacks their own way: each handler gets the traceback its
        formatter rendered in the worker, the others the record's ``exc_text``."""
        tracebacks = record.__dict__.pop(_codec.TRACEBACKS, None)
        record = self.prepare(record)
        if type(tracebacks) is not tuple or len(tracebacks) != len(route.handlers):  # none, or cut with its frame
            self._handle(record, handlers)
            return
        own = {id(handler): text for handler, text in zip(route.handlers, tracebacks)}
        shared = record.exc_text
        try:
            for handler in handlers:
                if not self.respect_handler_level or record.levelno >= handler.level:
                    text = own.get(id(handler))
                    record.exc_text = shared if text is None else text
                    handler.handle(record)
        finally:
            record.exc_text = shared

    def _handle(self, record: logging.LogRecord, handlers: Sequence[logging.Handler]) -> None:
        for handler in handlers:
            if not self.respect_handler_level or record.levelno >= handler.level:
                handler.handle(record)

    def _to_stderr(self, record: logging.LogRecord) -> None:
        """Write a record that must not reach the handlers on stderr."""
        if not self._recursion_reported:
            self._recursion_reported = True
            _stderr.report(
                "a handler logged while the handlers handled a record that a handler had logged; "
                "records that deep go to stderr instead, so that a handler logging for every record "
                "it handles does not recurse without end"
            )
        try:
            line = _stderr_formatter.format(record)
        except Exception:  # fields the format cannot take (a process of None, say): the message at least
            line = render_message(record)
        _stderr.write_lines([line])

    def _route(self, number: int) -> Route:
        if not 0 <= number < len(self._routes):
            raise ValueError(f"a frame for route {number}; this listener has {len(self._routes)}")
        return self._routes[number]

    def _on_frame(
        self,
        route: int,
        created: float,
        record: Optional[logging.LogRecord],
        texts: Optional[Tuple[Optional[str], ...]],
    ) -> None:
        target = self._route(route)
        handlers = target.take(created, record, texts)
        if record is not None and handlers:
            self._frame_depth = 1
            try:
                if target.renders_tracebacks:
                    self._deliver_tracebacks(record, target, handlers)
                else:
                    self._handle(self.prepare(record), handlers)
            finally:
                self._frame_depth = 0

    def _on_text(self, route: int, frames: _codec.Frames) -> None:
        self._route(route).take_text(frames)

    def _write_pending(self) -> None:
        for route in self._routes:
            route.write_pending()

    # --- thread runner ---------------------------------------------------

    def _start_thread(self) -> None:
        self._server = self._new_server()
        self._control_r, self._control_w = os.pipe()
        self.queue._deliver_here(self.handle)
        self._thread = threading.Thread(target=self._run_thread, name="mplog-listener", daemon=True)
        self._thread.start()

    def _new_server(self) -> Server:
        return Server(
            self.queue.address, self._on_frame, self._on_text, self._write_pending, self._report, self._worker_uid
        )

    def _report(self, message: str) -> None:
        """Write one of mplog's own notices into the log."""
        self.handle(notice(message))

    def _run_thread(self) -> None:
        assert self._server is not None
        self._per_thread.nesting.serving = True
        try:
            self._server.serve(self._control_r, self._busy, self.reopen_files)
        except BaseException:
            _stderr.report_exception("the listener thread failed; workers now log to stderr")
        finally:
            self._server.close()
            os.close(self._control_r)

    # --- process runner --------------------------------------------------

    def _start_process(self) -> None:
        ready_r, ready_w = os.pipe()
        control_r, control_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # at the user's process limit, say: keep no pipe of it
            for fd in (ready_r, ready_w, control_r, control_w):
                os.close(fd)
            raise
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
            self.queue._deliver_here(self.handle)
            try:
                if self._in_listener_process is not None:
                    self._in_listener_process()
                server = self._new_server()
            except BaseException as exc:
                os.write(ready_w, f"{type(exc).__name__}: {exc}".encode())
                raise
            os.write(ready_w, b"ready")
            os.close(ready_w)
            self._per_thread.nesting.serving = True
            try:
                server.serve(control_r, self._busy, self.reopen_files)
            finally:
                server.close()
            status = 0
        except BaseException:
            _stderr.report_exception("the listener process failed")
        finally:
            for handler in self.all_handlers:
                try:
                    handler.flush()
                    handler.close()
                except Exception:
                    _stderr.report_exception(f"the listener process could not close {handler!r}")
            os._exit(status)

    def _reap_process(self) -> None:
        try:
            _, status = os.waitpid(self._process_pid, 0)
        except ChildProcessError:  # someone else reaped it (a SIGCHLD handler)
            status = 0
        # A listener process that was killed could not remove its socket.
        remove_address(self.queue.address)
        if os.WIFSIGNALED(status):
            _stderr.report(
                f"the listener process {self._process_pid} had been killed by signal "
                f"{os.WTERMSIG(status)}; workers fell back to stderr"
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
