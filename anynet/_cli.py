"""The ``anynet`` command (also ``python -m anynet.websocket``): an echo
server, a client and a quick benchmark, for poking at WebSocket endpoints
from a terminal.

    anynet serve --port 8765
    anynet serve --port 8765 --workers 4 --redis redis://127.0.0.1:6379
    anynet connect ws://127.0.0.1:8765/
    anynet bench --clients 10 --messages 2000

The installed ``anynet`` script imports the installed package wherever it
runs; ``python -m`` imports an ``anynet/`` in the current directory first,
which in a source checkout has no compiled core: the command then says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.machinery
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import time
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Coroutine,
    Dict,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import anynet
from anynet import __version__, pubsub, tls, websocket
from anynet._backend import BACKEND, EXTENSIONS_DISABLED
from anynet._ws_errors import NORMAL_CLOSE_CODES
from anynet._ws_options import DEFAULT_MAX_MESSAGE_SIZE

log = logging.getLogger("anynet.cli")


def main(argv: Optional[Sequence[str]] = None, prog: str = "anynet") -> int:
    parser = _parser(prog)
    args = parser.parse_args(argv)
    shadowed = _shadowed_compiled_core()
    if shadowed is not None:
        print(
            f"{prog}: note: running the pure-Python core, because the anynet in "
            f"{os.path.dirname(_IMPORTED_PACKAGE)} (a source checkout) shadows the installed one "
            f"in {os.path.dirname(shadowed)}, which has the compiled core; run `anynet` or "
            "leave that directory to use it",
            file=sys.stderr,
            flush=True,
        )
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.command
    try:
        if args.uvloop:
            import uvloop

            return uvloop.run(command(args))
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        return 130
    except (websocket.WSError, OSError, ValueError, TypeError) as error:
        # A refused connection, a bad URL or limit: one line, not a traceback.
        print(f"{parser.prog}: {args.command_name}: {error}", file=sys.stderr)
        return 1


_IMPORTED_PACKAGE = os.path.dirname(os.path.abspath(anynet.__file__))


def _shadowed_compiled_core() -> Optional[str]:
    """The installed anynet package with a compiled core that the imported
    pure-Python one hides (e.g. a checkout in the current directory), if any."""
    if BACKEND == "compiled" or EXTENSIONS_DISABLED:
        return None
    for entry in sys.path:
        package = os.path.abspath(os.path.join(entry or os.curdir, "anynet"))
        if package == _IMPORTED_PACKAGE:
            continue
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if os.path.isfile(os.path.join(package, "_connection_core_c" + suffix)):
                return package
    return None


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="anynet WebSocket tools: an echo server, a client, a benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"anynet {__version__} ({BACKEND} core)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    loop_choice = argparse.ArgumentParser(add_help=False)
    loop_choice.add_argument("--uvloop", action="store_true", help="run on uvloop instead of the standard event loop")
    tls_client = argparse.ArgumentParser(add_help=False)
    tls_client.add_argument("--ca", help="PEM certificate of the authority to trust for wss://")
    tls_client.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")

    serve = commands.add_parser("serve", parents=[loop_choice], help="run an echo server until interrupted")
    serve.set_defaults(command=_serve, command_name="serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on, 0 for any (default 8765)")
    serve.add_argument("--path", default="/", help="path of the WebSocket endpoint (default /)")
    serve.add_argument("--certificate", help="PEM certificate chain: serve wss:// (needs --key)")
    serve.add_argument("--key", help="PEM private key of --certificate")
    verbosity = serve.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=logging.WARNING,
        dest="log_level",
        help="log only warnings and errors, not each connection",
    )
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=logging.DEBUG,
        dest="log_level",
        help="log debugging detail too",
    )
    serve.set_defaults(log_level=logging.INFO)
    rooms = serve.add_argument_group(
        "rooms and workers",
        "A client that connects with ?room=NAME joins room NAME: what it sends goes to every member "
        "of the room, itself included, instead of being echoed.",
    )
    rooms.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="run N worker processes on the port (reuse_port); rooms span them with --redis (default 1)",
    )
    rooms.add_argument(
        "--redis",
        metavar="URL",
        help="share rooms through this Redis (redis://host:port, unix:///path) instead of in-process only",
    )
    rooms.add_argument(
        "--policy",
        choices=["reliable", "skip"],
        default="reliable",
        help="for a member that does not keep up: close it with 1013 past its backlog, or skip it (default reliable)",
    )
    _add_limit_flags(serve)

    connect = commands.add_parser(
        "connect",
        parents=[loop_choice, tls_client],
        help="send typed lines (or --send messages) and print what arrives",
        description="Without --send or --send-file, each line typed is sent as a text message until "
        "end of input (Ctrl-D). The exit status is 0 after a normal close (1000, 1001, 1005) and 1 "
        "after any other.",
    )
    connect.set_defaults(command=_connect, command_name="connect")
    connect.add_argument("url", help="for example ws://127.0.0.1:8765/")
    connect.add_argument("--protocol", action="append", dest="protocols", help="offer this subprotocol (repeatable)")
    connect.add_argument(
        "-H",
        "--header",
        action="append",
        dest="headers",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="add this header to the upgrade request (repeatable)",
    )
    connect.add_argument(
        "--binary",
        action="store_true",
        help="lines typed and --send values are hex, sent as binary messages; binary messages print in full hex",
    )
    connect.add_argument(
        "--send",
        action="append",
        dest="outgoing",
        type=_Outgoing.text,
        metavar="MESSAGE",
        help="send this message instead of reading lines, then close (repeatable)",
    )
    connect.add_argument(
        "--send-file",
        action="append",
        dest="outgoing",
        type=_Outgoing.file,
        metavar="PATH",
        help="send the bytes of this file (- for standard input) as one binary message, then close (repeatable)",
    )
    connect.add_argument(
        "--replies",
        type=_not_negative,
        default=1,
        metavar="N",
        help="with --send or --send-file: messages to wait for and print before closing (default 1)",
    )
    _add_limit_flags(connect)

    bench = commands.add_parser(
        "bench",
        parents=[loop_choice, tls_client],
        help="echo messages through a loopback server (or --url) and report the speed",
    )
    bench.set_defaults(command=_bench, command_name="bench")
    bench.add_argument("--clients", type=_positive, default=10, help="concurrent connections (default 10)")
    bench.add_argument("--messages", type=_positive, default=2000, help="messages per client (default 2000)")
    bench.add_argument("--size", type=_positive, default=64, help="bytes per message, at least 8 (default 64)")
    bench.add_argument("--in-flight", type=_positive, default=8, help="messages in flight per client (default 8)")
    bench.add_argument(
        "--url", help="a ws:// or wss:// echo server to measure instead of the loopback one (it must echo binary)"
    )
    bench.add_argument(
        "--max-message-size",
        type=int,
        metavar="BYTES",
        help="largest message the server and clients accept (default: the library's, or --size if larger)",
    )
    return parser


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group("limits (defaults are the library's)")
    limits.add_argument("--max-message-size", type=int, metavar="BYTES", help="largest message accepted")
    limits.add_argument("--max-queue", type=int, metavar="N", help="unread messages before reading pauses")
    limits.add_argument("--write-limit", type=int, metavar="BYTES", help="unsent bytes before send() waits")
    limits.add_argument("--ping-interval", type=float, metavar="S", help="seconds between keepalive pings, 0 for none")
    limits.add_argument("--ping-timeout", type=float, metavar="S", help="seconds to wait for a pong")


def _limits(args: argparse.Namespace) -> Dict[str, Any]:
    """The limit flags that were given, as keyword arguments of connect/serve."""
    limits: Dict[str, Any] = {}
    for name in ("max_message_size", "max_queue", "write_limit", "ping_timeout"):
        value = getattr(args, name)
        if value is not None:
            limits[name] = value
    if args.ping_interval is not None:
        limits["ping_interval"] = args.ping_interval or None
    return limits


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _header(text: str) -> Tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is 'Name: value', not {text!r}")
    return name.strip(), value.strip()


class _Outgoing(NamedTuple):
    """A message of --send or --send-file as the command line gives it:
    the text (or hex) itself, or the path of a file."""

    source: str
    is_file: bool

    @classmethod
    def text(cls, value: str) -> _Outgoing:
        return cls(value, False)

    @classmethod
    def file(cls, path: str) -> _Outgoing:
        return cls(path, True)


async def _serve(args: argparse.Namespace) -> int:
    context = None
    if args.certificate or args.key:
        if not (args.certificate and args.key):
            sys.exit("serve: --certificate and --key go together")
        # Loaded here, so that a bad file fails the command before any worker starts.
        context = _server_context(args)
    if args.redis is not None:
        pubsub.RedisHub(args.redis)  # a bad URL fails here, once, not in every worker
    if args.workers > 1 and args.redis is None:
        _log_setup(args)
        log.warning("without --redis, each worker's rooms reach its own clients only")
    if args.workers == 1:
        return await _serve_worker(args, context)
    if args.port == 0:
        # Every worker must listen on the same port: choose it here.
        args.port = _free_port(args.host)
    stop = asyncio.Event()
    _on_signals(stop.set)
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Queue()
    workers = [
        spawn.Process(target=_worker_main, args=(args, ready), daemon=True) for _ in range(args.workers)
    ]
    for worker in workers:
        worker.start()
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, _all_ready, workers, ready):
        for worker in workers:
            worker.terminate()
        return 1
    scheme = "wss" if context else "ws"
    shared = f", rooms shared through {args.redis}" if args.redis else ""
    print(
        f"anynet echo server on {scheme}://{_host_in_url(args.host)}:{args.port}{args.path}"
        f" ({args.workers} workers{shared})",
        flush=True,
    )
    exited = asyncio.ensure_future(
        asyncio.wait(
            [loop.run_in_executor(None, worker.join) for worker in workers],
            return_when=asyncio.FIRST_COMPLETED,
        )
    )
    # Until interrupted, or until a worker ends by itself (it failed): then all stop.
    await asyncio.wait([exited, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    for worker in workers:
        if worker.is_alive():
            worker.terminate()  # SIGTERM: the worker closes its connections with 1001
    await asyncio.gather(*(loop.run_in_executor(None, worker.join) for worker in workers))
    failed = [worker.exitcode for worker in workers if worker.exitcode not in (0, -signal.SIGTERM)]
    return 1 if failed else 0


def _all_ready(workers: List[Any], ready: Any) -> bool:
    """Wait until every worker listens; False as soon as one has exited instead."""
    for _ in workers:
        while True:
            try:
                ready.get(timeout=0.1)
                break
            except queue.Empty:
                if not all(worker.is_alive() for worker in workers):
                    return False
    return True


def _worker_main(args: argparse.Namespace, ready: Any) -> None:
    """A worker process of ``serve --workers N``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    serving = _serve_worker(args, _server_context(args), ready=ready)
    if args.uvloop:
        import uvloop

        uvloop.run(serving)
    else:
        asyncio.run(serving)


