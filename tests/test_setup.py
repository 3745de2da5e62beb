"""Guarantee 6: setup() validates in the parent, stop() drains and is idempotent,
and an unstopped session still drains at interpreter exit."""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import subprocess
import sys
import textwrap

import pytest

import mplog
from tests import workload
from tests.conftest import NEEDS_ROOT, file_handler, join_all, run_in_child, wait_for_path

NOBODY = 65534


def test_leaving_setup_drains_records_of_live_workers(tmp_path, log_path, capfd):
    """Records a still-running worker sent before stop() are written; what it logs
    after stop() goes to its stderr, with one notice, and it never blocks."""
    done, resume = str(tmp_path / "done"), str(tmp_path / "resume")
    process = None
    with mplog.setup(file_handler(log_path), level="INFO"):
        process = multiprocessing.get_context("fork").Process(target=_log_wait_log, args=(done, resume))
        process.start()
        wait_for_path(done)
    open(resume, "w").close()
    join_all([process])
    workload.tally(log_path).assert_complete({0: 5000})
    err = capfd.readouterr().err
    assert err.count("cannot reach the log listener") == 1
    assert "w=1 seq=0" in err


def _log_wait_log(done: str, resume: str) -> None:
    workload.log_records(0, 5000)
    open(done, "w").close()
    wait_for_path(resume)
    workload.log_records(1, 1)


def test_stop_is_idempotent_and_restores_the_root_logger(log_path):
    """stop() twice, then leaving the block: no error; root handlers and level are back."""
    root = logging.getLogger()
    before = logging.StreamHandler()
    root.handlers[:] = [before]
    root.setLevel(logging.WARNING)
    session = mplog.setup(file_handler(log_path), level="DEBUG")
    assert session.active and root.level == logging.DEBUG
    assert [type(h) for h in root.handlers] == [mplog.QueueHandler]
    with session:
        session.stop()
        session.stop()
    assert not session.active
    assert root.handlers == [before] and root.level == logging.WARNING
    assert not os.path.exists(session.queue.address)
    assert "MPLOG_CONFIG" not in os.environ


def test_second_setup_is_refused_and_the_first_keeps_working(log_path):
    """A second setup() raises SetupError at once; the first loses nothing."""
    with mplog.setup(file_handler(log_path), level="INFO"):
        workload.log_records(0, 10)
        with pytest.raises(mplog.SetupError, match="already active"):
            mplog.setup(logging.StreamHandler())
        workload.log_records(0, 10, start=10)
    workload.tally(log_path).assert_complete({0: 20})


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("app.log",), {}, TypeError, r"argument 1 must be a logging.Handler, got 'app.log' \(str\)"),
        ((), {"level": "LOUD"}, ValueError, "unknown level name 'LOUD'"),
        ((), {"level": 2.5}, TypeError, r"level must be an int or a level name, got 2.5 \(float\)"),
        ((), {"listener": "green"}, ValueError, r"listener must be 'thread' or 'process', got 'green'"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, kwargs, error, match):
    """Bad input fails at the setup() call, with a message naming what was wrong."""
    with pytest.raises(error, match=match):
        mplog.setup(*args, **kwargs)
    assert mplog._setup._active is None


def test_handler_attached_to_another_logger_is_refused(log_path):
    """A handler that some logger also writes through directly would bypass the listener."""
    handler = file_handler(log_path)
    logging.getLogger("elsewhere").addHandler(handler)
    try:
        with pytest.raises(ValueError, match=r"also attached to logger\(s\) \['elsewhere'\]"):
            mplog.setup(handler)
    finally:
        logging.getLogger("elsewhere").removeHandler(handler)


def test_adopts_root_handlers(log_path):
    """With no handlers, setup() adopts the root logger's (e.g. from basicConfig)."""
    root = logging.getLogger()
    root.handlers[:] = []
    logging.basicConfig(filename=log_path, format="%(message)s", level=logging.INFO)
    adopted = root.handlers[:]
    with mplog.setup() as session:
        assert session.handlers == tuple(adopted)
        process = multiprocessing.get_context("spawn").Process(
            target=workload.init_and_log, args=(mplog.initializer, 3, 100)
        )
        process.start()
        join_all([process])
    assert root.handlers == adopted
    workload.tally(log_path).assert_complete({3: 100})


