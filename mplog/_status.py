"""``mplog status``: ask a running ``mplog serve`` server, on its socket, how
it is doing (processes connected, records and bytes per handler, drops, its
last notice, its memory and descriptors) and show it."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict, List, Optional

from . import _declare
from ._endpoint import resolve_address

__all__ = ["ask_status", "main", "render"]


def ask_status(address: Optional[str] = None) -> Dict[str, Any]:
    """The status of the server at ``address`` (default: as ``mplog.connect()`` finds it).

    Raises:
        OSError: no server answers there (or it refused this user).
        ValueError: its answer is not a status.
    """
    answer = _declare.ask(resolve_address(address), {"request": "status"})
    status = answer.get("status")
    if not isinstance(status, dict):
        raise ValueError(f"the server's answer is not a status: {answer.get('error', answer)}")
    return status


def render(status: Dict[str, Any]) -> str:
    """``status`` as lines for a person."""
    pids = status["pids"]
    shown = ", ".join(map(str, pids[:20])) + (f", ... ({len(pids) - 20} more)" if len(pids) > 20 else "")
    lines = [
        f"mplog serve pid {status['pid']} at {status['address']}",
        f"config: {status['config']} (reloaded {status['reloads']} time(s))",
        f"processes: {status['processes']} connected, {status['pipes']} pipe(s)" + (f": pids {shown}" if pids else ""),
    ]
    for handler in status["handlers"]:
        lines.append(
            f"handler {handler['handler']}: {handler['records']} records, {handler['bytes']} bytes, "
            f"{handler['dropped']} dropped, {handler['backlog']} bytes waiting"
            + (f", stalled for {handler['stalled']} s" if handler["stalled"] else "")
        )
    lines.append(
        f"connections refused: {status['refused']}, closed for what they sent: {status['closed']}, "
        f"pipes turned away: {status['turned_away']}, requests unanswered: {status['requests_unanswered']}"
    )
    lines.append(f"memory: {status['rss']} bytes resident, {status['fds']} open descriptors")
    lines.append(_last_notice(status["last_notice"]))
    return "\n".join(lines)


def _last_notice(notice: Optional[Dict[str, Any]]) -> str:
    if notice is None:
        return "last notice: none"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(notice["time"]))
    return f"last notice: {when} {notice['message']}"


def main(address: Optional[str], as_json: bool) -> int:
    """Run ``mplog status``; return its exit status (0, or 1 if no server
    answers), errors in one line on stderr."""
    try:
        status = ask_status(address)
    except (OSError, ValueError) as exc:
        where = resolve_address(address)
        print(f"mplog status: error: no mplog serve answers at {where}: {_why(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if as_json else render(status))
    return 0


def _why(exc: BaseException) -> str:
    reasons: List[str] = [type(exc).__name__, str(exc)]
    return ": ".join(part for part in reasons if part)
