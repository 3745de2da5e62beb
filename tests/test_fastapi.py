"""FastAPI (examples/fastapi) under uvicorn's command line with the user's
``--log-config`` (YAML, JSON or INI: a RotatingFileHandler for the app's
logger) and under ``fastapi run``: with ``mplog run --`` in front every
answered request has exactly one app line and the file rotates as by a single
writer, a worker SIGKILLed and replaced by uvicorn mid-load included; without
it, the loss is printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import WITHOUT_MPLOG_RUN_ONCE
from tests.frameworks import BACKUP_COUNT, STAMP, Server, assert_as_one_writer, copy_example, run, uvicorn_family

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi"
APP_LINE = re.compile(rf"{STAMP} INFO myapp: rid=(\d+)")
REQUESTS = 5000
WORKERS = 3
#: For the short runs that only check a configuration format: 500 app lines
#: of about 50 bytes rotate 20 times or more.
SHORT_REQUESTS, SHORT_MAX_BYTES = 500, 1000

pytest.importorskip("fastapi")


def _example(tmp_path: Path, max_bytes: int) -> Path:
    """The example, its logging configurations rotating at ``max_bytes`` and keeping every backup."""
    directory = copy_example(EXAMPLE, tmp_path)
    for config in directory.glob("logging.*"):
        text = re.sub(r"(maxBytes\W+)10485760\b", rf"\g<1>{max_bytes}", config.read_text())
        text = re.sub(r"(backupCount\W+)5\b", rf"\g<1>{BACKUP_COUNT}", text)
        assert f"{max_bytes}" in text and f"{BACKUP_COUNT}" in text, f"{config} no longer sets maxBytes and backupCount"
        config.write_text(text)
    return directory


def _uvicorn(config: str, with_mplog: bool) -> Server:
    """``[mplog run --] uvicorn app:app --workers N --log-config CONFIG`` on a free port."""
    command = ["uvicorn", "app:app", "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", "0"]
    return uvicorn_family([*command, "--log-config", config], with_mplog, WORKERS)


def _fastapi_run(with_mplog: bool) -> Server:
    """``[mplog run --] fastapi run main.py --workers N`` on a free port."""
    command = ["fastapi", "run", "main.py", "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", "0"]
    return uvicorn_family(command, with_mplog, WORKERS)


@pytest.mark.framework
@pytest.mark.timeout(150)
def test_uvicorn_yaml_log_config_under_mplog_run_logs_every_request_once(tmp_path):
    """``mplog run -- uvicorn app:app --workers 3 --log-config logging.yaml``:
    5,000 requests, a worker SIGKILLed mid-load and replaced: one whole app
    line per answered request, rotation as by one writer."""
    pytest.importorskip("yaml")
    outcome = run(_example(tmp_path, 8000), _uvicorn("logging.yaml", with_mplog=True), APP_LINE, REQUESTS)
    print(outcome.report("uvicorn --log-config logging.yaml under mplog run"))
    assert_as_one_writer(outcome, REQUESTS)


@WITHOUT_MPLOG_RUN_ONCE
@pytest.mark.framework
@pytest.mark.timeout(150)
def test_uvicorn_yaml_log_config_alone_reports_its_loss(tmp_path):
    """The same server without ``mplog run``: each worker's
    RotatingFileHandler rotates app.log on its own (the numbers are printed;
    what is lost varies from run to run)."""
    pytest.importorskip("yaml")
    outcome = run(_example(tmp_path, 8000), _uvicorn("logging.yaml", with_mplog=False), APP_LINE, REQUESTS)
    print(outcome.report("uvicorn --log-config logging.yaml without mplog"))
    assert len(outcome.load.answered) >= REQUESTS - outcome.load.concurrency


@pytest.mark.framework
@pytest.mark.timeout(90)
@pytest.mark.parametrize("config", ["logging.json", "logging.ini"])
def test_uvicorn_json_and_ini_log_configs_are_taken_over(tmp_path, config):
    """uvicorn's other two loaders (``dictConfig`` of JSON, ``fileConfig``):
    a short run (500 requests, rotation at 1,000 bytes) under ``mplog run``
    writes every line once, as one writer."""
    outcome = run(
        _example(tmp_path, SHORT_MAX_BYTES),
        _uvicorn(config, with_mplog=True),
        APP_LINE,
        SHORT_REQUESTS,
        kill=False,
        max_bytes=SHORT_MAX_BYTES,
    )
    print(outcome.report(f"uvicorn --log-config {config} under mplog run"))
    assert_as_one_writer(outcome, SHORT_REQUESTS)


@pytest.mark.framework
@pytest.mark.timeout(150)
def test_fastapi_run_under_mplog_run_logs_every_request_once(tmp_path):
    """``mplog run -- fastapi run main.py --workers 3`` (main.py applies
    logging.json as it is imported): 5,000 requests, a worker SIGKILLed
    mid-load and replaced: one whole app line per answered request, rotation
    as by one writer."""
    outcome = run(_example(tmp_path, 8000), _fastapi_run(with_mplog=True), APP_LINE, REQUESTS)
    print(outcome.report("fastapi run under mplog run"))
    assert_as_one_writer(outcome, REQUESTS)


@WITHOUT_MPLOG_RUN_ONCE
@pytest.mark.framework
@pytest.mark.timeout(150)
def test_fastapi_run_alone_reports_its_loss(tmp_path):
    """The same ``fastapi run`` without mplog (the numbers are printed)."""
    outcome = run(_example(tmp_path, 8000), _fastapi_run(with_mplog=False), APP_LINE, REQUESTS)
    print(outcome.report("fastapi run without mplog"))
    assert len(outcome.load.answered) >= REQUESTS - outcome.load.concurrency
