"""SyslogHandler against a real rsyslogd: RELP forwarding with the receiver
SIGKILLed and restarted mid-load (0 lost, duplicates counted and bounded), a
spool that fills (exactly the counted records dropped), a spool kept for the
next session, what a receiver crash loses over TCP, and the stdlib's
SysLogHandler under the same crash."""

from __future__ import annotations

import collections
import logging
import logging.handlers
import multiprocessing
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Counter, Dict, List, Optional, Tuple

import pytest

import mplog
from mplog._forward import _relp
from mplog._rfc5424 import Rfc5424
from mplog.exceptions import SpoolInUse
from tests.conftest import join_all, requires, wait_until
from tests.rsyslog import AVAILABLE, Rsyslog

NEEDS_RSYSLOG = requires(AVAILABLE, "needs rsyslogd and its RELP module (apt-get install rsyslog rsyslog-relp)")
PAD = "x" * 400  # ~500-byte messages: an outage's records overflow memory into the spool
LINE = re.compile(r"\bw(\d+) (\d+) x")
NOTICE_DROPPED = re.compile(r"^mplog \d+ (\d+) records were dropped here")


def _phased_worker(worker: int, phases: List, done, counts: List[int]) -> None:
    """Log ``counts[n]`` records in phase n, once the test lets the phase begin."""
    log = logging.getLogger("app")
    seq = 0
    for phase, go in enumerate(phases):
        if not go.wait(120):
            raise SystemExit(f"phase {phase} never began")
        for _ in range(counts[phase]):
            log.info("w%d %d %s", worker, seq, PAD, extra={"phase": phase})
            seq += 1
        done.put((worker, phase))


class Phases:
    """Worker processes that log phase by phase, and the test's hand on them."""

    def __init__(self, workers: int, counts: List[int]) -> None:
        context = multiprocessing.get_context("fork")
        self.go = [context.Event() for _ in counts]
        self.done = context.Queue()
        self.workers = workers
        self.processes = [
            context.Process(target=_phased_worker, args=(w, self.go, self.done, counts)) for w in range(workers)
        ]
        for process in self.processes:
            process.start()

    def begin(self, phase: int) -> None:
        """Let every worker log phase ``phase``."""
        self.go[phase].set()

    def wait(self, phases: int, timeout: float = 120.0) -> None:
        """Wait until every worker has logged ``phases`` more phases (the calls returned)."""
        for _ in range(self.workers * phases):
            self.done.get(timeout=timeout)

    def join(self) -> None:
        """Join the workers (killing any that overruns)."""
        join_all(self.processes)


def received(rsyslog: Rsyslog) -> Tuple[Counter[Tuple[int, int]], Dict[int, List[int]], List[str]]:
    """Count what rsyslog wrote: each (worker, seq) of the app's records, each
    worker's sequence in arrival order, and mplog's own notices."""
    counts: Counter[Tuple[int, int]] = collections.Counter()
    order: Dict[int, List[int]] = collections.defaultdict(list)
    notices = []
    for line in rsyslog.lines():
        match = LINE.search(line)
        if match and not line.startswith("mplog "):
            key = (int(match.group(1)), int(match.group(2)))
            counts[key] += 1
            order[key[0]].append(key[1])
        elif line.startswith("mplog "):
            notices.append(line)
    return counts, order, notices


def first_seen_in_order(order: Dict[int, List[int]]) -> bool:
    """Whether each worker's records arrived in the order logged (counting a resent one where it first came)."""
    for seqs in order.values():
        seen = set()
        firsts = [s for s in seqs if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]
        if firsts != sorted(firsts):
            return False
    return True


