"""How a log record becomes frames of bytes and back again, without pickle.

A process introduces itself on the listener's socket with a :func:`hello`
naming the route its records are for (which group of listener handlers), sent
with its pipe's read end, and writes nothing to the pipe until the listener
answers :data:`HELLO_TAKEN` (a listener out of file descriptors closes the
socket instead, and the process tries again with a new pipe; one that may not
admit the process's user answers :data:`REFUSED`). The pipe then
carries two kinds of frame, told apart by their first byte:

* a **text frame**: one line the worker formatted, with its terminator,
  encoded as UTF-8, then :data:`TEXT_END`. UTF-8 never contains the bytes
  0xF5-0xFF, so the listener finds where complete lines end with one ``rfind``
  and writes them without looking at each one; a worker killed mid-line leaves
  an unterminated tail, which is discarded. Used when the route's only handler
  writes text and needs nothing but the line (see ``TextTarget.raw_errors``).
* a **record frame**: :data:`RECORD_START`, a 4-byte little-endian payload
  length, then a ``marshal`` payload of ``(route, created, values, extras, texts)``:

  * ``route``: which group of listener handlers the record is for (0: the root
    logger's; others: named loggers given their own handlers);
  * ``created``: the record's creation time (time-based rotation files each
    line by it, not by when it arrived);
  * ``values``: the standard LogRecord fields in the order of :data:`FIELDS`,
    or ``None`` when no listener handler needs the record itself;
  * ``extras``: the user's own attributes (``extra=``, custom record
    factories) or ``None``; also, under :data:`TRACEBACKS`, the traceback as
    each listener handler's own formatter renders it, where one overrides
    ``formatException`` (the listener takes it out before any handler sees it);
  * ``texts``: lines the worker already formatted, one per text handler of the
    listener (``None`` where that handler's level rejects the record), or ``None``.

marshal only builds plain data (str, int, float, bytes, tuples, lists, dicts,
None), so decoding can never run code, and it is several times faster than
pickle for this shape (measured: 0.75 us to build and marshal a record's
tuple against 2.3 us to pickle the record).
"""

from __future__ import annotations

import logging
import marshal
import operator
import struct
from typing import AbstractSet, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ._marshalcheck import check_counts

#: Starts a record frame; never part of a text frame.
RECORD_START = 0xFE
#: Ends a text frame; never part of its UTF-8 text.
TEXT_END = b"\xff"
#: A text frame that starts with this byte (never in UTF-8) is a mark: the
#: time its write began, for the listener's order across processes (``_order``).
MARK_START = 0xFC
#: Text frames as the listener passes them on: bytes or a bytearray of whole
#: frames, or a memoryview of exactly one frame (a long line, not copied).
Frames = Union[bytes, bytearray, memoryview]
_HELLO_START = 0xFD
#: A record frame's header: RECORD_START and the payload's length.
HEADER = struct.Struct("<BI")
#: What a process sends on the socket with its pipe: 0xFD and the route of everything it sends.
HELLO = struct.Struct("<BH")
#: What follows HELLO in a resuming client's hello (first byte RESUME_START
#: instead of 0xFD): its stream's id, and the offset in its stream of the
#: first byte it writes to this pipe (see mplog._resume).
RESUME = struct.Struct("<QQ")
RESUME_START = 0xFA
#: The listener's answer on the socket once it holds the pipe a hello passed.
HELLO_TAKEN = b"\x06"
#: What the listener sends, then closes the socket, to a process whose user
#: may not log there (instead of a hello's or a request's answer).
REFUSED = b"\x15"

#: The record attribute that carries, per listener handler of the record's
#: route, the traceback rendered by that handler's formatter, or ``None``
#: where the handler takes ``exc_text``; only on records with an exception,
#: for routes with such a formatter.
TRACEBACKS = "_mplog_tracebacks"

#: Frames above this size are refused by the listener; the worker truncates
#: records that would exceed it (with a note) instead of sending them.
MAX_PAYLOAD = 64 * 1024 * 1024

