"""One HTTP/1.1 server connection: an asyncio Protocol around httptools.

Requests of a connection are answered strictly in order by one task, created
when a request is complete and ending when none is left, so an idle keep-alive
connection costs a protocol object and a timer, not a task.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Optional, Union

import httptools

from anynet._copied_reads import CopiedReads
from anynet._http_address import host_port
from anynet._handover import hand_over
from anynet._http_message import HTTPHeaders, HTTPRequest, HTTPResponse, UpgradeFunction

if TYPE_CHECKING:
    from anynet.tls import TLSCertificate

logger = logging.getLogger("anynet.http")

Handler = Callable[["HTTPConnection", HTTPRequest], Awaitable[HTTPResponse]]


@dataclass(frozen=True)
class ServerLimits:
    """What one client may make the server spend; see ``anynet.http.serve``."""

    max_url_length: int = 8 * 1024
    max_head_size: int = 16 * 1024
    max_headers: int = 100
    max_body_size: int = 1024 * 1024
    max_pipelined: int = 16
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 60.0
    shutdown_timeout: float = 5.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, not {value!r}")


class ServerState:
    """The live connections of one server, and whether it is stopping."""

    def __init__(self) -> None:
        self.connections: set[HTTPServerProtocol] = set()
        self.stopping = False
        self._all_gone: Optional[asyncio.Future[None]] = None

    def add(self, connection: HTTPServerProtocol) -> None:
        self.connections.add(connection)

    def discard(self, connection: HTTPServerProtocol) -> None:
        self.connections.discard(connection)
        if not self.connections and self._all_gone is not None and not self._all_gone.done():
            self._all_gone.set_result(None)

    async def wait_all_gone(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every connection to end; True if they did."""
        if not self.connections:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._all_gone = waiter
        try:
            await asyncio.wait((waiter,), timeout=timeout)
        finally:
            self._all_gone = None
        return waiter.done()


