import concurrent.futures
import logging
import os

import mplog

log = logging.getLogger("app")


def work(n):
    log.info("task %d in process %d", n, os.getpid())
    return n * n


if __name__ == "__main__":
    # The logging configuration you already have, unchanged:
    logging.basicConfig(
        filename="app.log",
        level=logging.INFO,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    with mplog.setup():  # no handlers given: it adopts the root logger's
        with concurrent.futures.ProcessPoolExecutor(4) as pool:
            total = sum(pool.map(work, range(1000)))
        log.info("sum of squares: %d", total)
