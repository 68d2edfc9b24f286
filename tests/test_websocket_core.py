"""anynet.websocket against itself: messages, ordering, closing, errors, server features."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import socket
import ssl

import pytest

from anynet import http, tls, websocket
from support import TIMEOUT, echo, url_of


def serve(handler, **options):
    options.setdefault("ping_interval", None)
    return websocket.serve(handler, "127.0.0.1", 0, **options)


async def test_binary_and_text_round_trip():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        for payload in (b"", b"x", bytes(range(256)) * 300, b"\x00" * (1 << 20)):
            await client.send(payload)
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == payload
        for text in ("", "hello", "h\u00e9llo w\u00f6rld \U0001f600", "\u20ac" * 100_000):
            await client.send_text(text)
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == text


async def test_bytearray_and_memoryview_are_sent_as_binary():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        await client.send(bytearray(b"array"))
        await client.send(memoryview(b"view"))
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"array"
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"view"


async def test_recv_and_recv_text_keep_the_other_type_queued():
    async def send_mixed(client):
        await client.send_text("one")
        await client.send(b"two")
        await client.send_text("three")
        await client.send(b"four")
        await client.recv()  # wait for the client to finish

    async with serve(send_mixed) as server, websocket.connect(url_of(server)) as client:
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"two"
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"four"
        assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "one"
        assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "three"
        await client.send(b"done")


async def test_iteration_yields_both_types_in_arrival_order_and_ends_on_normal_close():
    sent = [b"a", "b", b"c", "d", "", b""]

    async def send_all(client):
        for message in sent:
            if isinstance(message, bytes):
                await client.send(message)
            else:
                await client.send_text(message)

    async with serve(send_all) as server, websocket.connect(url_of(server)) as client:
        received = [message async for message in client]
        assert received == sent
        assert client.close_code == 1000
        with pytest.raises(websocket.ConnectionClosedOK):
            await client.recv_message()


async def test_recv_message_returns_messages_queued_before_the_close():
    async def send_and_leave(client):
        await client.send(b"last words")
        await client.send_text("really")

    async with serve(send_and_leave) as server, websocket.connect(url_of(server)) as client:
        # Closed, and still holding what arrived before the close.
        await asyncio.wait_for(client.disconnect(), TIMEOUT)
        assert await client.recv_message() == b"last words"
        assert await client.recv_text() == "really"
        with pytest.raises(websocket.ConnectionClosedOK) as caught:
            await client.recv()
        assert caught.value.code == 1000


async def test_pipelined_messages_arrive_in_order():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        for number in range(2000):
            await client.send(number.to_bytes(4, "big"))
        for number in range(2000):
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == number.to_bytes(4, "big")


async def test_concurrent_receivers_each_get_a_message():
    async def send_two(client):
        await client.recv()
        await client.send(b"1")
        await client.send(b"2")
        await client.recv()

    async with serve(send_two) as server, websocket.connect(url_of(server)) as client:
        receivers = [asyncio.ensure_future(client.recv()) for _ in range(2)]
        await asyncio.sleep(0)
        await client.send(b"go")
        results = await asyncio.wait_for(asyncio.gather(*receivers), TIMEOUT)
        assert sorted(results) == [b"1", b"2"]
        await client.send(b"done")


async def test_a_woken_receiver_resumes_in_its_own_task_and_context():
    # A message wakes its receiver from inside the transport's read callback
    # (see wake_tasks_now in anynet._connection_core): the receiver must still run as its own task,
    # with its own context variables, one connection never seeing another's.
    owner = contextvars.ContextVar("owner")

    async def tagged_echo(client):
        owner.set(await client.recv_text())
        task = asyncio.current_task()
        async for message in client:
            assert asyncio.current_task() is task
            await client.send(owner.get().encode() + b" " + message)

    async def converse(server, name):
        owner.set(name)
        task = asyncio.current_task()
        async with websocket.connect(url_of(server)) as client:
            await client.send_text(name)
            for number in range(50):
                await client.send(str(number).encode())
                reply = await asyncio.wait_for(client.recv(), TIMEOUT)
                assert reply == f"{name} {number}".encode()
                assert asyncio.current_task() is task and owner.get() == name

    async with serve(tagged_echo) as server:
        # Created in this task, each conversation starts with a copy of its
        # context: the names set inside stay inside.
        await asyncio.gather(*(converse(server, f"client {index}") for index in range(4)))
        assert owner.get(None) is None


async def test_cancelled_receiver_does_not_disturb_another():
    async def send_later(client):
        await client.recv()
        await client.send(b"late")
        await client.recv()

    async with serve(send_later) as server, websocket.connect(url_of(server)) as client:
        cancelled = asyncio.ensure_future(client.recv())
        waiting = asyncio.ensure_future(client.recv())
        await asyncio.sleep(0)
        cancelled.cancel()
        await client.send(b"go")
        assert await asyncio.wait_for(waiting, TIMEOUT) == b"late"
        assert cancelled.cancelled()
        await client.send(b"done")


async def test_ping_returns_the_round_trip_time():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        first, second = await asyncio.wait_for(
            asyncio.gather(client.ping(), client.ping()), TIMEOUT
        )
        assert first >= 0 and second >= 0


async def test_server_pings_the_client_too():
    async def ping_back(client):
        await client.send(repr(await client.ping()).encode())

    async with serve(ping_back) as server, websocket.connect(url_of(server)) as client:
        assert float(await asyncio.wait_for(client.recv(), TIMEOUT)) >= 0


async def test_client_close_code_and_reason_reach_the_server():
    seen = asyncio.get_running_loop().create_future()

    async def wait_for_close(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as closed:
            seen.set_result((closed.code, closed.reason, client.close_code, client.close_reason))

    async with serve(wait_for_close) as server:
        async with websocket.connect(url_of(server)) as client:
            await client.disconnect(4000, "client says bye")
        assert client.close_code == 4000  # echoed by the server
        assert await asyncio.wait_for(seen, TIMEOUT) == (
            4000,
            "client says bye",
            4000,
            "client says bye",
        )


async def test_server_close_code_and_reason_reach_the_client():
    async def close_with_code(client):
        await client.disconnect(4321, "server says bye")

    async with serve(close_with_code) as server, websocket.connect(url_of(server)) as client:
        with pytest.raises(websocket.ConnectionClosedError) as caught:
            await asyncio.wait_for(client.recv(), TIMEOUT)
        assert (caught.value.code, caught.value.reason) == (4321, "server says bye")
        assert (client.close_code, client.close_reason) == (4321, "server says bye")
        with pytest.raises(websocket.ConnectionClosedError):
            await client.send(b"too late")
        with pytest.raises(websocket.ConnectionClosedError):
            await client.send_text("too late")


async def test_close_code_is_none_while_open():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        assert client.close_code is None
        assert client.close_reason == ""


async def test_disconnect_is_idempotent_from_several_tasks():
    async with serve(echo) as server:
        async with websocket.connect(url_of(server)) as client:
            await asyncio.wait_for(
                asyncio.gather(client.disconnect(), client.disconnect(4001), client.disconnect()),
                TIMEOUT,
            )
            await client.disconnect()
            assert client.close_code == 1000
            with pytest.raises(websocket.ConnectionClosedOK):
                await client.send(b"after")


async def test_a_cancelled_disconnect_does_not_end_another_callers_wait():
    async with serve(echo) as server:
        async with websocket.connect(url_of(server)) as client:
            impatient = asyncio.ensure_future(client.disconnect())
            patient = asyncio.ensure_future(client.disconnect())
            await asyncio.sleep(0)
            impatient.cancel()
            await asyncio.wait_for(patient, TIMEOUT)
            assert impatient.cancelled()
            assert client.close_code == 1000


async def test_disconnect_wakes_a_waiting_receiver():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        receiver = asyncio.ensure_future(client.recv())
        await asyncio.sleep(0)
        await client.disconnect()
        with pytest.raises(websocket.ConnectionClosedOK):
            await asyncio.wait_for(receiver, TIMEOUT)


async def test_close_drops_the_connection_without_a_handshake():
    seen = asyncio.get_running_loop().create_future()

    async def wait_for_close(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as closed:
            seen.set_result(closed)

    async with serve(wait_for_close) as server:
        async with websocket.connect(url_of(server)) as client:
            await client.close()
            assert client.close_code == 1006
            with pytest.raises(websocket.ConnectionClosedError):
                await client.recv()
        closed = await asyncio.wait_for(seen, TIMEOUT)
        assert isinstance(closed, websocket.ConnectionClosedError)
        assert closed.code == 1006


async def test_invalid_close_arguments_raise_at_once():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        with pytest.raises(ValueError):
            await client.disconnect(1005)
        with pytest.raises(ValueError):
            await client.disconnect(1000, "x" * 124)
        await client.send(b"still open")
        assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"still open"


async def test_wrong_argument_types_raise_type_error_at_once():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        with pytest.raises(TypeError):
            await client.send("text")
        with pytest.raises(TypeError):
            await client.send_text(b"bytes")
        with pytest.raises(TypeError):
            await client.send(12)
        with pytest.raises(TypeError):
            websocket.broadcast([client], 12)
        await client.disconnect()
        # A wrong type is reported as such even once the connection is closed.
        with pytest.raises(TypeError):
            await client.send("text")
        with pytest.raises(TypeError):
            await client.send_text(b"bytes")


async def test_handler_returning_closes_normally():
    async def leave_at_once(client):
        pass

    async with serve(leave_at_once) as server, websocket.connect(url_of(server)) as client:
        with pytest.raises(websocket.ConnectionClosedOK):
            await asyncio.wait_for(client.recv(), TIMEOUT)
        assert client.close_code == 1000


async def test_handler_exception_closes_with_1011_and_is_logged(caplog):
    async def fail(client):
        raise RuntimeError("handler bug")

    with caplog.at_level(logging.ERROR, logger="anynet.websocket"):
        async with serve(fail) as server, websocket.connect(url_of(server)) as client:
            with pytest.raises(websocket.ConnectionClosedError) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
    assert caught.value.code == 1011
    failures = [record for record in caplog.records if record.name == "anynet.websocket"]
    assert failures and failures[0].exc_info[0] is RuntimeError


async def test_client_block_exception_closes_with_1011():
    seen = asyncio.get_running_loop().create_future()

    async def wait_for_close(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as closed:
            seen.set_result(closed.code)

    async with serve(wait_for_close) as server:
        with pytest.raises(KeyError):
            async with websocket.connect(url_of(server)):
                raise KeyError("application bug")
        assert await asyncio.wait_for(seen, TIMEOUT) == 1011


async def test_server_exit_closes_open_connections_with_1001():
    handler_saw = asyncio.get_running_loop().create_future()

    async def hold(client):
        try:
            await client.recv()
        except websocket.ConnectionClosed as closed:
            handler_saw.set_result(closed.code)

    server_context = serve(hold)
    server = await server_context.__aenter__()
    try:
        async with websocket.connect(url_of(server)) as client:
            await client.ping()  # the handler runs
            stopping = asyncio.ensure_future(server_context.__aexit__(None, None, None))
            with pytest.raises(websocket.ConnectionClosedOK) as caught:
                await asyncio.wait_for(client.recv(), TIMEOUT)
            assert caught.value.code == 1001
            await asyncio.wait_for(stopping, TIMEOUT)
    finally:
        if not stopping.done():
            await server_context.__aexit__(None, None, None)
    assert handler_saw.result() == 1001


async def test_server_exit_cancels_a_handler_that_ignores_the_close():
    cancelled = asyncio.Event()

    async def sleep_on(client):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server_context = serve(sleep_on, disconnect_timeout=1)
    server = await server_context.__aenter__()
    async with websocket.connect(url_of(server)) as client:
        await client.ping()
        await asyncio.wait_for(server_context.__aexit__(None, None, None), TIMEOUT)
        with pytest.raises(websocket.ConnectionClosedOK):
            await asyncio.wait_for(client.recv(), TIMEOUT)
    assert cancelled.is_set()


async def test_subprotocol_negotiation():
    async def tell_protocol(client):
        await client.send_text(client.subprotocol)

    async with serve(tell_protocol, protocol="chat.v2") as server:
        async with websocket.connect(url_of(server), protocols=["chat.v1", "chat.v2"]) as client:
            assert client.subprotocol == "chat.v2"
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "chat.v2"


async def test_server_refuses_a_client_without_its_subprotocol():
    async with serve(echo, protocol="chat") as server:
        for offer in (None, ["other"]):
            with pytest.raises(websocket.HandshakeError) as caught:
                async with websocket.connect(url_of(server), protocols=offer):
                    pass
            assert caught.value.status == 400


async def test_offered_subprotocol_may_be_declined_by_a_server_without_one():
    async with serve(echo) as server:
        async with websocket.connect(url_of(server), protocols=["chat"]) as client:
            assert client.subprotocol is None


async def test_handler_reads_its_handshake_request():
    async def describe(client):
        request = client.request
        await client.send_text(
            f"{request.path} {request.params['token']} {request.headers['X-Player']}"
        )

    async with serve(describe, path="/game") as server:
        async with websocket.connect(
            url_of(server, "/game?token=abc"), headers={"X-Player": "p1"}
        ) as client:
            assert client.request is None
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "/game abc p1"


async def test_unknown_path_is_refused_with_404():
    async with serve(echo, path="/ws") as server:
        with pytest.raises(websocket.HandshakeError) as caught:
            async with websocket.connect(url_of(server, "/other")):
                pass
        assert caught.value.status == 404


async def test_route_beside_a_plain_http_route():
    async def hello(client, request):
        response = http.HTTPResponse(200)
        response.body = b"plain http"
        return response

    async with http.serve_router("127.0.0.1", 0) as router:
        router.route("/hello", hello)
        async with websocket.route(echo, router, "/ws", ping_interval=None) as endpoint:
            host, port = router.local_address()
            async with websocket.connect(f"ws://{host}:{port}/ws") as client:
                await client.send_text("over websocket")
                assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "over websocket"
                assert len(endpoint.clients) == 1
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                response = await asyncio.wait_for(reader.read(), TIMEOUT)
                writer.close()
                assert response.startswith(b"HTTP/1.1 200")
                assert response.endswith(b"plain http")
        # The route is gone with its block; the plain route stays.
        with pytest.raises(websocket.HandshakeError) as caught:
            async with websocket.connect(f"ws://{host}:{port}/ws"):
                pass
        assert caught.value.status == 404


async def test_route_rejects_a_taken_path():
    async with http.serve_router("127.0.0.1", 0) as router:
        async with websocket.route(echo, router, "/ws"):
            with pytest.raises(ValueError):
                async with websocket.route(echo, router, "/ws"):
                    pass


async def test_broadcast_encodes_once_and_reaches_every_client():
    ready = asyncio.Event()
    connected = []

    async def register(client):
        connected.append(client)
        if len(connected) == 3:
            ready.set()
        await client.recv()

    async with serve(register) as server:
        clients = [websocket.connect(url_of(server)) for _ in range(3)]
        opened = [await context.__aenter__() for context in clients]
        try:
            await asyncio.wait_for(ready.wait(), TIMEOUT)
            assert websocket.broadcast(server.clients, "news") == 3
            assert websocket.broadcast(server.clients, b"\x00\x01") == 3
            for client in opened:
                assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "news"
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"\x00\x01"
            # Client-side connections are masked one by one, and work too.
            assert websocket.broadcast(opened, b"up") == 3
        finally:
            for context in clients:
                await context.__aexit__(None, None, None)
        assert websocket.broadcast(opened, b"gone") == 0


def described(client):
    """What a connection says of itself, as one reply: addresses, then the
    peer's certificate by both spellings (its SHA-256 fingerprint, or None)."""
    certificates = (client.remote_certificate(), client.remote_ceritifcate())
    fingerprints = [None if c is None else c.fingerprint().hex() for c in certificates]
    return repr((client.local_address(), client.remote_address(), *fingerprints))


