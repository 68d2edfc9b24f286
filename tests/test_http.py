"""anynet.http server over real sockets: raw clients and aiohttp."""

import asyncio
import hashlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys

import pytest

import anynet
from anynet.http import HTTPResponse, serve, serve_router

try:
    import aiohttp
except ImportError:  # no wheels for every Python yet (free-threaded builds)
    aiohttp = None

needs_aiohttp = pytest.mark.skipif(aiohttp is None, reason="aiohttp is not installed")

LOCALHOST = "127.0.0.1"
WAIT = 5  # seconds; only reached when a test fails


# -- helpers ------------------------------------------------------------------


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body


async def read_response(reader, head_only=False):
    """Read one response; headers come back as a dict with lower-case names."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines:
        name, value = line.split(": ", 1)
        headers[name.lower()] = value
    length = 0 if head_only else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), WAIT)
    return Response(int(status), headers, body)


async def read_until_closed(reader):
    """Everything the server still sends before it closes the connection."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


async def connect(address, **options):
    return await asyncio.open_connection(*address, **options)


async def wait_until(condition):
    async def poll():
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT)


def get(path="/", *headers, version="HTTP/1.1"):
    lines = [f"GET {path} {version}", *(["Host: test"] if version == "HTTP/1.1" else []), *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def text_response(text, status=200):
    response = HTTPResponse(status)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    response.body = text.encode()
    return response


async def echo(client, request):
    """Tells the test what the server understood of the request."""
    response = HTTPResponse(200)
    response.headers["Content-Type"] = "application/json"
    response.body = json.dumps(
        {
            "method": request.method,
            "path": request.path,
            "params": request.params,
            "version": request.version,
            "headers": dict(request.headers),
            "body": request.body.decode("latin-1"),
            "remote": list(client.remote_address()),
        }
    ).encode()
    return response


def client_session(**options):
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT), **options)


def url(address, path):
    return f"http://{address[0]}:{address[1]}{path}"


# -- routing, keep-alive, pipelining, bodies ------------------------------------


@needs_aiohttp
async def test_router_serves_routes_and_answers_404_otherwise():
    async with serve_router(LOCALHOST, 0) as router:
        router.route("/hello", lambda client, request: _hello())
        address = router.local_address()
        async with client_session() as session:
            async with session.get(url(address, "/hello")) as response:
                assert response.status == 200
                assert await response.text() == "hello"
                assert "Date" in response.headers
            async with session.get(url(address, "/nowhere")) as response:
                assert response.status == 404
                assert await response.read() == b""


async def _hello():
    return text_response("hello")


@needs_aiohttp
async def test_a_removed_route_answers_404():
    async with serve_router(LOCALHOST, 0) as router:
        address = router.local_address()
        async with client_session() as session:
            with router.route("/temporary", echo):
                async with session.get(url(address, "/temporary")) as response:
                    assert response.status == 200
            async with session.get(url(address, "/temporary")) as response:
                assert response.status == 404


@needs_aiohttp
async def test_query_parameters_headers_and_body_reach_the_handler():
    async with serve_router(LOCALHOST, 0) as router:
        router.route("/echo", echo)
        address = router.local_address()
        async with client_session() as session:
            async with session.post(
                url(address, "/echo?name=a%20b&flag&n=1&n=2"),
                data=b"payload",
                headers={"X-Custom": "yes"},
            ) as response:
                seen = await response.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo"
    assert seen["params"] == {"name": "a b", "flag": "", "n": "2"}
    assert seen["version"] == "HTTP/1.1"
    assert seen["body"] == "payload"
    assert seen["headers"]["X-Custom"] == "yes"


async def test_request_headers_are_case_insensitive_and_repeats_are_joined():
    seen = {}

    async def handler(client, request):
        seen["custom"] = request.headers["x-CUSTOM"]
        seen["host"] = request.headers["HOST"]
        return HTTPResponse(204)

    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/", "X-Custom: a", "x-custom: b"))
        response = await read_response(reader)
        writer.close()
    assert response.status == 204
    assert "content-length" not in response.headers
    assert seen == {"custom": "a, b", "host": "test"}


