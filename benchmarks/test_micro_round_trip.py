"""A message's whole path through both ends, in one process: ping-pong between a
client and a server of each library on 127.0.0.1, sharing one event loop.

In ``echo.py`` a ping-pong round trip mostly waits for the kernel to wake the
other process; here nothing sleeps, so the figure is the CPU cost of a round
trip through both stacks (the loop's passes included): what a change to the
per-message path moves, measured steadily enough to compare on a noisy
machine. anynet runs on the core that ``anynet._backend`` chose
(``ANYNET_NO_EXTENSIONS=1`` measures the pure-Python twin).
"""

import contextlib
import os

import pytest

import _peers
import _worker

ROUND_TRIPS = 200
LIBRARIES = ("anynet", "anynet-callback", "picows", "websockets", "aiohttp", "raw")
LOOPS = ("asyncio", "uvloop")


@contextlib.contextmanager
def connected(library, loop_name, payload):
    """An event loop, and a client connection of ``library`` to its server on that loop."""
    loop = _worker.new_event_loop(loop_name)
    stack = contextlib.AsyncExitStack()

    async def connect():
        port = await stack.enter_async_context(_peers.SERVERS[library]())
        client = _peers.make_client(library, payload)
        if hasattr(client, "aclose"):
            stack.push_async_callback(client.aclose)
        connection = await stack.enter_async_context(client.connection(port))
        await connection.verify(payload)
        return connection

    try:
        yield loop, loop.run_until_complete(connect())
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("library", LIBRARIES)
def test_round_trip(benchmark, library, loop_name):
    benchmark.group = f"{ROUND_TRIPS} round trips of 16 B in one process, {loop_name}"
    payload = os.urandom(16)
    with connected(library, loop_name, payload) as (loop, connection):

        def round_trips():
            meter = _peers.Countdown(ROUND_TRIPS)
            loop.run_until_complete(connection.ping_pong(payload, meter))
            return meter.count

        assert benchmark(round_trips) == ROUND_TRIPS
