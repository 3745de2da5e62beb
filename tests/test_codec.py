"""The wire format: records survive encode/decode, oversized or odd ones degrade
with a note instead of failing."""

from __future__ import annotations

import enum
import logging
import os
import pickle
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mplog
from mplog import _codec, _config

from .conftest import wait_pid


def _prepared(msg="hello %s", args=("world",), **extra) -> logging.LogRecord:
    record = logging.LogRecord("app.db", logging.WARNING, "/src/app.py", 42, msg, args, None, "query")
    record.__dict__.update(extra)
    return mplog.QueueHandler(mplog.Queue("/nonexistent")).prepare(record)


def _roundtrip(record: logging.LogRecord) -> logging.LogRecord:
    frame = _codec.encode(record)
    start, size = _codec.HEADER.unpack_from(frame)
    assert start == _codec.RECORD_START and size == len(frame) - _codec.HEADER.size
    route, created, decoded, texts = _codec.decode(frame[_codec.HEADER.size :])
    assert route == 0 and texts is None and decoded is not None and created == record.created
    return decoded


def test_texts_travel_with_or_without_the_record():
    """A frame can carry formatted lines (None where a handler's level says no),
    with the record or without it."""
    for record in (_prepared(), None):
        frame = _codec.encode(record, ["line one ☃", None], route=2, created=12.5)
        route, created, decoded, texts = _codec.decode(frame[_codec.HEADER.size :])
        assert route == 2 and texts == ("line one ☃", None)
        assert created == (12.5 if record is None else record.created)
        assert (decoded is None) == (record is None)


def test_standard_fields_roundtrip():
    """Every standard attribute comes back equal; formatting gives the same line."""
    record = _prepared()
    decoded = _roundtrip(record)
    for field in _codec.FIELDS:
        assert getattr(decoded, field) == getattr(record, field), field
    fmt = logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s %(funcName)s:%(lineno)d %(message)s")
    assert fmt.format(decoded) == fmt.format(record)


class Color(enum.IntEnum):
    RED = 1


def test_extras_that_marshal_cannot_carry_become_strings():
    """Plain extras keep their type; others (enums, objects) arrive as their str()."""
    decoded = _roundtrip(_prepared(user="ada", n=3, tags=["a", "b"], color=Color.RED, obj=object()))
    assert (decoded.user, decoded.n, decoded.tags) == ("ada", 3, ["a", "b"])
    assert decoded.color == str(Color.RED)
    assert decoded.obj.startswith("<object object at")


def test_oversized_record_is_truncated_with_a_note(monkeypatch):
    """A record larger than the frame limit is cut down and says so."""
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", 10_000)
    decoded = _roundtrip(_prepared("%s", ("x" * 50_000,)))
    assert decoded.msg.startswith("x" * 1000)
    assert "record truncated" in decoded.msg and len(decoded.msg) < 10_000
    frame = _codec.encode(None, ["y" * 50_000])
    _, _, _, texts = _codec.decode(frame[_codec.HEADER.size :])
    assert texts[0].startswith("y" * 1000) and "record truncated" in texts[0] and len(texts[0]) < 10_000


NOTE = "[mplog: record truncated;"


def _fitted(record: Optional[logging.LogRecord], texts: Any = None) -> _codec.Decoded:
    """Encode, check the frame is one the listener accepts, and decode it."""
    frame = _codec.encode(record, texts, route=3, created=7.5)
    start, size = _codec.HEADER.unpack_from(frame)
    assert start == _codec.RECORD_START and size == len(frame) - _codec.HEADER.size
    assert size <= _codec.MAX_PAYLOAD, f"a {size}-byte payload; the listener refuses over {_codec.MAX_PAYLOAD}"
    decoded = _codec.decode(frame[_codec.HEADER.size :])
    assert decoded[0] == 3 and decoded[1] == (7.5 if record is None else record.created)
    return decoded


def _check_cut(original: Optional[str], kept: Optional[str]) -> None:
    """A text comes back whole, or as a beginning of itself and the note."""
    if kept == original:
        return
    assert original is not None and kept is not None and NOTE in kept, (original and original[:50], kept)
    assert original.startswith(kept[: kept.index(" " + NOTE)])


def test_twelve_long_texts_fit_the_limit(monkeypatch):
    """12 texts of 50,000 characters at a 10,000-byte limit (the payload used
    to come out at 15,872 bytes, which the listener refuses): each keeps an
    equal share of the room and says it was cut."""
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", 10_000)
    texts = [chr(ord("a") + i) * 50_000 for i in range(12)]
    for record in (None, _prepared("%s", ("x" * 50_000,))):
        frame = _codec.encode(record, texts)
        assert len(frame) - _codec.HEADER.size > 9_000  # room is used, not wasted
        _, _, decoded, kept = _fitted(record, texts)
        assert kept is not None and len(kept) == 12
        for original, text in zip(texts, kept):
            _check_cut(original, text)
            assert text.startswith(original[:550])
        if record is not None:
            assert decoded is not None and decoded.msg.startswith("x" * 550) and NOTE in decoded.msg


