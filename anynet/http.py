"""A small, strict HTTP/1.1 server with a router.

It is the front door of a WebSocket server: a WebSocket route is an ordinary
route whose response upgrades the connection, so a health check and a
WebSocket endpoint can share one port. Requests are parsed by httptools
(llhttp); every resource a client can make the server spend is bounded (see
``serve``).

Usage::

    async def hello(client, request):
        response = HTTPResponse(200)
        response.body = b"hello"
        return response

    async with serve_router("127.0.0.1", 8080) as router:
        router.route("/hello", hello)
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional, Union

from anynet._http_address import TCPAddress, UnixAddress, default_gateway_address, host_port
from anynet._http_connection import (
    Handler,
    HTTPConnection,
    HTTPServerProtocol,
    ServerLimits,
    ServerState,
)
from anynet._http_message import HTTPHeaders, HTTPRequest, HTTPResponse
from anynet._transport import Server, listen, listen_unix

if TYPE_CHECKING:
    from anynet.tls import TLSContext

__all__ = [
    "HTTPConnection",
    "HTTPHeaders",
    "HTTPRequest",
    "HTTPResponse",
    "HTTPRoute",
    "HTTPRouter",
    "HTTPServer",
    "serve",
    "serve_router",
    "unix_serve",
    "unix_serve_router",
]

logger = logging.getLogger(__name__)

_DEFAULT_LIMITS = ServerLimits()


class HTTPRoute:
    """A route of an :class:`HTTPRouter`; leaving its ``with`` block removes it."""

    __slots__ = ("_router", "path")

    def __init__(self, router: HTTPRouter, path: str) -> None:
        self._router = router
        self.path = path

    def __enter__(self) -> HTTPRoute:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._router.remove(self.path)


class HTTPRouter:
    """Dispatches requests to handlers by exact path; an unknown path gets 404.

    The router made by :func:`serve_router` also tells the server's address
    through ``local_address()``.
    """

    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}
        self._server: Optional[HTTPServer] = None

    def route(self, path: str, handler: Handler) -> HTTPRoute:
        """Send requests for ``path`` (exact, without query) to the async
        ``handler(client, request) -> HTTPResponse``.

        Raises ValueError if ``path`` is taken or does not start with ``/``.
        The returned route removes itself at the end of a ``with`` block.
        """
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"a route path starts with '/', got {path!r}")
        if not callable(handler):
            raise TypeError(f"a route handler must be an async function, not {handler!r}")
        if path in self._routes:
            raise ValueError(f"the path {path!r} is already routed")
        self._routes[path] = handler
        return HTTPRoute(self, path)

    def remove(self, path: str) -> None:
        """Remove the route of ``path``; KeyError if there is none."""
        try:
            del self._routes[path]
        except KeyError:
            raise KeyError(f"the path {path!r} is not routed") from None

    async def handle(self, client: HTTPConnection, request: HTTPRequest) -> HTTPResponse:
        """The request handler that dispatches to the routes."""
        handler = self._routes.get(request.path)
        if handler is None:
            logger.debug("no route for %s %s", request.method, request.path)
            return HTTPResponse(404)
        return await handler(client, request)

    def local_address(self) -> tuple[str, int]:
        """The address of the server that :func:`serve_router` runs for this router."""
        if self._server is None:
            raise RuntimeError("this router is not being served by serve_router()")
        return self._server.local_address()


class HTTPServer:
    """A listening HTTP server; made by :func:`serve`, used as ``async with``."""

    def __init__(
        self,
        handler: Handler,
        address: Union[TCPAddress, UnixAddress],
        context: Optional[TLSContext],
        limits: ServerLimits,
        backlog: int,
    ) -> None:
        self._handler = handler
        self._address = address
        self._context = context
        self._limits = limits
        self._backlog = backlog
        self._state = ServerState()
        self._server: Optional[Server] = None
        # The Unix socket's file as created, so that we remove only our own.
        self._socket_file: Optional[os.stat_result] = None

    def local_address(self) -> tuple[str, int]:
        """The address the server listens on, ``(host, port)`` (the first
        listening socket's, when the host name resolved to several); on a
        Unix socket, ``(path, 0)``."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not running")
        return host_port(self._server.sockets[0].getsockname())

    async def __aenter__(self) -> HTTPServer:
        if self._server is not None or self._state.stopping:
            raise RuntimeError("an HTTPServer can be started only once")
        ssl = self._context.get(server=True) if self._context is not None else None
        limits, state, handler = self._limits, self._state, self._handler
        address = self._address

        def protocol() -> HTTPServerProtocol:
            return HTTPServerProtocol(handler, limits, state)

        # The TLS handshake comes before the request head; bound it the same way.
        if isinstance(address, UnixAddress):
            self._server = await listen_unix(
                protocol,
                address.path,
                ssl_context=ssl,
                handshake_timeout=limits.head_timeout,
                backlog=self._backlog,
            )
            self._socket_file = os.stat(address.path)
            logger.info("HTTP server listening on %s", address.path)
        else:
            self._server = await listen(
                protocol,
                address.host or default_gateway_address(),
                address.port,
                ssl_context=ssl,
                handshake_timeout=limits.head_timeout,
                backlog=self._backlog,
                reuse_port=address.reuse_port,
            )
            logger.info("HTTP server listening on %s:%d", *self.local_address())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        """Stop accepting, give requests in flight ``shutdown_timeout`` to be
        answered, then close whatever is left."""
        assert self._server is not None
        state = self._state
        state.stopping = True
        self._server.close()
        self._remove_socket_file()
        for connection in list(state.connections):
            connection.shut_down()
        if not await state.wait_all_gone(self._limits.shutdown_timeout):
            for connection in list(state.connections):
                connection.abort()
            if not await state.wait_all_gone(self._limits.shutdown_timeout):
                logger.warning(
                    "%d HTTP connection(s) did not end after cancellation", len(state.connections)
                )
        try:
            # Since Python 3.12 this also waits for connections the server
            # cannot end itself: those an upgrade function took over and kept.
            await asyncio.wait_for(self._server.wait_closed(), self._limits.shutdown_timeout)
        except asyncio.TimeoutError:
            logger.warning("HTTP server stopped with connections still open")
        else:
            logger.info("HTTP server stopped")

    def _remove_socket_file(self) -> None:
        """Remove our Unix socket's file (Python 3.13's asyncio does it too),
        unless another server has put its own in its place meanwhile."""
        created = self._socket_file
        if created is None:
            return
        assert isinstance(self._address, UnixAddress)
        with contextlib.suppress(FileNotFoundError):
            now = os.stat(self._address.path)
            if (now.st_dev, now.st_ino) == (created.st_dev, created.st_ino):
                os.unlink(self._address.path)


