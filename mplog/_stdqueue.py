"""The ``listener`` attribute of mplog's QueueHandler (Python 3.12+), and how
``dictConfig`` with no ``queue`` key gets mplog's channel rather than the
``queue.Queue`` it makes, which forked children could not reach."""

from __future__ import annotations

import logging.handlers
import queue as stdlib_queue
import sys
from typing import Any, Callable, Optional, cast

from ._queue import Queue

__all__ = ["LISTENER_DOC", "SessionQueue", "get_listener", "set_listener"]

#: Whether this process's file handlers are taken over (set by ``_takeover``).
taken_over = False


def _no_listener_class() -> Any:
    raise RuntimeError("mplog's package has not been imported")


#: ``mplog.QueueListener``, loading the listener side on first use (set by the
#: package: a spawned worker does not load it unless it needs it).
listener_class: Callable[[], Any] = _no_listener_class

LISTENER_DOC = """The listener that ``dictConfig`` made for this handler (Python 3.12+), or None.

With no ``queue`` key in the configuration, it is an :class:`mplog.QueueListener`
on this handler's new :class:`mplog.Queue` (unless the ``listener`` key names a
class of your own that is not one); start it with ``handler.listener.start()``,
as with the stdlib's."""


def get_listener(handler: Any) -> Optional[logging.handlers.QueueListener]:
    """The ``listener`` of ``handler`` (an mplog QueueHandler)."""
    listener: Optional[logging.handlers.QueueListener] = handler.__dict__.get("_listener")
    return listener


def set_listener(handler: Any, listener: Optional[logging.handlers.QueueListener]) -> None:
    """Set the handler's ``listener``. From ``dictConfig``, for a
    configuration without a ``queue`` key, first move the handler and the
    listener from dictConfig's new ``queue.Queue`` to a new :class:`mplog.Queue`."""
    made: Any = handler.queue  # dictConfig's queue.Queue, if it made one
    if listener is not None and listener.queue is made and _dictconfig_made_the_queue():
        listener = _on_channel(listener)
        channel: Any = listener.queue
        if isinstance(channel, (Queue, SessionQueue)):
            handler.queue = cast(Any, channel)
            handler._foreign = not isinstance(channel, Queue)
    handler.__dict__["_listener"] = listener


def _dictconfig_made_the_queue() -> bool:
    """Whether the setter was called by ``logging.config``'s
    ``_configure_queue_handler`` for a configuration with no ``queue`` key (in
    3.12 and 3.13 it then makes a ``queue.Queue()`` for the handler and its
    listener, and assigns ``handler.listener`` right after making both)."""
    frame = sys._getframe(2)  # its caller: _dictconfig_made_the_queue < set_listener (the property setter) < caller
    if frame.f_code.co_name != "_configure_queue_handler" or frame.f_globals.get("__name__") != "logging.config":
        return False
    # Its caller is configure_handler (functools.partial adds no frame), whose
    # `config` holds the handler's keys ("queue" among them if given).
    caller = frame.f_back
    config = caller.f_locals.get("config") if caller is not None else None
    return isinstance(config, dict) and "queue" not in config


class SessionQueue:
    """The queue of a dictConfig-made QueueHandler in a process of a session:
    records put here go straight to the configured handlers, in the putting
    thread. Those handlers' files are taken over (see :mod:`mplog._takeover`),
    so the session's listener writes them, one writer for every process that
    runs the same configuration, and no listener of its own is needed. Only
    the stdlib listener's stop sentinel waits here, for its idle thread."""

    def __init__(self, handlers: Any, respect_handler_level: bool) -> None:
        self.handlers = tuple(handlers)
        self.respect_handler_level = respect_handler_level
        self._sentinels: "stdlib_queue.SimpleQueue[Any]" = stdlib_queue.SimpleQueue()

    def put_nowait(self, item: Any) -> None:
        """Handle a record with each handler (at its level, if asked); keep anything else."""
        if not isinstance(item, logging.LogRecord):
            self._sentinels.put(item)
            return
        for handler in self.handlers:
            if not self.respect_handler_level or item.levelno >= handler.level:
                handler.handle(item)

    put = put_nowait

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """What the listener's idle thread waits for: its stop sentinel."""
        return self._sentinels.get(block, timeout)

    def get_nowait(self) -> Any:
        return self._sentinels.get_nowait()


def _on_channel(listener: logging.handlers.QueueListener) -> logging.handlers.QueueListener:
    """``listener``, made to serve a new :class:`mplog.Queue`: mplog's own
    (its options kept), or mplog's in place of the stdlib's; a listener class
    of the user's own is returned as it is, on dictConfig's queue."""
    QueueListener: Any = listener_class()  # noqa: N806 (a class)

    if taken_over and type(listener) in (QueueListener, logging.handlers.QueueListener):
        # In a process of a session: the session's listener writes the files.
        direct = SessionQueue(listener.handlers, listener.respect_handler_level)
        return logging.handlers.QueueListener(direct, *listener.handlers)
    if isinstance(listener, QueueListener):
        mine: Any = listener
        if mine._thread is None:  # made by dictConfig just now, never started
            mine.queue = Queue()
            mine._foreign = False
        return cast(logging.handlers.QueueListener, mine)
    if type(listener) is logging.handlers.QueueListener:
        made: logging.handlers.QueueListener = QueueListener(
            Queue(), *listener.handlers, respect_handler_level=listener.respect_handler_level
        )
        return made
    return listener