def test_short_texts_beside_a_long_one_are_kept_whole(monkeypatch):
    """Only what is too long is cut: a short line next to a huge one arrives
    as it was (it used to arrive as None, so its handler wrote nothing)."""
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", 10_000)
    _, _, _, kept = _fitted(None, ["short line", None, "y" * 50_000, "another"])
    assert kept is not None and kept[:2] == ("short line", None) and kept[3] == "another"
    _check_cut("y" * 50_000, kept[2])
    assert len(kept[2]) > 9_000


@pytest.mark.parametrize("char", ["a", "\xe9", "\u2603", "\U0001d11e", "\udc80"])
def test_text_longer_in_bytes_than_in_characters_fits(monkeypatch, char):
    """Non-ASCII text is measured in the bytes marshal writes (UTF-8, lone
    surrogates included), and cut on a character boundary."""
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", 10_000)
    record = _prepared("%s", (char * 20_000,), exc_text=char * 20_000, stack_info=char * 20_000)
    _, _, decoded, kept = _fitted(record, [char * 20_000, char * 3])
    assert decoded is not None and kept is not None
    assert decoded.msg.startswith(char * 100) and decoded.exc_text.startswith(char * 100)
    assert decoded.stack_info.startswith(char * 100) and kept[1] == char * 3
    _check_cut(char * 20_000, kept[0])


def test_many_and_large_extras_fit(monkeypatch):
    """Thousands of extras, or huge ones, or unmarshallable ones: the frame fits;
    extras that fit arrive (as strings, as a truncated record's always did)."""
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", 10_000)
    many = {f"field_{i}": "v" * 100 for i in range(2_000)}
    _, _, decoded, _ = _fitted(_prepared(**many))
    assert decoded is not None and NOTE in decoded.msg
    large = {"small": 5, "big": "b" * 100_000, "nested": [["n" * 1000] * 50], "obj": object()}
    _, _, decoded, _ = _fitted(_prepared(**large), ["line"])
    assert decoded is not None and decoded.small == "5" and decoded.big.startswith("b" * 1000)
    assert decoded.obj.startswith("<object object at")
    huge_number = _prepared(n=10**5000, lineno=[1] * 10_000)
    _, _, decoded, _ = _fitted(huge_number)
    assert decoded is not None and NOTE in decoded.msg


@pytest.mark.parametrize("limit", [256, 1024])
def test_a_frame_fits_even_when_almost_nothing_does(monkeypatch, limit):
    """Hundreds of texts under a tiny limit: texts and extras give way to a
    record that says it was truncated; the frame still fits."""
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", limit)
    texts = ["t" * 1000] * 400
    for record in (None, _prepared("%s", ("m" * 5000,), **{f"k{i}": i for i in range(300)})):
        _, _, decoded, kept = _fitted(record, texts)
        if kept is None and decoded is not None:
            assert NOTE in decoded.msg


PIECES = st.builds(
    lambda char, count: char * count,
    st.sampled_from(["a", "\xe9", "\u2603", "\U0001d11e", "\udc80", "ab\n"]),
    st.integers(0, 30_000),
)
EXTRA_VALUES = st.one_of(PIECES, st.integers(), st.lists(PIECES, max_size=3), st.just(object()))
EXTRA_KEYS = st.from_regex(r"[a-z_]{1,8}", fullmatch=True).filter(lambda key: key not in _codec.STANDARD_ATTRIBUTES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    limit=st.integers(1024, 16_384),
    with_record=st.booleans(),
    msg=PIECES,
    exc_text=st.none() | PIECES,
    stack_info=st.none() | PIECES,
    extras=st.dictionaries(EXTRA_KEYS, EXTRA_VALUES, max_size=30),
    texts=st.none() | st.lists(st.none() | PIECES, max_size=30),
)
def test_every_frame_fits_the_limit(
    limit: int,
    with_record: bool,
    msg: str,
    exc_text: Optional[str],
    stack_info: Optional[str],
    extras: Dict[str, Any],
    texts: Optional[List[Optional[str]]],
):
    """Any number and size of texts and extras, any text: the payload is at
    most MAX_PAYLOAD; what arrives is whole or a beginning of itself, and a cut
    says so."""
    record = _prepared("%s", (msg,), exc_text=exc_text, stack_info=stack_info, **extras) if with_record else None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_codec, "MAX_PAYLOAD", limit)
        _, _, decoded, kept = _fitted(record, texts)
    if texts is not None and kept is not None:
        assert len(kept) == len(texts)
        for original, text in zip(texts, kept):
            _check_cut(original, text)
    if record is not None and decoded is not None:
        _check_cut(msg, decoded.msg)
        for field in ("exc_text", "stack_info"):
            original = getattr(record, field)
            assert getattr(decoded, field) == original or original.startswith(getattr(decoded, field))


