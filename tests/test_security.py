"""Guarantee 9: only the owning user can reach the listener, and nothing it
receives is ever unpickled."""

from __future__ import annotations

import logging
import os
import pickle
import stat
import tempfile
import threading

import pytest

import mplog
from mplog import _codec
from tests.conftest import NEEDS_ROOT, Collect, run_in_child

NOBODY = 65534


def test_socket_is_private():
    """The socket lives in a fresh 0700 directory and is itself 0600."""
    with mplog.setup(Collect()) as session:
        directory = os.path.dirname(session.queue.address)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(session.queue.address).st_mode) == 0o600
        assert os.stat(directory).st_uid == os.getuid()


@pytest.mark.parametrize("tmpdir_kind", ["usable", "relative", "too long", "missing", "unset", "tempfile.tempdir"])
def test_socket_directory_follows_tmpdir_or_falls_back_to_tmp(tmp_path, monkeypatch, tmpdir_kind):
    """The private directory goes where tempfile would put it (tempfile.tempdir,
    then $TMPDIR, made absolute: workers may run elsewhere) when a socket path
    there fits in sockaddr_un, else under /tmp; it is 0700 and removed with the
    session."""
    for name in ("TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path) if tmpdir_kind == "tempfile.tempdir" else None)
    long_dir = tmp_path / ("d" * 120)
    tmpdir = {
        "usable": tmp_path,
        "relative": os.path.basename(tmp_path),
        "too long": long_dir,
        "missing": tmp_path / "missing",
        "unset": None,
        "tempfile.tempdir": "/tmp",
    }[tmpdir_kind]
    long_dir.mkdir()
    monkeypatch.chdir(tmp_path.parent)
    if tmpdir is None:
        monkeypatch.delenv("TMPDIR", raising=False)
    else:
        monkeypatch.setenv("TMPDIR", str(tmpdir))
    collect = Collect()
    with mplog.setup(collect) as session:
        logging.getLogger("tmpdir").warning("via %s", tmpdir_kind)
        directory = os.path.dirname(session.queue.address)
        under_tmp_path = tmpdir_kind in ("usable", "relative", "tempfile.tempdir")
        assert os.path.dirname(directory) == (str(tmp_path) if under_tmp_path else "/tmp")
        assert os.path.basename(directory).startswith("mplog-")
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert not os.path.exists(directory)
    assert [r.getMessage() for r in collect.records] == [f"via {tmpdir_kind}"]
    assert os.listdir(long_dir) == []


@NEEDS_ROOT
def test_a_session_stopped_after_dropping_privileges_stops_quietly():
    """A process that started mplog as root and then became nobody can still
    stop it: the socket and its directory are no longer its to remove, and
    that is not an error."""
    assert run_in_child(_start_as_root_stop_as_nobody) == 0


def _start_as_root_stop_as_nobody() -> int:
    """In a forked child: 0 if the session stopped without a thread error or a
    leaked descriptor, after logging as nobody; 3 if not."""
    errors: list = []
    threading.excepthook = errors.append
    descriptors = len(os.listdir("/proc/self/fd"))
    collect = Collect()
    with mplog.setup(collect):
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        logging.getLogger("dropped").warning("still here")
    logged = [r.getMessage() for r in collect.records] == ["still here"]
    return 0 if logged and not errors and len(os.listdir("/proc/self/fd")) == descriptors else 3


def _as_nobody_send(address: str, frame: bytes) -> int:
    """Fork, become uid nobody, then connect and send as a worker does; return
    the child's exit code: 0 sent, 13 permission denied, 1 anything else."""
    return run_in_child(_send_as_nobody, address, frame)


def _send_as_nobody(address: str, frame: bytes) -> int:
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    try:
        mplog.Queue(address)._send(frame)
    except PermissionError:
        return 13
    return 0


def _frame(text: str) -> bytes:
    """One record frame."""
    return _codec.encode(logging.LogRecord("intruder", logging.ERROR, __file__, 1, text, None, None))


@NEEDS_ROOT
def test_other_user_cannot_connect():
    """Another uid cannot even reach the socket: the directory is closed to it."""
    collect = Collect()
    with mplog.setup(collect) as session:
        assert _as_nobody_send(session.queue.address, _frame("sneaky")) == 13
    assert not [r for r in collect.records if r.name == "intruder"]


@NEEDS_ROOT
def test_other_user_is_refused_even_if_the_path_is_opened_up():
    """With the permissions loosened by mistake, the peer-credential check still
    refuses another uid, and says so in the log."""
    collect = Collect()
    with mplog.setup(collect) as session:
        os.chmod(os.path.dirname(session.queue.address), 0o777)
        os.chmod(session.queue.address, 0o777)
        assert _as_nobody_send(session.queue.address, _frame("sneaky")) in (0, 1)
        logging.getLogger("after").warning("still fine")
    messages = [r.getMessage() for r in collect.records]
    assert not [r for r in collect.records if r.name == "intruder"]
    assert any(f"of uid {NOBODY}" in m and "refused" in m for m in messages), messages
    assert "still fine" in messages


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/mplog-pwned",))


def test_a_pickle_payload_is_never_unpickled(tmp_path):
    """A frame carrying a pickle is reported as undecodable; its code never runs."""
    marker = "/tmp/mplog-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    payload = pickle.dumps(_Exploit())
    collect = Collect()
    with mplog.setup(collect) as session:
        queue = mplog.Queue(session.queue.address)
        queue._send(_codec.HEADER.pack(_codec.RECORD_START, len(payload)) + payload)
        after = logging.LogRecord("intruder", logging.ERROR, __file__, 1, "after the garbage", None, None)
        queue._send(_codec.encode(after))
        queue.close()
    assert not os.path.exists(marker)
    messages = [r.getMessage() for r in collect.records]
    assert any("undecodable log frame" in m for m in messages), messages
    assert "after the garbage" in messages
