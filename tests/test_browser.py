"""A real browser against anynet: headless Chromium on a page that anynet.http
serves on the same port as the WebSocket routes, over ws://, wss:// and
through nginx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import pytest

from anynet import http, websocket
from chromium import Chromium
from nginx import run_nginx
from support import TIMEOUT, echo, system_program

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>anynet browser test</title>
<script>
"use strict";
const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;

// Open a WebSocket to `path` on this page's host; resolves once it is open.
// Messages queue on the socket until nextMessage() takes them; `closed`
// resolves to the close event's code, reason and wasClean.
function openSocket(path, protocols) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(base + path, protocols);
    socket.binaryType = "arraybuffer";
    socket.queue = [];
    socket.waiting = [];
    socket.closed = new Promise((done) => {
      socket.addEventListener("close", (event) =>
        done({code: event.code, reason: event.reason, wasClean: event.wasClean}));
    });
    socket.onmessage = (event) => {
      const waiter = socket.waiting.shift();
      if (waiter) waiter(event.data); else socket.queue.push(event.data);
    };
    socket.onopen = () => resolve(socket);
    socket.onerror = () => reject(new Error("the WebSocket to " + path + " failed to open"));
  });
}

function nextMessage(socket) {
  if (socket.queue.length) return Promise.resolve(socket.queue.shift());
  return new Promise((resolve) => socket.waiting.push(resolve));
}

function hex(data) {
  return Array.from(new Uint8Array(data), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// A message of `size` bytes whose content depends on its position.
function pattern(size) {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + (i >> 8)) & 255;
  return bytes;
}
</script>
"""

TRANSPORTS = ["ws", "wss", "nginx"]
SUBPROTOCOL = "chat.v2"
SMALL_LIMIT = 1024
TRIES = 20


@pytest.fixture(scope="session")
def chromium():
    browser = Chromium(system_program("chromium"))
    yield browser
    browser.close()


class Site:
    """The page and the WebSocket routes the browser uses, and what they saw."""

    def __init__(self) -> None:
        self.url = ""
        self.router = None
        self.nginx = None
        self.closes: asyncio.Queue = asyncio.Queue()

    def routes(self):
        return [
            ("/echo", echo, {}),
            ("/chat", self.tell_subprotocol, {"protocol": SUBPROTOCOL}),
            ("/record-close", self.record_close, {}),
            ("/server-closes", self.close_first, {}),
            # Uncompressed: refused from its header while it is on its way (a
            # compressed message can only be refused once it has arrived).
            ("/small", self.read_all, {"max_message_size": SMALL_LIMIT, "compression": None}),
        ]

    @staticmethod
    async def page(client, request):
        response = http.HTTPResponse(200 if request.path == "/" else 404)
        if request.path == "/":
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            response.body = PAGE.encode()
        # No idle keep-alive connection is left to the browser's socket pool:
        # the TLS server would wait for its close_notify when stopping.
        response.headers["Connection"] = "close"
        return response

    @staticmethod
    async def tell_subprotocol(client):
        await client.send_text(client.subprotocol)
        await echo(client)

    async def record_close(self, client):
        with contextlib.suppress(websocket.ConnectionClosed):
            async for _ in client:
                pass
        self.closes.put_nowait((client.close_code, client.close_reason))

    @staticmethod
    async def close_first(client):
        await client.disconnect(4001, "server says bye")

    @staticmethod
    async def read_all(client):
        async for _ in client:
            pass


@contextlib.asynccontextmanager
async def serve_site(transport, pki, tmp_path):
    """The site over ``transport``; ``site.url`` is the page's address."""
    site = Site()
    context = pki.server_context() if transport == "wss" else None
    async with contextlib.AsyncExitStack() as stack:
        router = site.router = await stack.enter_async_context(
            http.serve_router("127.0.0.1", 0, context)
        )
        stack.enter_context(router.route("/", site.page))
        stack.enter_context(router.route("/favicon.ico", site.page))
        for path, handler, options in site.routes():
            await stack.enter_async_context(websocket.route(handler, router, path, **options))
        port = router.local_address()[1]
        if transport == "nginx":
            site.nginx = await stack.enter_async_context(run_nginx(tmp_path / "nginx", port))
            site.url = f"http://127.0.0.1:{site.nginx.port}/"
        else:
            site.url = f"{'https' if context else 'http'}://127.0.0.1:{port}/"
        yield site


