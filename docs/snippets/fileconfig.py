import logging
import logging.config
import multiprocessing

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n)


if __name__ == "__main__":
    logging.config.fileConfig("logging.ini")
    with mplog.setup():  # adopts the handlers fileConfig put on the root logger
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(1000))
