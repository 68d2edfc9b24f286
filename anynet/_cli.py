"""The ``anynet`` command (also ``python -m anynet.websocket``): an echo
server, a client and a quick benchmark, for poking at WebSocket endpoints
from a terminal.

    anynet serve --port 8765
    anynet connect ws://127.0.0.1:8765/
    anynet bench --clients 10 --messages 2000

The installed ``anynet`` script imports the installed package wherever it
runs; ``python -m`` imports an ``anynet/`` in the current directory first,
which in a source checkout has no compiled core: the command then says so.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.machinery
import os
import signal
import sys
import time
from typing import Any, Callable, Coroutine, Dict, List, Optional, Sequence

import anynet
from anynet import __version__, tls, websocket
from anynet._backend import BACKEND, EXTENSIONS_DISABLED


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
            if os.path.isfile(os.path.join(package, "_speedups" + suffix)):
                return package
    return None


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="anynet WebSocket tools: an echo server, an interactive client, a benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"anynet {__version__} ({BACKEND} core)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    loop_choice = argparse.ArgumentParser(add_help=False)
    loop_choice.add_argument("--uvloop", action="store_true", help="run on uvloop instead of the standard event loop")

    serve = commands.add_parser("serve", parents=[loop_choice], help="run an echo server until interrupted")
    serve.set_defaults(command=_serve, command_name="serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on, 0 for any (default 8765)")
    serve.add_argument("--path", default="/", help="path of the WebSocket endpoint (default /)")
    serve.add_argument("--certificate", help="PEM certificate chain: serve wss:// (needs --key)")
    serve.add_argument("--key", help="PEM private key of --certificate")
    _add_limit_flags(serve)

    connect = commands.add_parser(
        "connect", parents=[loop_choice], help="send typed lines as text messages, print what arrives"
    )
    connect.set_defaults(command=_connect, command_name="connect")
    connect.add_argument("url", help="for example ws://127.0.0.1:8765/")
    connect.add_argument("--ca", help="PEM certificate of the authority to trust for wss://")
    connect.add_argument("--insecure", action="store_true", help="do not verify the server's certificate")
    connect.add_argument("--protocol", action="append", dest="protocols", help="offer this subprotocol (repeatable)")
    _add_limit_flags(connect)

    bench = commands.add_parser(
        "bench", parents=[loop_choice], help="echo messages through a loopback server and report the speed"
    )
    bench.set_defaults(command=_bench, command_name="bench")
    bench.add_argument("--clients", type=_positive, default=10, help="concurrent connections (default 10)")
    bench.add_argument("--messages", type=_positive, default=2000, help="messages per client (default 2000)")
    bench.add_argument("--size", type=_positive, default=64, help="bytes per message, at least 8 (default 64)")
    bench.add_argument("--in-flight", type=_positive, default=8, help="messages in flight per client (default 8)")
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


async def _serve(args: argparse.Namespace) -> int:
    context = None
    if args.certificate or args.key:
        if not (args.certificate and args.key):
            sys.exit("serve: --certificate and --key go together")
        context = tls.TLSContext()
        chain = tls.load_certificate_chain(args.certificate)
        context.set_certificate_chain(chain, tls.TLSPrivateKey.load(args.key, tls.TYPE_PEM))

    async def echo(client: websocket.WebSocketClient) -> None:
        async for message in client:
            if isinstance(message, bytes):
                await client.send(message)
            else:
                await client.send_text(message)

    stop = asyncio.Event()
    _on_signals(stop.set)
    async with websocket.serve(echo, args.host, args.port, context, path=args.path, **_limits(args)) as server:
        host, port = server.local_address()[:2]
        scheme = "wss" if context else "ws"
        print(f"anynet echo server on {scheme}://{_host_in_url(host)}:{port}{args.path}", flush=True)
        await stop.wait()
    return 0


async def _connect(args: argparse.Namespace) -> int:
    context = None
    if args.ca or args.insecure:
        context = tls.TLSContext()
        if args.ca:
            context.set_authority(tls.TLSCertificate.load(args.ca, tls.TYPE_PEM))
        if args.insecure:
            context.disable_verification()
    async with websocket.connect(args.url, context, protocols=args.protocols, **_limits(args)) as client:
        print(f"connected to {args.url}; type lines to send them, end with Ctrl-D", file=sys.stderr, flush=True)
        typing = asyncio.ensure_future(_send_typed_lines(client))
        try:
            async for message in client:
                if isinstance(message, str):
                    print(message, flush=True)
                else:
                    print(f"<{len(message)} bytes: {message[:32].hex()}{'...' if len(message) > 32 else ''}>", flush=True)
        except websocket.ConnectionClosedError:
            pass  # reported below with its code, like a normal close
        finally:
            typing.cancel()
    print(f"connection closed: {client.close_code} {client.close_reason}".rstrip(), file=sys.stderr, flush=True)
    return 0


async def _send_typed_lines(client: websocket.WebSocketClient) -> None:
    loop = asyncio.get_running_loop()
    while True:
        # A thread keeps this portable: a pipe reader on stdin does not work on Windows.
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            await client.disconnect()
            return
        await client.send_text(line.rstrip("\r\n"))


async def _bench(args: argparse.Namespace) -> int:
    if args.size < 8:
        sys.exit("bench: --size must be at least 8 bytes (each message carries its sequence number)")
    total = args.clients * args.messages
    progress = _Progress(total)

    async def echo(client: websocket.WebSocketClient) -> None:
        async for message in client:
            await client.send(message)  # type: ignore[arg-type]

    async with websocket.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        port = server.local_address()[1]
        url = f"ws://127.0.0.1:{port}/"
        loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
        print(
            f"anynet {__version__} bench: {args.clients} clients x {args.messages} messages of {args.size} bytes, "
            f"{args.in_flight} in flight per client\nserver {url} ({BACKEND} core, {loop_name} event loop)",
            flush=True,
        )
        started = time.perf_counter()
        latencies = await asyncio.gather(
            *(_bench_client(url, args.messages, args.size, args.in_flight, progress) for _ in range(args.clients))
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


async def _bench_client(url: str, count: int, size: int, in_flight: int, progress: _Progress) -> List[float]:
    """Echo ``count`` numbered messages, ``in_flight`` at a time; check each reply."""
    filler = os.urandom(size - 8)
    sent_at: List[float] = []
    latencies: List[float] = []
    async with websocket.connect(url, ping_interval=None) as client:
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
