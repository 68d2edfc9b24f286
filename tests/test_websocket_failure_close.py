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

import pytest

from anynet import websocket
from rawpeer import accept_upgrade, close_code, masked_frame, read_frame, read_head, upgrade_request
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
    """Send ``first_frame`` and keep sending until the Close arrives, then
    answer it, as a browser does, and read to the end of the stream, which
    the server must end. Returns the close code.

    After a violation of the framing itself (1002) the server cannot find
    the answer among what follows: it half-closes instead, and over TLS,
    which cannot half-close, it waits for the peer to end the connection,
    as a browser does when the server has not closed within its own closing
    timeout.
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
        code = close_code(payload)
        writer.write(masked_frame(0x8, payload[:2]))
        if ssl is None or code != 1002:
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), TIMEOUT)
    return code


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


def feed_in_pieces(reader, data, piece):
    """Feed ``data`` as reads of ``piece`` bytes through get_buffer/buffer_updated."""
    events = []
    start = 0
    while start < len(data):
        space = reader.get_buffer(piece)
        chunk = data[start : start + min(piece, len(space))]
        space[: len(chunk)] = chunk
        events += reader.buffer_updated(len(chunk))
        assert reader.buffer_size == 0
        start += len(chunk)
    return events


# What a peer sends after our Close: the rest of its traffic, then its answer.
TRAFFIC_THEN_CLOSE = (
    masked_frame(0x9, b"ping")
    + masked_frame(0x2, b"d" * 70000)
    + masked_frame(0x1, b"text", fin=False)
    + masked_frame(0x0, b"more")
    + masked_frame(0x8, b"\x03\xe8bye")
)


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_after_an_oversized_message_the_peers_close_is_found_without_buffering(framing, piece):
    oversized = masked_frame(0x2, b"x" * 64 * 1024)
    reader = framing.FrameReader(False, max_message_size=1024)
    [error] = reader.feed(oversized[:3000])
    assert error.code == 1009
    assert reader.seek_close() == []
    assert reader.seeking
    events = feed_in_pieces(reader, oversized[3000:] + TRAFFIC_THEN_CLOSE, piece)
    assert [(event.code, event.reason) for event in events] == [(1000, "bye")]
    assert reader.closed and not reader.seeking


@pytest.mark.parametrize(
    "failing",
    [
        masked_frame(0x2, b"x" * 2048),  # over the limit, and whole in one read
        masked_frame(0x1, b"\xff\xfe"),  # invalid UTF-8 in one frame
        masked_frame(0x1, b"ok", fin=False) + masked_frame(0x0, b"\xc0\xaf"),  # in a fragment
    ],
)
def test_a_close_that_came_with_the_failure_is_found_at_once(framing, failing):
    reader = framing.FrameReader(False, max_message_size=1024)
    [error] = reader.feed(failing + TRAFFIC_THEN_CLOSE)
    assert error.code in (1007, 1009)
    [close] = reader.seek_close()
    assert (close.code, close.reason) == (1000, "bye")


def test_invalid_utf8_in_the_middle_of_a_frame_keeps_its_boundaries(framing):
    text = masked_frame(0x1, b"\xff" + b"a" * 100000)
    reader = framing.FrameReader(False)
    [error] = reader.feed(text[:5000])
    assert error.code == 1007
    assert reader.seek_close() == []
    [close] = feed_in_pieces(reader, text[5000:] + TRAFFIC_THEN_CLOSE, 1000)
    assert close.code == 1000


def test_a_healthy_reader_drops_the_frame_it_is_in_to_find_the_close(framing):
    # A keepalive timeout fails a connection whose reader is in the middle of a frame.
    message = masked_frame(0x2, b"m" * 200000)
    reader = framing.FrameReader(False)
    assert reader.feed(message[:150000]) == []
    assert reader.seek_close() == []
    [close] = feed_in_pieces(reader, message[150000:] + TRAFFIC_THEN_CLOSE, 65536)
    assert close.code == 1000


def test_after_a_framing_violation_nothing_can_be_found(framing):
    reader = framing.FrameReader(False)
    [error] = reader.feed(masked_frame(0x3, b"reserved opcode") + TRAFFIC_THEN_CLOSE)
    assert error.code == 1002
    assert reader.seek_close() is None
    assert reader.closed and not reader.seeking
    assert feed_in_pieces(reader, TRAFFIC_THEN_CLOSE, 100) == []


@pytest.mark.parametrize(
    "garbage",
    [
        masked_frame(0x2, b"x", rsv=4),  # reserved bits
        masked_frame(0x2, b"x", mask=False),  # a client's frame unmasked
        b"\x88\xfe\xff\xff" + b"\x00" * 4,  # a Close that claims 65535 bytes
        masked_frame(0x8, b"\x03\xe8", fin=False),  # a fragmented Close
    ],
)
def test_what_cannot_be_a_frame_ends_the_search(framing, garbage):
    reader = framing.FrameReader(False, max_message_size=1024)
    reader.feed(masked_frame(0x2, b"x" * 2048))
    assert reader.seek_close() == []
    [error] = feed_in_pieces(reader, garbage + TRAFFIC_THEN_CLOSE, 3)
    assert error.code == 1002
    assert reader.closed and not reader.seeking


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
            outcomes.put_nowait((opcode, close_code(payload), rest))
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
            assert outcome == (0x8, 1001, b"")
    finally:
        server.close()
        await server.wait_closed()
