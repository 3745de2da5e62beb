import logging
import subprocess
import sys

import mplog

if __name__ == "__main__":
    with mplog.setup(logging.FileHandler("app.log"), level="INFO"):
        logging.getLogger("parent").info("starting the children")
        # Any Python 3.8+ program that calls mplog.initializer() first.
        children = [
            subprocess.Popen([sys.executable, "subprocess_child.py", str(n)])
            for n in range(3)
        ]
        for child in children:
            child.wait()
