"""What a spawned worker loads: the worker side of mplog only, while
``import mplog`` anywhere else still loads everything up front."""

from __future__ import annotations

import logging
import multiprocessing
import subprocess
import sys
from typing import List

import pytest

import mplog

_LISTENER_SIDE = ("mplog._files", "mplog._listener", "mplog._server", "mplog._setup")


def _mplog_modules_here() -> List[str]:
    logging.getLogger("worker").warning("from a worker")
    return sorted(name for name in sys.modules if name.startswith("mplog"))


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_spawned_worker_loads_only_the_worker_side(method, tmp_path):
    path = tmp_path / "app.log"
    context = multiprocessing.get_context(method)
    with mplog.setup(mplog.FileHandler(path)):
        with context.Pool(1, initializer=mplog.initializer) as pool:
            loaded = pool.apply_async(_mplog_modules_here).get(timeout=120)
    assert "mplog._handler" in loaded and "mplog._queue" in loaded  # the premise: mplog is in the worker
    assert not set(_LISTENER_SIDE) & set(loaded)
    assert path.read_text().endswith("from a worker\n")


def test_import_mplog_elsewhere_loads_the_listener_side_at_once():
    """A program that drops privileges or chroots after ``import mplog`` must
    not need mplog's files again to set up."""
    code = "import sys, mplog; print(sorted(m for m in sys.modules if m.startswith('mplog')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    for name in _LISTENER_SIDE:
        assert repr(name) in out


def test_the_listener_side_is_still_reachable_by_attribute():
    """``mplog.setup`` and friends resolve in a process that loaded lazily."""
    code = (
        "import multiprocessing.process as p; p.current_process()._inheriting = True\n"
        "import sys, mplog\n"
        "assert 'mplog._setup' not in sys.modules\n"
        "print(mplog.setup.__module__, mplog.FileHandler.__name__, mplog.QueueListener.__name__)\n"
        "mplog.nothing_here\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["mplog._setup", "FileHandler", "QueueListener"]
    assert "AttributeError: module 'mplog' has no attribute 'nothing_here'" in result.stderr
