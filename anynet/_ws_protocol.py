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

Closing follows RFC 6455 section 7, by the rules of ``anynet._ws_closing``:
this module feeds them what happens (a Close requested or received, a
protocol error, the closing timer, the loss of the transport) and performs
what they answer on the transport. The core sees three states: OPEN; CLOSING,
after we sent a Close and wait for the peer's; CLOSED, once no more frames may
be sent. Receiving stops separately: once the peer's Close (or a protocol
error, or the loss of the connection) has been seen, no more messages can
arrive, and receivers get ``ConnectionClosed`` after the queue is drained.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Awaitable,
    Callable,
    Dict,
    Hashable,
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
    Deflater,
    Inflater,
    FrameReader,
    FrameWriter,
    buffer_exported,
    wake_tasks_now,
)
from anynet import _ws_closing as closing_rules
from anynet._connection_core import CLOSED, CLOSING, OPEN
from anynet._copied_reads import loop_read_buffer
from anynet._events import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_TRY_AGAIN_LATER,
    OP_PING,
    OP_PONG,
    Close,
    Ping,
    Pong,
    ProtocolError,
)
from anynet._http_address import host_port
from anynet._ws_closing import ClosingHandshake
from anynet._ws_errors import ConnectionClosed, closed_error
from anynet._ws_options import ConnectionOptions, deflate_settings

