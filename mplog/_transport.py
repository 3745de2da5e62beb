"""The channel between processes: a private Unix socket address where each
process introduces itself, and one pipe per process to the listener.

A process connects to the socket once, sends the route of its records and the
read end of a new pipe (``SCM_RIGHTS``), and from then on writes whole frames
to the pipe. No lock is ever shared between processes: a process killed
mid-write can only cut off its own last frame, which the listener discards.
``os.write`` returns once the frame is in the pipe, whose only read end the
listener holds, so a record survives its sender calling ``os._exit`` or being
killed right after the logging call returns. A pipe rather than the socket
itself, because small writes to a pipe share its pages, while each send on a
socket is a kernel buffer of its own: 0.8 us per 100-byte record for writer
and reader together, against 4.0 us (measured on this project's machines).
"""

from __future__ import annotations

import _socket
import array
import atexit
import fcntl
import logging
import os
import socket
import sys
import threading
import weakref
from typing import Callable, Optional, Tuple

from . import _codec, _fork, _sigterm

__all__ = ["BUFFER_BYTES", "Queue", "SpilledError", "flush"]

#: A buffered queue sends its records once this many bytes have gathered.
BUFFER_BYTES = 64 * 1024
_SIGNAL_LOCK_SECONDS = 1.0

# sockaddr_un holds 108 bytes on Linux, including the terminating NUL.
_MAX_ADDRESS_BYTES = 107
_SOCKET_NAME = "listener.sock"
#: A worker's pipe holds this much, so bursts do not wait for the listener.
#: It counts against the user's pipe quota (the kernel's default is 64 KiB).
PIPE_BYTES = 256 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # named in fcntl from Python 3.10


def _new_private_address() -> str:
    """Return a socket path inside a fresh directory only this user can enter,
    in the first of the places ``tempfile`` would use (``tempfile.tempdir``,
    ``$TMPDIR``, ``$TEMP``, ``$TMP``, /tmp, /var/tmp, /usr/tmp, the working
    directory) where one can be made and the path fits in a socket address.

    Not ``tempfile.mkdtemp``: importing tempfile would add 1.6 ms to every
    spawned worker's start, and only the parent ever calls this.
    """
    chosen = getattr(sys.modules.get("tempfile"), "tempdir", None)
    environment = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    candidates = [chosen, *environment, "/tmp", "/var/tmp", "/usr/tmp", os.curdir]
    problems = []
    for parent in dict.fromkeys(os.path.abspath(path) for path in candidates if path):
        try:
            directory = _new_private_directory(parent)
        except OSError as exc:
            problems.append(f"{parent}: {exc}")
            continue
        address = os.path.join(directory, _SOCKET_NAME)
        if len(os.fsencode(address)) <= _MAX_ADDRESS_BYTES:
            return address
        os.rmdir(directory)
        problems.append(f"{address!r} is longer than a Unix socket path can be")
    raise OSError(f"cannot make a private directory for the listener's socket ({'; '.join(problems)})")


def _new_private_directory(parent: str) -> str:
    for _ in range(100):
        directory = os.path.join(parent, "mplog-" + os.urandom(6).hex())
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        return directory
    raise FileExistsError(f"no free name for a new directory in {parent}")


def remove_address(address: str) -> None:
    """Remove the socket file and, if it is mplog's own, its private directory
    (quietly: a process that has given up its rights since may not be able to)."""
    directory = os.path.dirname(address)
    own = os.path.basename(directory).startswith("mplog-")
    try:
        os.unlink(address)
    except FileNotFoundError:
        pass
    except OSError:
        if not own:
            raise
    if own:
        try:
            os.rmdir(directory)
        except OSError:  # gone already, not ours to remove any more, or holding something of someone else's
            pass


class SpilledError(OSError):
    """The listener could not be reached, and the buffered records, the one
    being sent among them, were written to stderr instead."""


