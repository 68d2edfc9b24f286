"""A benchmark process: one library's echo server, or one library's client.

    python _worker.py server LIBRARY LOOP [tls]
    python _worker.py client LIBRARY LOOP [tls]

The harness starts one of each per library and event loop and keeps them for the
whole run, so a measurement costs no interpreter start-up.  They speak JSON lines:
the harness writes commands to stdin, the worker answers each with one line on its
standard output (which nothing else may use: stray prints go to stderr).  A server
announces ``{"port": ..., "pid": ...}`` and serves until its stdin closes.  A client
answers every command, or reports ``{"error": ...}`` and exits, so that a failed
measurement never leaves half-open connections behind for the next one.  With
``tls`` both speak wss:// (anynet and picows only).

Client commands:

- ``{"op": "echo", "port", "server_pid", "pattern", "size", "window", "connections",
  "warmup", "duration"}``: open the connections, check each one's first echo byte for
  byte, then keep ``window`` messages of ``size`` bytes in flight on each connection
  ("pattern" is "ping-pong" or "pipelined") and count the round trips completed in
  the ``duration`` seconds after ``warmup``, with the CPU time per round trip of this
  process and of the server's (read from ``/proc``).
- ``{"op": "handshakes", "port", "concurrency", "warmup", "duration"}``:
  ``concurrency`` loops of connect, handshake and close; count the cycles.
- ``{"op": "hold", "port", "connections", "concurrency"}``: open that many
  connections and keep them idle until the next command, ``{"op": "release"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import traceback
from typing import Any, Awaitable, Callable, TextIO

import _peers


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "asyncio":
        return asyncio.new_event_loop()
    raise ValueError(f"unknown event loop {name!r}")


def raise_file_limit() -> None:
    """The memory benchmark holds thousands of sockets in one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Channel:
    """The JSON-lines conversation with the harness."""

    def __init__(self, commands: TextIO, replies: TextIO) -> None:
        self._commands = commands
        self._replies = replies

    async def receive(self) -> dict[str, Any] | None:
        # A thread reads stdin so the loop keeps serving meanwhile.
        line = await asyncio.get_running_loop().run_in_executor(None, self._commands.readline)
        return json.loads(line) if line else None

    def send(self, message: dict[str, Any]) -> None:
        self._replies.write(json.dumps(message) + "\n")
        self._replies.flush()


async def serve(library: str, channel: Channel, secure: bool) -> None:
    async with _peers.SERVERS[library](secure) as port:
        hello: dict[str, Any] = {"port": port, "pid": os.getpid()}
        if library == "anynet":
            import anynet
            from anynet import _backend

            hello["version"] = anynet.__version__
            hello["framing"] = _backend.BACKEND
        channel.send(hello)
        while await channel.receive() is not None:
            pass


async def open_connections(
    stack: contextlib.AsyncExitStack, client: Any, port: int, count: int, concurrency: int
) -> list:
    gate = asyncio.Semaphore(concurrency)

    async def open_one() -> Any:
        async with gate:
            return await stack.enter_async_context(client.connection(port))

    return await asyncio.gather(*(open_one() for _ in range(count)))


async def echo(library: str, command: dict[str, Any], secure: bool) -> dict[str, Any]:
    payload = os.urandom(command["size"])
    client = _peers.make_client(library, payload, secure)
    meter = _peers.Meter(command.get("server_pid"))
    window = command["window"]
    async with contextlib.AsyncExitStack() as stack:
        if hasattr(client, "aclose"):
            stack.push_async_callback(client.aclose)
        connections = await open_connections(
            stack, client, command["port"], command["connections"], concurrency=100
        )
        await asyncio.gather(*(connection.verify(payload) for connection in connections))
        meter.arm(command["warmup"], command["duration"])
        if command["pattern"] == "ping-pong":
            traffic = [connection.ping_pong(payload, meter) for connection in connections]
        else:
            traffic = [connection.pipelined(payload, window, meter) for connection in connections]
        await asyncio.gather(*traffic)
    return meter.result()


async def handshakes(library: str, command: dict[str, Any], secure: bool) -> dict[str, Any]:
    client = _peers.make_client(library, b"", secure)
    meter = _peers.Meter()
    port = command["port"]

    async def cycle() -> None:
        while meter.running:
            async with client.connection(port):
                pass
            meter.count += 1

    async with contextlib.AsyncExitStack() as stack:
        if hasattr(client, "aclose"):
            stack.push_async_callback(client.aclose)
        meter.arm(command["warmup"], command["duration"])
        await asyncio.gather(*(cycle() for _ in range(command["concurrency"])))
    return meter.result()


async def hold(
    library: str, command: dict[str, Any], channel: Channel, secure: bool
) -> dict[str, Any] | None:
    client = _peers.make_client(library, b"", secure)
    async with contextlib.AsyncExitStack() as stack:
        if hasattr(client, "aclose"):
            stack.push_async_callback(client.aclose)
        connections = await open_connections(
            stack, client, command["port"], command["connections"], command["concurrency"]
        )
        channel.send({"held": len(connections)})
        release = await channel.receive()
        if release is None:
            return None
        if release.get("op") != "release":
            raise ValueError(f"expected a release command, got {release!r}")
    return {"released": len(connections)}


async def run_client(library: str, channel: Channel, secure: bool) -> None:
    operations: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
        "echo": echo,
        "handshakes": handshakes,
    }
    channel.send({"pid": os.getpid()})
    while True:
        command = await channel.receive()
        if command is None:
            return
        try:
            if command["op"] == "hold":
                reply = await hold(library, command, channel, secure)
            else:
                reply = await operations[command["op"]](library, command, secure)
        except Exception as error:
            traceback.print_exc()
            channel.send({"error": f"{type(error).__name__}: {error}"})
            return
        if reply is None:
            return
        channel.send(reply)


def main() -> None:
    role, library, loop_name = sys.argv[1:4]
    secure = sys.argv[4:] == ["tls"]
    raise_file_limit()
    # The reply channel is a private copy of stdout; anything printed goes to stderr.
    channel = Channel(sys.stdin, os.fdopen(os.dup(sys.stdout.fileno()), "w"))
    sys.stdout = sys.stderr
    loop = new_event_loop(loop_name)
    asyncio.set_event_loop(loop)
    try:
        if role == "server":
            loop.run_until_complete(serve(library, channel, secure))
        else:
            loop.run_until_complete(run_client(library, channel, secure))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
