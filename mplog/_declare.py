"""How a process asks the listener to take over one of its file handlers: it
connects to the listener's socket and sends, in place of a hello, a request
header and the handler's recipe (JSON); the listener answers with the route
to send that handler's records on, or with why it cannot, and closes."""

from __future__ import annotations

import _socket
import json
import socket
import struct
from typing import Any, Dict, List

from ._hello import check_refused

__all__ = ["ANSWER_LIMIT", "REQUEST", "START_BYTE", "TIMEOUT_SECONDS", "ask", "read_request", "request_length"]

#: The request header: a start byte no hello or sync request has, and the
#: length of the recipe that follows (the size of a hello).
REQUEST = struct.Struct("<BH")
_START = 0xFB
#: How a request's first byte looks.
START_BYTE = bytes([_START])
#: The longest a process waits for the listener's answer, and the listener for the recipe.
TIMEOUT_SECONDS = 10.0
#: The longest answer a process reads.
ANSWER_LIMIT = 65536


def request_length(header: bytes) -> int:
    """The recipe's length if ``header`` starts a request, else -1."""
    if len(header) != REQUEST.size or header[0] != _START:
        return -1
    return int(REQUEST.unpack(header)[1])


def ask(address: str, recipe: Dict[str, Any]) -> Dict[str, Any]:
    """Send ``recipe`` to the listener at ``address``; return its answer.

    Raises:
        ListenerRefused: the listener does not admit this process's user.
        OSError: the listener cannot be reached, or did not answer in time.
        ValueError: the recipe is too long, or the answer is not one.
    """
    body = json.dumps(recipe).encode("utf-8")
    if len(body) > 0xFFFF:
        raise ValueError(f"a handler's recipe is {len(body)} bytes; the most is 65535")
    sock = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT_SECONDS)
        sock.connect(address)
        answer = _send_and_read(sock, REQUEST.pack(_START, len(body)) + body)
    finally:
        sock.close()
    try:
        parsed = json.loads(answer.decode("utf-8"))
    except ValueError:
        raise ValueError(f"the listener's answer is not JSON: {answer[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"the listener's answer is not an object: {parsed!r}")
    return parsed


def _send_and_read(sock: "_socket.socket", request: bytes) -> bytes:
    """Send ``request`` on ``sock``; return the listener's answer.

    Raises:
        ListenerRefused: the listener does not admit this process's user.
        OSError: the listener closed the connection, or did not answer in time.
    """
    try:
        sock.sendall(request)
    except (BrokenPipeError, ConnectionResetError):  # closed at once: a refusal may be waiting
        check_refused(_read_to_end(sock))
        raise
    answer = _read_to_end(sock)
    check_refused(answer)
    return answer


def _read_to_end(sock: "_socket.socket") -> bytes:
    chunks: List[bytes] = []
    size = 0
    while size <= ANSWER_LIMIT:
        try:
            chunk = sock.recv(ANSWER_LIMIT)
        except ConnectionResetError:
            if not chunks:
                raise
            chunk = b""  # it answered, then closed without reading all we sent (a refusal)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    raise ValueError(f"the listener's answer is longer than {ANSWER_LIMIT} bytes")


def read_request(sock: socket.socket, length: int) -> Dict[str, Any]:
    """Read the recipe of ``length`` bytes that follows a request header.

    Raises:
        OSError: the process did not send it in time.
        ValueError: it is not a JSON object.
    """
    sock.setblocking(True)
    sock.settimeout(TIMEOUT_SECONDS)
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            raise ValueError(f"a recipe ended after {len(data)} of {length} bytes")
        data += chunk
    recipe = json.loads(data.decode("utf-8"))
    if not isinstance(recipe, dict):
        raise ValueError(f"a recipe is not an object: {recipe!r}")
    return recipe