# marshal format 4 is understood by every Python 3.4+, so a worker and a
# listener on different interpreter versions still agree.
_MARSHAL_VERSION = 4

FIELDS: Tuple[str, ...] = (
    "name",
    "msg",
    "levelno",
    "levelname",
    "pathname",
    "filename",
    "module",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "processName",
    "process",
    "exc_text",
    "stack_info",
)
_get_fields = operator.itemgetter(*FIELDS)

# Attributes every LogRecord has, plus those logging adds while formatting:
# anything else on a record came from the user and travels in ``extras``.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
# A prepared record has the standard attributes plus ``message``; a record with
# no more keys than that cannot carry extras, which skips a set difference.
_PLAIN_RECORD_SIZE = len(vars(logging.LogRecord("", 0, "", 0, "", (), None))) + 1

_DECODED_DEFAULTS = {"args": None, "exc_info": None, "message": None, "taskName": None}
# Names a record's class has (getMessage, __init__...): an extra of one of these
# names would hide a method from every formatter (only a hostile sender makes
# one: the stdlib's own extra= may, but mplog's workers send what it built).
_CLASS_NAMES = frozenset(dir(logging.LogRecord))


Texts = Optional[Sequence[Optional[str]]]


def encode(record: Optional[logging.LogRecord], texts: Texts = None, route: int = 0, created: float = 0.0) -> bytes:
    """Return the frame for a prepared record (message rendered, no ``args``
    or ``exc_info`` left to render) and/or the lines formatted for it.

    ``created`` is the record's time; taken from ``record`` when it is given."""
    values: Optional[Tuple[Any, ...]] = None
    extras = None
    if record is not None:
        created = record.created
        state = record.__dict__
        try:
            values = _get_fields(state)
        except KeyError:  # someone deleted a standard attribute
            values = tuple(state.get(field) for field in FIELDS)
        extras = _extras_of(state) if len(state) > _PLAIN_RECORD_SIZE else None
    if texts is not None:
        texts = tuple(texts)
    try:
        payload = marshal.dumps((route, created, values, extras, texts), _MARSHAL_VERSION)
    except ValueError:  # an object marshal cannot carry: send its str()
        values = None if values is None else _plain(values)
        payload = marshal.dumps((route, created, values, _plain_dict(extras), texts), _MARSHAL_VERSION)
    if len(payload) > MAX_PAYLOAD:
        payload = _truncated(route, created, values, extras, texts, len(payload))
    return HEADER.pack(RECORD_START, len(payload)) + payload


def hello(route: int, stream: Optional[Tuple[int, int]] = None) -> bytes:
    """The hello a process sends, with its pipe, for frames of ``route``;
    ``stream``: a resuming client's stream id and offset (see :data:`RESUME`)."""
    if stream is None:
        return HELLO.pack(_HELLO_START, route)
    return HELLO.pack(RESUME_START, route) + RESUME.pack(*stream)


def parse_hello(data: Union[bytes, bytearray]) -> int:
    """The route named by a connection's first :data:`HELLO.size` bytes.

    Raises:
        ValueError: they are not a hello.
    """
    if len(data) < HELLO.size or data[0] not in (_HELLO_START, RESUME_START):
        raise ValueError(f"a connection did not start with a hello: {bytes(data[: HELLO.size])!r}")
    _, route = HELLO.unpack_from(data)
    return int(route)


def is_mark(frames: "bytes | bytearray | memoryview", pos: int) -> bool:
    """Whether the text frame at ``pos`` is a mark."""
    return frames[pos] == MARK_START


