"""Records that can be counted end to end, and the worker functions that log them.

Each workload record's message is ``w=<worker> seq=<n> size=<k> <body>`` where
the body is ``k`` copies of one letter chosen by worker and sequence number, so
a line read back is either exactly right or visibly torn. Functions here are
module-level so that spawn and forkserver children can import them.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

LOGGER = "work"
LINE = re.compile(r"^w=(\d+) seq=(\d+) size=(\d+) ([a-z]*)$")


def message(worker: int, seq: int, size: int) -> str:
    letter = chr(ord("a") + (worker * 7 + seq) % 26)
    return f"w={worker} seq={seq} size={size} {letter * size}"


def log_records(
    worker: int, count: int, sizes: Sequence[int] = (100,), start: int = 0, returned: Optional[Any] = None
) -> None:
    """Log ``count`` workload records, cycling through ``sizes``; after each
    call, set ``returned[0]`` (shared memory, say) to the number of calls that
    have returned."""
    logger = logging.getLogger(LOGGER)
    for seq in range(start, start + count):
        size = sizes[seq % len(sizes)]
        logger.info("%s", message(worker, seq, size))
        if returned is not None:
            returned[0] = seq + 1


def init_and_log(initializer, worker: int, count: int, sizes: Sequence[int] = (100,)) -> None:
    """A Process target for spawn/forkserver: install mplog, then log."""
    initializer()
    log_records(worker, count, sizes)


def pool_task(args) -> int:
    worker, count, sizes = args
    log_records(worker, count, sizes)
    return os.getpid()


def log_then_exit(initializer, worker: int, count: int, how: str, done_path: Optional[str] = None) -> None:
    """Log ``count`` records, then leave in the way ``how`` names."""
    if initializer is not None:
        initializer()
    log_records(worker, count)
    if how == "os._exit":
        os._exit(0)
    if done_path is not None:  # tell the parent every logging call has returned
        open(done_path, "w").close()
    if how in ("SIGTERM", "SIGKILL"):
        time.sleep(60)  # the parent kills us
    raise AssertionError(f"unknown exit {how!r}")


def log_then_kill_self(
    worker: int, count: int, sent_path: str, when: Callable[[], bool], timeout: float = 60.0
) -> None:
    """Once ``when()`` is true, log ``count`` records, send this process
    SIGTERM, and say so by creating ``sent_path``. If ``when()`` does not come
    true within ``timeout`` seconds, do nothing (the parent, waiting for
    ``sent_path``, fails)."""
    deadline = time.monotonic() + timeout
    while not when():
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)
    log_records(worker, count)
    os.kill(os.getpid(), signal.SIGTERM)
    open(sent_path, "w").close()


def open_pipe() -> None:
    """Have this process's mplog queue (the root logger's handler's) open its
    pipe now, sending nothing. A process's first record waits until the
    listener has taken its pipe; a test that then holds the listener back
    (its busy lock, a stuck handler) opens the pipe first, so the process
    waits in a write to that pipe, not for the listener's answer."""
    queue = logging.getLogger().handlers[0].queue
    queue._check_fork()
    with queue._lock:
        queue._send_locked(b"")  # connects if need be; writes nothing


def open_pipe_then(ready: Any, go: Any, target: Callable[..., None], *args: Any) -> None:
    """Open this process's pipe (see :func:`open_pipe`), set the event
    ``ready``, wait for the event ``go`` (at most 60 s), then run ``target(*args)``."""
    open_pipe()
    ready.set()
    go.wait(60)
    target(*args)


def log_forever(initializer, worker: int, sizes: Sequence[int]) -> None:
    """Log until killed (for SIGKILL trials)."""
    if initializer is not None:
        initializer()
    log_records(worker, 10**9, sizes)


def log_from_threads(
    first_worker: int,
    threads: int,
    count: Optional[int],
    sizes: Sequence[int],
    main_sizes: Sequence[int] = (),
    returned: Any = None,
) -> None:
    """Log from ``threads`` threads at once, as workers ``first_worker`` + 0, 1,
    ...; ``count`` records each, or until killed when ``count`` is None. The
    main thread is the last worker: it logs ``main_sizes`` (default ``sizes``)
    and counts its returned calls in ``returned``, as ``log_records`` does."""
    workers = [
        threading.Thread(target=log_records, args=(first_worker + t, count or 10**9, sizes), daemon=True)
        for t in range(threads - 1)
    ]
    for thread in workers:
        thread.start()
    log_records(first_worker + threads - 1, count or 10**9, main_sizes or sizes, returned=returned)
    for thread in workers:
        thread.join()


@dataclass
class Tally:
    """What a log file holds, per worker."""

    seqs: Dict[int, Counter] = field(default_factory=dict)
    torn: List[str] = field(default_factory=list)
    other: List[str] = field(default_factory=list)

    def missing(self, worker: int, expected: Iterable[int]) -> List[int]:
        got = self.seqs.get(worker, Counter())
        return [seq for seq in expected if seq not in got]

    def duplicated(self) -> List[tuple]:
        return [(w, s) for w, c in self.seqs.items() for s, n in c.items() if n > 1]

    def count(self, worker: int) -> int:
        return sum(self.seqs.get(worker, Counter()).values())

    def assert_complete(self, expected: Dict[int, int]) -> None:
        """Every worker ``w`` logged seq 0..expected[w]-1 exactly once; nothing torn."""
        assert not self.torn, f"{len(self.torn)} torn lines, e.g. {self.torn[0][:200]!r}"
        assert not self.duplicated(), f"duplicated records: {self.duplicated()[:10]}"
        for worker, count in expected.items():
            missing = self.missing(worker, range(count))
            assert not missing, f"worker {worker}: {len(missing)} of {count} records missing, e.g. {missing[:10]}"
        extra = set(self.seqs) - set(expected)
        assert not extra, f"records from unexpected workers {sorted(extra)}"


def tally(path: str, prefix: str = "") -> Tally:
    """Read a log file whose format is ``prefix + %(message)s``."""
    result = Tally()
    with open(path, encoding="utf-8", newline="\n") as stream:
        for raw in stream:
            line = raw.rstrip("\n")
            if not line.startswith(prefix):
                result.torn.append(line)
                continue
            body = line[len(prefix) :]
            match = LINE.match(body)
            if match is None:
                (result.torn if body.startswith("w=") else result.other).append(line)
                continue
            worker, seq, size = int(match[1]), int(match[2]), int(match[3])
            if body != message(worker, seq, size):
                result.torn.append(line)
                continue
            result.seqs.setdefault(worker, Counter())[seq] += 1
    return result


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
