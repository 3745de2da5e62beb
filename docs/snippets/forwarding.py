import logging
import multiprocessing

import mplog


def work(n):
    logging.getLogger("app").info("task %d", n)


if __name__ == "__main__":
    forward = mplog.SyslogHandler(
        ("127.0.0.1", 2514),  # the receiver's RELP input
        "relp",  # or "tcp": RFC 6587 octet counting
        spool="spool",  # e.g. /var/spool/myapp: records wait here while rsyslog is down
    )
    with mplog.setup(forward, level="INFO"):
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            pool.map(work, range(1000))
