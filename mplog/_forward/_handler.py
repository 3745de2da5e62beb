"""``SyslogHandler``: the listener's handler that forwards every record to a
syslog receiver over RELP or octet-counted TCP, with a spool on disk for
while the receiver is down."""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from .. import _fork, _stderr
from .._codec import TEXT_END, Frames
from .._config import check_seconds
from .._rfc5424 import FACILITIES, Rfc5424, default_text
from ._backlog import Backlog
from ._relp import RelpTransport
from ._sender import Sender, Transport
from ._spool import Spool
from ._tcp import OctetTransport, connect

if TYPE_CHECKING:
    import ssl

__all__ = ["SyslogHandler"]

#: What the handler keeps in memory before records spill to the spool.
MEMORY_BYTES = 4 * 1024 * 1024
#: The spool's default size cap.
SPOOL_BYTES = 256 * 1024 * 1024
PROTOCOLS = ("relp", "tcp")


class SyslogHandler(logging.Handler):
    """Forwards records to a syslog receiver (rsyslog, syslog-ng, ...) as RFC
    5424 messages, over RELP (acknowledged) or TCP with octet counting (RFC
    6587; RFC 5425 with ``ssl_context``). Give it to :func:`mplog.setup`: the
    listener then holds one connection for every process of the session.

    ``emit`` only formats the record and queues it in memory: a thread of the
    handler sends in batches, reconnects with backoff, and, with RELP, sends
    again after a reconnection what the receiver had not acknowledged (so the
    receiver may get some records twice: at most a window of 2,048, counted
    in :attr:`resent`). Records that memory (4 MiB) cannot hold while the
    receiver is down or slow go to the ``spool`` directory, up to
    ``spool_max_bytes``; beyond that (or without a spool) the newest records
    are dropped, counted in :attr:`dropped`, and a notice in the stream says
    how many were dropped at that point. Nothing ever waits for the receiver.

    ``close()`` (at the session's stop, or at exit) sends what waits for up
    to ``drain_timeout`` seconds, then keeps the rest in the spool, where the
    next handler on the same directory sends it first, once it forwards its
    first record. One process at a time may use a spool directory.

    The record's logger name is the MSGID, its process id the PROCID, its
    ``extra`` fields the parameters of the structured data element
    ``sd_id`` (in the order given); the message is the handler's formatter's output.

    In a session, the workers make each message and the listener only
    queues it (as they format lines for a plain file handler), unless this
    handler has filters, a formatter other than a plain ``logging.Formatter``
    (or :class:`mplog.JsonFormatter`), or is a subclass: then the listener
    makes the message from the record. The message is the same either way.

    Args:
        address: the receiver's ``(host, port)``.
        protocol: ``"relp"`` or ``"tcp"``.
        spool: a directory for records waiting for the receiver, or None
            to keep them in memory only.
        spool_max_bytes: the most the spool may hold.
        ssl_context: connect with TLS (a client context).
        facility: a syslog facility name (``"user"``, ``"local0"``, ...).
        app_name: the APP-NAME field (default: the program's name).
        hostname: the HOSTNAME field (default: this host's name).
        sd_id: the SD-ID of the ``extra`` fields (``name@<enterprise number>``;
            32473 is the number reserved for examples).
        drain_timeout: how long ``close()`` sends what waits.
        level: the handler's level.

    Raises:
        ValueError: an unknown protocol or facility, or a cap that is not positive.
        TypeError: an address that is not a ``(host, port)`` pair.
        mplog.exceptions.SpoolInUse: another process uses the spool directory.
    """

    def __init__(
        self,
        address: Tuple[str, int],
        protocol: str = "relp",
        *,
        spool: Optional[str] = None,
        spool_max_bytes: int = SPOOL_BYTES,
        ssl_context: Optional["ssl.SSLContext"] = None,
        facility: str = "user",
        app_name: Optional[str] = None,
        hostname: Optional[str] = None,
        sd_id: str = "mplog@32473",
        drain_timeout: float = 5.0,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self.address = _check_address(address)
        self.protocol = _check_choice("protocol", protocol, PROTOCOLS)
        code = FACILITIES[_check_choice("facility", facility, tuple(FACILITIES))]
        if spool_max_bytes <= 0:
            raise ValueError(f"spool_max_bytes must be > 0, got {spool_max_bytes!r}")
        self.drain_timeout = check_seconds("drain_timeout", drain_timeout)
        self._ssl_context = ssl_context
        app = app_name or os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "") or "python"
        self._rfc5424 = Rfc5424(code, hostname or socket.gethostname(), app, sd_id)
        self._backlog = Backlog(Spool(spool, spool_max_bytes) if spool else None, MEMORY_BYTES, self._notice)
        self._sender: Optional[Sender] = None
        self._sender_pid = 0
        self._closed = False
        _fork.register(self)

    #: What ends each message in the lines workers make for this handler:
    #: nothing (the transport frames each message).
    terminator = ""

    @property
    def rfc5424(self) -> Tuple[int, str, str, str]:
        """What a worker needs to make this handler's messages: the arguments
        of its :class:`~mplog._rfc5424.Rfc5424` (facility code,
        hostname, app-name, SD-ID)."""
        return self._rfc5424.args

    @property
    def dropped(self) -> int:
        """How many records were dropped because memory and spool were full (or there was no spool)."""
        return self._backlog.dropped

    @property
    def resent(self) -> int:
        """How many records were sent again after a lost connection; the receiver has at most these twice."""
        return self._sender.resent if self._sender is not None else 0

    @property
    def forwarded(self) -> int:
        """How many records the receiver acknowledged (with TCP, how many were sent)."""
        return self._sender.forwarded if self._sender is not None else 0

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record for the sender thread (started by the first record)."""
        try:
            if self._sender_pid != os.getpid():
                self._start()
            self._backlog.put(self._rfc5424.encode(record, self._text(record)))
        except Exception:
            self.handleError(record)

    def write_frames(self, frames: Sequence[Frames]) -> None:
        """Queue the messages that workers made, as text frames (each
        followed by ``TEXT_END``), in chunks as the listener read them."""
        messages: List[bytes] = []
        for chunk in frames:
            if type(chunk) is memoryview:  # one frame: a long message
                messages.append(bytes(chunk[:-1]))
            else:
                messages += bytes(chunk).split(TEXT_END)[:-1]
        self._put_all(messages)

    def write_lines(self, lines: Sequence[Tuple[float, str]]) -> None:
        """Queue the messages that workers made, sent with records other
        handlers of the route needed, as ``(time, message)``."""
        self._put_all([text.encode("utf-8", "replace") for _, text in lines])

    def _put_all(self, messages: List[bytes]) -> None:
        try:
            if self._sender_pid != os.getpid():
                self._start()
            self._backlog.put_all(messages)
        except Exception:
            self.handleError(self._record(logging.WARNING, f"mplog: forwarding {len(messages)} messages failed"))

    def _text(self, record: logging.LogRecord) -> str:
        """``self.format(record)``, or without a formatter logging's default
        formatter's output (see :func:`default_text`)."""
        if self.formatter is None:
            return default_text(record)
        return self.format(record)

    def close(self) -> None:
        """Send what waits for up to ``drain_timeout`` seconds, keep the rest
        in the spool, and close. Does nothing to the sender in a forked copy."""
        with self.lock:  # type: ignore[union-attr]
            closed, self._closed = self._closed, True
        if not closed and self._sender_pid in (0, os.getpid()):
            if self._sender is not None:
                self._sender.stop(self.drain_timeout)
            self._finish()
        super().close()

    def _finish(self) -> None:
        backlog = self._backlog
        spool = backlog.spool
        lost = backlog.close()
        if lost:
            _stderr.report(f"{self!r} stopped with {lost} records not forwarded, which are lost")
        if spool is not None and spool.kept():
            _stderr.report(f"{self!r} stopped with records kept in {spool.directory!r} for the next session")

    def _start(self) -> None:
        if self._sender is not None or self._closed:
            raise RuntimeError(f"{self!r} forwards from process {self._sender_pid}, not from this one, or is closed")
        name = f"{self.address[0]}:{self.address[1]}"
        opener = functools.partial(_open, self.protocol, self.address, self._ssl_context)
        self._sender = Sender(self._backlog, opener, name, self._report)
        self._sender_pid = os.getpid()

    def _notice(self, dropped: int) -> bytes:
        message = f"{dropped} records were dropped here: memory and spool were full, or there was no spool"
        return self._mplog_message(logging.WARNING, message)

    def _report(self, message: str) -> None:
        _stderr.report(message)
        self._backlog.put(self._mplog_message(logging.WARNING, message), keep=True)

    def _mplog_message(self, level: int, message: str) -> bytes:
        return self._rfc5424.encode(self._record(level, message), message)

    @staticmethod
    def _record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("mplog", level, __file__, 0, message, None, None)

    def __repr__(self) -> str:
        return f"<SyslogHandler {self.protocol} {self.address[0]}:{self.address[1]}>"


def _open(protocol: str, address: Tuple[str, int], ssl_context: Optional["ssl.SSLContext"]) -> Transport:
    sock = connect(address, ssl_context)
    try:
        return RelpTransport(sock) if protocol == "relp" else OctetTransport(sock)
    except BaseException:
        sock.close()
        raise


def _check_address(address: Tuple[str, int]) -> Tuple[str, int]:
    if not (isinstance(address, tuple) and len(address) == 2):
        raise TypeError(f"address must be a (host, port) pair, got {address!r} ({type(address).__name__})")
    host, port = address
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"address must be a (host, port) pair, got {address!r} ({type(address).__name__})")
    return host, port


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value
