"""The journal that makes an ``mplog serve`` server's files exactly once
across its SIGKILL.

Every client stream (one per queue of a client process) has a random id and
each of its bytes an offset (:mod:`mplog._resume`). After each wake-up that
handed something on, the server passes a mark down every handler's lane;
each lane, as it passes it, notes its file's device, inode and size (all it
was given before the mark is in the file then: the page cache survives a
SIGKILL, no fsync is needed); the last lane appends one line to the journal:
those files' states and, for each stream, the offset just past the last whole
frame read before the mark. What is in the files is then *committed*.

A server started on the same socket after a kill reads the journal, cuts
each file back to its committed size (the tail was read after the mark: its
clients were not told it is written, and send it again), removes the files
made since (rotated after the mark), and skips, on each stream a client
resumes, what it sends again up to its committed offset. A client is told a
frame is handled only once a mark after it has been committed (that answer
is passed down the lanes after the mark), so nothing a client let go of is
cut. A server that stops (SIGTERM) wrote everything: it removes the journal.

Handlers whose writes cannot be taken back (streams, sockets; see
:func:`mplog._takeback.file_state`) get again what they had handled after
the last mark: at least once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from . import _stderr
from ._lanes import Lane
from ._takeback import FileState, file_state, take_back

__all__ = ["COMPACT_BYTES", "MARK_SECONDS", "Journal", "journal_path"]

#: The least time between two marks (each costs every lane an item, and a
#: line): 50 ms took the server's added CPU per record from about 0.3 us
#: (a mark per wake-up) to noise. Marks come sooner when a client waits for a
#: confirmation (it must follow a commit).
MARK_SECONDS = 0.05
#: A journal longer than this is rewritten as one line (what is still needed).
COMPACT_BYTES = 1024 * 1024
# The line that says the handlers are being replaced (a reload).
_RELOADING_ENTRY = {"reloading": True}
_RELOADING = b'{"reloading":true}\n'


class _Mark:
    """One mark on its way down the lanes: the streams' offsets when it was
    placed, and each file's state as its lane passed it."""

    def __init__(self, number: int, positions: Dict[int, int], lanes: int, journal: "Journal") -> None:
        self.number = number
        self.positions = positions
        self.files: Dict[str, FileState] = {}
        self._left = lanes
        self._lock = threading.Lock()
        self._journal = journal

    def passed(self, handler: logging.Handler) -> None:
        """In ``handler``'s lane: note its file; the last lane commits."""
        state = file_state(handler)
        with self._lock:
            if state is not None:
                self.files[state[0]] = state[1]
            self._left -= 1
            last = self._left == 0
        if last:
            self._journal.commit(self)


