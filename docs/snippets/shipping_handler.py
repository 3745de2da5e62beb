import logging
import multiprocessing

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n)


if __name__ == "__main__":
    handler = mplog.FileHandler(
        "app.log",  # e.g. /var/log/app/app.log
        when="H",
        max_bytes="100 MiB",
        compress="gzip",
        compress_delay="5m",  # rotated files stay readable by name for 5 minutes
        late_records="live",  # a record late for a rotated period goes to the live file
    )
    handler.setFormatter(mplog.JsonFormatter())
    with mplog.setup(handler, level="INFO"):
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(1000))
