"""Installing the worker handler in a process that did not inherit it by
fork: ``install()``, and :data:`mplog.initializer` for process pools."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, Callable, List, Optional, Tuple

from . import _fork, _stderr, _takeover
from ._buffered import catch_sigterm
from ._config import ENVIRONMENT_VARIABLE, WorkerConfig
from ._handler import QueueHandler, route_handler
from ._queue import Queue
from ._resume import new_queue

__all__ = [
    "Initializer",
    "current",
    "initializer",
    "install",
    "load_process_modules",
    "set_current",
    "worker_handler",
]

# The config this process's children should use: set by setup() in the parent,
# by install() in a worker, and inherited by forked children.
_current: Optional[WorkerConfig] = None
_install_lock = threading.Lock()


class _ForkHook:
    """A forked child of a buffered session catches SIGTERM at once, in its
    only thread: its first record may come from a thread it starts later."""

    def _after_fork_in_child(self) -> None:
        if _current is not None and _current.flush_interval is not None:
            catch_sigterm()


_fork_hook = _ForkHook()  # held here: _fork keeps weak references
_fork.register(_fork_hook)


def current() -> Optional[WorkerConfig]:
    """The config children of this process should use, if any."""
    return _current


def set_current(config: Optional[WorkerConfig], local: Optional[_takeover.Local] = None) -> None:
    """Record (or clear) the config for this process's children, have every
    ``Process`` created from now on carry it to its child, and take over this
    process's file handlers (``local``: the listener thread of this process)."""
    global _current
    _current = config
    if config is None or not config.takeover:
        _takeover.deactivate()
    else:
        _takeover.activate(config.address, config.flush_interval, local, config.served)
    for module in _process_modules():
        process_config = module.current_process()._config
        if config is None:
            process_config.pop(_PROCESS_CONFIG_KEY, None)
        else:
            process_config[_PROCESS_CONFIG_KEY] = _Joining(config)


# The key of a _Joining in multiprocessing's per-process config.
_PROCESS_CONFIG_KEY = "mplog"


class _Joining:
    """How a spawn or forkserver child joins with nothing to call.

    Each ``multiprocessing`` ``Process`` copies its creator's ``_config`` dict
    and pickles it to its child with the rest of the process object, which the
    child reads before it runs the target (or a pool's initializer). Held
    there, this object installs the worker handler as it is unpickled: a
    ``Process``, ``Pool`` or ``ProcessPoolExecutor`` worker then logs through
    the listener with no ``initializer``, and so do its own children.
    """

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config

    def __reduce__(self) -> Tuple[Callable[[WorkerConfig], "_Joining"], Tuple[WorkerConfig]]:
        return (_join_on_arrival, (self.config,))


def _join_on_arrival(config: WorkerConfig) -> _Joining:
    """Unpickled in a new child: join the session before the target runs."""
    try:
        install(config)
    except Exception:  # the child must still run; its records then go where its own logging says
        _stderr.report_exception(f"pid {os.getpid()} could not join the log listener at {config.address}")
    return _Joining(config)


def _process_modules() -> List[Any]:
    """``multiprocessing.process`` and ``multiprocess.process`` (the dill-based
    fork), those of them this process has loaded."""
    return [module for module in (sys.modules.get(name) for name in _PROCESS_MODULE_NAMES) if module is not None]


_PROCESS_MODULE_NAMES = ("multiprocessing.process", "multiprocess.process")


def load_process_modules() -> None:
    """Import ``multiprocessing.process``, and ``multiprocess.process`` if that
    package is installed, so that processes they create after this carry the
    session's config even if the program imports them later (once per
    ``setup()``: about 10 ms, and 45 ms more where ``multiprocess`` is installed)."""
    import importlib
    import importlib.util

    try:
        importlib.import_module("multiprocessing.process")
        if "multiprocess.process" not in sys.modules and importlib.util.find_spec("multiprocess") is not None:
            importlib.import_module("multiprocess.process")
    except (ImportError, OSError):
        # Out of reach (privileges dropped after `import mplog`, say): then
        # this program cannot import it later either, nor start its processes.
        pass


def install(config: WorkerConfig) -> None:
    """Make this process's loggers ship to the listener in ``config``.

    Handlers already on those loggers are closed and removed: in a spawned
    worker they are the worker's own (e.g. from module-level ``basicConfig``),
    and writing the log file directly from a worker is what mplog replaces.
    """
    with _install_lock:
        if config.flush_interval is not None:
            catch_sigterm()  # the initializer runs in the main thread; the first record may not
        root = logging.getLogger()
        if any(
            isinstance(h, QueueHandler) and getattr(h.queue, "address", None) == config.address for h in root.handlers
        ):
            set_current(config)
            return  # inherited by fork, or installed before
        for route, spec in enumerate(config.routes):
            logger = logging.getLogger(spec.logger or None)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()
            queue = new_queue(config.address, route, config.flush_interval, config.served)
            logger.addHandler(worker_handler(config, route, queue))
            if spec.logger:
                logger.propagate = spec.propagate
        root.setLevel(config.root_level)
        for name, level in config.logger_levels:
            logging.getLogger(name).setLevel(level)
        set_current(config)


def worker_handler(config: WorkerConfig, route: int, queue: Queue) -> QueueHandler:
    """The handler that ships route ``route``'s records on ``queue``."""
    handler = route_handler(queue, config.routes[route])
    if route == 0 and config.stand_in_root:
        _takeover.mark_stand_in(handler)
    return handler


class Initializer:
    """``mplog.initializer``: pass it as ``initializer=`` to ``Pool`` or
    ``ProcessPoolExecutor`` (any start method), or call it at the top of a
    ``Process`` target.

    When pickled for a spawn or forkserver child it carries the parent's
    active config with it, so no ``initargs`` are needed. To run your own
    initializer as well, give it and its arguments as ``initargs``::

        Pool(initializer=mplog.initializer, initargs=(my_init, arg1, arg2))
    """

    def __init__(self, config: Optional[WorkerConfig] = None) -> None:
        self._config = config

    def __repr__(self) -> str:
        return "mplog.initializer"

    def __reduce__(self) -> Tuple[Callable[..., "Initializer"], Tuple[Optional[WorkerConfig]]]:
        return (Initializer, (self._config or _current,))

    def __call__(self, user_initializer: Optional[Callable[..., Any]] = None, *args: Any) -> None:
        """Install the worker handler, then call ``user_initializer(*args)``.

        Raises:
            TypeError: ``user_initializer`` is given but not callable.
        """
        if user_initializer is not None and not callable(user_initializer):
            raise TypeError(
                "mplog.initializer: the first initarg must be your initializer (a callable), "
                f"got {user_initializer!r} ({type(user_initializer).__name__})"
            )
        config = self._config or _current or _config_from_environment()
        if config is None:
            import warnings

            warnings.warn(
                "mplog.initializer ran, but no mplog.setup() is active in the parent; "
                "this process logs as it would without mplog",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            install(config)
        if user_initializer is not None:
            user_initializer(*args)


def _config_from_environment() -> Optional[WorkerConfig]:
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    return WorkerConfig.from_json(text) if text else None


initializer = Initializer()
