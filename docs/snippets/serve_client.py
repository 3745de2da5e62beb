"""A program started on its own (cron, a second service) logging through a
running ``mplog serve``: its address from ``$MPLOG_ADDRESS``, else the default."""

import logging

import mplog

mplog.connect()  # or mplog.connect("/run/mplog/serve.sock")
for n in range(1000):
    logging.getLogger("app").info("task %d", n)
