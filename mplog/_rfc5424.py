"""RFC 5424 syslog messages from log records: the header, ``extra`` fields as
structured data, and the formatted message; made by the listener's
``SyslogHandler`` for a record, or by a worker (:class:`Rfc5424Formatter`),
which sends the listener the finished message.

Nothing here opens a socket or imports one: a worker imports this module alone.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Dict, Optional, Tuple

from ._codec import STANDARD_ATTRIBUTES, in_record_order
from ._spans import CARRIERS

__all__ = ["FACILITIES", "Rfc5424", "Rfc5424Formatter", "default_text", "severity"]

#: Facility names (as in ``logging.handlers.SysLogHandler``) and their codes.
FACILITIES: Dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}

# Header fields are PRINTUSASCII (33-126); anything else becomes "_".
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")
# SD-NAMEs exclude '=', ' ', ']' and '"' besides.
_NOT_SD_NAME = re.compile(r'[^\x21-\x7e]|[= \]"]')
# In a PARAM-VALUE, '"', '\' and ']' are escaped with a backslash.
_SD_ESCAPE = re.compile(r'(["\\\]])')
_BACKSLASHED = r"\\\1"


def severity(level: int) -> int:
    """The syslog severity of a logging level: CRITICAL 2 (crit), ERROR 3,
    WARNING 4, INFO 6, DEBUG and below 7; levels in between take the next below."""
    if level >= logging.CRITICAL:
        return 2
    if level >= logging.ERROR:
        return 3
    if level >= logging.WARNING:
        return 4
    return 6 if level >= logging.INFO else 7


def header_field(value: Optional[str], limit: int) -> str:
    """``value`` as an RFC 5424 header field: printable ASCII, at most
    ``limit`` characters, ``-`` when empty."""
    if not value:
        return "-"
    return _NOT_PRINTABLE.sub("_", value)[:limit]


def sd_name(name: str) -> str:
    """``name`` as an SD-NAME (at most 32 characters, none of ``= ]"``)."""
    return _NOT_SD_NAME.sub("_", name)[:32] or "_"


class Rfc5424:
    """Turns a record and its formatted message into one RFC 5424 message.

    Args:
        facility: the facility code (see :data:`FACILITIES`).
        hostname: the HOSTNAME field.
        app_name: the APP-NAME field.
        sd_id: the SD-ID under which a record's ``extra`` fields are sent as
            parameters (``name@<private enterprise number>``).
    """

    def __init__(self, facility: int, hostname: str, app_name: str, sd_id: str) -> None:
        #: What makes an equal encoder (in a worker, say).
        self.args = (facility, hostname, app_name, sd_id)
        self._facility = facility * 8
        self._host_app = f"{header_field(hostname, 255)} {header_field(app_name, 48)}"
        self._sd_id = "@".join(sd_name(part) for part in sd_id.split("@", 1))
        # The TIMESTAMP up to the second, for the second last seen (most
        # records share it with the one before), in one attribute so that
        # threads never pair one's second with another's text.
        self._second: Tuple[int, str] = (-1, "")
        self._msgids: Dict[str, str] = {}
        self._pris: Dict[int, str] = {}
        self._sd_names: Dict[str, str] = {}

    def encode(self, record: logging.LogRecord, message: str) -> bytes:
        """The RFC 5424 message for ``record``, whose formatted text is ``message``."""
        return self.text(record, message).encode("utf-8", "replace")

    def text(self, record: logging.LogRecord, message: str) -> str:
        """The same before encoding: :meth:`encode` is its UTF-8 (lone
        surrogates replaced with ``?``)."""
        created = record.created
        second = int(created)
        cached = self._second
        if second != cached[0]:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        pri = self._pris.get(record.levelno)
        if pri is None:
            pri = self._pris[record.levelno] = f"<{self._facility + severity(record.levelno)}>1 "
        msgid = self._msgids.get(record.name)
        if msgid is None:
            msgid = self._msgids[record.name] = header_field(record.name, 32)
        state = record.__dict__
        # Only a record with more attributes than a plain one can have extra fields.
        plain = _PLAIN_RECORD_SIZE + ("message" in state) + ("asctime" in state)
        data = self.structured_data(state) if len(state) > plain else "-"
        micro = int((created - second) * 1e6) % 1000000
        return f"{pri}{cached[1]}.{micro:06d}Z {self._host_app} {record.process or '-'} {msgid} {data} {message}"

    def structured_data(self, state: Dict[str, Any]) -> str:
        """The STRUCTURED-DATA field: one element holding the ``extra`` fields
        of a record whose attributes are ``state`` (``-`` if it has none),
        in the record's order."""
        names = self._sd_names
        params = []
        for key in in_record_order(state, state.keys() - _NOT_EXTRA):
            name = names.get(key)
            if name is None:
                name = names[key] = sd_name(key)
            value = str(state[key])
            if '"' in value or "\\" in value or "]" in value:
                value = _SD_ESCAPE.sub(_BACKSLASHED, value)
            params.append(f'{name}="{value}"')
        return f"[{self._sd_id} {' '.join(params)}]" if params else "-"


# Not extra fields: a record's own attributes, and mplog's carriers for OpenTelemetry.
_NOT_EXTRA = STANDARD_ATTRIBUTES | CARRIERS
# How many attributes a record has before formatting adds ``message`` (and ``asctime``).
_PLAIN_RECORD_SIZE = len(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


def default_text(record: logging.LogRecord) -> str:
    """The message of a handler without a formatter, as logging's default
    formatter makes it; for a record with no traceback or stack, the message
    alone, without going through the formatter (a third of the cost)."""
    if record.exc_info or record.exc_text or record.stack_info:
        return _DEFAULT_FORMATTER.format(record)
    record.message = record.getMessage()
    return record.message


_DEFAULT_FORMATTER = logging.Formatter()


class Rfc5424Formatter(logging.Formatter):
    """Formats a record into the whole RFC 5424 message that a listener's
    ``SyslogHandler`` with ``rfc5424`` and the formatter ``message`` (``None``:
    none) would send for it: a worker formats, the listener only sends.

    Args:
        rfc5424: the arguments of the handler's :class:`Rfc5424`.
        message: the handler's formatter, or None for the default message.
    """

    def __init__(self, rfc5424: Tuple[int, str, str, str], message: Optional[logging.Formatter]) -> None:
        super().__init__()
        self._rfc5424 = Rfc5424(*rfc5424)
        self._message = message

    def format(self, record: logging.LogRecord) -> str:
        """The RFC 5424 message for ``record``, before encoding."""
        message = self._message
        return self._rfc5424.text(record, default_text(record) if message is None else message.format(record))

    #: The worker's text frame holds the message alone: the sender frames it
    #: (octet counting, RELP), so there is no line terminator to add.
    format_line = format
