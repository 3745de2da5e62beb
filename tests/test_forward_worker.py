"""SyslogHandler messages made in the workers: a plain handler's route takes
text frames (or lines, beside another text handler), and what is sent is
byte for byte what the listener makes from the record when it cannot take
them (a filter on the handler), for records with extras, exceptions, stacks,
non-ASCII and lone surrogates, long messages, and each kind of formatter."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import mplog
from mplog._config import WorkerConfig
from mplog._routes import Route
from mplog._targets import route_configs, text_target_of
from tests.conftest import join_all, wait_until

T0 = 1_700_000_000.0
LONG = "long " + "é" * 100_000 + " end"  # 200 KB of UTF-8: beyond one pipe write


class Receiver:
    """An octet-counted syslog receiver (RFC 6587) on a free loopback port, in
    a thread: keeps every message, in order, in :attr:`messages`."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.messages: List[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:  # closed by stop()
                return
            with conn:
                self._read(conn)

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            data = conn.recv(1 << 16)
            if not data:
                return
            buffer += data
            while b" " in buffer[:12]:
                length, _, rest = buffer.partition(b" ")
                if len(rest) < int(length):
                    break
                self.messages.append(rest[: int(length)])
                buffer = rest[int(length) :]

    def stop(self) -> None:
        """Stop accepting (the handler's connection ends with its session)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


class _Nothing(logging.Filter):
    """Lets every record through; a handler with a filter gets records, not lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        return True


def _cases() -> List[Dict[str, Any]]:
    """The records to log: (logger name, level, msg, args, extra, exception?, stack?)."""
    return [
        dict(name="app", level=logging.INFO, msg="plain"),
        dict(name="app.db", level=logging.WARNING, msg="n=%d %s %r", args=(3, "x", b"\x00")),
        dict(name="app", level=logging.ERROR, msg="with extras", extra={"user": 'a"b]c\\', "n": 7, "d": {"k": [1]}}),
        dict(name="app", level=logging.ERROR, msg="failed %s", args=("op",), exc=True, extra={"req": "r-1"}),
        dict(name="app", level=logging.INFO, msg="stack", stack=True),
        dict(name="ünïcode name", level=logging.CRITICAL, msg="héllo 日本 🚀\nsecond line"),
        dict(name="app", level=logging.DEBUG, msg="lone %s surrogate", args=("\udc80",), extra={"s": "\udcff"}),
        dict(name="app", level=25, msg=LONG, extra={"size": len(LONG)}),
        dict(name="x" * 40, level=logging.INFO, msg={"not": "a str"}),
    ]


def _log_cases(route_name: str) -> None:
    """In a worker: log every case as a record with a fixed time and pid, so
    that two sessions send the same records."""
    logger = logging.getLogger(route_name)
    for index, case in enumerate(_cases()):
        exc_info = None
        if case.get("exc"):
            try:
                raise ValueError("boom é")
            except ValueError:
                exc_info = sys.exc_info()
        args, extra = case.get("args", ()), case.get("extra")
        record = logger.makeRecord(case["name"], case["level"], __file__, 10, case["msg"], args, exc_info, extra=extra)
        record.created = T0 + index * 1.000123
        record.msecs = (record.created - int(record.created)) * 1000
        record.process = 4242
        if case.get("stack"):
            record.stack_info = "Stack (most recent call last):\n  File 'x', line 1"
        logger.handle(record)


def _forwarded(handlers: List[logging.Handler], receiver: Receiver, context: str) -> List[bytes]:
    """What ``handlers`` (the first a SyslogHandler to ``receiver``) forward of
    the cases logged by one worker of ``context``."""
    before = len(receiver.messages)
    with mplog.setup(*handlers, level="DEBUG"):
        process = multiprocessing.get_context(context).Process(target=_log_cases, args=("",))
        process.start()
        join_all([process])
        assert process.exitcode == 0
        mplog.complete(30)
    wait_until(lambda: len(receiver.messages) >= before + len(_cases()), "every message received", 30)
    return receiver.messages[before:]


def _syslog(receiver: Receiver, formatter: Optional[logging.Formatter], filtered: bool) -> logging.Handler:
    handler = mplog.SyslogHandler(("127.0.0.1", receiver.port), "tcp", app_name="tést app", hostname="host one")
    handler.setFormatter(formatter)
    if filtered:
        handler.addFilter(_Nothing())
    return handler


FORMATTERS = {
    "none": lambda: None,
    "percent": lambda: logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"),
    "brace": lambda: logging.Formatter("{levelname:>8} {name}: {message}", style="{"),
    "json": mplog.JsonFormatter,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("formatter", sorted(FORMATTERS))
def test_worker_made_messages_equal_the_listeners(formatter, tmp_path: Path) -> None:
    """A plain SyslogHandler is a text route whose messages the worker makes;
    they equal, byte for byte, those the listener makes from the records for
    the same handler with a filter (which keeps records); beside a file
    handler (lines in record frames) they are the same again."""
    receiver = Receiver()
    try:
        plain = _syslog(receiver, FORMATTERS[formatter](), filtered=False)
        assert Route([plain]).raw_errors is not None  # text frames, not records
        assert text_target_of(_syslog(receiver, None, filtered=True)) is None
        from_workers = _forwarded([plain], receiver, "fork")
        from_records = _forwarded([_syslog(receiver, FORMATTERS[formatter](), filtered=True)], receiver, "fork")
        beside_a_file = _forwarded(
            [_syslog(receiver, FORMATTERS[formatter](), filtered=False), mplog.FileHandler(tmp_path / "f.log")],
            receiver,
            "fork",
        )
    finally:
        receiver.stop()
    assert len(from_records) == len(_cases())
    assert rb"""[mplog@32473 user="a\"b\]c\\" n="7" d="{'k': [1\]}"]""" in from_records[2]  # in the order given
    assert b"boom \xc3\xa9" in from_records[3] and b"4242" in from_records[0]
    for worker, listener, beside in zip(from_workers, from_records, beside_a_file):
        assert worker == listener
        assert beside == listener


@pytest.mark.timeout(60)
def test_spawned_worker_makes_the_listeners_messages() -> None:
    """A spawned worker, which gets the handler's RFC 5424 fields pickled,
    makes the messages the listener makes from the records."""
    receiver = Receiver()
    try:
        plain = _syslog(receiver, None, filtered=False)
        assert Route([plain]).raw_errors is not None
        spawned = _forwarded([plain], receiver, "spawn")
        from_records = _forwarded([_syslog(receiver, None, filtered=True)], receiver, "fork")
    finally:
        receiver.stop()
    assert spawned == from_records


def test_syslog_target_crosses_in_the_environment() -> None:
    """A SyslogHandler's target survives the JSON config of ``mplog run`` children."""
    handler = mplog.SyslogHandler(("127.0.0.1", 9), "tcp", facility="local3", app_name="a", hostname="h")
    try:
        routes = route_configs([logging.getLogger()], [[handler]])
        config = WorkerConfig("address", logging.INFO, routes)
        target = WorkerConfig.from_json(config.to_json()).routes[0].text_targets[0]
        assert target == routes[0].text_targets[0]
        assert target.syslog == (19, "h", "a", "mplog@32473")
        record = logging.LogRecord("n", logging.INFO, __file__, 1, "m", None, None)
        assert target.formatter().format(record).encode() == handler._rfc5424.encode(record, "m")
    finally:
        handler.close()
