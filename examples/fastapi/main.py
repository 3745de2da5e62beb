"""The app of app.py for ``fastapi run``, which takes no logging configuration
of its own: the module configures logging as it is imported, in every worker
(and in the parent, which imports it to find ``app``).

Run (from this directory):  mplog run -- fastapi run main.py --workers 4
"""

from __future__ import annotations

import json
import logging.config
from pathlib import Path

from app import app

logging.config.dictConfig(json.loads((Path(__file__).parent / "logging.json").read_text()))

__all__ = ["app"]
