"""An ``mplog serve`` client's queue that survives the server's restart.

A session's worker that loses its listener writes to stderr for good; a
client of ``mplog serve`` instead keeps every frame the server has not read
in a store of its own, and when the server goes away (SIGTERM, or killed)
holds new frames there too, up to a bound, reconnects by itself and sends
what it holds, in order, from the first frame the server did not read whole.

What the server has written is told by asking it, as ``mplog.complete()``
does, once every ``ACK_BYTES`` written: its answer confirms every frame
written to the pipe before the question; those frames are let go. What it
read is told by what it left unread: when the pipe breaks, this process opens
a read end of its own pipe (through ``/proc``) and reads what is still in it.
A pipe the server sealed while stopping (SIGTERM) holds only padding:
everything written was read, and written to the files, before the server
exited; only the frames that did not get in are sent again. After a SIGKILL,
every frame not confirmed is sent again: those still in the pipe were never
read, but those the server had read may or may not have reached the files
before it died. They are counted and said on stderr (at most ``ACK_BYTES``
and a pipe's worth of frames), and the restarted server skips those its
journal says were written (:mod:`mplog._journal`): each queue's stream has a
random id and every byte of it an offset, both sent in the hello.

A client that exits waits (at ``atexit``, up to ``MPLOG_HOLD_TIMEOUT``) for
the server to confirm what it sent: after a SIGKILL, the restarted server
removes what it had written and not yet journalled, which only a client
still alive can send again.

While the server is
away and the store is full (``MPLOG_HOLD_BYTES``), ``MPLOG_WHEN_FULL`` says
what a logging call does: ``block`` (the default) waits for the server for
up to ``MPLOG_HOLD_TIMEOUT`` seconds, then drops the record (and every later
one, without waiting, until the server is back); ``drop`` drops it at once.
Dropped records are counted and said on stderr when the server is back, or
at exit.
"""

from __future__ import annotations

import array
import atexit
import fcntl
import marshal
import os
import select
import termios
import time
from typing import Callable, Optional, Tuple

from . import _codec, _stderr
from ._buffered import spill
from ._handled import wait_handled
from ._hello import connect
from ._marks import here
from ._order import MARKED, mark
from ._pipewrite import take_all
from ._queue import Queue

__all__ = ["ACK_BYTES", "HOLD_BYTES", "HOLD_TIMEOUT", "ResumingQueue", "hold_policy", "new_queue"]

#: The most a client holds, by default, while its server is away (``MPLOG_HOLD_BYTES``).
HOLD_BYTES = 8 * 1024 * 1024
#: How long a logging call waits, by default, for a server that is away when the store is full.
HOLD_TIMEOUT = 10.0
#: After this many bytes written, the client asks the server to confirm they are written.
ACK_BYTES = 256 * 1024
# The most one os.write is given.
_CHUNK = 64 * 1024
# The waits between attempts to reconnect (doubling), and between those of a blocked call.
_RETRY_FIRST = 0.02
_RETRY_MAX = 0.25
_BLOCKED_RETRY = 0.05
# The least time a client waits for the server to confirm what it wrote.
_ACK_TIMEOUT = 1.0


def hold_policy() -> Tuple[int, str, float]:
    """The store's bound in bytes, what to do when it is full, and how long
    to wait then, from ``MPLOG_HOLD_BYTES``, ``MPLOG_WHEN_FULL`` and ``MPLOG_HOLD_TIMEOUT``.

    Raises:
        ValueError: one of them is not what it may be.
    """
    try:
        size = int(os.environ.get("MPLOG_HOLD_BYTES", HOLD_BYTES))
        timeout = float(os.environ.get("MPLOG_HOLD_TIMEOUT", HOLD_TIMEOUT))
    except ValueError:
        raise ValueError("MPLOG_HOLD_BYTES must be a whole number of bytes, MPLOG_HOLD_TIMEOUT seconds") from None
    when_full = os.environ.get("MPLOG_WHEN_FULL", "block")
    if size < 0 or not 0 <= timeout < float("inf") or when_full not in ("block", "drop"):
        raise ValueError("MPLOG_HOLD_BYTES and MPLOG_HOLD_TIMEOUT must be >= 0, MPLOG_WHEN_FULL block or drop")
    return size, when_full, timeout


