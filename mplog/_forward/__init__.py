"""Forwarding from the listener to a host's log pipeline: RFC 5424 syslog over
RELP or octet-counted TCP, with a spool on disk while the receiver is down.
(The message format, which workers use too, is ``mplog._rfc5424``.)"""

from __future__ import annotations

from ._handler import SyslogHandler

__all__ = ["SyslogHandler"]
