#!/usr/bin/env python3
"""CPU time of one logging call in one process, handler by handler, and the
CPU mplog's listener spends per record.

Run:  python benchmarks/percall.py [--records 200000]

Each method logs the same records (the format and message of the other
benchmarks) from this process. mplog runs its listener as a process here
(``listener="process"``), so the records cross a pipe as a worker's do and
the listener's CPU can be read from the child's times. A script, not a test:
the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import multiprocessing
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mplog  # noqa: E402

FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def _per_call(label: str, records: int) -> None:
    """Log ``records`` records through the root logger's current handlers."""
    logger = logging.getLogger("bench")
    started = time.process_time()
    for seq in range(records):
        logger.info("request %d from %s took %.3f ms status %s", seq, "10.0.0.1", 1.234, "ok")
    print(f"{label:44s} {(time.process_time() - started) / records * 1e6:6.2f} µs/call")


def _file_handler(path: str) -> logging.Handler:
    handler = logging.FileHandler(path, "w")
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def _rotating_file_handler(path: str) -> logging.Handler:
    """mplog's own file, rotating by size: what the matrix's headline mplog row uses."""
    handler = mplog.FileHandler(path, max_bytes="50 MiB", backup_count=1)
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler


def _drain(shared: "multiprocessing.Queue[object]") -> None:
    """Empty the queue until the None sentinel (the cookbook listener's job, minus the handling)."""
    while shared.get() is not None:
        pass


def _with_handler(handler: logging.Handler, run: Callable[[], None]) -> None:
    root = logging.getLogger()
    root.handlers[:] = [handler]
    try:
        run()
    finally:
        root.handlers[:] = []
        handler.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    records = args.records
    logging.getLogger().setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "app.log")
        _with_handler(_file_handler(path), lambda: _per_call("logging.FileHandler", records))
        simple: "queue.SimpleQueue[logging.LogRecord]" = queue.SimpleQueue()
        _with_handler(
            logging.handlers.QueueHandler(simple), lambda: _per_call("stdlib QueueHandler, SimpleQueue", records)
        )
        shared: "multiprocessing.Queue[object]" = multiprocessing.Queue()
        drain = threading.Thread(target=_drain, args=(shared,))
        drain.start()
        _with_handler(
            logging.handlers.QueueHandler(shared),  # type: ignore[arg-type]
            lambda: _per_call("stdlib QueueHandler, multiprocessing.Queue", records),
        )
        shared.put(None)
        drain.join()
        for label, make_handler, buffered in (
            ("durable", _file_handler, False),
            ("buffered", _file_handler, True),
            ("durable, rotating mplog.FileHandler", _rotating_file_handler, False),
        ):
            before = os.times()
            with mplog.setup(make_handler(path), level="INFO", listener="process", buffered=buffered):
                _per_call(f"mplog ({label})", records)
            after = os.times()
            listener = (after.children_user + after.children_system) - (before.children_user + before.children_system)
            print(f"{'  its listener, per record':44s} {listener / records * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
