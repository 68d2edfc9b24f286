"""anynet behind a real nginx reverse proxy (Debian's package, a foreground
process on a loopback port started by the test)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import pytest

from anynet import websocket
from nginx import run_nginx
from support import TIMEOUT, echo

SMALL_LIMIT = 1024
TRIES = 20


@contextlib.asynccontextmanager
async def behind_nginx(handler, tmp_path, **options):
    """An anynet server behind nginx; yields the nginx and the ws:// URL through it."""
    async with websocket.serve(handler, "127.0.0.1", 0, **options) as server:
        async with run_nginx(tmp_path, server.local_address()[1]) as nginx:
            yield nginx, f"ws://127.0.0.1:{nginx.port}/"


async def echoes(client, *messages):
    """Send each message and check that the echo server returns it."""
    for message in messages:
        if isinstance(message, bytes):
            await client.send(message)
        else:
            await client.send_text(message)
        assert await asyncio.wait_for(client.recv_message(), TIMEOUT) == message


async def test_messages_go_both_ways_through_nginx(tmp_path):
    seen = []

    async def greet_then_echo(client):
        seen.append(client.request.headers.get("Host"))
        await client.send_text("welcome")
        await echo(client)

    async with behind_nginx(greet_then_echo, tmp_path) as (nginx, url):
        async with websocket.connect(url) as client:
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "welcome"
            await echoes(client, "text \u2713", b"\x00\xff" * 10, os.urandom(1 << 20), "t" * 100_000)
        assert client.close_code == 1000
    assert seen == [f"127.0.0.1:{nginx.port}"]
    assert "[error]" not in nginx.error_log()


@pytest.mark.parametrize("size", [64 * 1024, 2 * 1024])
async def test_an_oversized_message_is_closed_with_1009_and_nginx_sees_no_reset(tmp_path, size):
    async def read_all(client):
        async for _ in client:
            pass

    codes = []
    async with behind_nginx(read_all, tmp_path, max_message_size=SMALL_LIMIT) as (nginx, url):
        for _ in range(TRIES):
            async with websocket.connect(url) as client:
                await client.send(os.urandom(size))
                with pytest.raises(websocket.ConnectionClosedError) as closed:
                    await asyncio.wait_for(client.recv(), TIMEOUT)
                codes.append(closed.value.code)
    assert codes == [1009] * TRIES
    assert "reset by peer" not in nginx.error_log()


@pytest.mark.skipif(sys.platform == "win32", reason="no Unix sockets in asyncio")
async def test_a_server_on_a_unix_socket_behind_nginx(tmp_path):
    # The layout of docs/game-servers.md: nginx in front, the server process
    # on a Unix socket of its own.
    socket_path = tmp_path / "game.sock"
    seen = []

    async def tell_then_echo(client):
        seen.append((client.request.headers.get("Host"), client.local_address(), client.remote_address()))
        await client.send_text("welcome")
        await echo(client)

    async with websocket.unix_serve(tell_then_echo, socket_path, ping_interval=None):
        async with run_nginx(tmp_path / "nginx", socket_path) as nginx:
            async with websocket.connect(f"ws://127.0.0.1:{nginx.port}/") as client:
                assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "welcome"
                await echoes(client, "text \u2713", os.urandom(1 << 20))
            assert client.close_code == 1000
    assert seen == [(f"127.0.0.1:{nginx.port}", (str(socket_path), 0), ("", 0))]
    assert "[error]" not in nginx.error_log()
