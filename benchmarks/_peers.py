"""Each library's echo server and benchmark client, written the way its users write them.

Every library gets the same settings where it has them: compression off, keep-alive
pings off (a measured connection lives for a second or two, so pings would never fire
anyway), and a message size limit of 4 MiB so that 1 MiB messages pass.  Everything
else stays at the library's defaults.

Libraries:

- ``anynet``: the spec's plain async API, ``await send()`` / ``await recv()``.
- ``anynet-callback``: anynet's callback path, ``set_message_callback`` and
  ``send_nowait``, with no task switch per message (the counterpart of picows's API);
  the server's handler is a plain function, so no task runs per connection.
- ``picows``: its callback API (``WSListener.on_ws_frame``), the way its authors
  benchmark it; the fastest peer and the reference for ratios.
- ``websockets``: the ``websockets.asyncio`` API.
- ``aiohttp``: ``web.WebSocketResponse`` and ``ClientSession.ws_connect``.
- ``raw``: an ``asyncio.Protocol`` TCP echo with no framing at all: the ceiling.
  Its server writes back each read as it came; its client counts every ``size``
  bytes received as one echoed message and sends each next message with its own
  ``transport.write``, exactly as the picows client does, so the gap between the
  two is what WebSocket framing costs.  (Answering a whole read with one write
  would turn pipelining into bulk transfer and measure nothing comparable.)

A client keeps one message (ping-pong) or a window of messages (pipelined) in
flight on each of its open connections and counts completed round trips in a
shared :class:`Meter`; the harness opens and closes the measured window with
timers, so the loops never look at a clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import time
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Optional

if TYPE_CHECKING:
    import anynet.tls

HOST = "127.0.0.1"
LARGEST_MESSAGE = 4 * 1024 * 1024

LIBRARIES = ("anynet", "anynet-callback", "picows", "websockets", "aiohttp", "raw")
WEBSOCKET_LIBRARIES = ("anynet", "anynet-callback", "picows", "websockets", "aiohttp")


class EchoError(Exception):
    """The server sent back something other than what the client sent."""


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) that process ``pid``'s main thread has used.

    From the scheduler's nanosecond count where the kernel keeps it, else from
    the clock ticks of ``/proc/PID/stat``: the worker processes do their work in
    the main thread (the other one only waits for the harness's next command).
    """
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Round trips completed, and the counter's value when the measured window opened and
    closed, with the CPU time the client and the server process spent in between."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.running = True
        self.count = 0
        self._server_pid = server_pid
        self._start: tuple[int, float, float, float] | None = None
        self._end: tuple[int, float, float, float] | None = None

    def arm(self, warmup: float, duration: float) -> None:
        """Open the window after ``warmup`` seconds and stop the traffic ``duration`` later."""
        loop = asyncio.get_running_loop()
        loop.call_later(warmup, self._open)
        loop.call_later(warmup + duration, self._close)

    def _reading(self) -> tuple[int, float, float, float]:
        server = cpu_seconds(self._server_pid) if self._server_pid else 0.0
        return (self.count, time.perf_counter(), cpu_seconds(os.getpid()), server)

    def _open(self) -> None:
        self._start = self._reading()

    def _close(self) -> None:
        self._end = self._reading()
        self.running = False

    def result(self) -> dict:
        assert self._start is not None and self._end is not None
        count, elapsed, client_cpu, server_cpu = (
            end - start for start, end in zip(self._start, self._end)
        )
        result = {"rate": count / elapsed, "count": count, "elapsed": elapsed}
        if count:
            # Per round trip, i.e. per message the server echoed.
            result["client_cpu_us"] = client_cpu / count * 1e6
            if self._server_pid:
                result["server_cpu_us"] = server_cpu / count * 1e6
        return result