def _log_setup(args: argparse.Namespace) -> None:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(message)s")


def _server_context(args: argparse.Namespace) -> Optional[tls.TLSContext]:
    if not args.certificate:
        return None
    context = tls.TLSContext()
    chain = tls.load_certificate_chain(args.certificate)
    context.set_certificate_chain(chain, tls.TLSPrivateKey.load(args.key, tls.TYPE_PEM))
    return context


async def _serve_worker(
    args: argparse.Namespace, context: Optional[tls.TLSContext], ready: Any = None
) -> int:
    """One serving process: echo, and rooms on an in-process or Redis hub.
    A worker of several tells ``ready`` (a queue) that it listens; a single
    process prints its URL."""
    _log_setup(args)
    hub = pubsub.RedisHub(args.redis, policy=args.policy) if args.redis else pubsub.Hub(policy=args.policy)

    async def echo(client: websocket.WebSocketClient) -> None:
        peer = _address_text(client.remote_address())
        path = client.request.path if client.request else args.path
        room = client.request.params.get("room") if client.request else None
        log.info("%s connected to %s%s", peer, path, f" (room {room})" if room else "")
        try:
            if room:
                await hub.subscribe(client, room)
                async for message in client:
                    await hub.publish(room, message)
            else:
                async for message in client:
                    await _send_message(client, message)
        except websocket.ConnectionClosed:
            pass  # the close is logged below, with its code, like a normal one
        finally:
            log.info("%s closed: %s", peer, _close_text(client))

    stop = asyncio.Event()
    _on_signals(stop.set)
    reuse_port = args.workers > 1
    async with hub, websocket.serve(
        echo, args.host, args.port, context, path=args.path, reuse_port=reuse_port, **_limits(args)
    ) as server:
        if ready is not None:
            ready.put(os.getpid())
        else:
            host, port = server.local_address()[:2]
            scheme = "wss" if context else "ws"
            print(f"anynet echo server on {scheme}://{_host_in_url(host)}:{port}{args.path}", flush=True)
        await stop.wait()
    return 0


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _client_context(args: argparse.Namespace) -> Optional[tls.TLSContext]:
    """The TLS context that --ca and --insecure ask for (None: the default)."""
    if not (args.ca or args.insecure):
        return None
    context = tls.TLSContext()
    if args.ca:
        context.set_authority(tls.TLSCertificate.load(args.ca, tls.TYPE_PEM))
    if args.insecure:
        context.disable_verification()
    return context


