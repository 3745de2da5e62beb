"""Write docs/python-objects.inv: the part of the Python docs' inventory that
mplog's pages refer to, for intersphinx without a network.

Sphinx's intersphinx downloads ``objects.inv`` from docs.python.org at build
time; neither CI nor this project's machines reach it. This lists the stdlib
objects the pages and docstrings name, at the addresses docs.python.org gives
them, and writes them in Sphinx's inventory format (version 2). Add a line here
when ``sphinx-build -n`` reports a stdlib reference it cannot resolve, then run:

    python docs/_tools/stdlib_inventory.py

``--check FILE`` compares each entry with a real inventory (e.g. Debian's
python3-doc: /usr/share/doc/python3/html/objects.inv) and lists any that differ.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

OUTPUT = Path(__file__).resolve().parents[1] / "python-objects.inv"

#: (object, Sphinx type, page under library/): the anchor is the object's name.
OBJECTS: List[Tuple[str, str, str]] = [
    # logging
    ("logging", "py:module", "logging"),
    ("logging.Handler", "py:class", "logging"),
    ("logging.Handler.emit", "py:method", "logging"),
    ("logging.Handler.handle", "py:method", "logging"),
    ("logging.Handler.flush", "py:method", "logging"),
    ("logging.Handler.close", "py:method", "logging"),
    ("logging.Formatter", "py:class", "logging"),
    ("logging.Formatter.format", "py:method", "logging"),
    ("logging.Formatter.formatException", "py:method", "logging"),
    ("logging.Formatter.formatStack", "py:method", "logging"),
    ("logging.Formatter.formatTime", "py:method", "logging"),
    ("logging.LogRecord", "py:class", "logging"),
    ("logging.Logger", "py:class", "logging"),
    ("logging.getLogger", "py:function", "logging"),
    ("logging.basicConfig", "py:function", "logging"),
    ("logging.shutdown", "py:function", "logging"),
    ("logging.FileHandler", "py:class", "logging.handlers"),
    ("logging.StreamHandler", "py:class", "logging.handlers"),
    ("logging.NullHandler", "py:class", "logging.handlers"),
    ("logging.handlers", "py:module", "logging.handlers"),
    ("logging.handlers.RotatingFileHandler", "py:class", "logging.handlers"),
    ("logging.handlers.TimedRotatingFileHandler", "py:class", "logging.handlers"),
    ("logging.handlers.WatchedFileHandler", "py:class", "logging.handlers"),
    ("logging.handlers.MemoryHandler", "py:class", "logging.handlers"),
    ("logging.handlers.QueueHandler", "py:class", "logging.handlers"),
    ("logging.handlers.QueueHandler.prepare", "py:method", "logging.handlers"),
    ("logging.handlers.QueueHandler.enqueue", "py:method", "logging.handlers"),
    ("logging.handlers.QueueHandler.emit", "py:method", "logging.handlers"),
    ("logging.handlers.QueueListener", "py:class", "logging.handlers"),
    ("logging.handlers.QueueListener.start", "py:method", "logging.handlers"),
    ("logging.handlers.QueueListener.stop", "py:method", "logging.handlers"),
    ("logging.handlers.QueueListener.prepare", "py:method", "logging.handlers"),
    ("logging.handlers.QueueListener.handle", "py:method", "logging.handlers"),
    ("logging.config", "py:module", "logging.config"),
    ("logging.config.dictConfig", "py:function", "logging.config"),
    ("logging.config.fileConfig", "py:function", "logging.config"),
    # processes
    ("multiprocessing", "py:module", "multiprocessing"),
    ("multiprocessing.Process", "py:class", "multiprocessing"),
    ("multiprocessing.Queue", "py:class", "multiprocessing"),
    ("multiprocessing.get_context", "py:function", "multiprocessing"),
    ("multiprocessing.set_start_method", "py:function", "multiprocessing"),
    ("multiprocessing.pool.Pool", "py:class", "multiprocessing"),
    ("multiprocessing.pool.Pool.terminate", "py:method", "multiprocessing"),
    ("concurrent.futures.ProcessPoolExecutor", "py:class", "concurrent.futures"),
    ("subprocess", "py:module", "subprocess"),
    ("subprocess.run", "py:function", "subprocess"),
    ("subprocess.Popen", "py:class", "subprocess"),
    ("os.fork", "py:function", "os"),
    ("os._exit", "py:function", "os"),
    ("os.register_at_fork", "py:function", "os"),
    ("os.setuid", "py:function", "os"),
    ("os.PathLike", "py:class", "os"),
    ("signal.set_wakeup_fd", "py:function", "signal"),
    ("atexit.register", "py:function", "atexit"),
    ("queue.Queue", "py:class", "queue"),
    ("queue.SimpleQueue", "py:class", "queue"),
    ("warnings.filterwarnings", "py:function", "warnings"),
    ("runpy.run_path", "py:function", "runpy"),
    # builtins and typing, as type hints name them
    ("object", "py:class", "functions"),
    ("bool", "py:class", "functions"),
    ("int", "py:class", "functions"),
    ("float", "py:class", "functions"),
    ("str", "py:class", "stdtypes"),
    ("bytes", "py:class", "stdtypes"),
    ("list", "py:class", "stdtypes"),
    ("tuple", "py:class", "stdtypes"),
    ("dict", "py:class", "stdtypes"),
    ("type", "py:class", "functions"),
    ("None", "py:data", "constants"),
    ("RuntimeError", "py:exception", "exceptions"),
    ("ValueError", "py:exception", "exceptions"),
    ("TypeError", "py:exception", "exceptions"),
    ("OSError", "py:exception", "exceptions"),
    ("SystemExit", "py:exception", "exceptions"),
    ("KeyboardInterrupt", "py:exception", "exceptions"),
    ("typing.Any", "py:data", "typing"),
    ("typing.Optional", "py:data", "typing"),
    ("typing.Union", "py:data", "typing"),
    ("typing.Callable", "py:data", "typing"),
    ("typing.Iterable", "py:class", "typing"),
    ("typing.Sequence", "py:class", "typing"),
    ("typing.List", "py:class", "typing"),
    ("typing.Tuple", "py:data", "typing"),
    ("typing.Dict", "py:class", "typing"),
    ("typing.NoReturn", "py:data", "typing"),
    ("types.TracebackType", "py:class", "types"),
]


def uri(name: str, kind: str, page: str) -> str:
    """Where docs.python.org documents ``name`` (relative to its root)."""
    anchor = f"module-{name}" if kind == "py:module" else name
    return f"library/{page}.html#{anchor}"


def inventory(objects: List[Tuple[str, str, str]]) -> bytes:
    """The objects in Sphinx's inventory format, version 2."""
    header = (
        "# Sphinx inventory version 2\n# Project: Python\n# Version: 3\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{name} {kind} 1 {uri(name, kind, page)} -\n" for name, kind, page in sorted(objects))
    return header.encode() + zlib.compress(body.encode(), 9)


