"""Guarantee 1: every record from W=8 processes arrives once and whole, 100 B to 1 MiB,
whatever started the processes."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os

import pytest

import mplog
from tests import workload
from tests.conftest import START_METHODS, file_handler, fork_running, join_all, wait_pid

WORKERS = 8
# Mostly small records with large ones mixed in: two 1 MiB records per worker,
# and frames on both sides of the 4096-byte pipe/page boundary.
SIZES = [100] * 40 + [1000] * 30 + [4095, 4096, 4097] * 3 + [65536] * 14 + [300_000] * 3 + [1 << 20]
COUNT = 200


@pytest.mark.parametrize("listener", ["thread", "process"])
@pytest.mark.parametrize("method", START_METHODS)
def test_processes_of_every_start_method(log_path, method, listener):
    """Eight Process children log mixed sizes; the file holds each record exactly once."""
    context = multiprocessing.get_context(method)
    with mplog.setup(file_handler(log_path), level="INFO", listener=listener):
        processes = [
            context.Process(target=workload.init_and_log, args=(mplog.initializer, w, COUNT, SIZES))
            for w in range(WORKERS)
        ]
        for process in processes:
            process.start()
        join_all(processes)
    workload.tally(log_path).assert_complete({w: COUNT for w in range(WORKERS)})


def test_raw_os_fork_children_need_no_call(log_path):
    """Children of a bare os.fork() (as gunicorn and tornado make) log with no mplog call."""
    with mplog.setup(file_handler(log_path), level="INFO"):
        logging.getLogger("parent").info("parent logged before forking")
        pids = [fork_running(workload.log_records, worker, COUNT, SIZES) for worker in range(WORKERS)]
        for pid in pids:
            assert wait_pid(pid) == 0
    tally = workload.tally(log_path)
    tally.assert_complete({w: COUNT for w in range(WORKERS)})
    assert tally.other == ["parent logged before forking"]


@pytest.mark.parametrize("method", START_METHODS)
def test_pool_with_initializer(log_path, method):
    """Pool(initializer=mplog.initializer) with no initargs works under every start method."""
    with mplog.setup(file_handler(log_path), level="INFO"):
        with multiprocessing.get_context(method).Pool(4, initializer=mplog.initializer) as pool:
            pool.map(workload.pool_task, [(w, COUNT, SIZES[:80]) for w in range(WORKERS)])
    workload.tally(log_path).assert_complete({w: COUNT for w in range(WORKERS)})


@pytest.mark.parametrize("method", START_METHODS)
def test_process_pool_executor(log_path, method):
    """ProcessPoolExecutor(initializer=mplog.initializer) under every start method."""
    context = multiprocessing.get_context(method)
    with mplog.setup(file_handler(log_path), level="INFO"):
        with concurrent.futures.ProcessPoolExecutor(4, mp_context=context, initializer=mplog.initializer) as pool:
            list(pool.map(workload.pool_task, [(w, COUNT, SIZES[:80]) for w in range(WORKERS)]))
    workload.tally(log_path).assert_complete({w: COUNT for w in range(WORKERS)})


def _user_initializer(path, token):
    with open(path, "a") as stream:
        stream.write(f"{token} {os.getpid()}\n")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_user_initializer_is_chained(tmp_path, log_path, method):
    """initargs=(my_init, *args) runs the user's initializer after mplog's."""
    marker = str(tmp_path / "marker")
    with mplog.setup(file_handler(log_path), level="INFO"):
        context = multiprocessing.get_context(method)
        with context.Pool(2, initializer=mplog.initializer, initargs=(_user_initializer, marker, "hello")) as pool:
            task_pids = set(pool.map(workload.pool_task, [(w, 10, (100,)) for w in range(2)]))
    # `with Pool` may terminate a worker before it starts: check the ones that ran tasks.
    initialized = {int(pid) for token, pid in (line.split() for line in open(marker)) if token == "hello"}
    assert task_pids and task_pids <= initialized
    workload.tally(log_path).assert_complete({0: 10, 1: 10})


def _grandparent_task(args):
    method, worker = args
    context = multiprocessing.get_context(method)
    # A worker that starts its own pool: the initializer carries the config on.
    with context.Pool(2, initializer=mplog.initializer) as pool:
        pool.map(workload.pool_task, [(worker * 10 + k, 20, (100, 5000)) for k in range(2)])
    workload.log_records(worker * 10 + 9, 20)
    return True


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_grandchildren(log_path, method):
    """Workers that start their own pools: the grandchildren log through the same listener."""
    with mplog.setup(file_handler(log_path), level="INFO"):
        context = multiprocessing.get_context(method)
        processes = [
            context.Process(target=_grandchild_entry, args=(mplog.initializer, method, w)) for w in range(1, 3)
        ]
        for process in processes:
            process.start()
        join_all(processes)
    workload.tally(log_path).assert_complete({worker * 10 + k: 20 for worker in range(1, 3) for k in (0, 1, 9)})


def _grandchild_entry(initializer, method, worker):
    initializer()
    _grandparent_task((method, worker))


def test_levels_follow_the_parent_into_spawned_workers(log_path):
    """The parent's root and per-logger levels apply in spawned workers, so
    filtered records never cross the process boundary."""
    logging.getLogger("noisy").setLevel(logging.ERROR)
    logging.getLogger("chatty").setLevel(logging.DEBUG)
    with mplog.setup(file_handler(log_path, "%(name)s %(levelname)s %(message)s"), level="INFO"):
        process = multiprocessing.get_context("spawn").Process(target=_log_levels, args=(mplog.initializer,))
        process.start()
        join_all([process])
    lines = open(log_path).read().splitlines()
    assert lines == ["root INFO info", "noisy ERROR error", "chatty DEBUG debug"]


def _log_levels(initializer):
    initializer()
    logging.debug("debug")
    logging.info("info")
    logging.getLogger("noisy").warning("warning")
    logging.getLogger("noisy").error("error")
    logging.getLogger("chatty").debug("debug")


def test_multiprocess_package(log_path):
    """The dill-based ``multiprocess`` package works like multiprocessing, fork and spawn."""
    import multiprocess  # a test dependency: installed with the "test" extra

    with mplog.setup(file_handler(log_path), level="INFO"):
        for offset, method in ((0, "fork"), (4, "spawn")):
            with multiprocess.get_context(method).Pool(2, initializer=mplog.initializer) as pool:
                pool.map(workload.pool_task, [(offset + w, 50, (100, 70000)) for w in range(4)])
    workload.tally(log_path).assert_complete({w: 50 for w in range(8)})
