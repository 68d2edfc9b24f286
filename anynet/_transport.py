"""The layer under the frames: listening, accepting and connecting, with or without TLS.

TLS goes through aiofastnet's transports on every loop: OpenSSL with buffers of
their own, a tenth of the memory of asyncio's TLS layer per idle connection
and half its instructions per message (benchmarks/results/transport.md).
Plain TCP goes through them only where the loop's own transports are Python
(asyncio's loops), where they save about 15 % of the server's instructions per
message; uvloop's own are compiled already, cost 3 % more per message, and
hold about 4.7 KiB less per idle connection, which a server of tens of
thousands of connections feels more (benchmarks/results/per-message).

Accepting is ours, wherever the loop can watch a socket (selector loops and
uvloop; Windows' proactor loop accepts by itself). When the process runs out
of file descriptors, accept() fails with EMFILE or ENFILE until some are
closed, while the listening socket stays readable: an accept loop that only
logs and retries spins and floods the log (asyncio's retries up to
``backlog`` times per wake-up, each with a traceback; uvloop's accepts and
drops the waiting connections, silently). Here the listener stops watching its socket, logs one warning,
and tries one accept every ``ACCEPT_RETRY_INTERVAL`` until it succeeds;
connections that arrive meanwhile wait in the kernel's listen queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import socket
import ssl
import stat
import typing
from typing import Any, Callable, Coroutine, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

import aiofastnet

__all__ = [
    "ACCEPT_RETRY_INTERVAL",
    "Listener",
    "Server",
    "connect",
    "connect_unix",
    "listen",
    "listen_unix",
]

logger = logging.getLogger("anynet.http")

ProtocolFactory = Callable[[], asyncio.BaseProtocol]
P = TypeVar("P", bound=asyncio.BaseProtocol)

# Seconds between attempts to accept while the process is out of descriptors
# (or the kernel out of memory for sockets): ten system calls a second at most.
ACCEPT_RETRY_INTERVAL = 0.1

# At most this many connections are accepted in one pass of the event loop, so
# that a flood of new connections cannot starve the open ones.
ACCEPTS_PER_PASS = 128

# accept() errors that mean "no resources now, the same call may work later".
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


async def connect(
    protocol_factory: Callable[[], P],
    host: str,
    port: int,
    ssl_context: Optional[ssl.SSLContext],
    server_hostname: Optional[str],
) -> Tuple[asyncio.Transport, P]:
    """A TCP connection to ``host``:``port``, over TLS with ``ssl_context``
    (checking ``server_hostname``, which is also sent as SNI)."""
    loop = asyncio.get_running_loop()
    if not _uses_aiofastnet(loop, ssl_context):
        return await loop.create_connection(
            protocol_factory, host, port, ssl=ssl_context, server_hostname=server_hostname
        )
    transport, protocol = await aiofastnet.create_connection(
        loop,
        protocol_factory,
        host,
        port,
        ssl=ssl_context,
        server_hostname=server_hostname,
    )
    return transport, protocol


async def connect_unix(
    protocol_factory: Callable[[], P],
    path: str,
    ssl_context: Optional[ssl.SSLContext],
    server_hostname: Optional[str],
) -> Tuple[asyncio.Transport, P]:
    """A connection to the Unix socket at ``path``, over TLS with ``ssl_context``."""
    loop = asyncio.get_running_loop()
    if not _uses_aiofastnet(loop, ssl_context):
        return await loop.create_unix_connection(
            protocol_factory, path, ssl=ssl_context, server_hostname=server_hostname
        )
    transport, protocol = await aiofastnet.create_unix_connection(
        loop,
        protocol_factory,
        path,
        ssl=ssl_context,
        server_hostname=server_hostname,
    )
    return transport, protocol


async def listen(
    protocol_factory: ProtocolFactory,
    host: str,
    port: int,
    *,
    ssl_context: Optional[ssl.SSLContext],
    handshake_timeout: float,
    backlog: int,
    reuse_port: bool,
) -> Server:
    """Listen on every address ``host`` resolves to and serve each accepted
    connection with a new protocol, over TLS with ``ssl_context`` (the TLS
    handshake bounded by ``handshake_timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    if not _can_watch_sockets(loop):
        server: Server = await aiofastnet.create_server(
            loop,
            protocol_factory,
            host,
            port,
            ssl=ssl_context,
            ssl_handshake_timeout=handshake_timeout if ssl_context is not None else None,
            backlog=backlog,
            reuse_port=reuse_port,
        )
        return server
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: List[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # Each family gets its own socket, as asyncio does.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return Listener(loop, sockets, protocol_factory, ssl_context, handshake_timeout)


def _can_watch_sockets(loop: asyncio.AbstractEventLoop) -> bool:
    """False for Windows' proactor loop, which has no ``add_reader``: there the
    loop accepts, through aiofastnet (no EMFILE on Windows, and no back-off)."""
    proactor = getattr(asyncio, "ProactorEventLoop", None)
    return proactor is None or not isinstance(loop, proactor)


async def listen_unix(
    protocol_factory: ProtocolFactory,
    path: str,
    *,
    ssl_context: Optional[ssl.SSLContext],
    handshake_timeout: float,
    backlog: int,
) -> Server:
    """Listen on a Unix socket at ``path``, as :func:`listen` does on TCP. A
    socket file already there (left by a server that did not stop cleanly) is
    replaced; any other file is not."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    loop = asyncio.get_running_loop()
    return Listener(loop, [sock], protocol_factory, ssl_context, handshake_timeout)


class Server(typing.Protocol):
    """What a listening server offers: asyncio's ``Server`` or our :class:`Listener`."""

    @property
    def sockets(self) -> Sequence[Any]: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class Listener:
    """Listening sockets and the accept loop that serves them, from the moment
    it is made until :meth:`close`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: List[socket.socket],
        protocol_factory: ProtocolFactory,
        ssl_context: Optional[ssl.SSLContext],
        handshake_timeout: float,
    ) -> None:
        self.sockets = sockets
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._ssl_context = ssl_context
        self._handshake_timeout = handshake_timeout
        self._connect_accepted_socket = _accepted_socket_connector(loop, ssl_context)
        # The retry timer of each listening socket (by descriptor) that is backing off.
        self._retries: Dict[int, asyncio.TimerHandle] = {}
        # Connections being set up (the TLS handshake), so that close() can end them.
        self._setting_up: Set[asyncio.Task[object]] = set()
        self._closed = False
        for sock in sockets:
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets; connections set up
        already are the server's to end."""
        if self._closed:
            return
        self._closed = True
        for retry in self._retries.values():
            retry.cancel()
        self._retries.clear()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        for task in self._setting_up:
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the connections still being set up at close() are done."""
        if self._setting_up:
            await asyncio.wait(set(self._setting_up))

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_PASS):
            try:
                sock, _address = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up before we accepted
            except OSError as error:
                if error.errno in _OUT_OF_RESOURCES:
                    self._back_off(listening, error)
                else:
                    logger.error("accept() on %s failed: %s", _name(listening), error)
                return
            self._serve(sock)

    def _back_off(self, listening: socket.socket, error: OSError) -> None:
        """Out of descriptors: stop watching the socket; retry on a timer."""
        logger.warning(
            "cannot accept connections on %s: %s; retrying every %g s",
            _name(listening),
            error.strerror,
            ACCEPT_RETRY_INTERVAL,
        )
        self._loop.remove_reader(listening.fileno())
        self._schedule_retry(listening)

    def _schedule_retry(self, listening: socket.socket) -> None:
        self._retries[listening.fileno()] = self._loop.call_later(
            ACCEPT_RETRY_INTERVAL, self._retry, listening
        )

    def _retry(self, listening: socket.socket) -> None:
        del self._retries[listening.fileno()]
        try:
            sock, _address = listening.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            pass  # descriptors are free again, but nobody is waiting now
        except OSError as error:
            if error.errno in _OUT_OF_RESOURCES:
                logger.debug("accept() on %s still fails: %s", _name(listening), error.strerror)
                self._schedule_retry(listening)
                return
            logger.error("accept() on %s failed: %s", _name(listening), error)
        else:
            self._serve(sock)
        logger.info("accepting connections on %s again", _name(listening))
        self._loop.add_reader(listening.fileno(), self._accept, listening)

    def _serve(self, sock: socket.socket) -> None:
        task = self._loop.create_task(
            self._connect_accepted_socket(
                self._protocol_factory,
                sock,
                ssl=self._ssl_context,
                ssl_handshake_timeout=(
                    self._handshake_timeout if self._ssl_context is not None else None
                ),
            )
        )
        self._setting_up.add(task)
        task.add_done_callback(self._set_up)

    def _set_up(self, task: asyncio.Task[object]) -> None:
        self._setting_up.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            # A failed TLS handshake (a scanner, a wrong certificate, a timeout):
            # the peer's problem, not the server's; the transport is closed.
            logger.debug("a connection ended during its set-up: %r", error)


def _uses_aiofastnet(loop: asyncio.AbstractEventLoop, ssl_context: Optional[ssl.SSLContext]) -> bool:
    """Whether connections take aiofastnet's transports (see the module):
    for TLS, except with an ``sni_callback``, which CPython calls with an SSL
    object of its own that aiofastnet's OpenSSL engine does not make (the
    process would crash in the handshake); for plain TCP on asyncio's loops."""
    if ssl_context is not None:
        return ssl_context.sni_callback is None
    return isinstance(loop, asyncio.BaseEventLoop)


def _accepted_socket_connector(
    loop: asyncio.AbstractEventLoop, ssl_context: Optional[ssl.SSLContext]
) -> Callable[..., Coroutine[Any, Any, Tuple[asyncio.Transport, asyncio.BaseProtocol]]]:
    """aiofastnet's ``connect_accepted_socket`` or the loop's own (see _uses_aiofastnet)."""
    if _uses_aiofastnet(loop, ssl_context):
        return functools.partial(aiofastnet.connect_accepted_socket, loop)
    return loop.connect_accepted_socket


def _name(sock: socket.socket) -> str:
    try:
        address = sock.getsockname()
    except OSError:
        return "a closed socket"
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
