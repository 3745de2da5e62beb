"""Text frames (lines formatted and encoded by the worker, written by the
listener as they came) and record frames, on one pipe: order, encodings,
and streams that are not mplog's."""

from __future__ import annotations

import fcntl
import logging
import os
import random
import socket
import struct
import termios

import pytest

import mplog
from mplog import _codec
from mplog._hello import connect
from tests.conftest import Collect, file_handler, run_in_child, wait_until


def test_a_lone_file_handler_gets_text_frames(log_path):
    """The common case takes the text-frame path; non-UTF-8 handlers do not."""
    with mplog.setup(file_handler(log_path)) as session:
        assert session.listener._routes[0].raw_errors == "backslashreplace"
    latin = logging.FileHandler(log_path, encoding="latin-1")
    with mplog.setup(latin) as session:
        assert session.listener._routes[0].raw_errors is None
    with mplog.setup(file_handler(log_path), Collect()) as session:
        assert session.listener._routes[0].raw_errors is None


def test_record_frames_between_text_frames_keep_their_order(log_path, monkeypatch):
    """A line too long for a frame travels as a (truncated) record frame between
    text frames; the file still has the lines in the order they were logged."""
    monkeypatch.setattr(_codec, "MAX_PAYLOAD", 10_000)

    def child():
        log = logging.getLogger("order")
        for i in range(50):
            log.warning("line %d %s", i, "x" * (20_000 if i % 10 == 5 else 10))

    with mplog.setup(file_handler(log_path), level="INFO"):
        assert run_in_child(child) == 0
    lines = open(log_path, encoding="utf-8").read().splitlines()
    assert [int(line.split()[1]) for line in lines] == list(range(50))
    long_lines = [line for line in lines if "record truncated" in line]
    assert len(long_lines) == 5 and all(len(line) < 10_000 for line in long_lines)


@pytest.mark.parametrize("handler_kind", ["stdlib", "mplog"])
def test_unencodable_text_is_escaped_not_lost(log_path, handler_kind):
    """A lone surrogate cannot be UTF-8: the line arrives with it escaped (the
    stdlib handler alone would drop the line with a traceback)."""
    if handler_kind == "stdlib":
        handler = file_handler(log_path)
    else:
        handler = mplog.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(message)s"))

    def child():
        logging.getLogger("enc").warning("before \udcff after ☃")
        logging.getLogger("enc").warning("next")

    with mplog.setup(handler, level="INFO"):
        assert run_in_child(child) == 0
    assert open(log_path, encoding="utf-8").read() == "before \\udcff after ☃\nnext\n"


def test_non_utf8_handler_still_gets_every_line(log_path):
    """A latin-1 file is written by the listener from record frames."""

    def child():
        logging.getLogger("enc").warning("café %d", 1)

    with mplog.setup(logging.FileHandler(log_path, encoding="latin-1"), level="INFO"):
        assert run_in_child(child) == 0
    assert open(log_path, "rb").read() == "café 1\n".encode("latin-1")


def _unread(pipe: int) -> int:
    """How many bytes wait in a pipe (FIONREAD works on either end)."""
    return struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0" * 4))[0]


def _raw_connection(address: str, data: bytes) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    sock.sendall(data)
    sock.close()


def _raw_pipe(address: str, data: bytes) -> None:
    """Introduce a pipe as a worker does, then write ``data`` to it as it is."""
    queue = mplog.Queue(address)
    queue._send(data)
    queue.close()


@pytest.mark.parametrize("handler_kind", ["stdlib", "mplog"])
def test_frames_split_anywhere_arrive_whole_and_in_order(log_path, handler_kind):
    """Lines from 50 B to 70 KiB (long ones are written from views of the
    listener's reads, short ones copied), with record frames between them,
    written to the pipe in random pieces that the listener reads one by one:
    the file holds every line, whole and in order."""
    rng = random.Random(6)
    lines, frames = [], []
    for seq in range(120):
        line = f"seq={seq} " + "x" * rng.choice([50, 3000, 4095, 4096, 5000, 70_000]) + "\n"
        lines.append(line)
        if seq % 7 == 3:  # as a worker sends a record that also needs a record handler
            record = logging.LogRecord("frames", logging.INFO, __file__, 1, "rec", None, None)
            frames.append(_codec.encode(record, [line[:-1]]))
        else:
            frames.append(line.encode() + _codec.TEXT_END)
    stream = b"".join(frames)
    if handler_kind == "mplog":
        handler = mplog.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = file_handler(log_path)
    with mplog.setup(handler) as session:
        # The bytes as they are (a worker's queue would put a mark before each piece).
        pipe = connect(session.queue.address, 0)
        pos = 0
        while pos < len(stream):
            piece = rng.choice([1, 7, 100, 4000, 5000, 40_000, 100_000])
            with memoryview(stream)[pos : pos + piece] as view:
                while view:
                    view = view[os.write(pipe, view) :]
            pos += piece
            # The listener has read all of it before the next piece goes in:
            # each piece is a read of its own (or, if long, several).
            wait_until(lambda: _unread(pipe) == 0, f"the listener reading up to byte {pos}", 30, poll=0.0005)
        os.close(pipe)
    assert open(log_path, encoding="utf-8").read() == "".join(lines)


def test_streams_that_are_not_mplogs_are_refused_and_reported(log_path):
    """No hello, a hello without a pipe, a text frame cut short by a record
    frame, an unterminated line at disconnect: each is reported in the log,
    and nothing else is lost."""
    record = logging.LogRecord("intruder", logging.ERROR, __file__, 1, "never shown", None, None)
    with mplog.setup(file_handler(log_path)) as session:
        address = session.queue.address
        _raw_connection(address, b"GET / HTTP/1.0\r\n\r\n")
        _raw_connection(address, _codec.hello(0) + b"complete\n" + _codec.TEXT_END)
        _raw_pipe(address, b"cut short" + _codec.encode(record))
        _raw_pipe(address, b"complete\n" + _codec.TEXT_END + b"unterminated")

        def child():
            logging.getLogger("ok").warning("still logging")

        assert run_in_child(child) == 0
    text = open(log_path, encoding="utf-8").read()
    assert "did not start with a hello" in text
    assert "sent a hello without the read end of a pipe" in text
    assert "text frame cut short by a record frame" in text
    assert text.count("complete\n") == 1 and "unterminated" not in text
    # "ended early", or "cut off when the listener stopped" if the stop came first
    assert "its 12 bytes received were discarded" in text
    assert "never shown" not in text and "still logging\n" in text
