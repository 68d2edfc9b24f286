"""The exceptions of ``anynet.websocket`` (re-exported there; import them from there)."""

from __future__ import annotations

import asyncio
import sys
from typing import Mapping, Optional

# Close codes after which a connection counts as ended normally: a normal
# closure, an endpoint going away, and a Close frame without a status code.
NORMAL_CLOSE_CODES = frozenset((1000, 1001, 1005))


class WSError(Exception):
    """Raised when a websocket error occurs. The base class of every error below."""


class ConnectionClosed(WSError):
    """The connection is closed (or closing), so no message can be sent or received.

    ``code`` and ``reason`` are the close code and reason of the connection:
    those of the peer's Close frame, or those we sent when we ended the
    connection because the peer broke the protocol or stopped answering pings,
    or 1006 when the TCP connection ended without a closing handshake.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        if self.reason:
            return f"connection closed with code {self.code}: {self.reason}"
        return f"connection closed with code {self.code}"


class ConnectionClosedOK(ConnectionClosed):
    """The connection ended normally (close code 1000, 1001 or 1005)."""


class ConnectionClosedError(ConnectionClosed):
    """The connection ended abnormally: an error code, a protocol violation, or no handshake."""


class MessageTypeError(WSError):
    """A receive of one type cannot complete: the queue is full of the other type.

    ``recv()`` waits for binary messages and ``recv_text()`` for text ones.
    When ``max_queue`` messages of the other type wait unread, the connection
    stops reading (that bounds its memory), so no message of the wanted type
    can arrive and the receive raises this instead of waiting forever. The
    queued messages stay queued: read them with ``recv_message()``, ``async
    for``, or the receive method of their type. ``queued`` is how many are
    queued and ``wanted`` the class asked for (``bytes`` or ``str``).
    """

    def __init__(self, wanted: type, queued: int) -> None:
        if wanted is bytes:
            asked, other, method = "recv()", "text", "recv_text()"
        else:
            asked, other, method = "recv_text()", "binary", "recv()"
        super().__init__(
            f"{asked} would wait forever: {queued} {other} messages wait unread, so the "
            f"connection stopped reading (max_queue); read them with {method}, "
            "recv_message() or async for"
        )
        self.wanted = wanted
        self.queued = queued

class MessageCallbackSet(WSError):
    """A receive method was called while a message callback is set: messages go to the callback.

    ``set_message_callback(None)`` returns the connection to receive methods.
    """


class HandshakeError(WSError):
    """The opening handshake failed.

    ``status`` is the HTTP status code of the server's response, or ``None``
    when there was no complete response. ``headers`` holds the response's
    headers with lower-case names (empty without a response), e.g. to read a
    ``Location`` or ``WWW-Authenticate`` header.
    """

    def __init__(
        self, message: str, status: Optional[int] = None, headers: Optional[Mapping[str, str]] = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: Mapping[str, str] = dict(headers or {})


# A timeout should be caught by the usual spellings on every supported Python:
# ``TimeoutError`` everywhere, and ``asyncio.TimeoutError``, which is a
# different class before Python 3.11.
if sys.version_info >= (3, 11):

    class _Timeout(TimeoutError):
        pass

else:

    class _Timeout(TimeoutError, asyncio.TimeoutError):
        pass


class WSTimeoutError(WSError, _Timeout):
    """An operation took longer than its bound, e.g. the opening handshake.

    It is also a ``TimeoutError`` (and an ``asyncio.TimeoutError``), so
    ``except TimeoutError`` catches it.
    """


def closed_error(code: int, reason: str) -> ConnectionClosed:
    """The exception that reports a connection closed with ``code``."""
    if code in NORMAL_CLOSE_CODES:
        return ConnectionClosedOK(code, reason)
    return ConnectionClosedError(code, reason)