def readable_lines(frames: bytes) -> List[str]:
    """The lines in a run of frames (no hello), for a human: text frames as
    they are, record frames as their first text or their message."""
    lines: List[str] = []
    pos = 0
    while pos < len(frames):
        if frames[pos] == RECORD_START:
            line, pos = _readable_record(frames, pos)
        else:
            end = frames.find(TEXT_END, pos)
            end = len(frames) if end < 0 else end
            if is_mark(frames, pos):  # the time a write began (see _order): for the listener only
                pos = end + 1
                continue
            line, pos = frames[pos:end].decode("utf-8", "backslashreplace").rstrip("\n"), end + 1
        lines.append(line)
    return lines


def _readable_record(frames: bytes, pos: int) -> Tuple[str, int]:
    """The line of the record frame at ``pos`` (its first text, its message, or
    why it cannot be read), and where the frame ends."""
    _, size = HEADER.unpack_from(frames, pos)
    end = pos + HEADER.size + size
    try:
        _, _, record, texts = decode(frames[pos + HEADER.size : end])
    except ValueError as exc:
        return str(exc), end
    text = next((t for t in texts or () if t is not None), None)
    return (text if text is not None else str(record.msg if record is not None else "")), end


def text_frames(lines: Sequence[str], errors: str) -> bytes:
    """Text frames for lines a worker could not send as such (e.g. a truncated
    record for a route that takes text frames); ``errors`` as for ``str.encode``."""
    return b"".join(line.encode("utf-8", errors) + TEXT_END for line in lines)


def frame_texts(chunks: Sequence[Frames]) -> List[Frames]:
    """The text in ``chunks`` of frames, without their ``TEXT_END`` markers,
    in pieces for ``os.writev``: a one-frame view drops its last byte, uncopied;
    other chunks are copied once."""
    return [chunk[:-1] if type(chunk) is memoryview else chunk.replace(TEXT_END, b"") for chunk in chunks]


Decoded = Tuple[int, float, Optional[logging.LogRecord], Optional[Tuple[Optional[str], ...]]]


def decode(payload: Union[bytes, bytearray]) -> Decoded:
    """Rebuild a frame's route, time, record (``None`` if it carried none) and texts.

    Raises:
        ValueError: the payload is not a frame this module wrote.
    """
    try:
        check_counts(payload)
        route, created, values, extras, texts = marshal.loads(payload)
    except (ValueError, EOFError, TypeError, MemoryError, struct.error) as exc:
        raise ValueError(f"undecodable log frame ({len(payload)} bytes): {exc}") from None
    if not isinstance(route, int) or not isinstance(created, float):
        raise ValueError(f"log frame has a bad route or time: {route!r}, {created!r}")
    if texts is not None and not isinstance(texts, tuple):
        raise ValueError(f"log frame texts must be a tuple, got {type(texts).__name__}")
    return route, created, None if values is None else _record(values, extras), texts


def _record(values: Any, extras: Any) -> logging.LogRecord:
    """The record whose standard fields are ``values`` (in the order of
    :data:`FIELDS`), with the user's ``extras`` (a dict, or ``None``).

    Raises:
        ValueError: not a tuple of that many fields, or extras not a dict.
    """
    if type(values) is not tuple or len(values) != len(FIELDS):
        shape = f"{len(values)} fields" if type(values) is tuple else type(values).__name__
        raise ValueError(f"log frame has {shape}, expected a tuple of {len(FIELDS)} fields")
    if extras is not None and type(extras) is not dict:
        raise ValueError(f"log frame extras must be a dict, got {type(extras).__name__}")
    record = logging.LogRecord.__new__(logging.LogRecord)
    state = record.__dict__
    state.update(_DECODED_DEFAULTS)
    if extras:
        state.update(_harmless(extras))
    state.update(zip(FIELDS, values))
    state["message"] = state["msg"]
    return record


def _harmless(extras: Dict[Any, Any]) -> Dict[Any, Any]:
    """``extras`` without the keys that are no attribute name, or that would
    hide one of the record's methods."""
    if _CLASS_NAMES.isdisjoint(extras) and all(type(key) is str for key in extras):
        return extras
    return {key: value for key, value in extras.items() if type(key) is str and key not in _CLASS_NAMES}