async def test_keep_alive_serves_several_requests_on_one_connection():
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        remotes = set()
        for index in range(3):
            writer.write(get(f"/request/{index}"))
            response = await read_response(reader)
            assert response.status == 200
            assert "connection" not in response.headers
            seen = json.loads(response.body)
            assert seen["path"] == f"/request/{index}"
            remotes.add(tuple(seen["remote"]))
        assert remotes == {writer.get_extra_info("sockname")[:2]}
        writer.close()


@needs_aiohttp
async def test_aiohttp_reuses_the_keep_alive_connection():
    async with serve(echo, LOCALHOST, 0) as server:
        connector = aiohttp.TCPConnector(limit=1)
        async with client_session(connector=connector) as session:
            remotes = set()
            for _ in range(3):
                async with session.get(url(server.local_address(), "/")) as response:
                    remotes.add(tuple((await response.json())["remote"]))
    assert len(remotes) == 1


async def test_pipelined_requests_in_one_write_are_answered_in_order():
    async def handler(client, request):
        # The first request takes longest: order must still hold.
        await asyncio.sleep(0.05 / (1 + int(request.path[1:])))
        return text_response(request.path)

    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(b"".join(get(f"/{index}") for index in range(5)))
        bodies = [(await read_response(reader)).body for _ in range(5)]
        writer.close()
    assert bodies == [f"/{index}".encode() for index in range(5)]


async def test_too_many_pipelined_requests_pause_reading_until_the_queue_drains():
    release = asyncio.Event()
    reading = []

    first = []

    async def handler(client, request):
        if request.path == "/first":
            first.append(client)
            await asyncio.wait_for(release.wait(), WAIT)
            reading.append(client.transport.is_reading())
        return text_response(request.path)

    async with serve(handler, LOCALHOST, 0, max_pipelined=2) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/first") + get("/2") + get("/3") + get("/4"))
        await wait_until(lambda: first and not first[0].transport.is_reading())
        release.set()
        bodies = [(await read_response(reader)).body for _ in range(4)]
        # Reading resumed once the queue drained: the connection still works.
        writer.write(get("/after"))
        assert (await read_response(reader)).body == b"/after"
        writer.close()
    assert reading == [False]
    assert bodies == [b"/first", b"/2", b"/3", b"/4"]


