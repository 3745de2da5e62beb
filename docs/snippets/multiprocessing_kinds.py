import concurrent.futures
import logging
import multiprocessing
import os

import mplog

log = logging.getLogger("app")


def work(n):
    log.info("task %d", n)


def prepare(name):
    """The pool's own initializer: runs in each worker after mplog joined it."""
    log.info("worker %d ready for %s", os.getpid(), name)


if __name__ == "__main__":
    handler = logging.FileHandler("app.log")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    with mplog.setup(handler, level="INFO"):
        for method in ("fork", "spawn", "forkserver"):
            context = multiprocessing.get_context(method)

            # A Process: nothing to pass.
            process = context.Process(target=work, args=(0,))
            process.start()
            process.join()

            # A Pool with an initializer of its own: chain it through mplog.initializer.
            with context.Pool(
                2, initializer=mplog.initializer, initargs=(prepare, "pool")
            ) as pool:
                pool.map(work, range(1, 100))
                # Leaving the block terminates the pool: let every worker finish first.
                pool.close()
                pool.join()

            # A ProcessPoolExecutor.
            with concurrent.futures.ProcessPoolExecutor(
                2, mp_context=context
            ) as executor:
                list(executor.map(work, range(100, 200)))
