"""The ``mplog`` command (``python -m mplog``).

``mplog run [options] -- COMMAND [ARGS...]`` runs a Python program inside an
mplog session, in this process: a server started from its own command line
(``uvicorn --workers 4 --log-config logging.json``, ``celery worker``, a
script) then has every process it starts log through one listener, and the
file handlers its logging configuration makes, in any of them, are written
by that listener alone. ``COMMAND`` is a console script of this Python's
environment or on ``PATH`` (``uvicorn``), a ``.py`` file, or ``-m MODULE``.
With ``--connect`` (or ``MPLOG_ADDRESS`` set) the program is a client of an
``mplog serve`` server instead.

``mplog serve --config FILE`` runs a server for unrelated processes (see
``mplog._serve``); ``mplog status [--socket PATH]`` shows how one is doing.
Errors are one line on stderr; bad options exit 2.
"""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import sys
from typing import List, NoReturn, Optional, Sequence

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with errors in one line (``mplog serve: error: ...``), status 2."""

    def error(self, message: str) -> NoReturn:
        """Say what is wrong in one line on stderr, and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_SERVE_EXAMPLE = """example:
  mplog serve --config /etc/mplog/logging.json --allow-group adm
  MPLOG_ADDRESS=$XDG_RUNTIME_DIR/mplog/serve.sock mplog run -- job.py   # a client

The default socket is $XDG_RUNTIME_DIR/mplog/serve.sock; without
$XDG_RUNTIME_DIR, /run/mplog/serve.sock for root, else /tmp/mplog-serve-UID/serve.sock.
SIGTERM or SIGINT drain and stop the server; SIGHUP reloads FILE (or, if it cannot
be reloaded, reopens the files). mplog status [--socket PATH] shows how it is doing."""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mplog", description="Logging from many processes into one place.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    status = commands.add_parser(
        "status",
        help="show how an mplog serve server is doing",
        description="Show the processes connected to an mplog serve server, the records, bytes and drops "
        "of each of its handlers, the connections it refused or closed, its last notice, its memory and "
        "descriptors.",
    )
    status.add_argument("--socket", metavar="PATH", help="the server's socket (default: as mplog.connect() finds it)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    run = commands.add_parser(
        "run",
        help="run a Python program inside an mplog session",
        description="Run a Python program (a console script, a .py file, or -m MODULE) inside an mplog "
        "session, in this process: every process it starts logs through one listener.",
    )
    run.add_argument("--level", default=None, help="root level for every process (default: as configured)")
    run.add_argument("--listener", choices=("thread", "process"), default="thread", help="listener kind")
    run.add_argument("--buffered", action="store_true", help="gather records in each process (see mplog.setup)")
    run.add_argument(
        "--connect",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="be a client of the mplog serve server at ADDRESS (default: $MPLOG_ADDRESS, which also implies this)",
    )
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def _add_serve(commands: "argparse._SubParsersAction[_Parser]") -> None:
    serve = commands.add_parser(
        "serve",
        help="serve one listener for unrelated processes",
        description="Serve, in the foreground, one listener that writes through the handlers of FILE for "
        "processes that connect (mplog.connect(), MPLOG_ADDRESS): by default only this user's and root's.",
        epilog=_SERVE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config", required=True, metavar="FILE", help="dictConfig as .json, .toml or .yaml, or a fileConfig .ini"
    )
    serve.add_argument("--socket", metavar="PATH", help="the socket to serve (default: see below)")
    serve.add_argument("--check", action="store_true", help="validate FILE and the options, then exit")
    serve.add_argument("--allow-group", action="append", default=[], metavar="GROUP", help="admit this group too")
    serve.add_argument(
        "--allow-uid", action="append", default=[], metavar="USER", help="admit this user (name or uid) too; repeatable"
    )
    serve.add_argument("--drain-timeout", type=float, default=10.0, metavar="SECONDS", help="see mplog.setup")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``mplog`` command with ``argv`` (default: ``sys.argv[1:]``);
    return its exit status."""
    options = _parser().parse_args(argv)
    if options.command == "serve":
        return _serve(options)
    if options.command == "status":
        from . import _status

        return _status.main(options.socket, options.json)
    program = list(options.program)
    if program[:1] == ["--"]:
        program = program[1:]
    if not program:
        _parser().error("run: give the program to run, e.g. mplog run -- uvicorn app:app --workers 4")
    if options.connect is not None or os.environ.get("MPLOG_ADDRESS"):
        return _run_connected(program, options.connect or None)
    return _run(program, options.level, options.listener, options.buffered)


def _serve(options: argparse.Namespace) -> int:
    from . import _serve

    serve_options = _serve.ServeOptions(
        options.config, options.socket, options.allow_group, options.allow_uid, options.drain_timeout
    )
    return _serve.main(serve_options, options.check)


def _run(program: List[str], level: Optional[str], listener: str, buffered: bool) -> int:
    """Run ``program`` in a session; its exit status."""
    from ._setup import setup

    target = _resolve(program)
    with setup(level=level, listener=listener, buffered=buffered):
        return _call(target)


def _run_connected(program: List[str], address: Optional[str]) -> int:
    """Run ``program`` as a client of the server at ``address``; its exit status."""
    from ._client import connect
    from .exceptions import SetupError

    target = _resolve(program)
    try:
        connect(address)
    except SetupError as exc:
        print(f"mplog run: error: {exc}", file=sys.stderr)
        return 1
    return _call(target)


def _call(target: "_Target") -> int:
    """Run ``target``; the exit status it asks for (0 if it returns)."""
    try:
        target()
    except SystemExit as exit:
        return _status(exit.code)
    return 0


def _resolve(program: List[str]) -> "_Target":
    """What runs ``program``: a module (``-m``), a script file, or a console script.

    Raises:
        SystemExit: (from argparse's error) nothing by that name.
    """
    if program[0] == "-m":
        if len(program) < 2:
            _fail("-m needs a module name")
        return _Target(program[1], program[2:], module=True)
    path = program[0] if os.sep in program[0] or program[0].endswith(".py") else _which(program[0])
    if path is None or not os.path.isfile(path):
        _fail(f"no program {program[0]!r} (neither a file nor a command on PATH)")
    return _Target(path, program[1:], module=False)


def _which(command: str) -> Optional[str]:
    """``command`` among this environment's scripts (beside ``sys.executable``:
    a venv's ``bin``, whether or not it is on ``PATH``), else on ``PATH``."""
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return shutil.which(command, path=search)


class _Target:
    """A Python program and its arguments, run in this interpreter as
    ``python PROGRAM ARGS`` (or ``python -m MODULE ARGS``) would run it."""

    def __init__(self, name: str, arguments: List[str], module: bool) -> None:
        self.name, self.arguments, self.module = name, arguments, module

    def __call__(self) -> None:
        if self.module:
            sys.argv = [self.name, *self.arguments]
            runpy.run_module(self.name, run_name="__main__", alter_sys=True)
            return
        sys.argv = [self.name, *self.arguments]
        sys.path.insert(0, os.path.dirname(os.path.abspath(self.name)))
        runpy.run_path(self.name, run_name="__main__")


def _status(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _fail(message: str) -> NoReturn:
    _parser().error(f"run: {message}")
