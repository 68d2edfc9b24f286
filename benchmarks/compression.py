"""permessage-deflate side by side: anynet, websockets and aiohttp.

Three measurements, each library configured for the same negotiated
parameters where it can be:

- ``echo``: round trips per second, one connection, one message in flight,
  server and client of the same library in two processes. Messages: 1 KiB
  JSON game states and 64 KiB text, each different from the last (a stream
  of identical messages would flatter context takeover). Parameters: context
  takeover and 15-bit windows both ways, the only set aiohttp offers and
  accepts; and, for anynet and websockets, no context takeover both ways
  (anynet's server default). websockets compresses at zlib's default level
  (6), aiohttp at zlib's level 1, anynet at zlib-ng's level 1 by default
  (faster than zlib's, for larger output): ``anynet-l6`` is anynet at
  level 6, for a like-for-like line with websockets.
- ``memory``: the server's resident memory per idle connection, once each
  connection has received and sent one compressed message, at each
  library's default (anynet: no context takeover; websockets: 12-bit
  windows with context takeover and memLevel 5), and with compression off.
  The clients offer what browsers offer.
- ``broadcast``: 1 KiB text messages (each different) broadcast to 1000
  compressing clients; deliveries per second measured in the server, where
  ``broadcast`` runs (the clients read in another process).

    python benchmarks/compression.py             # about three minutes
    python benchmarks/compression.py --quick     # under a minute
    python benchmarks/compression.py --pin       # server and client on one CPU (taskset)

Prints a Markdown report (results/compression.md with --write).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import sys
import time
from pathlib import Path
from queue import Empty
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HOST = "127.0.0.1"
LIBRARIES = ("anynet", "anynet-l6", "websockets", "aiohttp")


def game_states(count: int) -> List[str]:
    rng = random.Random(1)
    states = []
    for tick in range(count):
        players = [
            {
                "id": i,
                "x": round(rng.uniform(0, 1000), 2),
                "y": round(rng.uniform(0, 1000), 2),
                "hp": rng.randint(0, 100),
                "name": f"player{i}",
                "state": rng.choice(["idle", "run", "jump"]),
            }
            for i in range(12)
        ]
        states.append(json.dumps({"tick": tick, "players": players})[:1024])
    return states


def texts(count: int) -> List[str]:
    rng = random.Random(2)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    return [" ".join(rng.choice(words) + str(rng.randint(0, 999)) for _ in range(12000))[:65536] for _ in range(count)]


MESSAGES = {"1 KiB JSON": lambda: game_states(64), "64 KiB text": lambda: texts(8)}


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ----------------------------------------------------------------------
# Servers, in their own process: each prints its port, then serves.


def anynet_options(library: str, takeover: bool) -> Dict[str, Any]:
    from anynet.websocket import PerMessageDeflate

    level = 6 if library == "anynet-l6" else 1
    return {"compression": PerMessageDeflate(not takeover, not takeover, level=level, min_size=0)}


async def run_server(library: str, takeover: Optional[bool], port_queue: Any) -> None:
    """``takeover``: True/False for those parameters, None for the library's
    default; a ``-off`` suffix on the name turns compression off."""
    raise_file_limit()
    off = library.endswith("-off")
    library = library[: -len("-off")] if off else library
    if library.startswith("anynet"):
        from anynet import websocket

        async def echo(client: Any) -> None:
            async for message in client:
                await client.send_text(message)

        options = {} if takeover is None else anynet_options(library, takeover)
        if off:
            options = {"compression": None}
        async with websocket.serve(echo, HOST, 0, ping_interval=None, max_queue=None, **options) as server:
            port_queue.put(server.local_address()[1])
            await asyncio.Event().wait()
    elif library == "websockets":
        import websockets
        from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

        async def ws_echo(connection: Any) -> None:
            async for message in connection:
                await connection.send(message)

        options = {}
        if takeover is not None:
            factory = ServerPerMessageDeflateFactory(
                server_no_context_takeover=not takeover, client_no_context_takeover=not takeover
            )
            options = {"extensions": [factory], "compression": None}
        if off:
            options = {"compression": None}
        async with websockets.serve(ws_echo, HOST, 0, ping_interval=None, max_size=None, **options) as server:
            port_queue.put(server.sockets[0].getsockname()[1])
            await asyncio.Event().wait()
    else:
        from aiohttp import WSMsgType, web

        async def aiohttp_echo(request: Any) -> Any:
            response = web.WebSocketResponse(compress=True, max_msg_size=0)
            await response.prepare(request)
            async for message in response:
                if message.type == WSMsgType.TEXT:
                    await response.send_str(message.data)
            return response

        app = web.Application()
        app.router.add_get("/", aiohttp_echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()


def server_process(library: str, takeover: Optional[bool], port_queue: Any, cpu: Optional[int]) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    asyncio.run(run_server(library, takeover, port_queue))


class Server:
    def __init__(self, library: str, takeover: Optional[bool], cpu: Optional[int]) -> None:
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        self.process = context.Process(target=server_process, args=(library, takeover, ports, cpu), daemon=True)
        self.process.start()
        self.port = ports.get(timeout=60)

    def rss(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.kill()
        self.process.join()


# ----------------------------------------------------------------------
# Echo


async def echo_rate(library: str, takeover: bool, port: int, messages: List[str], seconds: float) -> float:
    url = f"ws://{HOST}:{port}/"
    if library.startswith("anynet"):
        from anynet import websocket

        async with websocket.connect(url, ping_interval=None, **anynet_options(library, takeover)) as client:
            assert client.deflate is not None and client.deflate.server_no_context_takeover == (not takeover)
            return await _rate(client.send_text, client.recv_text, messages, seconds)
    if library == "websockets":
        import websockets
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

        factory = ClientPerMessageDeflateFactory(
            server_no_context_takeover=not takeover, client_no_context_takeover=not takeover
        )
        async with websockets.connect(url, extensions=[factory], compression=None, max_size=None) as ws:
            assert ws.protocol.extensions
            return await _rate(ws.send, ws.recv, messages, seconds)
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, compress=15, max_msg_size=0) as ws:
            assert ws.compress == 15

            async def receive() -> str:
                return (await ws.receive()).data  # type: ignore[no-any-return]

            return await _rate(ws.send_str, receive, messages, seconds)


async def _rate(send: Callable[[str], Any], receive: Callable[[], Any], messages: List[str], seconds: float) -> float:
    for message in messages[:4]:  # warm-up, and a check that the echo is right
        await send(message)
        assert await receive() == message
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for message in messages:
            await send(message)
            await receive()
        count += len(messages)
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


# ----------------------------------------------------------------------
# Memory per idle connection


async def open_idle_connections(port: int, count: int, message: str) -> List[Any]:
    from anynet import websocket

    stack = []
    for _ in range(count):
        context = websocket.connect(f"ws://{HOST}:{port}/", ping_interval=None)
        client = await context.__aenter__()
        await client.send_text(message)
        assert await client.recv_text() == message
        stack.append((context, client))
    return stack


async def memory_per_connection(library: str, default: bool, count: int, cpu: Optional[int]) -> float:
    # default=False: compression off on the server.
    server = Server(library, None, cpu) if default else Server(library + "-off", None, cpu)
    try:
        await asyncio.sleep(0.5)
        before = server.rss()
        connections = await open_idle_connections(server.port, count, game_states(1)[0])
        await asyncio.sleep(0.5)
        after = server.rss()
        for context, _ in connections:
            await context.__aexit__(None, None, None)
        return (after - before) / count
    finally:
        server.stop()


# ----------------------------------------------------------------------
# Broadcast


def broadcast_clients(port: int, count: int, expected: int, ready: Any, done: Any) -> None:
    raise_file_limit()

    async def main() -> None:
        from anynet import websocket

        clients = []
        for _ in range(count):
            context = websocket.connect(f"ws://{HOST}:{port}/", ping_interval=None, max_queue=None)
            clients.append((context, await context.__aenter__()))
        ready.put(True)

        async def read(client: Any) -> None:
            for _ in range(expected):
                await client.recv_text()

        await asyncio.gather(*(read(client) for _, client in clients))
        done.put(True)

    asyncio.run(main())


async def broadcast_rate(library: str, takeover: Optional[bool], count: int, rounds: int) -> float:
    raise_file_limit()
    messages = game_states(rounds)
    connected: List[Any] = []
    enough = asyncio.Event()

    def joined(connection: Any) -> None:
        connected.append(connection)
        if len(connected) == count:
            enough.set()

    context = multiprocessing.get_context("spawn")
    ready, done = context.Queue(), context.Queue()
    if library == "anynet":
        from anynet import websocket

        async def handler(client: Any) -> None:
            joined(client)
            await asyncio.Event().wait()

        async with websocket.serve(handler, HOST, 0, ping_interval=None) as server:
            port = server.local_address()[1]
            return await _broadcast(port, count, rounds, ready, done, enough, lambda m: websocket.broadcast(connected, m), messages)
    import websockets
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    async def ws_handler(connection: Any) -> None:
        joined(connection)
        # Not an endless wait: closing a websockets server waits for its
        # handlers to return.
        await connection.wait_closed()

    options: Dict[str, Any] = {}
    if takeover is not None:
        factory = ServerPerMessageDeflateFactory(server_no_context_takeover=not takeover, client_no_context_takeover=not takeover)
        options = {"extensions": [factory], "compression": None}
    async with websockets.serve(ws_handler, HOST, 0, ping_interval=None, **options) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        return await _broadcast(port, count, rounds, ready, done, enough, lambda m: websockets.broadcast(connected, m), messages)


async def _broadcast(port, count, rounds, ready, done, enough, send, messages) -> float:  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("spawn")
    clients = context.Process(target=broadcast_clients, args=(port, count, rounds, ready, done), daemon=True)
    clients.start()
    try:
        await _while_alive(clients, enough.wait())
        await _while_alive(clients, _queue_get(ready))
        spent = 0.0
        for message in messages:
            start = time.perf_counter()
            send(message)
            spent += time.perf_counter() - start
            await asyncio.sleep(0)  # let the transports write
        await _while_alive(clients, _queue_get(done))
        return rounds * count / spent
    finally:
        clients.kill()
        clients.join()


async def _queue_get(queue: Any) -> Any:
    while True:
        try:
            return queue.get_nowait()
        except Empty:
            await asyncio.sleep(0.05)


async def _while_alive(process: Any, step: Any, timeout: float = 300) -> None:
    """Await ``step``, failing at once if ``process`` dies (its traceback is
    on stderr) rather than waiting out the timeout."""
    task = asyncio.ensure_future(step)
    deadline = time.monotonic() + timeout
    try:
        while not task.done():
            if not process.is_alive():
                # What it put in a queue before it ended is still to be read.
                await asyncio.wait([task], timeout=1)
                if not task.done():
                    raise RuntimeError(f"the clients process died (exit code {process.exitcode})")
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no progress in {timeout} s")
            await asyncio.wait([task], timeout=0.2)
        task.result()
    finally:
        task.cancel()


# ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pin", action="store_true", help="server and client on one CPU")
    parser.add_argument("--only", choices=["echo", "memory", "broadcast"])
    parser.add_argument("--write", action="store_true", help="write results/compression.md")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 2.0
    cpu = None
    if args.pin:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    lines = [f"# permessage-deflate side by side ({'pinned to one CPU' if args.pin else 'unpinned'})", ""]

    if args.only in (None, "echo"):
        lines += ["## Echo, round trips per second", ""]
        for takeover, libraries in ((True, LIBRARIES), (False, ("anynet", "anynet-l6", "websockets"))):
            title = "context takeover, 15-bit windows" if takeover else "no context takeover, 15-bit windows"
            lines += [f"### {title}", "", "| message | " + " | ".join(libraries) + " | anynet / websockets | anynet / aiohttp |", "|" + " --- |" * (len(libraries) + 3)]
            for name, make in MESSAGES.items():
                messages = make()
                rates = {}
                for library in libraries:
                    server = Server(library, takeover, cpu)
                    try:
                        rates[library] = asyncio.run(echo_rate(library, takeover, server.port, messages, seconds))
                    finally:
                        server.stop()
                ratio_ws = rates["anynet"] / rates["websockets"]
                ratio_aio = f"{rates['anynet'] / rates['aiohttp']:.2f}" if "aiohttp" in rates else "-"
                lines.append(
                    f"| {name} | " + " | ".join(f"{rates[lib]:.0f}" for lib in libraries) + f" | {ratio_ws:.2f} | {ratio_aio} |"
                )
                print(lines[-1], flush=True)
            lines.append("")

    if args.only in (None, "memory"):
        count = 200 if args.quick else 1000
        lines += [f"## Server memory per idle connection ({count} connections, after one compressed message each way)", "", "| library | compression at its default | compression off |", "| --- | --- | --- |"]
        for library in ("anynet", "websockets"):
            on = asyncio.run(memory_per_connection(library, True, count, cpu))
            off = asyncio.run(memory_per_connection(library, False, count, cpu))
            lines.append(f"| {library} | {on / 1024:.1f} KiB | {off / 1024:.1f} KiB |")
            print(lines[-1], flush=True)
        lines.append("")

    if args.only in (None, "broadcast"):
        rounds = 20 if args.quick else 100
        lines += ["## broadcast of 1 KiB text to 1000 compressing clients, deliveries per second (in the server)", "", "| server | deliveries/s |", "| --- | --- |"]
        for library, takeover, label in (
            ("anynet", None, "anynet (default: no context takeover)"),
            ("websockets", None, "websockets (default: 12-bit windows, context takeover)"),
            ("websockets", False, "websockets, no context takeover"),
        ):
            rate = asyncio.run(broadcast_rate(library, takeover, 1000, rounds))
            lines.append(f"| {label} | {rate:.0f} |")
            print(lines[-1], flush=True)
        lines.append("")

    report = "\n".join(lines)
    print(report)
    if args.write:
        suffix = "-pinned" if args.pin else ""
        Path(__file__).parent.joinpath("results", f"compression{suffix}.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
