"""Refusing upgrade requests before the handler runs: ``origins`` and ``process_request``."""

from __future__ import annotations

import asyncio
import logging

import pytest

from anynet import http, websocket
from anynet._ws_admission import serialize_origin
from rawpeer import read_head, upgrade_request
from support import TIMEOUT, echo, url_of


class Handled:
    """An echo handler that counts the connections it was given."""

    def __init__(self):
        self.count = 0

    async def __call__(self, client):
        self.count += 1
        await echo(client)


def serve(handler, **options):
    return websocket.serve(handler, "127.0.0.1", 0, ping_interval=None, **options)


async def status_of(server, **headers):
    """The status of the response to an upgrade request with ``headers``."""
    try:
        async with websocket.connect(url_of(server), headers=headers) as client:
            await client.send(b"ping")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"ping"
    except websocket.HandshakeError as error:
        return error.status
    return 101


@pytest.mark.parametrize(
    "value, serialized",
    [
        ("https://game.example", "https://game.example"),
        ("HTTPS://Game.Example", "https://game.example"),
        ("https://game.example:443", "https://game.example"),
        ("http://game.example:80", "http://game.example"),
        ("https://game.example:8443", "https://game.example:8443"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("null", "null"),
        ("https://game.example/", None),
        ("https://game.example/lobby", None),
        ("game.example", None),
        ("https://user@game.example", None),
        ("https://game.example:99999", None),
        ("https://a.example, https://b.example", None),
        ("", None),
    ],
)
def test_origins_serialize_as_rfc_6454_does(value, serialized):
    assert serialize_origin(value) == serialized


async def test_only_listed_origins_reach_the_handler():
    handler = Handled()
    allowed = ["https://game.example", "http://localhost:8000"]
    async with serve(handler, origins=allowed) as server:
        assert await status_of(server, Origin="https://game.example") == 101
        # Scheme and host are case-insensitive, and the default port optional.
        assert await status_of(server, Origin="HTTPS://GAME.example:443") == 101
        assert await status_of(server, Origin="http://localhost:8000") == 101
        assert await status_of(server, Origin="https://evil.example") == 403
        assert await status_of(server, Origin="http://game.example") == 403
        assert await status_of(server, Origin="http://localhost:8001") == 403
        assert await status_of(server, Origin="null") == 403
        # Without None in the list, a request without Origin is refused too.
        assert await status_of(server) == 403
    assert handler.count == 3


async def test_none_among_the_origins_admits_requests_without_one():
    async with serve(echo, origins=[None, "https://game.example"]) as server:
        assert await status_of(server) == 101
        assert await status_of(server, Origin="https://game.example") == 101
        assert await status_of(server, Origin="https://evil.example") == 403


async def test_a_repeated_origin_header_is_refused():
    async with serve(echo, origins=["https://a.example", "https://b.example"]) as server:
        reader, writer = await asyncio.open_connection(*server.local_address())
        request, _ = upgrade_request()
        # Two Origin fields: the server sees them joined, which is no origin.
        request = request[:-2] + b"Origin: https://a.example\r\nOrigin: https://b.example\r\n\r\n"
        writer.write(request)
        status, headers = await read_head(reader)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
        writer.close()
    assert status == 403
    assert b"origin" in body


@pytest.mark.parametrize(
    "origins, error",
    [
        ("https://game.example", TypeError),
        (42, TypeError),
        ([b"https://game.example"], TypeError),
        (["https://game.example/"], ValueError),
        (["game.example"], ValueError),
    ],
)
async def test_bad_origins_raise_at_the_call(origins, error):
    with pytest.raises(error):
        async with serve(echo, origins=origins):
            pass
    async with http.serve_router("127.0.0.1", 0) as router:
        with pytest.raises(error):
            async with websocket.route(echo, router, "/ws", origins=origins):
                pass


async def test_process_request_refuses_with_its_own_response():
    handler = Handled()

    def require_token(request):
        if request.params.get("token") == "secret":
            return None
        response = http.HTTPResponse(401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="game"'
        response.headers["Content-Type"] = "text/plain"
        response.body = b"a token is needed\n"
        return response

    async with serve(handler, process_request=require_token) as server:
        with pytest.raises(websocket.HandshakeError) as refused:
            async with websocket.connect(url_of(server, "/?token=wrong")):
                pass
        assert refused.value.status == 401
        assert refused.value.headers["www-authenticate"] == 'Bearer realm="game"'

        # The whole response, body included, as a raw client sees it.
        reader, writer = await asyncio.open_connection(*server.local_address())
        writer.write(upgrade_request("/?token=none")[0])
        status, headers = await read_head(reader)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
        writer.close()
        assert (status, body) == (401, b"a token is needed\n")

        async with websocket.connect(url_of(server, "/?token=secret")) as client:
            await client.send_text("in")
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "in"
    assert handler.count == 1


async def test_an_async_process_request_and_the_handler_see_the_request():
    seen = []

    async def note_player(request):
        await asyncio.sleep(0)
        seen.append(("hook", request.path, request.params["player"]))

    async def greet(client):
        seen.append(("handler", client.request.path, client.request.params["player"]))
        await client.send_text("hello " + client.request.params["player"])

    async with serve(greet, path="/play", process_request=note_player) as server:
        async with websocket.connect(url_of(server, "/play?player=bob")) as client:
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "hello bob"
    assert seen == [("hook", "/play", "bob"), ("handler", "/play", "bob")]


async def test_the_origin_is_checked_before_process_request():
    calls = []
    async with serve(
        echo, origins=["https://game.example"], process_request=calls.append
    ) as server:
        assert await status_of(server, Origin="https://evil.example") == 403
        assert calls == []
        assert await status_of(server, Origin="https://game.example") == 101
        assert len(calls) == 1


async def test_process_request_may_answer_a_plain_http_request_on_the_path():
    def health(request):
        if request.headers.get("upgrade") is None:
            response = http.HTTPResponse(200)
            response.body = b"ok"
            return response
        return None

    async with serve(echo, process_request=health) as server:
        reader, writer = await asyncio.open_connection(*server.local_address())
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers = await read_head(reader)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), TIMEOUT)
        writer.close()
        assert (status, body) == (200, b"ok")
        assert await status_of(server) == 101


