"""The listener's side of taking over: one handler per file, whatever process
asked first, each on a route of its own that every asking process then sends
that handler's records on."""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from typing import Any, Callable, Dict, Optional, Sequence

from . import _declare, _stderr
from ._files import FileHandler
from ._recipes import Recipe, build, describe, same_file_handler
from ._targets import route_targets

__all__ = ["Adoption"]

_PEERCRED = struct.Struct("3i")


class _Taken:
    """A file the listener writes for processes that configured it."""

    __slots__ = ("recipe", "answer")

    def __init__(self, recipe: Optional[Recipe], answer: Dict[str, Any]) -> None:
        self.recipe = recipe  # None: a handler the listener was given for this file
        self.answer = answer


class Adoption:
    """The files taken over so far, by absolute path.

    Args:
        add_route: adds a route of one handler to the listener; returns its number.
        owned: the handlers the listener was given: a process's handler for
            one of their files is sent to that one.
    """

    def __init__(self, add_route: Callable[[logging.Handler], int], owned: Sequence[logging.Handler]) -> None:
        self._add_route = add_route
        self._owned = owned
        self._files: Dict[str, _Taken] = {}
        self._lock = threading.Lock()

    def declare(self, recipe: Recipe) -> Dict[str, Any]:
        """The answer to a process that asks to have the handler ``recipe``
        describes taken over: ``route``, what to send on it, and whether
        lines go ``preformatted``; or ``error``, saying why not."""
        path = recipe.get("filename")
        if not isinstance(path, str) or not os.path.isabs(path):
            return {"error": f"a recipe needs an absolute filename, got {path!r}"}
        # Building a handler takes logging's module lock, which a process of
        # this listener's may hold while it waits here (dictConfig does): always
        # that lock first, then this one.
        try:
            with logging._lock, self._lock:  # type: ignore[attr-defined]
                taken = self._files.get(path) or self._given(path)
                if taken is None:
                    return self._build(path, recipe)
        except ValueError as exc:  # the listener is not running
            return {"error": str(exc)}
        if taken.recipe is None:
            return taken.answer
        differ = same_file_handler(taken.recipe, recipe)
        if differ is not None:
            return {
                "error": f"{path} is already written by the listener as {describe(taken.recipe)}; this one: {differ}"
            }
        return taken.answer

    def _given(self, path: str) -> Optional[_Taken]:
        """The file's entry if a handler the listener was given writes it
        (records go to it as they are: its own formatter formats them)."""
        for handler in self._owned:
            if _path_of(handler) == path:
                taken = _Taken(None, self._answer(handler, preformatted=False))
                self._files[path] = taken
                return taken
        return None

    def _build(self, path: str, recipe: Recipe) -> Dict[str, Any]:
        handler = build(recipe)
        answer = self._answer(handler, preformatted=True)
        self._files[path] = _Taken(recipe, answer)
        return answer

    def _answer(self, handler: logging.Handler, preformatted: bool) -> Dict[str, Any]:
        targets, send_record = route_targets([handler])
        return {
            "route": self._add_route(handler),
            "targets": [list(target) for target in targets],
            "send_record": send_record,
            "preformatted": preformatted,
        }

    def answer_later(self, sock: socket.socket, header: bytes) -> None:
        """Answer a request that started with ``header`` on ``sock`` in a
        thread of its own: building a handler may wait for logging's lock,
        which the serving thread must never do."""
        threading.Thread(target=self.answer, args=(sock, header), name="mplog-takeover", daemon=True).start()

    def answer(self, sock: socket.socket, header: bytes) -> None:
        """Read a request that started with ``header`` from ``sock``, answer
        it and close ``sock``."""
        try:
            answer = self._answer_request(sock, _declare.request_length(header))
            sock.sendall(json.dumps(answer).encode("utf-8"))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the process is gone (or gave up waiting, and says so itself)
        except (OSError, ValueError) as exc:  # it sent nonsense, or too slowly: it is told nothing more
            _stderr.report(f"a request to take over a file handler failed: {exc}")
        finally:
            sock.close()

    def _answer_request(self, sock: socket.socket, length: int) -> Dict[str, Any]:
        _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        recipe = _declare.read_request(sock, length)
        if uid != os.geteuid():
            # A worker_user's process: the listener may be root, and would open any file it names.
            return {"error": f"only processes of uid {os.geteuid()} may have file handlers taken over, not uid {uid}"}
        return self.declare(recipe)


def _path_of(handler: logging.Handler) -> Optional[str]:
    if isinstance(handler, logging.FileHandler):
        return handler.baseFilename
    if isinstance(handler, FileHandler):
        return handler.path
    return None