async def _connect(args: argparse.Namespace) -> int:
    # Every message to send is read (and its hex checked) before connecting.
    outgoing = [_read_outgoing(item, args.binary) for item in args.outgoing or ()]
    async with websocket.connect(
        args.url, _client_context(args), protocols=args.protocols, headers=dict(args.headers), **_limits(args)
    ) as client:
        if outgoing:
            sending = asyncio.ensure_future(_send_and_close(client, outgoing, args.replies))
        else:
            print(f"connected to {args.url}; type lines to send them, end with Ctrl-D", file=sys.stderr, flush=True)
            sending = asyncio.ensure_future(_send_typed_lines(client, args.binary))
        received = 0
        try:
            async for message in client:
                print(_message_text(message, args.binary), flush=True)
                received += 1
                if outgoing and received == args.replies:
                    await client.disconnect()
        except websocket.ConnectionClosedError:
            pass  # reported below with its code, like a normal close
        finally:
            sending.cancel()
    code = client.close_code
    if code in NORMAL_CLOSE_CODES:
        print(f"connection closed: {_close_text(client)}", file=sys.stderr, flush=True)
        return 0
    print(f"connection closed abnormally: {_close_text(client)}", file=sys.stderr, flush=True)
    return 1


def _read_outgoing(item: _Outgoing, binary: bool) -> Union[bytes, str]:
    if item.is_file:
        if item.source == "-":
            return sys.stdin.buffer.read()
        with open(item.source, "rb") as file:
            return file.read()
    return _from_hex(item.source) if binary else item.source