class Countdown(Meter):
    """A meter whose traffic stops once ``round_trips`` have completed (the
    messages in flight then complete too): a fixed amount of work, for
    counting instructions or timing a fixed number of round trips."""

    def __init__(self, round_trips: int) -> None:
        self._stop_at = round_trips
        super().__init__()

    @property
    def count(self) -> int:
        return self._count

    @count.setter
    def count(self, value: int) -> None:
        self._count = value
        if value >= self._stop_at:
            self.running = False


def check_first_reply(reply: bytes, payload: bytes) -> None:
    """Compare a connection's first reply byte for byte; later replies are checked by length."""
    if reply != payload:
        raise EchoError(
            f"first reply differs from the message sent ({len(reply)} vs {len(payload)} bytes)"
        )


def wrong_length(reply_length: int, payload: bytes) -> EchoError:
    return EchoError(f"reply of {reply_length} bytes to a message of {len(payload)} bytes")


# ------------------------------------------------------------------------------- TLS
#
# With ``secure`` a server presents a fresh self-signed certificate and clients
# trust any certificate: what is measured is the encryption, not the verification.


@functools.lru_cache(maxsize=None)
def tls_context() -> "anynet.tls.TLSContext":
    """One context for both sides: a fresh self-signed certificate for servers,
    no verification for clients."""
    from anynet import tls

    key = tls.TLSPrivateKey.generate()
    certificate = tls.TLSCertificate.generate(key)
    certificate.subject["CN"] = certificate.issuer["CN"] = HOST
    certificate.sign(key)
    context = tls.TLSContext()
    context.set_certificate(certificate, key)
    context.disable_verification()
    return context


def ssl_context(secure: bool, server: bool) -> Optional[ssl.SSLContext]:
    return tls_context().get(server) if secure else None


def scheme(secure: bool) -> str:
    return "wss" if secure else "ws"


# --------------------------------------------------------------------------- servers


@contextlib.asynccontextmanager
async def anynet_server(secure: bool = False) -> AsyncIterator[int]:
    from anynet import websocket

    async def echo(client: websocket.WebSocketClient) -> None:
        with contextlib.suppress(websocket.ConnectionClosed):
            while True:
                await client.send(await client.recv())

    async with websocket.serve(
        echo,
        HOST,
        0,
        tls_context() if secure else None,
        max_message_size=LARGEST_MESSAGE,
        ping_interval=None,
        compression=None,
    ) as server:
        yield server.local_address()[1]


@contextlib.asynccontextmanager
async def anynet_callback_server(secure: bool = False) -> AsyncIterator[int]:
    assert not secure, "measured over plain TCP only"
    from anynet import websocket

    # A callback handler: a plain function, so that no task runs per connection.
    def echo(client: websocket.WebSocketClient) -> None:
        def answer(message: bytes | str) -> None:
            if message.__class__ is bytes:
                client.send_nowait(message)
            else:
                client.send_text_nowait(message)

        client.set_message_callback(answer)

    async with websocket.serve(
        echo, HOST, 0, max_message_size=LARGEST_MESSAGE, ping_interval=None, compression=None
    ) as server:
        yield server.local_address()[1]


@contextlib.asynccontextmanager
async def picows_server(secure: bool = False) -> AsyncIterator[int]:
    import picows

    data_types = (picows.WSMsgType.BINARY, picows.WSMsgType.TEXT, picows.WSMsgType.CONTINUATION)

    class Echo(picows.WSListener):
        def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
            if frame.msg_type == picows.WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type in data_types:
                # send() copies the payload into picows's write buffer at once, so the
                # zero-copy view of the read buffer is safe here: the documented fast path.
                transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)

    server = await picows.ws_create_server(
        lambda request: Echo(),
        HOST,
        0,
        max_frame_size=LARGEST_MESSAGE,
        ssl=ssl_context(secure, server=True),
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


@contextlib.asynccontextmanager
async def websockets_server(secure: bool = False) -> AsyncIterator[int]:
    assert not secure, "measured over plain TCP only"
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with serve(
        echo, HOST, 0, compression=None, max_size=LARGEST_MESSAGE, ping_interval=None
    ) as server:
        yield next(iter(server.sockets)).getsockname()[1]


@contextlib.asynccontextmanager
async def aiohttp_server(secure: bool = False) -> AsyncIterator[int]:
    assert not secure, "measured over plain TCP only"
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=LARGEST_MESSAGE)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


