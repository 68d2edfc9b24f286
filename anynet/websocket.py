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
headers); ``client.data`` is the application's, to keep a player's state on
the connection. ``broadcast(server.clients, message)`` encodes a message once
and writes it to every open connection.

``client = await connect(url)`` also works (the caller closes it), and
``async for client in connect(url)`` reconnects after transient failures.
``serve`` and ``route`` refuse requests before the upgrade with ``origins``
(the allowed ``Origin`` values) and ``process_request`` (a hook that may
answer instead). ``unix_serve`` and ``unix_connect`` do the same over a Unix
socket.

``connect``, ``serve`` and ``route`` take these keyword-only limits (a peer
can never make a connection spend more than they allow); an option has the
same name, default and meaning wherever it appears:

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
* ``handshake_timeout`` (``connect`` and ``serve``): seconds the opening
  handshake may take (default 10; ``None`` means the default, as for
  ``disconnect_timeout``: a handshake is always bounded); on the client side
  the TCP and TLS connection is included.
* ``ping_interval`` / ``ping_timeout``: keepalive. A ping is sent after
  ``ping_interval`` seconds (default 20) and a peer whose pong does not come
  within ``ping_timeout`` seconds (default 20) is disconnected with 1011.
  ``ping_interval=None`` turns keepalive off; ``ping_timeout=None`` keeps the
  pings but never disconnects.
* ``compression``: permessage-deflate (RFC 7692), ``"deflate"`` by default.
  A server then accepts every client that offers it (every browser does)
  and asks that both sides compress each message on its own (no context
  takeover): an idle connection holds no compression state and a broadcast
  is compressed once for all; a client offers what browsers offer. Messages
  under 64 bytes go uncompressed, and ``send(data, compress=False)`` (or
  ``send_text``) sends any one message as it is, e.g. one already
  compressed. ``None`` turns compression off; ``PerMessageDeflate(...)``
  chooses the parameters, the zlib level and that threshold. Inflated
  messages are held to ``max_message_size`` too, while they inflate.

