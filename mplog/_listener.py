"""The listener: the one place where the real handlers run.

:class:`QueueListener` owns the handlers, grouped in routes (the root logger's,
and one per named logger it took over), each handler running in a lane of its
own (see :mod:`mplog._lanes`); its :class:`~mplog._server.Server` hands it every
frame the workers send. It runs as a thread of the process that started it,
or as a process of its own forked from it, and takes part in every fork so that
a child never inherits a handler lock held mid-write.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import threading
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

from . import _codec, _fork, _handled, _stderr
from ._address import claim_address, remove_address
from ._adoption import Adoption
from ._config import check_handlers, check_seconds, check_worker_user
from ._dispatch import Dispatcher, lane_depth
from ._forking import ForkParticipation
from ._handler import FALLBACK_FORMAT, render_message
from ._lanes import STALL_SECONDS, join_lanes, joined, wait_while_progressing
from ._queue import Queue
from ._reaping import close_handlers, read_all, reap_listener_process
from ._recipes import Recipe
from ._routes import Route
from ._server import REOPEN, Server
from ._writers import notice

__all__ = ["DRAIN_TIMEOUT", "RUNNERS", "QueueListener"]

RUNNERS = ("thread", "process")
#: How long stopping waits, by default, for the handlers to handle what was sent.
DRAIN_TIMEOUT = 10.0
# How long starting waits for a listener process to say it is ready.
_READY_SECONDS = 30.0
# How much longer than its drain a stopping listener process may take to exit.
_EXIT_MARGIN_SECONDS = 2.0
_stderr_formatter = logging.Formatter(FALLBACK_FORMAT)


class QueueListener(ForkParticipation, logging.handlers.QueueListener):
    """Owns the real handlers and feeds them every record put on the queue by
    any process: the mplog counterpart of ``logging.handlers.QueueListener``.

    Given any other queue (``queue.Queue``, ``multiprocessing.Queue``, ...),
    it is the stdlib's listener, as on this Python, and nothing below applies.

    Each handler runs in a thread of its own, so no logging call, in any
    process, ever runs a handler or waits on one; a slow handler slows the
    senders down (back-pressure), and one that has not returned for
    ``stall_timeout`` seconds is reported and records for it are dropped and
    counted while its backlog is full, without holding up the others.

    Args:
        queue: the :class:`mplog.Queue` workers log to; ``None``: a new one.
        *handlers: the handlers that do the writing; only the listener calls them.
        respect_handler_level: pass a record to a handler only if its level is
            at least the handler's level; by default (as with the stdlib's
            listener) every handler gets every record.
        runner: ``"thread"`` (a daemon thread of this process) or ``"process"``
            (a process forked from this one, which ignores SIGINT and SIGTERM and
            stops when told to, or when this process dies).
        routes: more groups of handlers, for queues made with ``route=1, 2, ...``
            (``handlers`` serve route 0).
        worker_user: a user name or uid whose processes may log here too,
            for workers that drop privileges (see :func:`mplog.setup`).
        drain_timeout: :meth:`stop` waits for the handlers to handle what was
            sent before it as long as they keep returning, and gives up on a
            handler whose call has not returned for this many seconds.
        stall_timeout: seconds after which a handler's call that has not
            returned counts as stalled.

    Raises:
        ValueError: ``runner`` is not one of the above, ``worker_user``
            names no user, or a timeout is not a positive number of seconds.
        TypeError: a handler is not a ``logging.Handler``, ``worker_user``
            is neither a str nor an int, or a timeout is not a number.
    """

    queue: Queue  # type: ignore[assignment]  # (or another queue, which only the stdlib's methods touch)

    def __init__(
        self,
        queue: Any,
        *handlers: logging.Handler,
        respect_handler_level: bool = False,
        runner: str = "thread",
        routes: Sequence[Sequence[logging.Handler]] = (),
        worker_user: Union[str, int, None] = None,
        drain_timeout: float = DRAIN_TIMEOUT,
        stall_timeout: float = STALL_SECONDS,
    ) -> None:
        if runner not in RUNNERS:
            raise ValueError(f"runner must be 'thread' or 'process', got {runner!r} ({type(runner).__name__})")
        check_handlers(handlers, "QueueListener")
        for number, group in enumerate(routes, 1):
            check_handlers(group, f"QueueListener route {number}")
        self._worker_uid = check_worker_user(worker_user)
        self.drain_timeout = check_seconds("drain_timeout", drain_timeout)
        self.stall_timeout = check_seconds("stall_timeout", stall_timeout)
        super().__init__(Queue() if queue is None else queue, *handlers, respect_handler_level=respect_handler_level)  # type: ignore[arg-type]
        self._foreign = not isinstance(self.queue, Queue)  # the stdlib's listener, on a queue of its kind
        self.runner = runner
        self._routes = [Route(group) for group in (handlers, *routes)]
        #: Every handler the listener owns, each once.
        self.all_handlers: Tuple[logging.Handler, ...] = tuple(
            dict.fromkeys(handler for route in self._routes for handler in route.handlers)
        )
        self._owner_pid = 0
        self._server: Optional[Server] = None
        self._dispatcher: Optional[Dispatcher] = None
        self._thread: Optional[threading.Thread] = None
        self._server_thread = 0  # the ident of the thread that serves
        self._process_pid = 0
        self._control_r = -1
        self._control_w = -1
        # Held while frames are read and handed on: by the serving thread, and
        # by a logging call of this process that hands its record on.
        self._busy = threading.RLock()
        self._sweeping = 0  # the ident of the thread handing on under _busy
        self._held: List[threading.RLock] = []
        # Records logged in a lane (by a handler), for the serving thread.
        self._inbox: Deque[Tuple[logging.LogRecord, int]] = collections.deque()
        self._recursion_reported = False
        #: The handlers whose call had not returned when stop() gave up on
        #: them: nothing may wait for their locks (to close them, say).
        self.stuck_handlers: Tuple[logging.Handler, ...] = ()
        #: Run in a listener process before it serves: mplog.setup() routes
        #: that process's own logging (a handler's) to its handlers there, as a
        #: listener thread's process does.
        self._in_listener_process: Optional[Callable[[], None]] = None
        # The files processes ask it to take over: the handlers given are theirs too.
        self._adoption = Adoption(self._add_route, self.all_handlers)
        _fork.register(self)

    def start(self) -> None:
        """Start listening; returns once workers can connect. A listener
        stopped may start again: it serves the same address again.

        Raises:
            RuntimeError: the listener is running already, or another
                listener serves its queue's address.
            OSError: the socket cannot be created or bound.
        """
        if self._foreign:
            super().start()
            return
        if self._owner_pid:
            raise RuntimeError(f"this QueueListener is serving {self.queue.address!r} already; stop() it first")
        claim_address(self.queue.address)
        try:
            self._start_thread() if self.runner == "thread" else self._start_process()
        except BaseException:
            remove_address(self.queue.address)  # claimed above: nobody else serves it
            raise
        self._owner_pid = os.getpid()

    def stop(self) -> None:
        """Handle every record sent before this call, then stop. Idempotent.

        Waits as long as the handlers keep returning; a handler whose call has
        not returned for ``drain_timeout`` seconds is given up on, and what it
        has not handled is counted and said on stderr. Handlers are not closed (as with the stdlib
        listener), except in a listener process, which closes its own copies
        before it exits.
        """
        if self._foreign:
            super().stop()
            return
        if self._owner_pid != os.getpid():
            return
        self._owner_pid = 0
        try:
            os.write(self._control_w, b"x")
        except OSError:  # the listener process is already gone
            pass
        os.close(self._control_w)
        if self._thread is not None:
            dispatcher = self._dispatcher
            lanes = list(dispatcher.lanes.values()) if dispatcher is not None else []
            wait_while_progressing(joined(self._thread), lanes, self.drain_timeout)
            # Records the handlers log while they finish still come here: the
            # address is gone with the serving thread.
            self._finish_lanes()
            self.queue._deliver_here(None)
        else:
            reap_listener_process(self._process_pid, self.drain_timeout + _EXIT_MARGIN_SECONDS, self.queue.address)

    def reopen_files(self) -> None:
        """Close and reopen every file handler by name, e.g. after logrotate
        moved the files away (``mplog.FileHandler`` also notices that by itself).

        Each handler does it in its turn, after what was sent before; with a
        listener process, the request is sent to it and done there.
        """
        if self._process_pid and self._owner_pid == os.getpid():
            os.write(self._control_w, REOPEN)
            return
        dispatcher = self._dispatcher
        if dispatcher is not None:
            with self._busy:
                dispatcher.reopen_files()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """Return the record to pass to the handlers; override to change it."""
        return record

    def handle(self, record: logging.LogRecord, route: int = 0) -> None:
        """Pass one record logged in this process to every handler of
        ``route`` that wants it, after everything the workers wrote before
        this call. Never runs a handler: the handlers' own threads do.

        A record that a handler (or its filter or formatter) logs while it
        handles one is handled as any other, once; a record logged while
        handling such a record goes to stderr instead, so that a handler
        logging for every record it handles stops there.
        """
        if self._foreign:
            super().handle(record)
            return
        depth = lane_depth()
        if depth is not None:  # logged by a handler, in its lane
            self._from_lane(record, route, depth)
            return
        dispatcher = self._dispatcher
        if dispatcher is None:  # stopped (a record between stop() and the handler's removal)
            self._to_stderr(record)
            return
        with self._busy:
            if self._sweeping or threading.get_ident() == self._server_thread:
                # Serving, or a signal handler interrupted this thread while it
                # handed a record on: hand it on without reading the pipes.
                dispatcher.deliver(record, route, nested=False)
                return
            self._sweeping = threading.get_ident()
            try:
                # Whatever any process wrote before this call goes first.
                if self._server is not None:
                    self._server.catch_up()
                dispatcher.deliver(record, route, nested=False)
            finally:
                self._sweeping = 0

    def _from_lane(self, record: logging.LogRecord, route: int, depth: int) -> None:
        """A record logged by a handler: for the serving thread to hand on
        (never waited for here: it may be this very lane that is full)."""
        if depth >= 1:
            self._to_stderr(record)
            return
        self._inbox.append((record, route))
        server = self._server
        if server is not None:
            server.wake()

    def _to_stderr(self, record: logging.LogRecord) -> None:
        """Write a record that must not reach the handlers on stderr."""
        if not self._recursion_reported and self._dispatcher is not None:
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

    # --- what the server hands on (the Sink protocol) ----------------------

    def on_frame(
        self,
        route: int,
        created: float,
        record: Optional[logging.LogRecord],
        texts: Optional[Tuple[Optional[str], ...]],
        size: int,
    ) -> None:
        """A record frame from a process."""
        assert self._dispatcher is not None
        self._dispatcher.on_frame(route, created, record, texts, size)

    def on_text(self, route: int, frames: _codec.Frames) -> None:
        """Text frames from a process."""
        assert self._dispatcher is not None
        self._dispatcher.on_text(route, frames)

    def has_route(self, route: int) -> bool:
        """Whether ``route`` is one of this listener's."""
        dispatcher = self._dispatcher
        return dispatcher is not None and 0 <= route < len(dispatcher.routes)

    def on_batch_end(self) -> None:
        """Pass on the lines gathered and the records handlers logged; say
        once which handler has stalled."""
        dispatcher = self._dispatcher
        assert dispatcher is not None
        dispatcher.hand_over()
        self._deliver_inbox(dispatcher)
        for lane in dispatcher.lanes.values():
            lane.check_stall()

    def _deliver_inbox(self, dispatcher: Dispatcher) -> None:
        """Hand on the records handlers have logged (under ``_busy``)."""
        inbox = self._inbox
        while inbox:
            record, route = inbox.popleft()
            dispatcher.deliver(record, route, nested=True)

    def on_sync(self, sock: socket.socket) -> None:
        """Answer ``sock`` once everything handed on so far is handled."""
        self.pass_marker(lambda: _handled.answer_handled(sock))

    def pass_marker(self, on_passed: Callable[[], None]) -> None:
        """Run ``on_passed`` once everything handed on so far is handled
        (call in the serving thread, or holding ``busy``)."""
        assert self._dispatcher is not None
        self.on_batch_end()
        self._dispatcher.pass_marker(on_passed)

    def on_declare(self, sock: socket.socket, header: bytes) -> None:
        """A process asks to have a file handler taken over."""
        self._adoption.answer_later(sock, header)

    def declare(self, recipe: Recipe) -> Dict[str, Any]:
        """Take over the file handler ``recipe`` describes, for a process
        that does not need the socket to ask (this one, with a listener thread)."""
        return self._adoption.declare(recipe)

    def _add_route(self, handler: logging.Handler) -> int:
        """Serve a route of ``handler`` alone from now on; return its number.

        Raises:
            ValueError: the listener is not running.
        """
        dispatcher = self._dispatcher
        if dispatcher is None:
            raise ValueError("the listener is not running")
        if handler not in self.all_handlers:
            self.all_handlers += (handler,)
        return dispatcher.add_route(Route([handler]))

    def on_stopping(self) -> None:
        """Stopping: nothing waits for a handler whose call has gone on for ``drain_timeout``."""
        assert self._dispatcher is not None
        for lane in self._dispatcher.lanes.values():
            lane.stopping(self.drain_timeout)

    def report(self, message: str) -> None:
        """Write one of mplog's own notices into the log."""
        self.handle(notice(message))

    def _on_resumed(self, message: str) -> None:
        """A stalled handler returned: say so in the log, from its lane."""
        self.handle(notice(message))

    def _new_dispatcher(self) -> Dispatcher:
        return Dispatcher(self._routes, self.respect_handler_level, self.prepare, self.stall_timeout, self._on_resumed)

    def _finish_lanes(self) -> Tuple[logging.Handler, ...]:
        """Let every lane handle what it holds, as long as its handler keeps
        returning (see ``drain_timeout``); say on stderr what each handler
        still stuck has not handled. Return the handlers that finished."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return ()
        # What the handlers log while they handle the last records is handed
        # on too (a record logged while handling one of those goes to stderr,
        # so this ends).
        while True:
            handled = threading.Event()
            with self._busy:
                self._deliver_inbox(dispatcher)
                dispatcher.pass_marker(handled.set)
            lanes = list(dispatcher.lanes.values())
            if not wait_while_progressing(handled.wait, lanes, self.drain_timeout) or not self._inbox:
                break
        with self._busy:
            self._dispatcher = None
            for lane in dispatcher.lanes.values():
                lane.stop()
        finished, stuck = join_lanes(dispatcher.lanes, self.drain_timeout)
        self.stuck_handlers += stuck
        return finished

    # --- thread runner ---------------------------------------------------

    def _start_thread(self) -> None:
        self._dispatcher = self._new_dispatcher()
        self._server = self._new_server()
        self._control_r, self._control_w = os.pipe()
        self.queue._deliver_here(self.handle)
        self._thread = threading.Thread(target=self._run_thread, name="mplog-listener", daemon=True)
        self._thread.start()

    def _new_server(self) -> Server:
        return Server(self.queue.address, self, self.drain_timeout, self._worker_uid)

    def _run_thread(self) -> None:
        server = self._server
        assert server is not None
        self._server_thread = threading.get_ident()
        try:
            server.serve(self._control_r, self._busy, self.reopen_files)
        except BaseException:
            _stderr.report_exception("the listener thread failed; workers now log to stderr")
        finally:
            with self._busy:  # a logging call of this process may be reading the pipes
                self._server = None
                server.close()
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
        answer = read_all(ready_r, _READY_SECONDS)
        if answer != b"ready":
            self._control_w = -1
            os.close(control_w)
            reap_listener_process(pid, float("inf"), self.queue.address)
            detail = answer.decode(errors="replace") or f"no answer in {_READY_SECONDS:.0f} s"
            raise OSError(f"the mplog listener process failed to start: {detail}")

    def _serve_as_process(self, ready_w: int, control_r: int) -> None:
        status = 1
        finished: Tuple[logging.Handler, ...] = ()
        try:
            # The parent decides when we stop; a Ctrl-C or a SIGTERM sent to the
            # whole process group must not lose what is still to be written.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.queue._deliver_here(self.handle)
            self._server_thread = threading.get_ident()
            try:
                self._dispatcher = self._new_dispatcher()
                if self._in_listener_process is not None:
                    self._in_listener_process()
                server = self._server = self._new_server()
            except BaseException as exc:
                os.write(ready_w, f"{type(exc).__name__}: {exc}".encode())
                raise
            os.write(ready_w, b"ready")
            os.close(ready_w)
            try:
                server.serve(control_r, self._busy, self.reopen_files)
            finally:
                self._server = None
                server.close()
            finished = self._finish_lanes()
            status = 0
        except BaseException:
            _stderr.report_exception("the listener process failed")
        finally:
            close_handlers(finished)
            os._exit(status)
