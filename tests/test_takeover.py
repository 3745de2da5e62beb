"""File handlers that the processes of a session configure themselves (or
inherit at fork) are taken over: one listener handler per file, the rotation
of a single writer, every record once."""

from __future__ import annotations

import configparser
import glob
import json
import logging
import logging.config
import logging.handlers
import multiprocessing
import os
import socket
import sys
import threading
from typing import Any, Dict, List

import pytest

import mplog

from .conftest import join_all
from .workload import LOGGER, log_records, tally

WORKERS = 8
RECORDS = 300  # per worker
MAX_BYTES = 16 * 1024
SECRET = "secret"  # records with this are dropped by a handler-level filter


@pytest.fixture(autouse=True)
def restore_named_loggers():
    """Give every named logger back its handlers, level, propagate and
    disabled flag (dictConfig in this process changes them), closing the new
    handlers."""
    manager = logging.Logger.manager
    saved = {
        name: (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        for name, logger in list(manager.loggerDict.items())
        if isinstance(logger, logging.Logger)
    }
    yield
    for name, logger in list(manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        handlers, level, propagate, disabled = saved.get(name, ([], logging.NOTSET, True, False))
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.level, logger.propagate, logger.disabled = level, propagate, disabled


class NoSecrets(logging.Filter):
    """A handler filter, run where the handler is configured."""

    def filter(self, record: logging.LogRecord) -> bool:
        return SECRET not in record.getMessage()


def dict_config(directory: str) -> Dict[str, Any]:
    """Django-like settings.LOGGING: a size-rotated file with a filter on the
    root, a time-rotated file for a named logger that does not propagate."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"no_secrets": {"()": NoSecrets}},
        "formatters": {"plain": {"format": "%(message)s"}, "audit": {"format": "AUDIT %(message)s"}},
        "handlers": {
            "app": {
                "class": "logging.handlers.RotatingFileHandler",
                "filename": os.path.join(directory, "app.log"),
                "maxBytes": MAX_BYTES,
                "backupCount": 10000,
                "formatter": "plain",
                "filters": ["no_secrets"],
            },
            "audit": {
                "class": "logging.handlers.TimedRotatingFileHandler",
                "filename": os.path.join(directory, "audit.log"),
                "when": "S",
                "backupCount": 10000,
                "formatter": "audit",
            },
        },
        "root": {"level": "INFO", "handlers": ["app"]},
        "loggers": {"audit": {"handlers": ["audit"], "level": "INFO", "propagate": False}},
    }


def _configure_and_log(how: str, directory: str, worker: int) -> None:
    """What a framework's worker does: configure logging, then log."""
    if how == "dictConfig":
        logging.config.dictConfig(dict_config(directory))
    elif how == "fileConfig":
        logging.config.fileConfig(os.path.join(directory, "logging.ini"), disable_existing_loggers=False)
    else:
        # filemode "w": each worker would truncate what the others wrote.
        logging.basicConfig(
            filename=os.path.join(directory, "app.log"), filemode="w", format="%(message)s", level="INFO", force=True
        )
    log_records(worker, RECORDS)
    audit = logging.getLogger("audit")
    for seq in range(RECORDS // 10):
        logging.getLogger(LOGGER).info("%s %d from %d", SECRET, seq, worker)
        if how != "basicConfig":  # which configures no audit file
            audit.info("w=%d seq=%d size=0 ", worker, seq)


def _write_ini(directory: str) -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_dict(
        {
            "loggers": {"keys": "root,audit"},
            "handlers": {"keys": "app,audit"},
            "formatters": {"keys": "plain,audit"},
            "logger_root": {"level": "INFO", "handlers": "app"},
            "logger_audit": {"level": "INFO", "handlers": "audit", "propagate": "0", "qualname": "audit"},
            "handler_app": {
                "class": "handlers.RotatingFileHandler",
                "formatter": "plain",
                "args": repr((os.path.join(directory, "app.log"), "a", MAX_BYTES, 10000)),
            },
            "handler_audit": {
                "class": "handlers.TimedRotatingFileHandler",
                "formatter": "audit",
                "args": repr((os.path.join(directory, "audit.log"), "S", 1, 10000)),
            },
            "formatter_plain": {"format": "%(message)s"},
            "formatter_audit": {"format": "AUDIT %(message)s"},
        }
    )
    with open(os.path.join(directory, "logging.ini"), "w") as file:
        ini.write(file)


def _files_oldest_first(path: str) -> List[str]:
    """A rotated file's generations, oldest first, the live one last."""
    numbered = glob.glob(path + ".*")
    if all(name.rsplit(".", 1)[1].isdigit() for name in numbered):
        numbered.sort(key=lambda name: -int(name.rsplit(".", 1)[1]))
    else:  # time-stamped suffixes sort by time
        numbered.sort()
    return numbered + ([path] if os.path.exists(path) else [])


def _lines(files: List[str]) -> List[str]:
    lines: List[str] = []
    for name in files:
        with open(name, encoding="utf-8") as file:
            lines.extend(file.read().splitlines())
    return lines


def _tally_all(path: str, prefix: str = "") -> Any:
    """The tally of all generations of ``path`` together."""
    merged = os.path.join(os.path.dirname(os.path.dirname(path)), "merged-" + os.path.basename(path))
    with open(merged, "w", encoding="utf-8") as file:
        file.writelines(line + "\n" for line in _lines(_files_oldest_first(path)))
    return tally(merged, prefix)


def _single_writer_sizes(lines: List[str], directory: str) -> List[int]:
    """The sizes of the files one RotatingFileHandler writes for ``lines``, oldest first."""
    os.makedirs(directory)
    path = os.path.join(directory, "app.log")
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=10000, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    for line in lines:
        handler.emit(logging.makeLogRecord({"msg": line}))
    handler.close()
    return [os.path.getsize(name) for name in _files_oldest_first(path)]


def _start(method: str, how: str, directory: str) -> None:
    context = multiprocessing.get_context(method)
    workers = [context.Process(target=_configure_and_log, args=(how, directory, w)) for w in range(WORKERS)]
    for worker in workers:
        worker.start()
    join_all(workers)


def _assert_one_writer(directory: str, tmp_path: Any, filtered: bool = True) -> None:
    """Every record once, whole, no secret (``filtered``), in files sized as one writer's."""
    app = os.path.join(directory, "app.log")
    _tally_all(app).assert_complete({w: RECORDS for w in range(WORKERS)})
    files = _files_oldest_first(app)
    secrets = [line for line in _lines(files) if SECRET in line]
    assert len(secrets) == (0 if filtered else WORKERS * RECORDS // 10)
    single = _single_writer_sizes(_lines(files), str(tmp_path / "single"))
    assert [os.path.getsize(name) for name in files] == single


@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_dictconfig_in_every_worker(tmp_path, method):
    """Eight workers each run the same dictConfig (a RotatingFileHandler at 16
    KiB with a filter, a TimedRotatingFileHandler each second for a logger that
    does not propagate): 0 lost, 0 duplicated, 0 torn, and the rotated files
    are exactly those a single writer of the same lines makes."""
    directory = str(tmp_path / "logs")
    os.makedirs(directory)
    with mplog.setup(level="INFO"):
        _start(method, "dictConfig", directory)
    _assert_one_writer(directory, tmp_path)
    audit = _tally_all(os.path.join(directory, "audit.log"), prefix="AUDIT ")
    audit.assert_complete({w: RECORDS // 10 for w in range(WORKERS)})


@pytest.mark.timeout(240)
def test_without_mplog_the_workers_rotate_the_file_apart(tmp_path):
    """The same eight workers without mplog: each rotates app.log on its own
    idea of its size, so the files are not one writer's (records are lost or
    the rotation count is off)."""
    directory = str(tmp_path / "logs")
    os.makedirs(directory)
    _start("fork", "dictConfig", directory)
    app = os.path.join(directory, "app.log")
    files = _files_oldest_first(app)
    found = _tally_all(app)
    complete = sum(found.count(w) for w in range(WORKERS)) == WORKERS * RECORDS and not found.duplicated()
    single = _single_writer_sizes(_lines(files), str(tmp_path / "single"))
    assert not complete or [os.path.getsize(name) for name in files] != single


@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["fileConfig", "basicConfig"])
def test_file_and_basic_config_in_every_worker(tmp_path, how):
    """fileConfig (an ini file) and basicConfig(filename=..., filemode="w",
    force=True) run in every spawn worker: as with dictConfig (and the file is
    truncated once, by the listener, not by each worker)."""
    directory = str(tmp_path / "logs")
    os.makedirs(directory)
    _write_ini(directory)
    with mplog.setup(level="INFO"):
        _start("spawn", how, directory)
    app = os.path.join(directory, "app.log")
    if how == "fileConfig":  # which has no filters
        _assert_one_writer(directory, tmp_path, filtered=False)
        return
    found = tally(app)  # basicConfig: a plain FileHandler
    found.assert_complete({w: RECORDS for w in range(WORKERS)})
    assert len(found.other) == WORKERS * RECORDS // 10  # the secrets: basicConfig sets no filter


def _log_to_audit(worker: int) -> None:
    log_records(worker, RECORDS)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_handlers_inherited_at_fork_are_taken_over(tmp_path, listener):
    """A named logger's RotatingFileHandler (propagate=False), configured in
    the parent before setup() and so not adopted: the parent and every forked
    worker log through it, and its file is one writer's."""
    directory = str(tmp_path / "logs")
    os.makedirs(directory)
    logger = logging.getLogger(LOGGER)
    handler = logging.handlers.RotatingFileHandler(
        os.path.join(directory, "app.log"), maxBytes=MAX_BYTES, backupCount=10000, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with mplog.setup(logging.NullHandler(), level="INFO", listener=listener):
            context = multiprocessing.get_context("fork")
            workers = [context.Process(target=_log_to_audit, args=(w,)) for w in range(1, WORKERS)]
            for worker in workers:
                worker.start()
            log_records(0, RECORDS)
            join_all(workers)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    found = _tally_all(os.path.join(directory, "app.log"))
    found.assert_complete({w: RECORDS for w in range(WORKERS)})
    files = _files_oldest_first(os.path.join(directory, "app.log"))
    single = _single_writer_sizes(_lines(files), str(tmp_path / "single"))
    assert [os.path.getsize(name) for name in files] == single


@pytest.mark.timeout(240)
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_an_adopted_handler_shared_with_another_logger_has_one_writer(tmp_path, listener):
    """One RotatingFileHandler on the root (adopted by setup()) and on a named
    logger that does not propagate (as gunicorn's logconfig_dict may share one
    between ``app`` and ``gunicorn.access``): the named logger's records in
    every forked worker reach the listener's handler too; the file is one writer's."""
    directory = str(tmp_path / "logs")
    os.makedirs(directory)
    root, logger = logging.getLogger(), logging.getLogger(LOGGER)
    saved = root.handlers[:]
    handler = logging.handlers.RotatingFileHandler(
        os.path.join(directory, "app.log"), maxBytes=MAX_BYTES, backupCount=10000, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.handlers[:] = [handler]
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with mplog.setup(level="INFO", listener=listener):
            context = multiprocessing.get_context("fork")
            workers = [context.Process(target=_log_to_audit, args=(w,)) for w in range(1, WORKERS)]
            for worker in workers:
                worker.start()
            log_records(0, RECORDS)
            join_all(workers)
    finally:
        root.handlers[:] = saved
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    app = os.path.join(directory, "app.log")
    _tally_all(app).assert_complete({w: RECORDS for w in range(WORKERS)})
    files = _files_oldest_first(app)
    assert [os.path.getsize(name) for name in files] == _single_writer_sizes(_lines(files), str(tmp_path / "single"))


def _gz_namer(name: str) -> str:
    return name + ".gz"


@pytest.mark.timeout(60)
def test_a_handler_the_listener_cannot_build_fails_where_it_is_configured(log_path):
    """A RotatingFileHandler with a namer (code, which cannot cross to the
    listener): dictConfig fails at once, naming the handler and the way out,
    and what was logged before is in the file."""
    with mplog.setup(logging.FileHandler(log_path), level="INFO"):
        log_records(0, 10)
        config = {
            "version": 1,
            "incremental": False,
            "disable_existing_loggers": False,
            "handlers": {
                "rotating": {
                    "class": "logging.handlers.RotatingFileHandler",
                    "filename": log_path + ".rotating",
                    "maxBytes": MAX_BYTES,
                    ".": {"namer": _gz_namer},
                }
            },
            "loggers": {"rotating": {"handlers": ["rotating"]}},
        }
        with pytest.raises(ValueError) as raised:
            logging.config.dictConfig(config)
        cause = raised.value.__cause__
        while cause is not None and not isinstance(cause, mplog.SetupError):  # dictConfig wraps it twice
            cause = cause.__cause__
        assert "has a namer" in str(cause) and "mplog_takeover = False" in str(cause)
        log_records(0, 10, start=10)
    tally(log_path).assert_complete({0: 20})


def _configure_rotating(path: str, max_bytes: int) -> None:
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes)
    try:
        logging.getLogger("other").addHandler(handler)
    except mplog.SetupError as exc:
        assert "is already written by the listener as RotatingFileHandler" in str(exc), str(exc)
        assert f"maxBytes={max_bytes}" in str(exc), str(exc)
        os._exit(7)
    os._exit(0)


@pytest.mark.timeout(60)
def test_two_configurations_of_one_file_conflict_clearly(tmp_path):
    """The parent configures app.log rotated at 16 KiB; a worker configures it
    at 32 KiB: the worker's addHandler fails, saying what differs."""
    path = str(tmp_path / "app.log")
    with mplog.setup(logging.NullHandler()):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES)
        logging.getLogger("one").addHandler(handler)
        try:
            worker = multiprocessing.get_context("fork").Process(target=_configure_rotating, args=(path, 2 * MAX_BYTES))
            worker.start()
            worker.join(30)
            assert worker.exitcode == 7
        finally:
            logging.getLogger("one").removeHandler(handler)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["handler", "session"])
def test_opting_out_keeps_the_handler_in_its_process(tmp_path, how):
    """``handler.mplog_takeover = False`` (or ``setup(takeover=False)``): a
    handler the listener could not build is added, and writes its file itself."""
    path = str(tmp_path / "own.log")
    with mplog.setup(logging.NullHandler(), level="INFO", takeover=how != "session"):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES)
        handler.namer = _gz_namer
        if how == "handler":
            handler.mplog_takeover = False  # type: ignore[attr-defined]
        logger = logging.getLogger("own")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.info("kept")
            assert handler.stream is not None and not handler.stream.closed
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
            handler.close()
    with open(path) as file:
        assert file.read() == "kept\n"


def _dictconfig_then_log(directory: str, worker: int) -> None:
    logging.config.dictConfig(dict_config(directory))
    log_records(worker, RECORDS)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_dictconfig_in_the_parent_and_in_every_worker(tmp_path, listener):
    """The parent runs the same dictConfig after setup() (asking its own
    listener thread while dictConfig holds logging's lock), then its workers:
    one writer for all."""
    directory = str(tmp_path / "logs")
    os.makedirs(directory)
    with mplog.setup(level="INFO", listener=listener):
        logging.config.dictConfig(dict_config(directory))
        context = multiprocessing.get_context("fork")
        workers = [context.Process(target=_dictconfig_then_log, args=(directory, w)) for w in range(1, WORKERS)]
        for worker in workers:
            worker.start()
        log_records(0, RECORDS)
        join_all(workers)
    app = os.path.join(directory, "app.log")
    _tally_all(app).assert_complete({w: RECORDS for w in range(WORKERS)})
    files = _files_oldest_first(app)
    assert [os.path.getsize(name) for name in files] == _single_writer_sizes(_lines(files), str(tmp_path / "single"))


@pytest.mark.timeout(60)
def test_after_the_session_a_taken_over_handler_writes_itself_again(log_path):
    """The parent's taken-over handler, once the session stops, opens its
    file again and writes there (nothing is sent to a listener that is gone)."""
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    with mplog.setup(logging.NullHandler()):
        logger.addHandler(handler)
        log_records(0, 5)
    try:
        log_records(0, 5, start=5)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        handler.close()
    tally(log_path).assert_complete({0: 10})


def _mplog_file_handler_and_log(directory: str, worker: int) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(message)s"}},
            "handlers": {
                "app": {
                    "class": "mplog.FileHandler",
                    "filename": os.path.join(directory, "app.log"),
                    "max_bytes": MAX_BYTES,
                    "formatter": "plain",
                }
            },
            "root": {"level": "INFO", "handlers": ["app"]},
        }
    )
    log_records(worker, RECORDS)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_mplog_file_handlers_configured_in_every_worker(tmp_path, method):
    """``mplog.FileHandler`` in every worker's dictConfig: one listener
    instance writes and rotates the file; every record once, and each rotated
    file within max_bytes."""
    directory = str(tmp_path / "logs")
    os.makedirs(directory)
    with mplog.setup(level="INFO"):
        context = multiprocessing.get_context(method)
        workers = [context.Process(target=_mplog_file_handler_and_log, args=(directory, w)) for w in range(WORKERS)]
        for worker in workers:
            worker.start()
        join_all(workers)
    files = sorted(glob.glob(os.path.join(directory, "app.log*")))
    merged = str(tmp_path / "merged.log")
    with open(merged, "w", encoding="utf-8") as file:
        file.writelines(line + "\n" for line in _lines(files))
    tally(merged).assert_complete({w: RECORDS for w in range(WORKERS)})
    sizes = [os.path.getsize(name) for name in files]
    assert len(files) >= 2 and max(sizes) <= MAX_BYTES, sizes


def _queue_handler_config(directory: str) -> Dict[str, Any]:
    config = dict_config(directory)
    config["handlers"]["to_listener"] = {"class": "mplog.QueueHandler", "handlers": ["app"]}
    config["root"] = {"level": "INFO", "handlers": ["to_listener"]}
    return config


def _queue_handler_dictconfig_and_log(directory: str, worker: int) -> None:
    """A 3.12+ worker's dictConfig with the queue keys, then its listener started, as documented."""
    logging.config.dictConfig(_queue_handler_config(directory))
    listener = logging.getHandlerByName("to_listener").listener  # type: ignore[attr-defined]
    listener.start()
    log_records(worker, RECORDS)
    for seq in range(RECORDS // 10):
        logging.getLogger(LOGGER).info("%s %d from %d", SECRET, seq, worker)
    listener.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("mplog")], threading.enumerate()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="dictConfig takes the queue keys from Python 3.12")
