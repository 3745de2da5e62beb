import logging
import sys

import mplog

mplog.initializer()  # joins the parent's listener (found through the environment)

log = logging.getLogger("child")
for n in range(1000):
    log.info("child %s record %d", sys.argv[1], n)
