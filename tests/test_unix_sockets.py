"""Servers and clients on Unix sockets: ``unix_serve``, ``unix_connect``, ``http.unix_serve``."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
import tempfile

import pytest

from anynet import http, websocket
from support import TIMEOUT, echo


# asyncio serves Unix sockets on Unix only.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no Unix sockets in asyncio")


@pytest.fixture
def socket_path():
    # Not in pytest's tmp_path: a socket's path is limited to 104 bytes on
    # macOS (108 on Linux), which a test's name can make tmp_path exceed.
    with tempfile.TemporaryDirectory(prefix="anynet-") as directory:
        yield os.path.join(directory, "game.sock")


def serve(handler, path, *args, **options):
    options.setdefault("ping_interval", None)
    return websocket.unix_serve(handler, path, *args, **options)


async def test_a_websocket_over_a_unix_socket(socket_path):
    seen = []

    async def tell(client):
        seen.append((client.request.path, client.request.params, client.request.headers["host"]))
        seen.append((client.local_address(), client.remote_address()))
        await echo(client)

    async with serve(tell, socket_path, url_path="/play") as server:
        assert server.local_address() == (socket_path, 0)
        assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
        async with websocket.unix_connect(socket_path, "/play?room=1") as client:
            for message in (b"binary", "text", b"x" * (1 << 20)):
                if isinstance(message, bytes):
                    await client.send(message)
                else:
                    await client.send_text(message)
                assert await asyncio.wait_for(client.recv_message(), TIMEOUT) == message
            assert client.remote_address() == (socket_path, 0)
    assert seen == [("/play", {"room": "1"}, "localhost"), ((socket_path, 0), ("", 0))]
    # The server removed its socket file.
    assert not os.path.exists(socket_path)


async def test_unix_connect_is_awaited_and_iterated_like_connect(socket_path):
    async with serve(echo, socket_path):
        client = await websocket.unix_connect(socket_path)
        await client.send(b"awaited")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"awaited"
        await client.disconnect()
        async for client in websocket.unix_connect(socket_path, reconnect_delay=0.01):
            await client.send(b"iterated")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"iterated"
            break


async def test_the_reconnecting_client_waits_for_the_socket_to_appear(socket_path):
    # No socket file yet: the attempts fail (FileNotFoundError) and are repeated.
    connected = asyncio.Event()

    async def client_loop():
        async for client in websocket.unix_connect(
            socket_path, reconnect_delay=0.005, reconnect_max_delay=0.02
        ):
            await client.send(b"late")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"late"
            connected.set()
            break

    task = asyncio.create_task(client_loop())
    try:
        async with serve(echo, socket_path):
            await asyncio.wait_for(connected.wait(), TIMEOUT)
            await asyncio.wait_for(task, TIMEOUT)
    finally:
        task.cancel()


async def test_origins_and_process_request_on_a_unix_socket(socket_path):
    def maintenance(request):
        return http.HTTPResponse(503) if "late" in request.params else None

    async with serve(
        echo, socket_path, origins=["https://game.example"], process_request=maintenance
    ):
        async with websocket.unix_connect(socket_path, headers={"Origin": "https://game.example"}):
            pass
        for url_path, origin, status in (
            ("/", "https://evil.example", 403),
            ("/?late", "https://game.example", 503),
        ):
            with pytest.raises(websocket.HandshakeError) as refused:
                async with websocket.unix_connect(socket_path, url_path, headers={"Origin": origin}):
                    pass
            assert refused.value.status == status


async def test_tls_over_a_unix_socket(socket_path, pki):
    async with serve(echo, socket_path, pki.server_context()):
        async with websocket.unix_connect(socket_path, "/", pki.client_context()) as client:
            await client.send_text("sealed")
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "sealed"
            assert client.remote_certificate().subject.common_name == "localhost"


async def test_a_stale_socket_file_is_replaced(socket_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(socket_path)
    stale.close()  # the file stays, as after a crash
    async with serve(echo, socket_path):
        async with websocket.unix_connect(socket_path) as client:
            await client.send(b"fresh")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"fresh"


async def test_http_unix_serve_answers_plain_requests(socket_path):
    async def hello(client, request):
        response = http.HTTPResponse(200)
        response.body = repr((client.local_address(), client.remote_address())).encode()
        return response

    async with http.unix_serve(hello, socket_path, max_headers=10) as server:
        assert server.local_address() == (socket_path, 0)
        reader, writer = await asyncio.open_unix_connection(socket_path)
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == repr(((socket_path, 0), ("", 0))).encode()


async def test_http_unix_serve_router_and_its_argument_checks(socket_path):
    async with http.unix_serve_router(socket_path) as router:
        assert router.local_address() == (socket_path, 0)
    with pytest.raises(TypeError):
        http.unix_serve(echo, 42)
    with pytest.raises(TypeError, match="reuse_port"):
        http.unix_serve(echo, socket_path, reuse_port=True)
    with pytest.raises(TypeError):
        http.unix_serve(echo, socket_path, max_url_size=1)
    with pytest.raises(ValueError):
        http.unix_serve(echo, socket_path, head_timeout=0)


async def test_bad_unix_arguments_raise_at_the_call(socket_path):
    with pytest.raises(ValueError):
        websocket.unix_connect(socket_path, "no-slash")
    with pytest.raises(TypeError):
        websocket.unix_connect(3.5)
    with pytest.raises(TypeError):
        async with serve(echo, socket_path, max_queue="many"):
            pass
