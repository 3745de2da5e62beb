"""One log file written by a spawn Pool, a forkserver ProcessPoolExecutor and a raw os.fork() child.

Run:  python examples/quickstart.py [LOGFILE]   (default: quickstart.log)
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import multiprocessing
import os
import sys
import warnings

import mplog

log = logging.getLogger("quickstart")


def work(n: int) -> int:
    log.info("task %d done in pid %d", n, os.getpid())
    return n * n


def main(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))

    with mplog.setup(handler, level="INFO"):  # the listener owns the file
        log.info("parent starting")
        # Workers join the listener with nothing to call, whatever the start method.
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(100))
        forkserver = multiprocessing.get_context("forkserver")  # Python 3.14's default on Linux
        with concurrent.futures.ProcessPoolExecutor(4, mp_context=forkserver) as pool:
            list(pool.map(work, range(100, 200)))
        # Python 3.12+ warns about any fork of a process with threads (here,
        # the listener's); mplog stops its threads around the fork, so it is safe.
        warnings.filterwarnings("ignore", r".*multi-threaded, use of fork\(\)", DeprecationWarning)
        pid = os.fork()  # a raw fork child needs no mplog call at all
        if pid == 0:
            for n in range(200, 300):
                work(n)
            os._exit(0)
        os.waitpid(pid, 0)
        log.info("parent done")

    lines = open(path).read().splitlines()
    tasks = collections.Counter(line.split("task ")[1].split()[0] for line in lines if "task " in line)
    processes = {line.split()[2] for line in lines}
    print(
        f"{path}: {len(lines)} lines from {len(processes)} processes; "
        f"{len(tasks)} distinct tasks, duplicates: {sum(c - 1 for c in tasks.values())}"
    )
    if len(tasks) != 300 or len(lines) != 302:
        sys.exit("records are missing!")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "quickstart.log")
