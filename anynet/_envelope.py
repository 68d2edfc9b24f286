"""How a published message crosses processes, and how a receiver counts what it missed.

Sans-I/O: bytes in, bytes out. Each message relayed through Redis is an
envelope: a header, then the payload as published (text as UTF-8)::

    1 byte   flags: 1 text (else binary), 2 the reliable policy (else skip)
    8 bytes  the publishing hub's random id
    8 bytes  the message's sequence number on its topic from that hub (1, 2, ...)

Redis pub/sub keeps no messages: one published while a subscriber's
connection is down never reaches it. Sequence numbers per (publisher,
topic) let the receiver count such messages exactly, as the distance
between the number it expected and the one that arrived, and drop a
message it has already seen (a publisher that resends after a failed write).
"""

from __future__ import annotations

import struct
from typing import Dict, Tuple, Union

from anynet._events import OP_BINARY, OP_TEXT

_HEADER = struct.Struct("!B8sQ")
HEADER_SIZE = _HEADER.size
_TEXT = 1
_RELIABLE = 2


class MalformedEnvelope(ValueError):
    """A message on a hub's channel that no hub published."""


def seal(
    publisher: bytes,
    sequence: int,
    opcode: int,
    reliable: bool,
    payload: Union[bytes, bytearray, memoryview],
) -> bytes:
    """The envelope of one message (``payload`` is UTF-8 for ``OP_TEXT``)."""
    flags = (_TEXT if opcode == OP_TEXT else 0) | (_RELIABLE if reliable else 0)
    return _HEADER.pack(flags, publisher, sequence) + payload


def open_envelope(data: bytes) -> Tuple[bytes, int, int, bool, bytes]:
    """``(publisher, sequence, opcode, reliable, payload)`` from an envelope."""
    if len(data) < HEADER_SIZE:
        raise MalformedEnvelope(f"{len(data)} bytes is too short for an envelope")
    flags, publisher, sequence = _HEADER.unpack_from(data)
    if flags & ~(_TEXT | _RELIABLE):
        raise MalformedEnvelope(f"unknown flags {flags:#x}")
    opcode = OP_TEXT if flags & _TEXT else OP_BINARY
    return publisher, sequence, opcode, bool(flags & _RELIABLE), data[HEADER_SIZE:]


class GapCounter:
    """The last sequence number seen per channel and publisher.

    The first message seen from a publisher on a channel sets the baseline:
    what it sent before is not counted, since this process may not have
    been subscribed then. ``forget`` drops a channel's state when the
    process stops subscribing to it, for the same reason.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: Dict[bytes, Dict[bytes, int]] = {}

    def arrived(self, channel: bytes, publisher: bytes, sequence: int) -> int:
        """How many messages were missed just before this one; -1 for a repeat."""
        publishers = self._last.get(channel)
        if publishers is None:
            publishers = self._last[channel] = {}
        last = publishers.get(publisher)
        if last is not None and sequence <= last:
            return -1
        publishers[publisher] = sequence
        return 0 if last is None else sequence - last - 1

    def forget(self, channel: bytes) -> None:
        self._last.pop(channel, None)