async def test_content_length_and_chunked_bodies():
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(b"POST /fixed HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello")
        assert json.loads((await read_response(reader)).body)["body"] == "hello"
        writer.write(
            b"POST /chunked HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        assert json.loads((await read_response(reader)).body)["body"] == "hello world"
        writer.close()


@needs_aiohttp
async def test_aiohttp_streamed_upload_arrives_chunked():
    async def chunks():
        for part in (b"one ", b"two ", b"three"):
            yield part

    async with serve(echo, LOCALHOST, 0) as server:
        async with client_session() as session:
            async with session.post(url(server.local_address(), "/"), data=chunks()) as response:
                seen = await response.json()
    assert seen["headers"]["Transfer-Encoding"] == "chunked"
    assert seen["body"] == "one two three"


async def test_expect_100_continue_gets_an_interim_response():
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(
            b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"body")
        assert json.loads((await read_response(reader)).body)["body"] == "body"
        writer.close()


async def test_head_response_announces_the_length_without_a_body():
    async with serve(lambda client, request: _hello(), LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n" + get("/"))
        head = await read_response(reader, head_only=True)
        assert head.headers["content-length"] == "5"
        assert (await read_response(reader)).body == b"hello"  # nothing was in between
        writer.close()


async def test_server_replaces_framing_headers_set_by_the_handler():
    async def handler(client, request):
        response = text_response("four")
        response.headers["Content-Length"] = "1000"
        response.headers["Transfer-Encoding"] = "chunked"
        return response

    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/"))
        response = await read_response(reader)
        writer.close()
    assert response.headers["content-length"] == "4"
    assert "transfer-encoding" not in response.headers
    assert response.body == b"four"


# -- connection management --------------------------------------------------------


async def test_connection_close_is_honoured():
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/", "Connection: close"))
        response = await read_response(reader)
        assert response.headers["connection"] == "close"
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_handler_may_close_the_connection():
    async def handler(client, request):
        response = text_response("bye")
        response.headers["Connection"] = "close"
        return response

    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/") + get("/never"))
        assert (await read_response(reader)).body == b"bye"
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_http_1_0_closes_unless_keep_alive_is_asked():
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/", "Connection: keep-alive", version="HTTP/1.0"))
        response = await read_response(reader)
        assert response.headers["connection"] == "keep-alive"
        assert json.loads(response.body)["version"] == "HTTP/1.0"
        writer.write(get("/", version="HTTP/1.0"))
        response = await read_response(reader)
        assert response.headers["connection"] == "close"
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_half_closed_client_gets_every_pipelined_answer():
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/1") + get("/2"))
        writer.write_eof()
        first = await read_response(reader)
        second = await read_response(reader)
        assert await read_until_closed(reader) == b""
        writer.close()
    assert json.loads(first.body)["path"] == "/1"
    assert json.loads(second.body)["path"] == "/2"


async def test_accepted_sockets_have_tcp_nodelay():
    seen = []

    async def handler(client, request):
        sock = client.transport.get_extra_info("socket")
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return HTTPResponse(204)

    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/"))
        await read_response(reader)
        writer.close()
    assert seen and seen[0] != 0


async def test_client_addresses_are_reported():
    seen = {}

    async def handler(client, request):
        seen["local"] = client.local_address()
        seen["remote"] = client.remote_address()
        seen["certificate"] = client.remote_certificate()
        return HTTPResponse(204)

    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/"))
        await read_response(reader)
        assert seen["local"] == server.local_address()
        assert seen["remote"] == writer.get_extra_info("sockname")[:2]
        assert seen["certificate"] is None
        writer.close()


# -- bad requests and limits --------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n",
        b"NOT-A-METHOD / HTTP/1.1\r\nHost: test\r\n\r\n",
        b"GET / HTTP/1.7\r\nHost: test\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # request smuggling
        b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: test\r\n\r\n",
    ],
)
async def test_malformed_request_gets_400_and_a_closed_connection(request_bytes):
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(request_bytes)
        response = await read_response(reader)
        assert response.status == 400
        assert response.headers["connection"] == "close"
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_an_error_is_answered_after_the_requests_before_it():
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/fine") + b"GARBAGE\r\n\r\n")
        first = await read_response(reader)
        second = await read_response(reader)
        writer.close()
    assert json.loads(first.body)["path"] == "/fine"
    assert second.status == 400


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (get("/" + "a" * 200), 414),
        (get("/", *(f"X-{index}: v" for index in range(11))), 431),
        (get("/", "X-Big: " + "v" * 300), 431),
        (b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 101\r\n\r\n", 413),
        (
            b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"40\r\n" + b"x" * 64 + b"\r\n") * 2,
            413,
        ),
    ],
    ids=["url-414", "header-count-431", "head-size-431", "content-length-413", "chunked-413"],
)
async def test_limits_are_answered_with_their_status(request_bytes, status):
    options = dict(max_url_length=100, max_headers=10, max_head_size=256, max_body_size=100)
    async with serve(echo, LOCALHOST, 0, **options) as server:
        reader, writer = await connect(server.local_address())
        # No body follows the 413 request head: the size is judged before reading it.
        writer.write(request_bytes)
        response = await read_response(reader)
        assert response.status == status
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_requests_within_the_limits_pass():
    options = dict(max_url_length=100, max_headers=10, max_head_size=256, max_body_size=100)
    async with serve(echo, LOCALHOST, 0, **options) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/" + "a" * 90, *(f"X-{index}: v" for index in range(9))))
        assert (await read_response(reader)).status == 200
        writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
        assert (await read_response(reader)).status == 200
        writer.close()


async def test_a_header_trickled_in_many_reads_is_still_bounded():
    async with serve(echo, LOCALHOST, 0, max_head_size=1024) as server:
        reader, writer = await connect(server.local_address())
        answer = asyncio.ensure_future(read_response(reader))
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nX-Endless: ")
        for _ in range(100):
            if answer.done():
                break
            writer.write(b"v" * 100)
            await writer.drain()
            await asyncio.sleep(0.005)
        response = await answer
        writer.close()
    assert response.status == 431


async def test_bodies_larger_than_a_read_arrive_whole_on_connections_read_at_once():
    # Every connection of a loop reads through the same buffer (see
    # anynet._copied_reads): bodies spanning many reads, sent side by side,
    # must each reach their own request intact.
    async def body_digest(client, request):
        return text_response(hashlib.sha256(request.body).hexdigest())

    bodies = [os.urandom(300_000) for _ in range(4)]
    async with serve(body_digest, LOCALHOST, 0, max_body_size=1_000_000) as server:
        streams = [await connect(server.local_address()) for _ in bodies]
        for (_, writer), body in zip(streams, bodies):
            writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body))
        for offset in range(0, len(bodies[0]), 50_000):
            for (_, writer), body in zip(streams, bodies):
                writer.write(body[offset : offset + 50_000])
        responses = [await read_response(reader) for reader, _ in streams]
        for _, writer in streams:
            writer.close()
    assert [response.body.decode() for response in responses] == [
        hashlib.sha256(body).hexdigest() for body in bodies
    ]


