"""Flask under gunicorn, ``dictConfig`` (a RotatingFileHandler on the root)
inside ``create_app()``: with mplog's one-line hook every answered request has
exactly one app line and the file rotates as by a single writer; without it,
the loss is printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import WITHOUT_MPLOG_RUN_ONCE
from tests.frameworks import STAMP, assert_as_one_writer, serve

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flask"
APP_LINE = re.compile(rf"{STAMP} INFO app: rid=(\d+)")
REQUESTS = 5000

pytest.importorskip("flask")


@pytest.mark.framework
@pytest.mark.timeout(150)
@pytest.mark.parametrize("args", [[], ["--preload"]], ids=["app-in-workers", "preload"])
def test_flask_with_the_hook_logs_every_request_once(tmp_path, args):
    """5,000 requests, a worker SIGKILLed mid-load: one whole app line per
    answered request, rotation as by one writer."""
    outcome = serve(EXAMPLE, tmp_path, "app:create_app()", APP_LINE, hook=True, args=args, requests=REQUESTS)
    print(outcome.report(f"flask {' '.join(args)} with mplog"))
    assert_as_one_writer(outcome, REQUESTS)


@WITHOUT_MPLOG_RUN_ONCE
@pytest.mark.framework
@pytest.mark.timeout(150)
def test_flask_without_the_hook_reports_its_loss(tmp_path):
    """The same app without the hook line: each worker's RotatingFileHandler
    rotates the file on its own (the numbers are printed for the README; what
    is lost varies from run to run)."""
    outcome = serve(EXAMPLE, tmp_path, "app:create_app()", APP_LINE, hook=False, requests=REQUESTS)
    print(outcome.report("flask without mplog"))
    assert len(outcome.load.answered) >= REQUESTS - outcome.load.concurrency
