"""uWSGI: one line in the uWSGI configuration, and every worker logs through
one listener that the master starts::

    shared-import = mplog.integrations.uwsgi

(in ``uwsgi.ini``; on the command line ``--shared-import
mplog.integrations.uwsgi``). uWSGI imports a ``shared-import`` module in the
master while it starts, before it loads the app (without ``lazy-apps``) or
forks the workers (with it). There this module starts an mplog session whose
listener is a process of its own, not a thread of the master's: uWSGI's fork
skips the at-fork hooks that keep a listener thread quiet around a fork, and
older uWSGI versions run Python threads only with ``enable-threads``. The
file handlers the app configures next, in the master or in each worker
(``dictConfig`` at import of the app module), are taken over: every worker,
the ones the master forks again to replace those that died too, sends its
records to the listener, which writes and rotates each file once.

uWSGI forks its workers in C, without Python's at-fork hooks; mplog needs
none there: each process opens its own pipe to the listener when it first
logs, and asks for each inherited or configured file handler itself. At the
master's exit (uWSGI runs Python's ``atexit`` there) the listener writes what
is left and closes the files.

Imported anywhere but in a uWSGI master (a test or a script importing the
app; a worker of a master that did not import it), it does nothing, and says
so on stderr in a worker.
"""

from __future__ import annotations

import logging
import sys

from .. import _install
from .._setup import active_session, setup

__all__ = ["start_listener"]


def start_listener() -> None:
    """In uWSGI's master, start a session with a listener process (once; a
    worker keeps the one its master started)."""
    try:
        import uwsgi  # type: ignore[import-untyped,import-not-found,unused-ignore]  # only inside uWSGI
    except ImportError:
        return
    if active_session() is not None or _install.current() is not None:
        return
    if uwsgi.worker_id() != 0:
        # A worker whose master has no session: with lazy-apps, the app
        # module is imported here, after the fork, and a listener here would
        # serve this worker alone.
        sys.stderr.write(
            f"mplog: mplog.integrations.uwsgi was imported in uWSGI worker {uwsgi.worker_id()}, "
            "not in the master: use shared-import = mplog.integrations.uwsgi\n"
        )
        return
    root = logging.getLogger()
    unconfigured = not root.handlers
    session = setup(listener="process")
    if unconfigured:
        # Leave a root logger without handlers as it was (Python's last
        # resort, per process) rather than let mplog's stderr handler stand in
        # for a configuration the app makes later; its file handlers are
        # taken over all the same.
        root.removeHandler(session._handlers[0])


start_listener()
