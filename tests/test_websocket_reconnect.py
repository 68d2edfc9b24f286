"""``await connect(...)`` and ``async for client in connect(...)``, which reconnects."""

from __future__ import annotations

import asyncio
import logging
import ssl

import pytest

from anynet import http, websocket
from anynet._ws_errors import HandshakeError
from anynet._ws_handshake import SchemeMismatchError
from anynet._ws_reconnect import Backoff, is_transient
from support import TIMEOUT, echo, url_of

# Short waits between attempts: the tests count attempts, not seconds.
QUICK = {"reconnect_delay": 0.005, "reconnect_max_delay": 0.02}


def serve(handler, port=0, **options):
    return websocket.serve(handler, "127.0.0.1", port, ping_interval=None, **options)


class Retries(logging.Handler):
    """Counts the client's announcements of another attempt, as they are logged."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.count = 0
        self.changed = asyncio.Event()

    def emit(self, record):
        if "again in" in record.getMessage():
            self.count += 1
            self.changed.set()

    async def wait_for(self, count):
        while self.count < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), TIMEOUT)


@pytest.fixture
def retries():
    handler = Retries()
    logger = logging.getLogger("anynet.websocket")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_await_connect_returns_a_connection_the_caller_closes():
    async with serve(echo) as server:
        client = await websocket.connect(url_of(server))
        try:
            await client.send_text("owned")
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "owned"
        finally:
            await client.disconnect()
        assert client.close_code == 1000


async def test_the_loop_reconnects_to_a_server_stopped_and_started_again_on_its_port(retries):
    ports = asyncio.Queue()
    first_greeted, second_greeted = asyncio.Event(), asyncio.Event()

    async def greet(client):
        await client.send_text("hello")
        await echo(client)

    async def run_server_twice():
        async with serve(greet) as server:
            port = server.local_address()[1]
            ports.put_nowait(port)
            await first_greeted.wait()
        # Stopped: the client was told 1001, and now its attempts are refused.
        await retries.wait_for(3)
        async with serve(greet, port):
            await second_greeted.wait()

    server_task = asyncio.create_task(run_server_twice())
    try:
        port = await asyncio.wait_for(ports.get(), TIMEOUT)
        connections = []
        async for client in websocket.connect(f"ws://127.0.0.1:{port}/", **QUICK):
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "hello"
            connections.append(client)
            if len(connections) == 2:
                second_greeted.set()
                break
            first_greeted.set()
            # Iteration ends quietly when the server closes with 1001 (going away).
            async for _ in client:
                pass
            assert client.close_code == 1001
        await asyncio.wait_for(server_task, TIMEOUT)
    finally:
        server_task.cancel()
    assert retries.count >= 3


async def test_a_lost_connection_is_replaced_when_the_body_carries_on(retries):
    accepted = []

    async def drop_the_first(client):
        accepted.append(client)
        if len(accepted) == 1:
            await client.close()  # TCP ends without a closing handshake: 1006
        else:
            await echo(client)

    async with serve(drop_the_first) as server:
        codes = []
        async for client in websocket.connect(url_of(server), **QUICK):
            try:
                await client.send_text("hello")
                assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "hello"
                break
            except websocket.ConnectionClosedError as closed:
                codes.append(closed.code)
                continue
    assert codes == [1006]
    assert len(accepted) == 2
    assert retries.count == 1


async def test_a_body_done_with_an_open_connection_gets_a_new_one_at_once(retries):
    closes = []

    async def note_close(client):
        await echo(client)
        closes.append(client.close_code)

    async with serve(note_close) as server:
        seen = []
        async for client in websocket.connect(url_of(server), **QUICK):
            seen.append(client)
            if len(seen) == 3:
                break
        assert seen[0].close_code == seen[1].close_code == 1000
        await asyncio.wait_for(seen[2].disconnect(), TIMEOUT)
    assert retries.count == 0


async def test_a_normal_close_by_the_server_ends_the_loop():
    async def say_goodbye(client):
        await client.send_text("bye")

    async with serve(say_goodbye) as server:
        rounds = 0
        async for client in websocket.connect(url_of(server), **QUICK):
            rounds += 1
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "bye"
            async for _ in client:
                pass
            assert client.close_code == 1000
        assert rounds == 1


async def test_leaving_the_loop_closes_the_connection():
    closed = asyncio.Event()

    async def wait_for_the_close(client):
        await echo(client)
        closed.set()

    async with serve(wait_for_the_close) as server:
        async for client in websocket.connect(url_of(server), **QUICK):
            break
        await asyncio.wait_for(closed.wait(), TIMEOUT)


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refusal_that_will_recur_ends_the_loop(status, retries):
    calls = []

    def refuse(request):
        calls.append(request)
        return http.HTTPResponse(status)

    async with serve(echo, process_request=refuse) as server:
        with pytest.raises(websocket.HandshakeError) as refused:
            async for client in websocket.connect(url_of(server), **QUICK):
                pytest.fail("the server refused every connection")
    assert refused.value.status == status
    assert len(calls) == 1
    assert retries.count == 0


@pytest.mark.parametrize("status", [429, 502, 503])
async def test_a_refusal_that_may_pass_is_tried_again(status, retries):
    calls = []

    def refuse_twice(request):
        calls.append(request)
        return http.HTTPResponse(status) if len(calls) <= 2 else None

    async with serve(echo, process_request=refuse_twice) as server:
        async for client in websocket.connect(url_of(server), **QUICK):
            await client.send(b"in")
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"in"
            break
    assert len(calls) == 3
    assert retries.count == 2


async def test_a_certificate_that_does_not_verify_ends_the_loop(pki, retries):
    context = pki.server_context()
    async with websocket.serve(echo, "127.0.0.1", 0, context, ping_interval=None) as server:
        port = server.local_address()[1]
        with pytest.raises(ssl.SSLCertVerificationError):
            async for client in websocket.connect(f"wss://127.0.0.1:{port}/", **QUICK):
                pytest.fail("the certificate is not trusted")
    assert retries.count == 0


async def test_a_plain_request_to_a_tls_server_ends_the_loop(pki, retries):
    # The scheme is wrong: no later attempt can succeed.
    async with websocket.serve(echo, "127.0.0.1", 0, pki.server_context(), ping_interval=None) as server:
        with pytest.raises(HandshakeError, match="connect with wss://"):
            async for client in websocket.connect(url_of(server), **QUICK):
                pytest.fail("a plain request cannot reach a TLS server")
    assert retries.count == 0


def explained(error, cause):
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    "error, transient",
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (websocket.WSTimeoutError("slow"), True),
        (asyncio.TimeoutError(), True),
        (OSError("unreachable"), True),
        (ssl.SSLEOFError(), True),
        (ssl.SSLCertVerificationError(), False),
        (ssl.SSLError(), False),
        (HandshakeError("lost mid-way"), True),
        (HandshakeError("refused", 400), False),
        (HandshakeError("refused", 403), False),
        (HandshakeError("slow", 408), True),
        (HandshakeError("busy", 429), True),
        (HandshakeError("down", 503), True),
        (HandshakeError("bad accept", 101), False),
        (explained(HandshakeError("wss:// to a plain server"), ssl.SSLError()), False),
        (SchemeMismatchError("ws:// to a TLS server"), False),
        (ValueError("bad URL"), False),
    ],
)
def test_which_failures_are_worth_another_attempt(error, transient):
    assert is_transient(error) is transient


def test_the_waits_double_up_to_the_cap_with_jitter():
    backoff = Backoff(0.5, 10)
    for failures, bound in [(1, 0.5), (2, 1), (3, 2), (5, 8), (6, 10), (40, 10), (5000, 10)]:
        for _ in range(50):
            assert bound / 2 <= backoff.wait_time(failures) <= bound


@pytest.mark.parametrize(
    "options, error",
    [
        ({"reconnect_delay": 0}, ValueError),
        ({"reconnect_max_delay": -1}, ValueError),
        ({"reconnect_delay": 5, "reconnect_max_delay": 1}, ValueError),
        ({"reconnect_delay": "1"}, TypeError),
    ],
)
def test_bad_backoff_options_raise_at_the_call(options, error):
    with pytest.raises(error):
        websocket.connect("ws://127.0.0.1:9/", **options)
