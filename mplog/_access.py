"""Who may connect to a listener's socket: the kernel's word on each peer
(``SO_PEERCRED``, taken when it connected, so it cannot be forged), checked
against the users and group the listener admits, and the socket file's own
permissions, which keep everyone else from connecting at all."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from typing import Dict, FrozenSet, Iterable, NamedTuple, Optional

__all__ = ["Access", "Peer", "peer_of"]

_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class Peer(NamedTuple):
    """The process at the other end of a connection, as the kernel saw it connect."""

    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    """Who is at the other end of the connected Unix socket ``sock``."""
    return Peer(*_PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)))


class Access:
    """The users (and at most one group) whose processes may log here.

    Always the listener's own uid and root (which could become any user
    anyway). ``group``: a process whose primary group it is, or whose user is
    one of its members in the group database, is admitted too.

    Args:
        uids: more uids to admit.
        group: a gid to admit, or ``None``.
    """

    def __init__(self, uids: Iterable[int] = (), group: Optional[int] = None) -> None:
        self.uids: FrozenSet[int] = frozenset({os.getuid(), 0, *uids})
        self.group = group
        self._members: Dict[int, bool] = {}  # by uid: whether the user is in ``group`` (looked up once)

    def admits(self, peer: Peer) -> bool:
        """Whether ``peer`` may log here."""
        if peer.uid in self.uids:
            return True
        if self.group is None:
            return False
        return peer.gid == self.group or self._is_member(peer.uid)

    def _is_member(self, uid: int) -> bool:
        known = self._members.get(uid)
        if known is None:
            known = self._members[uid] = _in_group(uid, self.group)
        return known

    def describe(self) -> str:
        """Who is admitted, for messages."""
        uids = ", ".join(map(str, sorted(self.uids)))
        return f"uids {uids}" + ("" if self.group is None else f" and group {self.group}")

    def open_socket(self, address: str) -> None:
        """Set the permissions of the socket just bound at ``address`` so that
        the kernel lets only the admitted processes connect: 0600, the
        listener's; with a group, 0660 and the group's; with other uids,
        0666, and only ``SO_PEERCRED`` tells them from everyone else.

        Raises:
            PermissionError: the socket cannot be given to that group (only
                root, or a member of the group, may).
        """
        os.chmod(address, 0o600)
        if self.group is not None:
            os.chown(address, -1, self.group, follow_symlinks=False)
            os.chmod(address, 0o660)
        if self.uids - {os.getuid(), 0}:
            os.chmod(address, 0o666)


def _in_group(uid: int, gid: Optional[int]) -> bool:
    """Whether user ``uid`` belongs to group ``gid`` (as primary or supplementary group)."""
    if gid is None:
        return False
    try:
        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except KeyError:  # a uid or gid with no name: no membership to look up
        return False
    return user.pw_gid == gid or user.pw_name in group.gr_mem
