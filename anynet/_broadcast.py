"""One message to many connections: ``anynet.websocket.broadcast``.

A server's frames are not masked, so a message to many server-side
connections is encoded into one frame and the same bytes are written to
each; a client-side connection masks every frame with a key of its own, so
it is encoded for each. Only the connection methods grouped under "What
broadcast asks of a connection" in ``anynet._ws_protocol`` are used here.
"""

from __future__ import annotations

from typing import Iterable, Optional, Union

from anynet._events import OP_BINARY, OP_TEXT
from anynet._ws_protocol import WebSocketClient


def broadcast(clients: Iterable[WebSocketClient], message: Union[bytes, str]) -> int:
    """Send ``message`` to every open connection in ``clients`` without waiting.

    A server frame is not masked, so the frame is encoded once and written
    to every server-side connection. Returns how many connections were sent
    the message: a connection that is closing, or whose send buffer is over
    its ``write_limit`` (a peer that does not keep up), is skipped rather
    than allowed to buffer without bound.
    """
    if isinstance(message, str):
        opcode = OP_TEXT
    elif isinstance(message, (bytes, bytearray, memoryview)):
        opcode = OP_BINARY
    else:
        raise TypeError(f"broadcast() takes bytes or str, not {type(message).__name__}")
    frame: Optional[bytes] = None
    sent = 0
    for client in clients:
        if not client._is_open() or client._is_over_write_limit():
            continue
        if client._masks_frames():
            # A client frame needs a fresh mask every time.
            client._write(client._encode_frame(opcode, message))
        else:
            if frame is None:
                frame = client._encode_frame(opcode, message)
            client._write(frame)
        sent += 1
    return sent