async def test_413_reaches_a_client_that_sends_the_body_anyway():
    async with serve(echo, LOCALHOST, 0, max_body_size=1000) as server:
        reader, writer = await connect(server.local_address())
        body = b"x" * 4_000_000
        writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % len(body))
        writer.write(body)
        response = await read_response(reader)
        assert response.status == 413
        await asyncio.wait_for(writer.drain(), WAIT)  # the server read and discarded it
        writer.close()


@needs_aiohttp
async def test_slowloris_is_dropped_while_a_normal_client_is_served():
    async with serve(echo, LOCALHOST, 0, head_timeout=0.3) as server:
        address = server.local_address()
        slow_reader, slow_writer = await connect(address)
        slow_writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n")  # and never the end
        async with client_session() as session:
            for _ in range(3):
                async with session.get(url(address, "/")) as response:
                    assert response.status == 200
        # Dropped without a response.
        assert await read_until_closed(slow_reader) == b""
        slow_writer.close()


async def test_a_slow_body_is_dropped_after_body_timeout():
    async with serve(echo, LOCALHOST, 0, body_timeout=0.2) as server:
        reader, writer = await connect(server.local_address())
        writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nhalf")
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_time_the_server_spends_not_reading_is_not_held_against_the_client():
    release = asyncio.Event()

    async def handler(client, request):
        if request.path == "/first":
            await asyncio.wait_for(release.wait(), WAIT)
        return text_response(request.path)

    async with serve(handler, LOCALHOST, 0, max_pipelined=1, head_timeout=0.3) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/first") + get("/2") + b"GET /3 HTTP/1.1\r\nHost: te")
        await asyncio.sleep(0.5)  # longer than head_timeout, with reading paused
        release.set()
        assert (await read_response(reader)).body == b"/first"
        assert (await read_response(reader)).body == b"/2"
        writer.write(b"st\r\n\r\n")
        assert (await read_response(reader)).body == b"/3"
        writer.close()


async def test_a_silent_connection_is_dropped_after_head_timeout():
    async with serve(echo, LOCALHOST, 0, head_timeout=0.2) as server:
        reader, writer = await connect(server.local_address())
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout():
    async with serve(echo, LOCALHOST, 0, idle_timeout=0.2) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/"))
        assert (await read_response(reader)).status == 200
        assert await read_until_closed(reader) == b""
        writer.close()


# -- handler failures ---------------------------------------------------------------


@needs_aiohttp
async def test_handler_exception_gives_500_and_the_server_keeps_serving(caplog):
    async def handler(client, request):
        if request.path == "/fail":
            raise RuntimeError("handler bug")
        return text_response("fine")

    caplog.set_level(logging.ERROR, logger="anynet.http")
    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/fail"))
        response = await read_response(reader)
        assert (response.status, response.body) == (500, b"")
        writer.write(get("/fine"))  # same connection
        assert (await read_response(reader)).body == b"fine"
        async with client_session() as session:  # and everyone else
            async with session.get(url(server.local_address(), "/fine")) as other:
                assert other.status == 200
        writer.close()
    [record] = [r for r in caplog.records if r.name == "anynet.http"]
    assert record.exc_info is not None and "handler bug" in str(record.exc_info[1])


@pytest.mark.parametrize("returned", [None, "text", 200])
async def test_handler_returning_something_else_gives_500(returned, caplog):
    async def handler(client, request):
        return returned

    caplog.set_level(logging.ERROR, logger="anynet.http")
    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/"))
        response = await read_response(reader)
        writer.close()
    assert (response.status, response.body) == (500, b"")
    assert any("instead of an HTTPResponse" in r.getMessage() for r in caplog.records)


async def test_a_response_body_that_is_not_bytes_gives_500(caplog):
    async def handler(client, request):
        response = HTTPResponse(200)
        response.body = "not bytes"
        return response

    caplog.set_level(logging.ERROR, logger="anynet.http")
    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/"))
        assert (await read_response(reader)).status == 500
        writer.close()


