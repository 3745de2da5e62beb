"""uvicorn with several workers, all logging into one file through mplog.

Run (from this directory):  python serve.py [PORT] [LOGFILE]   (Ctrl-C or SIGTERM to stop)

The parent starts the listener, then runs uvicorn's supervisor; ``log_config=None``
leaves uvicorn's loggers propagating to the root logger, so its error and access
records go through mplog too.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

import mplog


def main(port: int, path: str) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    with mplog.setup(handler, level="INFO"):
        uvicorn.run("app:app", host="127.0.0.1", port=port, workers=3, log_config=None)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8000, sys.argv[2] if len(sys.argv) > 2 else "uvicorn.log")
