import logging
import multiprocessing

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n, extra={"task": n})


if __name__ == "__main__":
    handler = mplog.FileHandler(
        "app.log",
        # or "S", "M", "H", "D", "W0"-"W6"; interval=N (for S/M/H, N divides a day)
        when="midnight",
        max_bytes="100 MiB",  # size rotation too (alone or with when=)
        backup_count=30,  # retention by count...
        max_age="14d",  # ...and by age
        compress="gzip",  # in a background thread: a rollover never stalls logging
    )
    handler.setFormatter(mplog.JsonFormatter())  # or any logging.Formatter
    with mplog.setup(handler, level="INFO"):
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(1000))
