"""The worker handler: a logging call never raises into the caller, whatever
has become of the listener and of stderr."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys

import pytest

import mplog
from tests.conftest import wait_until


def _kill_listener_process(session: mplog.Session) -> None:
    """SIGKILL the session's listener process and wait until it is dead,
    leaving it for the session to reap (as it would find a crashed one)."""
    pid = session.listener._process_pid
    assert pid > 0, "the premise: a listener process"
    os.kill(pid, signal.SIGKILL)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


@pytest.mark.parametrize("buffered", [False, True], ids=["durable", "buffered"])
def test_logging_never_raises_with_the_listener_killed_and_stderr_gone(tmp_path, monkeypatch, buffered):
    """With the listener process killed and ``sys.stderr`` set to None, a
    logging call (and a flush) returns quietly; once stderr is back, records
    go there, to whatever ``sys.stderr`` is then."""
    path = tmp_path / "app.log"
    session = mplog.setup(mplog.FileHandler(path), listener="process", buffered=buffered)
    try:
        log = logging.getLogger("app")
        log.warning("before the kill")
        mplog.flush()
        wait_until(lambda: path.exists() and path.read_text() == "before the kill\n", "the first record written")
        _kill_listener_process(session)
        monkeypatch.setattr(sys, "stderr", None)
        log.warning("with stderr gone")  # must not raise
        mplog.flush()  # must not raise either (buffered: this is where the send fails)
        replacement = io.StringIO()
        monkeypatch.setattr(sys, "stderr", replacement)
        log.warning("with stderr back")
        mplog.flush()
    finally:
        session.stop()
    assert "with stderr back" in replacement.getvalue()
    assert path.read_text() == "before the kill\n"


def test_a_handler_error_on_the_fallback_follows_raise_exceptions(tmp_path, monkeypatch, capsys):
    """With ``logging.raiseExceptions`` off, mplog's notice about the lost
    listener is not written either, as logging's own error reports are not;
    the records themselves still go to stderr."""
    monkeypatch.setattr(logging, "raiseExceptions", False)
    session = mplog.setup(mplog.FileHandler(tmp_path / "app.log"), listener="process")
    try:
        _kill_listener_process(session)
        logging.getLogger("app").warning("after the kill")
    finally:
        session.stop()
    err = capsys.readouterr().err
    assert "after the kill" in err
    assert "cannot reach the log listener" not in err


def test_a_handler_that_fails_to_close_in_the_listener_process_is_reported(capfd):
    """The listener process closes its handlers before it exits; one whose
    close() raises is named on stderr rather than passed over in silence."""

    test_process = os.getpid()

    class FailsToClose(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            pass

        def close(self) -> None:
            super().close()
            if os.getpid() != test_process:  # only the listener process's copy fails
                raise OSError("the disk went away")

    with mplog.setup(FailsToClose(), listener="process"):
        logging.getLogger("app").warning("one record")
    err = capfd.readouterr().err
    assert "could not close" in err and "the disk went away" in err