def socket_addresses(client):
    """(local, remote) as the event loop read them from the socket."""
    transport = client._transport
    return transport.get_extra_info("sockname")[:2], transport.get_extra_info("peername")[:2]


async def test_addresses_and_certificate_without_tls():
    async def tell(client):
        await client.send_text(described(client))
        async for _ in client:  # open until the client leaves
            pass

    async with serve(tell) as server, websocket.connect(url_of(server)) as client:
        server_side = await asyncio.wait_for(client.recv_text(), TIMEOUT)
        local, remote = socket_addresses(client)
        assert remote == server.local_address() and local[0] == "127.0.0.1" and local[1] > 0
        assert server_side == repr((remote, local, None, None))
        assert described(client) == repr((local, remote, None, None))


async def test_addresses_and_certificates_over_mutual_tls(pki):
    async def tell(client):
        await client.send_text(described(client))
        async for _ in client:  # open until the client leaves
            pass

    server_context = pki.server_context(require_client_certificate=True)
    client_context = pki.client_context(with_certificate=True)
    async with serve(tell, context=server_context) as server:
        port = server.local_address()[1]
        url = f"wss://localhost:{port}/"
        async with websocket.connect(url, client_context, ping_interval=None) as client:
            server_side = await asyncio.wait_for(client.recv_text(), TIMEOUT)
            local, remote = socket_addresses(client)
            # The certificates generated for the test, by their DER encoding.
            client_print = hashlib.sha256(pki.client_cert.encode(tls.TYPE_DER)).hexdigest()
            server_print = hashlib.sha256(pki.server_cert.encode(tls.TYPE_DER)).hexdigest()
            assert server_side == repr((remote, local, client_print, client_print))
            assert described(client) == repr((local, remote, server_print, server_print))
            assert client.remote_ceritifcate().subject["CN"] == "localhost"


