"""What the options of a rotating log file mean: sizes, durations, time
periods, and compression of rotated files.

Options are parsed once, when a handler is made, into plain values and small
objects (a ValueError naming the option and what was expected otherwise);
``FileHandler`` then only asks them questions. Nothing here writes the log.
"""

from __future__ import annotations

import calendar
import datetime
import os
import queue
import re
import threading
import time
import zlib
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from ._safefs import create_like, open_regular
from ._stderr import report

__all__ = [
    "LATE_GRACE_SECONDS",
    "Compressor",
    "Periods",
    "gzip_file",
    "parse_compress",
    "parse_count",
    "parse_duration",
    "parse_size",
    "stamp_now",
]

# A number and its unit, as sizes and durations are written ("64 KiB", "7d");
# which units a quantity takes is looked up in its own table.
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
# "k", "kb" are 1000; "ki", "kib" are 1024 (any case); "b" or nothing is a byte.
_BYTES_PER_UNIT = {
    "": 1,
    "b": 1,
    **{
        prefix + suffix: base**power
        for power, prefix in enumerate("kmgt", 1)
        for suffix, base in (("", 1000), ("b", 1000), ("i", 1024), ("ib", 1024))
    },
}
_SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_Number = TypeVar("_Number", int, float)
_STEP_UNITS = {"S": 1, "M": 60, "H": 3600}
_STAMP = "%Y-%m-%d_%H-%M-%S"
# A rotated time period stays uncompressed this long, so records that arrive
# late (sent just before the boundary) still land in their own period's file.
LATE_GRACE_SECONDS = 5.0


def parse_size(value: Union[int, str], name: str) -> int:
    """``1048576``, ``"64 KiB"``, ``"10MB"`` -> bytes.

    Raises:
        ValueError: not a positive size.
    """
    size = int(_parse_quantity(value, name, (int,), _BYTES_PER_UNIT, "a size in bytes or a string like '10 MiB'"))
    return _positive(size, value, name)


def parse_duration(value: Union[int, float, str], name: str) -> float:
    """``3600``, ``"12h"``, ``"7d"``, ``"2w"`` -> seconds.

    Raises:
        ValueError: not a positive duration.
    """
    seconds = float(_parse_quantity(value, name, (int, float), _SECONDS_PER_UNIT, "seconds or a string like '7d'"))
    return _positive(seconds, value, name)


