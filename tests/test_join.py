"""Processes started by multiprocessing (or multiprocess) while a session is
active log through its listener with nothing to call: spawn and forkserver
children included, whatever creates them."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os

import multiprocess
import pytest

import mplog

from .conftest import file_handler, join_all
from .workload import LOGGER, log_records, pool_task, tally

WORKERS = 8
RECORDS = 200  # per worker
LIBRARIES = {"multiprocessing": multiprocessing, "multiprocess": multiprocess}


def _start_workers(library: str, method: str, kind: str) -> None:
    """Have ``WORKERS`` workers of ``kind`` log ``RECORDS`` records each, with no initializer."""
    context = LIBRARIES[library].get_context(method)
    tasks = [(worker, RECORDS, (100,)) for worker in range(WORKERS)]
    if kind == "Pool":
        with context.Pool(WORKERS) as pool:
            pool.map(pool_task, tasks, chunksize=1)
    elif kind == "ProcessPoolExecutor":
        with concurrent.futures.ProcessPoolExecutor(WORKERS, mp_context=context) as executor:
            list(executor.map(pool_task, tasks))
    else:
        processes = [context.Process(target=log_records, args=(worker, RECORDS)) for worker in range(WORKERS)]
        for process in processes:
            process.start()
        join_all(processes)


# concurrent.futures cannot take multiprocess's contexts (its queues refuse
# to be pickled by the stdlib's), so multiprocess has Pool and Process only.
CASES = [
    (library, method, kind)
    for library in sorted(LIBRARIES)
    for method in ("spawn", "forkserver")
    for kind in ("Pool", "ProcessPoolExecutor", "Process")
    if (library, kind) != ("multiprocess", "ProcessPoolExecutor")
]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("library, method, kind", CASES)
def test_workers_join_with_nothing_to_call(log_path, library, method, kind):
    """Eight spawn or forkserver workers, made by a Pool, a ProcessPoolExecutor
    or as Processes, with no initializer: every record of every worker is in
    the listener's file once, whole."""
    with mplog.setup(file_handler(log_path), level="INFO"):
        _start_workers(library, method, kind)
    tally(log_path).assert_complete({worker: RECORDS for worker in range(WORKERS)})


def _record_initializer(path: str) -> None:
    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")


@pytest.mark.timeout(120)
def test_the_initializer_still_chains_and_joins_once(log_path, tmp_path):
    """``mplog.initializer`` beside the automatic join: the user's own
    initializer runs in every worker, and no record is sent twice."""
    ran = str(tmp_path / "initializer-ran")
    tasks = [(worker, RECORDS, (100,)) for worker in range(4)]
    with mplog.setup(file_handler(log_path), level="INFO"):
        pool = multiprocessing.get_context("spawn").Pool(
            4, initializer=mplog.initializer, initargs=(_record_initializer, ran)
        )
        with pool:
            pids = set(pool.map(pool_task, tasks, chunksize=1))
    tally(log_path).assert_complete({worker: RECORDS for worker in range(4)})
    with open(ran) as file:
        assert pids <= {int(line) for line in file}


@pytest.mark.timeout(120)
def test_a_forkserver_started_before_setup_still_joins(log_path):
    """The forkserver already runs (a process started before ``setup()``):
    workers it forks afterwards join all the same."""
    context = multiprocessing.get_context("forkserver")
    early = context.Process(target=log_records, args=(99, 0))
    early.start()
    join_all([early])
    with mplog.setup(file_handler(log_path), level="INFO"):
        processes = [context.Process(target=log_records, args=(worker, RECORDS)) for worker in range(4)]
        for process in processes:
            process.start()
        join_all(processes)
    tally(log_path).assert_complete({worker: RECORDS for worker in range(4)})


def _spawn_grandchild(worker: int) -> None:
    child = multiprocessing.get_context("spawn").Process(target=log_records, args=(worker, RECORDS))
    child.start()
    child.join(60)
    assert child.exitcode == 0


@pytest.mark.timeout(120)
def test_children_of_spawned_workers_join_too(log_path):
    """A spawned worker that spawns a process of its own: the grandchild's
    records reach the same listener."""
    with mplog.setup(file_handler(log_path), level="INFO"):
        child = multiprocessing.get_context("spawn").Process(target=_spawn_grandchild, args=(5,))
        child.start()
        join_all([child])
    tally(log_path).assert_complete({5: RECORDS})


@pytest.mark.timeout(120)
def test_processes_created_after_stop_log_as_without_mplog(log_path, capfd):
    """Once the session stopped, new workers no longer look for its listener:
    they log with their own configuration, and nothing is said on stderr."""
    with mplog.setup(file_handler(log_path), level="INFO"):
        pass
    child = multiprocessing.get_context("spawn").Process(target=log_records, args=(0, 3))
    child.start()
    join_all([child])
    assert "mplog" not in multiprocessing.current_process()._config
    assert tally(log_path).count(0) == 0
    assert "mplog" not in capfd.readouterr().err
    assert logging.getLogger(LOGGER).handlers == []