def _from_hex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"--binary: {text!r} is not hex (for example 'de ad be ef')") from None


async def _send_message(client: websocket.WebSocketClient, message: Union[bytes, str]) -> None:
    if isinstance(message, bytes):
        await client.send(message)
    else:
        await client.send_text(message)


async def _send_and_close(
    client: websocket.WebSocketClient, outgoing: List[Union[bytes, str]], replies: int
) -> None:
    for message in outgoing:
        await _send_message(client, message)
    if replies == 0:
        await client.disconnect()
    # Otherwise the receiving loop closes once the replies have arrived.


async def _send_typed_lines(client: websocket.WebSocketClient, binary: bool) -> None:
    loop = asyncio.get_running_loop()
    while True:
        # A thread keeps this portable: a pipe reader on stdin does not work on Windows.
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await client.disconnect()
            return
        text = line.rstrip("\r\n")
        try:
            await _send_message(client, _from_hex(text) if binary else text)
        except ValueError as error:
            print(error, file=sys.stderr, flush=True)  # a typo: the session goes on


def _message_text(message: Union[bytes, str], binary: bool) -> str:
    if isinstance(message, str):
        return message
    if binary:
        return message.hex()
    return f"<{len(message)} bytes: {message[:32].hex()}{'...' if len(message) > 32 else ''}>"


def _close_text(client: websocket.WebSocketClient) -> str:
    return f"{client.close_code} {client.close_reason or ''}".rstrip()


