"""What a benchmark worker runs: the workload, the handlers and the worker functions.

Kept apart from ``matrix.py`` so that a spawned worker imports only this
module (and the logging method under test): the driver's own imports
(argparse, statistics, subprocess...) would otherwise be re-run by every
spawned worker, adding the same start-up cost to every method and hiding
their differences. No ``typing`` at run time for the same reason.
"""

from __future__ import annotations

import functools
import logging
import os
import string
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Tuple

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
# loguru's own syntax for the same line; {extra[name]} because loguru's {name}
# is the calling module, which differs between fork and spawn children.
LOGURU_FORMAT = "{time:YYYY-MM-DD HH:mm:ss,SSS} {process} {level} {extra[name]}: {message}"
LOGGER_NAME = "bench"
# Four arguments, as real code logs: formatting them is part of the cost.
MESSAGE = "w=%d seq=%d status=%s data=%s"
LOGURU_MESSAGE = "w={} seq={} status={} data={}"
STATUSES = ("ok", "retry", "miss", "slow")
MAX_BYTES = 50 * 1024 * 1024
BACKUP_COUNT = 20  # the stdlib's and concurrent-log-handler's; mplog's keeps every file
_ALPHABET = string.ascii_letters + string.digits  # 62 characters


@functools.lru_cache(maxsize=None)
def payload_variants(size: int) -> Tuple[str, ...]:
    """The 62 payloads of ``size`` characters: rotations of the alphabet.

    Precomputed so that a 64 KiB payload costs the worker a lookup, not a
    copy: the loop should time logging, not building the message.
    """
    text = _ALPHABET * (size // len(_ALPHABET) + 2)
    return tuple(text[start : start + size] for start in range(len(_ALPHABET)))


def variant_index(worker: int, seq: int) -> int:
    # Neighbouring records get different payloads, so a line spliced from two
    # records, or cut short, is not what it claims to be.
    return (worker * 7919 + seq * 31) % len(_ALPHABET)


def status_of(worker: int, seq: int) -> str:
    return STATUSES[(worker + seq) % len(STATUSES)]


class Load:
    """What one worker logs, and where it reports the time its loop took.

    A plain class rather than a NamedTuple: ``typing`` would add to every
    spawned worker's start the import this module exists to avoid.
    """

    __slots__ = ("worker", "records", "size", "timing_dir")

    def __init__(self, worker: int, records: int, size: int, timing_dir: str) -> None:
        self.worker = worker
        self.records = records
        self.size = size
        self.timing_dir = timing_dir


def log_loop(log: Callable[..., Any], message: str, load: Load) -> float:
    """Log ``load.records`` records through ``log``; return the seconds it took."""
    w = load.worker
    variants = payload_variants(load.size)
    started = time.perf_counter()
    for seq in range(load.records):
        log(message, w, seq, STATUSES[(w + seq) % 4], variants[(w * 7919 + seq * 31) % 62])
    return time.perf_counter() - started


def report_loop(load: Load, seconds: float) -> None:
    with open(os.path.join(load.timing_dir, str(load.worker)), "w") as report:
        report.write(repr(seconds))


# --- handlers ---------------------------------------------------------------------


def file_handler(path: str) -> logging.Handler:
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def rotating_handler(path: str) -> logging.Handler:
    import logging.handlers

    handler = logging.handlers.RotatingFileHandler(path, mode="a", maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def mplog_file_handler(path: str) -> logging.Handler:
    """mplog's own file: rotates at the same size as the other rotating methods,
    and keeps every rotated file (``backup_count=None``), so that verification
    reads back every record that was written."""
    import mplog

    handler = mplog.FileHandler(path, max_bytes=MAX_BYTES, backup_count=None)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def clh_handler(path: str) -> logging.Handler:
    from concurrent_log_handler import ConcurrentRotatingFileHandler

    handler = ConcurrentRotatingFileHandler(path, mode="a", maxBytes=MAX_BYTES, backupCount=BACKUP_COUNT)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


# --- workers (module level, so spawned children can import them) -------------------


def log_through_root(load: Load) -> float:
    logging.getLogger().setLevel(logging.INFO)
    return log_loop(logging.getLogger(LOGGER_NAME).info, MESSAGE, load)


def _log_with(handler: logging.Handler, load: Load) -> float:
    """Log ``load`` with ``handler`` added to the root logger; return the loop's seconds."""
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        return log_through_root(load)
    finally:
        root.removeHandler(handler)


def own_handler_worker(make_handler: Callable[[str], logging.Handler], path: str, load: Load) -> None:
    """Log through this process's own handler on the shared file."""
    handler = make_handler(path)
    try:
        seconds = _log_with(handler, load)
    finally:
        # Fork children leave through os._exit(), which skips logging.shutdown().
        handler.close()
    report_loop(load, seconds)


def mplog_worker(initializer: Callable[[], None], load: Load) -> None:
    """Log through mplog; ``initializer`` wires a spawned child (no-op under fork)."""
    initializer()
    report_loop(load, log_through_root(load))


def queue_worker(queue: Any, load: Load) -> None:
    """Log through the cookbook QueueHandler onto a multiprocessing.Queue."""
    import logging.handlers

    try:
        seconds = _log_with(logging.handlers.QueueHandler(queue), load)
    finally:
        # The cookbook's orderly exit: wait until the feeder thread has written
        # every buffered record to the pipe, so none is lost with us.
        queue.close()
        queue.join_thread()
    report_loop(load, seconds)


def inherited_worker(_unused: None, load: Load) -> None:
    """Log through whatever the fork inherited (multiprocessing-logging's handler).

    Its queue's feeder thread is joined by multiprocessing's exit handlers.
    """
    report_loop(load, log_through_root(load))


def loguru_worker(logger: Any, load: Load) -> None:
    """Log through the loguru logger handed over by the parent (pickled under
    spawn, as loguru's docs prescribe for enqueue=True)."""
    bound = logger.bind(name=LOGGER_NAME)
    report_loop(load, log_loop(bound.info, LOGURU_MESSAGE, load))
