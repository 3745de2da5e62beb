"""mplog's QueueHandler and QueueListener keep the stdlib's contract: on any
queue the stdlib takes they do what ``logging.handlers``' classes do (each
check runs on both), and on an mplog.Queue what the stdlib documents holds too."""

from __future__ import annotations

import functools
import logging
import logging.config
import logging.handlers
import multiprocessing
import multiprocessing.managers
import os
import queue
import sys
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import mplog
from tests.conftest import Collect, run_in_child, wait_until

pytestmark = pytest.mark.timeout(120)

STDLIB = (logging.handlers.QueueHandler, logging.handlers.QueueListener)
MPLOG = (mplog.QueueHandler, mplog.QueueListener)
KINDS = ["queue.Queue", "queue.SimpleQueue", "multiprocessing.Queue", "Manager().Queue"]
NEEDS_DICTCONFIG_KEYS = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="dictConfig's handlers/queue/listener keys are new in Python 3.12"
)
# What the listener's handlers see of a record: the fields prepare() sets.
FIELDS = ("name", "levelno", "msg", "args", "message", "exc_info", "exc_text", "stack_info")


@pytest.fixture(scope="module")
def manager() -> Iterator[multiprocessing.managers.SyncManager]:
    with multiprocessing.Manager() as started:
        yield started


