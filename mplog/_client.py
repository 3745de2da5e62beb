"""``mplog.connect()``: make this process a client of an ``mplog serve``
server, as a session's worker is of its listener: its root logger ships to
the server's handlers, its file handlers for files the server writes are
taken over, and its ``multiprocessing`` children (any start method) and
forked children follow it."""

from __future__ import annotations

import threading
from typing import Optional

from . import _declare, _install
from ._config import WorkerConfig
from ._endpoint import resolve_address
from ._hello import ListenerRefused
from .exceptions import SetupError

__all__ = ["connect"]

_lock = threading.Lock()


def connect(address: Optional[str] = None) -> str:
    """Log through the ``mplog serve`` server at ``address``; return its address.

    The root logger's handlers are replaced by mplog's, which sends to the
    server's root handlers (as in a worker of :func:`mplog.setup`), and the
    server's levels are applied. From then on, a stdlib file handler this
    process (or a child) configures, by ``dictConfig`` or by hand, for a file
    the server is configured to write is taken over: the server writes that
    file alone. For any other file the handler writes itself, said once on
    stderr. ``multiprocessing`` children of every start method, and forked
    children, are clients too. Connecting again to the same server does nothing.

    Args:
        address: the server's socket; by default ``$MPLOG_ADDRESS``, else the
            default address of this user's server (see ``mplog serve --help``).

    Raises:
        SetupError: the server cannot be reached or refused this process, or
            this process already logs through a session (:func:`mplog.setup`,
            or as one's worker) or another server.
    """
    resolved = resolve_address(address)
    with _lock:
        current = _install.current()
        if current is not None:
            if current.served and current.address == resolved:
                return resolved
            raise SetupError(
                f"this process already logs through the mplog listener at {current.address}; "
                f"it cannot also be a client of the server at {resolved}"
            )
        config = _ask_config(resolved)
        _install.install(config)
    return resolved


def _ask_config(address: str) -> WorkerConfig:
    """The server's worker config, for this process's view of its address.

    Raises:
        SetupError: no server answers there, or its answer is not a config.
    """
    try:
        answer = _declare.ask(address, {"request": "config"})
        if "error" in answer:
            raise ValueError(answer["error"])
        config = WorkerConfig.from_json(str(answer["config"]))
    except (OSError, ValueError, KeyError) as exc:
        raise SetupError(f"cannot connect to the mplog server at {address}: {_why(exc)}") from None
    return config._replace(address=address)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ListenerRefused):
        return str(exc.strerror)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)) or str(exc).startswith("the listener's answer"):
        return f"it closed the connection ({type(exc).__name__}); is this user admitted there?"
    return f"{type(exc).__name__}: {exc}"
