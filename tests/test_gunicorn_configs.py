"""gunicorn's own logging configurations (``logconfig_dict``, ``--log-config``
with an ini file, ``--log-config-json``), each with a RotatingFileHandler
for the app: gunicorn applies them in the master, whose workers inherit the
handlers at fork. With mplog's one-line hook every answered request has
exactly one app line and the file rotates as by a single writer; without it,
the loss is printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import WITHOUT_MPLOG_RUN_ONCE
from tests.frameworks import BACKUP_COUNT, MAX_BYTES, STAMP, Outcome, assert_as_one_writer, copy_example, gunicorn, run

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gunicorn_configs"
APP_LINE = re.compile(rf"{STAMP} INFO app: rid=(\d+)")
REQUESTS = 5000

#: The example's command line for each configuration: its gunicorn config
#: file, and the options naming its logging configuration.
CONFIGS = {
    "logconfig_dict": ("gunicorn.conf.py", []),
    "log-config-ini": ("files.conf.py", ["--log-config", "logging.ini"]),
    "log-config-json": ("files.conf.py", ["--log-config-json", "logging.json"]),
}
# The rotation settings of logging.ini and logging.json (logconfig_dict reads
# them from the environment), made small for the test.
_ROTATION = {
    "logging.ini": (r"'app\.log', 'a', 10485760, 5\)", f"'app.log', 'a', {MAX_BYTES}, {BACKUP_COUNT})"),
    "logging.json": (
        r'"maxBytes": 10485760,(\s*)"backupCount": 5',
        rf'"maxBytes": {MAX_BYTES},\1"backupCount": {BACKUP_COUNT}',
    ),
}


def _rotate_often(directory: Path) -> None:
    """Give the copied ini and JSON files the test's ``maxBytes`` and ``backupCount``."""
    for name, (pattern, replacement) in _ROTATION.items():
        path = directory / name
        text, count = re.subn(pattern, replacement, path.read_text())
        assert count == 1, f"{path} no longer sets maxBytes 10485760 and backupCount 5"
        path.write_text(text)


def _serve(tmp_path: Path, config: str, hook: bool) -> Outcome:
    """Serve the example with ``config``'s command line (see :func:`tests.frameworks.run`)."""
    conf, args = CONFIGS[config]
    directory = copy_example(EXAMPLE, tmp_path)
    _rotate_often(directory)
    return run(directory, gunicorn(directory, "app:app", hook, args, config=conf), APP_LINE, REQUESTS)


@pytest.mark.framework
@pytest.mark.timeout(150)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_gunicorn_log_config_with_the_hook_logs_every_request_once(tmp_path, config):
    """5,000 requests, a worker SIGKILLed mid-load: one whole app line per
    answered request, rotation as by one writer (for logconfig_dict, of the
    app's and the access log's lines in one file)."""
    outcome = _serve(tmp_path, config, hook=True)
    print(outcome.report(f"gunicorn {config} with mplog"))
    assert_as_one_writer(outcome, REQUESTS)


@WITHOUT_MPLOG_RUN_ONCE
@pytest.mark.framework
@pytest.mark.timeout(150)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_gunicorn_log_config_without_the_hook_reports_its_loss(tmp_path, config):
    """The same configuration without the hook line: every worker writes and
    rotates the file it inherited on its own (the numbers are printed for the
    docs; what is lost varies from run to run)."""
    outcome = _serve(tmp_path, config, hook=False)
    print(outcome.report(f"gunicorn {config} without mplog"))
    assert len(outcome.load.answered) >= REQUESTS - outcome.load.concurrency
