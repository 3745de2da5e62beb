"""What waits to be forwarded, in order: the spool's records, then those in
memory; and what has been sent but not yet acknowledged.

The listener's handler thread puts messages in memory; once memory holds
``memory_bytes``, they spill to the spool. When that does not fit (the spool
is full, or there is none), the newest records are dropped and counted: a
notice saying how many takes their place in the stream. The sender thread
takes batches (from the spool while it has unread records, then from memory)
and marks them acknowledged, or sends them again after a reconnection.

The order holds because batches in flight are always the oldest records:
those taken from memory were taken when the spool had nothing unread, and a
spill writes them to the spool first.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, Iterable, List, Optional

from .. import _stderr
from ._spool import Position, Spool

__all__ = ["Backlog", "Batch"]


class Batch:
    """Messages sent together; ``end`` is their end in the spool, or None
    while they are only in memory."""

    __slots__ = ("end", "messages")

    def __init__(self, messages: List[bytes], end: Optional[Position]) -> None:
        self.messages = messages
        self.end = end


class Backlog:
    """Records waiting for the receiver (see the module's docstring).

    Args:
        spool: the spool, or None to keep records in memory only.
        memory_bytes: how much memory holds before it spills.
        notice: makes the message that stands for ``n`` dropped records.
    """

    def __init__(self, spool: Optional[Spool], memory_bytes: int, notice: Callable[[int], bytes]) -> None:
        self.spool = spool
        self._memory_limit = memory_bytes
        self._notice = notice
        self._memory: Deque[bytes] = collections.deque()
        self._memory_bytes = 0
        self.inflight: Deque[Batch] = collections.deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._waiting = False
        # Records dropped since the last one kept, and whether memory ends
        # with the notice that counts them (replaced as the count grows).
        self._gap = 0
        self._notice_last = False
        #: Records dropped in all.
        self.dropped = 0

    def put(self, message: bytes, keep: bool = False) -> None:
        """Queue one message; never waits for the receiver. ``keep``: never
        drop it (mplog's own reports, which are few), even beyond the limits."""
        with self._lock:
            self._put(message, keep)
            if self._waiting:
                self._ready.notify()

    def put_all(self, messages: Iterable[bytes]) -> None:
        """Queue ``messages`` in order, as :meth:`put` would one by one (under
        one lock: the workers' lines come in runs)."""
        with self._lock:
            for message in messages:
                self._put(message, False)
            if self._waiting:
                self._ready.notify()

    def _put(self, message: bytes, keep: bool) -> None:
        if self._memory_bytes >= self._memory_limit:
            self._spill()
            if self._memory_bytes >= self._memory_limit and not keep:
                self._drop_newest()
                return
        self._memory.append(message)
        self._memory_bytes += len(message)
        self._notice_last = False
        self._gap = 0

    def take(self, limit: int, timeout: float) -> Optional[Batch]:
        """The next batch of at most ``limit`` messages, now in flight; waits
        up to ``timeout`` seconds for one; None if there is none."""
        with self._lock:
            if not self._memory and not self._spool_unread():
                self._waiting = True
                self._ready.wait(timeout)
                self._waiting = False
            if self._spool_unread():
                assert self.spool is not None
                messages, end = self.spool.read(limit)
                batch = Batch(messages, end)
            elif self._memory:
                batch = Batch(self._pop_memory(limit), None)
            else:
                return None
            self.inflight.append(batch)
            return batch

    def acknowledged(self, count: int) -> int:
        """The receiver has the oldest ``count`` batches in flight; return how
        many records they held."""
        with self._lock:
            end = None
            records = 0
            for _ in range(min(count, len(self.inflight))):
                batch = self.inflight.popleft()
                records += len(batch.messages)
                end = batch.end or end
            if end is not None and self.spool is not None:
                self.spool.commit(end)
            return records

    def wake(self) -> None:
        """End the sender's wait in :meth:`take` now."""
        with self._lock:
            self._ready.notify_all()

    def rewind(self) -> None:
        """The connection is lost: what is in flight will be sent again, in order."""
        with self._lock:
            self._rewind()

    def empty(self) -> bool:
        """Whether nothing waits and nothing is in flight."""
        return not (self._memory or self.inflight or self._spool_unread())

    def waiting(self) -> int:
        """Records in memory or in flight (not those in the spool)."""
        return len(self._memory) + sum(len(batch.messages) for batch in self.inflight)

    def close(self) -> int:
        """Keep everything not acknowledged in the spool for the next session
        and let it go; return how many records could not be kept (lost)."""
        with self._lock:
            self._rewind()
            self._spill()
            lost = len(self._memory) - (1 if self._notice_last else 0)
            if self.spool is not None:
                self.spool.close()
            return lost

    def _rewind(self) -> None:
        for batch in reversed(self.inflight):
            if batch.end is None:
                self._memory.extendleft(reversed(batch.messages))
                self._memory_bytes += sum(map(len, batch.messages))
        self.inflight.clear()
        if self.spool is not None:
            self.spool.rewind()

    def _spool_unread(self) -> bool:
        return self.spool is not None and self.spool.unread()

    def _pop_memory(self, limit: int) -> List[bytes]:
        memory = self._memory
        messages = [memory.popleft() for _ in range(min(limit, len(memory)))]
        self._memory_bytes -= sum(map(len, messages))
        if not memory:  # a notice at its end has left with the rest
            self._notice_last = False
            self._gap = 0
        return messages

    def _spill(self) -> None:
        """Move the oldest records in memory to the spool, as many as fit."""
        spool = self.spool
        if spool is None:
            return
        count = self._fitting(spool.max_bytes - spool.size)
        if not count:
            return
        # Batches in flight from memory are older than what memory holds: they go first.
        unspooled = [batch for batch in self.inflight if batch.end is None]
        messages = [self._memory.popleft() for _ in range(count)]
        self._memory_bytes -= sum(map(len, messages))
        ends = spool.append([batch.messages for batch in unspooled] + [messages])
        for batch, end in zip(unspooled, ends):
            batch.end = end
        if unspooled:
            spool.skip_to(ends[-2])
        if not self._memory:  # a notice at its end went too
            self._notice_last = False
            self._gap = 0

    def _fitting(self, room: int) -> int:
        """How many of the oldest records in memory fit in ``room`` bytes of spool."""
        count = 0
        for message in self._memory:
            room -= 4 + len(message)
            if room < 0:
                break
            count += 1
        return count

    def _drop_newest(self) -> None:
        """Memory and spool are full: count a record dropped, and have the
        notice at the end of memory say how many were since the last one kept."""
        if not self._gap:
            where = f"the spool {self.spool.directory!r} is full" if self.spool is not None else "there is no spool"
            _stderr.report(f"records to forward are dropped: memory is full and {where}; the log will say how many")
        self._gap += 1
        self.dropped += 1
        notice = self._notice(self._gap)
        if self._notice_last:
            self._memory_bytes -= len(self._memory.pop())
        self._memory.append(notice)
        self._memory_bytes += len(notice)
        self._notice_last = True
