"""What a connection tells and keeps: ``data``, ``latency``, ``write_buffer_size``."""

from __future__ import annotations

import asyncio

import pytest

from anynet import websocket
from rawpeer import accept_upgrade
from support import TIMEOUT, echo, url_of


def serve(handler, **options):
    options.setdefault("ping_interval", None)
    return websocket.serve(handler, "127.0.0.1", 0, **options)


async def wait_until(condition):
    while not condition():
        await asyncio.sleep(0.005)


async def test_data_belongs_to_the_application_on_both_sides():
    players = {}

    async def game(client):
        assert client.data is None
        client.data = {"name": client.request.params["name"], "score": 0}
        players[client.data["name"]] = client
        async for message in client:
            client.data["score"] += len(message)
            await client.send_text(f"{client.data['name']} {client.data['score']}")

    async with serve(game) as server:
        async with websocket.connect(url_of(server, "/?name=bob")) as client:
            assert client.data is None
            client.data = "mine"
            await client.send_text("abc")
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "bob 3"
            assert players["bob"].data == {"name": "bob", "score": 3}
            assert client.data == "mine"


async def test_other_attributes_still_cannot_be_added():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        with pytest.raises(AttributeError):
            client.player_name = "bob"


async def test_latency_is_none_until_a_pong_and_then_the_last_round_trip():
    async with serve(echo) as server, websocket.connect(url_of(server), ping_interval=None) as client:
        assert client.latency is None
        round_trip = await asyncio.wait_for(client.ping(), TIMEOUT)
        assert client.latency == round_trip >= 0


async def test_keepalive_pings_measure_the_latency():
    latencies = asyncio.Queue()

    async def report_latency(client):
        await wait_until(lambda: client.latency is not None)
        await latencies.put(client.latency)
        await echo(client)

    async with serve(report_latency, ping_interval=0.02) as server:
        async with websocket.connect(url_of(server), ping_interval=None):
            assert await asyncio.wait_for(latencies.get(), TIMEOUT) >= 0


async def test_write_buffer_size_counts_frames_held_back_for_this_loop_turn():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        assert client.write_buffer_size == 0
        for _ in range(3):
            await client.send(b"x" * 10)
        # The first frame went to the socket; the others wait for the turn's
        # end, to go out in one write. A client frame of 10 bytes takes 16.
        assert client.write_buffer_size == 32
        await asyncio.wait_for(wait_until(lambda: client.write_buffer_size == 0), TIMEOUT)
        for _ in range(3):
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"x" * 10


async def test_write_buffer_size_grows_while_the_peer_does_not_read():
    done = asyncio.Event()

    async def accept_and_stop_reading(reader, writer):
        writer.write(await accept_upgrade(reader))
        await done.wait()
        writer.close()

    server = await asyncio.start_server(accept_and_stop_reading, "127.0.0.1", 0)
    url = "ws://127.0.0.1:%d/" % server.sockets[0].getsockname()[1]
    try:
        async with websocket.connect(url, ping_interval=None, write_limit=4096) as client:
            chunk = bytes(64 * 1024)
            while client.write_buffer_size <= 4096:
                await asyncio.wait_for(client.send(chunk), TIMEOUT)
            # The kernel's buffers are full: the rest waits in ours.
            assert 4096 < client.write_buffer_size <= 4096 + len(chunk) + 14
            await client.close()
    finally:
        done.set()
        server.close()
