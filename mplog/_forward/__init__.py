"""Forwarding from the listener to a host's log pipeline: RFC 5424 syslog over
RELP or octet-counted TCP, with a spool on disk while the receiver is down.

``SyslogHandler`` is loaded on first use: a worker that formats messages for
it imports ``_rfc5424`` alone, not the sockets behind the handler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._handler import SyslogHandler

__all__ = ["SyslogHandler"]


def __getattr__(name: str) -> Any:
    if name != "SyslogHandler":
        raise AttributeError(f"module 'mplog._forward' has no attribute {name!r}")
    from ._handler import SyslogHandler

    return SyslogHandler
