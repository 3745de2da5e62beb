"""Taking over the file handlers a process of a session has: those it
configured itself (``dictConfig``, ``fileConfig``, ``basicConfig(filename=)``,
``addHandler``) and those it inherited at fork, on any logger.

While a session is active in a process, a stdlib ``FileHandler`` (or
``RotatingFileHandler``, ``TimedRotatingFileHandler``, ``WatchedFileHandler``)
there keeps its level, filters and formatter, but never writes, rotates or
truncates its file: each record it accepts is formatted here and sent to the
listener, which writes that file through one handler of its own, built from
the same arguments, for every process. The listener is asked when the handler
is added to a logger (so a configuration it cannot build fails right there),
or at the handler's first record in this process (inherited ones).

A handler with ``mplog_takeover = False`` is left alone; so is every handler
of a session set up with ``takeover=False``, and handlers of other classes.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from typing import Any, Callable, Dict, NamedTuple, Optional

from . import _declare, _stderr, _stdqueue
from ._config import RouteConfig, TextTarget
from ._handler import QueueHandler, route_handler
from ._recipes import OWNED, Recipe, is_taken_over, owned_here, recipe_of
from ._resume import new_queue
from .exceptions import SetupError

__all__ = ["OPT_OUT", "Local", "activate", "deactivate", "handle", "mark_stand_in"]

#: The attribute that, set to False on a handler, keeps it in its process.
OPT_OUT = "mplog_takeover"
_TAKEN = "_mplog_taken"  # on a handler: its _Sender in this process

_original_handle = logging.FileHandler.handle
_original_open = logging.FileHandler._open
_original_add_handler = logging.Logger.addHandler
_original_basic_config = logging.basicConfig
_STAND_IN = "_mplog_stand_in"  # on the root's mplog handler: it stands for "not configured"


class Local(NamedTuple):
    """A listener thread of this process: asked and fed without the socket."""

    pid: int
    declare: Callable[[Recipe], Dict[str, Any]]
    handle: Callable[[logging.LogRecord, int], None]


class _Session(NamedTuple):
    address: str
    flush_interval: Optional[float]
    local: Optional[Local]
    served: bool = False  # an mplog serve client's: its queues survive the server's restart


_session: Optional[_Session] = None


def activate(
    address: str, flush_interval: Optional[float], local: Optional[Local] = None, served: bool = False
) -> None:
    """Take over the file handlers of this process (and of its forked
    children) for the listener at ``address`` (an ``mplog serve`` server's if ``served``)."""
    global _session
    _session = _Session(address, flush_interval, local, served)
    _stdqueue.taken_over = True
    logging.FileHandler.handle = _handle  # type: ignore[method-assign,assignment]
    logging.FileHandler._open = _open  # type: ignore[method-assign]
    logging.Logger.addHandler = _add_handler  # type: ignore[method-assign]
    logging.basicConfig = _basic_config


def deactivate() -> None:
    """File handlers write their files themselves again."""
    global _session
    _session = None
    _stdqueue.taken_over = False
    logging.FileHandler.handle = _original_handle  # type: ignore[method-assign]
    logging.FileHandler._open = _original_open  # type: ignore[method-assign]
    logging.Logger.addHandler = _original_add_handler  # type: ignore[method-assign]
    logging.basicConfig = _original_basic_config


class _Sender:
    """Where one taken-over handler's records go from this process."""

    __slots__ = ("pid", "address", "handler", "preformatted")

    def __init__(self, address: str, handler: Optional[QueueHandler], preformatted: bool) -> None:
        self.pid = os.getpid()
        self.address = address
        self.handler = handler  # None: the listener refused; the handler writes itself
        self.preformatted = preformatted


class _Declined(Exception):
    """The listener writes only files it was configured with (``mplog serve``),
    and not this one: the handler writes its file itself, as it would without mplog."""


def _taken_over(handler: logging.Handler) -> bool:
    return (
        _session is not None
        and is_taken_over(handler)
        and not owned_here(handler)
        and handler.__dict__.get(OPT_OUT, True) is not False
    )


def _sender(handler: logging.Handler, session: _Session, strict: bool) -> _Sender:
    """``handler``'s sender in this process, asking the listener first if
    needed. ``strict``: a refusal raises, else it is said once on stderr and
    the handler writes its file itself.

    Raises:
        SetupError: ``strict``, and the listener cannot take it over.
    """
    sender: Optional[_Sender] = handler.__dict__.get(_TAKEN)
    if sender is not None and sender.pid == os.getpid() and sender.address == session.address:
        return sender
    try:
        sender = _ask(handler, session)
    except _Declined as exc:  # not a file the listener writes: this process does
        _stderr.report(f"{exc}; pid {os.getpid()} writes that file itself")
        sender = _Sender(session.address, None, False)
    except (OSError, ValueError) as exc:
        message = f"the log listener cannot take over {handler!r}: {exc}"
        if strict:
            raise SetupError(message) from None
        _stderr.report(f"{message}; pid {os.getpid()} writes that file itself")
        sender = _Sender(session.address, None, False)
    handler.__dict__[_TAKEN] = sender
    return sender


def _route_for(address: str, recipe: Recipe) -> int:
    """The route a (restarted) server at ``address`` gives the handler ``recipe`` describes.

    Raises:
        OSError: no server answers, or it no longer takes the handler over.
    """
    try:
        return int(_declare.ask(address, recipe)["route"])
    except (KeyError, ValueError) as exc:
        raise OSError(f"the server at {address} no longer takes the handler over: {exc}") from None


def _ask(handler: logging.Handler, session: _Session) -> _Sender:
    """Have the listener take ``handler`` over; its sender in this process."""
    recipe = recipe_of(handler)
    local = session.local if session.local is not None and session.local.pid == os.getpid() else None
    answer = local.declare(recipe) if local is not None else _declare.ask(session.address, recipe)
    if "error" in answer:
        raise (_Declined if answer.get("local") else ValueError)(str(answer["error"]))
    route = int(answer["route"])
    targets = tuple(TextTarget(*target) for target in answer["targets"])
    # A restarted server hands the routes of taken-over handlers out anew.
    redeclare = functools.partial(_route_for, session.address, recipe)
    queue = new_queue(session.address, route, session.flush_interval, session.served, redeclare)
    if local is not None:
        queue._deliver_here(local.handle)
    sender = route_handler(queue, RouteConfig("", True, logging.NOTSET, targets, bool(answer["send_record"])))
    # A listener's handler inherited at fork keeps its stream: a forked child
    # must never flush or close the listener's streams (see _forking).
    if isinstance(handler, logging.FileHandler) and OWNED not in handler.__dict__:
        _close_stream(handler)
    return _Sender(session.address, sender, bool(answer["preformatted"]))


def _close_stream(handler: logging.FileHandler) -> None:
    """This process no longer writes the file: let go of it (a handler
    reopens it by itself if it writes again, after the session)."""
    with handler.lock:  # type: ignore[union-attr]
        stream, handler.stream = handler.stream, None
    if stream is not None:
        stream.close()


def _handle(self: logging.FileHandler, record: logging.LogRecord) -> Any:
    """``FileHandler.handle`` in a process of a session."""
    return handle(self, record, _original_handle)


def handle(self: logging.Handler, record: logging.LogRecord, original: Callable[[Any, logging.LogRecord], Any]) -> Any:
    """Send ``record`` to the listener if ``self`` is taken over in this
    process, else ``original(self, record)`` (its class's own ``handle``)."""
    session = _session
    if session is None or not _taken_over(self):
        return original(self, record)
    sender = _sender(self, session, strict=False)
    if sender.handler is None:
        return original(self, record)
    result = self.filter(record)
    if result:
        if isinstance(result, logging.LogRecord):  # Python 3.12+: a filter may replace the record
            record = result
        _send(self, sender, record)
    return result


def _send(handler: logging.Handler, sender: _Sender, record: logging.LogRecord) -> None:
    """Send ``record`` as ``handler`` would write it."""
    assert sender.handler is not None
    if not sender.preformatted:
        sender.handler.handle(record)
        return
    try:
        line = handler.format(record)
    except Exception:
        handler.handleError(record)
        return
    sent = copy.copy(record)
    sent.msg, sent.args, sent.exc_info, sent.exc_text, sent.stack_info = line, None, None, None, None
    sender.handler.handle(sent)


def _open(self: logging.FileHandler) -> Any:
    """``FileHandler._open`` in a process of a session: mode ``"w"`` appends
    instead, since the listener may have written the file already (it
    truncates it once, when it first opens it)."""
    if not self.mode.startswith("w") or owned_here(self):
        return _original_open(self)
    mode, self.mode = self.mode, "a" + self.mode[1:]
    try:
        return _original_open(self)
    finally:
        self.mode = mode


def _add_handler(self: logging.Logger, hdlr: logging.Handler) -> None:
    """``Logger.addHandler`` in a process of a session: a file handler is
    taken over now, so a configuration the listener cannot build fails here.

    Raises:
        SetupError: the listener cannot take it over.
    """
    session = _session
    if session is not None and _taken_over(hdlr):
        _sender(hdlr, session, strict=True)
    _original_add_handler(self, hdlr)


def mark_stand_in(handler: logging.Handler) -> None:
    """``handler``, mplog's on the root logger, stands for a root with no
    handlers (``setup()`` had none to adopt): ``basicConfig()`` configures anyway."""
    setattr(handler, _STAND_IN, True)


def _basic_config(**kwargs: Any) -> None:
    """``logging.basicConfig`` in a process of a session: where the root's only
    handlers are mplog's stand-ins, it configures the root as it would an empty
    one (its file handler is then taken over), instead of doing nothing."""
    root = logging.getLogger()
    stand_ins = [handler for handler in root.handlers if handler.__dict__.get(_STAND_IN)]
    if not stand_ins or len(stand_ins) != len(root.handlers) or kwargs.get("force"):
        _original_basic_config(**kwargs)
        return
    for handler in stand_ins:
        root.removeHandler(handler)
    try:
        _original_basic_config(**kwargs)
    except BaseException:
        for handler in stand_ins:  # nothing configured: as it was
            root.addHandler(handler)
        raise