def failing_hook(request):
    raise RuntimeError("the hook broke")


async def async_failing_hook(request):
    raise RuntimeError("the hook broke")


@pytest.mark.parametrize(
    "hook, logged",
    [
        (failing_hook, "process_request failed"),
        (async_failing_hook, "process_request failed"),
        (lambda request: "refused", "process_request returned 'refused'"),
        (lambda request: http.HTTPResponse(101), "process_request returned"),
    ],
)
async def test_a_failing_process_request_gets_500_and_a_log_line(hook, logged, caplog):
    handler = Handled()
    with caplog.at_level(logging.INFO, logger="anynet.websocket"):
        async with serve(handler, process_request=hook) as server:
            assert await status_of(server) == 500
    assert handler.count == 0
    assert any(logged in record.getMessage() for record in caplog.records)


async def test_process_request_must_be_callable():
    with pytest.raises(TypeError):
        async with serve(echo, process_request="token"):
            pass


async def test_route_takes_origins_and_process_request():
    def maintenance(request):
        return http.HTTPResponse(503) if request.params.get("late") else None

    async with http.serve_router("127.0.0.1", 0) as router:
        async with websocket.route(
            echo, router, "/ws", origins=["https://game.example"], process_request=maintenance
        ):
            url = url_of(router, "/ws")
            async with websocket.connect(url, headers={"Origin": "https://game.example"}):
                pass
            for path, origin, status in (
                ("/ws", "https://evil.example", 403),
                ("/ws?late=1", "https://game.example", 503),
            ):
                with pytest.raises(websocket.HandshakeError) as refused:
                    async with websocket.connect(url_of(router, path), headers={"Origin": origin}):
                        pass
                assert refused.value.status == status