@pytest.mark.parametrize(
    "options",
    [
        {"max_message_size": 0},
        {"max_message_size": -1},
        {"max_queue": 0},
        {"write_limit": 0},
        {"disconnect_timeout": -1},
        {"ping_interval": 0},
        {"ping_timeout": -5},
        {"handshake_timeout": 0},
    ],
)
async def test_bad_option_values_raise_value_error(options):
    with pytest.raises(ValueError):
        async with websocket.connect("ws://127.0.0.1:9/", **options):
            pass


@pytest.mark.parametrize(
    "options",
    [
        {"max_message_size": "1"},
        {"max_queue": 1.5},
        {"write_limit": None},
        {"ping_interval": "20"},
        {"disconnect_timeout": True},
        {"protocols": "chat"},
    ],
)
async def test_bad_option_types_raise_type_error(options):
    with pytest.raises(TypeError):
        async with websocket.connect("ws://127.0.0.1:9/", **options):
            pass


@pytest.mark.parametrize(
    "options",
    [
        {"protocols": ["bad protocol"]},
        {"protocols": ["chat", "chat"]},
        {"headers": {"X-Evil": "a\r\nInjected: yes"}},
        {"headers": {"Bad Name": "x"}},
        {"headers": {"Sec-WebSocket-Key": "mine"}},
    ],
)
async def test_bad_handshake_options_raise_value_error(options):
    with pytest.raises(ValueError):
        async with websocket.connect("ws://127.0.0.1:9/", **options):
            pass


