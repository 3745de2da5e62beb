"""A log file written only by the listener: writing, write faults, rotation
by size and by time, and following external rotation (the rotated files'
compression and retention are :mod:`mplog._archive`'s).

Only the listener writes, so no lock spans processes. Lines arrive formatted
(by the workers) with each record's time. Time rotation files every line under
its own period, even when it arrives after the period ended (unless
``late_records="live"``). What the options mean (sizes, durations, periods,
compression) is :mod:`mplog._rotation`'s.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from . import _recipes, _takeover
from ._archive import Archive
from ._codec import TEXT_END, Frames, frame_texts
from ._rotation import (
    Periods,
    parse_compress,
    parse_count,
    parse_duration,
    parse_size,
    stamp_now,
)
from ._safefs import open_append, write_and_close
from ._stderr import report

__all__ = ["FileHandler"]

#: Seconds a file that cannot be written waits before the next write tries it
#: again (meanwhile records are held in memory). Read at each try, so it can be changed.
RETRY_SECONDS = 0.5
_WRITE_CHUNK = 256 * 1024
# The most pieces one os.writev takes (the kernel refuses more).
_IOV_MAX = max(16, os.sysconf("SC_IOV_MAX")) if "SC_IOV_MAX" in os.sysconf_names else 1024


class FileHandler(logging.Handler):
    """A log file for ``mplog.setup()``, with rotation, retention and compression.

    Rotated files are named ``<file>.<period start or rotation time>`` (plus
    ``.1``, ``.2`` for further size rotations in the same period, and ``.gz``
    once compressed), so names never shift and sort in time order. An archive,
    and a live file made after a rotation, get the mode and (as root) the owner
    of the file they come from or replace. No link another user puts in the
    directory is followed (at the live file's name, only one of this user, root
    or the directory's owner is), and no FIFO waited on.

    Args:
        filename: the live log file.
        max_bytes: rotate before the file would grow past this (``10485760``,
            ``"10 MiB"``, ``"64KB"``).
        when: rotate at period boundaries: ``"S"``, ``"M"``, ``"H"``, ``"D"``,
            ``"midnight"``, ``"W0"``-``"W6"``; with ``max_bytes`` too, both apply.
        interval: periods of this many units (e.g. ``when="M", interval=15``).
        late_records: where a record goes that was logged before a period
            boundary but arrives after the rotation: ``"period"`` (into its
            own period's rotated file, for 5 s after the rotation) or
            ``"live"`` (into the live file: for a shipper that stops reading a
            file once it is renamed, such as rsyslog's imfile).
        utc: periods in UTC instead of local time.
        backup_count: keep at most this many rotated files.
        max_age: delete rotated files older than this (seconds, ``"7d"``...).
        compress: ``"gzip"`` to compress rotated files, in a background thread.
        compress_delay: leave each rotated file uncompressed, under its rotated
            name, this long (seconds, ``"5m"``...) before compressing it, as
            logrotate's ``delaycompress`` does: a shipper tailing the log
            (rsyslog's imfile, Filebeat, Vector, Fluent Bit) that reopens it
            by name, or was down at the rotation, can still read it to its
            end. Files not due when the handler closes stay uncompressed
            until the next handler of this file takes them up.
        encoding: of the file.
        max_buffer: while the file cannot be written (disk full, permissions,
            directory gone), hold up to this much in memory, then drop records,
            counting them; the count is written to the log once writing resumes.

    Raises:
        ValueError: an option that cannot be parsed, with what was expected.
    """

    terminator = "\n"

    def __init__(
        self,
        filename: Union[str, "os.PathLike[str]"],
        *,
        max_bytes: Union[int, str, None] = None,
        when: Optional[str] = None,
        interval: int = 1,
        utc: bool = False,
        late_records: str = "period",
        backup_count: Optional[int] = None,
        max_age: Union[int, float, str, None] = None,
        compress: Optional[str] = None,
        compress_delay: Union[int, float, str, None] = None,
        encoding: str = "utf-8",
        max_buffer: Union[int, str] = "16 MiB",
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self.path = os.path.abspath(os.fspath(filename))
        self.max_bytes = None if max_bytes is None else parse_size(max_bytes, "max_bytes")
        self.periods = None if when is None else Periods(when, interval, utc)
        if late_records not in ("period", "live"):
            raise ValueError(f"late_records must be 'period' or 'live', got {late_records!r}")
        self.late_records = late_records
        self.backup_count = None if backup_count is None else parse_count(backup_count, "backup_count")
        self.max_age = None if max_age is None else parse_duration(max_age, "max_age")
        self.compress = parse_compress(compress)
        self.compress_delay = 0.0 if compress_delay is None else parse_duration(compress_delay, "compress_delay")
        if compress_delay is not None and not self.compress:
            raise ValueError(f"compress_delay={compress_delay!r} needs compress='gzip'")
        try:
            "x".encode(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r}") from None
        self.encoding = encoding
        self.max_buffer = parse_size(max_buffer, "max_buffer")
        self._fd = -1
        self._identity: Optional[Tuple[int, int]] = None
        # The live file as it was when last closed (moved away by a rotation,
        # ours or logrotate's): a file made in its place gets its mode and owner.
        self._last_stat: Optional[os.stat_result] = None
        self._size = 0
        self._period_start = 0.0
        self._period_end = 0.0
        self._held = bytearray()  # formatted bytes that could not be written yet
        self._dropped = 0
        self._fault: Optional[OSError] = None
        self._fault_since = 0.0
        self._retry_at = 0.0
        self._archive = Archive(
            self.path, self.backup_count, self.max_age, self.compress is not None, self.compress_delay
        )
        # How it was made: a process of a session that makes one has it taken
        # over, and the listener makes its own from these.
        self.arguments: Dict[str, Any] = {
            "filename": self.path,
            "max_bytes": max_bytes,
            "when": when,
            "interval": interval,
            "utc": utc,
            "late_records": late_records,
            "backup_count": backup_count,
            "max_age": max_age,
            "compress": compress,
            "compress_delay": compress_delay,
            "encoding": encoding,
            "max_buffer": max_buffer,
        }

    def __repr__(self) -> str:
        return f"<mplog.FileHandler {self.path!r}>"

    def handle(self, record: logging.LogRecord) -> Any:
        """Handle ``record`` as ``logging.Handler`` does; in a process of a
        session other than the listener's, send it to the listener instead."""
        return _takeover.handle(self, record, logging.Handler.handle)

    # --- the two ways lines arrive --------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """Format and write one record (records logged in the listener's own process)."""
        try:
            self.write_lines([(record.created, self.format(record))])
        except Exception:
            self.handleError(record)

    def write_lines(self, lines: Sequence[Tuple[float, str]]) -> None:
        """Write formatted lines, each ``(record time, text)``, rotating as needed."""
        encoding, terminator = self.encoding, self.terminator
        encoded = [(created, (text + terminator).encode(encoding, "backslashreplace")) for created, text in lines]
        with self.lock:  # type: ignore[union-attr]
            self._write_encoded(encoded)

    def write_frames(self, frames: List[Frames]) -> None:
        """Write text frames: lines the workers formatted and encoded, each
        followed by ``TEXT_END``, in chunks as the listener received them (only
        when ``encoding`` is UTF-8 and there is no time rotation: frames carry no
        record time)."""
        with self.lock:  # type: ignore[union-attr]
            if self.max_bytes is not None and self._size + sum(map(len, frames)) > self.max_bytes:
                self._write_encoded([(0.0, line) for line in b"".join(frames).split(TEXT_END)[:-1]])
            elif self._fault is not None and not self._recover():
                self._hold([b"".join(frames).replace(TEXT_END, b"")])
            else:
                self._check_identity()
                self._write(*frame_texts(frames))

    def _write_encoded(self, lines: Sequence[Tuple[float, bytes]]) -> None:
        if self._fault is not None and not self._recover():
            self._hold([data for _, data in lines])
            return
        self._check_identity()
        late = self._write_in_order(lines)
        for start, chunks in late.items():
            self._append_late(start, b"".join(chunks))

    def _write_in_order(self, lines: Sequence[Tuple[float, bytes]]) -> Dict[float, List[bytes]]:
        """Write ``lines`` to the live file, rotating before a line that starts a
        new period or would take the file past ``max_bytes``; return the lines
        that belong to periods already rotated, by the start of their period."""
        out = bytearray()  # lines gathered for one write
        late: Dict[float, List[bytes]] = {}
        for created, data in lines:
            if self.periods is not None and not self._period_start <= created < self._period_end:
                start = self._late_or_rotate(created, out)
                if start is not None:
                    late.setdefault(start, []).append(data)
                    continue
            if self.max_bytes is not None and self._size + len(out) + len(data) > self.max_bytes > 0:
                self._rotate_for_size(out)
            out += data
            if len(out) >= _WRITE_CHUNK:  # large lines: several moderate writes beat one huge one
                self._write_out(out)
        self._write(out)
        return late

    def _late_or_rotate(self, created: float, out: bytearray) -> Optional[float]:
        """For a line of time ``created``, outside the current period: the start of
        its period if that was rotated already (sent before the boundary, arrived
        after it), or None to write it to the live file (``late_records="live"``);
        else rotate to its period (writing ``out`` first) and return None."""
        assert self.periods is not None
        start = self.periods.start(created)
        if start < self._period_start:
            return start if self.late_records == "period" else None
        self._write_out(out)
        self._rotate_to_period(start)
        return None

    def _rotate_for_size(self, out: bytearray) -> None:
        """Rotate (writing ``out`` first) before a line that would take the file
        past ``max_bytes``; an empty file is not rotated, so a line longer than
        ``max_bytes`` gets a file of its own."""
        if self._size + len(out) > 0:
            self._write_out(out)
            self._rotate(self._period_stamp())

    def _write_out(self, out: bytearray) -> None:
        """Write the gathered lines and start gathering anew."""
        self._write(out)
        out.clear()

    # --- writing and faults -----------------------------------------------------

    def _write(self, *parts: Frames) -> None:
        if not any(parts):
            return
        if self._fault is not None:
            self._hold([b"".join(parts)])
        else:
            try:
                self._write_all(*parts)
            except OSError as exc:
                self._enter_fault(exc)

    def _write_all(self, *parts: Frames) -> None:
        """Write ``parts``, in order; on failure, what was not written goes back
        to the front of the held bytes (so a line resumes exactly where it stopped)."""
        if self._fd < 0:  # opened even with nothing to write: recovering from a fault checks it can be
            try:
                self._open()
            except OSError:
                self._held[:0] = b"".join(parts)
                raise
        unwritten = [part for part in parts if part]
        while unwritten:
            try:
                written = os.writev(self._fd, unwritten[:_IOV_MAX])
            except OSError:
                self._held[:0] = b"".join(unwritten)
                raise
            self._size += written
            done = 0
            while done < len(unwritten) and written >= len(unwritten[done]):
                written -= len(unwritten[done])
                done += 1
            del unwritten[:done]
            if written:  # a short write: the rest of that piece (a copy, or a view of bytes nobody changes)
                unwritten[0] = unwritten[0][written:]

    def _hold(self, chunks: List[bytes]) -> None:
        for chunk in chunks:
            if len(self._held) + len(chunk) <= self.max_buffer:
                self._held += chunk
            else:
                self._dropped += chunk.count(self.terminator.encode(self.encoding)) or 1

    def _enter_fault(self, exc: OSError) -> None:
        self._fault, self._fault_since = exc, time.time()
        self._retry_at = time.monotonic() + RETRY_SECONDS
        report(
            f"cannot write {self.path} ({exc}); holding up to {self.max_buffer} bytes of records "
            f"in memory, then dropping them (counted); retrying every {RETRY_SECONDS} s"
        )

    def _recover(self) -> bool:
        """Try to write what was held; True once the file is writable again."""
        if time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + RETRY_SECONDS
        held, self._held = bytes(self._held), bytearray()
        try:
            self._close_fd()
            self._write_all(held)
        except OSError:  # still failing: said once when the fault began, not at every retry
            return False
        fault, self._fault = self._fault, None
        if self._dropped:
            notice = logging.LogRecord(
                "mplog", logging.WARNING, __file__, 0,
                "%d records were dropped: %s could not be written from %s to %s (%s)",
                (self._dropped, self.path, time.ctime(self._fault_since), time.ctime(), fault), None,
            )  # fmt: skip
            self._dropped = 0
            try:
                self._write_all((self.format(notice) + self.terminator).encode(self.encoding, "backslashreplace"))
            except OSError as exc:
                self._enter_fault(exc)
                return False
        report(f"writing {self.path} again")
        return True

    # --- files ------------------------------------------------------------------

    def _open(self) -> None:
        self._fd = open_append(self.path, self._last_stat, follow_trusted_link=True)
        stat = os.fstat(self._fd)
        self._identity = (stat.st_dev, stat.st_ino)
        self._size = stat.st_size
        self._archive.take_up()
        if self.periods is not None and not self._period_end:
            # An existing file is taken to hold the current period.
            self._period_start = self.periods.start(time.time())
            self._period_end = self.periods.end(self._period_start)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            self._last_stat = os.fstat(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _check_identity(self) -> None:
        """Follow logrotate and friends: a file moved away or deleted is
        reopened by name; one truncated in place (copytruncate) is measured again."""
        if self._fd < 0:
            return
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._close_fd()
            return
        if (stat.st_dev, stat.st_ino) != self._identity:
            self._close_fd()
        elif stat.st_size < self._size:
            self._size = stat.st_size

    def written(self) -> Tuple[int, int, int]:
        """The live file's device, inode and size (``(0, 0, 0)``: there is none)."""
        with self.lock:  # type: ignore[union-attr]
            try:
                stat = os.fstat(self._fd) if self._fd >= 0 else os.stat(self.path)
            except FileNotFoundError:
                return (0, 0, 0)
            return (stat.st_dev, stat.st_ino, stat.st_size)

    def reopen(self) -> None:
        """Close and reopen the file by name (e.g. after an external rotation)."""
        with self.lock:  # type: ignore[union-attr]
            self._close_fd()

    def _period_stamp(self) -> str:
        """Name for a size rotation: the current period's, or else the time now."""
        if self.periods is not None and self._period_end:
            return self.periods.stamp(self._period_start)
        return stamp_now()

    def _rotate_to_period(self, start: float) -> None:
        assert self.periods is not None
        had_period = bool(self._period_end)
        if had_period and (self._size > 0 or (self._fd < 0 and os.path.exists(self.path))):
            self._rotate(self.periods.stamp(self._period_start), late_appends=self.late_records == "period")
        self._period_start, self._period_end = start, self.periods.end(start)

    def _rotate(self, stamp: str, late_appends: bool = False) -> None:
        """Move the live file to its rotated name and start a new one."""
        self._close_fd()
        target = self._archive.free_name(stamp)
        try:
            os.rename(self.path, target)
        except FileNotFoundError:  # no live file (removed, or never written): nothing to rotate
            return
        except OSError as exc:
            self._enter_fault(exc)
            return
        self._size = 0
        self._archive.add(target, late_appends)

    def rotated_files(self) -> List[str]:
        """The rotated files of this log, oldest first."""
        return self._archive.files()

    def _append_late(self, start: float, data: bytes) -> None:
        """Add lines that arrived after their period ended to that period's file."""
        assert self.periods is not None
        base = f"{self.path}.{self.periods.stamp(start)}"
        candidates = [name for name in (base, *(f"{base}.{i}" for i in range(1, 1000))) if os.path.exists(name)]
        target = candidates[-1] if candidates else base
        try:
            like = os.fstat(self._fd) if self._fd >= 0 else self._last_stat
            write_and_close(open_append(target, like), data)
        except OSError as exc:
            self._enter_fault(exc)
            self._hold([data])

    def flush(self) -> None:
        """Lines are written straight to the file; nothing is buffered but
        what a write fault holds back."""

    def close(self) -> None:
        """Write what can still be written, finish compressions, close the file."""
        with self.lock:  # type: ignore[union-attr]
            if self._fault is not None:
                self._retry_at = 0.0
                if not self._recover() and (self._held or self._dropped):
                    lost = self._held.count(self.terminator.encode(self.encoding)) + self._dropped
                    report(f"{lost} records for {self.path} were lost: {self._fault}")
                    self._held, self._dropped = bytearray(), 0
            self._close_fd()
            self._archive.close()
        super().close()


_recipes.register("mplog.FileHandler", FileHandler, lambda handler: dict(handler.arguments))
