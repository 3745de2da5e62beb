"""Taking back what a killed ``mplog serve`` wrote to its files after its
journal's last entry: the uncommitted tail of the file that was live then,
and every file made since (rotated, or live now). Their records' clients
were not told they are written, and send them again (see :mod:`mplog._journal`).

A file is known by its device and inode, so one rotated since the entry is
found under its new name; a handler's files are taken in the order they
were made: its rotated files, oldest first, then the live one.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
from typing import List, Optional, Sequence, Tuple

from ._files import FileHandler

__all__ = ["FileState", "file_state", "take_back"]

#: A file as the journal knows it: device, inode (0: there was none) and size.
FileState = Tuple[int, int, int]


def file_state(handler: logging.Handler) -> Optional[Tuple[str, FileState]]:
    """``(path, state)`` of the file ``handler`` writes (lines a write fault
    holds back are not in it); None for a handler whose writes cannot be
    taken back (not a file)."""
    if isinstance(handler, FileHandler):
        return handler.path, handler.written()
    if not isinstance(handler, logging.FileHandler):
        return None
    with handler.lock:  # type: ignore[union-attr]
        stream = handler.stream
        try:
            stat = os.fstat(stream.fileno()) if stream is not None else os.stat(handler.baseFilename)
        except (OSError, ValueError):  # not there (delay=True), or closed
            return handler.baseFilename, (0, 0, 0)
    return handler.baseFilename, (stat.st_dev, stat.st_ino, stat.st_size)


def take_back(path: str, state: FileState, handlers: Sequence[logging.Handler]) -> Optional[str]:
    """Cut what was written to ``path``'s files after the journal saw it at
    ``state``; return a notice if it cannot be done (the file was moved away
    by something else, or compressed), else None."""
    candidates = _files_of(path, handlers)
    device, inode, size = state
    index = len(candidates) - 1 if not inode else _index_of(candidates, device, inode)
    if index is None:
        return (
            f"cannot find {path} as it was before the server was killed (moved or compressed since?): "
            "records its clients send again may be there twice"
        )
    live = candidates[-1]
    if inode:
        _truncate(candidates[index], size)
    elif os.path.exists(live):  # there was no file: all of it came after
        _truncate(live, 0)
    later = candidates[index + 1 :]
    for name in later:
        if name == live:
            _truncate(live, 0)
        else:
            os.unlink(name)
    if later and _numbered(handlers, path):
        _renumber(path)
    return None


def _files_of(path: str, handlers: Sequence[logging.Handler]) -> List[str]:
    """``path``'s files, oldest first, the live one last (whether it exists or not)."""
    for handler in handlers:
        if isinstance(handler, FileHandler) and handler.path == path:
            return [*handler.rotated_files(), path]
    if _numbered(handlers, path):
        return [*reversed(_backups(path)), path]
    return [path]


def _numbered(handlers: Sequence[logging.Handler], path: str) -> bool:
    """Whether ``path`` is a stdlib ``RotatingFileHandler``'s (backups ``path.1``, ``path.2``...)."""
    return any(
        isinstance(handler, logging.handlers.RotatingFileHandler) and handler.baseFilename == path
        for handler in handlers
    )


def _backups(path: str) -> List[str]:
    """``path.1``, ``path.2``... that exist, newest (lowest number) first."""
    directory, name = os.path.split(path)
    pattern = re.compile(re.escape(name) + r"\.([1-9][0-9]*)$")
    numbers = sorted(int(match.group(1)) for match in map(pattern.match, os.listdir(directory)) if match)
    return [f"{path}.{number}" for number in numbers]


def _renumber(path: str) -> None:
    """Close the gaps left in ``path.1``, ``path.2``... (lowest first: no name is taken twice)."""
    for number, name in enumerate(_backups(path), 1):
        target = f"{path}.{number}"
        if name != target:
            os.rename(name, target)


def _index_of(candidates: List[str], device: int, inode: int) -> Optional[int]:
    for index, name in enumerate(candidates):
        try:
            stat = os.stat(name)
        except FileNotFoundError:
            continue
        if (stat.st_dev, stat.st_ino) == (device, inode):
            return index
    return None


def _truncate(name: str, size: int) -> None:
    """Cut ``name`` to ``size`` bytes if it is longer."""
    try:
        if os.stat(name).st_size > size:
            os.truncate(name, size)
    except FileNotFoundError:
        pass
