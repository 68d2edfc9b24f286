"""anynet behind a real nginx reverse proxy (Debian's package, a foreground
process on a loopback port started by the test)."""

from __future__ import annotations

import asyncio
import contextlib
import os

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


async def test_messages_go_both_ways_through_nginx(tmp_path):
    seen = []

    async def greet_then_echo(client):
        seen.append(client.request.headers.get("Host"))
        await client.send_text("welcome")
        await echo(client)

    async with behind_nginx(greet_then_echo, tmp_path) as (nginx, url):
        async with websocket.connect(url) as client:
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "welcome"
            for message in ("text \u2713", b"\x00\xff" * 10, os.urandom(1 << 20), "t" * 100_000):
                if isinstance(message, bytes):
                    await client.send(message)
                else:
                    await client.send_text(message)
                assert await asyncio.wait_for(client.recv_message(), TIMEOUT) == message
        assert client.close_code == 1000
    assert seen == [f"127.0.0.1:{nginx.port}"]
    assert "[error]" not in nginx.error_log()
