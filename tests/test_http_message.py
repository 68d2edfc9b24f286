"""anynet.http objects without a network: headers, requests, responses, router."""

import asyncio

import pytest

from anynet.http import HTTPHeaders, HTTPRequest, HTTPResponse, HTTPRouter


def test_headers_are_case_insensitive_and_keep_the_first_spelling():
    headers = HTTPHeaders({"Content-Type": "text/plain"})
    headers["content-type"] = "application/json"
    assert headers["CONTENT-TYPE"] == "application/json"
    assert "Content-type" in headers
    assert list(headers) == ["Content-Type"]
    del headers["CONTENT-TYPE"]
    assert len(headers) == 0
    assert headers.get("content-type") is None


@pytest.mark.parametrize("fields", [{}, {"Host": "example.com:80", "X-Time": " 12:30 ", "Sec-WebSocket-Key": "a=="}])
def test_packed_headers_read_back_the_same(fields):
    headers = HTTPHeaders(fields)
    headers._append("x-time", "13:00")  # repeated on the wire: joined
    expected = dict(headers.items())
    headers._pack()
    assert hasattr(headers, "_packed")  # and no dict until the next use
    assert dict(headers.items()) == expected
    assert headers["X-TIME"] == {name.lower(): value for name, value in expected.items()}["x-time"]
    headers._pack()
    headers["Upgrade"] = "websocket"
    assert headers["upgrade"] == "websocket" and len(headers) == len(expected) + 1


@pytest.mark.parametrize(
    "name, value, error",
    [
        ("X-Split", "a\r\nSet-Cookie: evil=1", ValueError),
        ("X-Newline", "a\nb", ValueError),
        ("X-Nul", "a\x00b", ValueError),
        ("Bad Name", "value", ValueError),
        ("", "value", ValueError),
        ("X-Number", 5, TypeError),
    ],
)
def test_headers_refuse_what_could_split_a_response(name, value, error):
    headers = HTTPHeaders()
    with pytest.raises(error):
        headers[name] = value
    assert len(headers) == 0


def test_request_defaults():
    request = HTTPRequest()
    assert (request.method, request.path, request.version) == ("GET", "/", "HTTP/1.1")
    assert request.params == {}
    assert len(request.headers) == 0
    assert request.body == b""


def test_response_status_name_follows_the_code():
    response = HTTPResponse()
    assert (response.status_code, response.status_name) == (500, "Internal Server Error")
    response.status_code = 404
    assert response.status_name == "Not Found"
    assert HTTPResponse(299).status_name == "Unknown"
    assert HTTPResponse(101).status_name == "Switching Protocols"
    assert response.upgrade is None
    assert response.body == b""


@pytest.mark.parametrize("code", [99, 1000, "200", 200.0, True])
def test_response_refuses_an_invalid_status_code(code):
    with pytest.raises(ValueError):
        HTTPResponse(code)


async def _ok(client, request):
    return HTTPResponse(200)


def test_router_refuses_a_taken_path():
    router = HTTPRouter()
    router.route("/a", _ok)
    with pytest.raises(ValueError, match="already routed"):
        router.route("/a", _ok)


@pytest.mark.parametrize("path", ["a", "", None])
def test_router_refuses_a_path_without_leading_slash(path):
    with pytest.raises(ValueError):
        HTTPRouter().route(path, _ok)


def test_router_refuses_a_handler_that_is_not_callable():
    with pytest.raises(TypeError):
        HTTPRouter().route("/a", "not a function")


def test_route_with_block_removes_the_route():
    router = HTTPRouter()
    with router.route("/a", _ok):
        with pytest.raises(ValueError):
            router.route("/a", _ok)
    router.route("/a", _ok)  # free again


def test_router_remove_of_an_unknown_path_raises_key_error():
    router = HTTPRouter()
    router.route("/a", _ok)
    router.remove("/a")
    with pytest.raises(KeyError):
        router.remove("/a")


def test_router_dispatches_by_exact_path():
    router = HTTPRouter()
    router.route("/a", _ok)
    assert asyncio.run(router.handle(None, HTTPRequest(path="/a"))).status_code == 200
    assert asyncio.run(router.handle(None, HTTPRequest(path="/a/"))).status_code == 404
    assert asyncio.run(router.handle(None, HTTPRequest(path="/b"))).status_code == 404


def test_router_outside_serve_router_has_no_address():
    with pytest.raises(RuntimeError):
        HTTPRouter().local_address()
