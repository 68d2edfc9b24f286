"""Common mistakes fail at the mistake, with a message that names the fix."""

from __future__ import annotations

import asyncio
import functools
import logging
import types

import pytest

from anynet import http, websocket
from support import TIMEOUT, echo, url_of

# -- handlers ------------------------------------------------------------------


def plain_handler(client):
    client.send_text("never awaited")


async def two_parameters(client, room):
    await client.send_text(room)


async def no_parameters():
    pass


async def generator_handler(client):
    yield client


def sync_generator_handler(client):
    yield client


REFUSED_HANDLERS = [
    (plain_handler, "returns None; define it with `async def`"),
    (lambda client: None, "returns None"),
    (two_parameters, "cannot be called with one argument"),
    (no_parameters, "cannot be called with one argument"),
    (generator_handler, "async generator"),
    (sync_generator_handler, "generator function"),
]


@pytest.mark.parametrize("handler, complaint", REFUSED_HANDLERS)
async def test_serve_refuses_a_handler_that_cannot_work(handler, complaint):
    with pytest.raises(TypeError, match="async def handler\\(client\\)") as caught:
        async with websocket.serve(handler, "127.0.0.1", 0):
            pass
    assert complaint in str(caught.value)


@pytest.mark.parametrize("handler, complaint", REFUSED_HANDLERS)
async def test_route_refuses_a_handler_that_cannot_work(handler, complaint):
    async with http.serve_router("127.0.0.1", 0) as router:
        with pytest.raises(TypeError, match=complaint):
            async with websocket.route(handler, router, "/ws"):
                pass


class Room:
    def __init__(self, name):
        self.name = name

    async def join(self, client):
        await client.send_text(self.name)

    async def __call__(self, client):
        await client.send_text(f"called {self.name}")


async def greet(greeting, client):
    await client.send_text(greeting)


def logged(handler):
    @functools.wraps(handler)
    def wrapper(client):
        return handler(client)

    return wrapper


@types.coroutine
def generator_based(client):
    yield from asyncio.sleep(0).__await__()
    return (yield from client.send_text("generator-based").__await__())


@pytest.mark.parametrize(
    "handler, greeting",
    [
        (Room("lobby").join, "lobby"),
        (Room("hall"), "called hall"),
        (functools.partial(greet, "partial"), "partial"),
        (lambda client: greet("lambda", client), "lambda"),
        (logged(functools.partial(greet, "wrapped")), "wrapped"),
        (generator_based, "generator-based"),
    ],
)
async def test_every_kind_of_async_callable_is_accepted_and_runs(handler, greeting):
    async with websocket.serve(handler, "127.0.0.1", 0) as server:
        async with websocket.connect(url_of(server)) as client:
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == greeting


async def test_a_handler_that_returns_no_awaitable_closes_with_1011_and_says_why(caplog):
    def answer_with_a_number(client):
        return 42

    caplog.set_level(logging.ERROR, logger="anynet.websocket")
    async with websocket.serve(answer_with_a_number, "127.0.0.1", 0) as server:
        async with websocket.connect(url_of(server)) as client:
            with pytest.raises(websocket.ConnectionClosedError) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert caught.value.code == 1011
    (record,) = [record for record in caplog.records if record.name == "anynet.websocket"]
    assert "returned 42, not an awaitable" in record.getMessage()
    assert "async def handler(client)" in record.getMessage()


# -- connect's arguments ---------------------------------------------------------


@pytest.mark.parametrize(
    "url, complaint",
    [
        ("ws:/127.0.0.1:8765/", "the scheme 'ws' must be followed by '://'"),
        ("wss:127.0.0.1/", "the scheme 'wss' must be followed by '://'"),
        ("ws:\\\\127.0.0.1/", "the scheme 'ws' must be followed by '://'"),
        ("http://127.0.0.1:8765/", "starts with ws://"),
        ("https://example.com/", "starts with wss://"),
        ("ftp://example.com/", "unsupported URL scheme 'ftp'"),
        ("ws://:8765/", "has no host"),
        ("ws:///chat", "has no host"),
    ],
)
async def test_a_malformed_url_names_the_expected_form(url, complaint):
    with pytest.raises(ValueError) as caught:
        async with websocket.connect(url):
            pass
    assert complaint in str(caught.value)
    assert "ws://host[:port][/path]" in str(caught.value)


async def test_host_and_port_instead_of_a_url_names_the_url_form():
    with pytest.raises(TypeError) as caught:
        async with websocket.connect("127.0.0.1", 8765):
            pass
    message = str(caught.value)
    assert "connect() takes a URL like ws://host:port/path, e.g. ws://127.0.0.1:8765/;" in message
    assert "not int" in message
    with pytest.raises(TypeError) as caught:
        async with websocket.connect("ws://127.0.0.1/", 8765):
            pass
    assert "connect() takes a URL like ws://host:port/path;" in str(caught.value)


async def test_wss_to_a_plain_server_says_to_use_ws(pki):
    async with websocket.serve(echo, "127.0.0.1", 0) as server:
        url = url_of(server).replace("ws://", "wss://")
        with pytest.raises(websocket.HandshakeError) as caught:
            async with websocket.connect(url, pki.client_context(), handshake_timeout=TIMEOUT):
                pass
    assert "does not speak TLS, so connect with ws:// instead of wss://" in str(caught.value)


async def test_ws_to_a_tls_server_says_to_use_wss(pki):
    async with websocket.serve(echo, "127.0.0.1", 0, pki.server_context()) as server:
        with pytest.raises(websocket.HandshakeError) as caught:
            async with websocket.connect(url_of(server), handshake_timeout=TIMEOUT):
                pass
    assert "speaks TLS, so connect with wss:// instead of ws://" in str(caught.value)


async def test_a_tls_alert_in_answer_to_a_plain_request_says_to_use_wss():
    # A TLS server that answers a plain request with an alert record
    # (fatal, protocol_version) instead of closing silently.
    async def answer_with_an_alert(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"\x15\x03\x01\x00\x02\x02\x46")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(answer_with_an_alert, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        with pytest.raises(websocket.HandshakeError) as caught:
            async with websocket.connect(f"ws://127.0.0.1:{port}/", handshake_timeout=TIMEOUT):
                pass
    finally:
        listener.close()
        await listener.wait_closed()
    assert "answered with a TLS record" in str(caught.value)
    assert "connect with wss://" in str(caught.value)


# -- the server after its block ----------------------------------------------------


async def test_local_address_after_the_serve_block_speaks_of_the_block():
    async with websocket.serve(echo, "127.0.0.1", 0) as server:
        assert server.local_address()[1] > 0
    with pytest.raises(RuntimeError) as caught:
        server.local_address()
    assert "`async with` block has ended" in str(caught.value)
    assert "serve_router" not in str(caught.value)