def parse_count(value: int, name: str) -> int:
    """A number of files: an int, 0 or more.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def parse_compress(value: Optional[str]) -> Optional[str]:
    """How rotated files are compressed: ``None`` (not at all) or ``"gzip"``.

    Raises:
        ValueError: anything else.
    """
    if value not in (None, "gzip"):
        raise ValueError(f"compress must be None or 'gzip', got {value!r}")
    return value


def _parse_quantity(
    value: object, name: str, numbers: Tuple[type, ...], units: Dict[str, int], expected: str
) -> Union[int, float]:
    """``value`` in base units: a number of one of the types ``numbers`` as it
    is, or a string of a number and one of ``units`` (any case).

    Raises:
        ValueError: naming ``name`` and what was ``expected``.
    """
    if isinstance(value, numbers) and not isinstance(value, bool):
        return value  # type: ignore[return-value]
    match = _QUANTITY.match(value) if isinstance(value, str) else None
    # Looked up, not indexed: the pattern takes any letters, and ignoring case
    # lets through more than ASCII ("\u017f", a long s, matches "s").
    factor = units.get(match.group(2).lower()) if match else None
    if match is None or factor is None:
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return float(match.group(1)) * factor


def _positive(number: _Number, value: object, name: str) -> _Number:
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return number


class Periods:
    """Time periods aligned to boundaries of the clock, not to when a process
    started: ``when="M", interval=15`` starts periods at :00, :15, :30 and :45.

    ``when``: ``"S"``, ``"M"``, ``"H"`` (aligned within each day), ``"D"``
    (``"midnight"`` is ``"D"``), ``"W0"``-``"W6"`` (weeks starting at midnight
    of that weekday, Monday is 0).
    """

    def __init__(self, when: str, interval: int = 1, utc: bool = False) -> None:
        self.unit = _unit_of(when)
        _check_interval(self.unit, interval, when)
        self.interval, self.utc = interval, utc
        self._to_struct = time.gmtime if utc else time.localtime

    def _midnight(self, day: datetime.date) -> float:
        fields = (day.year, day.month, day.day, 0, 0, 0, 0, 0, -1)
        return float(calendar.timegm(fields)) if self.utc else time.mktime(fields)

    def start(self, moment: float) -> float:
        """The start of the period that holds ``moment``."""
        tm = self._to_struct(moment)
        day = datetime.date(tm.tm_year, tm.tm_mon, tm.tm_mday)
        if self.unit in _STEP_UNITS:
            step = self.interval * _STEP_UNITS[self.unit]
            midnight = self._midnight(day)
            return midnight + (int(moment - midnight) // step) * step
        if self.unit == "D":
            day = day - datetime.timedelta(days=day.toordinal() % self.interval)
        else:
            day = day - datetime.timedelta(days=(day.weekday() - int(self.unit[1])) % 7)
        return self._midnight(day)

    def end(self, start: float) -> float:
        """The start of the period after the one starting at ``start``."""
        tm = self._to_struct(start)
        day = datetime.date(tm.tm_year, tm.tm_mon, tm.tm_mday)
        if self.unit in _STEP_UNITS:
            # Sub-day periods restart at each midnight (which DST may move).
            tomorrow = self._midnight(day + datetime.timedelta(days=1))
            return min(start + self.interval * _STEP_UNITS[self.unit], tomorrow)
        days = self.interval if self.unit == "D" else 7 * self.interval
        return self._midnight(day + datetime.timedelta(days=days))

    def stamp(self, start: float) -> str:
        """The suffix of the file for the period starting at ``start``."""
        return time.strftime(_STAMP, self._to_struct(start))


def _unit_of(when: str) -> str:
    """``when`` as Periods keeps it: upper case, ``"midnight"`` as ``"D"``.

    Raises:
        ValueError: not one of the accepted values.
    """
    unit = when.upper() if isinstance(when, str) else ""
    unit = "D" if unit == "MIDNIGHT" else unit
    if not re.fullmatch(r"[SMHD]|W[0-6]", unit):
        raise ValueError(f"when must be one of S, M, H, D, midnight, W0-W6; got {when!r}")
    return unit


def _check_interval(unit: str, interval: int, when: str) -> None:
    """Raise ValueError unless ``interval`` is a positive int and, for periods
    shorter than a day, divides a day evenly (so every day starts a period)."""
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise ValueError(f"interval must be a positive int, got {interval!r}")
    if unit in _STEP_UNITS and 86400 % (interval * _STEP_UNITS[unit]):
        raise ValueError(f"interval {interval} with when={when!r} does not divide a day evenly")


def stamp_now() -> str:
    """The suffix of a file rotated outside any period: the local time now."""
    return time.strftime(_STAMP, time.localtime())


class Compressor:
    """Gzips rotated files in a background thread, so a rollover never stalls
    writing; then applies retention."""

    def __init__(self, apply_retention: Callable[[], None], keep_undue: bool = False) -> None:
        self._jobs: "queue.Queue[Optional[Tuple[float, str]]]" = queue.Queue()
        self._apply_retention = apply_retention
        # At close, leave the files not due yet as they are (a shipper may be
        # reading them), for the next compressor of the log to take up.
        self._keep_undue = keep_undue
        self._thread = threading.Thread(target=self._run, name="mplog-compressor", daemon=True)
        self._thread.start()

    def submit(self, path: str, due: float) -> None:
        """Compress ``path`` once the time is ``due`` (``time.time()``), or at close."""
        self._jobs.put((due, path))

    def close(self) -> None:
        """Compress everything submitted (now, without waiting; with
        ``keep_undue``, only what is due), then stop."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        waiting: List[Tuple[float, str]] = []  # (due, path)
        closing = False
        while not closing or (waiting and not self._keep_undue):
            closing = self._take_job(waiting) or closing
            ready = _take_due(waiting, closing and not self._keep_undue)
            for _, path in ready:
                gzip_file(path)
            if ready:
                self._apply_retention()

    def _take_job(self, waiting: List[Tuple[float, str]]) -> bool:
        """Wait for the next job, or until the first of ``waiting`` is due, and
        add a job to ``waiting``; return whether closing was asked instead."""
        timeout = max(0.0, min(waiting)[0] - time.time()) if waiting else None
        try:
            job = self._jobs.get(timeout=timeout)
        except queue.Empty:  # no job, but a waiting file is due
            return False
        if job is None:
            return True
        waiting.append(job)
        return False


def _take_due(waiting: List[Tuple[float, str]], closing: bool) -> List[Tuple[float, str]]:
    """Remove from ``waiting``, and return in order, the jobs that are due
    (all of them when closing: nothing waits past close)."""
    now = time.time()
    ready = sorted(item for item in waiting if closing or item[0] <= now)
    waiting[:] = [item for item in waiting if item not in ready]
    return ready


def gzip_file(path: str) -> None:
    """Replace ``path`` with ``path.gz``, its gzip, written to a temporary next
    to it and renamed. The gzip gets the file's permission bits and, where
    permitted (as root), its owner. A link or FIFO at ``path`` is not
    compressed, and nothing at the temporary's name is followed or reused: in a
    directory others can write to, either could be theirs (see ``_safefs``)."""
    temporary = path + ".gz.tmp"
    try:
        with open(open_regular(path), "rb") as source:
            with open(_create_temporary(temporary, os.fstat(source.fileno())), "wb") as target:
                _compress(source, target)
        os.replace(temporary, path + ".gz")
        os.unlink(path)
    except OSError as exc:
        report(f"cannot compress {path}: {exc}")


def _create_temporary(path: str, like: os.stat_result) -> int:
    """Make ``path`` afresh (see ``create_like``); whatever is there already, a
    leftover of a crash or a link someone planted, is removed first (a link
    itself, never what it points to)."""
    try:
        return create_like(path, os.O_WRONLY, like)
    except FileExistsError:
        os.unlink(path)
        return create_like(path, os.O_WRONLY, like)


def _compress(source: BinaryIO, target: BinaryIO) -> None:
    # zlib's own gzip container (wbits 31) rather than the gzip module, whose
    # import (with shutil's) would add 2 ms to every spawned worker's start.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    for chunk in iter(lambda: source.read(1 << 20), b""):
        target.write(compressor.compress(chunk))
    target.write(compressor.flush())
