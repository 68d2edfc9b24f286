"""permessage-deflate over real connections: negotiation, the wire, misuse, peers."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import zlib

import aiohttp
from aiohttp import web
import pytest
import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from anynet import websocket
from anynet._deflate_negotiation import DeflateParameters
from anynet.websocket import PerMessageDeflate
from rawpeer import masked_frame, read_head, read_whole_frame, upgrade_request
from support import TIMEOUT, echo, url_of

GAME_STATE = json.dumps({"players": [{"id": i, "x": i * 1.5, "y": 2.0 * i, "hp": 100} for i in range(20)]})
MESSAGES = [GAME_STATE, GAME_STATE.encode(), "é" * 500, os.urandom(3000), "short", b"", "", b"x" * 200_000]
# What anynet servers agree on with every client by default.
SERVER_DEFAULT = DeflateParameters(True, True, 15, 15)


def deflate(data: bytes, bits: int = 15) -> bytes:
    """A message compressed on its own, as a peer would, without the tail."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -bits)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


async def exchange(client, messages=MESSAGES) -> None:
    for message in messages:
        if isinstance(message, bytes):
            await client.send(message)
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == message
        else:
            await client.send_text(message)
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == message


# ----------------------------------------------------------------------
# anynet with anynet


async def test_both_sides_compress_by_default():
    async with websocket.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        async with websocket.connect(url_of(server)) as client:
            assert client.deflate == SERVER_DEFAULT
            await exchange(client)
            (connection,) = server.clients
            assert connection.deflate == SERVER_DEFAULT


@pytest.mark.parametrize("side", ["server", "client"])
async def test_either_side_can_turn_compression_off(side):
    options = {side: {"compression": None}}
    async with websocket.serve(echo, "127.0.0.1", 0, **options.get("server", {})) as server:
        async with websocket.connect(url_of(server), **options.get("client", {})) as client:
            assert client.deflate is None
            await exchange(client)


@pytest.mark.parametrize(
    "server_settings, client_settings, agreed",
    [
        (PerMessageDeflate(), PerMessageDeflate(), DeflateParameters()),
        (PerMessageDeflate(server_max_window_bits=10), PerMessageDeflate(), DeflateParameters(False, False, 10, 15)),
        (PerMessageDeflate(client_max_window_bits=9), PerMessageDeflate(), DeflateParameters(False, False, 15, 9)),
        (
            PerMessageDeflate(),
            PerMessageDeflate(True, True, 8, 8),
            DeflateParameters(True, True, 8, 8),
        ),
        (
            PerMessageDeflate(level=9, min_size=0),
            PerMessageDeflate(server_max_window_bits=12, client_max_window_bits=11, level=0),
            DeflateParameters(False, False, 12, 11),
        ),
    ],
)
async def test_the_parameters_both_sides_ask_for_are_used(server_settings, client_settings, agreed):
    async with websocket.serve(echo, "127.0.0.1", 0, compression=server_settings) as server:
        async with websocket.connect(url_of(server), compression=client_settings) as client:
            assert client.deflate == agreed
            # Twice: the second round runs on kept contexts where they are kept.
            await exchange(client, MESSAGES * 2)


async def test_compression_is_checked_at_the_call():
    with pytest.raises(TypeError, match="compression must be"):
        async with websocket.connect("ws://127.0.0.1:1/", compression="gzip"):
            pass
    with pytest.raises(ValueError, match="server_max_window_bits"):
        async with websocket.serve(echo, "127.0.0.1", 0, compression=PerMessageDeflate(server_max_window_bits=7)):
            pass
    with pytest.raises(ValueError, match="min_size"):
        async with websocket.serve(echo, "127.0.0.1", 0, compression=PerMessageDeflate(min_size=-1)):
            pass


# ----------------------------------------------------------------------
# On the wire, against a raw client


async def raw_client(server, extensions="permessage-deflate; client_max_window_bits"):
    reader, writer = await asyncio.open_connection(*server.local_address()[:2])
    request, _ = upgrade_request(**{"Sec-WebSocket-Extensions": extensions})
    writer.write(request)
    status, headers = await read_head(reader)
    assert status == 101
    return reader, writer, headers.get("sec-websocket-extensions")


async def close_code(reader) -> int:
    while True:
        first, payload = await read_whole_frame(reader)
        if first & 0x0F == 0x8:
            return struct.unpack("!H", payload[:2])[0]


