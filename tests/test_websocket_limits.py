"""Limits and failure: message size, flow control both ways, keepalive, protocol errors."""

from __future__ import annotations

import asyncio
import os

import pytest

from anynet import websocket
from rawpeer import accept_upgrade, close_code, masked_frame, raw_upgrade, read_frame
from support import TIMEOUT, url_of

# Random, so that compression (on by default) leaves it as large.
CHUNK = os.urandom(16 * 1024)


async def send_until_blocked(client, message, limit=100_000):
    """Send ``message`` until a send does not complete; return how many completed."""
    for count in range(limit):
        try:
            await asyncio.wait_for(client.send(message), 0.5)
        except asyncio.TimeoutError:
            return count
    raise AssertionError(f"{limit} sends never blocked")


async def test_oversized_message_is_refused_with_1009():
    async def read(client):
        await client.recv()
        await client.recv()

    async with websocket.serve(read, "127.0.0.1", 0, max_message_size=1000) as server:
        async with websocket.connect(url_of(server)) as client:
            await client.send(b"x" * 1000)
            await client.send_text("y" * 1001)
            with pytest.raises(websocket.ConnectionClosedError) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert caught.value.code == 1009


async def test_unlimited_message_size():
    async def echo_one(client):
        await client.send(await client.recv())

    big = os.urandom(3 << 20)
    async with websocket.serve(echo_one, "127.0.0.1", 0, max_message_size=None) as server:
        async with websocket.connect(url_of(server), max_message_size=None) as client:
            await client.send(big)
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == big


async def test_a_handler_that_does_not_read_pauses_the_socket_and_sender():
    connections = asyncio.Queue()
    start_reading = asyncio.Event()
    all_received = asyncio.Event()
    received = []

    async def slow_reader(client):
        await connections.put(client)
        await start_reading.wait()
        while len(received) < sent:
            received.append(await client.recv())
        all_received.set()

    max_queue = 4
    async with websocket.serve(slow_reader, "127.0.0.1", 0, max_queue=max_queue) as server:
        async with websocket.connect(url_of(server)) as client:
            sent = await send_until_blocked(client, CHUNK)
            blocked_send = asyncio.ensure_future(client.send(CHUNK))
            server_side = await asyncio.wait_for(connections.get(), TIMEOUT)
            # The socket buffers hold what the sender got out; the unread
            # queue stays near max_queue (one read may overshoot it).
            assert not server_side._transport.is_reading()
            assert len(server_side._messages) <= max_queue + 16 < sent
            assert not blocked_send.done()

            sent += 1
            start_reading.set()
            await asyncio.wait_for(blocked_send, TIMEOUT)
            await asyncio.wait_for(all_received.wait(), TIMEOUT)
            assert received == [CHUNK] * sent


async def test_send_to_a_peer_that_does_not_read_blocks():
    outcome = asyncio.get_running_loop().create_future()

    async def flood(client):
        outcome.set_result(await send_until_blocked(client, CHUNK))
        await client.recv()

    async with websocket.serve(flood, "127.0.0.1", 0, write_limit=64 * 1024) as server:
        async with websocket.connect(url_of(server), max_queue=2) as client:
            sent = await asyncio.wait_for(outcome, TIMEOUT)
            assert sent > 0
            # Everything the server got out is still delivered, in order.
            for _ in range(sent):
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == CHUNK
            await client.send(b"done")


async def test_blocked_send_fails_when_the_connection_closes():
    blocked = asyncio.get_running_loop().create_future()

    async def flood_then_fail(client):
        await send_until_blocked(client, CHUNK)
        pending = asyncio.ensure_future(client.send(CHUNK))
        await asyncio.sleep(0)  # one step: the send is waiting for the buffer
        assert client._drainers and not pending.done()
        await client.close()
        try:
            await asyncio.wait_for(pending, TIMEOUT)
        except websocket.ConnectionClosed as closed:
            blocked.set_result(closed)

    async with websocket.serve(flood_then_fail, "127.0.0.1", 0) as server:
        async with websocket.connect(url_of(server), max_queue=1):
            closed = await asyncio.wait_for(blocked, TIMEOUT)
    assert isinstance(closed, websocket.ConnectionClosedError)


