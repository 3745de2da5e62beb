# Python 3.12+: dictConfig's "handlers" and "listener" keys for a QueueHandler.
import atexit
import logging
import logging.config
import multiprocessing

import mplog  # noqa: F401  (dictConfig imports "mplog.QueueHandler" by name)


def work(n):
    logging.getLogger("app").info("task %d", n)


if __name__ == "__main__":
    logging.config.dictConfig(
        {
            "version": 1,
            "handlers": {
                "file": {"class": "logging.FileHandler", "filename": "app.log"},
                "to_listener": {"class": "mplog.QueueHandler", "handlers": ["file"]},
            },
            "root": {"handlers": ["to_listener"], "level": "INFO"},
        }
    )
    listener = logging.getHandlerByName("to_listener").listener
    listener.start()
    atexit.register(listener.stop)
    # Forked children inherit the handler.
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(work, range(1000))
