"""A log shipper tailing mplog's files: Debian's rsyslogd, its imfile input
following ``mplog.FileHandler``'s JSON lines through size rotation and
per-second rotation with gzip, forwarding each line to a file of its own.
Every record arrives once, whole.

imfile's limits, measured here with rsyslog 8.2302: it reads a file from the
moment it sees it at the live name, so a file rotated away within a few ms of
its making is never read (at 100 rotations a second, 70% of the records never
arrived; size and time rotation together make such files at period ends); and
a wildcard that also matches the rotated names reads files twice. So the
tests name the live file alone and rotate one way each, every few hundred ms.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from pathlib import Path

import pytest

import mplog
from tests import workload
from tests.conftest import join_all, requires, wait_until
from tests.rsyslog import RSYSLOGD, Rsyslog

pytestmark = requires(os.path.exists(RSYSLOGD), "needs rsyslogd (Debian: apt-get install rsyslog)")

WORKERS = 4
RECORDS = 2000  # per worker, of 200 bytes; with JSON, ~3 MB: over 50 rotations at 48 KiB
PAUSE = 0.04  # every 10 records: the load takes ~8 s, and each file lives over 100 ms
ROTATIONS = {
    "size": {"max_bytes": "48 KiB"},
    # Records sent before a boundary that arrive after it go to the live file,
    # which imfile still reads; it stops reading a file once it is renamed.
    "time": {"when": "S", "late_records": "live"},
}
_CONFIG = """\
module(load="imfile" mode="inotify")
template(name="line" type="string" string="%msg%\\n")
input(type="imfile" file="{live}" tag="app" ruleset="forward")
ruleset(name="forward") {{
  action(type="omfile" file="{out}" template="line")
}}
"""


def _log_paced(worker: int) -> None:
    logger = logging.getLogger(workload.LOGGER)
    for seq in range(RECORDS):
        logger.info("%s", workload.message(worker, seq, 200))
        if seq % 10 == 9:
            time.sleep(PAUSE)


def _forwarded(out: Path) -> "tuple[Counter[tuple[int, int]], list[str]]":
    """The workload records in rsyslog's output (JSON lines), and the lines that are not whole ones."""
    found: Counter = Counter()
    torn = []
    if not out.exists():
        return found, torn
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            message = json.loads(line)["message"]
        except (ValueError, KeyError):
            torn.append(line)
            continue
        match = workload.LINE.match(message)
        if match is None or message != workload.message(int(match[1]), int(match[2]), int(match[3])):
            if message != "start":
                torn.append(line)
            continue
        found[(int(match[1]), int(match[2]))] += 1
    return found, torn


@pytest.mark.parametrize("rotation", sorted(ROTATIONS))
def test_imfile_forwards_every_record_through_rotation_with_gzip(tmp_path, rotation):
    """rsyslogd's imfile tails the live file while 4 workers log through
    48 KiB rotations (over 50), or per-second ones (over 5), rotated files
    gzipped after ``compress_delay``: every record reaches rsyslog's output
    once, whole."""
    logs = tmp_path / "logs"
    logs.mkdir()
    live, out = logs / "app.log", tmp_path / "forwarded.log"
    rsyslogd = Rsyslog(tmp_path / "rsyslog", config=_CONFIG.format(live=live, out=out))
    handler = mplog.FileHandler(live, compress="gzip", compress_delay=2, **ROTATIONS[rotation])
    handler.setFormatter(mplog.JsonFormatter())
    rsyslogd.start()
    try:
        with mplog.setup(handler, level="INFO"):
            # rsyslog is reading once the first line is forwarded.
            wait_until(lambda: logging.getLogger("start").warning("start") or out.exists(), "rsyslog tailing", 30)
            context = multiprocessing.get_context("fork")
            workers = [context.Process(target=_log_paced, args=(w,)) for w in range(WORKERS)]
            for process in workers:
                process.start()
            join_all(workers, timeout=120)
        expected = {(w, s) for w in range(WORKERS) for s in range(RECORDS)}
        deadline = time.monotonic() + 30
        while not expected <= set(_forwarded(out)[0]) and time.monotonic() < deadline:
            time.sleep(0.5)  # rsyslog reads and forwards behind the load
    finally:
        rsyslogd.stop()
    found, torn = _forwarded(out)
    missing = sorted(expected - set(found))
    assert not missing, f"{len(missing)} of {len(expected)} records not forwarded, e.g. {missing[:10]}"
    assert not torn, torn[:3]
    assert not [key for key, n in found.items() if n > 1], "duplicated"
    rotated = handler.rotated_files()
    assert len(rotated) >= (50 if rotation == "size" else 5), len(rotated)
    assert any(path.endswith(".gz") for path in rotated)