class Queue:
    """Where workers put log records for the listener: the mplog counterpart
    of the ``multiprocessing.Queue`` in the logging cookbook.

    It pickles as its address, so it can be passed to a child any way at all
    (``initargs``, task arguments, ``Process`` args), and every process opens its
    pipe to the listener on first use. ``put_nowait`` returns once the record is in
    the kernel, in this process's pipe to the listener.

    With ``flush_interval`` set, the queue is *buffered*: records gather in
    this process and go to the listener together, at most ``flush_interval``
    seconds after they were logged, once :data:`BUFFER_BYTES` have gathered,
    before this process forks, when it exits (normally, through
    ``multiprocessing``, or on SIGTERM when no other handler is installed) and
    on :func:`mplog.flush`. What is still buffered when the process is killed
    with SIGKILL or calls ``os._exit`` is lost.

    Args:
        address: path of the listener's Unix socket; by default a new path in a
            fresh directory that only the current user can enter.
        route: which of the listener's handler groups records put here are for
            (0: the root logger's handlers).
        flush_interval: ``None`` (every record reaches the listener's pipe
            before the logging call returns), or the seconds a record may wait
            in a buffer.

    Raises:
        ValueError: ``flush_interval`` is not a positive number of seconds up to 60.
    """

    def __init__(self, address: Optional[str] = None, route: int = 0, flush_interval: Optional[float] = None) -> None:
        self.address: str = address if address is not None else _new_private_address()
        self.route = route
        self.flush_interval = check_flush_interval(flush_interval)
        self._buffer = bytearray()
        self._pipe = -1  # this process's write end, once connected
        self._pipe_pid = os.getpid()
        self._lock = self._new_lock()
        # Frames taken out of the buffer and not all written yet: set only
        # while _lock is held, so a signal handler that can take the lock and
        # finds it set has interrupted that very write.
        self._writing = False
        self._armed = False  # the flusher will send this buffer within flush_interval
        if self.flush_interval is not None:
            _flusher.queues.add(self)
        # Set by a listener thread of this process: records from this process
        # are handed to it directly instead of crossing a pipe.
        self._local: Optional[Tuple[int, Callable[[logging.LogRecord, int], None]]] = None
        _fork.register(self)

    def __repr__(self) -> str:
        return f"<mplog.Queue {self.address!r}>"

    def _new_lock(self) -> "threading.Lock | threading.RLock":
        # Buffered: reentrant, so that a SIGTERM handler that interrupted a
        # flush of its own thread can see it (and a finalizer that logs during
        # a flush does not deadlock). Durable sends never nest.
        return threading.Lock() if self.flush_interval is None else threading.RLock()

    def __reduce__(self) -> Tuple[type, Tuple[str, int, Optional[float]]]:
        return (Queue, (self.address, self.route, self.flush_interval))

    def delivers_locally(self) -> bool:
        """Whether records put here go straight to a listener thread of this process."""
        local = self._local
        return local is not None and local[0] == os.getpid()

    def put_nowait(self, record: logging.LogRecord) -> None:
        """Hand a prepared record to the listener (blocking only while the
        listener is too far behind to take it: back-pressure, never growth).

        Raises:
            OSError: the listener cannot be reached (stopped, killed, never started).
        """
        local = self._local
        if local is not None and local[0] == os.getpid():
            local[1](record, self.route)
            return
        self.send(_codec.encode(record, route=self.route), getattr(record, "process", None))

    def send(self, frame: bytes, created_in: Optional[int] = None) -> None:
        """Write one encoded frame to this process's pipe (opening it first
        if needed), or add it to the buffer.

        Args:
            frame: an encoded frame.
            created_in: the pid of the process that created the frame's record
                (``record.process``), if known. Buffered, a frame whose record
                was created in the process this queue last saw is added
                without asking the kernel for the pid (a ``getpid`` system call
                per record: 2-4% of a buffered logging call); the pid is
                checked when the buffer is sent instead.

        Raises:
            OSError: the listener cannot be reached; ``frame`` was not taken.
            SpilledError: (buffered) the listener cannot be reached; ``frame``
                and the records buffered with it went to stderr.
        """
        if self.flush_interval is None:
            self._check_fork()
            with self._lock:
                self._send_locked(frame)
            return
        if created_in != self._pipe_pid:
            self._check_fork()
        # No lock to add a frame: ``bytearray +=`` is one step under the GIL,
        # so the buffer holds whole frames whenever another thread or a signal
        # handler looks. Only taking frames out (flushing) is locked.
        buffer = self._buffer
        buffer += frame
        if len(buffer) >= BUFFER_BYTES:
            self._flush(timeout=-1)
        elif not self._armed:
            self._armed = True
            _flusher.arm(self)

    def _check_fork(self) -> None:
        if self._pipe_pid != os.getpid():
            # A fork the at-fork hook did not see (e.g. from C code): the lock
            # and pipe may be mid-use by a thread that does not exist here,
            # and the buffer is the parent's (with, buffered, the frames of
            # records the parent created and this child handled: a
            # MemoryHandler's, say, which the parent holds too).
            self._after_fork_in_child()

    def flush(self) -> None:
        """Send what this process has buffered here, if anything (never raises:
        if the listener is gone, the records go to stderr)."""
        try:
            self._flush(timeout=-1)
        except SpilledError:
            pass

    def _flush(self, timeout: float) -> bool:
        """Send the buffer under the lock; give up if the lock stays taken for
        ``timeout`` seconds (-1: wait). Return False, sending nothing, if this
        thread is in the middle of writing the buffer already (a signal handler
        or a finalizer interrupted it): what it writes must not be cut into.

        Raises:
            SpilledError: the listener cannot be reached; the buffer went to stderr.
        """
        self._check_fork()
        if not self._lock.acquire(timeout=timeout):
            return True
        try:
            if self._writing:
                return False
            self._writing = True
            try:
                self._flush_locked()
            finally:
                self._writing = False
            return True
        finally:
            self._lock.release()
            _sigterm.run_deferred()

    def _flush_locked(self) -> None:
        buffer = self._buffer
        if not buffer:
            return
        # A copy to write, so that other threads can go on adding frames (a
        # bytearray cannot grow while os.write holds it).
        data = bytes(buffer)
        del buffer[: len(data)]
        try:
            self._send_locked(data)
        except OSError as exc:
            _spill(data, f"pid {os.getpid()} cannot reach the log listener at {self.address} ({exc})")
            raise SpilledError(*exc.args) from exc

    def _send_locked(self, data: "bytes | bytearray") -> None:
        pipe = self._pipe
        if pipe < 0:
            pipe = self._pipe = self._connect()
        try:
            written = os.write(pipe, data)
            if written < len(data):  # a signal interrupted a long write
                _write_rest(pipe, bytes(data[written:]))  # a copy: a view would pin a bytearray's size
        except OSError:
            self._pipe = -1
            os.close(pipe)
            raise

    def close(self) -> None:
        """Send what is buffered, then close this process's pipe; the next
        record opens a new one."""
        self.flush()
        with self._lock:
            if self._pipe >= 0 and self._pipe_pid == os.getpid():
                os.close(self._pipe)
            self._pipe = -1

    def _connect(self) -> int:
        """Introduce this process to the listener; return the pipe's write end."""
        # The C socket type, whatever gevent or eventlet patched: connecting is
        # a plain blocking call, as is every later write to the pipe, and none
        # waits on an event loop (which may be the very thing that is stuck
        # when something needs logging).
        sock = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        read_end, write_end = os.pipe()
        try:
            try:
                fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
            except OSError:  # over the user's pipe quota: a smaller pipe still works, with earlier back-pressure
                pass
            sock.connect(self.address)
            fds = array.array("i", [read_end])
            sock.sendmsg([_codec.hello(self.route)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except OSError:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
            sock.close()
        return write_end

    def _before_fork(self) -> None:
        # A child must not inherit records it would send a second time.
        self.flush()

    def _after_fork_in_child(self) -> None:
        # The inherited pipe is the parent's: writing to it could interleave
        # with the parent's frames. Closing our copy does not affect the parent.
        if self._pipe >= 0:
            try:
                os.close(self._pipe)
            except OSError:
                pass
        self._pipe = -1
        self._lock = self._new_lock()
        self._writing = False
        self._buffer = bytearray()  # the parent's, flushed before the fork
        self._armed = False  # this process has no flusher yet
        # Records from this child always cross the pipe (a listener process
        # sets its own marker after the fork).
        self._local = None
        # Last: until now a signal handler that sends sees the fork not yet handled.
        self._pipe_pid = os.getpid()


def _write_rest(pipe: int, rest: bytes) -> None:
    while rest:
        rest = rest[os.write(pipe, rest) :]


def check_flush_interval(value: Optional[float]) -> Optional[float]:
    """``value`` if it is ``None`` or a usable flush interval.

    Raises:
        ValueError: not a positive number of seconds up to 60.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 60:
        raise ValueError(f"flush_interval must be a number of seconds > 0 and <= 60, got {value!r}")
    return float(value)


def flush() -> None:
    """Send every record this process has buffered (``setup(buffered=True)``).

    mplog does this itself at exit, before a fork, on SIGTERM when no other
    SIGTERM handler is installed, and at least every ``flush_interval``; call it
    from your own SIGTERM handler, or before ``os._exit``."""
    for queue in list(_flusher.queues):
        queue.flush()


def _spill(data: "bytes | bytearray", why: str) -> None:
    """Write buffered frames that can no longer reach the listener to stderr."""
    sys.stderr.write(f"mplog: {why}; {len(data)} bytes of buffered records follow\n")
    for line in _codec.readable_lines(bytes(data)):
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _Flusher:
    """Sends each buffered queue's records at most ``flush_interval`` seconds
    after the first of them was logged: one daemon thread per process, started
    with its first buffered record, idle while nothing is buffered."""

    def __init__(self) -> None:
        self.queues: "weakref.WeakSet[Queue]" = weakref.WeakSet()
        self._pid = 0
        self._due = threading.Event()
        self._starting = threading.Lock()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._starting = threading.Lock()  # a thread of the parent may have held it

    def arm(self, queue: Queue) -> None:
        """``queue`` holds a frame that no flush has been promised for."""
        if self._pid != os.getpid():
            with self._starting:  # two threads' first records: one flusher
                if self._pid != os.getpid():
                    self._start(queue)
        self._due.set()

    def _start(self, queue: Queue) -> None:
        self._pid = os.getpid()
        self._due = threading.Event()
        threading.Thread(target=self._run, args=(self._due,), name="mplog-flusher", daemon=True).start()
        # Ways out of a process that skip the flusher's next tick:
        atexit.register(flush)  # normal exit (logging.shutdown flushes handlers too)
        for name in ("multiprocessing.util", "multiprocess.util"):
            util = sys.modules.get(name)
            if util is not None:  # children of these leave through os._exit, after their finalizers
                util.Finalize(None, flush, exitpriority=100)
        catch_sigterm()

    def _run(self, due: threading.Event) -> None:
        _sigterm.block_in_this_thread()
        while True:
            due.wait()
            due.clear()
            queues = list(self.queues)
            interval = min((q.flush_interval or 0.0) for q in queues) if queues else 0.0
            threading.Event().wait(interval)  # sleep, in a way gevent's patching understands
            for queue in queues:
                # Before taking the frames: a frame added after this arms again.
                queue._armed = False
                queue.flush()


_flusher = _Flusher()


def catch_sigterm() -> None:
    """On SIGTERM (``Pool.terminate()``, ``kill``), send what this process has
    buffered, then die of the signal, if nobody else handles SIGTERM (and if
    called from the main thread, the only one that can install the handler)."""
    _sigterm.catch(_flush_for_sigterm)


def _flush_for_sigterm() -> bool:
    for queue in list(_flusher.queues):
        try:
            if not queue._flush(timeout=_SIGNAL_LOCK_SECONDS):
                return False  # the signal came in the middle of this thread's write of it
        except SpilledError:
            pass
    return True
