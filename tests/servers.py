"""Starting real servers for tests, driving bounded load, and cleaning up only
the processes a test started."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
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
    """SIGTERM the server; after ``timeout``, SIGABRT it (for its stacks), then
    SIGKILL it and everything it started."""
    family = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            family = descendants(process.pid)
            # PYTHONFAULTHANDLER (conftest) makes a Python server print every
            # thread's stack on SIGABRT: the only trace a hang in CI leaves.
            process.send_signal(signal.SIGABRT)
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
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


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Wait until 127.0.0.1:``port`` accepts a connection (uvicorn's workers
    listen on the socket their parent bound only once they have started)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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


def kill_a_worker(server: subprocess.Popen) -> int:
    """SIGKILL one of ``server``'s direct children (a worker its master
    restarts), never a helper process of ``multiprocessing`` (the resource
    tracker, a forkserver); return its pid."""
    for pid in descendants(server.pid):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                helper = re.search(rb"multiprocessing\.(resource_tracker|forkserver) import", cmdline.read())
        except (OSError, IndexError, ValueError):
            continue
        if parent == server.pid and not helper:
            os.kill(pid, signal.SIGKILL)
            return pid
    raise RuntimeError(f"server {server.pid} has no worker to kill")


class RotatedLog:
    """A RotatingFileHandler's file and its backups (``path``, ``path.1`` ...),
    read back oldest first."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        prefix = os.path.basename(path) + "."
        numbers = [name[len(prefix) :] for name in os.listdir(os.path.dirname(path)) if name.startswith(prefix)]
        self.backups = sorted((int(n) for n in numbers if n.isdigit()), reverse=True)
        self.files = [f"{path}.{n}" for n in self.backups] + [path]

    def lines(self) -> List[str]:
        """Every line of every file, oldest file first."""
        found: List[str] = []
        for name in self.files:
            with open(name, errors="replace") as stream:
                found.extend(stream.read().splitlines())
        return found

    def not_as_one_writer(self) -> List[str]:
        """The backups a single RotatingFileHandler would not have left: one
        rotates just before a line would reach ``max_bytes``, so each backup
        is under it, and its next file's first line would have taken it there."""
        faults = []
        for older, newer in zip(self.files, self.files[1:]):
            size = os.path.getsize(older)
            with open(newer, "rb") as stream:
                first = len(stream.readline())
            if not size < self.max_bytes <= size + first:
                faults.append(f"{older}: {size} bytes, then a line of {first}")
        return faults


def count_lines(lines: Sequence[str], marker: str, pattern: "re.Pattern[str]") -> "tuple[Counter[int], List[str]]":
    """How many times each id appears on lines containing ``marker`` (the id
    is ``pattern``'s first group), and those lines ``pattern`` does not match
    in full (torn ones)."""
    counts: Counter[int] = Counter()
    torn = []
    for line in lines:
        if marker in line:
            match = pattern.fullmatch(line)
            if match:
                counts[int(match[1])] += 1
            else:
                torn.append(line)
    return counts, torn