class SpoolWatch:
    """Samples the spool directory's segment bytes every 20 ms; keeps the largest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            size = 0
            for entry in os.scandir(self.directory) if self.directory.exists() else ():
                if entry.name.endswith(".seg"):
                    try:
                        size += entry.stat().st_size
                    except FileNotFoundError:  # acknowledged meanwhile
                        pass
            self.largest = max(self.largest, size)

    def stop(self) -> int:
        """Stop sampling; return the largest size seen."""
        self._stop.set()
        self._thread.join(5)
        return self.largest


@pytest.fixture
def rsyslog(tmp_path, request):
    """A started rsyslogd (RELP, or the protocol the test's param names), stopped by pid at the end."""
    server = Rsyslog(tmp_path / "rsyslog", getattr(request, "param", "relp"))
    server.start()
    yield server
    server.stop()


def test_rfc5424_message_fields_and_structured_data() -> None:
    """A record becomes PRI, version, UTC time, host, app, pid, logger, its
    extra fields as escaped SD parameters, and the message."""
    rfc = Rfc5424(16, "host one", "app", "mplog@32473")
    record = logging.LogRecord("my.logger", logging.ERROR, __file__, 1, "hé %s", ("x",), None)
    record.created = 1700000000.25
    record.process = 42
    record.user = 'a"b]c\\'
    message = rfc.encode(record, record.getMessage())
    assert (
        message
        == (
            '<131>1 2023-11-14T22:13:20.250000Z host_one app 42 my.logger [mplog@32473 user="a\\"b\\]c\\\\"] hé x'
        ).encode()
    )
    plain = logging.LogRecord("r", logging.DEBUG, __file__, 1, "m", None, None)
    assert rfc.encode(plain, "m").split(b" ")[-2:] == [b"-", b"m"]


def test_message_without_a_formatter_is_the_default_formatters() -> None:
    """The handler's shortcut past the default formatter gives its text
    exactly: a plain message, one with arguments, a non-str message, a
    traceback, a stack; and a formatter set is used."""
    handler = mplog.SyslogHandler(("127.0.0.1", 9), "tcp")
    try:
        records = [logging.LogRecord("a", logging.INFO, __file__, 1, "plain", None, None)]
        records.append(logging.LogRecord("a", logging.INFO, __file__, 1, "n=%d %s", (3, "x"), None))
        records.append(logging.LogRecord("a", logging.INFO, __file__, 1, {"a": 1}, None, None))  # type: ignore[arg-type]
        try:
            raise ValueError("boom")
        except ValueError:
            records.append(logging.LogRecord("a", logging.ERROR, __file__, 1, "e", None, sys.exc_info()))
        records.append(logging.LogRecord("a", logging.INFO, __file__, 1, "s", None, None, sinfo="Stack:\n  here"))
        for record in records:
            assert handler._text(record) == logging.Formatter().format(record)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        assert handler._text(records[1]) == "INFO n=3 x"
    finally:
        handler.close()


@NEEDS_RSYSLOG
@pytest.mark.timeout(240)
def test_relp_receiver_killed_twice_and_down_10s_loses_nothing(rsyslog, tmp_path) -> None:
    """100,000 records from 4 forked workers over RELP while rsyslogd is
    SIGKILLed and restarted at once, then SIGKILLed and kept down for 10 s:
    every record arrives, in each worker's order; duplicates are at most the
    records resent after reconnections (at most a RELP window per kill); the
    spool stays under its cap; the workers log the outage's 40,000 records
    while the receiver is down (they never wait for it)."""
    spool = tmp_path / "spool"
    cap = 64 * 1024 * 1024
    handler = mplog.SyslogHandler(
        ("127.0.0.1", rsyslog.port), "relp", spool=str(spool), spool_max_bytes=cap, drain_timeout=60.0
    )
    watch = SpoolWatch(spool)
    workers, per_phase = 4, 5000
    with mplog.setup(handler, level="INFO"):
        phases = Phases(workers, [per_phase] * 5)
        phases.begin(0)
        phases.wait(1)
        phases.begin(1)  # first kill: mid-phase, restarted at once
        wait_until(lambda: handler.forwarded >= 22000, "forwarding phase 1", 120)
        rsyslog.kill()
        rsyslog.start()
        phases.wait(1)
        rsyslog.kill()  # second kill: down for 10 s while the workers log two phases
        down_at = time.monotonic()
        phases.begin(2)
        phases.begin(3)
        phases.wait(2)  # the workers' calls returned with the receiver down
        logged_while_down = time.monotonic() - down_at
        time.sleep(max(0.0, 10.0 - logged_while_down))
        rsyslog.start()
        phases.begin(4)
        phases.wait(1)
        phases.join()
        total = workers * 5 * per_phase
        wait_until(lambda: len(received(rsyslog)[0]) >= total, "every record received", 120, poll=0.2)
    largest = watch.stop()
    counts, order, notices = received(rsyslog)
    duplicates = sum(n - 1 for n in counts.values())
    lost = total - len(counts)
    print(
        f"\nRELP: {total} records, lost {lost}, duplicates {duplicates}, resent {handler.resent}, "
        f"dropped {handler.dropped}; workers logged 40,000 records in {logged_while_down:.1f} s "
        f"with the receiver down; largest spool {largest} B (cap {cap}); notices: {notices}"
    )
    assert lost == 0 and handler.dropped == 0
    assert duplicates <= handler.resent <= 2 * _relp.WINDOW
    assert first_seen_in_order(order)
    assert 0 < largest <= cap  # the outage went through the spool
    assert any("lost" in notice for notice in notices)  # the log says what was resent
    assert not list(spool.glob("*.seg"))  # everything acknowledged: nothing kept


@NEEDS_RSYSLOG
@pytest.mark.timeout(180)
def test_full_spool_drops_exactly_the_counted_newest_records(rsyslog, tmp_path) -> None:
    """With the receiver down and a 1 MiB spool, what memory and spool cannot
    hold is dropped: exactly ``handler.dropped`` records are missing, the
    notices in the stream count them, and the workers never wait."""
    rsyslog.kill()
    spool = tmp_path / "spool"
    cap = 1024 * 1024
    handler = mplog.SyslogHandler(
        ("127.0.0.1", rsyslog.port), "relp", spool=str(spool), spool_max_bytes=cap, drain_timeout=60.0
    )
    watch = SpoolWatch(spool)
    workers, outage, after = 4, 10000, 1000
    with mplog.setup(handler, level="INFO"):
        phases = Phases(workers, [outage, after])
        phases.begin(0)
        phases.wait(1)  # 40,000 records (~20 MB) logged with the receiver down
        mplog.complete()
        rsyslog.start()
        kept = workers * outage - handler.dropped
        wait_until(lambda: handler.forwarded >= kept, "the kept records forwarded", 120, poll=0.1)
        phases.begin(1)  # fits in memory: none dropped
        phases.wait(1)
        phases.join()
        total = workers * (outage + after)
        expected = total - handler.dropped
        wait_until(lambda: len(received(rsyslog)[0]) >= expected, "every record kept received", 120, poll=0.2)
    largest = watch.stop()
    counts, order, notices = received(rsyslog)
    lost = total - len(counts)
    noticed = sum(int(NOTICE_DROPPED.match(n).group(1)) for n in notices if NOTICE_DROPPED.match(n))
    print(
        f"\nfull spool: {total} records, lost {lost}, dropped {handler.dropped}, notices {noticed}, largest {largest}"
    )
    assert lost == handler.dropped > 0
    assert noticed == lost
    assert largest <= cap
    assert all((w, s) in counts for w in range(workers) for s in range(outage, outage + after))
    assert first_seen_in_order(order)


def _log_range(first: int, count: int) -> None:
    log = logging.getLogger("app")
    for seq in range(first, first + count):
        log.info("w0 %d %s", seq, PAD)


@NEEDS_RSYSLOG
@pytest.mark.timeout(120)
def test_spool_is_locked_and_sent_by_the_next_session(rsyslog, tmp_path) -> None:
    """A second handler on a spool in use is refused; what a session could not
    send (receiver down at its stop) stays in the spool, and the next session
    (a listener process this time) sends it first."""
    rsyslog.kill()
    spool = str(tmp_path / "spool")
    first = mplog.SyslogHandler(("127.0.0.1", rsyslog.port), spool=spool, drain_timeout=0.5)
    with pytest.raises(SpoolInUse, match="in use by process"):
        mplog.SyslogHandler(("127.0.0.1", rsyslog.port), spool=spool)
    with mplog.setup(first, level="INFO"):
        _log_range(0, 10000)
    assert list(Path(spool).glob("*.seg"))
    rsyslog.start()
    second = mplog.SyslogHandler(("127.0.0.1", rsyslog.port), spool=spool, drain_timeout=30.0)
    with mplog.setup(second, level="INFO", listener="process"):
        _log_range(10000, 10000)
    counts, order, _ = received(rsyslog)
    print(f"\nspool kept: {len(counts)} of 20000 received, duplicates {sum(counts.values()) - len(counts)}")
    assert set(counts) == {(0, seq) for seq in range(20000)}
    assert order[0] == list(range(20000))  # the spool's records first
    assert not list(Path(spool).glob("*.seg"))


def _tcp_worker(worker: int, count: int, port: Optional[int]) -> None:
    """Log ``count`` records, paced; with ``port``, through the stdlib's
    SysLogHandler (TCP, newline-framed) of this process instead of mplog."""
    log = logging.getLogger("app")
    if port is not None:
        logging.raiseExceptions = False  # its failed sends would print a traceback each
        handler = logging.handlers.SysLogHandler(("127.0.0.1", port), socktype=socket.SOCK_STREAM)
        handler.append_nul = False
        handler.setFormatter(logging.Formatter("app %(process)d %(message)s\n"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    for seq in range(count):
        log.info("w%d %d %s", worker, seq, PAD)
        if seq % 100 == 0:
            time.sleep(0.01)  # spread the load over the crash


def _crash_during_load(rsyslog: Rsyslog, port: Optional[int]) -> int:
    """4 workers log 10,000 records each while rsyslogd is SIGKILLed (after
    a quarter has arrived) and restarted; return how many were logged."""
    context = multiprocessing.get_context("fork")
    workers, count = 4, 10000
    processes = [context.Process(target=_tcp_worker, args=(w, count, port)) for w in range(workers)]
    for process in processes:
        process.start()
    wait_until(lambda: len(rsyslog.lines()) >= workers * count // 4, "a quarter of the load received", 120, 0.02)
    rsyslog.kill()
    rsyslog.start()
    join_all(processes)
    return workers * count


@NEEDS_RSYSLOG
@pytest.mark.timeout(240)
@pytest.mark.parametrize("rsyslog", ["tcp"], indirect=True)
def test_tcp_receiver_crash_loss_measured_and_stdlib_compared(rsyslog, tmp_path) -> None:
    """Over TCP (no acknowledgements) a receiver SIGKILLed mid-load loses what
    it had received and not written, and what was sent before the crash was
    noticed: that loss is printed; nothing arrives twice, the order holds, and
    every worker's last records arrive (forwarding resumed). The stdlib's
    SysLogHandler (a TCP connection per worker) under the same crash is
    measured too: it never reconnects."""
    handler = mplog.SyslogHandler(("127.0.0.1", rsyslog.port), "tcp", drain_timeout=60.0)
    with mplog.setup(handler, level="INFO"):
        total = _crash_during_load(rsyslog, None)
        mplog.complete()
        wait_until(lambda: handler.forwarded >= total, "every record sent", 120, poll=0.2)
    time.sleep(1.0)  # for rsyslog to write what it has (nothing acknowledges it)
    counts, order, notices = received(rsyslog)
    lost = total - len(counts)
    duplicates = sum(counts.values()) - len(counts)
    print(f"\nTCP with mplog: {total} records, lost {lost} in the crash, duplicates {duplicates}; notices: {notices}")
    assert duplicates == 0
    assert first_seen_in_order(order)
    assert all((worker, 9999) in counts for worker in range(4))
    rsyslog.stop()
    rsyslog.output.unlink()
    rsyslog.start()
    total = _crash_during_load(rsyslog, rsyslog.port)
    time.sleep(1.0)
    counts, _, _ = received(rsyslog)
    print(f"TCP with the stdlib's SysLogHandler in each worker: {total} records, lost {total - len(counts)}")