if TYPE_CHECKING:
    from anynet._deflate_negotiation import DeflateParameters
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
        "deflate",
        "_inflater",
        "data",
        "_is_client",
        "_options",
        "_local_address",
        "_remote_address",
        "_certificate",
        "_certificate_read",
        "_closing",
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
        deflate: Optional[DeflateParameters] = None,
    ) -> None:
        inflater = deflater = None
        compress_min = 0
        if deflate is not None:
            settings = deflate_settings(options, is_client)
            assert settings is not None, "permessage-deflate agreed on while it is off"
            inflater = Inflater(*deflate.decompressor(is_client), options.max_message_size)
            deflater = Deflater(*deflate.compressor(is_client), settings.level)
            compress_min = settings.min_size
        super().__init__(
            FrameReader(
                is_client, options.max_message_size, inflater, loop_read_buffer(asyncio.get_running_loop())
            ),
            FrameWriter(is_client),
            options,
            deflater,
            compress_min,
        )
        #: The permessage-deflate parameters agreed on (None: no compression).
        self.deflate = deflate
        self._inflater = inflater
        self.subprotocol = subprotocol
        self.request = request
        self.data: Any = None
        self._is_client = is_client
        self._options = options
        self._local_address: Tuple[str, int] = ("", 0)
        self._remote_address: Tuple[str, int] = ("", 0)
        self._certificate: Optional[tls.TLSCertificate] = None
        self._certificate_read = False

        self._closing = ClosingHandshake(is_client, self._writer.encode_close)
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
        # The peer may have broken the protocol: then that, not ``code``, is what it is told.
        self._perform(self._closing.close_requested(code, reason))
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
        self._perform(self._closing.abort_requested())
        await self._wait_closed()

    @property
    def close_code(self) -> Optional[int]:
        """The connection's close code once it is closed; ``None`` before.

        It is the code of the peer's Close frame; or the code we sent when we
        ended the connection because the peer broke the protocol (e.g. 1002)
        or stopped answering pings (1011); or 1006 when the connection ended
        without a Close frame from the peer.
        """
        return self._closing.close_code

    @property
    def close_reason(self) -> str:
        """The reason that came with ``close_code`` (empty while open)."""
        return self._closing.close_reason

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
    # What broadcast and the pub/sub hubs (anynet._broadcast, anynet._hub)
    # ask of a connection: these and ``_write`` are all they use, so the
    # state behind them can change freely.

    def _is_open(self) -> bool:
        """Whether frames may still be sent: no Close sent or received yet."""
        return self._state is OPEN

    def _is_over_write_limit(self) -> bool:
        """Whether more than ``write_limit`` bytes wait in the transport."""
        return self._writing_paused

    def _frame_sharing_key(self, size: int) -> Optional[Hashable]:
        """What makes the frame of a message of ``size`` bytes the same for
        another connection, or None if it is this connection's alone: a
        client's frame has a mask of its own, and a compressor that keeps its
        context between messages compresses for one connection only."""
        if self._is_client:
            return None
        deflater = self._deflater
        if deflater is None or size < self._compress_min:
            return False  # the plain frame
        if not deflater.no_context_takeover:
            return None
        return (deflater.window_bits, deflater.level, deflater.mem_level)

    def _encode_frame(
        self, opcode: int, payload: Union[bytes, bytearray, memoryview, str]
    ) -> bytes:
        """One complete frame for this connection, compressed as ``send`` would."""
        if len(payload) >= self._compress_min:
            return self._compressed_frame(opcode, payload)
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
        self._close_without_waiting(CLOSE_TRY_AGAIN_LATER, reason)

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
        self._perform(self._closing.transport_lost())
        # A connection that kept its compression context frees it now, not
        # whenever the application lets go of the connection object.
        if self._deflater is not None:
            self._deflater.close()
        if self._inflater is not None:
            self._inflater.close()

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
            self._perform(self._closing.close_received(event.code, event.reason))
        elif isinstance(event, ProtocolError):
            self._perform(self._closing.protocol_error(event, bool(self._messages)))

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
        self._close_without_waiting(CLOSE_INTERNAL_ERROR, "")

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
        self._close_without_waiting(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")

    # ------------------------------------------------------------------
    # Closing: the rules are anynet._ws_closing's; this performs its actions.

    def _fail_deferred(self) -> None:
        self._perform(self._closing.failure_due())

    def _close_without_waiting(self, code: int, reason: str) -> None:
        """Send a Close with ``code`` and end the connection cleanly, for a
        caller that does not wait: the peer broke the protocol or stopped
        answering pings, a callback failed, a task was cancelled, a broadcast
        gave up on the connection. The close runs on its own from the
        transport's callbacks and the closing timer (see ``DRAINING`` in
        anynet._ws_closing). It finishes only if
        the event loop keeps running that long (at most ``disconnect_timeout``):
        a loop closed before then drops the socket as it is."""
        self._perform(self._closing.fail(code, reason))

    def _closing_timer_fired(self) -> None:
        self._close_timer = None
        self._perform(self._closing.timer_fired())

    def _perform(self, actions: List[Tuple[str, Optional[bytes]]]) -> None:
        """Do what the closing handshake asks, in its order."""
        closing = self._closing
        self._state = closing.frame_state
        self._deferred_failure = closing.pending_failure
        transport = self._transport
        found: Optional[List[Any]] = None
        for action, frame in actions:
            if action is closing_rules.SEND_CLOSE:
                assert frame is not None
                self._write(frame)
            elif action is closing_rules.FLUSH:
                self._flush()
            elif action is closing_rules.STOP_RECEIVING:
                self._stop_receiving()
            elif action is closing_rules.SEEK_CLOSE:
                found = self._reader.seek_close()
                if found is None:
                    self._perform(closing.frames_lost())
            elif action is closing_rules.BOUND_QUEUE:
                self._bound_queue()
            elif action is closing_rules.STOP_KEEPALIVE:
                self._stop_keepalive()
            elif action is closing_rules.WAKE_SENDERS:
                _wake(self._drainers)
            elif action is closing_rules.DROP_UNSENT:
                self._pending = None
            elif action is closing_rules.ARM_TIMER:
                self._close_timer = self._loop.call_later(
                    self._options.disconnect_timeout, self._closing_timer_fired
                )
            elif action is closing_rules.CANCEL_TIMER:
                if self._close_timer is not None:
                    self._close_timer.cancel()
                    self._close_timer = None
            elif action is closing_rules.WAKE_CLOSED_WAITERS:
                waiters, self._closed_waiters = self._closed_waiters, None
                if waiters:
                    wake_tasks_now(self._loop, waiters)
            elif transport is None or self._transport_lost:
                continue  # nothing left to do to the transport
            elif action is closing_rules.ABORT_TRANSPORT:
                transport.abort()
            elif action is closing_rules.CLOSE_TRANSPORT:
                transport.close()
            # A transport already closing (asyncio closes one whose write
            # failed) takes no more calls than those.
            elif transport.is_closing():
                continue
            elif action is closing_rules.RESUME_READING:
                if self._reading_paused:
                    self._resume_reading()
            elif action is closing_rules.HALF_CLOSE:
                if transport.can_write_eof():
                    transport.write_eof()
            else:
                raise AssertionError(f"unknown closing action {action}")
        # The peer's Close may have come with what made us fail.
        for event in found or ():
            self._control_event(event)

    def _bound_queue(self) -> None:
        """Once our Close is sent, keep at most ``max_queue`` messages.

        Reading must go on until the peer's Close arrives (pausing would hold
        the handshake up until ``disconnect_timeout``), but the application,
        which asked to close, need not keep up any more: a message arriving
        at a full queue pushes out the oldest unread one, so that memory stays
        within ``max_queue`` messages until the connection ends.
        """
        max_queue = self._options.max_queue
        if max_queue is not None:
            self._messages = deque(self._messages or (), maxlen=max_queue)

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

    def _closed_exception(self) -> ConnectionClosed:
        closing = self._closing
        if closing.close_code is not None:
            return closed_error(closing.close_code, closing.close_reason)
        if closing.sent_close is not None:
            return closed_error(*closing.sent_close)
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