def read(path: Path) -> Dict[Tuple[str, str], str]:
    """A version 2 inventory's (name, type) -> address, as written above."""
    data = path.read_bytes()
    lines = data.split(b"\n", 4)
    entries: Dict[Tuple[str, str], str] = {}
    for line in zlib.decompress(lines[4]).decode().splitlines():
        name, kind, _priority, address = line.split(" ", 4)[:4]
        if address.endswith("$"):
            address = address[:-1] + name
        entries[(name, kind)] = address
    return entries


def check(real: Path) -> List[str]:
    """Entries of ``OBJECTS`` that ``real`` lacks or places elsewhere."""
    known = read(real)
    problems = []
    for name, kind, page in OBJECTS:
        ours = uri(name, kind, page)
        theirs = known.get((name, kind))
        if theirs != ours:
            problems.append(f"{name} {kind}: ours {ours}, theirs {theirs}")
    return problems


def main(argv: List[str]) -> int:
    """Write the inventory, or with ``--check FILE`` compare it with a real one."""
    if argv[:1] == ["--check"]:
        problems = check(Path(argv[1]))
        print("\n".join(problems) or f"all {len(OBJECTS)} entries match {argv[1]}")
        return 1 if problems else 0
    OUTPUT.write_bytes(inventory(OBJECTS))
    print(f"wrote {len(OBJECTS)} objects to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