class ResumingQueue(Queue):
    """A :class:`mplog.Queue` for an ``mplog serve`` client: frames the
    server has not read are kept, and sent again to the next server on the
    same address (see the module's docstring)."""

    def __init__(self, address: str, route: int = 0, flush_interval: Optional[float] = None) -> None:
        self.hold_bytes, self.when_full, self.hold_timeout = hold_policy()
        super().__init__(address, route, flush_interval)
        # Frames the server has not been seen to read: those before _in_pipe
        # are in the current pipe, the rest not written yet.
        self._store = bytearray()
        self._in_pipe = 0
        self._retry_at = 0.0
        self._retry_wait = _RETRY_FIRST
        self._gave_up = False  # a blocked call waited HOLD_TIMEOUT in vain: drop until the server is back
        self._connected = False  # once: a later connection is to a new server
        # The stream's id, and the offset in it of the first stored byte. One
        # attribute, not two: CPython 3.13 gave up the instance's compact
        # (shared-key) dict at 30 attributes, which cost each logging call
        # about 3,000 instructions (callgrind).
        self._stream = [_new_stream_id(), 0]
        #: For a taken-over file handler: asks a new server for the handler's route
        #: (routes past the configured ones are handed out by each server anew).
        self.redeclare: Optional[Callable[[], int]] = None
        #: Records dropped because the store was full, not yet reported.
        self.dropped = 0
        #: Records sent again after a SIGKILL that the killed server had read: each may be in the files twice.
        self.resent = 0
        atexit.register(self._at_exit)

    def __reduce__(self) -> Tuple[type, Tuple[str, int, Optional[float]]]:
        return (ResumingQueue, (self.address, self.route, self.flush_interval))

    def _send_locked(self, data: bytes, end: bytes = b"") -> None:
        """Store ``data`` (completed by ``end``) and write what the pipe has not got (the lock held)."""
        try:
            self._writing = here()
            self._push(MARKED % (time.monotonic_ns(), data, end))
        finally:
            self._writing = None
            if self._held:
                self._send_held()

    def _write_out(self, buffer: bytearray) -> None:
        """Take the frames out of ``buffer`` and send them as ``_send_locked`` does."""
        data = take_all(buffer)
        if data:
            self._push(mark() + data)

    def _push(self, data: bytes) -> None:
        if self._pipe < 0:
            self._try_connect()
        if self._pipe < 0 and len(self._store) + len(data) > self.hold_bytes and not self._wait_for_room():
            self.dropped += _frame_count(data)
            return
        self._store += data
        if self._pipe >= 0:
            self._pump()

    def _wait_for_room(self) -> bool:
        """Under ``block``, wait up to ``hold_timeout`` for the server; return whether it is back."""
        if self.when_full == "drop" or self._gave_up:
            return False
        deadline = time.monotonic() + self.hold_timeout
        while time.monotonic() < deadline:
            time.sleep(_BLOCKED_RETRY)
            self._retry_at = 0.0
            if self._try_connect():
                self._pump()
                return self._pipe >= 0
        self._gave_up = True
        return False

    def _try_connect(self) -> bool:
        """Connect to the server, unless the last attempt was too recent; return whether connected."""
        now = time.monotonic()
        if now < self._retry_at:
            return False
        try:
            self._reroute()
            self._pipe = connect(self.address, self.route, (self._stream[0], self._stream[1]))
        except OSError:
            self._retry_at = now + self._retry_wait
            self._retry_wait = min(self._retry_wait * 2, _RETRY_MAX)
            return False
        self._in_pipe = 0
        self._connected = True
        self._retry_wait = _RETRY_FIRST
        self._gave_up = False
        self._report_dropped("the server is back")
        self._report_resent()
        return True

    def _reroute(self) -> None:
        """Before connecting to a new server: ask it for this handler's route,
        and put the stored frames on it.

        Raises:
            OSError: no server answers.
        """
        if not self._connected or self.redeclare is None:
            return
        route = self.redeclare()
        if route != self.route:
            self._store = _rerouted(self._store, route)
            self.route = route

    def _pump(self) -> None:
        """Write the stored frames the pipe has not got; if it breaks, keep
        those the server did not read whole."""
        while self._in_pipe < len(self._store):
            start = self._in_pipe
            try:
                with memoryview(self._store) as view:
                    written = os.write(self._pipe, view[start : start + _CHUNK])
            except OSError:
                self._lost_pipe()
                return
            self._in_pipe = start + written
        if self._in_pipe < ACK_BYTES:
            return
        if self._confirmed(time.monotonic() + max(self.hold_timeout, _ACK_TIMEOUT)):
            self._forget(self._in_pipe)  # all of it written: the store was all in the pipe
        elif len(self._store) > self.hold_bytes:  # unconfirmed (a handler stalled?): keep only what is unread
            self._forget(self._in_pipe - _unread(self._pipe))

    def _confirmed(self, deadline: float) -> bool:
        """Whether the server confirms, by ``deadline``, having handled all
        that was written to the pipe: an answer counts only if the pipe's
        reader is still there (else another server, started since, answered)."""
        return wait_handled(self.address, deadline) and not _reader_gone(self._pipe)

    def _lost_pipe(self) -> None:
        """The server is gone: keep from the first frame it did not read
        whole if it stopped (sealed), else every frame not confirmed."""
        left = _left_in(self._pipe)
        os.close(self._pipe)
        self._pipe = -1
        if left is None:  # sealed: what it read, it wrote
            self._forget(self._in_pipe)
        else:
            self.resent += _frame_count(self._store[: _frame_start(self._store, self._in_pipe - left)])
        self._in_pipe = 0
        self._retry_at = 0.0

    def _forget(self, read: int) -> None:
        """Let go of the stored frames that end at or before byte ``read``."""
        # All of it (each confirmation): no frame to walk through.
        start = len(self._store) if read >= len(self._store) else _frame_start(self._store, read)
        del self._store[:start]
        self._in_pipe -= start
        self._stream[1] += start

    def _report_dropped(self, when: str) -> None:
        if self.dropped:
            _stderr.report(
                f"pid {os.getpid()} dropped {self.dropped} record(s) while the mplog server at {self.address} "
                f"was away ({self.hold_bytes} bytes held, MPLOG_WHEN_FULL={self.when_full}); {when}"
            )
            self.dropped = 0

    def _report_resent(self) -> None:
        if self.resent:
            _stderr.report(
                f"pid {os.getpid()} sent {self.resent} record(s) again that the mplog server at {self.address} "
                "had read but not confirmed as written before it was killed: its file handlers skip those it "
                "had written; other handlers may get them twice"
            )
            self.resent = 0

    def _at_exit(self) -> None:
        """At exit: wait up to ``hold_timeout`` for the server to confirm what
        is held (reconnecting to an absent one); else write what it did not
        get to stderr, and say what was dropped."""
        if self._pipe_pid != os.getpid():
            return
        self.flush()
        with self._lock:
            deadline = time.monotonic() + self.hold_timeout
            while self._store and time.monotonic() < deadline:
                self._retry_at = 0.0
                if self._pipe < 0 and not self._try_connect():
                    time.sleep(_BLOCKED_RETRY)
                    continue
                self._pump()
                if self._pipe >= 0 and self._store:
                    self._confirm_at_exit(deadline)
            if self._store and self._pipe < 0:
                held = take_all(self._store)
                spill(held, f"pid {os.getpid()} exits while the mplog server at {self.address} is away")
            self._report_dropped("at exit")

    def _confirm_at_exit(self, deadline: float) -> None:
        """Let go of what the server confirms; if it is gone, keep what it did not read."""
        if self._confirmed(deadline):
            self._forget(self._in_pipe)
        elif _reader_gone(self._pipe):
            self._lost_pipe()
        else:  # not answered (its backlog full, say): ask again a little later
            time.sleep(_BLOCKED_RETRY)

    def _drop_inherited_pipe(self) -> None:
        super()._drop_inherited_pipe()
        self._store = bytearray()  # the parent's to send
        self._in_pipe = 0
        self._stream = [_new_stream_id(), 0]  # the parent's stream goes on there
        self.dropped = self.resent = 0


