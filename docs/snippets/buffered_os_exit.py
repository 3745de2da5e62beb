import logging
import multiprocessing
import os

import mplog


def child():
    log = logging.getLogger("child")
    for n in range(1000):
        log.info("record %d", n)
    mplog.flush()  # send what this process has gathered: os._exit skips every exit hook
    os._exit(0)


if __name__ == "__main__":
    with mplog.setup(logging.FileHandler("app.log"), level="INFO", buffered=True):
        process = multiprocessing.get_context("spawn").Process(target=child)
        process.start()
        process.join()
