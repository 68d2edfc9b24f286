"""A WebSocket (RFC 6455) client and server for asyncio.

A client::

    from anynet import websocket

    async with websocket.connect("ws://127.0.0.1:8000/chat") as client:
        await client.send_text("hello")
        print(await client.recv_text())

A server that echoes every message with its own type::

    async def echo(client: websocket.WebSocketClient) -> None:
        async for message in client:
            if isinstance(message, bytes):
                await client.send(message)
            else:
                await client.send_text(message)

    async with websocket.serve(echo, "127.0.0.1", 8000) as server:
        print("listening on", server.local_address())
        await asyncio.Event().wait()

``recv()`` and ``recv_text()`` take the next message of their type;
``recv_message()`` and ``async for`` take both in arrival order. The handler
reads its handshake request from ``client.request`` (path, query parameters,
headers). ``broadcast(server.clients, message)`` encodes a message once and
writes it to every open connection.

``connect``, ``serve`` and ``route`` take these keyword-only limits (a peer
can never make a connection spend more than they allow):

* ``max_message_size``: largest message accepted, in bytes (default 1 MiB;
  ``None`` for no limit). A bigger one closes the connection with 1009.
* ``max_queue``: unread messages at which the connection stops reading from
  the socket until the application has read the queue down to a quarter of
  it (default 32; ``None`` for no limit). The check follows each read, so the
  messages of one read (at most what one socket read holds) all queue.
* ``write_limit``: bytes waiting to be sent above which ``send`` waits for
  the peer to read (default 64 KiB).
* ``disconnect_timeout``: seconds the closing handshake and the TCP close
  may take before the connection is dropped (``None``, the default, means
  5 seconds).
* ``handshake_timeout``: seconds the opening handshake may take (default
  10); on the client side the TCP and TLS connection is included.
* ``ping_interval`` / ``ping_timeout``: keepalive. A ping is sent after
  ``ping_interval`` seconds (default 20) and a peer whose pong does not come
  within ``ping_timeout`` seconds (default 20) is disconnected with 1011.
  ``ping_interval=None`` turns keepalive off; ``ping_timeout=None`` keeps the
  pings but never disconnects.

Errors are ``WSError`` subclasses: ``ConnectionClosed`` (``ConnectionClosedOK``
or ``ConnectionClosedError``, with ``code`` and ``reason``) from every
``send``/``recv`` once the connection is closed; ``HandshakeError`` (with the
HTTP ``status``) when the server refuses the connection; ``WSTimeoutError``
(also a ``TimeoutError``) when the opening handshake takes too long. Network
failures while connecting (refused, unreachable, a TLS certificate that does
not verify) propagate as the ``OSError`` the operating system reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import sys
from typing import (
    AsyncIterator,
    Awaitable,
    Callable,
    FrozenSet,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from anynet import _transport, http, tls
from anynet._events import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL
from anynet._url import WebSocketURL, parse_url
from anynet._ws_errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    WSError,
    WSTimeoutError,
)
from anynet._ws_handshake import (
    ResponseHeadProtocol,
    build_request,
    check_extra_headers,
    check_request,
    check_response,
    check_subprotocols,
    generate_key,
)
from anynet._ws_options import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_WRITE_LIMIT,
    ConnectionOptions,
    connection_options,
    optional_seconds,
    positive_seconds,
)
from anynet._ws_protocol import WebSocketClient, broadcast

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "HandshakeError",
    "WSError",
    "WSTimeoutError",
    "WebSocketClient",
    "WebSocketServer",
    "broadcast",
    "connect",
    "route",
    "serve",
]

logger = logging.getLogger(__name__)

Handler = Callable[[WebSocketClient], Awaitable[None]]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@contextlib.asynccontextmanager
async def connect(
    url: str,
    context: Optional[tls.TLSContext] = None,
    *,
    protocols: Optional[Sequence[str]] = None,
    disconnect_timeout: Optional[float] = None,
    headers: Optional[Mapping[str, str]] = None,
    handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
    write_limit: int = DEFAULT_WRITE_LIMIT,
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
) -> AsyncIterator[WebSocketClient]:
    """Connect to a WebSocket server; yield the connection once the handshake is done.

    ``url`` is ``[ws://|wss://]host[:port][/path][?query]``. Without a
    scheme the connection uses TLS exactly when ``context`` is given; ``wss``
    without a context uses the default ``TLSContext()`` (the system's
    certificate authorities). IPv6 literals are written in brackets
    (``ws://[::1]:8000/``); the port defaults to 80 or 443 and the path to
    ``/``. A URL we cannot use raises ``ValueError``.

    ``protocols`` is the subprotocol offer, in order of preference; the one
    the server chose is ``client.subprotocol`` (``None`` if it chose none).
    ``headers`` are added to the upgrade request (e.g. ``Authorization``).
    The module docstring describes the limits.

    At the end of the ``async with`` block the closing handshake runs (code
    1000; 1011 if the block raised an exception), bounded by
    ``disconnect_timeout``.
    """
    _check_context(context)
    target = parse_url(url, context is not None)
    offer = check_subprotocols(protocols)
    extra_headers = check_extra_headers(headers)
    options = connection_options(
        max_message_size, max_queue, write_limit, disconnect_timeout, ping_interval, ping_timeout
    )
    timeout = optional_seconds("handshake_timeout", handshake_timeout)
    if target.secure and context is None:
        context = _default_client_context()
    client = await _open_connection(target, context, offer, extra_headers, options, timeout)
    try:
        yield client
    except Exception:
        await client.disconnect(CLOSE_INTERNAL_ERROR)
        raise
    except BaseException:
        # Cancelled (or interrupted): no time to wait for the peer.
        client._close_now(CLOSE_GOING_AWAY, "")
        raise
    else:
        await client.disconnect()


@functools.lru_cache(maxsize=None)
def _default_client_context() -> tls.TLSContext:
    """The context of ``wss://`` without one: built once, as loading the
    system's CA store is slow and one SSLContext lets TLS sessions resume."""
    return tls.TLSContext()


async def _open_connection(
    target: WebSocketURL,
    context: Optional[tls.TLSContext],
    offer: Sequence[str],
    extra_headers: Sequence[Tuple[str, str]],
    options: ConnectionOptions,
    timeout: Optional[float],
) -> WebSocketClient:
    key = generate_key()
    request = build_request(target, key, offer, extra_headers)
    ssl_context = context.get(server=False) if context is not None and target.secure else None

    async def handshake() -> Tuple[asyncio.Transport, ResponseHeadProtocol, Optional[str]]:
        transport, protocol = await _transport.connect(
            lambda: ResponseHeadProtocol(request), target.host, target.port, ssl_context, target.host
        )
        try:
            head = await protocol.head
            subprotocol = check_response(head, key, offer)
        except BaseException:
            transport.abort()
            raise
        return transport, protocol, subprotocol

    try:
        if sys.version_info >= (3, 11):
            # Unlike wait_for, this runs the handshake in our own task: no
            # task to create, and no loop turns to pass its result along.
            async with asyncio.timeout(timeout):
                transport, head_protocol, subprotocol = await handshake()
        else:
            transport, head_protocol, subprotocol = await asyncio.wait_for(handshake(), timeout)
    except asyncio.TimeoutError:
        raise WSTimeoutError(
            f"the opening handshake with {target.host_header} took more than {timeout:g} s"
        ) from None

    client = WebSocketClient(is_client=True, options=options, subprotocol=subprotocol)
    transport.set_protocol(client)
    client.connection_made(transport)
    if head_protocol.reading_paused:
        # Resume first: the early data may fill the queue and pause reading again.
        transport.resume_reading()
    if head_protocol.leftover:
        client._receive_early_data(bytes(head_protocol.leftover))
    return client


class WebSocketServer:
    """What ``serve`` and ``route`` yield: the endpoint and its open connections."""

    def __init__(self, router: http.HTTPRouter, path: str) -> None:
        self.router = router
        self.path = path
        self._clients: Set[WebSocketClient] = set()

    @property
    def clients(self) -> FrozenSet[WebSocketClient]:
        """The connections open at this moment (a snapshot), e.g. for ``broadcast``."""
        return frozenset(self._clients)

    def local_address(self) -> Tuple[str, int]:
        """The address the server is bound to (for a router that belongs to a server)."""
        return self.router.local_address()


@contextlib.asynccontextmanager
async def serve(
    handler: Handler,
    host: str = "",
    port: int = 0,
    context: Optional[tls.TLSContext] = None,
    *,
    path: str = "/",
    protocol: Optional[str] = None,
    disconnect_timeout: Optional[float] = None,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
    write_limit: int = DEFAULT_WRITE_LIMIT,
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
    reuse_port: bool = False,
    backlog: int = 1024,
) -> AsyncIterator[WebSocketServer]:
    """Run a WebSocket server on ``host``:``port`` that serves ``path``.

    An empty ``host`` means the local address of the default gateway's
    interface; port 0 lets the operating system choose (read it from
    ``server.local_address()``). ``context`` secures the server with TLS.
    Each accepted connection is given to ``handler``, an ``async`` function
    taking the ``WebSocketClient``. When ``handler`` returns, the closing
    handshake starts (code 1000), bounded by ``disconnect_timeout``; if it
    raises, the exception is logged and the code is 1011.

    ``protocol`` is the subprotocol the server speaks: clients that do not
    offer it are refused with 400. ``handshake_timeout`` bounds the time a
    client may take to send its upgrade request. At the end of the
    ``async with`` block, open connections are closed with 1001 (going
    away), within ``disconnect_timeout``.

    This is ``anynet.http.serve_router`` plus ``route``: further HTTP routes
    can be added beside the WebSocket with ``server.router.route(...)``.
    ``reuse_port`` (SO_REUSEPORT, so that several processes can share the
    port) and ``backlog`` are passed to the HTTP server.
    """
    # Every argument is checked before the server starts listening.
    _check_handler(handler)
    _check_context(context)
    _check_protocol(protocol)
    options = connection_options(
        max_message_size, max_queue, write_limit, disconnect_timeout, ping_interval, ping_timeout
    )
    head_timeout = positive_seconds("handshake_timeout", handshake_timeout)
    async with http.serve_router(
        host,
        port,
        context,
        head_timeout=head_timeout,
        reuse_port=reuse_port,
        backlog=backlog,
    ) as router:
        async with _route(handler, router, path, protocol, options) as server:
            yield server


@contextlib.asynccontextmanager
async def route(
    handler: Handler,
    router: http.HTTPRouter,
    path: str,
    *,
    protocol: Optional[str] = None,
    disconnect_timeout: Optional[float] = None,
    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
    write_limit: int = DEFAULT_WRITE_LIMIT,
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
) -> AsyncIterator[WebSocketServer]:
    """Serve WebSocket connections on ``path`` of an HTTP ``router``.

    The route is an ordinary HTTP route whose response upgrades the
    connection; other routes of the router keep answering plain HTTP.
    ``handler``, ``protocol`` and the limits are as for ``serve``; the
    handler's ``client.request`` is the HTTP request of the handshake. At the
    end of the ``async with`` block the route is removed and open
    connections are closed with 1001 (going away), within
    ``disconnect_timeout``.
    """
    _check_handler(handler)
    _check_protocol(protocol)
    options = connection_options(
        max_message_size, max_queue, write_limit, disconnect_timeout, ping_interval, ping_timeout
    )
    async with _route(handler, router, path, protocol, options) as server:
        yield server


@contextlib.asynccontextmanager
async def _route(
    handler: Handler,
    router: http.HTTPRouter,
    path: str,
    protocol: Optional[str],
    options: ConnectionOptions,
) -> AsyncIterator[WebSocketServer]:
    server = WebSocketServer(router, path)
    endpoint = _Endpoint(handler, protocol, options, server._clients)
    try:
        with router.route(path, endpoint.answer):
            yield server
    finally:
        await endpoint.close_all()


class _Endpoint:
    """Answers upgrade requests on one route and runs the handler per connection."""

    def __init__(
        self,
        handler: Handler,
        protocol: Optional[str],
        options: ConnectionOptions,
        clients: Set[WebSocketClient],
    ) -> None:
        self._handler = handler
        self._protocol = protocol
        self._options = options
        self._clients = clients

    async def answer(self, client: http.HTTPConnection, request: http.HTTPRequest) -> http.HTTPResponse:
        verdict = check_request(request.method, request.version, request.headers, self._protocol)
        response = http.HTTPResponse(verdict.status)
        for name, value in verdict.headers:
            response.headers[name] = value
        if verdict.status == 101:
            response.upgrade = functools.partial(self._run, request, verdict.subprotocol)
        else:
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
            response.body = (verdict.message + "\n").encode()
        return response

    async def _run(
        self, request: http.HTTPRequest, subprotocol: Optional[str], client: http.HTTPConnection
    ) -> None:
        # This runs in the HTTP server's task for the connection, right after
        # the 101 response: the handler needs no task of its own.
        connection = WebSocketClient(
            is_client=False, options=self._options, subprotocol=subprotocol, request=request
        )
        try:
            client.switch_protocol(connection)
        except ConnectionResetError:
            logger.debug("client left before the WebSocket upgrade on %s", request.path)
            return
        self._clients.add(connection)
        try:
            code = CLOSE_NORMAL
            try:
                await self._handler(connection)
            except ConnectionClosed:
                pass  # the usual way a handler learns that its peer left
            except Exception:
                logger.exception("WebSocket handler failed on %s", request.path)
                code = CLOSE_INTERNAL_ERROR
            await connection.disconnect(code)
        except BaseException:
            # The server is stopping and cancelled us: say so and go.
            connection._close_now(CLOSE_GOING_AWAY, "")
            raise
        finally:
            self._clients.discard(connection)

    async def close_all(self) -> None:
        connections = list(self._clients)
        if connections:
            await asyncio.gather(
                *(connection.disconnect(CLOSE_GOING_AWAY) for connection in connections),
                return_exceptions=True,
            )


def _check_handler(handler: Handler) -> None:
    if not callable(handler):
        raise TypeError(f"the handler must be an async function, not {type(handler).__name__}")


def _check_protocol(protocol: Optional[str]) -> None:
    if protocol is not None and (not isinstance(protocol, str) or not _TOKEN.fullmatch(protocol)):
        raise ValueError(f"invalid subprotocol name: {protocol!r}")


def _check_context(context: Optional[tls.TLSContext]) -> None:
    if context is not None and not isinstance(context, tls.TLSContext):
        raise TypeError(
            f"the TLS context must be an anynet.tls.TLSContext, not {type(context).__name__}"
        )


if __name__ == "__main__":
    from anynet._cli import main

    raise SystemExit(main())
