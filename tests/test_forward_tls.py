"""SyslogHandler over TLS, with certificates made by ``openssl``: octet-counted
syslog (RFC 5425) to a TLS receiver of the test's own, and RELP to the real
rsyslogd's imrelp with ``tls="on"``. Every record from 4 workers received
once, none of it in clear on the wire; a certificate the other side does not
trust is refused, reported, and nothing is sent."""

from __future__ import annotations

import collections
import logging
import multiprocessing
import re
import socket
import ssl
import threading
from typing import Any, List

import pytest

import mplog
from tests.conftest import join_all, requires, wait_until
from tests.rsyslog import AVAILABLE as RSYSLOG_AVAILABLE
from tests.rsyslog import Rsyslog, Tls
from tests.tlsreceiver import AVAILABLE, Relay, TlsReceiver, make_certificate

NEEDS_OPENSSL = requires(AVAILABLE, "needs the openssl command (apt-get install openssl)")
NEEDS_RSYSLOG_TLS = requires(
    AVAILABLE and RSYSLOG_AVAILABLE, "needs openssl, rsyslogd and its RELP module (apt-get install rsyslog-relp)"
)
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


def _stderr_until_refused(handler: logging.Handler, capfd: Any, records: int) -> str:
    """Log ``records`` from each of 2 workers through ``handler`` until the
    refusal is said on stderr, then stop; return all that was said."""
    said: List[str] = []
    with mplog.setup(handler, level="INFO"):
        _run_workers(2, records)
        wait_until(lambda: said.append(capfd.readouterr().err) or "cannot forward" in "".join(said), "a report", 30)
    said.append(capfd.readouterr().err)
    return "".join(said)


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


@NEEDS_OPENSSL
@pytest.mark.timeout(120)
def test_a_relp_receiver_that_closes_as_the_session_opens_is_said_to_give_no_reason(certificates, capfd) -> None:
    """A TLS receiver that completes the handshake, then closes with neither an
    alert nor a RELP answer: the report says the session ended as it opened
    without a reason given, nothing is forwarded, and the records are
    reported lost at the stop."""
    (cert, key), _ = certificates
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(str(cert), str(key))
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def close_each_session() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # the test is over
                return
            with conn:
                try:
                    server_context.wrap_socket(conn, server_side=True).close()  # no close_notify, no alert
                    accepted.append(True)
                except OSError:
                    pass

    threading.Thread(target=close_each_session, daemon=True).start()
    context = ssl.create_default_context(cafile=str(cert))
    handler = mplog.SyslogHandler(listener.getsockname(), "relp", ssl_context=context, drain_timeout=1.0)
    try:
        err = _stderr_until_refused(handler, capfd, 10)
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
    print(f"\nclosed at open: {len(accepted)} sessions; stderr {err!r}")
    assert accepted and handler.forwarded == 0
    assert "ended the TLS session as it opened, without saying why" in err
    assert re.search(r"stopped with \d+ records not forwarded, which are lost", err)


# --- RELP over TLS, to the real rsyslogd (imrelp with tls="on") -------------------

#: A record as tests/rsyslog.py's rsyslogd writes it: MSGID PROCID MSG.
RSYSLOG_LINE = re.compile(r"\S+ \d+ w(\d+) (\d+) " + MARK)


@pytest.fixture
def relp_tls(tmp_path):
    """rsyslogd's certificate and key, a client certificate it accepts, and
    one it does not know (each self-signed for 127.0.0.1, made by ``openssl``)."""
    return {name: make_certificate(tmp_path, name) for name in ("server", "client", "stranger")}


