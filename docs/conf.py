"""Sphinx configuration of mplog's documentation (Markdown pages through MyST, furo theme).

Build:  sphinx-build -n -W --keep-going -b html docs docs/_build/html
(``tox -e docs`` and ``.ci/run`` do that, then check every internal link).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # mplog from this checkout, installed or not

import mplog  # noqa: E402

project = "mplog"
author = "The mplog contributors"
copyright = "2026, The mplog contributors"
release = version = mplog.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "snippets", "_tools", "README.md"]
root_doc = "index"

# Every reference must resolve (-n); warnings are errors in CI (-W).
nitpicky = True
nitpick_ignore = [
    # Base classes of the framework glue: neither framework is installed for the
    # docs build, and neither publishes an inventory reachable from here.
    ("py:class", "gunicorn.glogging.Logger"),
    # ExportHandler's resource argument: the OpenTelemetry SDK's (mocked here).
    ("py:class", "opentelemetry.sdk.resources.Resource"),
]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Celery, gunicorn and OpenTelemetry are imported by the glue modules: autodoc
# reads their docstrings without any of them installed.
autodoc_mock_imports = ["celery", "gunicorn", "opentelemetry"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# No network here or in CI: the stdlib's inventory is a checked-in file that
# docs/_tools/stdlib_inventory.py generates (the objects these pages refer to,
# at docs.python.org's addresses).
intersphinx_mapping = {"python": ("https://docs.python.org/3", "python-objects.inv")}

html_theme = "furo"
html_title = f"mplog {release}"
html_static_path: list = []
html_show_sourcelink = False