AT_EXIT = textwrap.dedent(
    """
    import logging, multiprocessing, sys
    sys.path.insert(0, {root!r})
    import mplog
    from tests import workload
    if __name__ == "__main__":
        handler = logging.FileHandler({path!r})
        handler.setFormatter(logging.Formatter("%(message)s"))
        mplog.setup(handler, level="INFO", listener={listener!r})
        with multiprocessing.get_context("fork").Pool(4) as pool:
            pool.map(workload.pool_task, [(w, 2000, (100, 3000)) for w in range(4)])
        workload.log_records(9, 500)
        # no stop(): interpreter exit must drain everything
    """
)


@pytest.mark.parametrize("listener", ["thread", "process"])
def test_unstopped_session_drains_at_exit(tmp_path, log_path, listener):
    """A program that never stops its session still writes every record."""
    script = tmp_path / "prog.py"
    script.write_text(AT_EXIT.format(root=os.getcwd(), path=log_path, listener=listener))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    workload.tally(log_path).assert_complete({**{w: 2000 for w in range(4)}, 9: 500})


def test_initializer_without_setup_warns_and_does_not_break_the_pool(monkeypatch):
    """With no active setup, the initializer warns instead of raising, so a
    pool that uses it still runs its tasks (an initializer that raised would
    leave the pool replacing dead workers forever)."""
    monkeypatch.delenv("MPLOG_CONFIG", raising=False)
    with pytest.warns(RuntimeWarning, match="no mplog.setup"):
        mplog.initializer()
    with multiprocessing.get_context("fork").Pool(2, initializer=mplog.initializer) as pool:
        assert pool.map_async(abs, [-1, -2, -3]).get(timeout=60) == [1, 2, 3]


def test_initializer_rejects_non_callable_first_initarg():
    """initargs must start with the user's initializer."""
    with pytest.raises(TypeError, match="must be your initializer"):
        mplog.initializer("not callable")


def _log_to_routes(initializer) -> None:
    if initializer is not None:
        initializer()
    logging.getLogger("app").info("app line")
    logging.getLogger("audit").info("audit line")
    logging.getLogger("audit.db").info("audit child line")


@pytest.mark.parametrize("method", ["fork", "spawn"])
@pytest.mark.parametrize("propagate", [False, True])
def test_named_loggers_keep_their_own_handlers(tmp_path, method, propagate):
    """loggers=("audit",): its records reach its own handler in every process,
    and the root's handler too only if it propagates, as in plain logging."""
    root_path, audit_path = str(tmp_path / "root.log"), str(tmp_path / "audit.log")
    audit = logging.getLogger("audit")
    audit.addHandler(file_handler(audit_path, "%(process)d %(message)s"))
    audit.propagate = propagate
    try:
        with mplog.setup(file_handler(root_path, "%(process)d %(message)s"), level="INFO", loggers=["audit"]):
            _log_to_routes(None)
            process = multiprocessing.get_context(method).Process(target=_log_to_routes, args=(mplog.initializer,))
            process.start()
            join_all([process])
            child_pid = str(process.pid)
        assert [type(h) for h in audit.handlers] == [logging.FileHandler]
    finally:
        for handler in audit.handlers[:]:
            audit.removeHandler(handler)
        audit.propagate = True
    audit_lines = open(audit_path).read().splitlines()
    root_lines = open(root_path).read().splitlines()
    for pid in (str(os.getpid()), child_pid):
        assert f"{pid} audit line" in audit_lines and f"{pid} audit child line" in audit_lines
        assert f"{pid} app line" in root_lines and f"{pid} app line" not in audit_lines
        assert (f"{pid} audit line" in root_lines) == propagate
    assert len(audit_lines) == 4 and len(root_lines) == (6 if propagate else 2)