def new_queue(
    address: str,
    route: int,
    flush_interval: Optional[float],
    served: bool,
    redeclare: Optional[Callable[[], int]] = None,
) -> Queue:
    """The queue a process sends route ``route``'s records on: for an ``mplog
    serve`` client, one that survives the server's restart (``redeclare``:
    for a taken-over handler, asks a new server for its route)."""
    if not served:
        return Queue(address, route, flush_interval)
    queue = ResumingQueue(address, route, flush_interval)
    queue.redeclare = redeclare
    return queue


def _new_stream_id() -> int:
    """A random, non-zero id for a queue's stream (64 bits: no two clients share one)."""
    return int.from_bytes(os.urandom(8), "little") or 1


def _reader_gone(pipe: int) -> bool:
    """Whether nobody holds ``pipe``'s read end any more (the server is gone)."""
    poller = select.poll()
    poller.register(pipe, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _unread(pipe: int) -> int:
    """How many bytes written to ``pipe`` have not been read (``FIONREAD``)."""
    count = array.array("i", [0])
    fcntl.ioctl(pipe, termios.FIONREAD, count)
    return count[0]


def _left_in(pipe: int) -> Optional[int]:
    """How many bytes of ours a broken ``pipe`` still holds, read through a
    read end of our own: None if it holds only the padding of a sealed pipe;
    all it holds if it cannot be read."""
    try:
        reader = os.open(f"/proc/self/fd/{pipe}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return _unread(pipe)
    try:
        left = bytearray()
        while True:
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            left += chunk
    finally:
        os.close(reader)
    return None if left and left.count(0) == len(left) else len(left)


def _frame_start(frames: bytearray, offset: int) -> int:
    """Where the frame holding byte ``offset`` of ``frames`` starts (``offset``
    itself if a frame starts there)."""
    pos = 0
    while pos < offset:
        end = _frame_end(frames, pos)
        if end > offset:
            return pos
        pos = end
    return pos


def _frame_end(frames: "bytes | bytearray", pos: int) -> int:
    """Where the frame at ``pos`` ends (the stored frames are whole)."""
    if frames[pos] == _codec.RECORD_START:
        _, size = _codec.HEADER.unpack_from(frames, pos)
        return int(pos + _codec.HEADER.size + size)
    return frames.index(_codec.TEXT_END, pos) + 1


def _rerouted(frames: bytearray, route: int) -> bytearray:
    """``frames`` (whole, not yet written to a pipe) with each record frame's route set to ``route``."""
    out = bytearray()
    pos = 0
    while pos < len(frames):
        end = _frame_end(frames, pos)
        if frames[pos] == _codec.RECORD_START:
            fields = marshal.loads(frames[pos + _codec.HEADER.size : end])
            payload = marshal.dumps((route, *fields[1:]), _codec._MARSHAL_VERSION)
            out += _codec.HEADER.pack(_codec.RECORD_START, len(payload)) + payload
        else:
            out += frames[pos:end]
        pos = end
    return out


def _frame_count(frames: "bytes | bytearray") -> int:
    """How many frames ``frames`` holds."""
    count = pos = 0
    while pos < len(frames):
        count += not _codec.is_mark(frames, pos)
        pos = _frame_end(frames, pos)
    return count
