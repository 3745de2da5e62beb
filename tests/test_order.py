"""Causal order across live processes: a record logged after another, in an
order the program can see (one process logs, then hands something to another,
which then logs), lands after it, whichever processes log and whichever
listener runs the handlers."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from typing import Iterator, List

import pytest

import mplog

from .conftest import file_handler, join_all
from .serving import ENV, rotating_config, run_client, running_server

TRIALS = 50
SERVE_TRIALS = 200
LOGGER = logging.getLogger("order")


def _relay(inbox, outbox, name: str, buffered: bool, ready) -> None:
    """A live worker: says it is ready (and so opens its pipe), then, for each
    trial, logs and passes the trial on."""
    LOGGER.info("%s ready", name)
    mplog.flush()
    ready.put(name)
    while True:
        # A line of its own while it waits: its pipe then holds something
        # already when the trial comes, which a listener reading the pipes in
        # the order they became readable would take first.
        LOGGER.info("%s waits", name)
        if buffered:
            mplog.flush()
        trial = inbox.get()
        if trial is None:
            return
        LOGGER.info("%s %d", name, trial)
        if buffered:  # a buffered record waits in its process until sent (documented)
            mplog.flush()
        outbox.put(trial)


def _out_of_order(path: str, chain: List[str], trials: int = TRIALS) -> List[int]:
    """The trials whose lines (``chain`` then the trial number) are not in the file in that order."""
    with open(path, encoding="utf-8") as file:
        position = {line: index for index, line in enumerate(file.read().splitlines())}
    return [
        trial
        for trial in range(trials)
        if [position[f"{name} {trial}"] for name in chain] != sorted(position[f"{name} {trial}"] for name in chain)
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("buffered", [False, True], ids=["durable", "buffered"])
@pytest.mark.parametrize("listener", ["thread", "process"])
def test_hand_offs_between_live_processes_keep_their_order(log_path, listener, buffered):
    """50 trials of: the parent logs and hands a task to a live fork worker,
    which logs and hands it to a second, which logs and hands it back; the
    parent logs. Every trial's four lines land in that order: from the parent
    to a worker, from a worker to a worker, and from a worker to the parent."""
    with mplog.setup(file_handler(log_path, "%(message)s"), level="INFO", listener=listener, buffered=buffered):
        _hand_offs(buffered)
    late = _out_of_order(str(log_path), ["parent", "first", "second", "back"])
    assert late == [], f"{len(late)} of {TRIALS} trials out of order"


def _hand_offs(buffered: bool, trials: int = TRIALS) -> None:
    """The trials: this process logs and hands each to the first of two live
    fork workers, which pass it on and back."""
    context = multiprocessing.get_context("fork")
    first, second, back, ready = context.Queue(), context.Queue(), context.Queue(), context.Queue()
    # The second first: the listener reads its pipe first in a wake-up
    # (pipes are read in the order their processes connected).
    workers = [
        context.Process(target=_relay, args=(second, back, "second", buffered, ready)),
        context.Process(target=_relay, args=(first, second, "first", buffered, ready)),
    ]
    for worker in workers:
        worker.start()
        assert ready.get(timeout=30)
    try:
        for trial in range(trials):
            LOGGER.info("parent %d", trial)
            if buffered:
                mplog.flush()
            first.put(trial)
            assert back.get(timeout=30) == trial
            LOGGER.info("back %d", trial)
    finally:
        first.put(None)
        join_all(workers[1:])
        second.put(None)
        join_all(workers[:1])


@contextlib.contextmanager
def _noise() -> Iterator[None]:
    """A third worker logging without pause meanwhile, so the listener's
    wake-ups read for longer (and the hand-offs fall in them)."""
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    noisy = context.Process(target=_log_until, args=(stop,))
    noisy.start()
    try:
        yield
    finally:
        stop.set()
        join_all([noisy])


def _log_until(stop) -> None:
    while not stop.is_set():
        for _ in range(100):
            logging.getLogger("noise").info("%s", "n" * 200)


@pytest.mark.timeout(120)
def test_hand_offs_between_clients_of_mplog_serve_keep_their_order(tmp_path):
    """The same 50 trials in a client of ``mplog serve`` (``mplog.connect()``)
    and its two fork children, which are clients too: the server keeps a
    journal of how far each client's records are written, and still hands
    them on in order."""
    log = tmp_path / "app.log"
    script = """
        import logging, mplog
        from tests.test_order import _hand_offs, _noise, SERVE_TRIALS
        mplog.connect()
        with _noise():
            _hand_offs(False, SERVE_TRIALS)
    """
    with running_server(rotating_config(log, 10**9), tmp_path) as server:
        run_client(script, env=dict(ENV, MPLOG_ADDRESS=server.address))
    late = _out_of_order(str(log), ["parent", "first", "second", "back"], SERVE_TRIALS)
    assert late == [], f"{len(late)} of {SERVE_TRIALS} trials out of order"
