import logging
import multiprocessing as mp

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n)  # workers log as usual


if __name__ == "__main__":
    # The listener owns the file; workers of any start method join it by themselves.
    with mplog.setup(logging.FileHandler("app.log"), level="INFO"):
        with mp.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(1000))
    # Leaving the block writes every record sent so far and closes the handler.
