"""How the listener writes lines the workers formatted: to an
``mplog.FileHandler`` through its own methods, to a stdlib stream handler
under the handler's lock, as bytes where the stream is UTF-8."""

from __future__ import annotations

import codecs
import functools
import io
import logging
from typing import Callable, List, Tuple

from . import _codec
from ._files import FileHandler

__all__ = ["WRITE_CHUNK", "Writer", "frame_writer_for", "notice", "reopen", "writer_for"]

#: Lines arriving in one wake-up are written in pieces of about this many characters.
WRITE_CHUNK = 256 * 1024


def notice(message: str) -> logging.LogRecord:
    """A record mplog itself writes into the log, e.g. to report a discarded frame."""
    return logging.LogRecord("mplog", logging.WARNING, __file__, 0, message, None, None)


def reopen(handler: logging.Handler) -> None:
    """Reopen a file handler's file by name (after an external rotation);
    other handlers are left alone."""
    if isinstance(handler, FileHandler):
        handler.reopen()
    elif isinstance(handler, logging.FileHandler):
        with handler.lock:  # type: ignore[union-attr]
            if handler.stream is not None:
                handler.stream.close()
                handler.stream = handler._open()


Writer = Callable[[List[Tuple[float, str]]], None]


def writer_for(handler: logging.Handler) -> Writer:
    """How the listener writes preformatted lines to a text handler."""
    if isinstance(handler, logging.StreamHandler):
        return functools.partial(_write_to_stream, handler)
    # mplog's own: a FileHandler (which files each line by its time) or a SyslogHandler.
    write_lines: Writer = handler.write_lines  # type: ignore[attr-defined]
    return write_lines


def no_frames(frames: List[_codec.Frames]) -> None:
    """The frame writer of a route that takes no text frames: never called."""
    raise AssertionError("text frames for a route that does not take them")  # _on_text routes them elsewhere


def frame_writer_for(handler: logging.Handler) -> Callable[[List[_codec.Frames]], None]:
    """How the listener writes text frames to a handler whose target has ``raw_errors``."""
    if isinstance(handler, logging.StreamHandler):
        return functools.partial(_write_frames_to_stream, handler)
    # mplog's own: a FileHandler or a SyslogHandler.
    write_frames: Callable[[List[_codec.Frames]], None] = handler.write_frames  # type: ignore[attr-defined]
    return write_frames


def _write_frames_to_stream(handler: logging.StreamHandler, frames: List[_codec.Frames]) -> None:  # type: ignore[type-arg]
    """Write text frames to a handler's stream as bytes, under its lock."""
    texts = _codec.frame_texts(frames)
    with handler.lock:  # type: ignore[union-attr]
        try:
            if handler.stream is None:  # a FileHandler opened with delay=True
                handler.stream = handler._open()  # type: ignore[attr-defined]
            stream = handler.stream
            stream.flush()  # whatever the listener's own process wrote as text goes first
            if type(stream) is io.TextIOWrapper and codecs.lookup(stream.encoding).name == "utf-8":
                stream.buffer.writelines(texts)  # a long line bypasses the buffer, uncopied
                stream.buffer.flush()
            else:  # the stream was replaced since setup(): hand it text
                stream.write(b"".join(texts).decode("utf-8", "backslashreplace"))
                stream.flush()
        except Exception:
            lines = b"".join(texts).count(b"\n")
            handler.handleError(notice(f"mplog: writing {lines} lines to {handler!r} failed"))


def _write_to_stream(handler: logging.StreamHandler, lines: List[Tuple[float, str]]) -> None:  # type: ignore[type-arg]
    """Write preformatted lines as ``StreamHandler.emit`` would: in one write, or
    in pieces of about WRITE_CHUNK characters when they are many and large (a
    text stream encodes one huge string several times slower than a few
    smaller ones: 64 KiB lines, 256 at a time, measured 5x slower)."""
    terminator = handler.terminator
    texts = [text for _, text in lines]
    with handler.lock:  # type: ignore[union-attr]
        try:
            if handler.stream is None:  # a FileHandler opened with delay=True
                handler.stream = handler._open()  # type: ignore[attr-defined]
            if sum(map(len, texts)) <= WRITE_CHUNK:
                _write_group(handler, texts, terminator)
            else:
                group: List[str] = []
                size = 0
                for text in texts:
                    group.append(text)
                    size += len(text)
                    if size >= WRITE_CHUNK:
                        _write_group(handler, group, terminator)
                        group, size = [], 0
                if group:
                    _write_group(handler, group, terminator)
            handler.stream.flush()
        except Exception:
            handler.handleError(notice(f"mplog: writing {len(lines)} lines to {handler!r} failed"))


def _write_group(handler: logging.StreamHandler, texts: List[str], terminator: str) -> None:  # type: ignore[type-arg]
    """Write ``texts`` to the handler's stream in one write; if the stream
    cannot encode them (a lone surrogate, say), line by line, as the stdlib's
    handler writes records, so that only the lines it cannot encode are lost
    (each reported as the handler reports an error). A text stream encodes
    all it is given before it writes any of it."""
    try:
        handler.stream.write(terminator.join(texts) + terminator)
    except UnicodeEncodeError:
        for text in texts:
            try:
                handler.stream.write(text + terminator)
            except UnicodeEncodeError:
                handler.handleError(notice(f"mplog: a line {handler!r} cannot encode was not written: {text!r}"))