def _address_text(address: Tuple[Any, ...]) -> str:
    return f"{_host_in_url(str(address[0]))}:{address[1]}"


async def _bench(args: argparse.Namespace) -> int:
    if args.size < 8:
        sys.exit("bench: --size must be at least 8 bytes (each message carries its sequence number)")
    total = args.clients * args.messages
    progress = _Progress(total)
    # A message as large as --size must pass, unless a limit was asked for.
    max_message_size = args.max_message_size
    if max_message_size is None:
        max_message_size = max(DEFAULT_MAX_MESSAGE_SIZE, args.size)
    context = _client_context(args)

    async with _echo_server(args.url, max_message_size) as (url, server_name):
        loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
        print(
            f"anynet {__version__} bench: {args.clients} clients x {args.messages} messages of {args.size} bytes, "
            f"{args.in_flight} in flight per client\nserver {url} ({server_name}; {BACKEND} core, "
            f"{loop_name} event loop)",
            flush=True,
        )
        started = time.perf_counter()
        latencies = await asyncio.gather(
            *(
                _bench_client(url, context, max_message_size, args, progress)
                for _ in range(args.clients)
            )
        )
        elapsed = time.perf_counter() - started
    progress.finish()
    samples = sorted(sample for client in latencies for sample in client)
    print(f"{total} messages echoed and checked in {elapsed:.2f} s: {total / elapsed:,.0f} messages/s")
    print(
        "round-trip latency: "
        + ", ".join(f"{name} {_percentile(samples, q) * 1e3:.3f} ms" for name, q in _PERCENTILES)
    )
    return 0


_PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))


@contextlib.asynccontextmanager
async def _echo_server(url: Optional[str], max_message_size: int) -> AsyncIterator[Tuple[str, str]]:
    """The URL to measure and what serves it: ``url`` as given, or a loopback
    echo server of our own running for the block."""
    if url is not None:
        yield url, "an external server"
        return

    async def echo(client: websocket.WebSocketClient) -> None:
        async for message in client:
            await client.send(message)  # type: ignore[arg-type]

    async with websocket.serve(
        echo, "127.0.0.1", 0, ping_interval=None, max_message_size=max_message_size
    ) as server:
        yield f"ws://127.0.0.1:{server.local_address()[1]}/", "anynet's echo server"


async def _bench_client(
    url: str,
    context: Optional[tls.TLSContext],
    max_message_size: int,
    args: argparse.Namespace,
    progress: _Progress,
) -> List[float]:
    """Echo ``--messages`` numbered messages, ``--in-flight`` at a time; check each reply."""
    count, size, in_flight = args.messages, args.size, args.in_flight
    filler = os.urandom(size - 8)
    sent_at: List[float] = []
    latencies: List[float] = []
    async with websocket.connect(url, context, ping_interval=None, max_message_size=max_message_size) as client:
        for sequence in range(min(in_flight, count)):
            sent_at.append(time.perf_counter())
            await client.send(sequence.to_bytes(8, "big") + filler)
        for expected in range(count):
            reply = await client.recv()
            latencies.append(time.perf_counter() - sent_at[expected])
            if reply[:8] != expected.to_bytes(8, "big") or reply[8:] != filler:
                raise RuntimeError(f"message {expected} came back altered or out of order")
            progress.advance()
            following = expected + in_flight
            if following < count:
                sent_at.append(time.perf_counter())
                await client.send(following.to_bytes(8, "big") + filler)
    return latencies


def _percentile(ordered: List[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Progress:
    """A progress bar on a terminal's stderr; silent when stderr is not a terminal."""

    WIDTH = 40

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.enabled = sys.stderr.isatty()
        self.step = max(1, total // 200)  # redraw about 200 times, not once per message

    def advance(self) -> None:
        self.done += 1
        if self.enabled and (self.done % self.step == 0 or self.done == self.total):
            filled = self.WIDTH * self.done // self.total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            sys.stderr.write(f"\r[{bar}] {self.done}/{self.total}")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, callback)
        except (NotImplementedError, RuntimeError):  # Windows event loops have no signal handlers
            pass


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
