"""The callback path: messages delivered to ``set_message_callback``'s function
from the read path and answered with ``send_nowait``, in both roles, against
anynet, websockets and picows peers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from anynet import websocket
from support import TIMEOUT, echo

MESSAGES = [b"", b"binary", "", "text \u00e9\u20ac\U0001f600", bytes(range(256)) * 1024, "t" * 100_000]


def answer(client, message):
    if isinstance(message, bytes):
        client.send_nowait(message)
    else:
        client.send_text_nowait(message)


async def callback_echo(client):
    """The idiom the docs give: answer from the callback, and wait for the end."""
    client.set_message_callback(lambda message: answer(client, message))
    await client.wait_closed()


@contextlib.asynccontextmanager
async def anynet_server(handler=callback_echo, **options):
    options.setdefault("ping_interval", None)
    async with websocket.serve(handler, "127.0.0.1", 0, **options) as server:
        host, port = server.local_address()
        yield f"ws://{host}:{port}/"


async def send_all(client, messages):
    for message in messages:
        if isinstance(message, bytes):
            await client.send(message)
        else:
            await client.send_text(message)


async def test_server_callback_echoes_both_types_in_order():
    async with anynet_server() as url, websocket.connect(url) as client:
        await send_all(client, MESSAGES * 3)
        for message in MESSAGES * 3:
            assert await asyncio.wait_for(client.recv_message(), TIMEOUT) == message


async def test_client_callback_ping_pong_with_send_nowait():
    async with anynet_server(echo) as url, websocket.connect(url) as client:
        replies = []
        done = asyncio.get_running_loop().create_future()

        def on_message(message):
            replies.append(message)
            if len(replies) == 200:
                done.set_result(None)
            else:
                client.send_nowait(message + b".")

        client.set_message_callback(on_message)
        client.send_nowait(b"")
        await asyncio.wait_for(done, TIMEOUT)
    assert replies == [b"." * count for count in range(200)]


async def test_messages_queued_before_the_callback_is_set_come_first_in_order():
    queued = asyncio.Event()
    received = []

    async def handler(client):
        await asyncio.wait_for(queued.wait(), TIMEOUT)
        client.set_message_callback(received.append)
        await client.wait_closed()

    async with anynet_server(handler) as url, websocket.connect(url) as client:
        await send_all(client, ["one", b"two", "three"])
        # The pong comes after the server has read (and queued) all three.
        await asyncio.wait_for(client.ping(), TIMEOUT)
        queued.set()
        await client.send(b"four")
        await asyncio.wait_for(client.ping(), TIMEOUT)
        await client.disconnect()
    assert received == ["one", b"two", "three", b"four"]


async def test_receive_methods_raise_while_a_callback_is_set():
    outcome = asyncio.get_running_loop().create_future()
    back_to_the_queue = asyncio.Event()

    async def handler(client):
        waiting = asyncio.ensure_future(client.recv())
        await asyncio.sleep(0)  # let it start waiting
        client.set_message_callback(lambda message: None)
        errors = []
        for receive in (waiting, client.recv(), client.recv_text(), client.recv_message()):
            with pytest.raises(websocket.MessageCallbackSet) as raised:
                await asyncio.wait_for(receive, TIMEOUT)
            errors.append(raised.value)
        with pytest.raises(websocket.MessageCallbackSet):
            await asyncio.wait_for(client.__anext__(), TIMEOUT)
        assert all(isinstance(error, websocket.WSError) for error in errors)
        client.set_message_callback(None)
        back_to_the_queue.set()
        outcome.set_result(await asyncio.wait_for(client.recv_text(), TIMEOUT))

    async with anynet_server(handler) as url, websocket.connect(url) as client:
        await asyncio.wait_for(back_to_the_queue.wait(), TIMEOUT)
        await client.send_text("after")
        assert await asyncio.wait_for(outcome, TIMEOUT) == "after"


async def test_switching_modes_mid_stream_keeps_every_message_in_order():
    # The callback takes messages 2-4 and hands the rest back to the queue
    # itself, likely in the middle of one read.
    async def handler(client):
        log = [await client.recv_text()]
        switched_back = asyncio.Event()

        def on_message(message):
            log.append("callback " + message)
            if len(log) == 4:
                client.set_message_callback(None)
                switched_back.set()

        client.set_message_callback(on_message)
        await asyncio.wait_for(switched_back.wait(), TIMEOUT)
        while len(log) < 8:
            log.append(await asyncio.wait_for(client.recv_text(), TIMEOUT))
        await client.send_text(" | ".join(log))

    async with anynet_server(handler) as url, websocket.connect(url) as client:
        await send_all(client, [str(number) for number in range(1, 9)])
        assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == (
            "1 | callback 2 | callback 3 | callback 4 | 5 | 6 | 7 | 8"
        )


async def test_callback_exception_fails_the_connection_with_1011_and_is_logged(caplog):
    def on_message(message):
        raise RuntimeError("bad message")

    async def handler(client):
        client.set_message_callback(on_message)
        await client.wait_closed()

    with caplog.at_level(logging.ERROR, logger="anynet.websocket"):
        async with anynet_server(handler) as url, websocket.connect(url) as client:
            await client.send(b"boom")
            with pytest.raises(websocket.ConnectionClosedError) as raised:
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert raised.value.code == 1011
    failures = [record for record in caplog.records if "message callback failed" in record.message]
    assert failures and isinstance(failures[0].exc_info[1], RuntimeError)


async def test_callback_exception_while_draining_the_queue_fails_the_connection(caplog):
    queued = asyncio.Event()

    async def handler(client):
        await asyncio.wait_for(queued.wait(), TIMEOUT)
        client.set_message_callback(lambda message: 1 / 0)
        await client.wait_closed()
        assert client.close_code == 1011

    with caplog.at_level(logging.ERROR, logger="anynet.websocket"):
        async with anynet_server(handler) as url, websocket.connect(url) as client:
            await client.send(b"queued")
            await asyncio.wait_for(client.ping(), TIMEOUT)
            queued.set()
            with pytest.raises(websocket.ConnectionClosedError) as raised:
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert raised.value.code == 1011
    assert any("message callback failed" in record.message for record in caplog.records)


@pytest.mark.parametrize("closing_side", ["peer", "handler"])
async def test_close_while_a_callback_is_set(closing_side):
    ended = asyncio.get_running_loop().create_future()

    async def handler(client):
        def on_message(message):
            if message == "bye" and closing_side == "handler":
                asyncio.ensure_future(client.disconnect(4000, "asked to"))
            else:
                answer(client, message)

        client.set_message_callback(on_message)
        await client.wait_closed()
        ended.set_result(client.close_code)

    async with anynet_server(handler) as url, websocket.connect(url) as client:
        await client.send_text("hello")
        assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "hello"
        if closing_side == "peer":
            await client.disconnect(4001)
        else:
            await client.send_text("bye")
            with pytest.raises(websocket.ConnectionClosed):
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert await asyncio.wait_for(ended, TIMEOUT) == (4001 if closing_side == "peer" else 4000)


async def test_send_nowait_checks_its_argument_and_the_connection():
    async with anynet_server(echo) as url, websocket.connect(url) as client:
        with pytest.raises(TypeError, match="send_text_nowait"):
            client.send_nowait("text")
        with pytest.raises(TypeError, match="send_nowait"):
            client.send_text_nowait(b"bytes")
        with pytest.raises(TypeError, match="callable"):
            client.set_message_callback("not a function")
        await client.disconnect()
        with pytest.raises(websocket.ConnectionClosedOK):
            client.send_nowait(b"late")
        with pytest.raises(websocket.ConnectionClosedOK):
            client.send_text_nowait("late")


async def test_send_nowait_beyond_four_times_write_limit_closes_with_1013():
    write_limit = 64 * 1024
    chunk = os.urandom(16 * 1024)  # incompressible: compression (on by default) keeps its size
    outcome = asyncio.get_running_loop().create_future()

    async def handler(client):
        def flood(message):
            buffered = 0
            try:
                # 64 MiB: far beyond what the socket buffers of a peer that
                # reads nothing can take.
                for _ in range(4096):
                    buffered = client._transport.get_write_buffer_size()
                    client.send_nowait(chunk)
            except websocket.ConnectionClosedError as error:
                outcome.set_result((error.code, buffered))

        client.set_message_callback(flood)
        await client.wait_closed()

    async with anynet_server(handler, write_limit=write_limit, disconnect_timeout=0.5) as url:
        # max_queue=1: the client stops reading after one message.
        async with websocket.connect(url, max_queue=1, disconnect_timeout=0.5) as client:
            await client.send(b"go")
            code, buffered = await asyncio.wait_for(outcome, TIMEOUT)
            await client.close()
    assert code == 1013
    # The bound is checked before each frame: at most one frame beyond it.
    assert buffered < 4 * write_limit + len(chunk) + 14


async def test_a_peer_that_does_not_read_its_answers_stops_being_read():
    # An echo callback cannot wait for the send buffer: while it is over
    # write_limit the server reads nothing more, so the client's own sends
    # end up waiting, and the server's buffer stays bounded. Once the client
    # reads again, everything flows.
    write_limit = 32 * 1024
    chunk = b"y" * 16 * 1024
    count = 2000  # 32 MiB: more than the socket buffers of both sides hold
    server_side = asyncio.get_running_loop().create_future()

    async def handler(client):
        server_side.set_result(client)
        await callback_echo(client)

    async def until(condition):
        while not condition():
            await asyncio.sleep(0.01)

    # Flow control alone: compression off, so that 32 MiB is 32 MiB.
    async with anynet_server(handler, write_limit=write_limit, compression=None) as url:
        async with websocket.connect(
            url, max_queue=1, write_limit=write_limit, compression=None, ping_interval=None
        ) as client:
            sending = asyncio.ensure_future(send_all(client, [chunk] * count))
            server = await asyncio.wait_for(server_side, TIMEOUT)
            both_stuck = lambda: server._reading_paused and client._writing_paused  # noqa: E731
            await asyncio.wait_for(until(both_stuck), TIMEOUT)
            assert server._transport.get_write_buffer_size() <= 4 * write_limit
            assert server.close_code is None and not sending.done()
            for _ in range(count):
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == chunk
            await asyncio.wait_for(sending, TIMEOUT)


async def test_pings_are_answered_while_a_callback_is_set():
    async with anynet_server() as url:
        async with ws_connect(url) as peer:
            await asyncio.wait_for(await peer.ping(), TIMEOUT)
            await peer.send(b"after the ping")
            assert await asyncio.wait_for(peer.recv(), TIMEOUT) == b"after the ping"


async def test_websockets_client_against_callback_server():
    async with anynet_server() as url, ws_connect(url, max_size=None) as peer:
        for message in MESSAGES:
            await peer.send(message)
        for message in MESSAGES:
            assert await asyncio.wait_for(peer.recv(), TIMEOUT) == message


async def test_callback_client_against_websockets_server():
    async def websockets_echo(connection):
        async for message in connection:
            await connection.send(message)

    async with ws_serve(websockets_echo, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with websocket.connect(f"ws://127.0.0.1:{port}/") as client:
            received = []
            done = asyncio.get_running_loop().create_future()

            def on_message(message):
                received.append(message)
                if len(received) == len(MESSAGES):
                    done.set_result(None)

            client.set_message_callback(on_message)
            for message in MESSAGES:
                answer(client, message)
            await asyncio.wait_for(done, TIMEOUT)
    assert received == MESSAGES


async def test_picows_client_against_callback_server():
    picows = pytest.importorskip("picows")
    received = []
    done = asyncio.get_running_loop().create_future()

    class Listener(picows.WSListener):
        def on_ws_frame(self, transport, frame):
            if frame.msg_type == picows.WSMsgType.BINARY:
                received.append(frame.get_payload_as_bytes())
            elif frame.msg_type == picows.WSMsgType.TEXT:
                received.append(frame.get_payload_as_utf8_text())
            if len(received) == len(MESSAGES) and not done.done():
                done.set_result(None)

    async with anynet_server() as url:
        transport, _ = await picows.ws_connect(Listener, url)
        try:
            for message in MESSAGES:
                if isinstance(message, bytes):
                    transport.send(picows.WSMsgType.BINARY, message)
                else:
                    transport.send(picows.WSMsgType.TEXT, message.encode())
            await asyncio.wait_for(done, TIMEOUT)
        finally:
            transport.send_close(picows.WSCloseCode.OK)
            await asyncio.wait_for(transport.wait_disconnected(), TIMEOUT)
    assert received == MESSAGES


def taskless_echo(client):
    """The callback handler: a plain function that sets the callback and returns."""
    client.set_message_callback(lambda message: answer(client, message))


async def test_a_callback_handler_serves_with_no_task_and_leaves_the_server_set():
    async with anynet_server(taskless_echo) as url:
        async with websocket.serve(taskless_echo, "127.0.0.1", 0, ping_interval=None) as server:
            host, port = server.local_address()
            async with websocket.connect(f"ws://{host}:{port}/") as client:
                await send_all(client, MESSAGES)
                for message in MESSAGES:
                    assert await asyncio.wait_for(client.recv_message(), TIMEOUT) == message
                (served,) = server.clients
                assert all(task.get_coro().__qualname__ != "_Endpoint._run" for task in asyncio.all_tasks())
                await client.disconnect(4001)
            # The server learns of the end without a task of its own.
            ended = asyncio.get_running_loop().create_future()
            served._call_when_closed(lambda: ended.set_result(None))
            await asyncio.wait_for(ended, TIMEOUT)
            await asyncio.sleep(0)  # the callback above is called soon after the loss
            assert not server.clients
            assert served.close_code == 4001
        async with websocket.connect(url) as client:
            await client.send(b"still served")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"still served"


async def test_the_end_of_serve_closes_callback_handlers_connections_with_1001():
    async with websocket.serve(taskless_echo, "127.0.0.1", 0, ping_interval=None) as server:
        host, port = server.local_address()
        client = await websocket.connect(f"ws://{host}:{port}/")
        await client.send(b"x")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"x"
    with pytest.raises(websocket.ConnectionClosed) as closed:
        await asyncio.wait_for(client.recv(), TIMEOUT)
    assert closed.value.code == 1001


async def test_a_plain_handler_that_sets_no_callback_is_refused_or_closed_with_1011(caplog):
    def forgets(client):
        if client is None:
            client.set_message_callback(print)  # never runs: only names the method

    async with anynet_server(forgets) as url, websocket.connect(url) as client:
        with pytest.raises(websocket.ConnectionClosed) as closed:
            await asyncio.wait_for(client.recv(), TIMEOUT)
    assert closed.value.code == 1011
    assert any("sets a message callback" in record.message for record in caplog.records)