# -- TLS ---------------------------------------------------------------------------


@needs_aiohttp
async def test_tls(pki):
    async with serve(echo, LOCALHOST, 0, pki.server_context()) as server:
        ssl_context = pki.client_context().get(server=False)
        async with client_session() as session:
            for _ in range(2):
                address = server.local_address()
                async with session.get(
                    f"https://localhost:{address[1]}/secure", ssl=ssl_context
                ) as response:
                    assert (await response.json())["path"] == "/secure"


@needs_aiohttp
async def test_mutual_tls_shows_the_client_certificate(pki):
    subjects = []

    async def handler(client, request):
        subjects.append(client.remote_certificate().subject["CN"])
        return HTTPResponse(204)

    server_context = pki.server_context(require_client_certificate=True)
    async with serve(handler, LOCALHOST, 0, server_context) as server:
        ssl_context = pki.client_context(with_certificate=True).get(server=False)
        async with client_session() as session:
            async with session.get(
                f"https://localhost:{server.local_address()[1]}/", ssl=ssl_context
            ) as response:
                assert response.status == 204
    assert subjects == ["anynet test client"]


# -- upgrade -------------------------------------------------------------------------


class RecordingProtocol(asyncio.Protocol):
    """A stand-in for an upgraded protocol: records bytes, answers in upper case."""

    def __init__(self):
        self.received = bytearray()
        self.data_arrived = asyncio.Event()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received += data
        self.transport.write(bytes(data).upper())
        self.data_arrived.set()

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(None)

    async def wait_for(self, expected):
        while bytes(self.received) != expected:
            self.data_arrived.clear()
            await asyncio.wait_for(self.data_arrived.wait(), WAIT)


class RecordingBufferedProtocol(asyncio.BufferedProtocol, RecordingProtocol):
    """The same over get_buffer/buffer_updated, with a tiny buffer so that
    the hand-off has to fill it several times."""

    def __init__(self):
        super().__init__()
        self.buffer = bytearray(4)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.data_received(self.buffer[:nbytes])


def upgrading_handler(protocol_class, protocols, cancelled=None):
    async def upgrade(client):
        protocol = protocol_class()
        client.switch_protocol(protocol)
        protocols.append(protocol)
        try:
            await protocol.lost  # the upgraded connection lives in this task
        except asyncio.CancelledError:
            if cancelled is not None:
                cancelled.append(True)
            protocol.transport.close()
            raise

    async def handler(client, request):
        response = HTTPResponse(101)
        response.headers["Upgrade"] = "test"
        response.headers["Connection"] = "Upgrade"
        response.upgrade = upgrade
        return response

    return handler


UPGRADE_REQUEST = get("/upgrade", "Connection: Upgrade", "Upgrade: test")