async def test_server_argument_checks():
    with pytest.raises(TypeError):
        async with websocket.serve("not callable", "127.0.0.1", 0):
            pass
    with pytest.raises(ValueError):
        async with websocket.serve(echo, "127.0.0.1", 0, protocol="two words"):
            pass
    with pytest.raises(ValueError):
        async with websocket.serve(echo, "127.0.0.1", 0, max_queue=-1):
            pass
    with pytest.raises(ValueError):
        async with websocket.serve(echo, "127.0.0.1", 0, handshake_timeout=0):
            pass
    with pytest.raises(TypeError):
        async with websocket.serve(echo, "127.0.0.1", 0, handshake_timeout="10"):
            pass
    with pytest.raises(ValueError):
        async with http.serve_router("127.0.0.1", 0) as router:
            async with websocket.route(echo, router, "/ws", write_limit=0):
                pass


async def test_context_must_be_a_tls_context():
    with pytest.raises(TypeError):
        async with websocket.connect("wss://127.0.0.1:9/", ssl.create_default_context()):
            pass
    with pytest.raises(TypeError):
        async with websocket.serve(echo, "127.0.0.1", 0, ssl.create_default_context()):
            pass


async def test_iteration_raises_on_an_abnormal_close():
    async def close_with_error(client):
        await client.send(b"first")
        await client.disconnect(4000, "application error")

    async with serve(close_with_error) as server, websocket.connect(url_of(server)) as client:
        received = []
        with pytest.raises(websocket.ConnectionClosedError) as caught:
            async for message in client:
                received.append(message)
        assert received == [b"first"]
        assert caught.value.code == 4000


async def test_ping_after_close_raises():
    async with serve(echo) as server, websocket.connect(url_of(server)) as client:
        await client.disconnect()
        with pytest.raises(websocket.ConnectionClosedOK):
            await client.ping()


async def test_both_sides_disable_nagle():
    async def tell(client):
        sock = client._transport.get_extra_info("socket")
        await client.send_text(str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))

    async with serve(tell) as server, websocket.connect(url_of(server)) as client:
        sock = client._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert await asyncio.wait_for(client.recv_text(), TIMEOUT) != "0"
