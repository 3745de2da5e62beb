"""SyslogHandler over TLS (RFC 5425) against a real TLS receiver of the test's
own, with certificates made by ``openssl``: every record from 4 workers
received once, none of it in clear on the wire; a receiver whose certificate
the client does not trust is refused, reported, and sent nothing."""

from __future__ import annotations

import collections
import logging
import multiprocessing
import re
import ssl

import pytest

import mplog
from tests.conftest import join_all, requires, wait_until
from tests.tlsreceiver import AVAILABLE, Relay, TlsReceiver, make_certificate

NEEDS_OPENSSL = requires(AVAILABLE, "needs the openssl command (apt-get install openssl)")
MARK = "secret-payload"
LINE = re.compile(rb"\bw(\d+) (\d+) " + MARK.encode() + rb"\Z")


def _worker(worker: int, count: int) -> None:
    log = logging.getLogger("app")
    for seq in range(count):
        log.info("w%d %d %s", worker, seq, MARK)


def _run_workers(workers: int, count: int) -> None:
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_worker, args=(w, count)) for w in range(workers)]
    for process in processes:
        process.start()
    join_all(processes)


@pytest.fixture
def certificates(tmp_path):
    """Two self-signed certificates for 127.0.0.1: one the client trusts, one it does not."""
    return make_certificate(tmp_path, "trusted"), make_certificate(tmp_path, "stranger")


@NEEDS_OPENSSL
@pytest.mark.timeout(120)
def test_tls_delivers_every_record_once_encrypted(certificates) -> None:
    """20,000 records from 4 forked workers over TLS: each received exactly
    once, untorn; the bytes on the wire never hold a record's text."""
    (cert, key), _ = certificates
    receiver = TlsReceiver(cert, key)
    relay = Relay(receiver.port)
    context = ssl.create_default_context(cafile=str(cert))
    handler = mplog.SyslogHandler(("127.0.0.1", relay.port), "tcp", ssl_context=context, drain_timeout=30.0)
    workers, count = 4, 5000
    try:
        with mplog.setup(handler, level="INFO"):
            _run_workers(workers, count)
        wait_until(lambda: len(receiver.messages) >= workers * count, "every record received", 60, poll=0.05)
    finally:
        relay.stop()
        receiver.stop()
    seen = collections.Counter()
    for message in receiver.messages:
        match = LINE.search(message)
        if match:
            seen[(int(match.group(1)), int(match.group(2)))] += 1
    wire = relay.sent
    print(f"\nTLS: {workers * count} records, received {len(seen)}, duplicates {sum(seen.values()) - len(seen)}")
    print(f"torn {receiver.torn}, {len(wire)} bytes on the wire, forwarded {handler.forwarded}")
    assert set(seen) == {(w, s) for w in range(workers) for s in range(count)}
    assert sum(seen.values()) == workers * count and receiver.torn == 0
    assert wire[:1] == b"\x16"  # a TLS handshake record opens the stream
    assert MARK.encode() not in wire and b"<14>1 " not in wire  # long enough not to occur by chance


@NEEDS_OPENSSL
@pytest.mark.timeout(120)
def test_untrusted_receiver_is_refused_reported_and_sent_nothing(certificates, capfd) -> None:
    """A receiver whose certificate the client's context does not trust: the
    handshake fails, the failure is reported on stderr (certificate
    verification named), nothing is forwarded, nothing of the records crosses
    the wire, and the records are reported lost at the stop (no spool)."""
    (trusted, _), (cert, key) = certificates
    receiver = TlsReceiver(cert, key)
    relay = Relay(receiver.port)
    context = ssl.create_default_context(cafile=str(trusted))
    handler = mplog.SyslogHandler(("127.0.0.1", relay.port), "tcp", ssl_context=context, drain_timeout=1.0)
    try:
        with mplog.setup(handler, level="INFO"):
            _run_workers(2, 100)
            wait_until(lambda: receiver.refused >= 2, "two refused handshakes", 60, poll=0.05)
    finally:
        relay.stop()
        receiver.stop()
    err = capfd.readouterr().err
    wire = relay.sent
    print(f"\nuntrusted: {receiver.refused} handshakes refused, {len(wire)} bytes on the wire; stderr: {err!r}")
    assert receiver.messages == [] and handler.forwarded == 0
    assert "cannot forward to 127.0.0.1" in err and "CERTIFICATE_VERIFY_FAILED" in err
    assert re.search(r"stopped with \d+ records not forwarded, which are lost", err)
    assert MARK.encode() not in wire and b"<14>1 " not in wire  # long enough not to occur by chance
