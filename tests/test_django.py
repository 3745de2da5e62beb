"""Django under gunicorn, settings.LOGGING unchanged (one RotatingFileHandler
shared by ``myapp`` and ``django.request``): with mplog's one-line hook every
answered request has exactly one app line and the file rotates as by a single
writer; without it, the loss is printed."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import WITHOUT_MPLOG_RUN_ONCE
from tests.frameworks import STAMP, assert_as_one_writer, serve

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "django"
APP_LINE = re.compile(rf"{STAMP} INFO myapp: rid=(\d+)")
NOT_FOUND = re.compile(rf"{STAMP} WARNING django\.request: Not Found: /missing-(\d+)")
REQUESTS = 5000
MISSING = 20

pytest.importorskip("django")


def missing(port: int) -> None:
    """``MISSING`` requests for pages that do not exist: ``django.request``
    logs each to the same handler as ``myapp``."""
    for n in range(MISSING):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            connection.request("GET", f"/missing-{n}")
            assert connection.getresponse().status == 404
        finally:
            connection.close()


@pytest.mark.framework
@pytest.mark.timeout(150)
@pytest.mark.parametrize("args", [[], ["--preload"]], ids=["app-in-workers", "preload"])
def test_django_with_the_hook_logs_every_request_once(tmp_path, args):
    """5,000 requests, a worker SIGKILLed mid-load: one whole app line per
    answered request, every 404 logged once, rotation as by one writer."""
    outcome = serve(EXAMPLE, tmp_path, "wsgi", APP_LINE, hook=True, args=args, requests=REQUESTS, during=[missing])
    print(outcome.report(f"django {' '.join(args)} with mplog"))
    assert_as_one_writer(outcome, REQUESTS)
    not_found = [NOT_FOUND.fullmatch(line) for line in outcome.lines if "Not Found" in line]
    assert sorted(int(match[1]) for match in not_found if match) == list(range(MISSING))


@WITHOUT_MPLOG_RUN_ONCE
@pytest.mark.framework
@pytest.mark.timeout(150)
def test_django_without_the_hook_reports_its_loss(tmp_path):
    """The same app and settings without the hook line: each worker's
    RotatingFileHandler rotates the file on its own (the numbers are printed
    for the README; what is lost varies from run to run)."""
    outcome = serve(EXAMPLE, tmp_path, "wsgi", APP_LINE, hook=False, requests=REQUESTS, during=[missing])
    print(outcome.report("django without mplog"))
    assert len(outcome.load.answered) >= REQUESTS - outcome.load.concurrency


def test_manage_py_in_one_process_is_plain_django(tmp_path):
    """``manage.py check`` and a command that logs, beside the hooked
    gunicorn.conf.py: plain Django output, the line in the file, nothing on
    stderr, and mplog never imported."""
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.log*"))
    # manage.py run as a script, then a look at what it imported.
    probe = "import runpy, sys; runpy.run_path('manage.py', run_name='__main__'); print('mplog' in sys.modules)"
    runs = [
        subprocess.run([sys.executable, "-c", probe, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        for argv in (["check"], ["logline", "from manage.py"])
    ]
    assert [(run.returncode, run.stdout, run.stderr) for run in runs] == [
        (0, "System check identified no issues (0 silenced).\nFalse\n", ""),
        (0, "False\n", ""),
    ]
    lines = (tmp_path / "django.log").read_text().splitlines()
    assert len(lines) == 1 and re.fullmatch(rf"{STAMP} INFO myapp: from manage\.py", lines[0]), lines
