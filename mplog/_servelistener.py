"""The listener of an ``mplog serve`` server: a :class:`QueueListener` on a
known address, whose handlers come from a configuration file, which admits
the users it is told to, tells each client how to log (its worker config),
and takes over a client's file handler only for a file it was configured to
write: a client can never make it open a file of the client's choosing."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, TypeVar

from . import _declare, _handled, _stderr
from ._access import Access, peer_of
from ._adoption import Adoption
from ._config import WorkerConfig, explicit_logger_levels
from ._journal import Journal, journal_path
from ._lanes import STALL_SECONDS, Marker, join_lanes
from ._listener import DRAIN_TIMEOUT, QueueListener
from ._queue import Queue
from ._reaping import close_handlers
from ._recipes import Recipe
from ._reload import difference, handler_map, load_beside
from ._serveconfig import ConfigError, ServeConfig, close
from ._server import Server
from ._targets import route_configs

__all__ = ["ANSWERING_LIMIT", "ServeListener", "worker_config_of"]

#: The most requests (a client's config, a file handler to take over) answered
#: at once, each in a thread; more are closed unanswered and counted, so that
#: clients that open requests and send nothing cannot make threads without end.
ANSWERING_LIMIT = 16

Request = Callable[[Dict[str, Any]], Dict[str, Any]]
_T = TypeVar("_T")


class _ServeAdoption(Adoption):
    """Takes over a client's file handler only for a file the server's
    configuration writes; for any other file, the client is told to write it
    itself. Answers requests (``{"request": ...}``) with ``answer_request``."""

    def __init__(
        self, add_route: Callable[[logging.Handler], int], owned: Sequence[logging.Handler], request: Request
    ) -> None:
        super().__init__(add_route, owned)
        self._request = request
        self._answering = threading.BoundedSemaphore(ANSWERING_LIMIT)
        #: Requests closed unanswered: ``ANSWERING_LIMIT`` were being answered.
        self.busy = 0

    def answer_later(self, sock: socket.socket, header: bytes) -> None:
        """Answer in a thread, if fewer than ``ANSWERING_LIMIT`` are answering."""
        if not self._answering.acquire(blocking=False):
            self.busy += 1
            sock.close()
            return
        threading.Thread(target=self._answer_then_release, args=(sock, header), name="mplog-serve", daemon=True).start()

    def _answer_then_release(self, sock: socket.socket, header: bytes) -> None:
        try:
            self.answer(sock, header)
        finally:
            self._answering.release()

    def replace(self, owned: Sequence[logging.Handler], swap: Callable[[], _T]) -> _T:
        """Run ``swap`` (the server's handlers are replaced by ``owned``) with
        no request answered meanwhile; files are looked up anew afterwards
        (routes handed out before stay valid: they lead to the successors)."""
        with self._lock:
            self._owned = owned
            self._files.clear()
            return swap()

    def _answer_request(self, sock: socket.socket, length: int) -> Dict[str, Any]:
        """Any admitted user may ask: nothing asked here opens a new file."""
        peer_of(sock)  # connected through the server's access check; asked only to fail early if gone
        recipe = _declare.read_request(sock, length)
        if "request" in recipe:
            return self._request(recipe)
        return self.declare(recipe)

    def _build(self, path: str, recipe: Recipe) -> Dict[str, Any]:
        return {"error": f"this mplog server is not configured to write {path}", "local": True}


class ServeListener(QueueListener):
    """A listener thread at ``address`` for the handlers of ``config``,
    admitting the processes ``access`` admits.

    Args:
        address: the socket path (bound by :meth:`start`).
        config: the handlers, by logger.
        access: who may connect.
        drain_timeout: see :class:`QueueListener`.
        stall_timeout: see :class:`QueueListener`.
        listening: a listening socket at ``address`` (systemd's: socket
            activation), served instead of one bound at start, and left
            there at stop.
    """

    def __init__(
        self,
        address: str,
        config: ServeConfig,
        access: Access,
        drain_timeout: float = DRAIN_TIMEOUT,
        stall_timeout: float = STALL_SECONDS,
        listening: Optional[socket.socket] = None,
    ) -> None:
        groups = config.groups
        super().__init__(
            Queue(address),
            *groups[0],
            respect_handler_level=True,  # each handler's level holds, as in dictConfig
            routes=groups[1:],
            drain_timeout=drain_timeout,
            stall_timeout=stall_timeout,
        )
        self.config = config
        self._access = access
        self._listening = listening
        self._adoption = self._files = _ServeAdoption(self._add_route, self.all_handlers, self._answer)
        #: What a client needs to log here (its address is the client's to fill in).
        self.worker_config = worker_config_of(address, config)
        #: Configurations reloaded (``SIGHUP``).
        self.reloads = 0
        journal = journal_path(address)
        # Makes the files exactly once across a SIGKILL (None: no path for it).
        self._journal = Journal(journal) if journal is not None else None
        self._mark_now = False  # a client waits for a confirmation: mark at once
        # While a reload waits for the old handlers to finish: the markers of
        # the confirmations asked meanwhile, which wait for that too.
        self._reloading: Optional[List[Marker]] = None

    def reload(self, path: str) -> str:
        """Replace the handlers by those of the configuration at ``path``
        without losing a record: what the clients wrote before goes to the
        old handlers, which then finish and close; what they write after, to
        the new ones. Return a line saying what was done.

        Raises:
            ConfigError: the file cannot be loaded, or clients connected now
                would send other lines or levels under it (see
                :func:`mplog._reload.difference`); the old handlers go on.
        """
        new = load_beside(path)
        why = difference(self.worker_config, worker_config_of(self.queue.address, new))
        dispatcher = self._dispatcher
        if why is not None or dispatcher is None:
            close(new)
            raise ConfigError(
                f"{path}: not reloaded: {why or 'the server is stopping'}; restart the server to apply it"
            )
        successors = handler_map(self.config, new)
        with self._journal_paused():  # old and new handlers may write the same files meanwhile
            with self._busy:  # the serving thread is between two wake-ups
                if self._server is not None:
                    self._server.catch_up()  # everything written before goes to the old handlers
                replaced = self._files.replace(new.handlers, lambda: dispatcher.replace_handlers(successors))
                self.all_handlers = new.handlers
                self.config = new
                self._reloading = []
            try:
                for lane in replaced.values():
                    lane.stop()
                finished, _ = join_lanes(replaced, self.drain_timeout)
            finally:
                self._reloaded()
        close_handlers(finished)
        self.reloads += 1
        return f"reloaded {path}: {len(new.handlers)} handler(s)"

    def _reloaded(self) -> None:
        """The old handlers have finished, or are given up: confirmations
        asked meanwhile need wait for them no more."""
        with self._busy:
            waiting, self._reloading = self._reloading or [], None
        for marker in waiting:
            marker.passed()

    def status(self) -> Dict[str, Any]:
        """What ``mplog status`` shows: the processes connected, each
        handler's records, bytes and drops, the connections refused or closed,
        the last notice, and this process's memory and descriptors."""
        with self._busy:  # the serving thread is between two wake-ups
            server, dispatcher = self._server, self._dispatcher
            pids = server.peers() if server is not None else []
            lanes = list(dispatcher.lanes.values()) if dispatcher is not None else []
            counts = {
                "refused": server.refused if server is not None else 0,
                "closed": server.broken if server is not None else 0,
                "turned_away": server.turned_away if server is not None else 0,
            }
        handlers = [
            {
                "handler": lane.name,
                "records": lane.records,
                "bytes": lane.received,
                "dropped": lane.dropped_total,
                "backlog": lane.backlog(),
                "stalled": round(lane.stalled_for(), 1),
            }
            for lane in lanes
        ]
        notice = _stderr.last_notice
        return {
            "pid": os.getpid(),
            "address": self.queue.address,
            "config": self.config.path,
            "reloads": self.reloads,
            "processes": len(set(pids)),
            "pipes": len(pids),
            "pids": sorted(set(pids)),
            "handlers": handlers,
            "requests_unanswered": self._files.busy,
            "last_notice": None if notice is None else {"time": notice[0], "message": notice[1]},
            **counts,
            **_resources(),
        }

    def start(self) -> None:
        """Start serving; returns once clients can connect.

        Raises:
            RuntimeError: it is serving already, or another listener serves its address.
            OSError: the socket cannot be created or bound.
        """
        if self._listening is None:
            super().start()
            return
        # systemd's socket: it is at the address already, and stays there.
        if self._owner_pid:
            raise RuntimeError(f"this listener is serving {self.queue.address!r} already")
        self._start_thread()
        self._owner_pid = os.getpid()

    def stop(self) -> None:
        """Stop as :class:`QueueListener` does; everything is in the files
        then: the journal goes."""
        super().stop()
        if self._journal is not None:
            self._journal.close()

    def on_batch_end(self) -> None:
        """Hand on as :class:`QueueListener` does, then mark the lanes for the journal."""
        super().on_batch_end()
        server, dispatcher = self._server, self._dispatcher
        if self._journal is not None and server is not None and dispatcher is not None:
            now, self._mark_now = self._mark_now, False
            self._journal.mark(dispatcher.lanes, server.positions(), now)

    def on_sync(self, sock: socket.socket) -> None:
        """Answer once everything is handled, and committed (see
        :mod:`mplog._journal`); during a reload, once the old handlers have
        also finished what they were given (or are given up, after
        ``drain_timeout``)."""
        self._mark_now = True
        if self._reloading is None:
            super().on_sync(sock)
            return
        both = Marker(2, lambda: _handled.answer_handled(sock))
        self._reloading.append(both)
        self.pass_marker(both.passed)

    def _journal_paused(self) -> ContextManager[None]:
        return self._journal.paused() if self._journal is not None else contextlib.nullcontext()

    def _new_server(self) -> Server:
        # This server owns the address now: take back what a killed one left.
        committed = None
        if self._journal is not None:
            for notice in self._journal.recover(self.all_handlers):
                _stderr.report(notice)
            committed = self._journal.committed
        return Server(
            self.queue.address,
            self,
            self.drain_timeout,
            access=self._access,
            strict=True,
            listening=self._listening,
            committed=committed,
        )

    def _answer(self, request: Dict[str, Any]) -> Dict[str, Any]:
        """The answer to a client's ``{"request": ...}``."""
        kind = request.get("request")
        if kind == "config":
            return {"config": self.worker_config.to_json()}
        if kind == "status":
            return {"status": self.status()}
        return {"error": f"unknown request {json.dumps(kind)[:100]}"}

    def report(self, message: str) -> None:
        """Write one of mplog's notices on stderr (the service's journal), not
        into the log: the files are the clients', and a client refused or cut
        off for what it sent must not be able to write there by being so."""
        _stderr.report(message)


def worker_config_of(address: str, config: ServeConfig) -> WorkerConfig:
    """What a client needs to log through the handlers of ``config`` (the
    levels are this process's, as the configuration set them)."""
    return WorkerConfig(
        address,
        config.loggers[0].level,
        route_configs(config.loggers, config.groups),
        explicit_logger_levels(),
        stand_in_root=not config.groups[0],
        served=True,
    )


def _resources() -> Dict[str, Optional[int]]:
    """This process's resident memory (bytes) and open descriptors, from
    ``/proc`` (``None`` where it cannot be read)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            rss: Optional[int] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        fds: Optional[int] = len(os.listdir("/proc/self/fd")) - 1  # less the one listdir opens
    except (OSError, ValueError, IndexError):
        rss = fds = None
    return {"rss": rss, "fds": fds}
