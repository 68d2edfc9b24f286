"""Rooms across real server processes on one port, through a real redis-server:
the rooms benchmark scaled down, and the game-server guide's example.

A scaled-down run of benchmarks/rooms.py (which starts its own redis-server,
server processes with reuse_port, and client processes): every message reaches
every other member of its room in order and once; with Redis killed and
restarted mid-run, the servers stay up, rooms inside a process lose nothing,
and the loss the hubs report is exactly the loss the clients observe.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from anynet import websocket
from redis_server import free_port, redis_server, require_redis_server  # noqa: F401 (a fixture)
from support import TIMEOUT, python_path, send_once_everyone_listens

ROOMS = Path(__file__).resolve().parent.parent / "benchmarks" / "rooms.py"


def run_rooms(tmp_path, *arguments):
    require_redis_server()
    output = tmp_path / "rooms.json"
    environment = dict(os.environ)
    environment["PYTHONPATH"] = python_path()
    subprocess.run(
        [sys.executable, str(ROOMS), "--loop", "asyncio", "--output", str(output), *arguments],
        check=True,
        timeout=120,
        env=environment,
        stdout=subprocess.DEVNULL,
    )
    return json.loads(output.read_text())


@pytest.mark.timeout(150)
def test_two_processes_rooms_on_redis_deliver_everything_in_order(tmp_path):
    report = run_rooms(
        tmp_path, "--servers", "2", "--clients", "40", "--rooms", "4",
        "--messages", "10", "--interval", "0.05",
    )
    assert report["servers_up"]
    assert report["received"] == report["expected_deliveries"] == 40 * 9 * 10
    assert report["observed_loss"] == report["reported_loss"] == report["duplicates"] == 0


@pytest.mark.timeout(150)
def test_redis_killed_mid_run_loss_reported_equals_loss_observed(tmp_path):
    report = run_rooms(
        tmp_path, "--servers", "2", "--clients", "40", "--rooms", "4",
        "--messages", "80", "--interval", "0.05", "--kill-redis", "1",
    )
    # A message lost at the very end of a stream, with none after it from the
    # same publisher, would go uncounted: the run goes on for a while after
    # Redis is back (about 1.7 s).
    del report["hub_stats"]
    assert report["servers_up"], report
    # Inside each process the rooms kept working while Redis was down.
    assert report["missing_from_same_process"] == 0, report
    assert report["duplicates"] == 0, report
    assert report["reported_loss"] == report["observed_loss"], report
    # The hubs queue what is published during the outage: when every hub
    # subscribes again before the queues are written, nothing is lost at all.
    if report["observed_loss"]:
        assert report["cross_process_resumed_after"] < 5, report
    assert all(after is not None and after < 5 for after in report["hubs_reconnected_after"]), report


async def test_the_guide_s_multi_process_example_shares_rooms(tmp_path, redis_server):
    """The game-server guide's rooms-on-Redis server, run as written (on a free
    port): a message sent in a room reaches every member, whichever worker
    serves it, and SIGTERM stops every worker."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "game-servers.md").read_text()
    (example,) = [
        block for block in re.findall(r"```python\n(.*?)```", guide, re.DOTALL) if "RedisHub(REDIS" in block
    ]
    port = free_port()
    script = tmp_path / "rooms_server.py"
    script.write_text(example.replace("PORT = 8765", f"PORT = {port}"))
    environment = dict(os.environ, REDIS_URL=redis_server.url, PYTHONPATH=python_path())
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=environment, stdout=asyncio.subprocess.DEVNULL
    )
    contexts = []
    try:
        # The workers start listening in their own time: connect until one answers.
        async def connect_member():
            while True:
                context = websocket.connect(f"ws://127.0.0.1:{port}/?room=red")
                try:
                    member = await context.__aenter__()
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                contexts.append(context)
                return member

        members = [await asyncio.wait_for(connect_member(), TIMEOUT) for _ in range(6)]
        await send_once_everyone_listens(members, "hello, room")
    finally:
        for context in contexts:
            await context.__aexit__(None, None, None)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