@pytest.mark.parametrize("protocol_class", [RecordingProtocol, RecordingBufferedProtocol])
async def test_upgrade_hands_over_the_connection_with_the_leftover_bytes(protocol_class):
    protocols = []
    async with serve(upgrading_handler(protocol_class, protocols), LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        # The first bytes of the new protocol arrive with the request itself.
        writer.write(UPGRADE_REQUEST + b"leftover bytes")
        response = await read_response(reader)
        assert response.status == 101
        assert response.headers["upgrade"] == "test"
        assert response.headers["connection"] == "Upgrade"
        assert "content-length" not in response.headers
        [protocol] = protocols
        await protocol.wait_for(b"leftover bytes")
        writer.write(b" and more")
        await protocol.wait_for(b"leftover bytes and more")
        assert await reader.readexactly(23) == b"LEFTOVER BYTES AND MORE"
        writer.close()
        await asyncio.wait_for(protocol.lost, WAIT)


async def test_the_upgraded_protocol_learns_that_writing_is_paused():
    class FlowControlledProtocol(RecordingProtocol):
        def __init__(self):
            super().__init__()
            self.flow = []

        def pause_writing(self):
            self.flow.append("pause")

        def resume_writing(self):
            self.flow.append("resume")

    protocols = []
    handler = upgrading_handler(FlowControlledProtocol, protocols)
    padding = "a" * 16_000_000  # more than the socket buffers hold

    async def padded(client, request):
        response = await handler(client, request)
        response.headers["X-Padding"] = padding
        return response

    async with serve(padded, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address(), limit=2 * len(padding))
        writer.write(UPGRADE_REQUEST)
        await wait_until(lambda: protocols)  # the client reads nothing until the switch
        [protocol] = protocols
        assert protocol.flow == ["pause"]
        assert (await read_response(reader)).headers["x-padding"] == padding
        await wait_until(lambda: protocol.flow != ["pause"])
        assert protocol.flow == ["pause", "resume"]
        writer.close()


async def test_requests_pipelined_before_an_upgrade_are_answered_first():
    protocols = []
    handler = upgrading_handler(RecordingProtocol, protocols)

    async def router(client, request):
        return await (handler if request.path == "/upgrade" else echo)(client, request)

    async with serve(router, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/first") + UPGRADE_REQUEST + b"x")
        assert json.loads((await read_response(reader)).body)["path"] == "/first"
        assert (await read_response(reader)).status == 101
        assert await reader.readexactly(1) == b"X"
        writer.close()


async def test_an_upgrade_request_answered_without_upgrade_closes_the_connection():
    async with serve(echo, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(UPGRADE_REQUEST + get("/never-parsed"))
        response = await read_response(reader)
        assert response.status == 200
        assert response.headers["connection"] == "close"
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_an_upgrade_function_that_does_not_switch_leaves_a_closed_connection():
    async def handler(client, request):
        response = HTTPResponse(101)
        response.headers["Upgrade"] = "test"
        response.headers["Connection"] = "Upgrade"
        response.upgrade = _no_switch
        return response

    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(UPGRADE_REQUEST)
        assert (await read_response(reader)).status == 101
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_an_upgrade_response_that_cannot_be_sent_gives_500_and_no_upgrade(caplog):
    protocols = []
    handler = upgrading_handler(RecordingProtocol, protocols)

    async def bad_header(client, request):
        response = await handler(client, request)
        response.headers["X-Not-Latin-1"] = "\u2603"
        return response

    caplog.set_level(logging.ERROR, logger="anynet.http")
    async with serve(bad_header, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(UPGRADE_REQUEST)
        assert (await read_response(reader)).status == 500
        assert await read_until_closed(reader) == b""
        writer.close()
    assert protocols == []


async def _no_switch(client):
    await asyncio.sleep(0)


async def test_upgrade_on_a_request_that_did_not_ask_gives_500(caplog):
    protocols = []
    caplog.set_level(logging.ERROR, logger="anynet.http")
    async with serve(upgrading_handler(RecordingProtocol, protocols), LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/plain"))
        assert (await read_response(reader)).status == 500
        writer.close()
    assert protocols == []


async def test_switch_protocol_outside_an_upgrade_function_raises():
    errors = []

    async def handler(client, request):
        try:
            client.switch_protocol(asyncio.Protocol())
        except RuntimeError as error:
            errors.append(error)
        return HTTPResponse(204)

    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/"))
        assert (await read_response(reader)).status == 204
        writer.close()
    assert len(errors) == 1


# -- graceful stop ------------------------------------------------------------------


async def test_graceful_stop_finishes_requests_in_flight_and_closes_idle_connections():
    started = asyncio.Event()
    idle_closed = asyncio.Event()

    async def handler(client, request):
        if request.path == "/slow":
            started.set()
            # Still in flight when the stop has closed the idle connection.
            await asyncio.wait_for(idle_closed.wait(), WAIT)
        return text_response(request.path)

    async def watch_idle():
        rest = await read_until_closed(idle_reader)
        idle_closed.set()
        return rest

    async with serve(handler, LOCALHOST, 0) as server:
        address = server.local_address()
        idle_reader, idle_writer = await connect(address)
        idle_writer.write(get("/idle"))
        await read_response(idle_reader)  # now an idle keep-alive connection
        busy_reader, busy_writer = await connect(address)
        busy_writer.write(get("/slow"))
        await asyncio.wait_for(started.wait(), WAIT)
        idle_rest = asyncio.ensure_future(watch_idle())
    # The block has exited: the server stopped.
    response = await read_response(busy_reader)
    assert (response.body, response.headers["connection"]) == (b"/slow", "close")
    assert await read_until_closed(busy_reader) == b""
    assert await idle_rest == b""
    with pytest.raises(OSError):
        await connect(address)
    idle_writer.close()
    busy_writer.close()


async def test_stop_cancels_a_handler_that_outlives_shutdown_timeout():
    started = asyncio.Event()
    cancelled = []

    async def handler(client, request):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async with serve(handler, LOCALHOST, 0, shutdown_timeout=0.2) as server:
        reader, writer = await connect(server.local_address())
        writer.write(get("/"))
        await asyncio.wait_for(started.wait(), WAIT)
    assert cancelled == [True]
    assert await read_until_closed(reader) == b""
    writer.close()


async def test_stop_cancels_the_task_of_an_upgraded_connection():
    protocols, cancelled = [], []
    handler = upgrading_handler(RecordingProtocol, protocols, cancelled)
    async with serve(handler, LOCALHOST, 0) as server:
        reader, writer = await connect(server.local_address())
        writer.write(UPGRADE_REQUEST)
        assert (await read_response(reader)).status == 101
    assert cancelled == [True]
    assert await read_until_closed(reader) == b""
    writer.close()


# -- addresses and operator options ------------------------------------------------------


@needs_aiohttp
@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="SO_REUSEPORT is platform-specific")
async def test_reuse_port_lets_two_servers_share_a_port():
    async def first(client, request):
        return text_response("first")

    async def second(client, request):
        return text_response("second")

    async with serve(first, LOCALHOST, 0, reuse_port=True) as one:
        address = one.local_address()
        with pytest.raises(OSError):
            async with serve(second, LOCALHOST, address[1]):
                pass
        async with serve(second, LOCALHOST, address[1], reuse_port=True) as two:
            assert two.local_address() == address
            async with client_session() as session:
                async with session.get(url(address, "/")) as response:
                    assert await response.text() in ("first", "second")
        async with client_session() as session:
            async with session.get(url(address, "/")) as response:
                assert await response.text() == "first"


def default_route_interface_address():
    """The IPv4 address of the interface that holds the default route, read
    from the kernel's routing table and the interface itself, not from a
    route lookup as ``host=""`` does."""
    try:
        with open("/proc/net/route") as table:
            rows = [line.split() for line in table.readlines()[1:]]
    except OSError:
        pytest.skip("the routing table is read from Linux's /proc/net/route")
    # Destination and mask 0.0.0.0; the kernel prefers the lowest metric.
    defaults = [row for row in rows if row[1] == "00000000" and row[7] == "00000000"]
    if not defaults:
        pytest.skip("this machine has no IPv4 default route")
    interface = min(defaults, key=lambda row: int(row[6]))[0]
    import fcntl  # only where /proc/net/route exists

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", interface.encode()[:15])
        reply = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
    return socket.inet_ntoa(reply[20:24])


# Linux's ioctl that reads an interface's IPv4 address (linux/sockios.h).
SIOCGIFADDR = 0x8915


async def test_empty_host_binds_the_default_gateway_interface():
    expected = default_route_interface_address()
    async with serve(echo) as server:
        host, port = server.local_address()
        assert host == expected
        assert port != 0
        reader, writer = await connect((host, port))
        writer.write(get("/"))
        assert (await read_response(reader)).status == 200
        writer.close()


def test_without_a_default_route_the_error_says_so():
    # A fresh network namespace has no routes at all.
    code = (
        "from anynet._http_address import default_gateway_address\n"
        "try:\n"
        "    default_gateway_address()\n"
        "except OSError as error:\n"
        "    print(error)\n"
    )
    try:
        result = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=os.path.dirname(os.path.dirname(anynet.__file__)),
        )
    except FileNotFoundError:
        pytest.skip("needs unshare(1) to make a network namespace without routes")
    if result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"cannot make a network namespace here: {result.stderr.strip()}")
    assert "no IPv4 default route" in result.stdout


@pytest.mark.parametrize(
    "arguments, error",
    [
        (dict(port=-1), ValueError),
        (dict(port=65536), ValueError),
        (dict(host=None), TypeError),
        (dict(max_body_size=0), ValueError),
        (dict(head_timeout=-1), ValueError),
        (dict(shutdown_timeout=0), ValueError),
        (dict(backlog=0), ValueError),
    ],
)
def test_bad_arguments_raise_at_once(arguments, error):
    with pytest.raises(error):
        serve(echo, **arguments)


def test_a_handler_must_be_callable():
    with pytest.raises(TypeError):
        serve("not a function")
