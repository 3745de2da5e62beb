"""The worker's formatters give the stock Formatter's output, character for
character, for any %-format, message format and arguments, or fail where it fails."""

from __future__ import annotations

import logging
import sys
import time
import types
from typing import Any, Callable, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mplog._config import TextTarget
from mplog._format import PercentFormatter, SecondCachingFormatter

# Pieces of a handler's format: fields with various conversions, the message
# (plain, padded, twice), literals, %% and stray % signs.
FORMAT_PIECES = st.sampled_from(
    [
        "%(asctime)s",
        "%(message)s",
        "%(message)-30s",
        "%(levelname)-8s",
        "%(process)d",
        "%(name)s",
        "%(lineno)04d",
        "%(msecs)03d",
        "%(created)f",
        "%(relativeCreated).1f",
        "%(thread)x",
        "%(missing)s",
        "%(getMessage)s",
        "%(levelno)r",
        "%%",
        "%",
        "%s",
        " ",
        ": ",
        "[",
        "]",
        "é",
        "s",
        "d",
        "(",
        "\n",
    ]
)
# Pieces of a message format, and arguments that fit some of them and not others.
MESSAGE_PIECES = st.sampled_from(
    ["%s", "%d", "%r", "%5.2f", "%-4s", "%*d", "%.*f", "%x", "%c", "%%", "%", "%(key)s", "%l", "%ld", " ", "w=", "☃"]
)
ARGUMENTS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from([None, b"bytes", ("a", 1), object]),
)


def _record(
    msg: Any, args: Any, created: float = 1764633600.123456, kind: type = logging.LogRecord, **extra: Any
) -> logging.LogRecord:
    record = kind("app.db", logging.WARNING, "/src/app.py", 42, msg, args, None, "query")
    record.created = created
    record.msecs = (created - int(created)) * 1000  # fractional, as Python 3.8-3.10 leave it
    record.relativeCreated = 1234.5
    record.__dict__.update(extra)
    return record


def _outcome(render: Callable[[logging.LogRecord], str], record: logging.LogRecord) -> Tuple[str, str]:
    """What rendering gives: ("ok", text) or ("error", the exception's type)."""
    try:
        return "ok", render(record)
    except Exception as exc:
        return "error", type(exc).__name__


def _check(fmt: str, msg: Any, args: Any, datefmt: Optional[str] = None, **extra: Any) -> None:
    try:
        stock = logging.Formatter(fmt, datefmt)
    except ValueError:  # the stock Formatter refuses it: TextTarget.of never sees it
        return
    mine = PercentFormatter(fmt, datefmt)
    expected = _outcome(stock.format, _record(msg, args, **extra))
    assert _outcome(mine.format, _record(msg, args, **extra)) == expected
    expected_line = (expected[0], expected[1] + "\n" if expected[0] == "ok" else expected[1])
    assert _outcome(mine.format_line, _record(msg, args, **extra)) == expected_line
    # Again, now that the message's spliced format is cached.
    assert _outcome(mine.format_line, _record(msg, args, **extra)) == expected_line


@settings(max_examples=1500, deadline=None)
@given(
    fmt=st.lists(FORMAT_PIECES, max_size=8).map("".join),
    msg=st.lists(MESSAGE_PIECES, max_size=6).map("".join),
    args=st.lists(ARGUMENTS, max_size=4).map(tuple),
)
def test_any_format_message_and_arguments(fmt, msg, args):
    """Random formats, message formats and arguments: same text, or an error where the stock one errs."""
    _check(fmt, msg, args)


@pytest.mark.parametrize(
    "msg, args",
    [
        ("request %d from %s took %.3f ms status %s", (7, "10.0.0.1", 1.234, "ok")),
        ("no arguments, 100% literal", ()),
        ("rate %d%%", (5,)),
        ("a stray % then %s", ("x",)),  # ValueError in the stock formatter
        ("ends in a stray %", ("x",)),
        ("too few %s %s", ("x",)),
        ("too many %s", ("x", "y")),
        ("%(key)s", ({"key": "mapping"},)),  # LogRecord unwraps a lone mapping
        ("%(key)s", ("tuple for a mapping format",)),
        (ValueError("not a str"), ()),
        ("%s", (ValueError("an exception argument"),)),
        ("width %*d and precision %.*f", (5, 42, 2, 3.14159)),
    ],
)
@pytest.mark.parametrize(
    "fmt",
    [
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        "%(message)s",
        "%(message)s (%(name)s)",
        "[%(levelname)s] %(message)s %(message)s",
        "%(message)s: %(lineno)d%%",
        "%(name)s %(message)ss",  # a stray % at the end of a message must not take this "s"
    ],
)
def test_known_cases(fmt, msg, args):
    """Common and tricky messages under common and tricky formats."""
    _check(fmt, msg, args)


def test_exception_and_stack_take_the_stock_path():
    """A record with a traceback or stack gets them, formatted as the stock formatter does."""
    try:
        raise KeyError("boom")
    except KeyError:
        exc_info = sys.exc_info()
    fmt = "%(asctime)s %(levelname)s %(message)s"
    for extra in ({"exc_info": exc_info}, {"stack_info": "Stack (most recent call last):\n  here"}):
        _check(fmt, "failed %s", ("x",), **extra)


