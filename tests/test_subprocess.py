"""Programs started with subprocess (any Python 3.8+) join the parent's listener
with one call, and gevent-patched processes log correctly."""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import mplog
from tests import workload
from tests.conftest import file_handler, requires

ROOT = str(Path(__file__).resolve().parents[1])

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    import mplog
    from tests import workload
    mplog.initializer()          # finds the listener through MPLOG_CONFIG
    workload.log_records({worker}, 2000, (100, 5000))
    """
)


_OTHER_VERSION = "3.8" if sys.version_info[:2] != (3, 8) else "3.13"
_OTHER_PYTHONS = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{_OTHER_VERSION}.*/bin/python")))


@pytest.mark.parametrize(
    "python",
    ["same", pytest.param("other", marks=requires(bool(_OTHER_PYTHONS), f"needs Python {_OTHER_VERSION} in pyenv"))],
)
def test_subprocess_joins_with_one_call(log_path, python):
    """A child started with subprocess, on this or another Python version, logs
    through the listener after calling mplog.initializer()."""
    executable = sys.executable if python == "same" else _OTHER_PYTHONS[-1]
    with mplog.setup(file_handler(log_path), level="INFO"):
        children = [subprocess.Popen([executable, "-c", CHILD.format(root=ROOT, worker=w)]) for w in range(3)]
        for child in children:
            assert child.wait(120) == 0
    workload.tally(log_path).assert_complete({w: 2000 for w in range(3)})


GEVENT_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    if {mplog_first}:  # as in gunicorn's gevent worker: logging set up, then patched
        import mplog
        mplog.initializer()
    from gevent import monkey
    monkey.patch_all()
    import gevent, mplog
    from tests import workload
    mplog.initializer()
    # 20 greenlets log large records at once: a cooperative socket could switch
    # greenlets mid-frame while the handler lock is held.
    gevent.joinall([gevent.spawn(workload.log_records, w, 300, (200, 70000, 300000)) for w in range(20)], timeout=120)
    """
)


class Slow(logging.Handler):
    """Makes the listener slow, so the children's pipes fill up."""

    def __init__(self) -> None:
        super().__init__()
        self.wake = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.wake.wait(0.0005)


@pytest.mark.parametrize("mplog_first", [False, True])
def test_gevent_monkey_patched_process(log_path, mplog_first):
    """Under gevent.monkey.patch_all(), many greenlets logging at once lose
    nothing, tear nothing and never deadlock."""
    with mplog.setup(file_handler(log_path), Slow(), level="INFO"):
        child = subprocess.Popen([sys.executable, "-c", GEVENT_CHILD.format(root=ROOT, mplog_first=mplog_first)])
        try:
            assert child.wait(180) == 0
        finally:
            if child.poll() is None:
                child.kill()
    workload.tally(log_path).assert_complete({w: 300 for w in range(20)})
