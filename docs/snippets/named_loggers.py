import logging
import multiprocessing

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n)
    logging.getLogger("audit").info("task %d audited", n)


if __name__ == "__main__":
    audit = logging.getLogger("audit")
    # A logger with a handler of its own:
    audit.addHandler(logging.FileHandler("audit.log"))
    audit.propagate = False
    with mplog.setup(logging.FileHandler("app.log"), level="INFO", loggers=["audit"]):
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(1000))
