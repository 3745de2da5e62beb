"""Starting real servers for tests, driving bounded load, and cleaning up only
the processes a test started."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence


def descendants(pid: int) -> List[int]:
    """Every live process whose ancestry includes ``pid`` (read from /proc)."""
    parents: Dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def stop_server(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the server; after ``timeout``, SIGKILL it and everything it started."""
    family = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            family = descendants(process.pid)
            process.kill()
            process.wait(10)
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for_line(
    path: str, pattern: str, timeout: float = 30.0, process: Optional[subprocess.Popen] = None, count: int = 1
) -> str:
    """Wait until ``count`` lines of ``path`` match ``pattern``; return the
    first group of the first."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, errors="replace") as stream:
                found = [match.group(1) for match in map(regex.search, stream) if match]
            if len(found) >= count:
                return found[0]
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before logging {pattern!r}")
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} lines matching {pattern!r} in {path} within {timeout} s")


class Load:
    """Sends ``total`` requests ``GET /?rid=N`` (N from ``first + 1``) from
    ``concurrency`` threads, bounded by ``deadline`` seconds, and records which
    ones were answered."""

    def __init__(self, port: int, total: int, concurrency: int = 8, deadline: float = 120.0, first: int = 0) -> None:
        self.port, self.concurrency, self.deadline = port, concurrency, deadline
        self.requests = total
        self.total = first + total
        self.answered: Dict[int, str] = {}
        self.failed: List[int] = []
        self._next = first
        self._lock = threading.Lock()
        self.sent = 0

    def _take(self) -> Optional[int]:
        with self._lock:
            if self._next >= self.total:
                return None
            self._next += 1
            return self._next

    def _worker(self, stop_at: float, extra_query: Callable[[int], str]) -> None:
        while time.monotonic() < stop_at:
            rid = self._take()
            if rid is None:
                return
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
            try:
                connection.request("GET", f"/?rid={rid}{extra_query(rid)}")
                response = connection.getresponse()
                body = response.read().decode()
                if response.status == 200 and body == f"ok {rid}\n":
                    with self._lock:
                        self.answered[rid] = body
                else:
                    self.failed.append(rid)
            except (OSError, http.client.HTTPException):
                self.failed.append(rid)
            finally:
                connection.close()

    def run(
        self, during: Sequence[Callable[[], None]] = (), extra_query: Callable[[int], str] = lambda rid: ""
    ) -> None:
        """Run the load; call each of ``during`` at evenly spaced points of it."""
        stop_at = time.monotonic() + self.deadline
        threads = [
            threading.Thread(target=self._worker, args=(stop_at, extra_query), daemon=True)
            for _ in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        first = self._next
        for index, action in enumerate(during, 1):
            mark = first + (self.total - first) * index // (len(during) + 1)
            while self._next < mark and any(t.is_alive() for t in threads):
                time.sleep(0.01)
            action()
        for thread in threads:
            thread.join(max(0.0, stop_at - time.monotonic()) + 20)