Errors are ``WSError`` subclasses: ``ConnectionClosed`` (``ConnectionClosedOK``
or ``ConnectionClosedError``, with ``code`` and ``reason``) from every
``send``/``recv`` once the connection is closed; ``HandshakeError`` (with the
HTTP ``status``) when the server refuses the connection, or when the URL's
scheme does not match the server (``wss://`` to a plain server or ``ws://``
to a TLS one: the message names the other scheme); ``WSTimeoutError``
(also a ``TimeoutError``) when the opening handshake takes too long. Network
failures while connecting (refused, unreachable, a TLS certificate that does
not verify) propagate as the ``OSError`` the operating system reported.
"""

from __future__ import annotations

if __name__ == "__main__":
    # ``python -m anynet.websocket`` runs this file as __main__; the command
    # line imports anynet.websocket itself. Handing over before anything is
    # defined here keeps that the only copy of the module.
    from anynet._cli import main

    raise SystemExit(main(prog="python -m anynet.websocket"))

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import ssl
import sys
from types import TracebackType
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    FrozenSet,
    Generator,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    Union,
)

from anynet import _transport, http, tls
from anynet._broadcast import DEFAULT_MAX_BACKLOG, BroadcastResult, DeliveryPolicy, broadcast
from anynet._events import CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL
from anynet._handover import hand_over
from anynet._url import WebSocketURL, parse_url
from anynet._ws_admission import Admission, RequestHook, allowed_origins, check_request_hook
from anynet._ws_errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    HandshakeError,
    MessageTypeError,
    MessageCallbackSet,
    WSError,
    WSTimeoutError,
)
from anynet._ws_handler import check_handler
from anynet._deflate_negotiation import DeflateParameters, PerMessageDeflate
from anynet._ws_handshake import (
    ClientHandshake,
    ResponseHeadProtocol,
    build_request,
    check_extra_headers,
    check_request,
    check_response,
    check_subprotocol_name,
    check_subprotocols,
    generate_key,
)
from anynet._ws_options import (
    DEFAULT_COMPRESSION,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_WRITE_LIMIT,
    Compression,
    ConnectionOptions,
    connection_options_from,
    deflate_settings,
    handshake_seconds,
    keyword_arguments,
)
from anynet._ws_protocol import WebSocketClient
from anynet._ws_reconnect import (
    DEFAULT_RECONNECT_DELAY,
    DEFAULT_RECONNECT_MAX_DELAY,
    TRANSIENT_CLOSE_CODES,
    Backoff,
    is_transient,
)

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "BroadcastResult",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DeliveryPolicy",
    "HandshakeError",
    "MessageTypeError",
    "MessageCallbackSet",
    "PerMessageDeflate",
    "WSError",
    "WSTimeoutError",
    "WebSocketClient",
    "WebSocketServer",
    "broadcast",
    "connect",
    "route",
    "serve",
    "unix_connect",
    "unix_serve",
]

logger = logging.getLogger(__name__)

Handler = Callable[[WebSocketClient], Optional[Awaitable[None]]]

class connect:
    """Connect to a WebSocket server, in one of three ways.

    ``async with connect(url) as client:`` yields the connection once the
    handshake is done; at the end of the block the closing handshake runs
    (code 1000; 1011 if the block raised an exception), bounded by
    ``disconnect_timeout``.

    ``client = await connect(url)`` returns the connection; the caller
    closes it with ``await client.disconnect()``.

    ``async for client in connect(url):`` yields a connection, and another
    each time the loop comes round, reconnecting after transient failures.
    A failed attempt is repeated when the failure may pass: the connection
    refused, reset or timed out, or a handshake refusal with status 408, 429
    or 5xx. Other failures end the loop with their exception: a refusal with
    another status (``HandshakeError``, e.g. 403), a certificate that does
    not verify (``ssl.SSLError``). Between attempts the client waits: at
    most ``reconnect_delay`` seconds (default 1) after the first failure,
    twice as long after each further one, never more than
    ``reconnect_max_delay`` (default 60), each wait drawn at random between
    half and all of its bound so that clients dropped together do not come
    back together. When the loop comes round after the server closed the
    connection with 1001, 1006, 1011, 1012 or 1013, the client waits as
    after a first failure and connects again; after any other close code
    (e.g. 1000: the server ended the session, or the body disconnected) the
    loop ends. A body that finishes with the connection still open gets a
    new one at once, its old one closed normally; leaving the loop (break,
    return, an exception) closes the connection normally too, soon after.
    Exceptions raised in the body end the loop, as in any ``for`` loop:
    catch ``ConnectionClosed`` in the body to carry on.

    ``url`` is ``[ws://|wss://]host[:port][/path][?query]``. Without a
    scheme the connection uses TLS exactly when ``context`` is given; ``wss``
    without a context uses the default ``TLSContext()`` (the system's
    certificate authorities). IPv6 literals are written in brackets
    (``ws://[::1]:8000/``); the port defaults to 80 or 443 and the path to
    ``/``. A URL we cannot use raises ``ValueError`` at the call, as do the
    other arguments.

    ``protocols`` is the subprotocol offer, in order of preference; the one
    the server chose is ``client.subprotocol`` (``None`` if it chose none).
    ``headers`` are added to the upgrade request (e.g. ``Authorization``).
    The module docstring describes the limits.
    """

    def __init__(
        self,
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
        compression: Compression = DEFAULT_COMPRESSION,
        reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
        reconnect_max_delay: float = DEFAULT_RECONNECT_MAX_DELAY,
    ) -> None:
        if context is not None and not isinstance(context, tls.TLSContext):
            # connect(host, port) is the usual form of this mistake: show its URL.
            is_host_and_port = isinstance(url, str) and "/" not in url and type(context) is int
            hint = f", e.g. ws://{url}:{context}/" if is_host_and_port else ""
            raise TypeError(
                f"connect() takes a URL like ws://host:port/path{hint}; its second argument is an "
                f"optional anynet.tls.TLSContext, not {type(context).__name__}"
            )
        self._target = parse_url(url, context is not None)
        self._offer = check_subprotocols(protocols)
        self._headers = check_extra_headers(headers)
        self._options = connection_options_from(locals())
        self._timeout = handshake_seconds(handshake_timeout)
        self._backoff = Backoff(reconnect_delay, reconnect_max_delay)
        if self._target.secure and context is None:
            context = _default_client_context()
        self._context = context
        # Set by unix_connect: the socket to connect to instead of host and port.
        self._unix_path: Optional[str] = None
        self._client: Optional[WebSocketClient] = None

    def __await__(self) -> Generator[Any, None, WebSocketClient]:
        return self._open().__await__()

    async def __aenter__(self) -> WebSocketClient:
        self._client = await self._open()
        return self._client

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        client, self._client = self._client, None
        assert client is not None
        if exc is None:
            await client.disconnect()
        elif isinstance(exc, Exception):
            await client.disconnect(CLOSE_INTERNAL_ERROR)
        else:
            # Cancelled (or interrupted): no time to wait for the peer.
            client._close_without_waiting(CLOSE_GOING_AWAY, "")

    async def __aiter__(self) -> AsyncIterator[WebSocketClient]:
        failures = 0
        while True:
            try:
                client = await self._open()
            except Exception as error:
                if not is_transient(error):
                    raise
                failures += 1
                await self._wait_to_retry(failures, error)
                continue
            failures = 0
            try:
                yield client
                closed_before = client.close_code is not None
            finally:
                await client.disconnect()
            if closed_before:
                closed = client._closed_exception()
                if closed.code not in TRANSIENT_CLOSE_CODES:
                    return
                failures = 1
                await self._wait_to_retry(failures, closed)

    async def _wait_to_retry(self, failures: int, reason: BaseException) -> None:
        delay = self._backoff.wait_time(failures)
        logger.info(
            "connecting to %s again in %.2f s (%s: %s)",
            self._target.host_header,
            delay,
            type(reason).__name__,
            reason,
        )
        await asyncio.sleep(delay)

    async def _open(self) -> WebSocketClient:
        return await _open_connection(
            self._target,
            self._unix_path,
            self._context,
            self._offer,
            self._headers,
            self._options,
            self._timeout,
        )


def unix_connect(
    path: Union[str, os.PathLike[str]],
    url_path: str = "/",
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
    compression: Compression = DEFAULT_COMPRESSION,
    reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
    reconnect_max_delay: float = DEFAULT_RECONNECT_MAX_DELAY,
) -> connect:
    """``connect`` to a server on the Unix socket ``path``, e.g. one of ``unix_serve``.

    Used in the same three ways (``async with``, ``await``, ``async for``)
    with the same options. ``url_path`` is the path (and query) asked for;
    the ``Host`` header, and the name the server's TLS certificate must
    carry when ``context`` is given, is ``localhost``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if not isinstance(url_path, str) or not url_path.startswith("/"):
        raise ValueError(f"url_path is the path asked for, starting with '/', not {url_path!r}")
    scheme = "ws" if context is None else "wss"
    connector = connect(
        f"{scheme}://localhost{url_path}", context, **keyword_arguments(connect, locals())
    )
    connector._unix_path = os.fspath(path)
    return connector


@functools.lru_cache(maxsize=None)
def _default_client_context() -> tls.TLSContext:
    """The context of ``wss://`` without one: built once, as loading the
    system's CA store is slow and one SSLContext lets TLS sessions resume."""
    return tls.TLSContext()


# What OpenSSL reports when the answer to its ClientHello is not a TLS record
# (typically a plain HTTP server's "400 Bad Request").
_NOT_TLS_REASONS = frozenset(
    ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE")
)


async def _open_connection(
    target: WebSocketURL,
    unix_path: Optional[str],
    context: Optional[tls.TLSContext],
    offer: Sequence[str],
    extra_headers: Sequence[Tuple[str, str]],
    options: ConnectionOptions,
    timeout: float,
) -> WebSocketClient:
    key = generate_key()
    deflate = deflate_settings(options, is_client=True)
    deflate_offers = [] if deflate is None else [deflate]
    request = build_request(target, key, offer, extra_headers, deflate_offers)
    ssl_context = context.get(server=False) if context is not None and target.secure else None

    async def handshake() -> Tuple[asyncio.Transport, ResponseHeadProtocol, ClientHandshake]:
        head_protocol = functools.partial(
            ResponseHeadProtocol, request, over_tls=ssl_context is not None
        )
        server_hostname = target.host if ssl_context is not None else None
        try:
            if unix_path is None:
                transport, protocol = await _transport.connect(
                    head_protocol, target.host, target.port, ssl_context, server_hostname
                )
            else:
                transport, protocol = await _transport.connect_unix(
                    head_protocol, unix_path, ssl_context, server_hostname
                )
        except ssl.SSLError as error:
            if error.reason in _NOT_TLS_REASONS:
                raise HandshakeError(
                    f"the server did not answer the TLS handshake with TLS ({error.reason}): "
                    "it probably does not speak TLS, so connect with ws:// instead of wss://"
                ) from error
            raise
        try:
            head = await protocol.head
            accepted = check_response(head, key, offer, deflate_offers)
        except BaseException:
            transport.abort()
            raise
        return transport, protocol, accepted

    try:
        if sys.version_info >= (3, 11):
            # Unlike wait_for, this runs the handshake in our own task: no
            # task to create, and no loop turns to pass its result along.
            async with asyncio.timeout(timeout):
                transport, head_protocol, accepted = await handshake()
        else:
            transport, head_protocol, accepted = await asyncio.wait_for(handshake(), timeout)
    except asyncio.TimeoutError:
        raise WSTimeoutError(
            f"the opening handshake with {target.host_header} took more than {timeout:g} s"
        ) from None

    client = WebSocketClient(
        is_client=True, options=options, subprotocol=accepted.subprotocol, deflate=accepted.deflate
    )
    hand_over(
        transport,
        client,
        bytes(head_protocol.leftover),
        reading_paused=head_protocol.reading_paused,
        writing_paused=False,
    )
    return client


class WebSocketServer:
    """What ``serve`` and ``route`` yield: the endpoint and its open connections."""

    def __init__(self, router: http.HTTPRouter, path: str, clients: Set[WebSocketClient]) -> None:
        self.router = router
        self.path = path
        self._clients = clients
        self._ended = False

    @property
    def clients(self) -> FrozenSet[WebSocketClient]:
        """The connections open at this moment (a snapshot), e.g. for ``broadcast``."""
        return frozenset(self._clients)

    def local_address(self) -> Tuple[str, int]:
        """The address the server is bound to (for a router that belongs to a server)."""
        if self._ended:
            raise RuntimeError(
                "the server's `async with` block has ended, so it is no longer listening: "
                "read local_address() inside the block"
            )
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
    origins: Optional[Sequence[Optional[str]]] = None,
    process_request: Optional[RequestHook] = None,
    disconnect_timeout: Optional[float] = None,
    handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
    write_limit: int = DEFAULT_WRITE_LIMIT,
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
    compression: Compression = DEFAULT_COMPRESSION,
    reuse_port: bool = False,
    backlog: int = 1024,
) -> AsyncIterator[WebSocketServer]:
    """Run a WebSocket server on ``host``:``port`` that serves ``path``.

    An empty ``host`` means the local address of the default gateway's
    interface; port 0 lets the operating system choose (read it from
    ``server.local_address()``). ``context`` secures the server with TLS.
    Each accepted connection is given to ``handler``, an ``async`` function
    taking the ``WebSocketClient`` (a handler that certainly cannot work, such
    as a plain ``def`` or one with other parameters, raises ``TypeError`` here). When ``handler`` returns, the closing
    handshake starts (code 1000), bounded by ``disconnect_timeout``; if it
    raises, the exception is logged and the code is 1011.

    ``protocol`` is the subprotocol the server speaks: clients that do not
    offer it are refused with 400. ``handshake_timeout`` bounds the time a
    client may take to send its upgrade request.

    Before the upgrade, two checks may refuse a request, so that the handler
    never runs for it. ``origins`` lists the ``Origin`` values allowed
    (``"https://game.example"``; ``None`` in the list allows requests
    without an Origin header, i.e. clients other than browsers); any other
    origin gets 403. Scheme and host compare case-insensitively and a
    default port may be written or not (RFC 6454). Browsers always send
    their page's origin, so a browser-facing server should set this: without
    it any web page can open connections with its visitors' cookies. Then
    ``process_request(request)``, a function or an ``async`` function of the
    ``anynet.http.HTTPRequest``, may return an ``anynet.http.HTTPResponse``
    to send instead of the upgrade (its status, headers and body; e.g. 401
    for a missing token, 503 during maintenance), or ``None`` to go on. If it
    raises or returns anything else, the client gets 500 and the error is
    logged. At the end of the
    ``async with`` block, open connections are closed with 1001 (going
    away), within ``disconnect_timeout``.

    This is ``anynet.http.serve_router`` plus ``route``: further HTTP routes
    can be added beside the WebSocket with ``server.router.route(...)``.
    ``reuse_port`` (SO_REUSEPORT, so that several processes can share the
    port) and ``backlog`` are passed to the HTTP server.
    """
    # Every argument is checked before the server starts listening.
    _check_context(context)
    endpoint = _endpoint(handler, locals())
    head_timeout = handshake_seconds(handshake_timeout)
    async with http.serve_router(
        host,
        port,
        context,
        head_timeout=head_timeout,
        reuse_port=reuse_port,
        backlog=backlog,
    ) as router:
        async with _route(router, path, endpoint) as server:
            yield server


@contextlib.asynccontextmanager
async def unix_serve(
    handler: Handler,
    path: Union[str, os.PathLike[str]],
    context: Optional[tls.TLSContext] = None,
    *,
    url_path: str = "/",
    protocol: Optional[str] = None,
    origins: Optional[Sequence[Optional[str]]] = None,
    process_request: Optional[RequestHook] = None,
    disconnect_timeout: Optional[float] = None,
    handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
    write_limit: int = DEFAULT_WRITE_LIMIT,
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
    compression: Compression = DEFAULT_COMPRESSION,
    backlog: int = 1024,
) -> AsyncIterator[WebSocketServer]:
    """``serve`` on the Unix socket ``path``, answering WebSocket requests for ``url_path``.

    For servers behind a proxy on the same machine (several processes behind
    nginx, each on its own socket): a Unix socket skips TCP, and its file's
    permissions say who may connect. A socket file already at ``path`` is
    replaced, and the file is removed when the server stops.
    ``server.local_address()`` is ``(path, 0)``; so is each connection's
    ``local_address()``, and its ``remote_address()`` is ``("", 0)`` (behind
    a proxy, the client's address is in the headers the proxy adds, such as
    ``X-Forwarded-For``). The other arguments are those of ``serve``.
    """
    _check_context(context)
    endpoint = _endpoint(handler, locals())
    head_timeout = handshake_seconds(handshake_timeout)
    async with http.unix_serve_router(
        path, context, head_timeout=head_timeout, backlog=backlog
    ) as router:
        async with _route(router, url_path, endpoint) as server:
            yield server


@contextlib.asynccontextmanager
async def route(
    handler: Handler,
    router: http.HTTPRouter,
    path: str,
    *,
    protocol: Optional[str] = None,
    origins: Optional[Sequence[Optional[str]]] = None,
    process_request: Optional[RequestHook] = None,
    disconnect_timeout: Optional[float] = None,
    max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
    max_queue: Optional[int] = DEFAULT_MAX_QUEUE,
    write_limit: int = DEFAULT_WRITE_LIMIT,
    ping_interval: Optional[float] = DEFAULT_PING_INTERVAL,
    ping_timeout: Optional[float] = DEFAULT_PING_TIMEOUT,
    compression: Compression = DEFAULT_COMPRESSION,
) -> AsyncIterator[WebSocketServer]:
    """Serve WebSocket connections on ``path`` of an HTTP ``router``.

    The route is an ordinary HTTP route whose response upgrades the
    connection; other routes of the router keep answering plain HTTP.
    ``handler``, ``protocol``, ``origins``, ``process_request`` and the
    limits are as for ``serve``; the handler's ``client.request`` is the HTTP
    request of the handshake. At the
    end of the ``async with`` block the route is removed and open
    connections are closed with 1001 (going away), within
    ``disconnect_timeout``.
    """
    endpoint = _endpoint(handler, locals())
    async with _route(router, path, endpoint) as server:
        yield server


def _endpoint(handler: Handler, arguments: Mapping[str, Any]) -> _Endpoint:
    """The endpoint of ``serve``/``route``, from their arguments (``locals()``)."""
    check_handler(handler)
    protocol = arguments["protocol"]
    _check_protocol(protocol)
    hook = arguments["process_request"]
    check_request_hook(hook)
    admission = Admission(allowed_origins(arguments["origins"]), hook)
    return _Endpoint(handler, protocol, admission, connection_options_from(arguments))


@contextlib.asynccontextmanager
async def _route(
    router: http.HTTPRouter, path: str, endpoint: _Endpoint
) -> AsyncIterator[WebSocketServer]:
    server = WebSocketServer(router, path, endpoint.clients)
    try:
        with router.route(path, endpoint.answer):
            yield server
    finally:
        server._ended = True
        await endpoint.close_all()


class _Endpoint:
    """Answers upgrade requests on one route and runs the handler per connection."""

    def __init__(
        self,
        handler: Handler,
        protocol: Optional[str],
        admission: Admission,
        options: ConnectionOptions,
    ) -> None:
        self._handler = handler
        self._protocol = protocol
        self._admission = admission
        self._options = options
        self._deflate = deflate_settings(options, is_client=False)
        self.clients: Set[WebSocketClient] = set()

    async def answer(self, client: http.HTTPConnection, request: http.HTTPRequest) -> http.HTTPResponse:
        refusal = await self._admission.refusal(request)
        if refusal is not None:
            return refusal
        verdict = check_request(
            request.method, request.version, request.headers, self._protocol, self._deflate
        )
        response = http.HTTPResponse(verdict.status)
        for name, value in verdict.headers:
            response.headers[name] = value
        if verdict.status == 101:
            response.upgrade = functools.partial(self._run, request, verdict.subprotocol, verdict.deflate)
        else:
            response.headers["Content-Type"] = "text/plain; charset=utf-8"
            response.body = (verdict.message + "\n").encode()
        return response

    async def _run(
        self,
        request: http.HTTPRequest,
        subprotocol: Optional[str],
        deflate: Optional[DeflateParameters],
        client: http.HTTPConnection,
    ) -> None:
        # This runs in the HTTP server's task for the connection, right after
        # the 101 response: the handler needs no task of its own.
        connection = WebSocketClient(
            is_client=False,
            options=self._options,
            subprotocol=subprotocol,
            request=request,
            deflate=deflate,
        )
        try:
            client.switch_protocol(connection)
        except ConnectionResetError:
            logger.debug("client left before the WebSocket upgrade on %s", request.path)
            return
        self.clients.add(connection)
        # The handshake is done; the handler may never read the headers again.
        request.headers._pack()
        kept = False
        try:
            code = CLOSE_NORMAL
            try:
                running = self._handler(connection)
                if inspect.isawaitable(running):
                    await running
                elif running is None and connection._message_callback_set():
                    # A callback handler: the connection lives on with no
                    # task (and so none of this frame), in self.clients until
                    # it is lost, and its callback does the rest.
                    kept = connection._keep_in(self.clients)
                    return
                else:
                    logger.error(
                        "the WebSocket handler %r returned %r, not an awaitable; "
                        "a handler is an `async def handler(client)`, or a plain "
                        "function that sets a message callback",
                        self._handler,
                        running,
                    )
                    code = CLOSE_INTERNAL_ERROR
            except ConnectionClosed:
                pass  # the usual way a handler learns that its peer left
            except Exception:
                logger.exception("WebSocket handler failed on %s", request.path)
                code = CLOSE_INTERNAL_ERROR
            await connection.disconnect(code)
        except BaseException:
            # The server is stopping and cancelled us: say so and go.
            connection._close_without_waiting(CLOSE_GOING_AWAY, "")
            raise
        finally:
            if not kept:
                self.clients.discard(connection)

    async def close_all(self) -> None:
        connections = list(self.clients)
        if connections:
            await asyncio.gather(
                *(connection.disconnect(CLOSE_GOING_AWAY) for connection in connections),
                return_exceptions=True,
            )


def _check_protocol(protocol: Optional[str]) -> None:
    if protocol is not None:
        check_subprotocol_name(protocol)


def _check_context(context: Optional[tls.TLSContext]) -> None:
    if context is not None and not isinstance(context, tls.TLSContext):
        raise TypeError(
            f"the TLS context must be an anynet.tls.TLSContext, not {type(context).__name__}"
        )

