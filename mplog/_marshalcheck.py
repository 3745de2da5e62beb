"""Checking a marshal payload's claimed counts before ``marshal.loads``
builds anything, so that no frame can make the listener allocate far more
than the frame's own size."""

from __future__ import annotations

import struct
from typing import Tuple, Union

__all__ = ["check_counts"]

# marshal makes a tuple or a list as soon as it has read how many items it
# will hold, before it reads them: a 12-byte payload claiming 2**31 - 1 items
# has it allocate and fill 16 GiB. Every item takes at least one byte, so an
# honest payload never claims more items than it has bytes left, which
# check_counts makes sure of first. (A str or bytes is checked against the
# bytes left by marshal itself; an int's digits are allocated, but never
# touched before marshal finds them missing.) How each type code is walked,
# with or without FLAG_REF (0x80): a fixed size in bytes (code included), or
# one of these:
_SHORT, _LONG, _COUNT, _DIGITS, _UNKNOWN = -1, -2, -3, -4, 0


def _walk_table() -> Tuple[int, ...]:
    table = [_UNKNOWN] * 256
    kinds = {"0NFTS.{": 1, "ir": 5, "g": 9, "y": 17, ")": 2, "zZ": _SHORT, "stuaA": _LONG, "([<>": _COUNT, "l": _DIGITS}
    for codes, kind in kinds.items():
        for code in codes.encode():
            table[code] = table[code | 0x80] = kind
    return tuple(table)


_WALK = _walk_table()
_SIGNED = struct.Struct("<i").unpack_from


def check_counts(payload: Union[bytes, bytearray]) -> None:
    """Walk the marshal objects of ``payload`` up to the last byte that could
    start a tuple or a list (if none, the walk is skipped: only those are built
    before their items are read).

    Raises:
        ValueError: a count claims more items than there are bytes left, or a
            type code that mplog never writes.
    """
    last = max(payload.rfind(b"("), payload.rfind(b"["), payload.rfind(b"\xa8"), payload.rfind(b"\xdb"))
    end = len(payload)
    pos = 0
    walk, signed = _WALK, _SIGNED  # locals: a record's frame is some 30 objects
    # Every index below is in range: ``pos <= last`` holds a code, and the
    # byte at ``last`` a counted one, so a shorter object's length byte is too.
    while pos <= last:
        kind = walk[payload[pos]]
        if kind > 0:
            pos += kind
        elif kind == _SHORT:
            pos += 2 + payload[pos + 1]
        elif kind == _UNKNOWN:
            raise ValueError(f"type code {payload[pos]:#x} at byte {pos}, which mplog never writes")
        else:
            count = signed(payload, pos + 1)[0]  # struct.error if cut short
            pos += 5
            if kind == _DIGITS:
                count = 2 * abs(count)  # bytes of 15-bit digits (the sign is the int's)
            if count < 0 or (kind == _COUNT and count > end - pos):
                raise ValueError(f"claims {count} items or bytes with {end - pos} bytes left")
            if kind != _COUNT:  # the items of a counted object follow as objects of their own
                pos += count
