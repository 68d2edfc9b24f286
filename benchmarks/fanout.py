"""Fan-out through a pub/sub hub: deliveries per second and delivery latency.

    python benchmarks/fanout.py [--subscribers 50] [--latency-subscribers 10]
                                [--rate 1000] [--duration 3]
                                [--size 64] [--timeout 120] [--loop uvloop|asyncio] [--pin]

Server processes hold subscribers to one topic; a publisher connection to the
first process sends messages that its handler publishes on the topic
(``await hub.publish(..., policy="reliable")``, so a publisher faster than the
local subscribers read, or than Redis takes its messages, is slowed down
rather than skipped). Each message carries its send time; every subscriber
notes when it arrives. One client process holds the publisher and every
subscriber connection. A run ends when every subscriber has heard an end
marker, published after the messages and repeated until then (or after
``--timeout`` seconds): what was published before it has arrived or is lost.
Each row reports the deliveries that never came and the hubs' counters of
lost, dropped, duplicate and skipped messages, closed subscribers and
reconnections, so that a loss shows as a number. Six runs:

- ``local x1``: one server process with the in-process hub;
- ``redis x1``: one server process with the Redis hub (each message also goes
  to Redis and comes back, to be recognised as its own and skipped);
- ``redis x2``: two server processes with the Redis hub, the publisher on the
  first: the second's subscribers are reached through Redis (cross-process);
- each at full speed with ``--subscribers`` per process (deliveries per
  second), and at ``--rate`` publishes per second with
  ``--latency-subscribers`` per process (latency p50/p99, local and
  cross-process subscribers apart). Fewer subscribers for the latency runs:
  the one client process reads every delivery, and at 1000 publishes per
  second to 2 x 50 subscribers it, not the hub, would set the latency on a
  machine with two cores.

Results go to ``benchmarks/results/fanout.md`` and ``.json``.
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
from typing import Any, Dict, List, Optional

from _cluster import (
    BENCHMARKS,
    REPOSITORY,
    Child,
    Redis,
    announce,
    new_event_loop,
    percentile,
    until_stdin_closes,
)

HEADER = struct.Struct("!qd")  # sequence (or a marker below), send time
PROBE = -1  # before the run: is every subscription in place?
END = -2  # after it: everything published before has arrived or is lost
TOPIC = "bench"


async def run_server(hub_kind: str, redis_url: str) -> None:
    from anynet import pubsub, websocket

    hub = pubsub.RedisHub(redis_url) if hub_kind == "redis" else pubsub.Hub()

    async def handler(client: websocket.WebSocketClient) -> None:
        if client.request is not None and client.request.params.get("role") == "pub":
            async for message in client:
                await hub.publish(TOPIC, message, policy="reliable")
        else:
            await hub.subscribe(client, TOPIC)
            async for _ in client:
                pass

    async with hub, websocket.serve(handler, "127.0.0.1", 0, compression=None) as server:
        await asyncio.wait_for(hub.wait_connected(), 10)
        announce(port=server.local_address()[1])
        await until_stdin_closes()
        announce(stats=hub.stats.as_dict())


async def run_client(
    ports: List[int], subscribers: int, rate: int, duration: float, size: int, timeout: float
) -> None:
    from anynet import websocket

    padding = b"." * max(0, size - HEADER.size)
    contexts = []
    groups: List[List[websocket.WebSocketClient]] = []
    for port in ports:
        group = []
        for _ in range(subscribers):
            context = websocket.connect(f"ws://127.0.0.1:{port}/?role=sub", max_queue=4096)
            contexts.append(context)
            group.append(await context.__aenter__())
        groups.append(group)
    publisher_context = websocket.connect(f"ws://127.0.0.1:{ports[0]}/?role=pub")
    publisher = await publisher_context.__aenter__()

    latencies: List[List[float]] = [[] for _ in ports]
    counts = [0] * len(ports)
    total_subscribers = subscribers * len(ports)
    # Subscribers that heard a probe (every subscription is in place) and
    # an end marker (what was published before it arrived or was lost).
    heard = {PROBE: 0, END: 0}
    everyone_heard = {PROBE: asyncio.Event(), END: asyncio.Event()}
    ended_at = [0.0]

    async def subscriber(group: int, client: websocket.WebSocketClient) -> None:
        seen = set()
        record = latencies[group].append
        while True:
            message = await client.recv()
            arrived = time.perf_counter()
            sequence, sent = HEADER.unpack_from(message)
            if sequence >= 0:
                counts[group] += 1
                if rate:
                    record(arrived - sent)
            elif sequence not in seen:
                seen.add(sequence)
                heard[sequence] += 1
                if heard[sequence] == total_subscribers:
                    everyone_heard[sequence].set()
                if sequence == END:
                    ended_at[0] = arrived  # the last subscriber to hear it sets the end
                    return

    async def repeat_until_everyone_heard(marker: int, limit: float) -> bool:
        """Markers, until each subscriber has one: one marker may be lost
        (or wait behind the backlog), and the run must not hang on it."""
        deadline = time.perf_counter() + limit
        while not everyone_heard[marker].is_set():
            await publisher.send(HEADER.pack(marker, 0.0))
            try:
                await asyncio.wait_for(asyncio.shield(everyone_heard[marker].wait()), 0.05)
            except asyncio.TimeoutError:
                if time.perf_counter() > deadline:
                    return False
        return True

    tasks = [
        asyncio.ensure_future(subscriber(index, client))
        for index, group in enumerate(groups)
        for client in group
    ]
    if not await repeat_until_everyone_heard(PROBE, 30):
        raise SystemExit("not every subscriber heard a probe within 30 s")

    began = time.perf_counter()
    sequence = 0
    if rate:
        interval = 0.001
        per_tick = max(1, rate // 1000)
        next_tick = began
        while time.perf_counter() - began < duration:
            for _ in range(per_tick):
                await publisher.send(HEADER.pack(sequence, time.perf_counter()) + padding)
                sequence += 1
            next_tick += interval
            delay = next_tick - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
    else:
        while time.perf_counter() - began < duration:
            for _ in range(64):
                await publisher.send(HEADER.pack(sequence, time.perf_counter()) + padding)
                sequence += 1
    complete = await repeat_until_everyone_heard(END, timeout)
    seconds = (ended_at[0] if complete else time.perf_counter()) - began
    for task in tasks:
        task.cancel()
    result: Dict[str, Any] = {
        "published": sequence,
        "complete": complete,
        "seconds": seconds,
        "deliveries_per_second": [count / seconds for count in counts],
        "deliveries": counts,
        # Deliveries that never came (per process): lost on the way, or
        # still on their way when the run gave up.
        "missing": [sequence * subscribers - count for count in counts],
    }
    if rate:
        result["p50_ms"] = [percentile(values, 0.50) * 1000 for values in latencies]
        result["p99_ms"] = [percentile(values, 0.99) * 1000 for values in latencies]
    announce(**result)
    for context in contexts + [publisher_context]:
        try:
            await asyncio.wait_for(context.__aexit__(None, None, None), 5)
        except Exception:
            pass


# The hubs' counters of what did not go as published, reported per process.
COUNTERS = ("lost", "dropped", "duplicates", "skipped", "closed", "reconnects")


def counts(row: Dict[str, Any], name: str) -> str:
    return " / ".join(f"{stats[name]:,}" for stats in row["server_stats"])


def measure(hub: str, processes: int, rate: int, options: argparse.Namespace, redis: Optional[Redis]) -> Dict[str, Any]:
    pin = "0" if options.pin else None
    servers = [
        Child(
            "fanout.py",
            ["server", "--hub", hub, "--redis", redis.url if redis else "", "--loop", options.loop],
            pin,
        )
        for _ in range(processes)
    ]
    try:
        ports = [server.read()["port"] for server in servers]
        client = Child(
            "fanout.py",
            [
                "client", "--ports", ",".join(map(str, ports)),
                "--subscribers", str(options.latency_subscribers if rate else options.subscribers),
                "--rate", str(rate),
                "--duration", str(options.duration), "--size", str(options.size),
                "--timeout", str(options.timeout), "--loop", options.loop,
            ],
            pin,
        )
        try:
            result = client.read()
        finally:
            client.stop()
    finally:
        stats = []
        for server in servers:
            server.process.stdin.close()  # type: ignore[union-attr]
            try:
                stats.append(server.read()["stats"])
            except Exception:
                pass
            server.stop()
    result["server_stats"] = stats
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="parent", choices=["parent", "server", "client"])
    parser.add_argument("--hub", default="local")
    parser.add_argument("--redis", default="")
    parser.add_argument("--ports", default="")
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--latency-subscribers", type=int, default=10)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--pin", action="store_true")
    parser.add_argument("--output", default=str(BENCHMARKS / "results" / "fanout"))
    options = parser.parse_args()
    if options.role == "server":
        new_event_loop(options.loop).run_until_complete(run_server(options.hub, options.redis))
        return
    if options.role == "client":
        ports = [int(p) for p in options.ports.split(",")]
        new_event_loop(options.loop).run_until_complete(
            run_client(
                ports, options.subscribers, options.rate, options.duration, options.size, options.timeout
            )
        )
        return

    redis = Redis()
    redis.start()
    rows = []
    try:
        for hub, processes in [("local", 1), ("redis", 1), ("redis", 2)]:
            for rate in [0, options.rate]:
                result = measure(hub, processes, rate, options, redis)
                result.update(hub=hub, processes=processes, rate=rate)
                rows.append(result)
                line = f"{hub} x{processes} {'full speed' if not rate else f'{rate}/s'}: deliveries/s per process " + ", ".join(
                    f"{value:,.0f}" for value in result["deliveries_per_second"]
                )
                if rate:
                    line += "; latency p50/p99 ms per process " + ", ".join(
                        f"{p50:.2f}/{p99:.2f}" for p50, p99 in zip(result["p50_ms"], result["p99_ms"])
                    )
                line += f"; {result['published']:,} published, missing {result['missing']}"
                line += "" if result["complete"] else " (INCOMPLETE)"
                line += "; " + ", ".join(f"{name} {counts(result, name)}" for name in COUNTERS)
                print(line, flush=True)
    finally:
        redis.stop()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPOSITORY
    ).stdout.strip()
    settings = {
        "subscribers_per_process": options.subscribers, "rate": options.rate,
        "duration": options.duration, "size": options.size, "loop": options.loop,
        "pinned": options.pin, "commit": commit, "python": platform.python_version(),
    }
    with open(options.output + ".json", "w") as out:
        json.dump({"settings": settings, "rows": rows}, out, indent=1)
    full = {(r["hub"], r["processes"]): r for r in rows if not r["rate"]}
    local = full[("local", 1)]["deliveries_per_second"][0]
    lines = [
        f"# Fan-out ({options.subscribers} subscribers per process at full speed,"
        f" {options.latency_subscribers} at {options.rate}/s, {options.size} B,"
        f" {options.loop}, {'pinned to one CPU' if options.pin else 'unpinned'}, {commit})",
        "",
        "| hub | processes | publishes | deliveries/s (per process) | vs local x1"
        " | p50 ms (local / cross-process) | p99 ms (local / cross-process) | published | missing"
        + "".join(f" | {name}" for name in COUNTERS) + " |",
        "|---" * (9 + len(COUNTERS)) + "|",
    ]
    for row in rows:
        per_process = " / ".join(f"{v:,.0f}" for v in row["deliveries_per_second"])
        ratio = " / ".join(f"{v / local:.0%}" for v in row["deliveries_per_second"]) if not row["rate"] else ""
        p50 = " / ".join(f"{v:.2f}" for v in row.get("p50_ms", []))
        p99 = " / ".join(f"{v:.2f}" for v in row.get("p99_ms", []))
        rate = "full speed" if not row["rate"] else f"{row['rate']}/s"
        missing = " / ".join(f"{v:,}" for v in row["missing"]) + ("" if row["complete"] else " (gave up)")
        lines.append(
            f"| {row['hub']} | {row['processes']} | {rate} | {per_process} | {ratio} | {p50} | {p99}"
            f" | {row['published']:,} | {missing}"
            + "".join(f" | {counts(row, name)}" for name in COUNTERS) + " |"
        )
    lines += [
        "",
        f"Command: `python benchmarks/fanout.py --subscribers {options.subscribers}"
        f" --latency-subscribers {options.latency_subscribers} --rate {options.rate}"
        f" --duration {options.duration:g} --size {options.size}{' --pin' if options.pin else ''}`.",
        "",
        "missing: deliveries that never came per process (published x subscribers - received);"
        " the other counters are the hubs' `stats` per process (`lost`: messages of another"
        " process that never arrived; `dropped`: not relayed, the outgoing queue was full).",
    ]
    with open(options.output + ".md", "w") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
