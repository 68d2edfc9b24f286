"""broadcast's delivery policies: skip (with counts of what was missed) and reliable."""

from __future__ import annotations

import asyncio
import struct

import pytest

from anynet import websocket
from support import TIMEOUT, url_of

CHUNK = 16 * 1024


def numbered(index):
    return struct.pack("!I", index) + b"x" * (CHUNK - 4)


class Room:
    """A server whose handlers only register their connection and wait for the end."""

    def __init__(self, expected):
        self.expected = expected
        self.connections = []
        self.ready = asyncio.Event()

    async def handler(self, client):
        self.connections.append(client)
        if len(self.connections) == self.expected:
            self.ready.set()
        async for _ in client:
            pass


async def receive_numbers(client, until):
    """The indices of the numbered messages ``client`` receives before ``until``."""
    indices = []
    while True:
        message = await asyncio.wait_for(client.recv(), TIMEOUT)
        if message == until:
            return indices
        indices.append(struct.unpack("!I", message[:4])[0])


async def test_skip_policy_reports_and_counts_what_each_connection_missed():
    room = Room(expected=2)
    async with websocket.serve(room.handler, "127.0.0.1", 0) as server:
        async with websocket.connect(url_of(server)) as fast, websocket.connect(
            url_of(server), max_queue=1
        ) as stalled:
            await asyncio.wait_for(room.ready.wait(), TIMEOUT)
            reading = asyncio.ensure_future(receive_numbers(fast, b"end"))
            missed = {connection: 0 for connection in room.connections}
            total = 0
            # Until the stalled peer's buffers are full, then as many again.
            while sum(missed.values()) < 20:
                result = websocket.broadcast(room.connections, numbered(total))
                total += 1
                assert result == result.sent == 2 - len(result.skipped)
                assert result.closed == ()
                for connection in result.skipped:
                    missed[connection] += 1
                await asyncio.sleep(0)
            for connection in room.connections:
                assert connection.skipped_messages == missed[connection]
            fast_side = next(c for c in room.connections if c.remote_address() == fast.local_address())
            await fast_side.send(b"end")
            indices = await asyncio.wait_for(reading, TIMEOUT)
            # What the fast peer got is everything it was not reported to miss, in order.
            assert len(indices) == total - fast_side.skipped_messages
            assert indices == sorted(indices)
            del stalled


async def test_reliable_policy_delivers_in_order_or_closes_with_1013():
    room = Room(expected=1)
    async with websocket.serve(room.handler, "127.0.0.1", 0) as server:
        async with websocket.connect(url_of(server), max_queue=1) as stalled:
            await asyncio.wait_for(room.ready.wait(), TIMEOUT)
            total = 0
            while True:
                result = websocket.broadcast(
                    room.connections, numbered(total), policy="reliable", max_backlog=256 * 1024
                )
                assert result.skipped == ()
                if result.closed:
                    assert result == 0 and result.closed == tuple(room.connections)
                    break
                assert result == 1
                total += 1
                await asyncio.sleep(0)
            # No silent gap: every message up to the last one sent, then 1013.
            for index in range(total):
                message = await asyncio.wait_for(stalled.recv(), TIMEOUT)
                assert struct.unpack("!I", message[:4])[0] == index
            with pytest.raises(websocket.ConnectionClosedError) as closed:
                await asyncio.wait_for(stalled.recv(), TIMEOUT)
            assert closed.value.code == 1013
            assert room.connections[0].skipped_messages == 0


async def test_awaiting_a_reliable_broadcast_to_a_set_that_changes_meanwhile():
    """The usual relay keeps a set of its connections, which changes as they
    come and go: a reliable broadcast's result is awaited on the connections
    it was sent to, whatever the set became."""
    room = Room(expected=2)
    async with websocket.serve(room.handler, "127.0.0.1", 0) as server:
        async with websocket.connect(url_of(server)) as reader, websocket.connect(
            url_of(server), max_queue=1
        ) as stalled:
            await asyncio.wait_for(room.ready.wait(), TIMEOUT)
            reading = asyncio.ensure_future(receive_numbers(reader, b"end"))
            members = set(room.connections)
            stalled_side = next(c for c in members if c.remote_address() == stalled.local_address())
            while not stalled_side._is_over_write_limit():
                websocket.broadcast(members, numbered(0), policy="reliable")
                await asyncio.sleep(0)

            async def await_result(result):
                await result

            waiting = asyncio.ensure_future(
                await_result(websocket.broadcast(members, numbered(1), policy="reliable"))
            )
            await asyncio.sleep(0)  # now waiting for the stalled connection
            assert not waiting.done()
            members.clear()  # as when connections leave while the relay waits
            await stalled_side.close()
            await asyncio.wait_for(waiting, TIMEOUT)
            websocket.broadcast(room.connections, b"end")
            await asyncio.wait_for(reading, TIMEOUT)


@pytest.mark.parametrize("client_count", [3, 8])
async def test_awaited_reliable_broadcasts_reach_everyone_in_order(client_count):
    """Every message each client sends reaches every client, and the run ends."""
    per_client = 300
    server_ref = []

    async def relay(client):
        async for message in client:
            await websocket.broadcast(server_ref[0].clients, message, policy="reliable")

    async def run_client(url, number, everyone_connected):
        async with websocket.connect(url) as client:
            everyone_connected.append(client)
            while len(everyone_connected) < client_count:
                await asyncio.sleep(0.01)
            while len(server_ref[0].clients) < client_count:
                await asyncio.sleep(0.01)

            async def send_all():
                for index in range(per_client):
                    await client.send(struct.pack("!II", number, index) + b"." * 100)

            sending = asyncio.ensure_future(send_all())
            last = [-1] * client_count
            for _ in range(per_client * client_count):
                sender, index = struct.unpack("!II", (await client.recv())[:8])
                assert index == last[sender] + 1
                last[sender] = index
            await sending
            return last

    async with websocket.serve(relay, "127.0.0.1", 0) as server:
        server_ref.append(server)
        connected = []
        results = await asyncio.wait_for(
            asyncio.gather(*(run_client(url_of(server), n, connected) for n in range(client_count))),
            TIMEOUT * 3,
        )
    assert results == [[per_client - 1] * client_count] * client_count


async def test_awaiting_a_skip_broadcast_returns_at_once():
    room = Room(expected=1)
    async with websocket.serve(room.handler, "127.0.0.1", 0) as server:
        async with websocket.connect(url_of(server), max_queue=1):
            await asyncio.wait_for(room.ready.wait(), TIMEOUT)
            while not websocket.broadcast(room.connections, numbered(0)).skipped:
                await asyncio.sleep(0)
            await asyncio.wait_for(websocket.broadcast(room.connections, b"x"), TIMEOUT)


async def test_broadcast_checks_its_arguments():
    with pytest.raises(TypeError):
        websocket.broadcast([], 12)
    with pytest.raises(ValueError, match="policy"):
        websocket.broadcast([], b"x", policy="fast")
    with pytest.raises(ValueError, match="max_backlog"):
        websocket.broadcast([], b"x", policy="reliable", max_backlog=0)
    with pytest.raises(TypeError, match="max_backlog"):
        websocket.broadcast([], b"x", max_backlog=1.5)
    result = websocket.broadcast(iter([]), "nobody")
    assert result == 0 and result.skipped == () and result.closed == ()
    await result