def serve(
    handler: Handler,
    host: str = "",
    port: int = 0,
    context: Optional[TLSContext] = None,
    *,
    max_url_length: int = _DEFAULT_LIMITS.max_url_length,
    max_head_size: int = _DEFAULT_LIMITS.max_head_size,
    max_headers: int = _DEFAULT_LIMITS.max_headers,
    max_body_size: int = _DEFAULT_LIMITS.max_body_size,
    max_pipelined: int = _DEFAULT_LIMITS.max_pipelined,
    head_timeout: float = _DEFAULT_LIMITS.head_timeout,
    body_timeout: float = _DEFAULT_LIMITS.body_timeout,
    idle_timeout: float = _DEFAULT_LIMITS.idle_timeout,
    shutdown_timeout: float = _DEFAULT_LIMITS.shutdown_timeout,
    backlog: int = 1024,
    reuse_port: bool = False,
) -> HTTPServer:
    """An HTTP/1.1 server, to be used as ``async with serve(...) as server``.

    ``handler(client, request)`` is an async function returning an
    :class:`HTTPResponse`; if it raises (logged with its traceback) or returns
    anything else, the client gets an empty 500. Requests of one connection are
    answered in order (keep-alive and pipelining); HTTP/1.0 keeps a connection
    only when asked to. ``client`` is an :class:`HTTPConnection`.

    An empty ``host`` means the local address of the interface that holds the
    IPv4 default route (OSError if the machine has none); port 0 lets the
    operating system choose: ``server.local_address()`` tells. With ``context``
    (a TLSContext) the server speaks TLS.

    Limits, each with its answer:

    - ``max_url_length`` (8 KiB): the request target; longer gets 414.
    - ``max_head_size`` (16 KiB): request line and header fields together;
      larger gets 431.
    - ``max_headers`` (100): header fields; more get 431.
    - ``max_body_size`` (1 MiB): a body announced larger by Content-Length
      gets 413 before it is read; a chunked body gets 413 once it grows larger.
    - ``max_pipelined`` (16): requests queued behind the one being answered;
      beyond that the server stops reading the connection until it catches up.
    - ``head_timeout`` (10 s): time for a complete request head, counted from
      the connection (after the TLS handshake, which has the same bound) or,
      for a later request, from the read in which it began; then the
      connection is dropped without a response (slowloris). Time during which
      the server itself stopped reading (``max_pipelined``) does not count.
    - ``body_timeout`` (30 s): time for a complete body once the head is in;
      then the connection is dropped (a slow upload).
    - ``idle_timeout`` (60 s): a keep-alive connection may wait this long for
      its next request, and a client may take this long to accept a response,
      before the connection is dropped.

    A malformed request gets 400. After any of these errors the connection is
    closed. A request that asks to upgrade ends HTTP on its connection: unless
    the response's ``upgrade`` takes the connection over, it is closed after
    the response.

    Operators: ``backlog`` (1024) is the listen queue, ``reuse_port`` sets
    SO_REUSEPORT so that several processes can serve one port; accepted
    sockets get TCP_NODELAY. Out of file descriptors, the server stops
    accepting, logs one warning and retries every 0.1 s; clients wait in the
    listen queue meanwhile. When the ``async with`` block exits, the server
    stops accepting, closes idle connections, cancels the tasks of upgraded
    connections (their upgrade function sees the cancellation) and gives
    requests in flight ``shutdown_timeout`` (5 s) to be answered; then it
    closes what is left.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, not {port!r}")
    limits = ServerLimits(
        max_url_length=max_url_length,
        max_head_size=max_head_size,
        max_headers=max_headers,
        max_body_size=max_body_size,
        max_pipelined=max_pipelined,
        head_timeout=head_timeout,
        body_timeout=body_timeout,
        idle_timeout=idle_timeout,
        shutdown_timeout=shutdown_timeout,
    )
    address = TCPAddress(host, port, bool(reuse_port))
    return _server(handler, address, context, limits, backlog)


def unix_serve(
    handler: Handler,
    path: Union[str, os.PathLike[str]],
    context: Optional[TLSContext] = None,
    *,
    backlog: int = 1024,
    **limits: Any,
) -> HTTPServer:
    """An HTTP/1.1 server on the Unix socket ``path``, used like :func:`serve`.

    Behind a proxy on the same machine (nginx's ``proxy_pass
    http://unix:/run/game.sock``), a Unix socket costs less than TCP and
    its file's permissions say who may connect. A socket file already at
    ``path`` (left by a server that did not stop cleanly) is replaced; the
    file is removed when the server stops. ``local_address()`` is
    ``(path, 0)``. Takes the keyword options of :func:`serve` but
    ``reuse_port``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if "reuse_port" in limits:
        raise TypeError("reuse_port is an option of TCP servers: give each process its own socket")
    return _server(handler, UnixAddress(os.fspath(path)), context, ServerLimits(**limits), backlog)


def _server(
    handler: Handler,
    address: Union[TCPAddress, UnixAddress],
    context: Optional[TLSContext],
    limits: ServerLimits,
    backlog: int,
) -> HTTPServer:
    if not callable(handler):
        raise TypeError(f"handler must be an async function, not {handler!r}")
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog <= 0:
        raise ValueError(f"backlog must be a positive int, not {backlog!r}")
    return HTTPServer(handler, address, context, limits, backlog)


@contextlib.asynccontextmanager
async def serve_router(
    host: str = "", port: int = 0, context: Optional[TLSContext] = None, **options: Any
) -> AsyncIterator[HTTPRouter]:
    """An HTTP server that dispatches through a new :class:`HTTPRouter`.

    ``async with serve_router(...) as router: router.route(path, handler)``;
    ``router.local_address()`` tells the bound address. Takes the keyword
    options of :func:`serve`.
    """
    router = HTTPRouter()
    async with _serving(router, serve(router.handle, host, port, context, **options)):
        yield router


@contextlib.asynccontextmanager
async def unix_serve_router(
    path: Union[str, os.PathLike[str]], context: Optional[TLSContext] = None, **options: Any
) -> AsyncIterator[HTTPRouter]:
    """:func:`serve_router` on the Unix socket ``path`` (see :func:`unix_serve`)."""
    router = HTTPRouter()
    async with _serving(router, unix_serve(router.handle, path, context, **options)):
        yield router


@contextlib.asynccontextmanager
async def _serving(router: HTTPRouter, server: HTTPServer) -> AsyncIterator[None]:
    async with server:
        router._server = server
        try:
            yield
        finally:
            router._server = None