def test_a_worker_sends_an_oversized_record_the_listener_accepts(tmp_path, monkeypatch):
    """End to end: 12 file handlers, a forked worker logs a line far over the
    limit; the listener keeps the connection and every file gets the cut line
    (the connection used to be refused, and the lines lost)."""
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", 10_000)
    paths = [tmp_path / f"app{i}.log" for i in range(12)]
    handlers = [logging.FileHandler(path, encoding="utf-8") for path in paths]
    with mplog.setup(*handlers, level="INFO"):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                logging.getLogger("big").info("%s", "z" * 50_000)
                logging.getLogger("big").info("after")
                code = 0
            finally:
                os._exit(code)
        assert wait_pid(pid) == 0
    for path in paths:
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2 and lines[0].startswith("z" * 500) and NOTE in lines[0] and lines[1] == "after"


def test_readable_lines_of_every_kind_of_frame():
    """What a sender that cannot reach the listener writes on stderr: text frames
    as they are, a record frame's first text or its message, an undecodable
    frame's error, and an unterminated tail."""
    garbage = b"\x00garbage"
    frames = b"".join(
        [
            _codec.text_frames(["one\n", "t\xe9"], "strict"),
            _codec.encode(_prepared(), [None, "formatted"]),
            _codec.encode(_prepared("just %s", ("the message",))),
            _codec.encode(None, [None, None]),
            _codec.HEADER.pack(_codec.RECORD_START, len(garbage)) + garbage,
            b"tail cut",  # unterminated: a sender killed mid-line
        ]
    )
    lines = _codec.readable_lines(frames)
    assert lines[:5] == ["one", "t\xe9", "formatted", "just the message", ""]
    assert lines[5].startswith("undecodable log frame (8 bytes)") and lines[6] == "tail cut"
    assert len(lines) == 7


@pytest.mark.parametrize("payload", [b"", b"\x00garbage", pickle.dumps({"a": 1}), b"\xe9\x01\x00\x00\x00"])
def test_garbage_is_rejected_with_valueerror(payload):
    """Anything that is not an mplog frame raises ValueError, never anything else."""
    with pytest.raises(ValueError, match="log frame"):
        _codec.decode(payload)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_queue_and_initializer_pickle_with_every_protocol(protocol):
    """A Queue pickles as its address; the initializer carries the active config."""
    queue = pickle.loads(pickle.dumps(mplog.Queue("/tmp/x/listener.sock"), protocol))
    assert queue.address == "/tmp/x/listener.sock" and queue._local_pid == 0
    with mplog.setup(logging.NullHandler(), level="INFO") as session:
        restored = pickle.loads(pickle.dumps(mplog.initializer, protocol))
        assert restored._config.address == session.queue.address
        assert restored._config.root_level == logging.INFO
        assert restored._config.routes[0].logger == ""


def test_worker_config_json_roundtrip():
    """The environment-variable form of the config parses back to the same value."""
    target = _config.TextTarget(0, "%(message)s", None, "%", False)
    routes = (_config.RouteConfig("", True, 0, (target,), False), _config.RouteConfig("gunicorn.access", False, 20))
    config = _config.WorkerConfig("/tmp/a/listener.sock", 20, routes, (("noisy", 40),))
    assert _config.WorkerConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="not an mplog config"):
        _config.WorkerConfig.from_json("{}")


def test_extras_that_would_hide_a_method_or_are_no_name_are_dropped():
    """A frame (from a hostile client of ``mplog serve``, say) whose extras
    name a LogRecord method, or are not strings, decodes into a record every
    formatter can format, keeping the harmless extras."""
    import marshal

    prepared = _prepared("hello %s", ("you",))
    fields = tuple(getattr(prepared, field) for field in _codec.FIELDS)
    extras = {"getMessage": 1, "__repr__": 2, 5: "five", "user": "ann"}
    payload = marshal.dumps((0, 0.0, fields, extras, None))
    record = _codec.decode(payload)[2]
    assert record is not None and record.user == "ann"
    assert logging.Formatter("%(message)s %(user)s").format(record) == "hello you ann"
    assert 5 not in vars(record) and "getMessage" not in vars(record)
