"""Django under ASGI (examples/django/asgi.py), settings.LOGGING unchanged:
served by ``uvicorn --workers`` with ``mplog run --`` in front, and by
gunicorn with uvicorn's worker class and mplog's one-line hook. Every answered
request has exactly one app line and the file rotates as by a single writer, a
worker SIGKILLed and replaced mid-load included; without mplog, the loss is
printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import WITHOUT_MPLOG_RUN_ONCE
from tests.frameworks import Outcome, assert_as_one_writer, copy_example, gunicorn, run, uvicorn_family
from tests.test_django import APP_LINE, EXAMPLE, MISSING, NOT_FOUND, REQUESTS, missing

WORKERS = 3
#: gunicorn's worker class for ASGI apps (uvicorn's own ``uvicorn.workers`` is deprecated for it).
WORKER_CLASS = "uvicorn_worker.UvicornWorker"

pytest.importorskip("django")
pytest.importorskip("uvicorn")


def _under_uvicorn(tmp_path: Path, with_mplog: bool) -> Outcome:
    """``[mplog run --] uvicorn asgi:application --workers 3``: 5,000
    requests, a worker killed, then 404s."""
    command = ["uvicorn", "asgi:application", "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", "0"]
    server = uvicorn_family(command, with_mplog, WORKERS)
    return run(copy_example(EXAMPLE, tmp_path), server, APP_LINE, REQUESTS, during=[missing])


def _under_gunicorn(tmp_path: Path, hook: bool) -> Outcome:
    """``gunicorn -c gunicorn.conf.py -k uvicorn_worker.UvicornWorker asgi``
    (with or without the hook line): 5,000 requests, a worker killed, then 404s."""
    pytest.importorskip("uvicorn_worker")
    directory = copy_example(EXAMPLE, tmp_path)
    server = gunicorn(directory, "asgi", hook, ["-k", WORKER_CLASS], WORKERS)
    return run(directory, server, APP_LINE, REQUESTS, during=[missing])


def _assert_each_404_once(outcome: Outcome) -> None:
    """``django.request`` logged every missing page once, to the same file."""
    not_found = [NOT_FOUND.fullmatch(line) for line in outcome.lines if "Not Found" in line]
    assert sorted(int(match[1]) for match in not_found if match) == list(range(MISSING))


@pytest.mark.framework
@pytest.mark.timeout(150)
def test_django_asgi_under_uvicorn_with_mplog_run_logs_every_request_once(tmp_path):
    """``mplog run -- uvicorn asgi:application --workers 3``: one whole app
    line per answered request, every 404 once, rotation as by one writer."""
    outcome = _under_uvicorn(tmp_path, with_mplog=True)
    print(outcome.report("django asgi under uvicorn --workers, with mplog run"))
    assert_as_one_writer(outcome, REQUESTS)
    _assert_each_404_once(outcome)


@WITHOUT_MPLOG_RUN_ONCE
@pytest.mark.framework
@pytest.mark.timeout(150)
def test_django_asgi_under_uvicorn_alone_reports_its_loss(tmp_path):
    """The same without ``mplog run`` (the numbers are printed)."""
    outcome = _under_uvicorn(tmp_path, with_mplog=False)
    print(outcome.report("django asgi under uvicorn --workers, without mplog"))
    assert len(outcome.load.answered) >= REQUESTS - outcome.load.concurrency


@pytest.mark.framework
@pytest.mark.timeout(150)
def test_django_asgi_under_gunicorn_uvicorn_worker_with_the_hook_logs_every_request_once(tmp_path):
    """gunicorn with ``-k uvicorn_worker.UvicornWorker`` and the hook line in
    gunicorn.conf.py: one whole app line per answered request, every 404
    once, rotation as by one writer."""
    outcome = _under_gunicorn(tmp_path, hook=True)
    print(outcome.report("django asgi under gunicorn -k uvicorn_worker.UvicornWorker, with mplog"))
    assert_as_one_writer(outcome, REQUESTS)
    _assert_each_404_once(outcome)


@WITHOUT_MPLOG_RUN_ONCE
@pytest.mark.framework
@pytest.mark.timeout(150)
def test_django_asgi_under_gunicorn_uvicorn_worker_without_the_hook_reports_its_loss(tmp_path):
    """The same without the hook line (the numbers are printed)."""
    outcome = _under_gunicorn(tmp_path, hook=False)
    print(outcome.report("django asgi under gunicorn -k uvicorn_worker.UvicornWorker, without mplog"))
    assert len(outcome.load.answered) >= REQUESTS - outcome.load.concurrency
