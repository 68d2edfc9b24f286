"""Rooms across processes: several server processes on one port, rooms as topics on Redis.

    python benchmarks/rooms.py [--servers 4] [--clients 1000] [--rooms 20]
                               [--messages 30] [--interval 0.5] [--kill-redis 2]
                               [--client-processes 2] [--loop uvloop|asyncio]

``--servers`` processes serve one port (``reuse_port``), each with a Redis hub.
Clients, spread over ``--client-processes`` processes, join room ``i % rooms``;
the server subscribes each to its room and publishes what it sends there
(reliable policy). Once every client has heard every other member of its room,
each sends ``--messages`` numbered messages, one every ``--interval`` seconds.
Every client checks what it receives: from each other member, in order, none
twice, and counts what is missing.

With ``--kill-redis S``, Redis is killed (SIGKILL) a third of the way through
and started again S seconds later. Then the run also reports whether every
server stayed up, whether the rooms kept working inside each process meanwhile
(no message lost between two clients of the same process), how long after
Redis came back cross-process delivery resumed (the latest send time of a
cross-process message that ended a gap in what a receiver got, minus the
restart), when each hub was connected again, and the loss the servers
reported (the hubs' gap counts, times the local members of the room) beside
the loss the clients observed.
Prints one JSON object (also written to ``--output`` if given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import struct
import sys
import time
from collections import Counter
from typing import Any, Dict, List, Optional

from _cluster import Child, Redis, announce, free_port, new_event_loop, until_stdin_closes

# Sender's global number, its server's pid, message index (-1: hello), send time.
MESSAGE = struct.Struct("!IIid")


async def run_server(port: int, redis_url: str) -> None:
    from anynet import pubsub, websocket

    lost_deliveries = [0]

    def on_loss(topic: str, count: int) -> None:
        # Every local member of the room missed them.
        lost_deliveries[0] += count * len(hub.subscribers(topic))

    hub = pubsub.RedisHub(redis_url, policy="reliable", on_loss=on_loss)

    async def member(client: websocket.WebSocketClient) -> None:
        assert client.request is not None
        room = client.request.params["room"]
        await hub.subscribe(client, room)
        # Tell the client which process serves it.
        await client.send_text(str(os.getpid()))
        async for message in client:
            hub.publish(room, message)

    reconnected_at = [0.0]

    async def watch_outages() -> None:
        # Polled: the benchmark's own look at the hub, not the hub's work.
        while True:
            while hub.connected:
                await asyncio.sleep(0.01)
            await hub.wait_connected()
            reconnected_at[0] = time.time()

    async with hub, websocket.serve(member, "127.0.0.1", port, reuse_port=True, compression=None):
        await asyncio.wait_for(hub.wait_connected(), 30)
        watching = asyncio.ensure_future(watch_outages())
        announce(pid=os.getpid())
        await until_stdin_closes()
        watching.cancel()
        announce(
            pid=os.getpid(),
            lost_deliveries=lost_deliveries[0],
            reconnected_at=reconnected_at[0],
            stats=hub.stats.as_dict(),
        )


async def run_clients(
    port: int, first: int, count: int, rooms: int, messages: int, interval: float
) -> None:
    from anynet import websocket

    room_of = [number % rooms for number in range(first, first + count)]
    members_per_room: Counter[int] = Counter()
    for number in range(int(os.environ["ROOMS_TOTAL_CLIENTS"])):
        members_per_room[number % rooms] += 1
    ready = asyncio.Event()
    connected = [0]
    all_connected = asyncio.Event()
    say_hello = asyncio.Event()
    heard_everyone = [0]
    IDLE_END = 5.0
    go = asyncio.Event()
    results: List[Dict[str, Any]] = []

    async def client_task(number: int, room: int) -> None:
        async with websocket.connect(
            f"ws://127.0.0.1:{port}/?room={room}", max_queue=None, ping_interval=None
        ) as client:
            server_pid = int(await client.recv_text())
            others = members_per_room[room] - 1
            connected[0] += 1
            if connected[0] == count:
                all_connected.set()
            # Once every client of every process is connected (and so
            # subscribed), one hello each: all must hear all before counting.
            await say_hello.wait()
            await client.send(MESSAGE.pack(number, server_pid, -1, 0.0))
            same_process: Dict[int, bool] = {}
            while len(same_process) < others:
                sender, sender_pid, index, _ = MESSAGE.unpack(await client.recv())
                if sender != number and index < 0:
                    same_process[sender] = sender_pid == server_pid
            heard_everyone[0] += 1
            if heard_everyone[0] == count:
                ready.set()
            await go.wait()

            async def send_all() -> None:
                for index in range(messages):
                    if index:
                        await asyncio.sleep(interval)
                    await client.send(MESSAGE.pack(number, server_pid, index, time.time()))

            sending = asyncio.ensure_future(send_all())
            last: Dict[int, int] = {}
            counts: Counter[int] = Counter()
            duplicates = finished_senders = 0
            # The send time of the latest message that ended a gap in what a
            # sender of another process sent us: deliveries resumed by then.
            resumed = 0.0
            quiet_since = time.monotonic()
            while finished_senders < others or not sending.done():
                try:
                    if not sending.done():
                        # Our own last message comes back to us after it
                        # is sent: this wait always ends.
                        message = await client.recv()
                    else:
                        message = await asyncio.wait_for(client.recv(), 0.5)
                except asyncio.TimeoutError:
                    # Once our own sending is over, a silence ends the wait
                    # for whatever was lost at the very end.
                    if sending.done() and time.monotonic() - quiet_since > IDLE_END:
                        break
                    continue
                quiet_since = time.monotonic()
                sender, _, index, sent = MESSAGE.unpack(message)
                if sender == number or index < 0:
                    continue
                previous = last.get(sender, -1)
                if index <= previous:
                    duplicates += 1
                    continue
                if index > previous + 1 and not same_process[sender]:
                    resumed = max(resumed, sent)
                last[sender] = index
                counts[sender] += 1
                if index == messages - 1:
                    finished_senders += 1
            await sending
            results.append(
                {
                    "received": sum(counts.values()),
                    "duplicates": duplicates,
                    "missing_from_same_process": sum(
                        messages - counts[sender] for sender, local in same_process.items() if local
                    ),
                    "missing_from_other_processes": sum(
                        messages - counts[sender] for sender, local in same_process.items() if not local
                    ),
                    "resumed": resumed,
                }
            )

    tasks = [
        asyncio.ensure_future(client_task(first + offset, room))
        for offset, room in enumerate(room_of)
    ]
    read_line = asyncio.get_running_loop().run_in_executor
    await asyncio.wait_for(all_connected.wait(), 120)
    announce(connected=True)
    await read_line(None, sys.stdin.readline)
    say_hello.set()
    await asyncio.wait_for(ready.wait(), 120)
    announce(ready=True)
    await read_line(None, sys.stdin.readline)
    go.set()
    await asyncio.gather(*tasks)
    announce(results=results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="parent", choices=["parent", "server", "clients"])
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--kill-redis", type=float, default=0.0)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", default="")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--output", default="")
    options = parser.parse_args()
    if options.role == "server":
        new_event_loop(options.loop).run_until_complete(run_server(options.port, options.redis))
        return
    if options.role == "clients":
        new_event_loop(options.loop).run_until_complete(
            run_clients(
                options.port, options.first, options.clients, options.rooms,
                options.messages, options.interval,
            )
        )
        return

    os.environ["ROOMS_TOTAL_CLIENTS"] = str(options.clients)
    redis = Redis()
    redis.start()
    port = free_port()
    servers = [
        Child("rooms.py", ["server", "--port", str(port), "--redis", redis.url, "--loop", options.loop])
        for _ in range(options.servers)
    ]
    client_processes: List[Child] = []
    report: Dict[str, Any] = {"settings": vars(options)}
    try:
        for server in servers:
            server.read()
        share = options.clients // options.client_processes
        for index in range(options.client_processes):
            first = index * share
            count = share if index < options.client_processes - 1 else options.clients - first
            client_processes.append(
                Child(
                    "rooms.py",
                    [
                        "clients", "--port", str(port), "--first", str(first), "--clients", str(count),
                        "--rooms", str(options.rooms), "--messages", str(options.messages),
                        "--interval", str(options.interval), "--loop", options.loop,
                    ],
                )
            )
        for step in ("hello", "go"):
            for child in client_processes:
                child.read()
            for child in client_processes:
                assert child.process.stdin is not None
                child.process.stdin.write(step + "\n")
                child.process.stdin.flush()
        began = time.time()
        restarted_at = None
        if options.kill_redis:
            time.sleep(options.messages * options.interval / 3)
            redis.kill()
            report["redis_killed_after"] = time.time() - began
            time.sleep(options.kill_redis)
            redis.start()
            restarted_at = time.time()
        results = []
        for child in client_processes:
            results += child.read()["results"]
        report["seconds"] = time.time() - began
        report["servers_up"] = all(server.process.poll() is None for server in servers)
        server_reports = []
        for server in servers:
            assert server.process.stdin is not None
            server.process.stdin.close()
            server_reports.append(server.read())
        members_expected = Counter(number % options.rooms for number in range(options.clients))
        expected = sum(n * (n - 1) for n in members_expected.values()) * options.messages
        received = sum(r["received"] for r in results)
        report.update(
            clients=len(results),
            expected_deliveries=expected,
            received=received,
            observed_loss=expected - received,
            missing_from_same_process=sum(r["missing_from_same_process"] for r in results),
            missing_from_other_processes=sum(r["missing_from_other_processes"] for r in results),
            duplicates=sum(r["duplicates"] for r in results),
            reported_loss=sum(s["lost_deliveries"] for s in server_reports),
            hub_stats=[s["stats"] for s in server_reports],
        )
        if restarted_at is not None:
            # From Redis's restart to the send time of the last message that
            # ended a gap: anything sent later crossed processes again.
            ends = [r["resumed"] for r in results if r["resumed"]]
            report["cross_process_resumed_after"] = max(0.0, max(ends) - restarted_at) if ends else None
            report["hubs_reconnected_after"] = [
                round(s["reconnected_at"] - restarted_at, 3) if s["reconnected_at"] else None
                for s in server_reports
            ]
    finally:
        for child in client_processes:
            child.stop()
        for server in servers:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
            server.stop()
        redis.stop()
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if options.output:
        with open(options.output, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
