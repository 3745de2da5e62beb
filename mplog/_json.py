"""JSON lines for log shippers (Filebeat, Fluent Bit, Vector): one object per record."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, Dict

from ._codec import STANDARD_ATTRIBUTES
from ._spans import CARRIERS

__all__ = ["JsonFormatter"]


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line.

    Keys: ``time`` (ISO 8601 with the UTC offset, milliseconds), ``level``,
    ``logger``, ``process``, ``thread``, ``message``, then ``exception`` and
    ``stack`` when present, then every ``extra=`` field (values JSON cannot
    represent are written as their ``str()``). Newlines inside values are
    escaped, so a record is always exactly one line.

    It takes ``logging.Formatter``'s arguments, so that ``dictConfig`` can
    build it from a ``format`` key, and ignores them: its keys are fixed.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object."""
        created = datetime.datetime.fromtimestamp(record.created).astimezone()
        document: Dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        for key, value in record.__dict__.items():
            # CARRIERS: a span's ids and an exception's type, for an OpenTelemetry handler beside this one.
            if key not in STANDARD_ATTRIBUTES and key not in document and key not in CARRIERS:
                document[key] = value
        return json.dumps(document, ensure_ascii=False, default=str)
