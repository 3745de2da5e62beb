"""``python -m mplog``: the ``mplog`` command (see :mod:`mplog.cli`)."""

import sys

from .cli import main

sys.exit(main())
