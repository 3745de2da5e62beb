"""The rotated files of one log: their names, their compression (in a
background thread, after a delay) and their retention."""

from __future__ import annotations

import os
import re
import time
from typing import List, Optional

from ._rotation import LATE_GRACE_SECONDS, Compressor
from ._stderr import report

__all__ = ["Archive"]


class Archive:
    """The rotated files of the log at ``path``: ``<file>.<stamp>[.<n>][.gz]``.

    Args:
        path: the live log file.
        backup_count: keep at most this many rotated files (None: no limit).
        max_age: delete rotated files older than this many seconds (None: never).
        compress: gzip rotated files.
        compress_delay: seconds a rotated file stays uncompressed (0: none).
    """

    def __init__(
        self,
        path: str,
        backup_count: Optional[int],
        max_age: Optional[float],
        compress: bool,
        compress_delay: float,
    ) -> None:
        self.path = path
        self.backup_count, self.max_age = backup_count, max_age
        self.compress, self.compress_delay = compress, compress_delay
        # Started by the process that rotates (the listener may be a process
        # forked after the handler was made).
        self._compressor: Optional[Compressor] = None
        self._compressor_pid = 0
        self._pattern = re.compile(re.escape(os.path.basename(path)) + r"\.(\d{4}-.+?)(?:\.(\d+))?(\.gz)?$")

    def free_name(self, stamp: str) -> str:
        """A name for the file rotated at ``stamp`` that no rotated file has,
        compressed or not: ``<file>.<stamp>``, or else ``<file>.<stamp>.<n>``."""
        base = f"{self.path}.{stamp}"
        if not os.path.exists(base) and not os.path.exists(base + ".gz"):
            return base
        index = 1
        while os.path.exists(f"{base}.{index}") or os.path.exists(f"{base}.{index}.gz"):
            index += 1
        return f"{base}.{index}"

    def files(self) -> List[str]:
        """The rotated files, oldest first."""
        directory = os.path.dirname(self.path)
        found = []
        for name in os.listdir(directory):
            match = self._pattern.match(name)
            if match and not name.endswith(".tmp"):
                found.append((match.group(1), int(match.group(2) or 0), os.path.join(directory, name)))
        return [path for _, _, path in sorted(found)]

    def add(self, path: str, late_appends: bool) -> None:
        """Take the file just rotated to ``path``: compress it when due (after
        ``compress_delay``, and after the grace for late lines if
        ``late_appends``), or apply retention now."""
        if not self.compress:
            self.apply_retention()
            return
        grace = LATE_GRACE_SECONDS if late_appends else 0.0
        self._compressor_here().submit(path, time.time() + max(grace, self.compress_delay))

    def take_up(self) -> None:
        """In a process that writes the log: with ``compress_delay``, compress
        the rotated files an earlier handler of the log left uncompressed (not
        due when it closed), each ``compress_delay`` after its last change."""
        if self.compress_delay and self._compressor_pid != os.getpid():
            self._compressor_here()

    def _compressor_here(self) -> Compressor:
        if self._compressor is None or self._compressor_pid != os.getpid():
            delayed = self.compress_delay > 0
            self._compressor, self._compressor_pid = Compressor(self.apply_retention, delayed), os.getpid()
            if delayed:
                self._submit_uncompressed(self._compressor)
        return self._compressor

    def _submit_uncompressed(self, compressor: Compressor) -> None:
        try:
            for path in self.files():
                if not path.endswith(".gz"):
                    compressor.submit(path, os.lstat(path).st_mtime + self.compress_delay)
        except OSError as exc:
            report(f"cannot look for rotated files of {self.path} to compress: {exc}")

    def apply_retention(self) -> None:
        """Delete the rotated files past ``backup_count`` (oldest first) or ``max_age``."""
        if self.backup_count is None and self.max_age is None:
            return
        try:
            files = self.files()
            doomed = set()
            if self.backup_count is not None and len(files) > self.backup_count:
                doomed.update(files[: len(files) - self.backup_count])
            if self.max_age is not None:
                oldest = time.time() - self.max_age
                # The file's own time, never a link's target's: a link someone put
                # here, dangling, must not stop retention.
                doomed.update(path for path in files if os.lstat(path).st_mtime < oldest)
            for path in doomed:
                os.unlink(path)
        except OSError as exc:
            report(f"retention for {self.path} failed: {exc}")

    def close(self) -> None:
        """Finish the compressions due (all of them, without ``compress_delay``)."""
        if self._compressor is not None and self._compressor_pid == os.getpid():
            self._compressor.close()
        self._compressor = None