@pytest.mark.timeout(240)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_queue_handler_configured_in_every_worker_gives_one_listener(tmp_path, method):
    """The same dictConfig with ``"class": "mplog.QueueHandler", "handlers":
    [...]`` in every worker of a session: no worker starts a listener of its
    own (the session's writes), and the file is one writer's."""
    directory = str(tmp_path / "logs")
    os.makedirs(directory)
    with mplog.setup(level="INFO"):
        context = multiprocessing.get_context(method)
        workers = [
            context.Process(target=_queue_handler_dictconfig_and_log, args=(directory, w)) for w in range(WORKERS)
        ]
        for worker in workers:
            worker.start()
        join_all(workers)
    _assert_one_writer(directory, tmp_path)


def _basic_config_without_force(path: str, worker: int) -> None:
    logging.basicConfig(filename=path, format="%(message)s", level="INFO")
    log_records(worker, RECORDS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_basic_config_without_force_configures_a_root_mplog_only_stands_in_for(tmp_path, method):
    """setup() with nothing to adopt: every worker's basicConfig(filename=...)
    (no force) configures its root as an empty one, as without mplog, and the
    file gets every record, written by the listener alone."""
    path = str(tmp_path / "app.log")
    logging.getLogger().handlers[:] = []  # pytest's own capture handlers (the fixture puts them back)
    with mplog.setup(level="INFO"):
        context = multiprocessing.get_context(method)
        workers = [context.Process(target=_basic_config_without_force, args=(path, w)) for w in range(4)]
        for worker in workers:
            worker.start()
        join_all(workers)
    tally(path).assert_complete({w: RECORDS for w in range(4)})


@pytest.mark.timeout(120)
def test_basic_config_without_force_keeps_the_handlers_given_to_setup(tmp_path):
    """setup(handler): the root is configured, so a worker's basicConfig
    without force does nothing there, as in a process whose root has handlers;
    its records reach setup()'s handler."""
    path, other = str(tmp_path / "app.log"), str(tmp_path / "other.log")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    with mplog.setup(handler, level="INFO"):
        worker = multiprocessing.get_context("spawn").Process(target=_basic_config_without_force, args=(other, 0))
        worker.start()
        join_all([worker])
    tally(path).assert_complete({0: RECORDS})
    assert not os.path.exists(other)


def test_a_requester_gone_before_its_answer_is_not_reported(log_path, capfd):
    """A process that asks the listener to take a handler over and is gone
    before the answer (``Pool.terminate()`` right after a worker started, say)
    is told nothing and says nothing: the listener writes no "request ...
    failed" line for it. (The snippet test of takeover_dictconfig.py saw that
    line in about 1 run of 6.)"""
    from mplog import _declare
    from mplog._recipes import recipe_of

    body = json.dumps(recipe_of(logging.FileHandler(log_path, delay=True))).encode("utf-8")
    with mplog.setup(level="INFO") as session:
        for _ in range(20):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(session.queue.address)
            sock.sendall(_declare.REQUEST.pack(_declare.START_BYTE[0], len(body)) + body)
            sock.close()  # gone before the answer
        mplog.complete()
    assert "take over" not in capfd.readouterr().err
