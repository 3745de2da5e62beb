"""The sender thread: connects to the receiver (again, with backoff, while it
is down), sends the backlog in batches, marks what is acknowledged, and after
a lost connection sends again what was not."""

from __future__ import annotations

import threading
import time
from typing import Callable, Union

from ._backlog import Backlog
from ._relp import RelpTransport
from ._tcp import SEND_SECONDS, OctetTransport, ProtocolError

__all__ = ["Sender", "Transport"]

Transport = Union[RelpTransport, OctetTransport]
#: Messages per batch, at most.
BATCH = 512
#: Waits between connection attempts: doubled from the first to the last.
BACKOFF_FIRST = 0.1
BACKOFF_LAST = 5.0
#: How long acknowledgements may be awaited before the receiver counts as gone.
ACK_SECONDS = 10.0
# How long an idle sender sleeps between looks at its stop flag.
_IDLE_SECONDS = 0.5


class Sender:
    """Forwards ``backlog`` to the receiver, in a daemon thread.

    Args:
        backlog: what to send.
        connect: opens a session with the receiver (raises OSError when it cannot).
        name: the receiver, as reports name it.
        report: says something in the log and on stderr.
    """

    def __init__(
        self, backlog: Backlog, connect: Callable[[], Transport], name: str, report: Callable[[str], None]
    ) -> None:
        self._backlog = backlog
        self._connect = connect
        self._name = name
        self._report = report
        self._stopping = threading.Event()
        self._give_up = threading.Event()
        #: Records the receiver acknowledged (with TCP: sent), and records sent again after a lost connection.
        self.forwarded = 0
        self.resent = 0
        self._thread = threading.Thread(target=self._run, name=f"mplog-forward {name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Send what waits, for up to ``timeout`` seconds, then stop; return
        whether everything was acknowledged."""
        self._stopping.set()
        self._backlog.wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._give_up.set()
            self._backlog.wake()
            # A send in progress ends within its own timeout.
            self._thread.join(SEND_SECONDS + 1.0)
        return self._backlog.empty()

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        down_since = 0.0
        while not self._give_up.is_set():
            if self._stopping.is_set() and self._backlog.empty():
                return
            try:
                transport = self._connect()
            except OSError as exc:
                if not down_since:
                    down_since = time.monotonic()
                    self._report(f"cannot forward to {self._name} ({exc}); records wait, and are sent once it is back")
                self._give_up.wait(delay)
                delay = min(delay * 2, BACKOFF_LAST)
                continue
            if down_since:
                self._report(f"forwarding to {self._name} again, after {time.monotonic() - down_since:.1f} s")
            delay, down_since = BACKOFF_FIRST, 0.0
            try:
                self._pump(transport)
            except OSError as exc:
                down_since = time.monotonic()
                self._backlog.rewind()
                resent = transport.pending()
                self.resent += resent
                self._report(
                    f"connection to {self._name} lost ({exc}); {resent} records sent and not acknowledged "
                    "will be sent again (the receiver may have some of them already)"
                )
            finally:
                transport.close()

    def _pump(self, transport: Transport) -> None:
        """Send and mark acknowledged until stopped with nothing left to send.

        Raises:
            OSError: the connection failed (ProtocolError: the receiver answered
                wrong, or not for ``ACK_SECONDS``).
        """
        backlog = self._backlog
        waited_since = time.monotonic()  # for acknowledgements
        while not self._give_up.is_set():
            if not transport.pending():
                waited_since = time.monotonic()
            acked = self._step(transport)
            if acked:
                self.forwarded += backlog.acknowledged(acked)
                waited_since = time.monotonic()
            elif transport.pending() and time.monotonic() - waited_since > ACK_SECONDS:
                raise ProtocolError(f"no acknowledgement for {ACK_SECONDS:g} s")
            if self._stopping.is_set() and backlog.empty():
                return

    def _step(self, transport: Transport) -> int:
        """Send a batch if the window has room; return how many batches were
        acknowledged meanwhile."""
        room = transport.room()
        if room <= 0:
            return transport.acknowledged(0.1)
        batch = self._backlog.take(min(BATCH, room), 0.0 if transport.pending() else _IDLE_SECONDS)
        if batch is not None:
            transport.send(batch.messages)
        return transport.acknowledged(0.0 if batch is not None else 0.05)
