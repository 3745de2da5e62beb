"""The wire format: records survive encode/decode, oversized or odd ones degrade
with a note instead of failing."""

from __future__ import annotations

import enum
import logging
import pickle

import pytest

import mplog
from mplog import _codec, _config


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