async def test_disconnect_fails_a_send_waiting_for_the_buffer_at_once():
    outcome = asyncio.get_running_loop().create_future()

    async def flood_then_disconnect(client):
        await send_until_blocked(client, CHUNK)
        pending = asyncio.ensure_future(client.send(CHUNK))
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(client.disconnect())
        # The peer reads nothing, so the closing handshake itself would take
        # the whole (long) disconnect_timeout; the waiting send must not.
        try:
            await asyncio.wait_for(pending, TIMEOUT)
        except websocket.ConnectionClosed as closed:
            outcome.set_result(closed)
        await closing

    async with websocket.serve(
        flood_then_disconnect, "127.0.0.1", 0, disconnect_timeout=3 * TIMEOUT
    ) as server:
        async with websocket.connect(url_of(server), max_queue=1) as client:
            closed = await asyncio.wait_for(outcome, TIMEOUT)
            await client.close()
    assert isinstance(closed, websocket.ConnectionClosedOK)


async def test_keepalive_keeps_a_paused_connection_whose_pong_is_unread():
    total = asyncio.get_running_loop().create_future()

    async def read_late(client):
        # Keepalive rounds pass while the queue is full and reading paused.
        for _ in range(await total):
            await client.recv()
        await client.send(b"all read")

    # The pause (at least the 0.5 s send_until_blocked waits) outlasts many
    # pings and their timeout; the client answers the latest ping once its
    # own writing resumes, behind the backlog the server then reads.
    options = dict(ping_interval=0.05, ping_timeout=0.5, max_queue=2)
    async with websocket.serve(read_late, "127.0.0.1", 0, **options) as server:
        async with websocket.connect(url_of(server)) as client:
            sent = await send_until_blocked(client, CHUNK)
            blocked_send = asyncio.ensure_future(client.send(CHUNK))
            await asyncio.sleep(0.3)
            total.set_result(sent + 1)
            await asyncio.wait_for(blocked_send, TIMEOUT)
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"all read"


# -- raw peers -----------------------------------------------------------------


