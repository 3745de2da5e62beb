"""Guarantee 9: only the owning user (and the one user its workers become,
if named) can reach the listener, and nothing it receives is ever unpickled."""

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
from mplog._hello import ListenerRefused
from tests import workload
from tests.conftest import NEEDS_ROOT, Collect, file_handler, fork_running, run_in_child, wait_pid

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
    the child's exit code: 0 sent, 13 permission denied (the socket's), 14
    refused (by the listener), 1 anything else."""
    return run_in_child(_send_as_nobody, address, frame)


def _send_as_nobody(address: str, frame: bytes) -> int:
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    try:
        mplog.Queue(address)._send(frame)
    except ListenerRefused:
        return 14
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
        assert _as_nobody_send(session.queue.address, _frame("sneaky")) == 14
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


WORKERS = 4
RECORDS = 1000


@NEEDS_ROOT
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_workers_that_switch_to_worker_user_still_log(log_path, capfd, second_user, listener):
    """setup(worker_user=...) as root: workers that become that user log every
    record into the file, none to stderr; the socket is theirs (0600) in a
    0711 directory; any other user is still refused, by the permissions and
    by the peer-credential check."""
    with mplog.setup(
        file_handler(log_path), level="INFO", listener=listener, worker_user=second_user.pw_name
    ) as session:
        address = session.queue.address
        directory = os.stat(os.path.dirname(address))
        assert (directory.st_uid, stat.S_IMODE(directory.st_mode)) == (0, 0o711)
        socket_file = os.stat(address)
        assert (socket_file.st_uid, stat.S_IMODE(socket_file.st_mode)) == (second_user.pw_uid, 0o600)
        pids = [fork_running(_log_as, second_user.pw_uid, second_user.pw_gid, w) for w in range(WORKERS)]
        assert [wait_pid(pid) for pid in pids] == [0] * WORKERS
        assert _as_nobody_send(address, _frame("sneaky")) == 13
        os.chmod(address, 0o777)  # a mistake: now only the credential check stands in the way
        assert _as_nobody_send(address, _frame("sneaky")) == 14
    tally = workload.tally(log_path)
    tally.assert_complete({w: RECORDS for w in range(WORKERS)})
    assert "sneaky" not in open(log_path).read()
    assert [line for line in tally.other if f"of uid {NOBODY}" in line and "refused" in line], tally.other
    err = capfd.readouterr().err
    assert "cannot reach the log listener" not in err and "w=" not in err, err[-2000:]


def _log_as(uid: int, gid: int, worker: int) -> int:
    """In a forked child: become ``uid`` for good (as a server's worker does),
    then log; 5 if the switch did not happen."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        return 5
    workload.log_records(worker, RECORDS)
    return 0


@pytest.mark.parametrize(
    "value, error, match",
    [
        ("no-such-user-mplog", ValueError, "worker_user 'no-such-user-mplog': no such user"),
        (-1, ValueError, "worker_user must be a uid from 0 to"),
        (2**32 - 1, ValueError, "worker_user must be a uid from 0 to"),
        (True, TypeError, r"worker_user must be a user name or a uid, got True \(bool\)"),
        (33.0, TypeError, r"worker_user must be a user name or a uid, got 33.0 \(float\)"),
    ],
)
def test_a_bad_worker_user_is_refused_at_the_call(value, error, match):
    """worker_user takes a user name that exists, or a uid."""
    with pytest.raises(error, match=match):
        mplog.setup(Collect(), worker_user=value)
    with pytest.raises(error, match=match):
        mplog.QueueListener(mplog.Queue("/nonexistent/mplog.sock"), Collect(), worker_user=value)
    assert mplog._setup.active_session() is None


@NEEDS_ROOT
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_only_root_can_name_another_worker_user(tmp_path, second_user, listener):
    """A process that is not root cannot hand its socket to another user:
    setup() says so, and leaves no directory behind."""
    os.chown(tmp_path, NOBODY, NOBODY)
    assert run_in_child(_setup_as_nobody_for, str(tmp_path), second_user.pw_uid, listener) == 0
    assert os.listdir(tmp_path) == []


def _setup_as_nobody_for(directory: str, uid: int, listener: str) -> int:
    """In a forked child: become nobody, then name ``uid`` as the worker user."""
    os.environ["TMPDIR"] = directory
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    with pytest.raises(mplog.SetupError, match=rf"cannot give the listener's socket to uid {uid} \(worker_user\)"):
        mplog.setup(Collect(), listener=listener, worker_user=uid)
    mplog.setup(Collect(), listener=listener, worker_user=NOBODY).stop()  # its own uid: nothing to give
    return 0