@contextlib.asynccontextmanager
async def browse(chromium, transport, pki, tmp_path):
    async with serve_site(transport, pki, tmp_path) as site, chromium.page(site.url) as page:
        yield site, page


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_text_and_binary_messages_echo(chromium, transport, pki, tmp_path):
    async with browse(chromium, transport, pki, tmp_path) as (_, page):
        result = await page.evaluate(
            """(async () => {
                const socket = await openSocket("/echo");
                socket.send("h\\u00e9llo \\u2713 \\ud83c\\udf0d");
                const text = await nextMessage(socket);
                socket.send(new Uint8Array([0, 1, 2, 253, 254, 255]));
                const binary = await nextMessage(socket);
                socket.close();
                return {text, binary: hex(binary), binaryIsBuffer: binary instanceof ArrayBuffer,
                        closed: await socket.closed};
            })()"""
        )
    assert result == {
        "text": "h\u00e9llo \u2713 \U0001f30d",
        "binary": "000102fdfeff",
        "binaryIsBuffer": True,
        "closed": {"code": 1005, "reason": "", "wasClean": True},
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_browser_negotiates_compression_and_exchanges_compressed_messages(
    chromium, transport, pki, tmp_path
):
    async with browse(chromium, transport, pki, tmp_path) as (_, page):
        result = await page.evaluate(
            """(async () => {
                const socket = await openSocket("/echo");
                const text = JSON.stringify({players: Array.from({length: 40}, (_, i) => ({id: i, x: i * 1.5}))});
                socket.send(text);
                const textBack = await nextMessage(socket);
                const sent = pattern(5000);
                socket.send(sent);
                const back = new Uint8Array(await nextMessage(socket));
                socket.close(1000);
                return {extensions: socket.extensions, text: textBack === text,
                        binary: back.length === sent.length && back.every((b, i) => b === sent[i]),
                        closed: await socket.closed};
            })()"""
        )
    assert result == {
        "extensions": "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "text": True,
        "binary": True,
        "closed": {"code": 1000, "reason": "", "wasClean": True},
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_one_mebibyte_message_goes_both_ways(chromium, transport, pki, tmp_path):
    size = 1 << 20
    async with browse(chromium, transport, pki, tmp_path) as (_, page):
        result = await page.evaluate(
            f"""(async () => {{
                const socket = await openSocket("/echo");
                const sent = pattern({size});
                socket.send(sent);
                const back = new Uint8Array(await nextMessage(socket));
                let same = back.length === sent.length;
                for (let i = 0; same && i < sent.length; i++) same = back[i] === sent[i];
                socket.send("t".repeat({size}));
                const text = await nextMessage(socket);
                socket.close(1000);
                return {{length: back.length, same, textLength: text.length, closed: await socket.closed}};
            }})()"""
        )
    assert result == {
        "length": size,
        "same": True,
        "textLength": size,
        "closed": {"code": 1000, "reason": "", "wasClean": True},
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_subprotocol_is_negotiated(chromium, transport, pki, tmp_path):
    async with browse(chromium, transport, pki, tmp_path) as (_, page):
        result = await page.evaluate(
            f"""(async () => {{
                const socket = await openSocket("/chat", ["chat.v1", {json.dumps(SUBPROTOCOL)}]);
                const told = await nextMessage(socket);
                socket.close();
                await socket.closed;
                return {{chosen: socket.protocol, told}};
            }})()"""
        )
    assert result == {"chosen": SUBPROTOCOL, "told": SUBPROTOCOL}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_browsers_close_code_and_reason_reach_the_server(chromium, transport, pki, tmp_path):
    async with browse(chromium, transport, pki, tmp_path) as (site, page):
        closed = await page.evaluate(
            """(async () => {
                const socket = await openSocket("/record-close");
                socket.close(4000, "bye from the browser");
                return await socket.closed;
            })()"""
        )
        seen_by_server = await asyncio.wait_for(site.closes.get(), TIMEOUT)
    assert seen_by_server == (4000, "bye from the browser")
    # The server's answering Close echoes the code (RFC 6455 section 5.5.1).
    assert (closed["code"], closed["wasClean"]) == (4000, True)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_servers_close_code_and_reason_reach_the_browser(chromium, transport, pki, tmp_path):
    async with browse(chromium, transport, pki, tmp_path) as (_, page):
        closed = await page.evaluate(
            """(async () => {
                const socket = await openSocket("/server-closes");
                return await socket.closed;
            })()"""
        )
    assert closed == {"code": 4001, "reason": "server says bye", "wasClean": True}


@pytest.mark.parametrize("size", [64 * 1024, 2 * 1024])
@pytest.mark.parametrize("transport", ["ws", "nginx"])
async def test_an_oversized_message_is_closed_with_1009_every_time(chromium, transport, size, pki, tmp_path):
    # The whole message is on its way when the server refuses it: the Close
    # frame must still reach the browser, not be overtaken by a reset, and the
    # browser's answering Close must be taken before TCP ends (behind nginx,
    # which ends both sides when one side ends, too).
    async with browse(chromium, transport, pki, tmp_path) as (site, page):
        closes = await page.evaluate(
            f"""(async () => {{
                const closes = [];
                for (let attempt = 0; attempt < {TRIES}; attempt++) {{
                    const socket = await openSocket("/small");
                    socket.send(pattern({size}));
                    const closed = await socket.closed;
                    closes.push([closed.code, closed.wasClean]);
                }}
                return closes;
            }})()""",
            wait=TIMEOUT * 3,
        )
    outcomes = {tuple(close): closes.count(close) for close in closes}
    assert outcomes == {(1009, True): TRIES}
    if site.nginx is not None:
        assert "reset by peer" not in site.nginx.error_log()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_origins_admit_the_sites_own_page_and_refuse_another(
    chromium, transport, pki, tmp_path, caplog
):
    admitted = []

    async def note_origin(client):
        admitted.append(client.request.headers.get("Origin"))
        await echo(client)

    async with browse(chromium, transport, pki, tmp_path) as (site, page):
        # The origin the browser sends is the page's: scheme, host and port.
        own_origin = site.url.rstrip("/")
        async with websocket.route(
            note_origin, site.router, "/ours", origins=[own_origin]
        ), websocket.route(note_origin, site.router, "/theirs", origins=["https://game.example"]):
            with caplog.at_level(logging.INFO, logger="anynet.websocket"):
                result = await page.evaluate(
                    """(async () => {
                        const socket = await openSocket("/ours");
                        socket.send("admitted");
                        const echoed = await nextMessage(socket);
                        socket.close();
                        await socket.closed;
                        let refused = false;
                        try {
                            (await openSocket("/theirs")).close();
                        } catch (error) {
                            refused = true;
                        }
                        return {echoed, refused};
                    })()"""
                )
    assert result == {"echoed": "admitted", "refused": True}
    assert admitted == [own_origin]
    # Refused by the origin check (403), not for another reason.
    assert any(
        "/theirs" in record.getMessage() and own_origin in record.getMessage()
        for record in caplog.records
    )