@pytest.mark.parametrize("datefmt", [None, "%H:%M:%S", "%Y"])
@pytest.mark.parametrize("converter", [time.localtime, time.gmtime])
@pytest.mark.parametrize("base", [1764633599.0, -3.0])
def test_asctime_across_milliseconds_and_seconds(datefmt, converter, base):
    """The cached time is right for every millisecond and second boundary, local
    or UTC, after 1970 or before; format and format_line each keep their own
    formatter, so each meets every new time first."""
    stock = logging.Formatter("%(asctime)s %(message)s", datefmt)
    mine = PercentFormatter("%(asctime)s %(message)s", datefmt)
    mine_lines = PercentFormatter("%(asctime)s %(message)s", datefmt)
    other_style = SecondCachingFormatter("{asctime} {message}", datefmt, "{")
    stock_other = logging.Formatter("{asctime} {message}", datefmt, "{")
    for formatter in (stock, mine, mine_lines, other_style, stock_other):
        formatter.converter = converter  # type: ignore[method-assign]
    for step in [0.0, 0.0004, 0.001, 0.5, 0.999, 0.9996, 1.0, 1.0001, 2.0, 2.5, 1.5, 61.25, 3600.5, 0.25]:

        def record(step: float = step) -> logging.LogRecord:
            return _record("t %s", (step,), base + step)

        expected = stock.format(record())
        assert (mine.format(record()), mine_lines.format_line(record())) == (expected, expected + "\n")
        assert other_style.format(record()) == stock_other.format(record())


def test_message_formats_built_at_run_time_do_not_grow_the_cache():
    """Thousands of distinct message formats (f-strings with arguments) keep the cache bounded."""
    mine = PercentFormatter("%(levelname)s %(message)s", None)
    for n in range(5000):
        assert mine.format_line(_record(f"user {n}: %s", ("x",))) == f"WARNING user {n}: x\n"
    assert len(mine._spliced) <= 256


class Redacting(logging.LogRecord):
    """A record class with its own getMessage, as a record factory may install."""

    def getMessage(self) -> str:  # noqa: N802
        return super().getMessage().replace("hunter2", "***")


def test_a_record_class_with_its_own_message_keeps_it():
    """The message of a record class that overrides getMessage is its getMessage's."""
    _check("%(levelname)s %(message)s", "password=%s", ("hunter2",), kind=Redacting)
    line = PercentFormatter("%(message)s", None).format_line(_record("pw=%s", ("hunter2",), kind=Redacting))
    assert line == "pw=***\n"


class Answering(logging.LogRecord):
    """A record class with a class-level field and a __getattr__ that answers
    any other: the stock formatter reads the record's __dict__, so neither counts."""

    user = "from the class"

    def __getattr__(self, name: str) -> str:
        return f"<{name}>"


def test_a_getmessage_patched_on_logrecord_is_used(monkeypatch):
    """A library that replaces LogRecord.getMessage for every record (to redact,
    say) gets its message: splicing stands in for logging's own only."""
    stock_get_message = logging.LogRecord.getMessage
    monkeypatch.setattr(logging.LogRecord, "getMessage", lambda self: stock_get_message(self).replace("hunter2", "***"))
    _check("%(levelname)s %(message)s", "password=%s", ("hunter2",))
    line = PercentFormatter("%(name)s: %(message)s", None).format_line(_record("pw=%s", ("hunter2",)))
    assert line == "app.db: pw=***\n"


def test_fields_are_found_where_the_stock_formatter_finds_them():
    """Fields are read as attributes only where that gives what the record's
    __dict__ gives: not from a record subclass, not for a name of LogRecord's
    own (a method), not for a dotted name; a class attribute is no field."""
    for fmt in ("%(user)s %(message)s", "%(request)s %(message)s", "%(message)s %(user)s"):
        _check(fmt, "m %s", ("x",), kind=Answering)
    _check("%(user)s %(message)s", "m %s", ("x",), kind=Answering, user="from the record")
    _check("%(getMessage)s %(message)s", "m %s", ("x",))
    _check("%(__class__)s %(message)s", "m %s", ("x",))
    _check("%(a.b)s %(message)s", "m %s", ("x",), **{"a.b": "dotted", "a": types.SimpleNamespace(b="nested")})


def test_odd_but_accepted_formats():
    """A key with parentheses (% nests them), a missing field (ValueError, as the
    stock one says), and a format logging accepted only with validate=False."""
    _check("%(u(id)s)s %(message)s", "m %s", ("x",), **{"u(id)s": "A", "u(id": "B"})
    _check("%(missing)s %(message)s", "m %s", ("x",))
    assert TextTarget(0, "plain line", None, "%", False).formatter().format(_record("m", ())) == "plain line"
    assert TextTarget(0, "{message} {{x}}", None, "{", False).formatter().format(_record("m", ())) == "m {x}"


def test_times_before_1970_and_a_changed_datefmt():
    """A negative time is floored as strftime floors it; formatTime with another
    datefmt in the same second is rendered anew."""
    _check("%(asctime)s %(message)s", "m %s", ("x",), created=-0.5)
    _check("%(asctime)s %(message)s", "m %s", ("x",), created=-86400.25)
    mine, stock = PercentFormatter("%(message)s", None), logging.Formatter("%(message)s")
    record = _record("m", (), created=100.0)
    for datefmt in (None, "%Y", None, "%H:%M"):
        assert mine.formatTime(record, datefmt) == stock.formatTime(record, datefmt)
    # A line after formatTime was asked for another datefmt in the same millisecond.
    lines, stock = PercentFormatter("%(asctime)s %(message)s", None), logging.Formatter("%(asctime)s %(message)s")
    record = _record("m %s", ("x",), created=100.0)
    assert lines.formatTime(record, "%Y") == stock.formatTime(record, "%Y")
    assert lines.format_line(record) == stock.format(record) + "\n"