def inflate(payload: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


async def test_what_the_server_sends_on_the_wire():
    sent = asyncio.get_running_loop().create_future()

    async def handler(client):
        await client.send_text(GAME_STATE)
        await client.send_text("tiny")  # under min_size: as it is
        await client.send(GAME_STATE.encode(), compress=False)
        await client.send_text(GAME_STATE, compress=False)
        await client.ping()
        await sent

    async with websocket.serve(handler, "127.0.0.1", 0) as server:
        reader, writer, answer = await raw_client(server)
        assert answer == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        first, payload = await read_whole_frame(reader)
        assert first == 0xC1 and len(payload) < len(GAME_STATE) // 2
        assert inflate(payload) == GAME_STATE.encode()
        assert await read_whole_frame(reader) == (0x81, b"tiny")
        assert await read_whole_frame(reader) == (0x82, GAME_STATE.encode())
        assert await read_whole_frame(reader) == (0x81, GAME_STATE.encode())
        first, payload = await read_whole_frame(reader)
        assert first == 0x89  # control frames are never compressed
        writer.write(masked_frame(0xA, payload))
        sent.set_result(None)
        assert await close_code(reader) == 1000
        writer.close()


async def test_compressed_messages_whole_and_fragmented_arrive():
    received = []
    done = asyncio.get_running_loop().create_future()

    async def handler(client):
        for _ in range(3):
            received.append(await client.recv_message())
        done.set_result(None)

    async with websocket.serve(handler, "127.0.0.1", 0) as server:
        reader, writer, _ = await raw_client(server)
        compressed = deflate(GAME_STATE.encode())
        writer.write(masked_frame(0x1, compressed, rsv=4))
        # Fragmented: RSV1 on the first frame only, a ping in between.
        pieces = [compressed[:10], compressed[10:20], compressed[20:]]
        writer.write(masked_frame(0x2, pieces[0], fin=False, rsv=4))
        writer.write(masked_frame(0x9, b"ping"))
        writer.write(masked_frame(0x0, pieces[1], fin=False))
        writer.write(masked_frame(0x0, pieces[2]))
        # A message the client chose not to compress.
        writer.write(masked_frame(0x1, b"plain"))
        await asyncio.wait_for(done, TIMEOUT)
        assert received == [GAME_STATE, GAME_STATE.encode(), "plain"]
        writer.close()


@pytest.mark.parametrize(
    "frames, extensions, code",
    [
        # RSV1 without permessage-deflate negotiated.
        ([masked_frame(0x1, deflate(b"hello"), rsv=4)], "", 1002),
        # RSV1 on a continuation frame.
        ([masked_frame(0x1, deflate(b"hello")[:2], fin=False, rsv=4), masked_frame(0x0, b"x", rsv=4)], None, 1002),
        # RSV1 on a control frame.
        ([masked_frame(0x9, b"", rsv=4)], None, 1002),
        # RSV2 and RSV3 stay reserved.
        ([masked_frame(0x1, deflate(b"hello"), rsv=2)], None, 1002),
        ([masked_frame(0x1, deflate(b"hello"), rsv=6)], None, 1002),
        # Not DEFLATE data.
        ([masked_frame(0x2, b"\xff\xff\xff", rsv=4)], None, 1007),
        # Valid DEFLATE, invalid UTF-8 once inflated.
        ([masked_frame(0x1, deflate(b"\xed\xa0\x80"), rsv=4)], None, 1007),
        # 16 KiB that inflate to 16 MiB, over the 1 MiB limit.
        ([masked_frame(0x2, deflate(bytes(16 << 20)), rsv=4)], None, 1009),
    ],
)
async def test_misuse_of_compression_fails_the_connection(frames, extensions, code):
    async with websocket.serve(echo, "127.0.0.1", 0) as server:
        if extensions is None:
            reader, writer, answer = await raw_client(server)
            assert answer is not None
        else:
            reader, writer, answer = await raw_client(server, extensions)
            assert answer is None
        for frame in frames:
            writer.write(frame)
        assert await asyncio.wait_for(close_code(reader), TIMEOUT) == code
        writer.close()


# ----------------------------------------------------------------------
# Broadcast


class Recording:
    """A server-side connection seen by broadcast, noting the frames written to it."""

    def __init__(self, connection):
        self.connection = connection
        self.frames = []

    def __getattr__(self, name):
        return getattr(self.connection, name)

    def _write(self, frame):
        self.frames.append(frame)
        self.connection._write(frame)


async def test_broadcast_compresses_once_for_receivers_that_agree():
    count = 5
    connected = asyncio.get_running_loop().create_future()
    connections = []

    async def wait(client):
        connections.append(client)
        if len(connections) == count:
            connected.set_result(None)
        await client.recv()

    async with websocket.serve(wait, "127.0.0.1", 0, ping_interval=None) as server:
        settings = [{}, {}, {}, {"compression": None}, {"compression": PerMessageDeflate(server_max_window_bits=10)}]
        clients = [websocket.connect(url_of(server), **options) for options in settings]
        opened = [await client.__aenter__() for client in clients]
        try:
            await asyncio.wait_for(connected, TIMEOUT)
            recordings = [Recording(connection) for connection in connections]
            assert websocket.broadcast(recordings, GAME_STATE) == count
            frames = [recording.frames[0] for recording in recordings]
            by_window = {}
            for recording, frame in zip(recordings, frames):
                window = None if recording.deflate is None else recording.deflate.server_max_window_bits
                by_window.setdefault(window, set()).add(id(frame))
            # One frame per kind of receiver, each compressed (or not) once.
            assert {window: len(ids) for window, ids in by_window.items()} == {15: 1, None: 1, 10: 1}
            assert len({id(frame) for frame in frames}) == 3
            assert sorted(frame[0] for frame in frames) == [0x81] + [0xC1] * 4
            for client in opened:
                assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == GAME_STATE
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)