@pytest.fixture(params=KINDS)
def make_queue(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """Makes a new queue of one kind the stdlib takes."""
    return _queue_of_kind(request.param, request)


def _queue_of_kind(kind: str, request: pytest.FixtureRequest) -> Callable[[], Any]:
    if kind == "Manager().Queue":
        return request.getfixturevalue("manager").Queue  # type: ignore[no-any-return]
    makers = {"queue.Queue": queue.Queue, "queue.SimpleQueue": queue.SimpleQueue}
    if kind in makers:
        return makers[kind]  # type: ignore[return-value]
    made: List[Any] = []

    def make() -> Any:
        made.append(multiprocessing.Queue())
        return made[-1]

    def finish() -> None:
        # Let each queue's feeder thread write out what it holds (records a
        # listener left there) before the queue goes, or it says BrokenPipeError.
        for the_queue in made:
            the_queue.close()
            the_queue.join_thread()

    request.addfinalizer(finish)
    return make


def _exc_info() -> Any:
    try:
        raise ValueError("boom")
    except ValueError:
        return sys.exc_info()


_EXC_INFO = _exc_info()


def _record(with_exception: bool = True) -> logging.LogRecord:
    """A record with %-arguments, a traceback and a stack, as logger.exception(..., stack_info=True) makes."""
    exc_info = _EXC_INFO if with_exception else None
    return logging.LogRecord(
        "contract",
        logging.ERROR,
        __file__,
        1,
        "failed %s",
        ("here",),
        exc_info,
        "f",
        "Stack (most recent call last):\n  here",
    )


def _seen(record: logging.LogRecord) -> Tuple[Any, ...]:
    return tuple(getattr(record, field, "<unset>") for field in FIELDS)


def _through(
    classes: Tuple[type, type], new_queue: Callable[[], Any], formatter: Optional[logging.Formatter]
) -> List[Tuple[Any, ...]]:
    """What a Collect handler of a listener of ``classes`` sees of one record
    sent by their handler over a new queue."""
    handler_class, listener_class = classes
    collect = Collect()
    the_queue = new_queue()
    listener = listener_class(the_queue, collect)
    handler = handler_class(the_queue)
    if formatter is not None:
        handler.setFormatter(formatter)
    listener.start()
    try:
        handler.handle(_record())
    finally:
        listener.stop()
    return [_seen(r) for r in collect.records]


def test_mplog_classes_subclass_the_stdlib_classes():
    """isinstance checks (dictConfig's among them) take mplog's classes for the stdlib's."""
    assert issubclass(mplog.QueueHandler, logging.handlers.QueueHandler)
    assert issubclass(mplog.QueueListener, logging.handlers.QueueListener)


@pytest.mark.parametrize(
    "formatter", [None, logging.Formatter("%(levelname)s|%(message)s")], ids=["no formatter", "formatter"]
)
def test_a_record_reaches_the_handlers_as_through_the_stdlib(make_queue, formatter):
    """Through any queue the stdlib takes, the listener's handlers see what
    they see with the stdlib's classes: the handler's formatter's output as
    the message, no arguments, traceback or stack beside it."""
    assert _through(MPLOG, make_queue, formatter) == _through(STDLIB, make_queue, formatter)


@pytest.mark.parametrize(
    "formatter", [None, logging.Formatter("%(levelname)s|%(message)s")], ids=["no formatter", "formatter"]
)
def test_prepare_is_the_stdlib_s(make_queue, formatter):
    """prepare() returns a copy prepared as the stdlib's is, and leaves on the
    record given what the stdlib's leaves (the message and traceback text
    that formatting caches there)."""
    results = []
    for handler_class in (logging.handlers.QueueHandler, mplog.QueueHandler):
        handler = handler_class(make_queue())
        handler.setFormatter(formatter)
        record = _record()
        prepared = handler.prepare(record)
        assert prepared is not record
        results.append((_seen(prepared), _seen(record)))
    assert results[1] == results[0]


def test_enqueue_and_flush_are_the_stdlib_s(make_queue):
    """emit() puts the prepared record with put_nowait (an override of
    enqueue() gets it), and flush() does nothing, as logging.shutdown() calls it."""
    taken: List[List[Tuple[Any, ...]]] = []
    for handler_class in (logging.handlers.QueueHandler, mplog.QueueHandler):

        class Listing(handler_class):  # type: ignore[valid-type,misc]
            put: List[logging.LogRecord] = []

            def enqueue(self, record: logging.LogRecord) -> None:
                self.put.append(record)
                super().enqueue(record)

        put = Listing.put
        the_queue = make_queue()
        handler = Listing(the_queue)
        handler.handle(_record())
        handler.flush()
        logging.shutdown([weakref.ref(handler)])
        assert _seen(the_queue.get(timeout=30)) == _seen(put[0])
        taken.append([_seen(r) for r in put])
    assert taken[1] == taken[0]


@pytest.mark.parametrize("kind", ["mplog.Queue", *KINDS])
def test_respect_handler_level_is_false_unless_asked(kind, request):
    """As with the stdlib's listener (on a queue.Queue), every handler gets
    every record unless respect_handler_level=True is given; then only those
    at its level."""
    ours = (
        mplog.QueueHandler,
        mplog.QueueListener,
        mplog.Queue if kind == "mplog.Queue" else _queue_of_kind(kind, request),
    )
    results: Dict[type, List[Tuple[int, int]]] = {}
    for *classes, new_queue in ((*STDLIB, queue.Queue), ours):
        for respect in (None, False, True):
            quiet, loud = Collect(), Collect()
            quiet.setLevel(logging.CRITICAL)
            the_queue = new_queue()
            kwargs = {} if respect is None else {"respect_handler_level": respect}
            listener = classes[1](the_queue, quiet, loud, **kwargs)
            if respect is None:
                assert listener.respect_handler_level is False
            handler = classes[0](the_queue)
            listener.start()
            try:
                handler.handle(_record(with_exception=False))
            finally:
                listener.stop()
            results.setdefault(classes[1], []).append((len(quiet.records), len(loud.records)))
    assert results[mplog.QueueListener] == results[logging.handlers.QueueListener] == [(1, 1), (1, 1), (0, 1)]


def _outcome(call: Callable[[], Any]) -> Optional[type]:
    try:
        call()
    except Exception as exc:
        return type(exc)
    return None


def test_stop_before_start_and_twice_as_the_stdlib(make_queue):
    """stop() before start(), and a second stop(), do what they do with the
    stdlib's listener on this Python (nothing on 3.13, an AttributeError on
    3.8), and so does start() after them."""
    outcomes = []
    for listener_class in (logging.handlers.QueueListener, mplog.QueueListener):
        collect = Collect()
        the_queue = make_queue()
        listener = listener_class(the_queue, collect)
        steps = [_outcome(listener.stop)]
        listener.start()
        steps.append(_outcome(listener.stop))
        steps.append(_outcome(listener.stop))
        listener.start()
        logging.handlers.QueueHandler(the_queue).handle(_record(with_exception=False))
        listener.stop()
        steps.append(len(collect.records))
        outcomes.append(steps)
    assert outcomes[1] == outcomes[0]


@pytest.mark.parametrize("runner", ["thread", "process"])
def test_an_mplog_listener_stops_quietly_and_restarts_at_the_same_address(runner, tmp_path):
    """On an mplog.Queue, stop() before start() and twice does nothing (as
    the stdlib's does on 3.13), and a listener started again after
    stop() serves the same address: a process that connects then reaches it."""
    path = str(tmp_path / "log")
    handler = logging.FileHandler(path)
    the_queue = mplog.Queue()
    listener = mplog.QueueListener(the_queue, handler, runner=runner)
    listener.stop()
    for round_number in range(2):
        listener.start()
        assert run_in_child(_log_once, the_queue, f"round {round_number}") == 0
        listener.stop()
        listener.stop()
    handler.close()
    with open(path) as log:
        assert log.read().splitlines() == ["round 0", "round 1"]


def _log_once(the_queue: mplog.Queue, message: str) -> None:
    """In a forked child: log ``message`` through a new handler on ``the_queue``."""
    mplog.QueueHandler(the_queue).handle(logging.makeLogRecord({"msg": message}))


@pytest.mark.parametrize("runner", ["thread", "process"])
def test_a_second_listener_on_a_served_address_gets_a_runtime_error(runner):
    """A second listener on the address of a running one fails at start()
    with a RuntimeError naming it, and leaves the first one serving."""
    the_queue = mplog.Queue()
    collect = Collect()
    first = mplog.QueueListener(the_queue, collect)
    first.start()
    try:
        second = mplog.QueueListener(mplog.Queue(the_queue.address), Collect(), runner=runner)
        with pytest.raises(RuntimeError, match=the_queue.address):
            second.start()
        assert run_in_child(_log_once, the_queue, "still served") == 0
        second.stop()
    finally:
        first.stop()
    assert [r.getMessage() for r in collect.records] == ["still served"]


def test_a_queue_leaves_no_directory_behind():
    """A queue that no listener serves leaves no directory; one that a
    listener served, none once it stopped."""
    never_served = mplog.Queue()
    assert not os.path.exists(os.path.dirname(never_served.address))
    served = mplog.Queue()
    listener = mplog.QueueListener(served, Collect())
    listener.start()
    assert os.path.exists(served.address)
    listener.stop()
    assert not os.path.exists(os.path.dirname(served.address))


def _child_logs(message: str) -> None:
    logging.getLogger("contract.child").error(message, exc_info=ValueError("inner"))


def test_a_formatter_on_mplog_s_handler_makes_the_message(log_path):
    """With a formatter on the worker handler of a session, the listener's
    file handler writes its own format around that formatter's output, for
    records of this process and of a forked child (whose line is formatted
    in the child), the traceback only where that formatter put it."""
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("file: %(message)s"))
    with mplog.setup(handler, level="INFO") as session:
        worker_handler = logging.getLogger().handlers[0]
        assert isinstance(worker_handler, mplog.QueueHandler) and worker_handler.queue is session.queue
        worker_handler.setFormatter(logging.Formatter("worker %(levelname)s %(message)s|%(exc_text)s"))
        logging.getLogger("contract").error("parent")
        assert run_in_child(_child_logs, "child") == 0
    with open(log_path, encoding="utf-8") as log:
        lines = log.read().splitlines()
    assert lines[0] == "file: worker ERROR parent|None"
    assert lines[1].startswith("file: worker ERROR child|None") and lines[-1] == "ValueError: inner"