def test_bad_logger_names_are_refused():
    """loggers= takes names of loggers that have handlers."""
    with pytest.raises(TypeError, match="iterable of logger names"):
        mplog.setup(logging.NullHandler(), loggers="audit")
    with pytest.raises(ValueError, match="logger 'nobody.here' has no handlers"):
        mplog.setup(logging.NullHandler(), loggers=["nobody.here"])
    with pytest.raises(ValueError, match="non-root loggers"):
        mplog.setup(logging.NullHandler(), loggers=[""])


def test_queue_close_reconnects_on_next_record(log_path):
    """Queue.close() drops this process's connection; the next record opens a new one."""
    with mplog.setup(file_handler(log_path), level="INFO", listener="process") as session:
        workload.log_records(0, 10)
        first = os.fstat(session.queue._pipe).st_ino
        session.queue.close()
        assert session.queue._pipe == -1
        workload.log_records(0, 10, start=10)
        assert os.fstat(session.queue._pipe).st_ino != first  # a new pipe
    workload.tally(log_path).assert_complete({0: 20})


ROUNDS = 100


@pytest.mark.parametrize("buffered", [False, True], ids=["durable", "buffered"])
@pytest.mark.parametrize("loggers", [(), ("audit",)], ids=["root", "root+audit"])
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_setup_and_stop_leave_no_descriptor_behind(tmp_path, listener, loggers, buffered):
    """setup()/stop() 100 times: the process ends with the descriptors it began
    with (stop() closes this process's pipe of every route), and every record
    of every round is in its file."""
    counts = tmp_path / "descriptors"
    assert run_in_child(_setup_and_stop, str(tmp_path), listener, loggers, buffered, str(counts), timeout=300) == 0
    before, after = counts.read_text().split()
    assert int(after) == int(before), f"{int(after) - int(before)} descriptors leaked in {ROUNDS} rounds"
    workload.tally(str(tmp_path / "root.log")).assert_complete({0: ROUNDS})
    if loggers:
        workload.tally(str(tmp_path / "audit.log")).assert_complete({1: ROUNDS})


def _setup_and_stop(directory: str, listener: str, loggers, buffered: bool, counts: str) -> None:
    """In a forked child: run the rounds, logging one record per route in each,
    and write the number of open descriptors before and after to ``counts``."""
    audit = logging.getLogger("audit")
    audit.propagate = False
    before = len(os.listdir("/proc/self/fd"))
    for round_ in range(ROUNDS):
        if loggers:
            audit.handlers[:] = [file_handler(os.path.join(directory, "audit.log"))]
        root = file_handler(os.path.join(directory, "root.log"))
        with mplog.setup(root, level="INFO", listener=listener, loggers=loggers, buffered=buffered):
            workload.log_records(0, 1, start=round_)
            if loggers:
                audit.info("%s", workload.message(1, round_, 100))
    after = len(os.listdir("/proc/self/fd"))
    with open(counts, "w") as stream:
        stream.write(f"{before} {after}")


@NEEDS_ROOT
def test_a_listener_process_that_cannot_be_forked_leaves_no_descriptor_behind():
    """With fork refused (RLIMIT_NPROC, for a user the limit binds), setup()
    raises SetupError and the process keeps exactly the descriptors it had."""
    assert run_in_child(_setup_without_fork) == 0


def _setup_without_fork() -> int:
    """In a forked child: 0 if setup(listener="process") failed cleanly, 3 if
    it leaked a descriptor, 4 if it did not fail."""
    os.setgid(NOBODY)
    os.setuid(NOBODY)  # root may fork past RLIMIT_NPROC
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    before = len(os.listdir("/proc/self/fd"))
    try:
        mplog.setup(logging.NullHandler(), listener="process")
    except mplog.SetupError as exc:
        assert isinstance(exc.__cause__, BlockingIOError), repr(exc.__cause__)
        return 0 if len(os.listdir("/proc/self/fd")) == before else 3
    return 4
