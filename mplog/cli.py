"""The ``mplog`` command (``python -m mplog``).

``mplog run [options] -- COMMAND [ARGS...]`` runs a Python program inside an
mplog session, in this process: a server started from its own command line
(``uvicorn --workers 4 --log-config logging.json``, ``celery worker``, a
script) then has every process it starts log through one listener, and the
file handlers its logging configuration makes, in any of them, are written
by that listener alone. ``COMMAND`` is a console script of this Python's
environment or on ``PATH`` (``uvicorn``), a ``.py`` file, or ``-m MODULE``.
"""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import sys
from typing import List, NoReturn, Optional, Sequence

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mplog", description="Logging from many processes into one place.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a Python program inside an mplog session",
        description="Run a Python program (a console script, a .py file, or -m MODULE) inside an mplog "
        "session, in this process: every process it starts logs through one listener.",
    )
    run.add_argument("--level", default=None, help="root level for every process (default: as configured)")
    run.add_argument("--listener", choices=("thread", "process"), default="thread", help="listener kind")
    run.add_argument("--buffered", action="store_true", help="gather records in each process (see mplog.setup)")
    run.add_argument("program", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``mplog`` command with ``argv`` (default: ``sys.argv[1:]``);
    return its exit status."""
    options = _parser().parse_args(argv)
    program = list(options.program)
    if program[:1] == ["--"]:
        program = program[1:]
    if not program:
        _parser().error("run: give the program to run, e.g. mplog run -- uvicorn app:app --workers 4")
    return _run(program, options.level, options.listener, options.buffered)


def _run(program: List[str], level: Optional[str], listener: str, buffered: bool) -> int:
    """Run ``program`` in a session; its exit status."""
    from ._setup import setup

    target = _resolve(program)
    with setup(level=level, listener=listener, buffered=buffered):
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