def in_record_order(state: Dict[str, Any], names: AbstractSet[str]) -> Iterable[str]:
    """``names``, keys of a record's ``state``, in the record's order (a set's
    order differs between processes): formatters show extra fields in the
    order they were given, whichever process formats."""
    return [name for name in state if name in names] if len(names) > 1 else names


def _extras_of(state: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    extras = {key: state[key] for key in in_record_order(state, state.keys() - STANDARD_ATTRIBUTES)}
    if state.get("taskName") is not None:
        extras["taskName"] = state["taskName"]
    return extras or None


def _plain(values: Tuple[Any, ...]) -> Tuple[Any, ...]:
    return tuple(value if _marshallable(value) else _safe_str(value) for value in values)


def _plain_dict(extras: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if extras is None:
        return None
    return {str(k): (v if _marshallable(v) else _safe_str(v)) for k, v in extras.items()}


def _marshallable(value: Any) -> bool:
    try:
        marshal.dumps(value, _MARSHAL_VERSION)
    except ValueError:
        return False
    return True


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception as exc:  # a broken __str__ must not lose the record
        return f"<{type(value).__name__} object: str() failed: {exc!r}>"


# A truncated record's message, and each line cut short, ends with this.
_NOTE = " [mplog: record truncated; it was {size} bytes, the limit is {limit}]"
_MSG = FIELDS.index("msg")
# The most a str costs marshal besides its UTF-8 bytes: a type byte and a
# 4-byte length, or, for an object written before, a 5-byte reference to it.
_STR_OVERHEAD = 5


def _truncated(
    route: int,
    created: float,
    values: Optional[Tuple[Any, ...]],
    extras: Optional[Dict[str, Any]],
    texts: Texts,
    size: int,
) -> bytes:
    """An oversized frame cut down to at most MAX_PAYLOAD bytes, keeping as much
    as fits, and saying so: the message, and every line that was cut, ends with
    a note.

    Every text (field, extra, line) keeps all of itself or an equal share of
    the room, whichever is less. Only when there are too many of them for even
    empty ones to fit are the extras dropped, and then the lines (the listener
    then formats the record itself; a frame of lines alone becomes a record
    saying it was truncated).
    """
    note = _NOTE.format(size=size, limit=MAX_PAYLOAD)
    fields, lines = _fields_of(values), _lines_of(texts)
    pairs = [(_text(key), _text(value)) for key, value in (extras or {}).items()]
    for shape in ((fields, pairs, lines), (fields, [], lines), (fields or _note_fields(created), [], None)):
        payload = _fit(MAX_PAYLOAD, note, route, created, *shape)
        if payload is not None:
            return payload
    # Only a limit too small for a record's fields gets here: the frame, empty, still fits.
    return marshal.dumps((route, created, None, None, None), _MARSHAL_VERSION)


_Pairs = List[Tuple[str, str]]
_Lines = Optional[List[Optional[str]]]


def _fit(
    limit: int, note: str, route: int, created: float, fields: Optional[List[Any]], pairs: _Pairs, lines: _Lines
) -> Optional[bytes]:
    """The frame with every text cut to the largest share that keeps it within
    ``limit`` bytes, or ``None`` if it cannot fit even with every text empty.

    The frame without its texts is measured; each text then costs at most
    ``_STR_OVERHEAD`` and its UTF-8 bytes, and the note where one is added, so
    the share is found before anything is cut, and the result fits by construction.
    """
    texts = _strings(fields) + [text for pair in pairs for text in pair] + _strings(lines)
    blank_extras = dict.fromkeys(range(len(pairs))) or None  # distinct keys, as many as there are extras
    skeleton = marshal.dumps((route, created, _blank(fields), blank_extras, _blank(lines)), _MARSHAL_VERSION)
    notes = (fields is not None) + len(_strings(lines))
    room = limit - len(skeleton) - _STR_OVERHEAD * len(texts) - len(note) * notes
    if room < 0:
        return None
    share = _fair_share([_byte_size(text) for text in texts], room)
    extras = {_within(key, share): _within(value, share) for key, value in pairs} or None
    frame = (route, created, _cut_fields(fields, share, note), extras, _cut_lines(lines, share, note))
    payload = marshal.dumps(frame, _MARSHAL_VERSION)
    return payload if len(payload) <= limit else None  # fits by construction; checked all the same


def _fields_of(values: Optional[Tuple[Any, ...]]) -> Optional[List[Any]]:
    """A record's fields as a truncated frame carries them; the message always as text."""
    if values is None:
        return None
    fields = [_field(value) for value in values]
    fields[_MSG] = _text(values[_MSG])
    return fields


def _lines_of(texts: Texts) -> _Lines:
    """The lines as a truncated frame carries them: each an exact ``str``, or ``None``."""
    return None if texts is None else [None if text is None else _text(text) for text in texts]


def _strings(values: Optional[Sequence[Any]]) -> List[str]:
    """The texts among ``values`` (none for ``None``)."""
    return [value for value in values or () if type(value) is str]


def _field(value: Any) -> Any:
    """A field as a truncated frame carries it: a scalar of bounded size as it
    is, anything else (a huge int, a list, an object) as its text."""
    if value is None or type(value) in (bool, float) or (type(value) is int and -(2**63) <= value < 2**63):
        return value
    return _text(value)


def _text(value: Any) -> str:
    """``value`` as an exact ``str`` (marshal refuses subclasses of str)."""
    text = value if type(value) is str else _safe_str(value)
    return text if type(text) is str else str.__str__(text)


def _note_fields(created: float) -> List[Any]:
    """The fields of a record made only to say that a frame of lines was truncated."""
    record = logging.makeLogRecord({"name": "mplog", "levelno": logging.WARNING, "levelname": "WARNING"})
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    return [_field(value) for value in _get_fields(record.__dict__)]


def _blank(values: Optional[Sequence[Any]]) -> Optional[Tuple[Any, ...]]:
    """``values`` with every text replaced by ``None``: the frame's shape without its texts."""
    return None if values is None else tuple(None if type(value) is str else value for value in values)


def _byte_size(text: str) -> int:
    """The bytes marshal writes for ``text``'s characters (UTF-8, lone surrogates included)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _fair_share(sizes: List[int], room: int) -> int:
    """The largest share such that texts of ``sizes``, each cut to it, take at
    most ``room`` bytes: shorter texts keep all of themselves."""
    sizes = sorted(sizes)
    for index, size in enumerate(sizes):
        share = room // (len(sizes) - index)
        if size > share:
            return share
        room -= size
    return sizes[-1] if sizes else 0


def _cut(text: str, limit: int) -> Optional[str]:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary;
    ``None`` if it fits as it is."""
    if text.isascii():
        return text[:limit] if len(text) > limit else None
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return None
    while limit and (data[limit] & 0xC0) == 0x80:  # inside a character: back to its first byte
        limit -= 1
    return data[:limit].decode("utf-8", "surrogatepass")


def _within(text: str, limit: int) -> str:
    """``text``, cut if it is longer than ``limit`` bytes."""
    cut = _cut(text, limit)
    return text if cut is None else cut


def _cut_fields(fields: Optional[List[Any]], share: int, note: str) -> Optional[Tuple[Any, ...]]:
    """The record's fields with each text cut to ``share``; the message ends with ``note``."""
    if fields is None:
        return None
    kept = [_within(value, share) if type(value) is str else value for value in fields]
    kept[_MSG] += note
    return tuple(kept)


def _cut_lines(lines: _Lines, share: int, note: str) -> Optional[Tuple[Optional[str], ...]]:
    """The lines, each cut to ``share`` ending with ``note``, or whole if it fits."""
    if lines is None:
        return None
    cuts = [None if line is None else _cut(line, share) for line in lines]
    return tuple(line if cut is None else cut + note for line, cut in zip(lines, cuts))