class _RawEcho(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@contextlib.asynccontextmanager
async def raw_server(secure: bool = False) -> AsyncIterator[int]:
    assert not secure, "measured over plain TCP only"
    server = await asyncio.get_running_loop().create_server(_RawEcho, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


SERVERS = {
    "anynet": anynet_server,
    "anynet-callback": anynet_callback_server,
    "picows": picows_server,
    "websockets": websockets_server,
    "aiohttp": aiohttp_server,
    "raw": raw_server,
}


# --------------------------------------------------------- clients with an async API
#
# anynet, websockets and aiohttp are driven by the same two loops, through each
# library's own send and receive coroutines, so they differ only in the library.

Send = Callable[[bytes], Awaitable[None]]
Receive = Callable[[], Awaitable[bytes]]


async def ping_pong(send: Send, receive: Receive, payload: bytes, meter: Meter) -> None:
    """One message in flight: send, wait for the echo, repeat."""
    size = len(payload)
    while meter.running:
        await send(payload)
        reply = await receive()
        if len(reply) != size:
            raise wrong_length(len(reply), payload)
        meter.count += 1


async def pipelined(
    send: Send, receive: Receive, payload: bytes, window: int, meter: Meter
) -> None:
    """``window`` messages in flight: a sender task, and a receiver loop that reopens the window.

    Plain counters rather than an ``asyncio.Semaphore``: the semaphore's bookkeeping
    cost about a tenth of a fast client's time, which would blur the libraries.
    """
    loop = asyncio.get_running_loop()
    size = len(payload)
    sent = received = 0
    window_reopened: asyncio.Future | None = None
    sender_ran: asyncio.Future | None = None

    async def sender() -> None:
        nonlocal sent, window_reopened, sender_ran
        try:
            while meter.running:
                if sent - received >= window:
                    window_reopened = loop.create_future()
                    await window_reopened
                    continue
                # Counted before the await: once the meter stops, `sent` is final.
                sent += 1
                await send(payload)
                if sender_ran is not None:
                    sender_ran.set_result(None)
                    sender_ran = None
        finally:
            if sender_ran is not None:
                sender_ran.set_result(None)
                sender_ran = None

    sending = asyncio.ensure_future(sender())
    try:
        while meter.running or received < sent:
            if received == sent:
                # Nothing in flight (a receive that does not suspend can drain
                # the window in one step): waiting for a reply now could wait
                # for a message the sender, stopped by the meter, never sends.
                sender_ran = loop.create_future()
                await sender_ran
                continue
            reply = await receive()
            if len(reply) != size:
                raise wrong_length(len(reply), payload)
            received += 1
            meter.count += 1
            if window_reopened is not None:
                window_reopened.set_result(None)
                window_reopened = None
        await sending
    finally:
        sending.cancel()


class AsyncAPIConnection:
    """One open connection of a library with ``send``/``receive`` coroutines."""

    def __init__(self, send: Send, receive: Receive):
        self.send = send
        self.receive = receive

    async def verify(self, payload: bytes) -> None:
        await self.send(payload)
        check_first_reply(await self.receive(), payload)

    async def ping_pong(self, payload: bytes, meter: Meter) -> None:
        await ping_pong(self.send, self.receive, payload, meter)

    async def pipelined(self, payload: bytes, window: int, meter: Meter) -> None:
        await pipelined(self.send, self.receive, payload, window, meter)


class AnynetClient:
    def __init__(self, secure: bool = False) -> None:
        from anynet import websocket

        self._websocket = websocket
        self._secure = secure
        self._context = tls_context() if secure else None

    @contextlib.asynccontextmanager
    async def connection(self, port: int) -> AsyncIterator[AsyncAPIConnection]:
        async with self._websocket.connect(
            f"{scheme(self._secure)}://{HOST}:{port}/",
            self._context,
            max_message_size=LARGEST_MESSAGE,
            ping_interval=None,
            compression=None,
        ) as client:
            yield AsyncAPIConnection(client.send, client.recv)


class WebsocketsClient:
    def __init__(self) -> None:
        from websockets.asyncio.client import connect

        self._connect = connect

    @contextlib.asynccontextmanager
    async def connection(self, port: int) -> AsyncIterator[AsyncAPIConnection]:
        async with self._connect(
            f"ws://{HOST}:{port}/",
            compression=None,
            max_size=LARGEST_MESSAGE,
            ping_interval=None,
            proxy=None,
        ) as connection:
            yield AsyncAPIConnection(connection.send, connection.recv)


class AiohttpClient:
    """All connections of one client process share a session, as aiohttp recommends."""

    def __init__(self) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def connection(self, port: int) -> AsyncIterator[AsyncAPIConnection]:
        if self._session is None:
            # limit=0: the default pool of 100 connections would queue the 2000 of
            # the memory benchmark.
            self._session = self._aiohttp.ClientSession(
                connector=self._aiohttp.TCPConnector(limit=0)
            )
        async with self._session.ws_connect(
            f"ws://{HOST}:{port}/", compress=0, max_msg_size=LARGEST_MESSAGE
        ) as ws:
            yield AsyncAPIConnection(ws.send_bytes, ws.receive_bytes)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# ------------------------------------------------------------- callback clients
#
# picows, anynet's callback path and the raw TCP ceiling are driven from their
# receive callbacks: each reply that completes a message sends the next one
# while the meter runs.


class CallbackConnection:
    """Keeps ``window`` messages in flight from a receive callback (picows, anynet-callback, raw)."""

    def __init__(self, payload: bytes, write: Callable[[bytes], None]) -> None:
        self.payload = payload
        self.write = write
        self.meter: Meter | None = None
        self.in_flight = 0
        self.done: asyncio.Future | None = None
        self.first_reply: asyncio.Future | None = None

    async def verify(self, payload: bytes) -> None:
        self.first_reply = asyncio.get_running_loop().create_future()
        self.write(payload)
        check_first_reply(await self.first_reply, payload)
        self.first_reply = None

    async def ping_pong(self, payload: bytes, meter: Meter) -> None:
        await self.pipelined(payload, 1, meter)

    async def pipelined(self, payload: bytes, window: int, meter: Meter) -> None:
        self.meter = meter
        self.done = asyncio.get_running_loop().create_future()
        for _ in range(window):
            self.in_flight += 1
            self.write(payload)
        await self.done
        self.done = None

    def on_reply(self) -> None:
        """One echo completed: send the next message while the meter runs."""
        meter = self.meter
        meter.count += 1
        if meter.running:
            self.write(self.payload)
        else:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.done.set_result(None)

    def fail(self, error: BaseException) -> None:
        for waiter in (self.first_reply, self.done):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)


class PicowsClient:
    def __init__(self, payload: bytes, secure: bool = False) -> None:
        import picows

        self._secure = secure

        size = len(payload)
        binary = picows.WSMsgType.BINARY

        class Listener(picows.WSListener):
            def on_ws_connected(self, transport: picows.WSTransport) -> None:
                send = functools.partial(transport.send, binary)
                self.traffic = CallbackConnection(payload, send)

            def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
                traffic = self.traffic
                if frame.msg_type == binary and frame.fin and frame.payload_size == size:
                    if traffic.first_reply is None:
                        traffic.on_reply()
                    else:
                        traffic.first_reply.set_result(frame.get_payload_as_bytes())
                elif frame.msg_type != picows.WSMsgType.CLOSE:
                    traffic.fail(wrong_length(frame.payload_size, payload))

            def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
                self.traffic.fail(EchoError("disconnected"))

        self._picows = picows
        self._listener = Listener

    @contextlib.asynccontextmanager
    async def connection(self, port: int) -> AsyncIterator[CallbackConnection]:
        picows = self._picows
        transport, listener = await picows.ws_connect(
            self._listener,
            f"{scheme(self._secure)}://{HOST}:{port}/",
            max_frame_size=LARGEST_MESSAGE,
            ssl_context=ssl_context(self._secure, server=False),
        )
        try:
            yield listener.traffic
        finally:
            # The closing handshake: our Close, the server's Close, then the server
            # drops TCP.
            transport.send_close(picows.WSCloseCode.OK)
            await transport.wait_disconnected()


class AnynetCallbackClient:
    """anynet's callback path: replies arrive in a message callback that sends the next."""

    def __init__(self, payload: bytes) -> None:
        from anynet import websocket

        self._websocket = websocket
        self._size = len(payload)
        self._payload = payload

    @contextlib.asynccontextmanager
    async def connection(self, port: int) -> AsyncIterator[CallbackConnection]:
        async with self._websocket.connect(
            f"ws://{HOST}:{port}/", max_message_size=LARGEST_MESSAGE, ping_interval=None, compression=None
        ) as client:
            traffic = CallbackConnection(self._payload, client.send_nowait)
            size = self._size

            def on_message(message: bytes | str) -> None:
                if message.__class__ is not bytes or len(message) != size:
                    traffic.fail(wrong_length(len(message), self._payload))
                elif traffic.first_reply is None:
                    traffic.on_reply()
                else:
                    traffic.first_reply.set_result(message)

            client.set_message_callback(on_message)
            yield traffic


class _RawClientProtocol(asyncio.Protocol):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.pending = 0
        self.first_reply = bytearray()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.traffic = CallbackConnection(self.payload, transport.write)

    def data_received(self, data: bytes) -> None:
        traffic = self.traffic
        size = len(self.payload)
        if traffic.first_reply is not None:
            self.first_reply += data
            if len(self.first_reply) >= size:
                traffic.first_reply.set_result(bytes(self.first_reply))
                self.first_reply = bytearray()
            return
        # No framing: every `size` bytes received complete one message.
        self.pending += len(data)
        while self.pending >= size:
            self.pending -= size
            traffic.on_reply()

    def connection_lost(self, exc: Exception | None) -> None:
        self.traffic.fail(exc or EchoError("disconnected"))
        self.closed.set_result(None)


class RawClient:
    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    @contextlib.asynccontextmanager
    async def connection(self, port: int) -> AsyncIterator[CallbackConnection]:
        transport, protocol = await asyncio.get_running_loop().create_connection(
            lambda: _RawClientProtocol(self._payload), HOST, port
        )
        try:
            yield protocol.traffic
        finally:
            transport.close()
            await protocol.closed


def make_client(library: str, payload: bytes, secure: bool = False):
    """The client of ``library``; callback clients need the payload up front."""
    if library == "anynet":
        return AnynetClient(secure)
    if library == "picows":
        return PicowsClient(payload, secure)
    assert not secure, "measured over plain TCP only"
    if library == "anynet-callback":
        return AnynetCallbackClient(payload)
    if library == "websockets":
        return WebsocketsClient()
    if library == "aiohttp":
        return AiohttpClient()
    if library == "raw":
        return RawClient(payload)
    raise ValueError(f"unknown library {library!r}")


def library_versions() -> dict[str, str]:
    """Installed versions of the peers, picows's transport package and uvloop.

    anynet itself runs from the source tree: its version, commit and framing
    backend are recorded from its server process.
    """
    from importlib import metadata

    versions = {}
    for name in ("picows", "aiofastnet", "websockets", "aiohttp", "uvloop"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
