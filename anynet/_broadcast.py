"""One message to many connections: ``anynet.websocket.broadcast``.

A server's frames are not masked, so a message to many server-side
connections is encoded into one frame and the same bytes are written to
each; a client-side connection masks every frame with a key of its own, so
it is encoded for each. With permessage-deflate the same holds for
compression: the connections that compress without context takeover with
the same window and level get one frame, compressed once; a connection
that keeps its context gets a frame compressed for it alone. Only the connection methods grouped under "What
broadcast asks of a connection" in ``anynet._ws_protocol`` are used here.

Two delivery policies decide what happens to a connection whose peer does
not keep up (more than ``write_limit`` bytes wait to be sent to it):

* ``"skip"``: the connection misses the message. Right for state snapshots,
  where the next one supersedes this one; the connection's
  ``skipped_messages`` counts what it missed.
* ``"reliable"``: the message is written anyway, so every connection gets
  every message in order; a connection with more than ``max_backlog`` bytes
  waiting is closed with 1013 (try again later) instead, never left with a
  silent gap.
"""

from __future__ import annotations

from typing import (
    Any,
    Awaitable,
    Callable,
    Collection,
    Dict,
    Generator,
    Hashable,
    Iterable,
    List,
    Literal,
    Optional,
    Tuple,
    Union,
)

from anynet._events import OP_BINARY, OP_TEXT
from anynet._ws_protocol import WebSocketClient

DeliveryPolicy = Literal["skip", "reliable"]
POLICIES: Tuple[str, ...] = ("skip", "reliable")

# Bytes that may wait to be sent to one connection under the reliable policy
# before it is closed with 1013: sixteen times the default write_limit.
DEFAULT_MAX_BACKLOG = 1024 * 1024


class BroadcastResult(int):
    """What ``broadcast`` did: an ``int``, the number of connections sent the
    message, with the details as attributes.

    ``sent`` is that number; ``skipped`` the connections that missed the
    message (skip policy, over ``write_limit``); ``closed`` the connections
    closed with 1013 (reliable policy, over ``max_backlog``). Connections
    that were already closing are in neither.

    Awaiting the result of a reliable broadcast waits until none of the
    connections has more than its ``write_limit`` waiting to be sent (or
    until they are closed): the backpressure of ``send``, applied once to a
    whole group. Awaiting the result of a skip broadcast returns at once: a
    slow connection is skipped, not waited for.
    """

    sent: int
    skipped: Tuple[WebSocketClient, ...]
    closed: Tuple[WebSocketClient, ...]
    _clients: Collection[WebSocketClient]
    # What else awaiting waits for, once the connections are writable: a
    # pub/sub hub's room to relay the next message.
    _then: Optional[Callable[[], Awaitable[None]]] = None

    def __await__(self) -> Generator[Any, None, None]:
        for client in self._clients:
            # Checked here first: most connections are not over the limit,
            # and a coroutine per connection per message would cost more
            # than the broadcast.
            if client._is_over_write_limit():
                yield from client._until_writable().__await__()
        if self._then is not None:
            yield from self._then().__await__()

    def __repr__(self) -> str:
        return (
            f"<BroadcastResult sent={self.sent} skipped={len(self.skipped)}"
            f" closed={len(self.closed)}>"
        )


def broadcast(
    clients: Iterable[WebSocketClient],
    message: Union[bytes, str],
    *,
    policy: DeliveryPolicy = "skip",
    max_backlog: int = DEFAULT_MAX_BACKLOG,
) -> BroadcastResult:
    """Send ``message`` to every open connection in ``clients`` without waiting.

    ``message`` is binary for ``bytes``, ``bytearray`` or ``memoryview``,
    text for ``str``. See the module for ``policy`` and ``max_backlog``.
    """
    if isinstance(message, str):
        opcode = OP_TEXT
    elif isinstance(message, (bytes, bytearray, memoryview)):
        opcode = OP_BINARY
    else:
        raise TypeError(f"broadcast() takes bytes or str, not {type(message).__name__}")
    if policy not in POLICIES:
        raise ValueError(f"policy must be 'skip' or 'reliable', not {policy!r}")
    if max_backlog.__class__ is not int and not isinstance(max_backlog, int):
        raise TypeError(f"max_backlog must be an int, not {type(max_backlog).__name__}")
    if max_backlog <= 0:
        raise ValueError(f"max_backlog must be positive, not {max_backlog}")
    reliable = policy == "reliable"
    if reliable or not isinstance(clients, Collection):
        # A snapshot: a reliable result iterates the connections again when
        # awaited, by which time the caller's set of connections (changed
        # by every connection that comes or goes) may have changed.
        clients = tuple(clients)
    return send_frames(clients, opcode, message, reliable, max_backlog)


def send_frames(
    clients: Collection[WebSocketClient],
    opcode: int,
    payload: Union[bytes, bytearray, memoryview, str],
    reliable: bool,
    max_backlog: int,
) -> BroadcastResult:
    """``broadcast`` with checked arguments; a text payload may be UTF-8 bytes
    (the pub/sub hub relays text without decoding it)."""
    # The frames encoded so far, by the key of the connections that can
    # share each; the last one is at hand, as most connections share it.
    frames: Dict[Hashable, bytes] = {}
    last_key: Hashable = None
    frame = b""
    size = len(payload)
    sent = 0
    skipped: Optional[List[WebSocketClient]] = None
    closed: Optional[List[WebSocketClient]] = None
    for client in clients:
        if not client._is_open():
            continue
        if client._is_over_write_limit():
            if not reliable:
                client._missed_broadcast()
                if skipped is None:
                    skipped = []
                skipped.append(client)
                continue
            if client._unsent_bytes() > max_backlog:
                client._close_overloaded("the client does not read fast enough")
                if closed is None:
                    closed = []
                closed.append(client)
                continue
        key = client._frame_sharing_key(size)
        if key is None:
            client._write(client._encode_frame(opcode, payload))
        else:
            if key != last_key:
                last_key = key
                cached = frames.get(key)
                if cached is None:
                    cached = frames[key] = client._encode_frame(opcode, payload)
                frame = cached
            client._write(frame)
        sent += 1
    result = BroadcastResult(sent)
    result.sent = sent
    result.skipped = () if skipped is None else tuple(skipped)
    result.closed = () if closed is None else tuple(closed)
    result._clients = clients if reliable else ()
    return result
