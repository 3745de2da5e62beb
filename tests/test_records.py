"""Guarantee 5: whatever a record holds arrives intact, and a logging call never
raises into the caller."""

from __future__ import annotations

import logging
import multiprocessing
import threading

import pytest

import mplog
from mplog._targets import route_targets
from tests.conftest import Collect


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    __repr__ = __str__


BIG = "é" * (1 << 20)


def _log_everything() -> None:
    log = logging.getLogger("content")
    try:
        raise ValueError("boom ☃")
    except ValueError:
        log.exception("failed %s", "here")
    log.info("with stack", stack_info=True)
    log.info("extra", extra={"user": "ada", "n": 3, "obj": threading.Lock()})
    log.info("unicode: 日本語 עברית 🎉 \x00 nul")
    log.info("lock arg %s", threading.Lock())
    log.info("lambda arg %r", lambda: 1)
    log.info("%s", BIG)
    log.info("bad %d format", "x")
    log.info("%s", Unprintable())
    log.info("done")


def _worker(initializer) -> None:
    initializer()
    _log_everything()


@pytest.mark.parametrize("where", ["parent", "spawn", "fork"])
def test_content_arrives_intact(where):
    """Tracebacks, stack_info, extra fields, non-ASCII, unpicklable arguments, a
    1 MiB message, broken format arguments and a broken __str__."""
    collect = Collect()
    with mplog.setup(collect, level="INFO"):
        if where == "parent":
            _log_everything()
        else:
            process = multiprocessing.get_context(where).Process(target=_worker, args=(mplog.initializer,))
            process.start()
            process.join(60)
            assert process.exitcode == 0
    by_message = {r.getMessage().split(" [mplog")[0]: r for r in collect.records}
    failed = by_message["failed here"]
    assert "ValueError: boom ☃" in failed.exc_text and "Traceback" in failed.exc_text
    assert "_log_everything" in by_message["with stack"].stack_info
    extra = by_message["extra"]
    assert (extra.user, extra.n) == ("ada", 3)
    assert "lock" in str(extra.obj)
    assert "unicode: 日本語 עברית 🎉 \x00 nul" in by_message
    assert any(m.startswith("lock arg <unlocked _thread.lock") for m in by_message)
    assert any(m.startswith("lambda arg <function") for m in by_message)
    assert by_message[BIG].getMessage() == BIG
    bad = [r.getMessage() for r in collect.records if r.getMessage().startswith("'bad %d format'")]
    assert bad and "could not be rendered" in bad[0] and "TypeError" in bad[0]
    broken = [r.getMessage() for r in collect.records if "no str for you" in r.getMessage()]
    assert broken and "could not be rendered" in broken[0]
    assert collect.records[-1].getMessage() == "done"
    assert {r.process for r in collect.records} == {collect.records[0].process}
    formatted = logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s").format(failed)
    assert formatted.endswith(failed.exc_text)


def test_handler_levels_and_filters_are_honoured(tmp_path):
    """Each handler gets only what its level and filters let through."""
    errors, everything = Collect(), Collect()
    errors.setLevel(logging.ERROR)
    everything.addFilter(lambda record: "secret" not in record.getMessage())
    with mplog.setup(errors, everything, level="DEBUG"):
        process = multiprocessing.get_context("spawn").Process(target=_levels_worker, args=(mplog.initializer,))
        process.start()
        process.join(60)
        assert process.exitcode == 0
    assert [r.getMessage() for r in errors.records] == ["an error"]
    assert [r.getMessage() for r in everything.records] == ["a debug", "an error"]


def _levels_worker(initializer) -> None:
    initializer()
    logging.debug("a debug")
    logging.info("a secret")
    logging.error("an error")


class SelfFormatting(logging.FileHandler):
    """A subclass, so the listener formats for it itself (the record path)."""


FULL_FORMAT = (
    "%(asctime)s %(msecs)03d %(process)d %(processName)s %(thread)d %(name)s %(levelname)s "
    "%(module)s %(funcName)s:%(lineno)d %(message)s"
)


@pytest.mark.parametrize("where", ["spawn", "fork"])
@pytest.mark.parametrize("style, fmt", [("%", FULL_FORMAT), ("{", "{asctime} {levelname:>8} {name} {message}")])
def test_lines_formatted_in_the_worker_are_identical(tmp_path, where, style, fmt):
    """A plain FileHandler gets lines the worker formatted; a subclass formats in
    the listener. Given the same formatter, the two files are byte-identical."""
    formatter = logging.Formatter(fmt, style=style)
    fast, slow = logging.FileHandler(tmp_path / "fast.log"), SelfFormatting(tmp_path / "slow.log")
    for handler in (fast, slow):
        handler.setFormatter(formatter)
    with mplog.setup(fast, slow, level="INFO") as session:
        targets, send_record = route_targets(session.handlers)
        assert len(targets) == 1 and send_record
        process = multiprocessing.get_context(where).Process(target=_worker, args=(mplog.initializer,))
        process.start()
        process.join(60)
        assert process.exitcode == 0
    fast_text = (tmp_path / "fast.log").read_text()
    assert fast_text == (tmp_path / "slow.log").read_text()
    assert "Traceback" in fast_text and "could not be rendered" in fast_text and BIG in fast_text


@pytest.mark.parametrize("handlers", [1, 2])
@pytest.mark.parametrize("buffered", [False, True])
def test_a_record_without_the_usual_fields_is_still_written(tmp_path, handlers, buffered):
    """A record some code built by hand, without ``process``: the logging call
    returns and the line is written, with one text handler (the worker's
    direct path) and with two."""
    files = [logging.FileHandler(tmp_path / f"{n}.log") for n in range(handlers)]
    for handler in files:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    with mplog.setup(*files, level="INFO", listener="process", buffered=buffered):
        record = logging.getLogger("app").makeRecord("app", logging.INFO, __file__, 1, "hello %s", ("x",), None)
        del record.process
        logging.getLogger("app").handle(record)
    for n in range(handlers):
        assert (tmp_path / f"{n}.log").read_text() == "INFO app: hello x\n"
