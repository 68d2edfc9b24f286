"""Failing a connection ends TCP cleanly: the peer reads our Close, then the end.

When anynet fails a connection (an oversized message, a protocol violation,
invalid UTF-8, a keepalive timeout) the peer may still be sending. Closing the
socket with its bytes unread would make the kernel reset the connection, and
the reset can overtake the Close frame. Each case runs many times against a
raw peer that keeps sending until it reads the Close: the peer must read the
whole Close frame and then the end of the stream, never ``ConnectionResetError``.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from anynet import websocket
from rawpeer import accept_upgrade, masked_frame, read_frame, read_head, upgrade_request
from support import TIMEOUT

TRIES = 50
# The TLS handshake makes each try slower.
TLS_TRIES = 20

# Valid frames the peer keeps sending after the one that fails the connection.
FLOOD = masked_frame(0x2, b"f" * 16 * 1024)

# name: (server options, what the peer sends first, the close code it must read)
FAILURES = {
    "message too big": (dict(max_message_size=1024), masked_frame(0x2, b"x" * 64 * 1024), 1009),
    "protocol error": ({}, masked_frame(0x3, b"reserved opcode"), 1002),
    "invalid UTF-8": ({}, masked_frame(0x1, b"\xff\xfe"), 1007),
    # A peer that sends but never answers the keepalive ping.
    "keepalive timeout": (dict(ping_interval=0.001, ping_timeout=0.001), FLOOD, 1011),
}


def failing_server(options, context=None, **overrides):
    """A server whose handler reads everything; the close codes it saw are in ``codes``."""
    codes = []

    async def read_all(client):
        try:
            async for _ in client:
                pass
        except websocket.ConnectionClosed as closed:
            codes.append(closed.code)

    options = {"ping_interval": None, **options, **overrides}
    return websocket.serve(read_all, "127.0.0.1", 0, context, **options), codes


async def fail_while_sending(server, first_frame, ssl=None):
    """Send ``first_frame`` and keep sending until the Close arrives, as a
    browser does; then read to the end of the stream. Returns the close code.

    Over TLS, which cannot half-close, the server waits for the peer to end
    the connection: the peer closes once it has read the Close, as a browser
    does when the server has not closed within its own closing timeout.
    """
    host, port = server.local_address()
    reader, writer = await asyncio.open_connection(
        host, port, ssl=ssl, server_hostname="localhost" if ssl else None
    )
    try:
        writer.write(upgrade_request()[0])
        status, _ = await read_head(reader)
        assert status == 101
        closing = False

        async def keep_sending():
            writer.write(first_frame)
            while not closing:
                writer.write(FLOOD)
                await writer.drain()

        sending = asyncio.ensure_future(keep_sending())
        try:
            opcode, payload = await read_frame(reader)
            while opcode != 0x8:  # the keepalive's pings
                opcode, payload = await read_frame(reader)
        finally:
            closing = True
            await asyncio.wait_for(sending, TIMEOUT)
        if ssl is None:
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
    return struct.unpack("!H", payload[:2])[0]


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_a_failed_connection_ends_with_the_close_frame_and_no_reset(failure):
    options, first_frame, code = FAILURES[failure]
    serving, codes = failing_server(options)
    async with serving as server:
        for _ in range(TRIES):
            assert await fail_while_sending(server, first_frame) == code
    assert codes == [code] * TRIES


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_a_failed_tls_connection_ends_with_the_close_frame_and_no_reset(failure, pki):
    options, first_frame, code = FAILURES[failure]
    serving, codes = failing_server(options, pki.server_context())
    client_context = pki.client_context().get(server=False)
    async with serving as server:
        for _ in range(TLS_TRIES):
            assert await fail_while_sending(server, first_frame, client_context) == code
    assert codes == [code] * TLS_TRIES


def test_bytes_after_a_failure_cost_the_reader_no_memory(framing):
    reader = framing.FrameReader(False, max_message_size=1024)
    [error] = reader.feed(masked_frame(0x2, b"x" * 2048)[:1000])
    assert error.code == 1009
    for _ in range(100):
        space = reader.get_buffer(65536)
        assert reader.buffer_size == 0
        space[:] = b"\xff" * len(space)
        assert reader.buffer_updated(len(space)) == []


def test_a_stopped_reader_drops_what_it_holds_and_parses_nothing_more(framing):
    reader = framing.FrameReader(False)
    assert reader.feed(masked_frame(0x2, b"x" * 2048)[:1000]) == []
    assert reader.buffer_size > 0
    reader.stop()
    assert reader.buffer_size == 0
    assert reader.feed(masked_frame(0x2, b"y")) == []
    space = reader.get_buffer(65536)
    frame = masked_frame(0x2, b"z")
    space[: len(frame)] = frame
    assert reader.buffer_updated(len(frame)) == []
    assert reader.buffer_size == 0


async def test_a_cancelled_connect_block_closes_cleanly_while_the_server_sends():
    # A cancelled block cannot wait for the closing handshake, but the close
    # still runs on its own: Close 1001, then the client discards what the
    # server still sends until the server ends TCP; closing with those bytes
    # unread would reset the connection under the server's feet.
    outcomes = asyncio.Queue()
    flood = masked_frame(0x2, b"f" * 16 * 1024, mask=False)

    async def flooding_server(reader, writer):
        writer.write(await accept_upgrade(reader))
        closing = False

        async def keep_sending():
            while not closing:
                writer.write(flood)
                await writer.drain()

        sending = asyncio.ensure_future(keep_sending())
        try:
            opcode, payload = await read_frame(reader)
            closing = True
            await asyncio.wait_for(sending, TIMEOUT)
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), TIMEOUT)
            outcomes.put_nowait((opcode, payload, rest))
        except ConnectionError as error:
            sending.cancel()
            outcomes.put_nowait(error)
        finally:
            writer.close()

    server = await asyncio.start_server(flooding_server, "127.0.0.1", 0)
    url = "ws://127.0.0.1:%d/" % server.sockets[0].getsockname()[1]
    try:
        for _ in range(TRIES):
            entered = asyncio.Event()

            async def use_until_cancelled():
                async with websocket.connect(url, ping_interval=None):
                    entered.set()
                    await asyncio.get_running_loop().create_future()

            task = asyncio.ensure_future(use_until_cancelled())
            await asyncio.wait_for(entered.wait(), TIMEOUT)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            outcome = await asyncio.wait_for(outcomes.get(), TIMEOUT)
            assert outcome == (0x8, struct.pack("!H", 1001), b"")
    finally:
        server.close()
        await server.wait_closed()
