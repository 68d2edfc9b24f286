"""Instructions per echoed message, counted by valgrind's callgrind.

    python benchmarks/instructions.py --libs anynet-callback,picows --side server \\
        --connections 100 --size 16 --loop uvloop

The wall-clock figures of ``echo.py`` move with whatever else the machine does;
instruction counts do not, so a change to the per-message path can be judged
on a busy machine. One side (``--side server`` or ``client``) runs under
callgrind, the other one normally, as ``echo.py`` runs them (``_worker.py``'s
servers, ``_peers``'s clients, ``--connections`` of them in one process, each
with one message in flight). Each cell runs twice, with ``--round-trips`` and
three times as many: the difference of the two instruction counts over the
difference of the round trips is the cost of one message, with start-up,
handshakes and shutdown cancelled out. Under callgrind a side runs some fifty
times slower, so the other side's messages pile up and each read of the
measured side finds more of them than at full speed: its reads are batched
at least as much as in ``echo.py``'s pinned cells.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import _harness
import _peers
import _worker


async def drive(library: str, port: int, connections: int, size: int, round_trips: int) -> int:
    """``round_trips`` ping-pong round trips in all over ``connections``; how many
    completed (the messages in flight when the count is reached complete too)."""
    payload = os.urandom(size)
    client = _peers.make_client(library, payload)
    meter = _peers.Countdown(round_trips)
    async with contextlib.AsyncExitStack() as stack:
        if hasattr(client, "aclose"):
            stack.push_async_callback(client.aclose)
        # Few handshakes at a time: a server under callgrind answers them slowly.
        opened = await _worker.open_connections(stack, client, port, connections, concurrency=10)
        await asyncio.gather(*(connection.verify(payload) for connection in opened))
        await asyncio.gather(*(connection.ping_pong(payload, meter) for connection in opened))
    return meter.count


def callgrind(output: str) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={output}"]


def instructions(output: str) -> int:
    with open(output) as profile:
        for line in profile:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction count in {output}")


def run(arguments: argparse.Namespace, library: str, round_trips: int, output: str) -> int:
    """One run; the round trips completed (the instructions are in ``output``)."""
    server_library, client_library = _harness.server_and_client(library)
    profiled = callgrind(output)
    server = subprocess.Popen(
        (profiled if arguments.side == "server" else [])
        + [sys.executable, str(_harness.WORKER), "server", server_library, arguments.loop],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=_harness.REPOSITORY,
        env=_harness.worker_environment(),
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        port = json.loads(server.stdout.readline())["port"]
        client = subprocess.run(
            (profiled if arguments.side == "client" else [])
            + [sys.executable, __file__, "--drive", client_library, "--loop", arguments.loop,
               "--port", str(port), "--connections", str(arguments.connections),
               "--size", str(arguments.size), "--round-trips", str(round_trips)],
            cwd=_harness.REPOSITORY,
            env=_harness.worker_environment(),
            capture_output=True,
            text=True,
        )
        if client.returncode:
            raise RuntimeError(f"{client_library} client failed:\n{client.stderr}")
        server.stdin.close()
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return int(client.stdout.split()[-1])


def measure(arguments: argparse.Namespace, library: str) -> float:
    with tempfile.TemporaryDirectory() as directory:
        points = []
        for round_trips in (arguments.round_trips, 3 * arguments.round_trips):
            output = os.path.join(directory, f"callgrind.{round_trips}")
            completed = run(arguments, library, round_trips, output)
            points.append((completed, instructions(output)))
    (short, short_count), (long, long_count) = points
    return (long_count - short_count) / (long - short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--libs", default="anynet,anynet-callback,picows")
    parser.add_argument("--side", choices=("server", "client"), default="server")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--size", type=_harness.parse_size, default=16)
    parser.add_argument("--round-trips", type=int, default=2000, help="of the shorter run (default 2000)")
    parser.add_argument("--drive", metavar="LIBRARY", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.drive:
        loop = _worker.new_event_loop(arguments.loop)
        completed = loop.run_until_complete(
            drive(arguments.drive, arguments.port, arguments.connections, arguments.size, arguments.round_trips)
        )
        loop.close()
        print(completed)
        return
    for library in arguments.libs.split(","):
        per_message = measure(arguments, library)
        print(
            f"{library:16} {arguments.side} {arguments.loop:8} {arguments.connections:4} connections "
            f"{_harness.size_label(arguments.size):>6}: {per_message:,.0f} instructions per message",
            flush=True,
        )


if __name__ == "__main__":
    main()