async def test_keepalive_closes_a_silent_client_with_1011():
    closed = asyncio.get_running_loop().create_future()

    async def wait(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as error:
            closed.set_result(error.code)

    options = dict(ping_interval=0.05, ping_timeout=0.1)
    async with websocket.serve(wait, "127.0.0.1", 0, **options) as server:
        reader, writer = await raw_upgrade(server)
        try:
            # The peer reads but never answers: a ping, then the Close.
            opcode, _ = await read_frame(reader)
            assert opcode == 0x9
            opcode, payload = await read_frame(reader)
            assert opcode == 0x8
            assert close_code(payload) == 1011
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()
        assert await asyncio.wait_for(closed, TIMEOUT) == 1011


async def test_keepalive_closes_a_silent_server_with_1011():
    async def accept_and_ignore(reader, writer):
        writer.write(await accept_upgrade(reader))
        await reader.read()
        writer.close()

    silent = await asyncio.start_server(accept_and_ignore, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        async with websocket.connect(
            f"ws://127.0.0.1:{port}/", ping_interval=0.05, ping_timeout=0.1, disconnect_timeout=0.1
        ) as client:
            with pytest.raises(websocket.ConnectionClosedError) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
        assert caught.value.code == 1011
        assert "keepalive" in caught.value.reason
    finally:
        silent.close()


async def test_keepalive_spares_a_peer_that_answers():
    async def echo(client):
        async for message in client:
            await client.send(message)

    options = dict(ping_interval=0.02, ping_timeout=0.5)
    async with websocket.serve(echo, "127.0.0.1", 0, **options) as server:
        async with websocket.connect(url_of(server), **options) as client:
            await asyncio.sleep(0.2)  # several keepalive rounds in both directions
            await client.send(b"still here")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"still here"


@pytest.mark.parametrize(
    "frame, code",
    [
        (masked_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (masked_frame(0x2, b"rsv1", rsv=4), 1002),  # RSV1 without an extension
        (masked_frame(0x3, b""), 1002),  # reserved opcode
        (masked_frame(0x0, b"stray continuation"), 1002),
        (masked_frame(0x9, b"fragmented ping", fin=False), 1002),
    ],
)
async def test_protocol_violations_close_with_the_rfc_code(frame, code):
    seen = asyncio.get_running_loop().create_future()

    async def wait(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as error:
            seen.set_result(error)

    async with websocket.serve(wait, "127.0.0.1", 0, ping_interval=None) as server:
        reader, writer = await raw_upgrade(server)
        try:
            writer.write(frame)
            opcode, payload = await read_frame(reader)
            assert opcode == 0x8
            assert close_code(payload) == code
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()
        error = await asyncio.wait_for(seen, TIMEOUT)
    assert isinstance(error, websocket.ConnectionClosedError)
    assert error.code == code


async def test_peer_that_vanishes_gives_1006():
    seen = asyncio.get_running_loop().create_future()

    async def wait(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as error:
            seen.set_result((error.code, client.close_code))

    async with websocket.serve(wait, "127.0.0.1", 0, ping_interval=None) as server:
        reader, writer = await raw_upgrade(server)
        writer.close()
        assert await asyncio.wait_for(seen, TIMEOUT) == (1006, 1006)


async def test_masked_frame_from_a_server_fails_the_client_with_1002():
    close_frame = asyncio.get_running_loop().create_future()

    async def send_masked_frame(reader, writer):
        writer.write(await accept_upgrade(reader) + masked_frame(0x2, b"masked by a server"))
        close_frame.set_result(await read_frame(reader))
        writer.close()  # the server closes TCP, as the client waits for

    server = await asyncio.start_server(send_masked_frame, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with websocket.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as client:
            with pytest.raises(websocket.ConnectionClosedError) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
        assert caught.value.code == 1002
        assert client.close_code == 1002
        opcode, payload = await asyncio.wait_for(close_frame, TIMEOUT)
        assert opcode == 0x8 and close_code(payload) == 1002
    finally:
        server.close()


# -- receiving by type with the queue full of the other type -------------------


async def serve_messages(messages, **options):
    """A server that sends ``messages`` and then waits for the client to leave."""

    async def send_all(client):
        for message in messages:
            if isinstance(message, str):
                await client.send_text(message)
            else:
                await client.send(message)
        with pytest.raises(websocket.ConnectionClosed):
            await client.recv_message()

    return websocket.serve(send_all, "127.0.0.1", 0, ping_interval=None, **options)


@pytest.mark.parametrize(
    "receive, other, wanted_class",
    [("recv", "text", bytes), ("recv_text", b"binary", str)],
)
async def test_a_receive_waiting_for_a_type_the_full_queue_blocks_raises(receive, other, wanted_class):
    max_queue = 4
    queued = [other + (b"%d" if isinstance(other, bytes) else "%d") % n for n in range(2 * max_queue)]
    async with await serve_messages(queued) as server:
        async with websocket.connect(url_of(server), max_queue=max_queue, ping_interval=None) as client:
            # Waiting before the messages arrive, and called again after.
            for _ in range(2):
                with pytest.raises(websocket.MessageTypeError) as caught:
                    await asyncio.wait_for(getattr(client, receive)(), TIMEOUT)
                assert caught.value.wanted is wanted_class
                assert caught.value.queued >= max_queue
                assert "recv_message()" in str(caught.value)
            # Nothing was lost, and reading resumes as the queue is read.
            received = [await asyncio.wait_for(client.recv_message(), TIMEOUT) for _ in queued]
            assert received == queued
            await client.disconnect()


async def test_a_receive_waits_while_the_queue_has_room():
    max_queue = 4
    messages = ["t1", "t2", "t3", b"b1"]  # the binary message makes the queue full
    async with await serve_messages(messages) as server:
        async with websocket.connect(url_of(server), max_queue=max_queue, ping_interval=None) as client:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"b1"
            assert [await client.recv_text() for _ in range(3)] == ["t1", "t2", "t3"]
            await client.disconnect()


async def test_messages_after_our_close_stay_within_max_queue():
    # Once our Close is sent, reading goes on until the peer's answer (pausing
    # would hold the handshake up), so the queue is bounded by dropping: a
    # message arriving at a full queue pushes out the oldest unread one.
    max_queue, sent = 4, 50
    drained = asyncio.get_running_loop().create_future()

    async def close_then_read(client):
        await client.disconnect()
        received = []
        try:
            while True:
                received.append(await client.recv_message())
        except websocket.ConnectionClosed:
            drained.set_result(received)

    options = dict(max_queue=max_queue, ping_interval=None)
    async with websocket.serve(close_then_read, "127.0.0.1", 0, **options) as server:
        reader, writer = await raw_upgrade(server)
        for number in range(sent):
            writer.write(masked_frame(0x1, b"%d" % number))
        opcode, payload = await read_frame(reader)
        assert opcode == 0x8
        writer.write(masked_frame(0x8, payload[:2]))
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        writer.close()
        received = await asyncio.wait_for(drained, TIMEOUT)
    assert received == [str(number) for number in range(sent - max_queue, sent)]
