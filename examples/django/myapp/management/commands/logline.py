"""``python manage.py logline TEXT``: log one line to ``myapp`` from a single process."""

from __future__ import annotations

import logging
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    """Log ``TEXT`` at INFO to the ``myapp`` logger."""

    help = "Log one line to the myapp logger."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("text")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("myapp").info("%s", options["text"])
