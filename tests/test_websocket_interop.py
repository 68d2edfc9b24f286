"""anynet.websocket against other implementations: websockets and aiohttp, both roles."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

from anynet import websocket
from support import TIMEOUT, echo

try:
    import aiohttp
    from aiohttp import web
except ImportError:  # no wheels for every Python yet (free-threaded builds)
    aiohttp = web = None

needs_aiohttp = pytest.mark.skipif(aiohttp is None, reason="aiohttp is not installed")

MESSAGES = [b"", b"binary", "", "text \u00e9\u20ac\U0001f600", bytes(range(256)) * 4096, "t" * (1 << 20)]


@contextlib.asynccontextmanager
async def anynet_server(handler=echo, **options):
    options.setdefault("ping_interval", None)
    async with websocket.serve(handler, "127.0.0.1", 0, **options) as server:
        host, port = server.local_address()
        yield f"ws://{host}:{port}/"


@contextlib.asynccontextmanager
async def websockets_server(handler, **options):
    async with ws_serve(handler, "127.0.0.1", 0, **options) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@contextlib.asynccontextmanager
async def aiohttp_server(handler):
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"ws://{host}:{port}/"
    finally:
        await runner.cleanup()


async def websockets_echo(connection):
    async for message in connection:
        await connection.send(message)


async def aiohttp_echo(request):
    response = web.WebSocketResponse()
    await response.prepare(request)
    async for message in response:
        if message.type == aiohttp.WSMsgType.BINARY:
            await response.send_bytes(message.data)
        elif message.type == aiohttp.WSMsgType.TEXT:
            await response.send_str(message.data)
    return response


async def exchange_all(client):
    for message in MESSAGES:
        if isinstance(message, bytes):
            await client.send(message)
        else:
            await client.send_text(message)
    for message in MESSAGES:
        assert await asyncio.wait_for(client.recv_message(), TIMEOUT) == message


# -- anynet client against other servers ---------------------------------------


async def test_client_against_websockets_echo():
    async with websockets_server(websockets_echo) as url:
        async with websocket.connect(url) as client:
            await exchange_all(client)


@needs_aiohttp
async def test_client_against_aiohttp_echo():
    async with aiohttp_server(aiohttp_echo) as url:
        async with websocket.connect(url) as client:
            await exchange_all(client)


async def test_client_receives_fragmented_messages_from_websockets():
    async def send_fragments(connection):
        await connection.send([b"frag", b"", b"men", b"ts"])
        await connection.send(["h\u00e9", "llo ", "w\u00f6rld"])
        await connection.wait_closed()

    async with websockets_server(send_fragments) as url:
        async with websocket.connect(url) as client:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"fragments"
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "h\u00e9llo w\u00f6rld"


async def test_client_answers_pings_of_websockets_and_pings_it():
    async def ping_client(connection):
        pong = await connection.ping(b"are you there")
        await asyncio.wait_for(pong, TIMEOUT)
        await connection.send(b"pong received")
        await connection.wait_closed()

    async with websockets_server(ping_client) as url:
        async with websocket.connect(url) as client:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"pong received"
            assert await asyncio.wait_for(client.ping(), TIMEOUT) >= 0


@needs_aiohttp
async def test_client_answers_pings_of_aiohttp():
    async def ping_client(request):
        response = web.WebSocketResponse(autoping=False)
        await response.prepare(request)
        await response.ping(b"hello?")
        message = await response.receive()
        pong = (message.type, bytes(message.data))
        await response.send_bytes(repr(pong).encode())
        await response.receive()
        return response

    async with aiohttp_server(ping_client) as url:
        async with websocket.connect(url) as client:
            expected = (aiohttp.WSMsgType.PONG, b"hello?")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == repr(expected).encode()


async def test_close_code_of_websockets_server_reaches_the_client():
    async def close_with_code(connection):
        await connection.close(4002, "websockets says bye")

    async with websockets_server(close_with_code) as url:
        async with websocket.connect(url) as client:
            with pytest.raises(websocket.ConnectionClosedError) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert (caught.value.code, caught.value.reason) == (4002, "websockets says bye")
    assert client.close_code == 4002


@needs_aiohttp
async def test_close_code_of_aiohttp_server_reaches_the_client():
    async def close_with_code(request):
        response = web.WebSocketResponse()
        await response.prepare(request)
        await response.close(code=4004, message=b"aiohttp says bye")
        return response

    async with aiohttp_server(close_with_code) as url:
        async with websocket.connect(url) as client:
            with pytest.raises(websocket.ConnectionClosedError) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert (caught.value.code, caught.value.reason) == (4004, "aiohttp says bye")


async def test_client_close_code_reaches_websockets_server():
    seen = asyncio.get_running_loop().create_future()

    async def record_close(connection):
        await connection.wait_closed()
        seen.set_result((connection.close_code, connection.close_reason))

    async with websockets_server(record_close) as url:
        async with websocket.connect(url) as client:
            await client.disconnect(4003, "anynet says bye")
        assert await asyncio.wait_for(seen, TIMEOUT) == (4003, "anynet says bye")
    assert client.close_code == 4003


async def test_subprotocol_chosen_by_websockets_server():
    async with websockets_server(websockets_echo, subprotocols=["v2", "v1"]) as url:
        async with websocket.connect(url, protocols=["v1", "v2"]) as client:
            assert client.subprotocol in ("v1", "v2")


async def test_websockets_server_refusal_is_a_handshake_error():
    def refuse(connection, request):
        return connection.respond(401, "who are you?\n")

    async with websockets_server(websockets_echo, process_request=refuse) as url:
        with pytest.raises(websocket.HandshakeError) as caught:
            async with websocket.connect(url):
                pass
    assert caught.value.status == 401


async def test_client_refuses_an_oversized_message_from_websockets_with_1009():
    seen = asyncio.get_running_loop().create_future()

    async def send_big(connection):
        await connection.send(b"x" * 2048)
        await connection.wait_closed()
        seen.set_result(connection.close_code)

    async with websockets_server(send_big) as url:
        async with websocket.connect(url, max_message_size=1024) as client:
            with pytest.raises(websocket.ConnectionClosedError) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
        assert caught.value.code == 1009
        assert await asyncio.wait_for(seen, TIMEOUT) == 1009


# -- other clients against the anynet server -----------------------------------


async def test_websockets_client_against_anynet_echo():
    async with anynet_server() as url:
        async with ws_connect(url, max_size=None) as connection:
            for message in MESSAGES:
                await connection.send(message)
                assert await asyncio.wait_for(connection.recv(), TIMEOUT) == message


@needs_aiohttp
async def test_aiohttp_client_against_anynet_echo():
    async with anynet_server() as url, aiohttp.ClientSession() as session:
        async with session.ws_connect(url, max_msg_size=0) as connection:
            for message in MESSAGES:
                if isinstance(message, bytes):
                    await connection.send_bytes(message)
                else:
                    await connection.send_str(message)
                reply = await asyncio.wait_for(connection.receive(), TIMEOUT)
                assert reply.data == message


async def test_server_receives_fragmented_messages_from_websockets():
    async with anynet_server() as url:
        async with ws_connect(url) as connection:
            await connection.send([b"a", b"b", b"", b"c"])
            assert await asyncio.wait_for(connection.recv(), TIMEOUT) == b"abc"
            await connection.send(["\u00e9t\u00e9", " ", "\U0001f600"])
            assert await asyncio.wait_for(connection.recv(), TIMEOUT) == "\u00e9t\u00e9 \U0001f600"


@needs_aiohttp
async def test_server_answers_pings_of_websockets_and_aiohttp():
    async with anynet_server() as url:
        async with ws_connect(url) as connection:
            latency = await asyncio.wait_for(await connection.ping(), TIMEOUT)
            assert latency >= 0
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, autoping=False) as connection:
                await connection.ping(b"ping?")
                reply = await asyncio.wait_for(connection.receive(), TIMEOUT)
                assert reply.type == aiohttp.WSMsgType.PONG
                assert reply.data == b"ping?"


async def test_server_pings_a_websockets_client():
    async def ping_it(client):
        await client.send_text(str(await client.ping()))

    async with anynet_server(ping_it) as url:
        async with ws_connect(url) as connection:
            assert float(await asyncio.wait_for(connection.recv(), TIMEOUT)) >= 0


async def test_close_codes_between_websockets_client_and_anynet_server():
    seen = asyncio.get_running_loop().create_future()

    async def record_close(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as closed:
            seen.set_result((closed.code, closed.reason))

    async with anynet_server(record_close) as url:
        async with ws_connect(url) as connection:
            await connection.close(4005, "from websockets")
        assert await asyncio.wait_for(seen, TIMEOUT) == (4005, "from websockets")

    async def close_with_code(client):
        await client.disconnect(4006, "from anynet")

    async with anynet_server(close_with_code) as url:
        async with ws_connect(url) as connection:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(connection.recv(), TIMEOUT)
            assert (connection.close_code, connection.close_reason) == (4006, "from anynet")


@needs_aiohttp
async def test_close_codes_between_aiohttp_client_and_anynet_server():
    seen = asyncio.get_running_loop().create_future()

    async def record_close(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as closed:
            seen.set_result((closed.code, closed.reason))

    async with anynet_server(record_close) as url, aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as connection:
            await connection.close(code=4007, message=b"from aiohttp")
        assert await asyncio.wait_for(seen, TIMEOUT) == (4007, "from aiohttp")

    async def close_with_code(client):
        await client.disconnect(4008, "from anynet")

    async with anynet_server(close_with_code) as url, aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as connection:
            reply = await asyncio.wait_for(connection.receive(), TIMEOUT)
            assert reply.type == aiohttp.WSMsgType.CLOSE
            assert (reply.data, reply.extra) == (4008, "from anynet")


@needs_aiohttp
async def test_subprotocol_with_websockets_and_aiohttp_clients():
    async with anynet_server(protocol="chat") as url:
        async with ws_connect(url, subprotocols=["other", "chat"]) as connection:
            assert connection.subprotocol == "chat"
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, protocols=("chat",)) as connection:
                assert connection.protocol == "chat"
        with pytest.raises(websockets.InvalidStatus) as caught:
            async with ws_connect(url, subprotocols=["other"]):
                pass
        assert caught.value.response.status_code == 400


@needs_aiohttp
async def test_server_refuses_an_oversized_message_with_1009():
    async with anynet_server(max_message_size=1000) as url:
        async with ws_connect(url) as connection:
            await connection.send(b"x" * 1000)
            assert await asyncio.wait_for(connection.recv(), TIMEOUT) == b"x" * 1000
            await connection.send(b"x" * 1001)
            with pytest.raises(websockets.ConnectionClosedError):
                await asyncio.wait_for(connection.recv(), TIMEOUT)
            assert connection.close_code == 1009
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url) as connection:
                await connection.send_str("y" * 2000)
                reply = await asyncio.wait_for(connection.receive(), TIMEOUT)
                assert reply.type == aiohttp.WSMsgType.CLOSE
                assert reply.data == 1009