class Journal:
    """The journal at ``path`` (see the module's docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._size = 0
        self._lock = threading.Lock()
        # Committed offsets by stream; the streams recovered and not seen since.
        self._committed: Dict[int, int] = {}
        self._unseen: Set[int] = set()
        self._placed = self._written = 0
        self._last: Tuple[Dict[int, int], int] = ({}, -1)
        self._paused = 0
        self._next = 0.0  # no mark before then, unless a client waits

    def recover(self, handlers: Sequence[logging.Handler]) -> List[str]:
        """Take back what a killed server wrote after its journal's last
        line (see :mod:`mplog._takeback`), keep the committed offsets, and
        open the journal to go on; return notices for stderr."""
        committed, files = _read(self.path)
        notices = []
        for path, state in files.items():
            try:
                notice = take_back(path, state, handlers)
            except OSError as exc:
                notice = f"cannot cut {path} back to what the killed server had journalled: {exc}"
            if notice is not None:
                notices.append(notice)
        self._committed, self._unseen = committed, set(committed)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            notices.append(
                f"cannot open the journal {self.path} ({exc}): after a SIGKILL, records may be written twice"
            )
        if files:
            notices.append(
                f"restarted after a kill: took back what {len(files)} file(s) got after the journal's last entry"
            )
        return notices

    def committed(self, stream: int) -> int:
        """The offset up to which ``stream`` is in the files (0: unknown)."""
        return self._committed.get(stream, 0)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Commit nothing meanwhile (old and new handlers write at once while
        they are replaced): a restart after a kill then cuts nothing, and
        skips only what was committed before (at least once, not exactly)."""
        with self._lock:
            self._paused += 1
            self._written = self._placed  # no mark placed before commits now
            self._append(_RELOADING)
        try:
            yield
        finally:
            self._paused -= 1

    def mark(self, lanes: Dict[logging.Handler, Lane], positions: Dict[int, int], now: bool) -> None:
        """Pass a mark down ``lanes`` if anything was handed on since the
        last one, and ``MARK_SECONDS`` have passed since, or ``now`` (a
        client waits for a confirmation). Called by the serving thread,
        after handing on."""
        if self._fd < 0 or self._paused or (not now and time.monotonic() < self._next):
            return
        records = sum(lane.records for lane in lanes.values())
        if self._last == (positions, records):
            return
        self._last = (positions, records)
        self._next = time.monotonic() + MARK_SECONDS
        self._placed += 1
        mark = _Mark(self._placed, positions, len(lanes), self)
        for handler, lane in lanes.items():
            lane.put(mark.passed, handler)

    def commit(self, mark: _Mark) -> None:
        """Append ``mark``'s line (in the last lane's thread, before that lane
        handles anything put after the mark)."""
        with self._lock:
            if self._fd < 0 or mark.number <= self._written:
                return
            changed = {stream: at for stream, at in mark.positions.items() if at > self._committed.get(stream, 0)}
            if not self._append(_line(changed, mark.files)):
                return
            self._committed.update(changed)
            self._unseen -= mark.positions.keys()
            self._written = mark.number
            if self._size > COMPACT_BYTES:
                self._compact(mark)

    def _append(self, line: bytes) -> bool:
        """Append ``line`` (holding the lock); False if the journal failed (and is gone)."""
        if self._fd < 0:
            return False
        try:
            os.write(self._fd, line)
        except OSError as exc:
            self._give_up(exc)
            return False
        self._size += len(line)
        return True

    def _compact(self, mark: _Mark) -> None:
        """Rewrite the journal as one line: the streams still served, or
        recovered and not back yet (a stream that ended is never resumed)."""
        keep = mark.positions.keys() | self._unseen
        self._committed = {stream: at for stream, at in self._committed.items() if stream in keep}
        line = _line(self._committed, mark.files)
        temporary = self.path + ".tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            self._give_up(exc)
            return
        self._size = len(line)

    def _give_up(self, exc: OSError) -> None:
        """The journal cannot be written: remove it, lest a restart cut what
        clients were told is written (records may then be written twice)."""
        _stderr.report(f"cannot write the journal {self.path} ({exc}); after a SIGKILL, records may be written twice")
        self.close()

    def close(self) -> None:
        """Everything handed on is in the files (a clean stop), or the journal
        failed: remove it."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _line(positions: Dict[int, int], files: Dict[str, FileState]) -> bytes:
    entry = {"c": {format(stream, "x"): at for stream, at in positions.items()}, "f": files}
    return (json.dumps(entry, separators=(",", ":")) + "\n").encode()


def _read(path: str) -> Tuple[Dict[int, int], Dict[str, FileState]]:
    """The committed offsets and file states of the journal at ``path`` (a
    line cut short by the kill is left out); nothing if there is none."""
    try:
        with open(path, "rb") as journal:
            lines = journal.read().split(b"\n")[:-1]
    except FileNotFoundError:
        return {}, {}
    committed: Dict[int, int] = {}
    files: Dict[str, FileState] = {}
    for line in lines:
        try:
            entry = json.loads(line)
            if entry == _RELOADING_ENTRY:  # until the next line, the files were not in step
                files = {}
                continue
            committed.update((int(stream, 16), int(at)) for stream, at in entry["c"].items())
            files = {str(name): _state(state) for name, state in entry["f"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return committed, files


def _state(state: object) -> FileState:
    if not isinstance(state, list) or len(state) != 3:
        raise ValueError(f"not a file state: {state!r}")
    return int(state[0]), int(state[1]), int(state[2])


def journal_path(address: str) -> Optional[str]:
    """Where the server at ``address`` keeps its journal: beside its socket."""
    return address + ".journal" if os.path.isabs(address) else None
