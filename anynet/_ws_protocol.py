"""One WebSocket connection: the asyncio protocol and the user's object in one.

``WebSocketClient`` is both the ``asyncio.BufferedProtocol`` that the
transport drives and the object the application calls ``send``/``recv`` on.
Keeping them one object keeps the hot path short, and the per-message part
of it is the base class, ``ConnectionCore`` (one source, compiled or run as
plain Python): a read is one call that parses, queues the messages and resumes the
task waiting for them, and a ``recv`` with a message waiting is a deque pop
that never suspends. This module adds everything else: the connection's
life cycle, control frames, closing, pings and keepalive, large frames.

The same class serves both roles; the role decides masking (through the
framing reader and writer) and who closes TCP first (the server).

Closing follows RFC 6455 section 7. States: OPEN; CLOSING, after we sent a
Close and wait for the peer's; CLOSED, once no more frames may be sent (both
Close frames exchanged, or the connection failed or was lost). Receiving
stops separately: once the peer's Close (or a protocol error, or the loss of
the connection) has been seen, no more messages can arrive, and receivers get
``ConnectionClosed`` after the queue is drained.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Set,
    Tuple,
    Union,
    cast,
)

from anynet import tls
from anynet._backend import (
    ConnectionCore,
    FrameReader,
    FrameWriter,
    buffer_exported,
    wake_tasks_now,
)
from anynet._connection_core import CLOSED, CLOSING, OPEN
from anynet._events import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN_LATER,
    MAX_CLOSE_REASON,
    OP_BINARY,
    OP_PING,
    OP_PONG,
    Close,
    Ping,
    Pong,
    ProtocolError,
)
from anynet._http_address import host_port
from anynet._ws_errors import ConnectionClosed, closed_error
from anynet._ws_options import ConnectionOptions

if TYPE_CHECKING:
    from anynet.http import HTTPRequest

# The logger of anynet.websocket, whose handlers' errors are logged the same way.
logger = logging.getLogger("anynet.websocket")

# The largest frame built in the reused buffer, which is as large as the
# largest frame it held: bigger ones are encoded into a bytes object each.
_MAX_REUSED_BUFFER = 4 * 1024 * 1024
# Up to this size, copying a server's payload behind its header costs less
# than writing the header as a packet of its own.
_MAX_COPIED_SERVER_PAYLOAD = 256 * 1024
# A frame header with a 64-bit length and a masking key.
_MAX_HEADER_SIZE = 14
# send_nowait() buffers up to this many times write_limit (see _check_send_bound).
SEND_NOWAIT_BOUND = 4
# What a connection holds for its drainers and pings until it has some: one
# empty list and dict for all of them, never added to (the code that adds
# first gives the connection its own).
_NO_WAITERS: List[Any] = []
_NO_PINGS: Dict[bytes, Any] = {}


class WebSocketClient(ConnectionCore, asyncio.BufferedProtocol):
    """One WebSocket connection, on either side: what ``connect`` yields and handlers get.

    Messages are received in arrival order with ``recv_message()`` or
    ``async for message in client`` (``bytes`` for binary messages, ``str``
    for text), or by type with ``recv()`` and ``recv_text()``; a message of
    the other type stays queued for the other method. Every unread message
    counts toward ``max_queue``: when that many wait and none is of the type
    ``recv()`` or ``recv_text()`` asks for, reading has stopped and none can
    arrive, so the receive raises ``MessageTypeError`` (the messages stay
    queued for ``recv_message()``) instead of waiting forever.

    ``subprotocol`` is the negotiated subprotocol (or ``None``). On the
    server side, ``request`` is the ``anynet.http.HTTPRequest`` of the
    opening handshake (``path``, ``params``, ``headers``), e.g. to
    authenticate the client; it is ``None`` on the client side.

    ``data`` is the application's: anything it keeps with the connection
    (``client.data = Player(name)``), ``None`` until it is set. Other
    attributes cannot be added (the class has ``__slots__``, which keep an
    idle connection small).

    After the connection has closed, ``close_code`` and ``close_reason`` say
    how, and every ``send``/``recv`` raises ``ConnectionClosed`` with them
    (``ConnectionClosedOK`` for codes 1000, 1001 and 1005).

    The ``asyncio.BufferedProtocol`` methods are the transport's interface,
    not the application's.
    """

    # Slots keep an idle connection small (a server may hold tens of
    # thousands); the per-message state is ConnectionCore's.
    __slots__ = (
        "subprotocol",
        "request",
        "data",
        "_is_client",
        "_options",
        "_local_address",
        "_remote_address",
        "_certificate",
        "_certificate_read",
        "_close_code",
        "_close_reason",
        "_sent_close",
        "_close_timer",
        "_closed_waiters",
        "_joins_writelines",
        "_drainers",
        "_pings",
        "_keepalive_payload",
        "_keepalive_timer",
        "_unanswered_ping",
        "_latency",
        "_skipped_messages",
        "_kept_in",
    )

    def __init__(
        self,
        *,
        is_client: bool,
        options: ConnectionOptions,
        subprotocol: Optional[str] = None,
        request: Optional[HTTPRequest] = None,
    ) -> None:
        super().__init__(
            FrameReader(is_client, options.max_message_size), FrameWriter(is_client), options
        )
        self.subprotocol = subprotocol
        self.request = request
        self.data: Any = None
        self._is_client = is_client
        self._options = options
        self._local_address: Tuple[str, int] = ("", 0)
        self._remote_address: Tuple[str, int] = ("", 0)
        self._certificate: Optional[tls.TLSCertificate] = None
        self._certificate_read = False

        self._close_code: Optional[int] = None
        self._close_reason = ""
        self._sent_close: Optional[Tuple[int, str]] = None
        self._close_timer: Optional[asyncio.TimerHandle] = None
        # Tasks waiting for the connection to close; created by the first.
        self._closed_waiters: Optional[List[asyncio.Future[None]]] = None

        self._joins_writelines = False
        # Until first needed, the shared empties below: most connections
        # never wait for their send buffer, nor send a ping.
        self._drainers: List[asyncio.Future[None]] = _NO_WAITERS

        self._pings: Dict[bytes, Tuple[float, Optional[asyncio.Future[float]]]] = _NO_PINGS
        self._keepalive_payload: Optional[bytes] = None
        self._keepalive_timer: Optional[asyncio.TimerHandle] = None
        self._unanswered_ping: Optional[bytes] = None
        self._latency: Optional[float] = None
        self._skipped_messages = 0
        # The server's set of connections, while it holds this one with no
        # handler running for it (see _keep_in).
        self._kept_in: Optional[Set[WebSocketClient]] = None

    # ------------------------------------------------------------------
    # The application's interface

    async def ping(self) -> float:
        """Send a ping and wait for its pong; return the round-trip time in seconds.

        The wait ends with ``ConnectionClosed`` if the connection closes
        first; wrap the call in ``asyncio.wait_for`` to bound it otherwise.
        """
        if self._state is not OPEN:
            raise self._closed_exception()
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._send_ping(waiter)
        return await waiter

    async def disconnect(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close gracefully: send a Close frame, wait for the peer's, then end TCP.

        Safe to call from any task and any number of times: every call
        returns when the connection is closed. The whole closing handshake
        is bounded by ``disconnect_timeout``; a peer that does not finish it
        in time has its connection dropped. ``code`` and ``reason`` go into
        our Close frame (``ValueError`` for a code an endpoint may not send
        or a reason over 123 bytes in UTF-8).
        """
        if self._deferred_failure is not None:
            # The peer broke the protocol: that, not ``code``, is what it is told.
            self._fail_deferred()
        if self._state is OPEN:
            frame = self._writer.encode_close(code, reason)
            self._state = CLOSING
            self._sent_close = (code, reason)
            self._write(frame)
            self._flush()
            self._arm_close_timer()
            self._stop_keepalive()
            # Senders waiting for the buffer to drain can send nothing more.
            _wake(self._drainers)
            # The peer's answer must be read even if the queue is full.
            if self._reading_paused:
                self._resume_reading()
        await self._wait_closed()

    def wait_closed(self) -> Awaitable[None]:
        """Wait until the connection is closed, e.g. in a handler whose messages go to a callback.

        ``await client.wait_closed()``: it returns a future rather than being
        a coroutine, so that a handler parked on it for the connection's
        whole life holds no coroutine frame of ours.
        """
        return self._closed_future()

    async def close(self) -> None:
        """Drop the TCP connection at once, without a closing handshake.

        Data not yet written to the socket is discarded; ``disconnect`` is the
        graceful way to end a connection.
        """
        if not self._transport_lost:
            self._state = CLOSED
            self._set_close_code(CLOSE_ABNORMAL, "the connection was closed locally")
            self._stop_receiving()
            self._pending = None
            self._abort()
        await self._wait_closed()

    @property
    def close_code(self) -> Optional[int]:
        """The connection's close code once it is closed; ``None`` before.

        It is the code of the peer's Close frame; or the code we sent when we
        ended the connection because the peer broke the protocol (e.g. 1002)
        or stopped answering pings (1011); or 1006 when the connection ended
        without a Close frame from the peer.
        """
        return self._close_code

    @property
    def close_reason(self) -> str:
        """The reason that came with ``close_code`` (empty while open)."""
        return self._close_reason

    @property
    def write_buffer_size(self) -> int:
        """Bytes sent with ``send``/``send_text`` that the kernel has not taken yet.

        The transport's write buffer plus the frames held back to be written
        together at the end of this loop turn: what a browser calls
        ``bufferedAmount``. It grows while the peer reads slower than we
        send; above ``write_limit``, ``send`` waits and ``broadcast`` skips
        the connection.
        """
        transport = self._transport
        if transport is None or self._transport_lost:
            return self._pending_size
        return transport.get_write_buffer_size() + self._pending_size

    @property
    def latency(self) -> Optional[float]:
        """Seconds from the last answered ping (keepalive or ``ping()``) to its pong.

        ``None`` until a pong has come. With keepalive on, it is refreshed
        every ``ping_interval``.
        """
        return self._latency

    def local_address(self) -> Tuple[str, int]:
        """Our address (host, port) on this connection."""
        return self._local_address

    def remote_address(self) -> Tuple[str, int]:
        """The peer's address (host, port)."""
        return self._remote_address

    def remote_certificate(self) -> Optional[tls.TLSCertificate]:
        """The peer's TLS certificate; ``None`` without TLS or when the peer sent none."""
        if not self._certificate_read and self._transport is not None:
            self._certificate = tls.peer_certificate(self._transport)
            self._certificate_read = True
        return self._certificate

    # The specification's spelling of the same method.
    remote_ceritifcate = remote_certificate

    def __repr__(self) -> str:
        role = "client" if self._is_client else "server"
        state = {OPEN: "open", CLOSING: "closing", CLOSED: "closed"}[self._state]
        host, port = self._remote_address
        return f"<WebSocketClient {role} side, peer {host}:{port}, {state}>"

    # ------------------------------------------------------------------
    # What broadcast (anynet._broadcast) asks of a connection: these and
    # ``_write`` are all it uses, so the state behind them can change freely.

    def _is_open(self) -> bool:
        """Whether frames may still be sent: no Close sent or received yet."""
        return self._state is OPEN

    def _is_over_write_limit(self) -> bool:
        """Whether more than ``write_limit`` bytes wait in the transport."""
        return self._writing_paused

    def _masks_frames(self) -> bool:
        """Whether every frame needs a mask of its own (the client side)."""
        return self._is_client

    def _encode_frame(
        self, opcode: int, payload: Union[bytes, bytearray, memoryview, str]
    ) -> bytes:
        """One complete frame for this connection."""
        return self._writer.encode(opcode, payload)

    def _unsent_bytes(self) -> int:
        """Bytes written but not yet sent: the transport's buffer and ours."""
        transport = self._transport
        buffered = 0 if transport is None else transport.get_write_buffer_size()
        return buffered + self._pending_size

    def _missed_broadcast(self) -> None:
        self._skipped_messages += 1

    def _close_overloaded(self, reason: str) -> None:
        """Close with 1013 at once: what was written still goes first, then the Close."""
        self._close_now(CLOSE_TRY_AGAIN_LATER, reason)

    async def _until_writable(self) -> None:
        """Return once at most ``write_limit`` bytes wait, or the connection closed."""
        if self._writing_paused and self._state is OPEN:
            try:
                await self._wait_for_writing()
            except ConnectionClosed:
                pass

    def _message_callback_set(self) -> bool:
        return self._on_message is not None

    def _keep_in(self, connections: Set[WebSocketClient]) -> bool:
        """Leave this connection in ``connections`` until it is lost; False
        (and out of them) if it is lost already."""
        if self._transport_lost:
            connections.discard(self)
            return False
        self._kept_in = connections
        return True

    def _call_when_closed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the connection is lost or closed."""
        if self._transport_lost:
            self._loop.call_soon(callback)
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        waiter.add_done_callback(lambda _: callback())
        if self._closed_waiters is None:
            self._closed_waiters = []
        self._closed_waiters.append(waiter)

    @property
    def skipped_messages(self) -> int:
        """How many broadcasts with the skip policy this connection has missed
        because its send buffer was over ``write_limit``."""
        return self._skipped_messages

    # ------------------------------------------------------------------
    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport.
        self._transport = transport = cast(asyncio.Transport, transport)
        self._local_address = host_port(transport.get_extra_info("sockname"))
        self._remote_address = host_port(transport.get_extra_info("peername"))
        # Small messages leave at once: asyncio's and uvloop's TCP transports
        # turn Nagle's algorithm off themselves.
        transport.set_write_buffer_limits(high=self._write_limit)
        # The base class's writelines (asyncio's socket transport before
        # Python 3.12) joins its arguments into one bytes object.
        self._joins_writelines = type(transport).writelines is asyncio.WriteTransport.writelines
        if self._options.ping_interval is not None:
            self._keepalive_timer = self._loop.call_later(
                self._options.ping_interval, self._send_keepalive_ping
            )

    def eof_received(self) -> Optional[bool]:
        # Let the transport close: a half-open WebSocket is of no use.
        return None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._transport_lost = True
        if self._kept_in is not None:
            self._kept_in.discard(self)
            self._kept_in = None
        self._state = CLOSED
        self._set_close_code(CLOSE_ABNORMAL, "the connection was lost")
        self._stop_receiving()
        self._stop_keepalive()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._pending = None
        _wake(self._drainers)
        waiters, self._closed_waiters = self._closed_waiters, None
        if waiters:
            wake_tasks_now(self._loop, waiters)

    def pause_writing(self) -> None:
        self._writing_paused = True
        # A message callback cannot wait for the peer to read its answers:
        # stop reading its requests meanwhile instead.
        if self._on_message is not None and not self._reading_paused and self._state is OPEN:
            self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        ping, self._unanswered_ping = self._unanswered_ping, None
        if ping is not None and self._state is OPEN:
            self._write(self._writer.encode(OP_PONG, ping))
        _wake(self._drainers)
        if self._on_message is not None and self._reading_paused:
            self._resume_reading()

    # ------------------------------------------------------------------
    # Receiving

    def _control_event(self, event: Any) -> None:
        cls = event.__class__
        if cls is Ping:
            if self._state is OPEN:
                if self._writing_paused:
                    # Answered once the peer reads again: only the latest ping
                    # (RFC 6455 5.5.3 allows that), so a ping flood from a peer
                    # that does not read cannot grow our write buffer.
                    self._unanswered_ping = event.payload
                else:
                    self._write(self._writer.encode(OP_PONG, event.payload))
        elif cls is Pong:
            self._pong_received(event.payload)
        elif cls is Close:
            self._close_received(event.code, event.reason)
        elif isinstance(event, ProtocolError):
            if self._messages:
                self._defer_failure(event)
            else:
                self._fail(event.code, event.reason)

    def _stop_receiving(self) -> None:
        """No message can arrive any more: wake receivers and fail pings in flight."""
        self._receiving = False
        _wake(self._receivers)
        pings, self._pings = self._pings, _NO_PINGS
        for _, waiter in pings.values():
            if waiter is not None and not waiter.done():
                waiter.set_exception(self._closed_exception())

    # ------------------------------------------------------------------
    # Sending

    def _write_large(self, opcode: int, payload: Union[bytes, bytearray]) -> None:
        """Write a frame with a large payload without a new frame-sized bytes object.

        A fresh megabyte for every frame is not only a copy: the allocator
        gives such blocks back to the system when they are freed, and every
        page of the next one faults in again, which costs more than the copy.
        A server sends the header and then the payload itself where its
        transport gathers the two into one write (uvloop, and asyncio's
        since Python 3.12). A client, which must mask a copy, and a server
        whose transport would join the two into a new bytes object, build
        the frame in the event loop's reused buffer instead.
        """
        # What is pending was sent before and goes first.
        self._flush()
        transport = self._transport
        assert transport is not None
        size = len(payload)
        # Only an immutable payload can be left to the transport to send later.
        if not self._is_client and payload.__class__ is bytes:
            header = self._writer.encode_header(opcode, size)
            if not self._joins_writelines:
                transport.writelines((header, payload))
                return
            if size > _MAX_COPIED_SERVER_PAYLOAD:
                # Copying costs more than the small packet of a header alone.
                transport.write(header)
                transport.write(memoryview(payload))
                return
        frame_size = size + _MAX_HEADER_SIZE
        if frame_size > _MAX_REUSED_BUFFER or buffer_exported is None:
            transport.write(self._writer.encode(opcode, payload))
            return
        buffer = _free_buffer(self._loop, frame_size)
        frame_size = self._writer.encode_into(buffer, opcode, payload)
        transport.write(memoryview(buffer)[:frame_size])

    def _check_send_bound(self) -> None:
        """``send_nowait`` while the send buffer is over ``write_limit``.

        Nothing can wait here, so the frame is buffered anyway, up to
        SEND_NOWAIT_BOUND times ``write_limit``; beyond that the peer is not
        reading, and the connection is closed with 1013, as a reliable
        broadcast closes it over its backlog, rather than left to buffer
        without bound.
        """
        if self._unsent_bytes() >= SEND_NOWAIT_BOUND * self._write_limit:
            self._close_overloaded("the client does not read fast enough")
            raise self._closed_exception()

    def _callback_failed(self, error: Exception) -> None:
        """The message callback raised: log it and fail the connection, as for a handler."""
        logger.error("WebSocket message callback failed", exc_info=error)
        self._fail(CLOSE_INTERNAL_ERROR, "")

    async def _wait_for_writing(self) -> None:
        while self._writing_paused and self._state is OPEN:
            drainer: asyncio.Future[None] = self._loop.create_future()
            if self._drainers is _NO_WAITERS:
                self._drainers = []
            self._drainers.append(drainer)
            try:
                await drainer
            finally:
                if drainer in self._drainers:
                    self._drainers.remove(drainer)
        if self._state is not OPEN:
            raise self._closed_exception()

    def _send_ping(self, waiter: Optional[asyncio.Future[float]]) -> bytes:
        payload = os.urandom(4)
        while payload in self._pings:
            payload = os.urandom(4)
        # Not the loop's clock: uvloop's ticks in milliseconds, longer than a
        # round trip on a local network.
        if self._pings is _NO_PINGS:
            self._pings = {}
        self._pings[payload] = (time.monotonic(), waiter)
        self._write(self._writer.encode(OP_PING, payload))
        return payload

    def _pong_received(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited: RFC 6455 5.5.3 allows it, and it needs no answer
        now = time.monotonic()
        # A pong answers its ping and every ping sent before it, since a
        # peer may answer only the latest of several pings.
        for key in list(self._pings):
            sent_at, waiter = self._pings.pop(key)
            if waiter is not None and not waiter.done():
                waiter.set_result(now - sent_at)
            if key == payload:
                self._latency = now - sent_at
                break
        if self._keepalive_payload is not None and self._keepalive_payload not in self._pings:
            self._keepalive_payload = None
            self._schedule_keepalive(self._options.ping_interval, self._send_keepalive_ping)

    # ------------------------------------------------------------------
    # Keepalive

    def _schedule_keepalive(self, delay: Optional[float], callback: Any) -> None:
        if self._keepalive_timer is not None:
            self._keepalive_timer.cancel()
        self._keepalive_timer = None
        if delay is not None and self._state is OPEN:
            self._keepalive_timer = self._loop.call_later(delay, callback)

    def _stop_keepalive(self) -> None:
        # Once closing, the closing handshake has its own bound.
        self._schedule_keepalive(None, None)
        self._keepalive_payload = None

    def _send_keepalive_ping(self) -> None:
        self._keepalive_timer = None
        if self._state is not OPEN:
            return
        payload = self._send_ping(None)
        if self._options.ping_timeout is None:
            self._schedule_keepalive(self._options.ping_interval, self._send_keepalive_ping)
        else:
            self._keepalive_payload = payload
            self._schedule_keepalive(self._options.ping_timeout, self._keepalive_expired)

    def _keepalive_expired(self) -> None:
        self._keepalive_timer = None
        if self._reading_paused:
            # We stopped reading because the application is slow: the pong
            # may well be waiting unread, so the peer is not to blame.
            self._schedule_keepalive(self._options.ping_timeout, self._keepalive_expired)
            return
        self._fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")

    # ------------------------------------------------------------------
    # Closing

    def _close_received(self, code: int, reason: str) -> None:
        self._set_close_code(code, reason)
        if self._state is OPEN:
            # RFC 6455 5.5.1: answer with a Close, echoing the peer's code.
            try:
                frame = self._writer.encode_close(None if code == CLOSE_NO_STATUS else code, "")
            except ValueError:
                frame = self._writer.encode_close(CLOSE_NORMAL, "")
            self._sent_close = (code, "")
            self._write(frame)
        self._state = CLOSED
        self._stop_receiving()
        self._finish_closing()

    def _defer_failure(self, error: ProtocolError) -> None:
        """Fail the connection once the application has read what came before ``error``.

        The messages that arrived before the violation are valid, and an
        application that answers them (an echo server, a request handler)
        gets its answers out before the Close. The reader takes no more input
        after an error, so waiting costs no memory; an application that does
        not come back to read within ``disconnect_timeout`` is not waited for.
        """
        self._deferred_failure = error
        self._close_timer = self._loop.call_later(
            self._options.disconnect_timeout, self._fail_deferred
        )

    def _fail_deferred(self) -> None:
        error, self._deferred_failure = self._deferred_failure, None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if error is not None:
            self._fail(error.code, error.reason)

    def _fail(self, code: int, reason: str) -> None:
        """End the connection because of the peer: send ``code`` and close."""
        self._set_close_code(code, reason)
        if self._state is OPEN:
            reason = _truncate_reason(reason)
            self._sent_close = (code, reason)
            self._write(self._writer.encode_close(code, reason))
        self._state = CLOSED
        self._stop_receiving()
        self._discard_until_closed()

    def _discard_until_closed(self) -> None:
        """End TCP after failing the connection, without resetting it.

        The peer may still be sending (the rest of an oversized message, say).
        A socket closed with unread bytes makes the kernel send a reset, which
        can overtake our Close frame, and the peer never learns the code. So
        both sides read on, into space that costs nothing. While the frame
        boundaries are known (a message over the size limit, a keepalive
        timeout), the reader drops every frame but the peer's Close, and
        that Close completes the closing handshake as usual: a proxy in
        between (nginx) then passes the peer's answer on before TCP ends.
        Otherwise, as RFC 6455 7.1.1 has it, the server half-closes (a
        client leaves that to the server) and everything that still arrives
        is dropped until the peer's EOF closes the transport
        (``eof_received``). Either way for at most ``disconnect_timeout``.
        A TLS transport cannot half-close: there the peer, having read our
        Close, ends the connection, or the bound does.
        """
        found = self._reader.seek_close()
        self._stop_keepalive()
        _wake(self._drainers)
        self._flush()
        transport = self._transport
        if transport is None or self._transport_lost or transport.is_closing():
            return
        if found is None and not self._is_client and transport.can_write_eof():
            transport.write_eof()
        if self._reading_paused:
            self._resume_reading()
        self._arm_close_timer()
        for event in found or ():
            self._control_event(event)

    def _close_now(self, code: int, reason: str) -> None:
        """Send a Close with ``code`` if still open, and close TCP without waiting."""
        if self._state is OPEN:
            self._sent_close = (code, reason)
            self._write(self._writer.encode_close(code, reason))
        self._state = CLOSED
        self._set_close_code(code, reason)
        self._stop_receiving()
        self._stop_keepalive()
        _wake(self._drainers)
        self._close_transport()

    def _finish_closing(self) -> None:
        """Both sides are done with frames: end TCP as RFC 6455 7.1.1 asks."""
        self._stop_keepalive()
        _wake(self._drainers)
        if self._is_client:
            # The server closes TCP first; give it the bound to do so.
            self._flush()
            self._arm_close_timer()
        else:
            self._close_transport()

    def _close_transport(self) -> None:
        self._flush()
        if self._transport is not None and not self._transport_lost:
            self._transport.close()
        # A peer that reads nothing would keep a flushing close pending forever.
        self._arm_close_timer()

    def _arm_close_timer(self) -> None:
        if self._close_timer is None and not self._transport_lost:
            self._close_timer = self._loop.call_later(
                self._options.disconnect_timeout, self._abort
            )

    def _abort(self) -> None:
        self._close_timer = None
        if self._transport is not None and not self._transport_lost:
            self._transport.abort()

    async def _wait_closed(self) -> None:
        await self._closed_future()

    def _closed_future(self) -> asyncio.Future[None]:
        """A future that the end of the connection completes (done already if it has ended)."""
        # A future per caller, so that one caller's cancellation does not
        # end the others' wait.
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self._transport_lost:
            waiter.set_result(None)
            return waiter
        if self._closed_waiters is None:
            self._closed_waiters = []
        self._closed_waiters.append(waiter)
        return waiter

    def _set_close_code(self, code: int, reason: str) -> None:
        if self._close_code is None:
            self._close_code = code
            self._close_reason = reason

    def _closed_exception(self) -> ConnectionClosed:
        if self._close_code is not None:
            return closed_error(self._close_code, self._close_reason)
        if self._sent_close is not None:
            return closed_error(*self._sent_close)
        return closed_error(CLOSE_ABNORMAL, "the connection is closed")


# Per event loop, the buffer that large frames are built in (see
# WebSocketClient._write_large): per loop, not per connection, so that many
# connections share one, and a loop runs in one thread, so that no other
# thread writes into it meanwhile.
_reused_buffers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, bytearray] = (
    weakref.WeakKeyDictionary()
)


def _free_buffer(loop: asyncio.AbstractEventLoop, size: int) -> bytearray:
    """A buffer of at least ``size`` bytes that no view shows: the loop's own,
    or, while a transport still holds a view of that one, a new one."""
    assert buffer_exported is not None
    buffer = _reused_buffers.get(loop)
    # Only views of it are ever handed out: with none left, whatever was
    # built in it has been sent or copied.
    if buffer is not None and buffer_exported(buffer):
        return bytearray(size)
    if buffer is None or len(buffer) < size:
        buffer = _reused_buffers[loop] = bytearray(size)
    return buffer





def _wake(waiters: List[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


def _truncate_reason(reason: str) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON:
        return reason
    return encoded[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
