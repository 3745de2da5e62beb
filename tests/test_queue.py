"""The queue's buffer under SIGTERM while another thread's send is stuck."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import mplog
from mplog import _buffered
from tests.conftest import blocked_in_pipe_write, fork_running, wait_for_path, wait_pid, wait_until

_RECORD = "x" * 4000


def _child_stuck_then_terminated(stderr_path: str, stuck_path: str) -> None:
    """In a forked child of a buffered session whose listener is stuck: one
    thread logs until its send blocks on the full pipe (holding the buffer's
    lock), the main thread buffers three more records, then SIGTERM."""
    sys.stderr = open(stderr_path, "w", encoding="utf-8")
    log = logging.getLogger("child")

    def fill_the_pipe() -> None:
        while True:
            log.warning(_RECORD)

    threading.Thread(target=fill_the_pipe, daemon=True).start()
    # The premise: the send is blocked for good. A send seen blocked before the
    # listener got stuck may still go through, and take the records below with it.
    wait_for_path(stuck_path, 30)
    wait_until(lambda: blocked_in_pipe_write(os.getpid()), "the sending thread blocked on the full pipe", 30)
    for number in range(3):
        log.warning("buffered while stuck %d", number)
    os.kill(os.getpid(), signal.SIGTERM)  # the handler flushes, then the process dies of the signal
    time.sleep(_buffered.SIGNAL_LOCK_SECONDS + 30)
    os._exit(4)  # never reached if SIGTERM ended the process


def test_sigterm_spills_the_buffer_when_another_threads_send_is_stuck(tmp_path):
    """SIGTERM gives up waiting for a send stuck on a full pipe after
    ``SIGNAL_LOCK_SECONDS``; the records still in the buffer then go to stderr
    rather than dying with the process."""
    release = threading.Event()
    stuck_path = str(tmp_path / "stuck")

    class Stuck(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            open(stuck_path, "w").close()  # the listener reads nothing more until released
            release.wait(120)

    stderr_path = str(tmp_path / "child.stderr")
    with mplog.setup(Stuck(), buffered=True, flush_interval=60):
        try:
            status = wait_pid(fork_running(_child_stuck_then_terminated, stderr_path, stuck_path))
        finally:
            release.set()
    with open(stderr_path, encoding="utf-8") as stderr:
        spilled = stderr.read()
    assert status == -signal.SIGTERM
    for number in range(3):
        assert f"buffered while stuck {number}" in spilled
