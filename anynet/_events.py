"""What the framing layer reports, shared by both framing backends.

``FrameReader.feed()`` (and ``buffer_updated()``) return a list of events in
arrival order:

* ``bytes`` - a complete binary message;
* ``str`` - a complete, valid UTF-8 text message;
* ``Ping(payload)`` / ``Pong(payload)`` - control frames;
* ``Close(code, reason)`` - the peer's Close frame (``code`` is 1005 when the
  frame had no payload); nothing after it is parsed;
* ``ProtocolError(code, reason)`` - the peer broke RFC 6455. It is always the
  last event, the reader accepts no more input, and ``code`` is the close
  code to send (1002, 1007 or 1009).

Both builds of the framing import these classes from here, so their events
compare equal; the protocol's numbers (opcodes, close codes, control frame
limits) live here too.
"""

from typing import NamedTuple

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: RFC 6455 5.5: control frames carry at most 125 bytes.
MAX_CONTROL_PAYLOAD = 125
#: A close payload is a 2-byte code plus the reason.
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_MANDATORY_EXTENSION = 1010
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class Ping(NamedTuple):
    payload: bytes


class Pong(NamedTuple):
    payload: bytes


class Close(NamedTuple):
    code: int
    reason: str


class ProtocolError(Exception):
    """A violation of RFC 6455 by the peer, with the close code it calls for."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProtocolError):
            return NotImplemented
        return (self.code, self.reason) == (other.code, other.reason)

    def __hash__(self) -> int:
        return hash((self.code, self.reason))

    def __repr__(self) -> str:
        return f"ProtocolError({self.code}, {self.reason!r})"
