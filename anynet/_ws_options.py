"""The limits and timers of a WebSocket connection, with their defaults.

Every resource a peer can make us spend has a bound here. The defaults suit
a server with many connections exchanging small and medium messages; each is
a keyword-only option of ``connect``, ``serve`` and ``route``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple, Union

from anynet._deflate_negotiation import PerMessageDeflate, check_settings

#: Largest message (the sum of its fragments) accepted from the peer. A peer
#: that announces a bigger one gets close code 1009.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: Unread messages above which the connection stops reading from the socket.
#: Reading resumes when the application has read the queue down to a quarter.
DEFAULT_MAX_QUEUE = 32
#: Bytes waiting to be written above which ``send`` waits for the peer to read.
DEFAULT_WRITE_LIMIT = 64 * 1024
#: Seconds for the opening handshake (client: TCP and TLS connect included).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Seconds for the closing handshake and the TCP close that follows it.
DEFAULT_DISCONNECT_TIMEOUT = 5.0
#: Seconds between keepalive pings, and the seconds to wait for their pong.
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0
#: permessage-deflate (RFC 7692): on by default, with settings by role (see
#: SERVER_DEFLATE and CLIENT_DEFLATE); None turns it off, a PerMessageDeflate
#: sets it.
DEFAULT_COMPRESSION = "deflate"
#: What a server asks for: both sides start every message afresh, so that no
#: connection holds compression state between messages (a game server holds
#: tens of thousands, most of them idle), and a broadcast is compressed once
#: for all its receivers. Browsers accept both parameters.
SERVER_DEFLATE = PerMessageDeflate(server_no_context_takeover=True, client_no_context_takeover=True)
#: What a client offers: what browsers offer, so that every server accepts
#: it, and whatever the server asks for beyond it.
CLIENT_DEFLATE = PerMessageDeflate()

Compression = Union[str, PerMessageDeflate, None]


class ConnectionOptions(NamedTuple):
    """The validated options of one connection (see the module constants)."""

    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE
    max_queue: Optional[int] = DEFAULT_MAX_QUEUE
    write_limit: int = DEFAULT_WRITE_LIMIT
    disconnect_timeout: float = DEFAULT_DISCONNECT_TIMEOUT
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT
    compression: Compression = DEFAULT_COMPRESSION


def connection_options(
    *,
    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
    write_limit: int = DEFAULT_WRITE_LIMIT,
    disconnect_timeout: Optional[float] = None,
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
    compression: Compression = DEFAULT_COMPRESSION,
) -> ConnectionOptions:
    """Check our user's options at once, so that a mistake fails loudly and early.

    This signature is the reference for the keyword-only parameters of the
    same names in every public function that opens connections (``connect``,
    ``serve``, ``route`` and their Unix socket twins): each lists them
    explicitly, for readers, IDEs and type checkers, and passes them on with
    ``connection_options_from(locals())``. A test holds the names, defaults
    and annotations of all of them equal to these.
    """
    return ConnectionOptions(
        max_message_size=_optional_count("max_message_size", max_message_size),
        max_queue=_optional_count("max_queue", max_queue),
        write_limit=_count("write_limit", write_limit),
        disconnect_timeout=(
            DEFAULT_DISCONNECT_TIMEOUT
            if disconnect_timeout is None
            else _seconds("disconnect_timeout", disconnect_timeout, allow_zero=True)
        ),
        ping_interval=optional_seconds("ping_interval", ping_interval),
        ping_timeout=optional_seconds("ping_timeout", ping_timeout),
        compression=_compression(compression),
    )


def _compression(value: Compression) -> Compression:
    if value is None or value == DEFAULT_COMPRESSION:
        return value
    if isinstance(value, PerMessageDeflate):
        return check_settings(value)
    raise TypeError(
        f"compression must be 'deflate', None or a PerMessageDeflate, not {value!r}"
    )


def deflate_settings(options: ConnectionOptions, is_client: bool) -> Optional[PerMessageDeflate]:
    """The permessage-deflate settings of one side, or None if it is off."""
    compression = options.compression
    if compression == DEFAULT_COMPRESSION:
        return CLIENT_DEFLATE if is_client else SERVER_DEFLATE
    assert compression is None or isinstance(compression, PerMessageDeflate)
    return compression


def connection_options_from(arguments: Mapping[str, Any]) -> ConnectionOptions:
    """``connection_options`` of the options among a public function's arguments.

    ``arguments`` is the caller's ``locals()`` at its start, which holds each
    of its parameters: a new option is added to ``connection_options`` and
    to each signature, never to a list of names passed on by hand.
    """
    return connection_options(**keyword_arguments(connection_options, arguments))


def keyword_arguments(function: Callable[..., Any], arguments: Mapping[str, Any]) -> Dict[str, Any]:
    """The values in ``arguments`` (a caller's ``locals()``) of the keyword-only
    parameters of ``function``, to pass them on to it."""
    return {name: arguments[name] for name in _keyword_only_names(function)}


@functools.lru_cache(maxsize=None)
def _keyword_only_names(function: Callable[..., Any]) -> Tuple[str, ...]:
    return tuple(
        parameter.name
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )


def handshake_seconds(value: Optional[float]) -> float:
    """The bound of an opening handshake: ``None`` means the default, as for
    ``disconnect_timeout``, so that a handshake is never left unbounded."""
    if value is None:
        return DEFAULT_HANDSHAKE_TIMEOUT
    return positive_seconds("handshake_timeout", value)


def optional_seconds(name: str, value: Optional[float]) -> Optional[float]:
    """A positive number of seconds, or None to turn the timer off."""
    return None if value is None else positive_seconds(name, value)


def positive_seconds(name: str, value: float) -> float:
    """A positive number of seconds."""
    return _seconds(name, value, allow_zero=False)


def _seconds(name: str, value: float, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if value != value or value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ValueError(f"{name} must be {bound} seconds, not {value!r}")
    return float(value)


def _optional_count(name: str, value: Optional[int]) -> Optional[int]:
    return None if value is None else _count(name, value)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value