@pytest.mark.parametrize("kind", ["multiprocessing.Queue", "Manager().Queue"])
def test_records_of_child_processes_cross_a_multiprocessing_queue(kind, request):
    """Records put by another process on a queue that crosses processes reach
    mplog's listener on it, as they reach the stdlib's."""
    new_queue = _queue_of_kind(kind, request)
    seen = {}
    for listener_class in (logging.handlers.QueueListener, mplog.QueueListener):
        collect = Collect()
        the_queue = new_queue()
        listener = listener_class(the_queue, collect)
        listener.start()
        try:
            # A Process, not os._exit: a multiprocessing.Queue's feeder thread must finish.
            child = multiprocessing.get_context("fork").Process(target=_put_from_child, args=(the_queue,))
            child.start()
            child.join(60)
            assert child.exitcode == 0
            wait_until(functools.partial(getattr, collect, "records"), "the child's record")
        finally:
            listener.stop()
        seen[listener_class] = [_seen(r) for r in collect.records]
    assert seen[mplog.QueueListener] == seen[logging.handlers.QueueListener]


def _put_from_child(the_queue: Any) -> None:
    mplog.QueueHandler(the_queue).handle(_record())


# --- dictConfig (Python 3.12+) -------------------------------------------------


def _dict_config(collect: logging.Handler, **queue_handler: Any) -> Dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "collect": {"()": lambda: collect, "level": "WARNING"},
            "to_listener": {"class": "mplog.QueueHandler", "handlers": ["collect"], **queue_handler},
        },
        "root": {"handlers": ["to_listener"], "level": "INFO"},
    }