@NEEDS_RSYSLOG_TLS
@pytest.mark.timeout(120)
def test_relp_over_tls_to_rsyslog_delivers_every_record_once(tmp_path, relp_tls) -> None:
    """RELP over TLS to rsyslogd's imrelp (tls="on", the client's certificate
    checked): 4 forked workers' 10,000 records each written by rsyslog
    exactly once, none torn, and none of their text on the wire."""
    (cert, key), (client_cert, client_key) = relp_tls["server"], relp_tls["client"]
    rsyslog = Rsyslog(tmp_path / "rsyslog", tls=Tls(cert, key, clients=client_cert))
    rsyslog.start()
    relay = Relay(rsyslog.port)
    context = ssl.create_default_context(cafile=str(cert))
    context.load_cert_chain(str(client_cert), str(client_key))
    handler = mplog.SyslogHandler(("127.0.0.1", relay.port), "relp", ssl_context=context, drain_timeout=30.0)
    workers, count = 4, 2500
    try:
        with mplog.setup(handler, level="INFO"):
            _run_workers(workers, count)
        lines = rsyslog.lines()
    finally:
        relay.stop()
        rsyslog.stop()
    seen = collections.Counter()
    torn = []
    for line in lines:
        match = RSYSLOG_LINE.fullmatch(line)
        if match:
            seen[(int(match.group(1)), int(match.group(2)))] += 1
        else:
            torn.append(line)
    wire = relay.sent
    print(f"\nRELP over TLS to rsyslogd: {workers * count} records, received {len(seen)}, ", end="")
    print(f"duplicates {sum(seen.values()) - len(seen)}, other lines {len(torn)}, {len(wire)} bytes on the wire")
    assert set(seen) == {(w, s) for w in range(workers) for s in range(count)}
    assert sum(seen.values()) == workers * count and torn == []
    assert handler.forwarded == workers * count
    assert wire[:1] == b"\x16" and MARK.encode() not in wire and b" syslog " not in wire


@NEEDS_RSYSLOG_TLS
@pytest.mark.timeout(120)
@pytest.mark.parametrize("refused_by", ["client", "rsyslog"])
def test_relp_over_tls_untrusted_certificate_is_refused_and_reported(tmp_path, relp_tls, refused_by, capfd) -> None:
    """An untrusted certificate on either side: rsyslogd's, which the client
    does not trust (the handshake fails in the client, certificate
    verification named), or the client's, which rsyslogd does not accept (it
    ends the session). Either way the failure is said on stderr, nothing is
    forwarded or written, and the records are reported lost at the stop."""
    (cert, key), (client_cert, client_key) = relp_tls["server"], relp_tls["client"]
    stranger_cert, stranger_key = relp_tls["stranger"]
    rsyslog = Rsyslog(tmp_path / "rsyslog", tls=Tls(cert, key, clients=client_cert))
    rsyslog.start()
    if refused_by == "client":  # trusts another certificate than rsyslogd's
        context = ssl.create_default_context(cafile=str(stranger_cert))
        context.load_cert_chain(str(client_cert), str(client_key))
    else:  # trusts rsyslogd, but presents a certificate rsyslogd does not accept
        context = ssl.create_default_context(cafile=str(cert))
        context.load_cert_chain(str(stranger_cert), str(stranger_key))
    handler = mplog.SyslogHandler(("127.0.0.1", rsyslog.port), "relp", ssl_context=context, drain_timeout=1.0)
    try:
        err = _stderr_until_refused(handler, capfd, 100)
        lines = rsyslog.lines()
    finally:
        rsyslog.stop()
    rsyslogd_said = (tmp_path / "rsyslog" / "rsyslogd-1.err").read_text()
    print(f"\nrefused by {refused_by}: stderr {err!r}; rsyslogd: {rsyslogd_said[-400:]!r}")
    assert lines == [] and handler.forwarded == 0
    assert "cannot forward to 127.0.0.1" in err
    if refused_by == "client":
        assert "CERTIFICATE_VERIFY_FAILED" in err
    else:
        # rsyslogd's alert, as the client read it (behind an end of stream, in
        # 4-5 runs of 10 on Python 3.11); rsyslogd says why in its own log.
        assert "TLSV1_ALERT_UNKNOWN_CA" in err
        assert "authentication error" in rsyslogd_said or "certificate verify failed" in rsyslogd_said
    assert re.search(r"stopped with \d+ records not forwarded, which are lost", err)
