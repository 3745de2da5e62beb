import logging
import multiprocessing as mp

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n)  # workers log as usual


if __name__ == "__main__":
    with mplog.setup(logging.FileHandler("app.log"), level="INFO"):  # the listener owns the file
        with mp.get_context("spawn").Pool(4) as pool:  # any start method, nothing to pass
            pool.map(work, range(1000))
    # leaving the block writes every record sent so far and closes the handlers