@NEEDS_DICTCONFIG_KEYS
@pytest.mark.parametrize("queue_spec", ["queue.Queue", "multiprocessing.Queue"])
def test_dictconfig_takes_mplog_s_listener_on_the_queue_it_names(queue_spec):
    """dictConfig accepts "listener": "mplog.QueueListener" and gives it the
    named queue, handlers and respect_handler_level, as with the stdlib's."""
    collect = Collect()
    logging.config.dictConfig(
        _dict_config(collect, queue=queue_spec, listener="mplog.QueueListener", respect_handler_level=True)
    )
    handler = logging.getHandlerByName("to_listener")
    listener = handler.listener
    assert type(listener) is mplog.QueueListener and listener.queue is handler.queue
    assert not isinstance(handler.queue, mplog.Queue) and listener.handlers == (collect,)
    listener.start()
    try:
        logging.getLogger("contract").info("below the handler's level")
        logging.getLogger("contract").warning("at it")
    finally:
        listener.stop()
    assert [r.getMessage() for r in collect.records] == ["at it"]


@NEEDS_DICTCONFIG_KEYS
@pytest.mark.parametrize("listener_spec", [None, "mplog.QueueListener"])
def test_dictconfig_without_a_queue_uses_mplog_s_channel(listener_spec):
    """With no "queue" key, mplog's handler and its listener share a new
    mplog.Queue (not dictConfig's queue.Queue), so that the records of a
    forked child reach the listener too."""
    collect = Collect()
    extra = {} if listener_spec is None else {"listener": listener_spec}
    logging.config.dictConfig(_dict_config(collect, **extra))
    handler = logging.getHandlerByName("to_listener")
    assert isinstance(handler.queue, mplog.Queue)
    assert type(handler.listener) is mplog.QueueListener and handler.listener.queue is handler.queue
    handler.listener.start()
    try:
        logging.getLogger("contract").warning("parent")
        assert run_in_child(_child_logs, "child") == 0
    finally:
        handler.listener.stop()
    assert sorted(r.getMessage() for r in collect.records) == ["child", "parent"]
