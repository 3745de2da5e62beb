"""``mplog serve``: its configuration files (JSON, TOML, YAML, ini), ``--check``,
one-line errors with status 2, the default socket, draining at SIGTERM, and
taking over a socket a killed server left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mplog import _endpoint
from tests.conftest import wait_until
from tests.serving import ENV, lines_of, rotating_config, run_client, running_server, socket_directory

LOG_CONFIGS = {
    "json": lambda log: json.dumps(rotating_config(log)),
    "toml": lambda log: textwrap.dedent(
        f"""\
        version = 1
        [formatters.plain]
        format = "%(message)s"
        [handlers.app]
        class = "logging.FileHandler"
        filename = "{log}"
        formatter = "plain"
        [root]
        handlers = ["app"]
        level = "INFO"
        """
    ),
    "yaml": lambda log: textwrap.dedent(
        f"""\
        version: 1
        formatters: {{plain: {{format: "%(message)s"}}}}
        handlers:
          app: {{class: logging.FileHandler, filename: "{log}", formatter: plain}}
        root: {{handlers: [app], level: INFO}}
        """
    ),
    "ini": lambda log: textwrap.dedent(
        f"""\
        [loggers]
        keys = root
        [handlers]
        keys = app
        [formatters]
        keys = plain
        [logger_root]
        level = INFO
        handlers = app
        [handler_app]
        class = FileHandler
        args = ({str(log)!r},)
        formatter = plain
        [formatter_plain]
        format = %%(message)s
        """
    ),
}


def mplog(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mplog", *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


@pytest.mark.parametrize("kind", sorted(LOG_CONFIGS))
def test_check_accepts_each_format(tmp_path, kind):
    """Each format's config passes ``--check`` (status 0) and names its handlers."""
    config = tmp_path / f"logging.{kind}"
    config.write_text(LOG_CONFIGS[kind](tmp_path / "app.log"))
    result = mplog("serve", "--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{config}: OK, 1 handler(s) on logger(s) root\n"


BAD_CONFIGS = {
    "missing.json": (None, "No such file or directory"),
    "logging.xml": ("<x/>", "cannot tell the format from the name"),
    "broken.json": ("{", "JSONDecodeError"),
    "noversion.json": ('{"handlers": {}}', "dictionary doesn't specify a version"),
    "badclass.json": (
        '{"version": 1, "handlers": {"h": {"class": "no.such.Handler"}}, "root": {"handlers": ["h"]}}',
        "Unable to configure handler 'h'",
    ),
    "nothing.json": ('{"version": 1}', "configures no handler"),
    "list.yaml": ("- 1\n- 2\n", "expected a dictConfig mapping, got list"),
    "missing.ini": (None, "no such file"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_a_bad_config_is_one_line_and_status_2(tmp_path, name):
    """A config that cannot be used: status 2 and one line on stderr naming the file and why."""
    text, why = BAD_CONFIGS[name]
    config = tmp_path / name
    if text is not None:
        config.write_text(text)
    for extra in (["--check"], []):  # serving checks the same way, before it binds anything
        result = mplog("serve", "--config", str(config), "--socket", str(tmp_path / "s.sock"), *extra)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mplog serve: error: {config}: "), result.stderr
        assert why in lines[0]
    assert not (tmp_path / "s.sock").exists()


@pytest.mark.parametrize(
    "options, why",
    [
        ([], "the following arguments are required: --config"),
        (
            ["--config", "x.json", "--allow-group", "no-such-group-here"],
            "--allow-group no-such-group-here: no such group",
        ),
        (["--config", "x.json", "--allow-uid", "no-such-user-here"], "--allow-uid no-such-user-here: no such user"),
        (["--config", "x.json", "--drain-timeout", "soon"], "argument --drain-timeout: invalid float value"),
    ],
)
def test_bad_options_are_one_line_and_status_2(tmp_path, options, why):
    """A bad option: status 2, one line on stderr saying which."""
    (tmp_path / "x.json").write_text(json.dumps(rotating_config(tmp_path / "app.log")))
    result = subprocess.run(
        [sys.executable, "-m", "mplog", "serve", *options, "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and why in result.stderr, result.stderr


@pytest.mark.parametrize("module, name", [("yaml", "PyYAML"), ("tomllib", "tomli")])
def test_a_missing_parser_is_named(tmp_path, module, name):
    """Without a YAML parser (or, before 3.11, without tomli), the error says what to install."""
    if module == "tomllib" and sys.version_info >= (3, 11):
        pytest.skip("tomllib is in the standard library from Python 3.11")
    suffix = "yaml" if module == "yaml" else "toml"
    config = tmp_path / f"logging.{suffix}"
    config.write_text(LOG_CONFIGS[suffix](tmp_path / "app.log"))
    hidden = "yaml" if module == "yaml" else "tomli"
    script = f"import sys; sys.modules[{hidden!r}] = None; from mplog.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", script, "serve", "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and name in result.stderr, result.stderr


def test_default_address(monkeypatch):
    """$XDG_RUNTIME_DIR/mplog/serve.sock, else /run/mplog for root, else /tmp/mplog-serve-UID;
    MPLOG_ADDRESS and an explicit address come first."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    monkeypatch.delenv("MPLOG_ADDRESS", raising=False)
    assert _endpoint.resolve_address() == "/run/user/1234/mplog/serve.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    expected = "/run/mplog/serve.sock" if os.geteuid() == 0 else f"/tmp/mplog-serve-{os.geteuid()}/serve.sock"
    assert _endpoint.resolve_address() == expected
    monkeypatch.setenv("MPLOG_ADDRESS", "/somewhere/s.sock")
    assert _endpoint.resolve_address() == "/somewhere/s.sock"
    assert _endpoint.resolve_address("rel.sock") == os.path.abspath("rel.sock")


CLIENT = """
    import logging, sys
    import mplog
    mplog.connect()
    log = logging.getLogger("client")
    for seq in range(int(sys.argv[2])):
        log.info("%s %d", sys.argv[1], seq)
"""


def test_sigterm_drains_and_a_killed_server_s_socket_is_taken_over(tmp_path):
    """Records sent before SIGTERM are all written, and the server exits 0;
    a second server on a live socket is refused (status 1); after a SIGKILL,
    a new server takes over the socket left behind."""
    log = tmp_path / "app.log"
    address = socket_directory()
    env = dict(ENV, MPLOG_ADDRESS=address)
    with running_server(rotating_config(log), tmp_path, address=address) as server:
        run_client(CLIENT, "first", "3000", env=env)
        second = mplog("serve", "--config", str(server.config_path), "--socket", address)
        assert second.returncode == 1 and "another server is serving" in second.stderr, second.stderr
        assert server.stop() == 0
        assert not os.path.exists(address)
        server.start()
        run_client(CLIENT, "second", "3000", env=env)
        # Written before the kill: what is still in a pipe when the server is
        # SIGKILLed is lost with it (see docs/howto/serve.md).
        wait_until(lambda: sum(line.startswith("second ") for line in lines_of(log)) == 3000, "second's records")
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(30)
        server.process = None
        assert os.path.exists(address)  # left behind
        server.start()
        run_client(CLIENT, "third", "3000", env=env)
    counts = {}
    for line in lines_of(log):
        tag, seq = line.split()
        counts.setdefault(tag, []).append(int(seq))
    assert sorted(counts) == ["first", "second", "third"]
    for tag, seqs in counts.items():
        assert seqs == list(range(3000)), (tag, len(seqs))
