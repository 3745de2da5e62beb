import logging
import multiprocessing

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n)
    logging.getLogger("audit").info("task %d audited", n)


if __name__ == "__main__":
    audit = logging.getLogger("audit")
    audit.addHandler(logging.FileHandler("audit.log"))  # a logger with a handler of its own
    audit.propagate = False
    with mplog.setup(logging.FileHandler("app.log"), level="INFO", loggers=["audit"]):
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(1000))
