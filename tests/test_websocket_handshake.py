"""The opening handshake and URL rules, with raw sockets on the other side."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct

import pytest

from anynet import websocket
from anynet._url import parse_url
from anynet._ws_options import DEFAULT_DISCONNECT_TIMEOUT
from anynet._ws_handshake import (
    MAX_RESPONSE_HEAD_SIZE,
    ResponseHeadProtocol,
    accept_value,
    build_request,
    check_request,
    generate_key,
    is_valid_key,
)
from rawpeer import (
    GUID,
    RawServer,
    accept_response,
    close_code,
    masked_frame,
    read_frame,
    read_head,
    upgrade_request,
)
from support import TIMEOUT, echo


# -- URL rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url, has_context, expected",
    [
        ("ws://example.com", False, (False, "example.com", 80, "/")),
        ("wss://example.com", False, (True, "example.com", 443, "/")),
        ("wss://example.com:8080/test", False, (True, "example.com", 8080, "/test")),
        ("WS://Example.COM/Path", False, (False, "example.com", 80, "/Path")),
        ("example.com/chat", False, (False, "example.com", 80, "/chat")),
        ("example.com/chat", True, (True, "example.com", 443, "/chat")),
        ("example.com:9000", True, (True, "example.com", 9000, "/")),
        ("127.0.0.1:8000/a/b?x=1&y=2", False, (False, "127.0.0.1", 8000, "/a/b?x=1&y=2")),
        ("ws://[::1]:8000/", False, (False, "::1", 8000, "/")),
        ("wss://[::1]/v6", False, (True, "::1", 443, "/v6")),
        ("[2001:db8::1]", False, (False, "2001:db8::1", 80, "/")),
        ("ws://host/?only=query", False, (False, "host", 80, "/?only=query")),
        ("ws://host?q", False, (False, "host", 80, "/?q")),
        ("ws://host/a path/\u00e9", False, (False, "host", 80, "/a%20path/%C3%A9")),
        ("ws://host/already%20encoded", False, (False, "host", 80, "/already%20encoded")),
        ("ws://b\u00fccher.example/", False, (False, "xn--bcher-kva.example", 80, "/")),
        ("wss://example.com", True, (True, "example.com", 443, "/")),
    ],
)
def test_url_rules(url, has_context, expected):
    assert tuple(parse_url(url, has_context)) == expected


@pytest.mark.parametrize(
    "url, host_header",
    [
        ("ws://example.com/", "example.com"),
        ("ws://example.com:80/", "example.com"),
        ("ws://example.com:443/", "example.com:443"),
        ("wss://example.com:443/", "example.com"),
        ("wss://example.com:8443/", "example.com:8443"),
        ("ws://[::1]/", "[::1]"),
        ("ws://[::1]:81/", "[::1]:81"),
    ],
)
def test_host_header(url, host_header):
    assert parse_url(url, False).host_header == host_header


@pytest.mark.parametrize(
    "url, has_context",
    [
        ("http://example.com/", False),
        ("https://example.com/", False),
        ("ftp://example.com/", False),
        ("ws://example.com/", True),  # a context for an unencrypted URL
        ("ws:///path", False),
        ("", False),
        ("/just/a/path", False),
        ("ws://user:secret@example.com/", False),
        ("ws://example.com/#fragment", False),
        ("ws://example.com:0/", False),
        ("ws://example.com:65536/", False),
        ("ws://example.com:port/", False),
        ("ws://[::1/", False),
    ],
)
def test_bad_urls_raise_value_error(url, has_context):
    with pytest.raises(ValueError):
        parse_url(url, has_context)


def test_url_must_be_a_string():
    with pytest.raises(TypeError):
        parse_url(b"ws://example.com/", False)


async def test_connect_checks_the_url_before_connecting():
    with pytest.raises(ValueError):
        async with websocket.connect("http://127.0.0.1/"):
            pass


# -- handshake helpers -------------------------------------------------------


def test_accept_value_of_rfc_6455_example():
    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    "key, valid",
    [
        ("dGhlIHNhbXBsZSBub25jZQ==", True),
        (base64.b64encode(bytes(15)).decode(), False),
        (base64.b64encode(bytes(17)).decode(), False),
        ("not base64 at all!!!!!!!", False),
        ("", False),
        ("d\u00e9lIHNhbXBsZSBub25jZQ==", False),
    ],
)
def test_key_validation(key, valid):
    assert is_valid_key(key) is valid


def _headers(**fields):
    class CaseInsensitive(dict):
        def get(self, name, default=None):
            for key, value in self.items():
                if key.lower() == name.lower():
                    return value
            return default

    return CaseInsensitive({name.replace("_", "-"): value for name, value in fields.items()})


VALID = dict(
    Upgrade="websocket",
    Connection="Upgrade",
    Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==",
    Sec_WebSocket_Version="13",
)


def test_check_request_accepts_token_lists_in_any_case():
    fields = dict(VALID, Upgrade="h2c, WebSocket", Connection="keep-alive, UPGRADE")
    verdict = check_request("GET", "HTTP/1.1", _headers(**fields), None)
    assert verdict.status == 101
    assert ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in verdict.headers


@pytest.mark.parametrize(
    "method, version, changes, status",
    [
        ("POST", "HTTP/1.1", {}, 405),
        ("GET", "HTTP/1.0", {}, 400),
        ("GET", "HTTP/1.1", {"Upgrade": "h2c"}, 426),
        ("GET", "HTTP/1.1", {"Connection": "keep-alive"}, 426),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Version": "8"}, 426),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": "short"}, 400),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": ""}, 400),
    ],
)
def test_check_request_refusals(method, version, changes, status):
    verdict = check_request(method, version, _headers(**dict(VALID, **changes)), None)
    assert verdict.status == status
    assert verdict.message


# -- our server against a raw client -----------------------------------------


@pytest.fixture
async def echo_server():
    async with websocket.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        yield server


async def raw_exchange(server, request):
    reader, writer = await asyncio.open_connection(*server.local_address())
    try:
        writer.write(request)
        return await read_head(reader)
    finally:
        writer.close()


async def test_raw_client_completes_the_handshake(echo_server):
    request, key = upgrade_request()
    status, headers = await raw_exchange(echo_server, request)
    assert status == 101
    expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
    assert headers["sec-websocket-accept"] == expected
    assert headers["upgrade"].lower() == "websocket"
    assert "content-length" not in headers


async def test_wrong_version_gets_426_with_the_supported_version(echo_server):
    request, _ = upgrade_request(**{"Sec-WebSocket-Version": "8"})
    status, headers = await raw_exchange(echo_server, request)
    assert status == 426
    assert headers["sec-websocket-version"] == "13"


async def test_plain_get_gets_426_with_upgrade_header(echo_server):
    reader, writer = await asyncio.open_connection(*echo_server.local_address())
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers = await read_head(reader)
    writer.close()
    assert status == 426
    assert headers["upgrade"] == "websocket"


@pytest.mark.parametrize("key", ["", "c2hvcnQ=", "!!!!"])
async def test_bad_key_gets_400(echo_server, key):
    request, _ = upgrade_request(**{"Sec-WebSocket-Key": key or None})
    status, _ = await raw_exchange(echo_server, request)
    assert status == 400


async def test_frames_sent_with_the_request_reach_the_handler(echo_server):
    request, _ = upgrade_request()
    reader, writer = await asyncio.open_connection(*echo_server.local_address())
    # The request and two frames in one write: the frames are leftover bytes
    # of the HTTP layer and must reach the WebSocket protocol.
    writer.write(request + masked_frame(0x2, b"early") + masked_frame(0x1, b"bird"))
    try:
        status, _ = await read_head(reader)
        assert status == 101
        assert await read_frame(reader) == (0x2, b"early")
        assert await read_frame(reader) == (0x1, b"bird")
    finally:
        writer.close()


async def test_unmasked_client_frame_is_answered_with_1002_and_tcp_closed(echo_server):
    request, _ = upgrade_request()
    reader, writer = await asyncio.open_connection(*echo_server.local_address())
    try:
        writer.write(request)
        assert (await read_head(reader))[0] == 101
        writer.write(masked_frame(0x2, b"unmasked", mask=False))
        opcode, payload = await read_frame(reader)
        assert opcode == 0x8
        assert close_code(payload) == 1002
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # the server closed TCP
    finally:
        writer.close()


async def test_server_answers_a_raw_close_and_closes_tcp(echo_server):
    request, _ = upgrade_request()
    reader, writer = await asyncio.open_connection(*echo_server.local_address())
    try:
        writer.write(request)
        assert (await read_head(reader))[0] == 101
        writer.write(masked_frame(0x8, struct.pack("!H", 4444) + b"bye"))
        opcode, payload = await read_frame(reader)
        assert opcode == 0x8 and close_code(payload) == 4444
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()


# -- our client against a raw server -----------------------------------------


async def expect_handshake_error(respond, **options):
    async with RawServer(respond) as server:
        with pytest.raises(websocket.HandshakeError) as caught:
            async with websocket.connect(server.url, handshake_timeout=TIMEOUT, **options):
                pass
    return caught.value


async def test_client_sends_a_proper_upgrade_request():
    async with RawServer(lambda key: accept_response(key)) as server:
        async with websocket.connect(
            server.url + "path?q=1", protocols=["a", "b"], ping_interval=None
        ) as client:
            await client.close()
    request = server.requests[0].decode()
    lines = request.split("\r\n")
    assert lines[0] == "GET /path?q=1 HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:] if line)
    assert fields["Upgrade"] == "websocket"
    assert fields["Connection"] == "Upgrade"
    assert fields["Sec-WebSocket-Version"] == "13"
    assert fields["Sec-WebSocket-Protocol"] == "a, b"
    assert len(base64.b64decode(fields["Sec-WebSocket-Key"])) == 16
    assert fields["Host"].startswith("127.0.0.1:")


async def test_refusal_status_is_reported():
    error = await expect_handshake_error(
        lambda key: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nX-Why: nope\r\n\r\nnope"
    )
    assert error.status == 403
    assert error.headers["x-why"] == "nope"


async def test_wrong_accept_is_refused():
    error = await expect_handshake_error(lambda key: accept_response(key, accept="d3Jvbmc="))
    assert error.status == 101
    assert "Accept" in str(error)


async def test_missing_upgrade_header_is_refused():
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: {}\r\n\r\n"
    )
    error = await expect_handshake_error(lambda key: response.format(accept_value(key)).encode())
    assert error.status == 101


async def test_subprotocol_that_was_not_offered_is_refused():
    error = await expect_handshake_error(
        lambda key: accept_response(key, "Sec-WebSocket-Protocol: other"), protocols=["chat"]
    )
    assert "other" in str(error)


async def test_subprotocol_without_an_offer_is_refused():
    await expect_handshake_error(lambda key: accept_response(key, "Sec-WebSocket-Protocol: chat"))


async def test_unrequested_extension_is_refused():
    await expect_handshake_error(
        lambda key: accept_response(key, "Sec-WebSocket-Extensions: permessage-deflate"),
        compression=None,
    )
    await expect_handshake_error(lambda key: accept_response(key, "Sec-WebSocket-Extensions: x-webkit-deflate-frame"))


async def test_garbage_response_is_refused():
    error = await expect_handshake_error(lambda key: b"SSH-2.0-OpenSSH\r\n\r\n")
    assert error.status is None


async def test_server_closing_during_the_handshake_is_reported():
    async def close_at_once(reader, writer):
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(websocket.HandshakeError):
            async with websocket.connect(f"ws://127.0.0.1:{port}/", handshake_timeout=TIMEOUT):
                pass
    finally:
        server.close()


async def test_endless_response_head_is_refused():
    def endless(key):
        return b"HTTP/1.1 101 Switching Protocols\r\n" + b"X-Filler: " + b"a" * 100_000

    error = await expect_handshake_error(endless)
    assert "exceeds" in str(error)


async def test_silent_server_hits_the_handshake_timeout():
    async with RawServer(lambda key: None) as server:
        with pytest.raises(websocket.WSTimeoutError) as caught:
            async with websocket.connect(server.url, handshake_timeout=0.2):
                pass
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, asyncio.TimeoutError)


async def test_frame_sent_with_the_101_response_is_received():
    def accept_and_greet(key):
        return accept_response(key) + b"\x82\x05hello" + b"\x81\x02hi"

    async with RawServer(accept_and_greet) as server:
        async with websocket.connect(server.url, ping_interval=None) as client:
            assert await asyncio.wait_for(client.recv(), TIMEOUT) == b"hello"
            assert await asyncio.wait_for(client.recv_text(), TIMEOUT) == "hi"
            await client.close()


async def test_messages_sent_with_the_101_response_are_received_whole():
    # More than a response head's worth: the handshake keeps what arrives
    # until the WebSocket protocol takes over, pausing if there is too much.
    messages = [bytes([number]) * 20_000 for number in range(10)]

    def accept_and_flood(key):
        frames = b"".join(masked_frame(0x2, message, mask=False) for message in messages)
        return accept_response(key) + frames

    async with RawServer(accept_and_flood) as server:
        async with websocket.connect(server.url, ping_interval=None) as client:
            for message in messages:
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == message
            await client.close()


async def test_a_close_sent_with_the_101_response_ends_the_connection():
    def accept_and_leave(key):
        close = masked_frame(0x8, struct.pack("!H", 1001) + b"bye", mask=False)
        return accept_response(key) + close

    async with RawServer(accept_and_leave) as server:
        async with websocket.connect(
            server.url, ping_interval=None, disconnect_timeout=0.2
        ) as client:
            with pytest.raises(websocket.ConnectionClosedOK):
                await asyncio.wait_for(client.recv(), TIMEOUT)
            await asyncio.wait_for(client.disconnect(), TIMEOUT)
    assert (client.close_code, client.close_reason) == (1001, "bye")


async def test_the_handshake_stops_reading_when_early_data_outgrows_a_response_head():
    # Nothing takes over here: the bytes after the head keep coming, and the
    # handshake protocol must stop reading rather than hold them all.
    target = parse_url("ws://127.0.0.1/", False)
    key = generate_key()
    flood = masked_frame(0x2, bytes(60_000), mask=False) * 40

    async def accept_and_flood(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(accept_response(key) + flood)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(accept_and_flood, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: ResponseHeadProtocol(build_request(target, key, (), ()), over_tls=False), "127.0.0.1", port
    )
    try:
        assert (await asyncio.wait_for(protocol.head, TIMEOUT)).status == 101

        async def paused():
            while not protocol.reading_paused:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(paused(), TIMEOUT)
        assert not transport.is_reading()
        # At most one more read than a head may hold, far less than was sent.
        assert MAX_RESPONSE_HEAD_SIZE < len(protocol.leftover) < len(flood) // 2
    finally:
        transport.close()
        server.close()


async def test_disconnect_timeout_bounds_a_peer_that_never_answers_the_close():
    # The peer never answers the Close; only the configured timeout ends the
    # wait before the bound, which the default timeout would overrun.
    assert DEFAULT_DISCONNECT_TIMEOUT / 2 < TIMEOUT
    async with RawServer(lambda key: accept_response(key)) as server:
        async with websocket.connect(
            server.url, disconnect_timeout=0.1, ping_interval=None
        ) as client:
            await asyncio.wait_for(client.disconnect(), DEFAULT_DISCONNECT_TIMEOUT / 2)
    assert client.close_code == 1006


async def test_connection_refused_is_an_os_error():
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(OSError):
        async with websocket.connect(f"ws://127.0.0.1:{port}/"):
            pass
