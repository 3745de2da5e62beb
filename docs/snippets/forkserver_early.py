import concurrent.futures
import logging
import multiprocessing

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n)


if __name__ == "__main__":
    context = multiprocessing.get_context("forkserver")
    # The fork server starts with the first forkserver process, here before setup():
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
        executor.submit(int).result()
    with mplog.setup(logging.FileHandler("app.log"), level="INFO"):
        # Workers it starts now, while the session is active, still join it.
        with concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as executor:
            list(executor.map(work, range(1000)))