# ----------------------------------------------------------------------
# Other libraries


@pytest.mark.parametrize(
    "factory",
    [
        None,  # websockets' default: windows of 12 bits, context takeover
        ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=10),
        ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True),
    ],
)
@pytest.mark.parametrize("settings", [None, PerMessageDeflate(), PerMessageDeflate(server_max_window_bits=11)])
async def test_websockets_client(factory, settings):
    options = {} if settings is None else {"compression": settings}
    async with websocket.serve(echo, "127.0.0.1", 0, **options) as server:
        extensions = None if factory is None else [factory]
        connect_options = {} if extensions is None else {"extensions": extensions, "compression": None}
        async with websockets.connect(url_of(server), max_size=None, **connect_options) as client:
            assert client.protocol.extensions
            for message in MESSAGES * 2:
                await client.send(message)
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == message


async def test_anynet_client_with_a_websockets_server():
    async def ws_echo(connection):
        async for message in connection:
            await connection.send(message)

    async with websockets.serve(ws_echo, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with websocket.connect(f"ws://127.0.0.1:{port}/") as client:
            # websockets' server asks for windows of 12 bits and keeps contexts.
            assert client.deflate == DeflateParameters(False, False, 12, 12)
            await exchange(client, MESSAGES[:-1] * 2)


async def test_aiohttp_client_and_server():
    async with websocket.serve(echo, "127.0.0.1", 0) as server:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url_of(server), compress=15, max_msg_size=0) as client:
                assert client.compress == 15
                for message in MESSAGES * 2:
                    if isinstance(message, bytes):
                        await client.send_bytes(message)
                    else:
                        await client.send_str(message)
                    reply = await asyncio.wait_for(client.receive(), TIMEOUT)
                    assert reply.data == message

    async def aiohttp_echo(request):
        response = web.WebSocketResponse(compress=True, max_msg_size=0)
        await response.prepare(request)
        async for message in response:
            if message.type == aiohttp.WSMsgType.TEXT:
                await response.send_str(message.data)
            else:
                await response.send_bytes(message.data)
        return response

    app = web.Application()
    app.router.add_get("/", aiohttp_echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]
        async with websocket.connect(f"ws://127.0.0.1:{port}/") as client:
            assert client.deflate is not None
            await exchange(client, MESSAGES[:-1] * 2)
    finally:
        await runner.cleanup()


async def test_picows_client_and_server():
    import picows.websockets as picows_websockets

    async with websocket.serve(echo, "127.0.0.1", 0) as server:
        async with picows_websockets.connect(url_of(server), max_size=None) as client:
            for message in MESSAGES * 2:
                await client.send(message)
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == message

    async def picows_echo(connection):
        async for message in connection:
            await connection.send(message)

    async with picows_websockets.serve(picows_echo, "127.0.0.1", 0, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with websocket.connect(f"ws://127.0.0.1:{port}/") as client:
            assert client.deflate is not None
            await exchange(client, MESSAGES[:-1] * 2)
