"""Everyone to everyone: every message each of N clients sends is relayed to all N.

    python benchmarks/broadcast.py [--clients 8,16,32] [--messages 20000] [--size 64]
                                   [--policies skip,reliable,send] [--loop uvloop|asyncio]
                                   [--pin] [--timeout 180]

One server process relays each message it receives to every connection: with
``broadcast`` and the skip policy (``skip``), with an awaited ``broadcast`` and the
reliable policy (``reliable``), or with an awaited ``send`` to each connection in
turn (``send``). One client process opens N connections; each sends its messages
as fast as the server takes them while reading everything, then an end marker,
repeated until every client has heard it (the skip policy may skip any one).
The run ends when every client has heard every sender's end marker: each
message has then arrived or been skipped. Reported: deliveries per second,
whether the run completed (and every sender's messages arrived in order), the
deliveries that never came, those the server skipped, and the connections it
closed with 1013; a run that cannot complete (a connection closed, or
``--timeout`` passed) reports what arrived. ``--pin`` puts both processes on
CPU 0 (taskset).
Results go to ``benchmarks/results/broadcast.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import struct
import subprocess
import sys
import time
from typing import Any, Dict, List, Set

from _cluster import BENCHMARKS, REPOSITORY, Child, announce, new_event_loop, until_stdin_closes

HEADER = struct.Struct("!II")  # sender, index (or a marker below)
HELLO = 0xFFFFFFFF  # before the run: every connection is registered
END = 0xFFFFFFFE  # after a sender's messages: they have all arrived, or been skipped
FIRST_MARKER = END  # indices from here up are markers, not messages


async def run_server(policy: str) -> None:
    from anynet import websocket

    clients: Set[websocket.WebSocketClient] = set()
    # Deliveries of the clients' messages (not markers) that the skip policy
    # left out, and connections the reliable policy closed.
    counts = {"skipped": 0, "closed": 0}

    def count(result: websocket.BroadcastResult, message: bytes) -> None:
        if result.skipped and HEADER.unpack_from(message)[1] < FIRST_MARKER:
            counts["skipped"] += len(result.skipped)
        counts["closed"] += len(result.closed)

    async def relay(client: websocket.WebSocketClient) -> None:
        clients.add(client)
        try:
            async for message in client:
                if policy == "skip":
                    count(websocket.broadcast(clients, message), message)  # type: ignore[arg-type]
                elif policy == "reliable":
                    result = websocket.broadcast(clients, message, policy="reliable")
                    count(result, message)  # type: ignore[arg-type]
                    await result
                else:
                    for other in list(clients):
                        try:
                            await other.send(message)  # type: ignore[arg-type]
                        except websocket.ConnectionClosed:
                            pass
        finally:
            clients.discard(client)

    async with websocket.serve(relay, "127.0.0.1", 0, compression=None) as server:
        announce(port=server.local_address()[1])
        await until_stdin_closes()
        announce(**counts)


async def run_clients(port: int, count: int, messages: int, size: int, timeout: float) -> None:
    from anynet import websocket

    url = f"ws://127.0.0.1:{port}/"
    padding = b"." * max(0, size - HEADER.size)
    received = [0] * count
    in_order = [True]
    hellos = asyncio.Event()
    hello_counts = [0] * count
    start = asyncio.Event()
    # Set once every client heard every sender's end marker, or once a
    # connection closed (then the run cannot complete).
    over = asyncio.Event()
    all_ends_heard = [0]
    ended_at = [0.0]
    # Close codes of the connections that closed during the run.
    close_codes: List[int] = []

    async def one(number: int, client: websocket.WebSocketClient) -> None:
        # Everyone says hello first: once a client heard all N, every
        # connection is registered on the server, and counting starts.
        await client.send(HEADER.pack(number, HELLO))
        while hello_counts[number] < count:
            message = await client.recv()
            if HEADER.unpack_from(message)[1] == HELLO:
                hello_counts[number] += 1
        if all(seen >= count for seen in hello_counts):
            hellos.set()
        await hellos.wait()
        await start.wait()

        async def send_all() -> None:
            for index in range(messages):
                await client.send(HEADER.pack(number, index) + padding)
            # Repeated: under the skip policy any one end marker may be skipped.
            while not over.is_set():
                await client.send(HEADER.pack(number, END))
                try:
                    await asyncio.wait_for(asyncio.shield(over.wait()), 0.05)
                except asyncio.TimeoutError:
                    pass

        sending = asyncio.ensure_future(send_all())
        last = [-1] * count
        ends: Set[int] = set()
        try:
            # Reading on to the end: a client that stopped reading would
            # hold up the others under the reliable and send relays.
            while not over.is_set():
                sender, index = HEADER.unpack_from(await client.recv())
                if index == END:
                    if sender not in ends:
                        ends.add(sender)
                        if len(ends) == count:
                            all_ends_heard[0] += 1
                            if all_ends_heard[0] == count:
                                ended_at[0] = time.perf_counter()
                                over.set()
                    continue
                # A gap is a skipped message (counted as missing); going back is disorder.
                if index <= last[sender]:
                    in_order[0] = False
                last[sender] = index
                received[number] += 1
        except websocket.ConnectionClosed as closed:
            close_codes.append(closed.code)
            over.set()
        finally:
            sending.cancel()

    contexts = [websocket.connect(url, max_queue=1024) for _ in range(count)]
    connections = [await context.__aenter__() for context in contexts]
    tasks = [asyncio.ensure_future(one(n, c)) for n, c in enumerate(connections)]
    await asyncio.wait_for(hellos.wait(), 30)
    began = time.perf_counter()
    start.set()
    try:
        await asyncio.wait_for(over.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    complete = all_ends_heard[0] == count
    seconds = (ended_at[0] if complete else time.perf_counter()) - began
    over.set()
    for task in tasks:
        task.cancel()
    total = sum(received)
    announce(
        complete=complete,
        seconds=seconds,
        delivered=total,
        expected=count * count * messages,
        missing=count * count * messages - total,
        close_codes=close_codes,
        deliveries_per_second=total / seconds,
        in_order=in_order[0],
    )
    for context in contexts:
        try:
            await asyncio.wait_for(context.__aexit__(None, None, None), 5)
        except Exception:
            pass


def measure(policy: str, clients: int, options: argparse.Namespace) -> Dict[str, Any]:
    pin = "0" if options.pin else None
    server = Child("broadcast.py", ["server", "--policy", policy, "--loop", options.loop], pin)
    try:
        port = server.read()["port"]
        client = Child(
            "broadcast.py",
            [
                "client", "--port", str(port), "--clients", str(clients),
                "--messages", str(options.messages), "--size", str(options.size),
                "--timeout", str(options.timeout), "--loop", options.loop,
            ],
            pin,
        )
        try:
            result = client.read()
        finally:
            client.stop()
        server.process.stdin.close()  # type: ignore[union-attr]
        result.update(server.read())  # what the server skipped and closed
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="parent", choices=["parent", "server", "client"])
    parser.add_argument("--clients", default="8,16,32")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--policies", default="skip,reliable,send")
    parser.add_argument("--policy", default="skip")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--pin", action="store_true")
    parser.add_argument("--output", default=str(BENCHMARKS / "results" / "broadcast"))
    options = parser.parse_args()
    if options.role == "server":
        new_event_loop(options.loop).run_until_complete(run_server(options.policy))
        return
    if options.role == "client":
        new_event_loop(options.loop).run_until_complete(
            run_clients(options.port, int(options.clients), options.messages, options.size, options.timeout)
        )
        return

    rows: List[Dict[str, Any]] = []
    for policy in options.policies.split(","):
        for clients in [int(c) for c in options.clients.split(",")]:
            result = measure(policy, clients, options)
            result.update(policy=policy, clients=clients)
            rows.append(result)
            print(
                f"{policy:>8} {clients:>3} clients: "
                + (
                    f"{result['deliveries_per_second']:>10,.0f} deliveries/s in {result['seconds']:.2f} s"
                    if result["complete"]
                    else f"INCOMPLETE after {result['seconds']:.0f} s with"
                    f" {result['delivered']:,} of {result['expected']:,}"
                    f" (connections closed with {result['close_codes'] or 'none'})"
                )
                + ("" if result["in_order"] else " (OUT OF ORDER)")
                + f"; missing {result['missing']:,}, skipped {result['skipped']:,},"
                f" closed {result['closed']:,}",
                flush=True,
            )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPOSITORY
    ).stdout.strip()
    settings = {
        "messages": options.messages, "size": options.size, "loop": options.loop,
        "pinned": options.pin, "timeout": options.timeout, "commit": commit,
        "python": platform.python_version(), "machine": platform.machine(),
    }
    with open(options.output + ".json", "w") as out:
        json.dump({"settings": settings, "rows": rows}, out, indent=1)
    lines = [
        f"# Everyone to everyone ({options.messages} messages of {options.size} B per client,"
        f" {options.loop}, {'pinned to one CPU' if options.pin else 'unpinned'}, {commit})",
        "",
        "| relay | clients | deliveries/s | seconds | completed | in order | missing | skipped | closed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['policy']} | {row['clients']} | {row['deliveries_per_second']:,.0f} |"
            f" {row['seconds']:.2f} | {'yes' if row['complete'] else 'no (closed: %s)' % (row['close_codes'] or 'none')} | {'yes' if row['in_order'] else 'no'} |"
            f" {row['missing']:,} | {row['skipped']:,} | {row['closed']:,} |"
        )
    lines += [
        "",
        f"Command: `python benchmarks/broadcast.py --messages {options.messages} --clients {options.clients}"
        f" --policies {options.policies}{' --pin' if options.pin else ''}`. completed: every client heard"
        " every sender's end marker (sent after its messages, repeated until heard), so every message"
        " had arrived or been skipped; missing: deliveries of messages that never came (N x N x"
        " messages - received); skipped: deliveries the server's skip policy left out; closed:"
        " connections the reliable policy closed with 1013.",
    ]
    with open(options.output + ".md", "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
