import logging
import multiprocessing

import mplog


def join(queue):
    """Pool initializer: send this worker's records to the queue."""
    root = logging.getLogger()
    root.handlers[:] = [mplog.QueueHandler(queue)]
    root.setLevel(logging.INFO)


def work(n):
    logging.getLogger("app").info("task %d", n)


if __name__ == "__main__":
    queue = mplog.Queue()  # pickles as its address: initargs, even a task argument
    listener = mplog.QueueListener(
        queue, logging.FileHandler("app.log"), respect_handler_level=True
    )
    listener.start()
    try:
        with multiprocessing.get_context("spawn").Pool(
            4, initializer=join, initargs=(queue,)
        ) as pool:
            pool.map(work, range(1000))
    finally:
        listener.stop()