class _RejectRequest(Exception):
    """Raised in a parser callback to stop parsing and answer with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


# Statuses whose responses never carry a body (RFC 9110 sections 6.4.1, 15.3.5,
# 15.4.5); 1xx and 204 must not even announce a Content-Length.
_NO_BODY_STATUSES = frozenset({204, 304})
# The server frames the body itself; a handler's own framing headers would
# contradict it and desynchronise the client.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})

_cached_second = -1
_cached_date = ""


def _http_date() -> str:
    # Formatting a date costs more than the rest of a small response; it only
    # changes once a second.
    global _cached_second, _cached_date
    now = int(time.time())
    if now != _cached_second:
        _cached_second = now
        _cached_date = formatdate(now, usegmt=True)
    return _cached_date


def _encode_head(response: HTTPResponse, connection: Optional[str], body_length: int) -> bytes:
    """The status line and header block.

    ``connection`` is the Connection header the server decided on (``""`` for
    none), framing the body with Content-Length; None sends the handler's
    headers as they are, for a response that hands the connection over.
    Raises UnicodeEncodeError for a header value outside Latin-1.
    """
    status = response.status_code
    lines = [f"HTTP/1.1 {status} {response.status_name}\r\n"]
    for name, value in response.headers.items():
        if connection is None or name.lower() not in _FRAMING_HEADERS:
            lines.append(f"{name}: {value}\r\n")
    if "date" not in response.headers:
        lines.append(f"Date: {_http_date()}\r\n")
    if connection:
        lines.append(f"Connection: {connection}\r\n")
    if connection is not None and status >= 200 and status not in _NO_BODY_STATUSES:
        lines.append(f"Content-Length: {body_length}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


# A request keeps its method and version as these strings, one of each for
# every request rather than a new one per request (a WebSocket connection
# keeps its handshake request for its whole life).
_METHODS = {name.encode("ascii"): name for name in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_VERSIONS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}


def _method_name(method: bytes) -> str:
    return _METHODS.get(method) or method.decode("ascii")


def _version_name(version: str) -> str:
    return _VERSIONS.get(version) or "HTTP/" + version


def _asks_to_close(response: HTTPResponse) -> bool:
    tokens = response.headers.get("connection", "").lower().split(",")
    return any(token.strip() == "close" for token in tokens)


class HTTPConnection:
    """The client connection a request handler is called with.

    It lives as long as the TCP (or TLS) connection, across keep-alive
    requests. An upgrade function takes the connection over with
    ``switch_protocol``.
    """

    __slots__ = ("_protocol", "_certificate", "_certificate_read")

    def __init__(self, protocol: HTTPServerProtocol) -> None:
        self._protocol = protocol
        self._certificate: Optional[TLSCertificate] = None
        self._certificate_read = False

    @property
    def transport(self) -> asyncio.Transport:
        """The transport of the connection."""
        return self._protocol.transport

    def local_address(self) -> tuple[str, int]:
        """The server's address on this connection, ``(host, port)``."""
        return host_port(self._protocol.transport.get_extra_info("sockname"))

    def remote_address(self) -> tuple[str, int]:
        """The client's address, ``(host, port)``."""
        return host_port(self._protocol.transport.get_extra_info("peername"))

    def remote_certificate(self) -> Optional[TLSCertificate]:
        """The certificate the client presented over TLS, or None without TLS
        or when the client presented none."""
        if not self._certificate_read:
            # Imported here so that a plain-HTTP server never loads the X.509 stack.
            from anynet.tls import peer_certificate

            self._certificate = peer_certificate(self._protocol.transport)
            self._certificate_read = True
        return self._certificate

    def switch_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Hand the connection to ``protocol``; only from an upgrade function.

        ``protocol`` becomes the transport's protocol, receives
        ``connection_made`` and then every byte that arrived after the upgrade
        request (through ``get_buffer``/``buffer_updated`` for an
        ``asyncio.BufferedProtocol``, ``data_received`` otherwise). Reading is
        resumed before ``connection_made``, so the protocol may pause it; if
        the transport's write buffer is above its high-water mark, the
        protocol gets ``pause_writing`` right after ``connection_made``.
        From then on the HTTP server leaves the transport to the protocol.
        Raises ConnectionError if the client is already gone, RuntimeError
        outside an upgrade function or on a second call.
        """
        self._protocol.switch_protocol(protocol)


class HTTPServerProtocol(CopiedReads):
    """Parses requests, runs the handler for each in order, writes responses."""

    # An upgraded connection keeps this object for its whole life (its task
    # runs the upgrade function, and uvloop's transport keeps its first
    # protocol): slots, and switch_protocol releasing the parser, keep that small.
    __slots__ = (
        "transport",
        "_handler",
        "_limits",
        "_server",
        "_loop",
        "_parser",
        "_client",
        "_in_message",
        "_in_head",
        "_url_parts",
        "_url_length",
        "_headers",
        "_header_count",
        "_head_size",
        "_head_unaccounted",
        "_head_progressed",
        "_body_parts",
        "_body_size",
        "_queue",
        "_task",
        "_request_timer",
        "_idle_timer",
        "_reading_paused",
        "_writing_paused",
        "_drain_waiter",
        "_rejected",
        "_upgrade_pending",
        "_closing",
        "_eof",
        "_leftover",
        "_upgrading",
        "_switched",
        "_lost",
    )

    transport: asyncio.Transport  # set by connection_made

    def __init__(self, handler: Handler, limits: ServerLimits, server: ServerState) -> None:
        self._handler = handler
        self._limits = limits
        self._server = server
        self._loop = asyncio.get_running_loop()
        super().__init__(self._loop)
        self._parser: Optional[httptools.HttpRequestParser] = httptools.HttpRequestParser(self)
        self._client = HTTPConnection(self)

        # The request being parsed.
        self._in_message = False
        self._in_head = False
        self._url_parts: list[bytes] = []
        self._url_length = 0
        self._headers = HTTPHeaders()
        self._header_count = 0
        self._head_size = 0
        self._head_unaccounted = 0
        self._head_progressed = False
        self._body_parts: list[bytes] = []
        self._body_size = 0

        # Complete requests waiting for the task, or an error response that
        # ends the connection: (request, keep_alive, wants_upgrade) | response.
        # A list: it holds at most max_pipelined entries, and an empty deque
        # would cost ten times the memory of an empty list.
        self._queue: list[Union[tuple[HTTPRequest, bool, bool], HTTPResponse]] = []
        self._task: Optional[asyncio.Task[None]] = None

        # Bounds the head, then the body, of the request being received.
        self._request_timer: Optional[asyncio.TimerHandle] = None
        self._idle_timer: Optional[asyncio.TimerHandle] = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: Optional[asyncio.Future[None]] = None

        # Once set, these stop the parser for good.
        self._rejected = False
        self._upgrade_pending = False
        self._closing = False
        self._eof = False

        self._leftover = b""
        self._upgrading = False
        self._switched = False
        self._lost = False

    # -- asyncio callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]
        # Nagle's algorithm is off already: asyncio's and uvloop's TCP
        # transports set TCP_NODELAY on every socket they own.
        self._server.add(self)
        if self._server.stopping:
            self._close()
            return
        # A new connection gets head_timeout for its first request head: a
        # client that connects and stays silent is a slowloris too.
        self._request_timer = self._loop.call_later(
            self._limits.head_timeout, self._on_request_timeout
        )

    def data_received(self, data: bytes) -> None:
        if self._closing or self._rejected:
            return  # the connection is on its way out; see _close
        if self._upgrade_pending:
            # Bytes after an upgrade request belong to the upgraded protocol.
            self._leftover += data
            if len(self._leftover) > self._limits.max_head_size:
                # The upgrade is taking a while: keep the rest in the kernel.
                self._pause_reading()
            return
        # The parser is released only once the connection is handed over,
        # and from the upgrade request on, nothing reaches it.
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._leftover = data[upgrade.args[0] :]
            return
        except httptools.HttpParserCallbackError as error:
            if not isinstance(error.__context__, _RejectRequest):
                raise
            self._reject(error.__context__.status)
            return
        except httptools.HttpParserError:
            self._reject(400)
            return
        if self._in_message:
            # Timers only for requests that span reads: most arrive whole.
            if self._request_timer is None:
                self._request_timer = self._loop.call_later(
                    self._limits.head_timeout if self._in_head else self._limits.body_timeout,
                    self._on_request_timeout,
                )
            if self._in_head:
                self._account_partial_head(len(data))

    def eof_received(self) -> bool:
        if (
            self._task is None
            or self._closing
            or self._in_message
            or self._upgrade_pending
            or self.transport.get_extra_info("sslcontext") is not None
        ):
            # Nothing to answer, a truncated request, an upgrade the client gave
            # up on, or TLS (where asyncio cannot keep a half-closed
            # connection): close now.
            return False
        # The client half-closed after pipelining: answer what it sent, then close.
        self._eof = True
        return True

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._lost = True
        self._cancel_timers()
        self._queue.clear()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        if self._task is None:
            self._server.discard(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks -----------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._in_head = True
        self._url_parts = []
        self._url_length = 0
        self._headers = HTTPHeaders()
        self._header_count = 0
        self._head_size = 0
        self._head_unaccounted = 0
        self._head_progressed = True
        self._body_parts = []
        self._body_size = 0
        self._cancel_idle_timer()

    def on_url(self, fragment: bytes) -> None:
        self._url_length += len(fragment)
        if self._url_length > self._limits.max_url_length:
            raise _RejectRequest(414)
        self._add_head_bytes(len(fragment))
        self._url_parts.append(fragment)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            raise _RejectRequest(431)
        self._add_head_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        self._headers._append(name.decode("latin-1"), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_request_timer()  # the body, if any, gets its own
        headers = self._headers
        assert self._parser is not None  # see data_received
        http_11 = self._parser.get_http_version() == "1.1"
        if http_11 and "host" not in headers:
            raise _RejectRequest(400)  # RFC 9112 section 3.2
        # llhttp has already refused a malformed or repeated Content-Length.
        length = headers.get("content-length")
        if length is not None and int(length) > self._limits.max_body_size:
            raise _RejectRequest(413)
        if (
            headers.get("expect", "").lower() == "100-continue"
            and self._task is None
            and http_11
        ):
            # The client waits for this before sending the body; with a request
            # still unanswered it would overtake that response, so then the
            # client's own timeout has to do.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_size:
            raise _RejectRequest(413)  # a chunked body, counted as it arrives
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._cancel_request_timer()
        parser = self._parser
        assert parser is not None  # see data_received
        try:
            url = httptools.parse_url(b"".join(self._url_parts))
        except httptools.HttpParserInvalidURLError:
            raise _RejectRequest(400) from None
        query = url.query.decode("latin-1") if url.query else ""
        request = HTTPRequest(
            method=_method_name(parser.get_method()),
            path=url.path.decode("latin-1") if url.path else "/",
            params=dict(urllib.parse.parse_qsl(query, keep_blank_values=True)),
            version=_version_name(parser.get_http_version()),
            headers=self._headers,
            body=b"".join(self._body_parts),
        )
        self._body_parts = []
        wants_upgrade = parser.should_upgrade()
        self._queue.append((request, parser.should_keep_alive(), wants_upgrade))
        if wants_upgrade:
            # Whatever follows is not HTTP any more: data_received holds it
            # for the new protocol. Reading goes on (pausing and resuming cost
            # two system calls per upgrade) until that holds too much.
            self._upgrade_pending = True
        elif len(self._queue) >= self._limits.max_pipelined:
            self._pause_reading()
        self._ensure_task()

    # -- limits and timers ---------------------------------------------------

    def _add_head_bytes(self, count: int) -> None:
        self._head_size += count
        self._head_progressed = True
        if self._head_size > self._limits.max_head_size:
            raise _RejectRequest(431)

    def _account_partial_head(self, received: int) -> None:
        # httptools buffers a header line internally until it is complete, so a
        # client could grow that buffer one read at a time without a callback.
        # A read that completed nothing in the head is counted whole.
        if self._head_progressed:
            self._head_unaccounted = 0
        else:
            self._head_unaccounted += received
        self._head_progressed = False
        if self._head_size + self._head_unaccounted > self._limits.max_head_size:
            self._reject(431)

    def _on_request_timeout(self) -> None:
        self._request_timer = None
        timeout = self._limits.head_timeout if self._in_head else self._limits.body_timeout
        if self._reading_paused and not self._closing:
            # We stopped reading (too many pipelined requests): not the client's fault.
            self._request_timer = self._loop.call_later(timeout, self._on_request_timeout)
            return
        logger.info(
            "dropping %s: no complete request %s within %s s",
            self.transport.get_extra_info("peername"),
            "head" if self._in_head else "body",
            timeout,
        )
        self.transport.abort()

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        self._idle_timer = self._loop.call_later(self._limits.idle_timeout, self._on_idle_timeout)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle_timeout(self) -> None:
        # Idle between requests, or not taking our response off our hands.
        self._idle_timer = None
        self.transport.abort()

    def _cancel_timers(self) -> None:
        self._cancel_idle_timer()
        self._cancel_request_timer()

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self._lost:
            self._reading_paused = True
            self.transport.pause_reading()

    def _reject(self, status: int) -> None:
        """Answer a request the server refuses to handle, in turn, then close."""
        self._rejected = True
        self._in_message = self._in_head = False
        self._cancel_request_timer()
        self._pause_reading()
        self._queue.append(HTTPResponse(status))
        self._ensure_task()

    def _close(self, linger: bool = False) -> None:
        """Close after the pending writes; abort if that takes idle_timeout.

        With ``linger``, used when the client may still be sending (a body
        refused by 413, bytes after a refused upgrade), the server first only
        shuts down its sending side and reads and discards until the client
        closes: closing a socket with unread input makes the kernel send a
        reset, which can destroy the response before the client reads it.
        """
        self._closing = True
        self._cancel_timers()
        if self._lost:
            return
        transport = self.transport
        if linger and transport.can_write_eof():
            transport.write_eof()
            if self._reading_paused:
                self._reading_paused = False
                transport.resume_reading()
        else:
            transport.close()
        self._arm_idle_timer()

    # -- answering requests --------------------------------------------------

    def _ensure_task(self) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self._answer_requests())

    async def _answer_requests(self) -> None:
        try:
            while self._queue and not self._lost:
                entry = self._queue.pop(0)
                if isinstance(entry, HTTPResponse):
                    self._write(entry, "close", head_only=False)
                    self._close(linger=True)
                    return
                self._resume_reading_if_allowed()
                request, keep_alive, wants_upgrade = entry
                response = await self._run_handler(request)
                if self._lost:
                    return
                if response.upgrade is not None:
                    if wants_upgrade:
                        if self._write(response, None, head_only=False):
                            # The upgraded connection may live for hours in
                            # this frame: run inline, with no frame of ours
                            # between it and the upgrade's coroutine, and
                            # keeping neither the response nor the upgrade
                            # function (idle connections stay small).
                            self._upgrading = True
                            try:
                                running = response.upgrade(self._client)
                                del entry, response
                                await running
                            except Exception:
                                self._upgrade_failed()
                            finally:
                                self._upgrade_ended()
                        else:
                            self._close(linger=True)
                        return
                    logger.error(
                        "HTTP handler set upgrade on %s %s, which did not ask to upgrade",
                        request.method,
                        request.path,
                    )
                    response = HTTPResponse(500)
                # A request that asked to upgrade leaves the parser stopped;
                # so does a stopping server.
                close = (
                    not keep_alive
                    or wants_upgrade
                    or self._server.stopping
                    or (self._eof and not self._queue)
                    or _asks_to_close(response)
                )
                if close:
                    self._write(response, "close", request.method == "HEAD")
                    self._close(linger=wants_upgrade)
                    return
                connection = "keep-alive" if request.version == "HTTP/1.0" else ""
                self._write(response, connection, request.method == "HEAD")
                if self._writing_paused:
                    await self._drain()
        finally:
            self._task = None
            if self._lost or self._switched:
                self._server.discard(self)
            elif not self._closing and not self._in_message and not self._queue:
                self._arm_idle_timer()

    async def _run_handler(self, request: HTTPRequest) -> HTTPResponse:
        try:
            response = await self._handler(self._client, request)
        except Exception:
            logger.exception("HTTP handler failed on %s %s", request.method, request.path)
            return HTTPResponse(500)
        if not isinstance(response, HTTPResponse):
            logger.error(
                "HTTP handler returned %s instead of an HTTPResponse for %s %s",
                type(response).__name__,
                request.method,
                request.path,
            )
            return HTTPResponse(500)
        return response

    def _write(self, response: HTTPResponse, connection: Optional[str], head_only: bool) -> bool:
        """Write ``response``; False if it could not be encoded and an empty
        500 went out in its place.

        ``connection`` is the Connection header to send (``""`` for none) with
        Content-Length framing, or None for a response that hands the
        connection over (sent with the handler's headers as they are)."""
        body = response.body
        try:
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError(f"HTTPResponse.body must be bytes, not {type(body).__name__}")
            head = _encode_head(response, connection, len(body))
        except (TypeError, UnicodeEncodeError):
            logger.exception("HTTP handler returned a response that cannot be sent")
            self.transport.write(
                _encode_head(HTTPResponse(500), "close" if connection is None else connection, 0)
            )
            return False
        status = response.status_code
        if not body or head_only or status < 200 or status in _NO_BODY_STATUSES:
            self.transport.write(head)
        else:
            self.transport.writelines((head, body))
        return True

    async def _drain(self) -> None:
        self._drain_waiter = self._loop.create_future()
        self._arm_idle_timer()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None
            self._cancel_idle_timer()

    def _resume_reading_if_allowed(self) -> None:
        if (
            self._reading_paused
            and not (self._rejected or self._upgrade_pending or self._closing or self._lost)
            and not self._server.stopping
            and len(self._queue) < self._limits.max_pipelined
        ):
            self._reading_paused = False
            self.transport.resume_reading()
            if self._request_timer is not None:
                # The time we spent not reading is not the client's.
                self._request_timer.cancel()
                self._request_timer = self._loop.call_later(
                    self._limits.head_timeout if self._in_head else self._limits.body_timeout,
                    self._on_request_timeout,
                )

    # -- upgrade -------------------------------------------------------------

    def _upgrade_failed(self) -> None:
        logger.exception("HTTP upgrade function failed")
        if self._switched:
            # Its owner lost control of the connection: do not leak it.
            self.transport.abort()

    def _upgrade_ended(self) -> None:
        self._upgrading = False
        if not self._switched and not self._lost:
            self._close()

    def switch_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        if not self._upgrading:
            raise RuntimeError("switch_protocol() is only possible from an upgrade function")
        if self._switched:
            raise RuntimeError("the connection was already handed to another protocol")
        if self._lost or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection before the upgrade")
        self._switched = True
        self._cancel_timers()
        # The HTTP side is done for good; this object lives on with the
        # connection (see __slots__), its parser need not.
        self._parser = None
        leftover, self._leftover = self._leftover, b""
        reading_paused, self._reading_paused = self._reading_paused, False
        hand_over(
            self.transport,
            protocol,
            leftover,
            reading_paused=reading_paused,
            writing_paused=self._writing_paused,
        )

    # -- server shutdown -----------------------------------------------------

    def shut_down(self) -> None:
        """Start a graceful stop: close an idle connection, let a request in
        flight finish (its response says Connection: close), and cancel an
        upgraded connection's task so that its protocol learns the news."""
        if self._switched:
            assert self._task is not None
            self._task.cancel()
        elif self._task is None:
            if not self._lost:
                self._close()
        else:
            self._pause_reading()

    def abort(self) -> None:
        """End the connection now: the graceful stop took too long."""
        if self._task is not None:
            self._task.cancel()
        self.transport.abort()

