import logging
import logging.config
import multiprocessing

import mplog

LOGGING = {
    "version": 1,
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
        }
    },
    "handlers": {
        "file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": "app.log",
            "maxBytes": 20000,
            "backupCount": 100,
            "formatter": "plain",
        },
    },
    "root": {"handlers": ["file"], "level": "INFO"},
}


def configure():
    """What a framework does in each worker: its own dictConfig."""
    logging.config.dictConfig(LOGGING)


def work(n):
    logging.getLogger("app").info("task %d", n)


if __name__ == "__main__":
    with mplog.setup():  # in the parent, before the workers start
        with multiprocessing.get_context("spawn").Pool(
            4, initializer=configure
        ) as pool:
            pool.map(work, range(1000))
    # app.log and its backups hold every task once, rotated as by one writer
