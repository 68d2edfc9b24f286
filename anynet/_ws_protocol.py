"""One WebSocket connection: the asyncio protocol and the user's object in one.

``WebSocketClient`` is both the ``asyncio.BufferedProtocol`` that the
transport drives and the object the application calls ``send``/``recv`` on.
Keeping them one object keeps the hot path short: a read is one call into
the framing core plus one pass that queues the messages, and a ``recv`` with
a message waiting is a deque pop that never suspends.

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
import os
import socket
import sys
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Deque,
    Dict,
    Iterable,
    List,
    Optional,
    Tuple,
    Union,
    cast,
)

from anynet import tls
from anynet._backend import FrameReader, FrameWriter, buffer_exported
from anynet._events import (
    CLOSE_ABNORMAL,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    OP_BINARY,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Ping,
    Pong,
    ProtocolError,
)
from anynet._ws_errors import ConnectionClosed, ConnectionClosedOK, closed_error
from anynet._ws_options import ConnectionOptions

if TYPE_CHECKING:
    from anynet.http import HTTPRequest

Message = Union[bytes, str]

_OPEN = 1
_CLOSING = 2
_CLOSED = 3

# Payloads from this size on are sent without a new frame-sized bytes object
# (see WebSocketClient._write_large).
_LARGE_PAYLOAD_SIZE = 64 * 1024
# The largest frame built in the reused buffer, which is as large as the
# largest frame it held: bigger ones are encoded into a bytes object each.
_MAX_REUSED_BUFFER = 4 * 1024 * 1024
# Up to this size, copying a server's payload behind its header costs less
# than writing the header as a packet of its own.
_MAX_COPIED_SERVER_PAYLOAD = 256 * 1024
# A frame header with a 64-bit length and a masking key.
_MAX_HEADER_SIZE = 14
# RFC 6455 section 5.5: a Close frame carries a 2-byte code and 123 bytes of reason.
_MAX_CLOSE_REASON = 123


class WebSocketClient(asyncio.BufferedProtocol):
    """One WebSocket connection, on either side: what ``connect`` yields and handlers get.

    Messages are received in arrival order with ``recv_message()`` or
    ``async for message in client`` (``bytes`` for binary messages, ``str``
    for text), or by type with ``recv()`` and ``recv_text()``; a message of
    the other type stays queued for the other method. Every unread message
    counts toward ``max_queue``, so an application that reads one type only
    must not be sent the other.

    ``subprotocol`` is the negotiated subprotocol (or ``None``). On the
    server side, ``request`` is the ``anynet.http.HTTPRequest`` of the
    opening handshake (``path``, ``params``, ``headers``), e.g. to
    authenticate the client; it is ``None`` on the client side.

    After the connection has closed, ``close_code`` and ``close_reason`` say
    how, and every ``send``/``recv`` raises ``ConnectionClosed`` with them
    (``ConnectionClosedOK`` for codes 1000, 1001 and 1005).

    The ``asyncio.BufferedProtocol`` methods are the transport's interface,
    not the application's.
    """

    # Slots keep an idle connection small (a server may hold tens of
    # thousands) and attribute access on the hot path fast.
    __slots__ = (
        "subprotocol",
        "request",
        "_is_client",
        "_options",
        "_loop",
        "_reader",
        "get_buffer",
        "_writer",
        "_transport",
        "_local_address",
        "_remote_address",
        "_certificate",
        "_certificate_read",
        "_state",
        "_receiving",
        "_close_code",
        "_close_reason",
        "_sent_close",
        "_close_timer",
        "_transport_lost",
        "_closed_waiters",
        "_messages",
        "_receivers",
        "_pause_level",
        "_resume_level",
        "_reading_paused",
        "_pending",
        "_pending_size",
        "_write_batch",
        "_write_limit",
        "_writing_paused",
        "_joins_writelines",
        "_drainers",
        "_pings",
        "_keepalive_payload",
        "_keepalive_timer",
        "_deferred_failure",
        "_unanswered_ping",
    )

    def __init__(
        self,
        *,
        is_client: bool,
        options: ConnectionOptions,
        subprotocol: Optional[str] = None,
        request: Optional[HTTPRequest] = None,
    ) -> None:
        self.subprotocol = subprotocol
        self.request = request
        self._is_client = is_client
        self._options = options
        self._loop = asyncio.get_running_loop()
        self._reader = FrameReader(is_client, options.max_message_size)
        # asyncio.BufferedProtocol.get_buffer is the reader's own: it owns the
        # receive buffer, so a complete frame is parsed where the socket put
        # it, and an idle connection holds no buffer. Bound here rather than
        # called from a method, it costs no Python frame per read.
        self.get_buffer = self._reader.get_buffer  # type: ignore[method-assign]
        self._writer = FrameWriter(is_client)
        self._transport: Optional[asyncio.Transport] = None
        self._local_address: Tuple[str, int] = ("", 0)
        self._remote_address: Tuple[str, int] = ("", 0)
        self._certificate: Optional[tls.TLSCertificate] = None
        self._certificate_read = False

        self._state = _OPEN
        self._receiving = True
        self._close_code: Optional[int] = None
        self._close_reason = ""
        self._sent_close: Optional[Tuple[int, str]] = None
        self._close_timer: Optional[asyncio.TimerHandle] = None
        self._transport_lost = False
        # Tasks waiting for the connection to close; created by the first.
        self._closed_waiters: Optional[List[asyncio.Future[None]]] = None

        # Created with the first message: an idle connection has none.
        self._messages: Optional[Deque[Message]] = None
        self._receivers: List[asyncio.Future[None]] = []
        max_queue = options.max_queue
        self._pause_level = sys.maxsize if max_queue is None else max_queue
        self._resume_level = 0 if max_queue is None else max_queue // 4
        self._reading_paused = False

        self._pending: Optional[List[bytes]] = None
        self._pending_size = 0
        self._write_batch = _write_batch(self._loop)
        self._write_limit = options.write_limit
        self._writing_paused = False
        self._joins_writelines = False
        self._drainers: List[asyncio.Future[None]] = []

        self._pings: Dict[bytes, Tuple[float, Optional[asyncio.Future[float]]]] = {}
        self._keepalive_payload: Optional[bytes] = None
        self._keepalive_timer: Optional[asyncio.TimerHandle] = None
        self._deferred_failure: Optional[ProtocolError] = None
        self._unanswered_ping: Optional[bytes] = None

    # ------------------------------------------------------------------
    # The application's interface

    async def send(self, data: bytes) -> None:
        """Send a binary message. Waits while the send buffer is over ``write_limit``."""
        # The argument first: a wrong type is our user's bug, open or not.
        cls: type = data.__class__
        if cls is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send() takes bytes, not {cls.__name__}; use send_text() for str")
        if self._state is not _OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            await self._wait_for_writing()
        if (cls is bytes or cls is bytearray) and len(data) >= _LARGE_PAYLOAD_SIZE:
            self._write_large(OP_BINARY, data)
        else:
            self._write(self._writer.encode(OP_BINARY, data))

    async def send_text(self, data: str) -> None:
        """Send a text message. Waits while the send buffer is over ``write_limit``."""
        if data.__class__ is not str and not isinstance(data, str):
            raise TypeError(
                f"send_text() takes str, not {type(data).__name__}; use send() for bytes"
            )
        if self._state is not _OPEN:
            raise self._closed_exception()
        if self._writing_paused:
            await self._wait_for_writing()
        self._write(self._writer.encode(OP_TEXT, data))

    async def recv(self) -> bytes:
        """Receive the next binary message; text messages stay queued for ``recv_text``."""
        # The wait is inline rather than in a helper shared with recv_text:
        # in ping-pong traffic this is every message's path, and a helper
        # coroutine would cost a frame each time.
        while True:
            messages = self._messages
            if messages:
                if messages[0].__class__ is bytes:
                    message = messages.popleft()
                    if self._reading_paused:
                        self._resume_reading_if_drained()
                    return message  # type: ignore[return-value]  # the class check narrows it
                taken = self._take(bytes)
                if taken is not None:
                    return taken  # type: ignore[return-value]  # _take checked the class
            await self._receiver()

    async def recv_text(self) -> str:
        """Receive the next text message; binary messages stay queued for ``recv``."""
        while True:
            messages = self._messages
            if messages:
                if messages[0].__class__ is str:
                    message = messages.popleft()
                    if self._reading_paused:
                        self._resume_reading_if_drained()
                    return message  # type: ignore[return-value]  # the class check narrows it
                taken = self._take(str)
                if taken is not None:
                    return taken  # type: ignore[return-value]  # _take checked the class
            await self._receiver()

    async def recv_message(self) -> Message:
        """Receive the next message of either type: ``bytes`` for binary, ``str`` for text."""
        while True:
            messages = self._messages
            if messages:
                message = messages.popleft()
                if self._reading_paused:
                    self._resume_reading_if_drained()
                return message
            await self._receiver()

    def __aiter__(self) -> WebSocketClient:
        return self

    async def __anext__(self) -> Message:
        """The next message of either type; iteration ends when the connection closes normally.

        An abnormal close (an error code, a protocol violation, a lost
        connection) raises ``ConnectionClosedError`` instead.
        """
        while True:
            messages = self._messages
            if messages:
                message = messages.popleft()
                if self._reading_paused:
                    self._resume_reading_if_drained()
                return message
            try:
                await self._receiver()
            except ConnectionClosedOK:
                raise StopAsyncIteration from None

    async def ping(self) -> float:
        """Send a ping and wait for its pong; return the round-trip time in seconds.

        The wait ends with ``ConnectionClosed`` if the connection closes
        first; wrap the call in ``asyncio.wait_for`` to bound it otherwise.
        """
        if self._state is not _OPEN:
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
        if self._state is _OPEN:
            frame = self._writer.encode_close(code, reason)
            self._state = _CLOSING
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

    async def close(self) -> None:
        """Drop the TCP connection at once, without a closing handshake.

        Data not yet written to the socket is discarded; ``disconnect`` is the
        graceful way to end a connection.
        """
        if not self._transport_lost:
            self._state = _CLOSED
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
        state = {_OPEN: "open", _CLOSING: "closing", _CLOSED: "closed"}[self._state]
        host, port = self._remote_address
        return f"<WebSocketClient {role} side, peer {host}:{port}, {state}>"

    # ------------------------------------------------------------------
    # asyncio.BufferedProtocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport.
        self._transport = transport = cast(asyncio.Transport, transport)
        self._local_address = _address(transport.get_extra_info("sockname"))
        self._remote_address = _address(transport.get_extra_info("peername"))
        if self._is_client:
            # Small messages must leave at once, not wait for Nagle's
            # algorithm. (The HTTP server did this for the server side.)
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self._write_limit)
        # The base class's writelines (asyncio's socket transport before
        # Python 3.12) joins its arguments into one bytes object.
        self._joins_writelines = type(transport).writelines is asyncio.WriteTransport.writelines
        if self._options.ping_interval is not None:
            self._keepalive_timer = self._loop.call_later(
                self._options.ping_interval, self._send_keepalive_ping
            )

    def buffer_updated(self, nbytes: int) -> None:
        # Typed loosely: the class checks below sort the events faster than
        # isinstance would, and mypy does not follow them.
        events: List[Any] = self._reader.buffer_updated(nbytes)
        if not events:
            return
        messages = self._messages
        if messages is None:
            messages = self._messages = deque()
        append = messages.append
        for event in events:
            cls = event.__class__
            if cls is bytes or cls is str:
                append(event)
            else:
                self._control_event(event)
        receivers = self._receivers
        if receivers:
            # A new list: the tasks woken may wait again before this returns.
            self._receivers = []
            _wake_tasks_now(self._loop, receivers)
        if len(messages) >= self._pause_level and not self._reading_paused:
            if self._state is _OPEN:
                self._pause_reading()

    def eof_received(self) -> Optional[bool]:
        # Let the transport close: a half-open WebSocket is of no use.
        return None

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._transport_lost = True
        self._state = _CLOSED
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
            _wake_tasks_now(self._loop, waiters)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        ping, self._unanswered_ping = self._unanswered_ping, None
        if ping is not None and self._state is _OPEN:
            self._write(self._writer.encode(OP_PONG, ping))
        _wake(self._drainers)

    def _receive_early_data(self, data: bytes) -> None:
        """Feed bytes that arrived with the handshake response, as a read would."""
        view = memoryview(data)
        while view and self._receiving:
            buffer = self._reader.get_buffer(len(view))
            count = min(len(buffer), len(view))
            buffer[:count] = view[:count]
            self.buffer_updated(count)
            view = view[count:]

    # ------------------------------------------------------------------
    # Receiving

    def _receiver(self) -> asyncio.Future[None]:
        """The slow path of the receive methods: a future that the next queued
        message, or the end of receiving, completes.

        The receive methods await it themselves, without a coroutine of their
        own: a connection waiting for its next message holds one frame less,
        and each wait costs one coroutine less.
        """
        if self._deferred_failure is not None:
            self._fail_deferred()
        if not self._receiving:
            raise self._closed_exception()
        pending = self._pending
        if pending is not None:
            # About to wait: what this turn sent goes now, and the next
            # send, an answer to what arrives, goes out directly.
            if pending:
                self._flush()
            else:
                self._pending = None
        receivers = self._receivers
        if receivers:
            # A cancelled wait leaves its future here (done): drop those.
            receivers[:] = [receiver for receiver in receivers if not receiver.done()]
        receiver: asyncio.Future[None] = self._loop.create_future()
        receivers.append(receiver)
        return receiver

    def _take(self, kind: type) -> Optional[Message]:
        """The first queued message of class ``kind``, behind messages of the other type."""
        assert self._messages is not None
        for index, message in enumerate(self._messages):
            if message.__class__ is kind:
                del self._messages[index]
                if self._reading_paused:
                    self._resume_reading_if_drained()
                return message
        return None

    def _control_event(self, event: Any) -> None:
        cls = event.__class__
        if cls is Ping:
            if self._state is _OPEN:
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

    def _pause_reading(self) -> None:
        assert self._transport is not None
        self._reading_paused = True
        self._transport.pause_reading()

    def _resume_reading(self) -> None:
        assert self._transport is not None
        self._reading_paused = False
        if not self._transport_lost:
            self._transport.resume_reading()

    def _resume_reading_if_drained(self) -> None:
        if self._messages is None or len(self._messages) <= self._resume_level:
            self._resume_reading()

    def _stop_receiving(self) -> None:
        """No message can arrive any more: wake receivers and fail pings in flight."""
        self._receiving = False
        _wake(self._receivers)
        pings, self._pings = self._pings, {}
        for _, waiter in pings.values():
            if waiter is not None and not waiter.done():
                waiter.set_exception(self._closed_exception())

    # ------------------------------------------------------------------
    # Sending

    def _write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            # The first frame since the last flush goes out at once, so a
            # lone message waits for nothing. The frames that follow it are
            # collected and written together by _flush, which runs when the
            # application waits for a message, or else at the next loop turn.
            # Only a frame that was held back costs that callback: in
            # ping-pong traffic no frame ever is.
            assert self._transport is not None
            self._transport.write(data)
            self._pending = []
            return
        if not pending:
            batch = self._write_batch
            if not batch:
                self._loop.call_soon(_flush_batch, self._loop, batch)
            batch.append(self)
        pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self._write_limit:
            self._flush()

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

    def _flush(self) -> None:
        pending = self._pending
        self._pending = None
        self._pending_size = 0
        if pending and not self._transport_lost:
            assert self._transport is not None
            if len(pending) == 1:
                self._transport.write(pending[0])
            else:
                self._transport.writelines(pending)

    async def _wait_for_writing(self) -> None:
        while self._writing_paused and self._state is _OPEN:
            drainer: asyncio.Future[None] = self._loop.create_future()
            self._drainers.append(drainer)
            try:
                await drainer
            finally:
                if drainer in self._drainers:
                    self._drainers.remove(drainer)
        if self._state is not _OPEN:
            raise self._closed_exception()

    def _send_ping(self, waiter: Optional[asyncio.Future[float]]) -> bytes:
        payload = os.urandom(4)
        while payload in self._pings:
            payload = os.urandom(4)
        self._pings[payload] = (self._loop.time(), waiter)
        self._write(self._writer.encode(OP_PING, payload))
        return payload

    def _pong_received(self, payload: bytes) -> None:
        if payload not in self._pings:
            return  # unsolicited: RFC 6455 5.5.3 allows it, and it needs no answer
        now = self._loop.time()
        # A pong answers its ping and every ping sent before it, since a
        # peer may answer only the latest of several pings.
        for key in list(self._pings):
            sent_at, waiter = self._pings.pop(key)
            if waiter is not None and not waiter.done():
                waiter.set_result(now - sent_at)
            if key == payload:
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
        if delay is not None and self._state is _OPEN:
            self._keepalive_timer = self._loop.call_later(delay, callback)

    def _stop_keepalive(self) -> None:
        # Once closing, the closing handshake has its own bound.
        self._schedule_keepalive(None, None)
        self._keepalive_payload = None

    def _send_keepalive_ping(self) -> None:
        self._keepalive_timer = None
        if self._state is not _OPEN:
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
        if self._state is _OPEN:
            # RFC 6455 5.5.1: answer with a Close, echoing the peer's code.
            try:
                frame = self._writer.encode_close(None if code == CLOSE_NO_STATUS else code, "")
            except ValueError:
                frame = self._writer.encode_close(CLOSE_NORMAL, "")
            self._sent_close = (code, "")
            self._write(frame)
        self._state = _CLOSED
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
        if self._state is _OPEN:
            reason = _truncate_reason(reason)
            self._sent_close = (code, reason)
            self._write(self._writer.encode_close(code, reason))
        self._state = _CLOSED
        self._stop_receiving()
        self._finish_closing()

    def _close_now(self, code: int, reason: str) -> None:
        """Send a Close with ``code`` if still open, and close TCP without waiting."""
        if self._state is _OPEN:
            self._sent_close = (code, reason)
            self._write(self._writer.encode_close(code, reason))
        self._state = _CLOSED
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
        if self._transport_lost:
            return
        # A future per caller, so that one caller's cancellation does not
        # end the others' wait.
        waiter: asyncio.Future[None] = self._loop.create_future()
        if self._closed_waiters is None:
            self._closed_waiters = []
        self._closed_waiters.append(waiter)
        await waiter

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


# Per event loop, the connections that held frames back during the current
# loop turn. One callback per turn writes what each of them collected, rather
# than one callback per connection: a server answering many connections in one
# turn schedules one, not hundreds.
_write_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, List[WebSocketClient]] = (
    weakref.WeakKeyDictionary()
)


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


def _write_batch(loop: asyncio.AbstractEventLoop) -> List[WebSocketClient]:
    batch = _write_batches.get(loop)
    if batch is None:
        batch = _write_batches[loop] = []
    return batch


def _flush_batch(loop: asyncio.AbstractEventLoop, batch: List[WebSocketClient]) -> None:
    for connection in batch:
        try:
            connection._flush()
        except Exception as error:
            # One connection's failure must not keep the others' frames.
            loop.call_exception_handler(
                {"message": "failed to write WebSocket frames", "exception": error}
            )
    batch.clear()


def _wake_tasks_now(loop: asyncio.AbstractEventLoop, waiters: List[asyncio.Future[None]]) -> None:
    """Complete ``waiters`` and run the task waiting on each one here and now.

    Completing a future only schedules its task for the next loop iteration,
    and in ping-pong traffic that iteration (a poll of the selector and, on
    the standard loop, a pass through its Python code) costs about as much
    as the message itself. So, from a plain callback (the transport's read
    callback), the task's wake-up callback is called at once, in the task's
    own context, the way Python 3.12's eager tasks take their first step.
    Inside a running task, or with a future that does not expose its
    callbacks, the future completes the ordinary way.
    """
    eager = asyncio.current_task(loop) is None
    for waiter in waiters:
        if waiter.done():
            continue  # its wait was cancelled
        # The (callback, context) pairs of asyncio's futures, both the C
        # and the Python implementation; the one callback of a future that
        # a task awaits is that task's wake-up.
        callbacks = getattr(waiter, "_callbacks", None) if eager else None
        if callbacks and len(callbacks) == 1:
            wakeup, context = callbacks[0]
            waiter.remove_done_callback(wakeup)
            waiter.set_result(None)
            context.run(wakeup, waiter)
        else:
            waiter.set_result(None)


def _wake(waiters: List[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    waiters.clear()


def _address(address: Any) -> Tuple[str, int]:
    # IPv6 addresses come with flow info and scope id; keep (host, port).
    if isinstance(address, tuple) and len(address) >= 2:
        return (address[0], address[1])
    return ("", 0)


def _truncate_reason(reason: str) -> str:
    encoded = reason.encode("utf-8")
    if len(encoded) <= _MAX_CLOSE_REASON:
        return reason
    return encoded[:_MAX_CLOSE_REASON].decode("utf-8", "ignore")


def broadcast(clients: Iterable[WebSocketClient], message: Union[bytes, str]) -> int:
    """Send ``message`` to every open connection in ``clients`` without waiting.

    A server frame is not masked, so the frame is encoded once and written
    to every server-side connection. Returns how many connections were sent
    the message: a connection that is closing, or whose send buffer is over
    its ``write_limit`` (a peer that does not keep up), is skipped rather
    than allowed to buffer without bound.
    """
    if isinstance(message, str):
        opcode = OP_TEXT
    elif isinstance(message, (bytes, bytearray, memoryview)):
        opcode = OP_BINARY
    else:
        raise TypeError(f"broadcast() takes bytes or str, not {type(message).__name__}")
    frame: Optional[bytes] = None
    sent = 0
    for client in clients:
        if client._state is not _OPEN or client._writing_paused:
            continue
        if client._is_client:
            # A client frame needs a fresh mask every time.
            client._write(client._writer.encode(opcode, message))
        else:
            if frame is None:
                frame = client._writer.encode(opcode, message)
            client._write(frame)
        sent += 1
    return sent
