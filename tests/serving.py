"""Starting an ``mplog serve`` server for a test and its clients: real
processes on a socket in a directory of the test's, stopped by pid."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from tests.servers import stop_server

#: A client's line: ``<tag> <seq>`` (tag: which client, seq: its record number).
FORMAT = "%(message)s"
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))


#: A program's own logging configuration, as the source of a module with
#: ``configure(log)``: the server's file, rotated (a client's handler is taken
#: over: the server's own, configured with 20 KB, is what writes it).
USER_CONFIG = """
import logging.config

def configure(log):
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(message)s"}},
        "handlers": {"app": {
            "class": "logging.handlers.RotatingFileHandler", "filename": log,
            "maxBytes": 20000, "backupCount": 100000, "formatter": "plain",
        }},
        "root": {"handlers": ["app"], "level": "INFO"},
    })
"""


class SlowFileHandler(logging.FileHandler):
    """A FileHandler that takes a second over each record (a slow disk)."""

    def emit(self, record: logging.LogRecord) -> None:
        time.sleep(1.0)
        super().emit(record)


def rotating_config(log: Path, max_bytes: int = 20_000) -> Dict[str, Any]:
    """A server's dictConfig: the root's records in ``log``, rotated at ``max_bytes``."""
    return {
        "version": 1,
        "formatters": {"plain": {"format": FORMAT}},
        "handlers": {
            "app": {
                "class": "logging.handlers.RotatingFileHandler",
                "filename": str(log),
                "maxBytes": max_bytes,
                "backupCount": 100_000,
                "formatter": "plain",
            }
        },
        "root": {"handlers": ["app"], "level": "INFO"},
    }


def socket_directory() -> str:
    """A fresh directory for a server's socket that other users may pass
    through (pytest's own are private to root); the server makes ``sub``."""
    parent = tempfile.mkdtemp(prefix="mplog-serve-test-")
    os.chmod(parent, 0o711)
    return os.path.join(parent, "sub", "serve.sock")


@contextlib.contextmanager
def running_server(
    config: Dict[str, Any], directory: Path, *options: str, address: Optional[str] = None
) -> Iterator["Server"]:
    """An ``mplog serve`` process serving ``config``; SIGTERMed (and, if it
    does not exit, SIGKILLed) at the end."""
    chosen = address or socket_directory()
    server = Server(config, directory, chosen, options)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if address is None:
            shutil.rmtree(os.path.dirname(os.path.dirname(chosen)), ignore_errors=True)


class Server:
    """One ``python -m mplog serve`` process, restartable on the same socket."""

    def __init__(self, config: Dict[str, Any], directory: Path, address: str, options: Sequence[str]) -> None:
        self.config_path = directory / "serve.json"
        self.config_path.write_text(json.dumps(config))
        self.address = address
        self.options = list(options)
        self.stderr_path = directory / "serve.stderr"
        self.process: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until it says it serves."""
        command = [sys.executable, "-m", "mplog", "serve", "--config", str(self.config_path)]
        command += ["--socket", self.address, *self.options]
        with open(self.stderr_path, "ab") as err:
            before = err.tell()
            self.process = subprocess.Popen(command, stderr=err, env=ENV)
        deadline = time.monotonic() + timeout
        while b"mplog serve: serving" not in self.stderr_path.read_bytes()[before:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mplog serve did not start: {self.stderr()[-2000:]}")
            time.sleep(0.01)

    def stop(self) -> int:
        """SIGTERM it (it drains); its exit status."""
        if self.process is None:
            return 0
        stop_server(self.process)
        code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL it: it drains nothing, and its journal stays as it was."""
        assert self.process is not None, "the server is not running"
        self.process.kill()
        self.process.wait()
        self.process = None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def said_sent_again(client_stderr: str) -> int:
    """How many records clients said they sent again after a server restart
    (not confirmed as written before it)."""
    return sum(int(n) for n in re.findall(r"sent (\d+) record\(s\) again", client_stderr))


def run_client(script: str, *args: str, timeout: float = 120.0, env: Optional[Dict[str, str]] = None) -> str:
    """Run ``script`` (Python source) in a new interpreter; its stderr. Fails on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or ENV,
    )
    assert result.returncode == 0, f"client failed ({result.returncode}): {result.stderr[-3000:]}"
    return result.stderr


def lines_of(log: Path) -> List[str]:
    """Every line of ``log`` and its backups, oldest first."""
    prefix = log.name + "."
    backups = sorted(
        (int(p.name[len(prefix) :]) for p in log.parent.glob(prefix + "*") if p.name[len(prefix) :].isdigit()),
        reverse=True,
    )
    found: List[str] = []
    for path in [log.parent / f"{log.name}.{n}" for n in backups] + [log]:
        if path.exists():
            found.extend(path.read_text(errors="replace").splitlines())
    return found
