"""Handing a connection from the HTTP protocol of its handshake to the next one.

Both sides of a WebSocket upgrade end the same way: the HTTP protocol (the
server's request parser, the client's response reader) gives its transport to
the WebSocket protocol, together with the bytes that arrived after the
handshake, which belong to the new protocol.
"""

from __future__ import annotations

import asyncio


def hand_over(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    leftover: bytes,
    *,
    reading_paused: bool,
    writing_paused: bool,
) -> None:
    """Make ``protocol`` the transport's protocol, as if it had been from the start.

    Reading, if the old protocol paused it, is resumed before
    ``connection_made``, so that the new protocol may pause it again; a
    write buffer over its high-water mark is reported with ``pause_writing``
    (the transport reports crossing the mark only once); then ``leftover``
    arrives the way a read would have brought it.
    """
    transport.set_protocol(protocol)
    if reading_paused:
        transport.resume_reading()
    protocol.connection_made(transport)
    if writing_paused:
        protocol.pause_writing()
    if leftover:
        _replay(transport, protocol, leftover)


def _replay(transport: asyncio.Transport, protocol: asyncio.BaseProtocol, data: bytes) -> None:
    if not isinstance(protocol, asyncio.BufferedProtocol):
        protocol.data_received(data)  # type: ignore[attr-defined]
        return
    view = memoryview(data)
    # What is left once the protocol has closed the connection could never
    # have been read: drop it as the transport would.
    while view and not transport.is_closing():
        buffer = memoryview(protocol.get_buffer(len(view)))
        count = min(len(buffer), len(view))
        if count == 0:
            raise RuntimeError("get_buffer() returned an empty buffer")
        buffer[:count] = view[:count]
        protocol.buffer_updated(count)
        view = view[count:]
