"""Where an ``mplog serve`` server listens: the address a client is given
(``MPLOG_ADDRESS``), or the default one, which the server and its clients of
the same user work out alike."""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["ADDRESS_VARIABLE", "default_address", "resolve_address"]

#: The environment variable that names a server's socket.
ADDRESS_VARIABLE = "MPLOG_ADDRESS"
#: The socket's name in its directory.
SOCKET_NAME = "serve.sock"
#: Where a server run as root without ``$XDG_RUNTIME_DIR`` (a system service) listens.
SYSTEM_DIRECTORY = "/run/mplog"


def default_address() -> str:
    """The socket of this user's server: ``$XDG_RUNTIME_DIR/mplog/serve.sock``
    (a directory only this user may enter, cleared at logout), else, for
    root, ``/run/mplog/serve.sock`` (a system service), else
    ``/tmp/mplog-serve-UID/serve.sock`` (a directory the server makes 0700)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "mplog", SOCKET_NAME)
    if os.geteuid() == 0:
        return os.path.join(SYSTEM_DIRECTORY, SOCKET_NAME)
    return os.path.join("/tmp", f"mplog-serve-{os.geteuid()}", SOCKET_NAME)


def resolve_address(address: Optional[str] = None) -> str:
    """``address`` if given, else ``$MPLOG_ADDRESS`` if set, else :func:`default_address`,
    made absolute (a relative socket path would mean another file in another directory)."""
    chosen = address or os.environ.get(ADDRESS_VARIABLE) or default_address()
    return os.path.abspath(chosen)
