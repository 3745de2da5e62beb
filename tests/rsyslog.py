"""A real rsyslogd for the forwarding and shipping tests and the benchmark:
run in the foreground with a private configuration and work directory,
listening on a free loopback port (RELP, optionally over TLS, or TCP) or
running a configuration of the test's own, killed and restarted by pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import List, NamedTuple, Optional

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
MODULES = "/usr/lib/x86_64-linux-gnu/rsyslog"
#: Whether rsyslogd and its RELP input can run here.
AVAILABLE = os.path.exists(RSYSLOGD) and os.path.exists(os.path.join(MODULES, "imrelp.so"))

# Each message is written (and flushed) before rsyslog answers for it: the
# input's ruleset has a Direct queue, so the action runs in the thread that
# received the message, before imrelp sends "rsp 200". With the default
# in-memory queue, imrelp answers once a message is queued, so a SIGKILL may
# lose what was answered and still queued (not seen in one run of the RELP
# test, where rsyslog kept up).
GLOBAL = 'global(workDirectory="{work}" maxMessageSize="64k" net.enableDNS="off")\n'
CONFIG = """\
module(load="{modules}/imrelp.so"{tls_library})
module(load="{modules}/imtcp.so")
template(name="line" type="string" string="%msgid% %procid% %msg%\\n")
ruleset(name="forwarded" queue.type="Direct") {{
  action(type="omfile" file="{output}" template="line" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="{input}" port="{port}" ruleset="forwarded"{tls})
"""

# imrelp over TLS: "certvalid" asks the client for a certificate and checks
# it against tls.cacert (not its name). With librelp's OpenSSL driver: its
# default GnuTLS one (Debian's librelp 1.11 has both), in certvalid mode,
# accepted a self-signed client certificate that tls.cacert did not hold.
TLS = ' tls="on" tls.cacert="{cacert}" tls.mycert="{cert}" tls.myprivkey="{key}" tls.authMode="certvalid"'
TLS_LIBRARY = ' tls.tlslib="openssl"'


class Tls(NamedTuple):
    """imrelp's TLS files: its certificate and key, and the certificates of
    the clients it accepts."""

    cert: Path
    key: Path
    clients: Path


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rsyslog:
    """One rsyslogd receiving over ``protocol`` (``"relp"`` or ``"tcp"``;
    RELP over TLS with ``tls``) and writing each message as ``MSGID PROCID
    MSG`` to :attr:`output`; or, given ``config`` (its modules, inputs,
    rulesets and actions: the work directory is set here), running that, with
    no port of its own (:attr:`port` 0)."""

    def __init__(
        self,
        directory: Path,
        protocol: str = "relp",
        port: Optional[int] = None,
        tls: Optional[Tls] = None,
        config: Optional[str] = None,
    ) -> None:
        self.directory = directory
        self.port = 0 if config is not None else port or free_port()
        self.output = directory / "received.log"
        work = directory / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.config = directory / "rsyslog.conf"
        self.config.write_text(
            GLOBAL.format(work=work) + (config if config is not None else self._inputs(protocol, tls))
        )
        self.process: Optional[subprocess.Popen] = None
        self.starts = 0

    def _inputs(self, protocol: str, tls: Optional[Tls]) -> str:
        """The configuration of the RELP or TCP input and its file."""
        return CONFIG.format(
            modules=MODULES,
            output=self.output,
            input="imrelp" if protocol == "relp" else "imtcp",
            port=self.port,
            tls=TLS.format(cacert=tls.clients, cert=tls.cert, key=tls.key) if tls else "",
            tls_library=TLS_LIBRARY if tls else "",
        )

    def start(self, timeout: float = 20.0) -> None:
        """Start rsyslogd and wait until it accepts connections (if it has a port)."""
        self.starts += 1
        log = open(self.directory / f"rsyslogd-{self.starts}.err", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-C", "-f", str(self.config), "-i", str(self.directory / "rsyslogd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while self.port:
            if self.process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self.process.returncode}; see {log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL rsyslogd (as a crash would end it)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM rsyslogd and wait for it; SIGKILL it after 20 s."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def lines(self) -> List[str]:
        """What rsyslogd wrote so far, one entry per message."""
        if not self.output.exists():
            return []
        return self.output.read_text(errors="replace").splitlines()
