import logging
import os
import warnings

import mplog

if __name__ == "__main__":
    with mplog.setup(logging.FileHandler("app.log"), level="INFO"):
        # Python 3.12+ warns about any fork of a process with threads (here the
        # listener's); mplog quiesces its threads around the fork, so this is safe.
        warnings.filterwarnings(
            "ignore", r".*multi-threaded, use of fork\(\)", DeprecationWarning
        )
        pid = os.fork()
        if pid == 0:  # a raw fork child needs no mplog call
            logging.getLogger("child").info("hello from the child")
            os._exit(0)  # durable mode (the default): the record is already sent
        os.waitpid(pid, 0)
        logging.getLogger("parent").info("child done")
