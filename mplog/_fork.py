"""At-fork hooks: one weak set of objects that must act around ``os.fork()``.

Every ``os.fork()`` in a process that imported mplog (raw forks, the fork start
method, gunicorn and tornado masters) runs these hooks, so a forked child needs
no call of its own. Objects join with :func:`register` and implement any of
``_before_fork``, ``_after_fork_in_parent`` and ``_after_fork_in_child``.
"""

from __future__ import annotations

import os
import sys
import weakref
from typing import Any, List

_participants: "weakref.WeakSet[Any]" = weakref.WeakSet()
# Objects a forked child must never free: they hold the parent's streams, and
# freeing an io object flushes it (duplicating or deadlocking on its buffer).
_kept_alive: List[Any] = []


def register(participant: Any) -> None:
    """Have ``participant``'s at-fork methods called around every fork."""
    _participants.add(participant)


def keep_alive(obj: Any) -> None:
    """Keep ``obj`` referenced for the life of this process."""
    _kept_alive.append(obj)


def _call(method_name: str) -> None:
    for participant in list(_participants):
        method = getattr(participant, method_name, None)
        if method is None:
            continue
        try:
            method()
        except Exception as exc:  # a hook must never break the fork itself
            sys.stderr.write(f"mplog: {method_name} of {participant!r} failed: {exc!r}\n")


def _before() -> None:
    _call("_before_fork")


def _after_in_parent() -> None:
    _call("_after_fork_in_parent")


def _after_in_child() -> None:
    _call("_after_fork_in_child")


os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
