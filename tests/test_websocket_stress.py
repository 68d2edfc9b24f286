"""Many connections at once through one server: every byte arrives, in order."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from anynet import websocket
from support import TIMEOUT, echo, url_of

CLIENTS = 1000
MESSAGES_PER_CLIENT = 100


def raise_open_file_limit(needed):
    """Allow ``needed`` open files, as far as the hard limit lets us."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def message_for(client_number, sequence):
    # Alternate types; the content names its sender and place, so a message
    # delivered to the wrong client or out of order cannot go unnoticed.
    text = f"client {client_number} message {sequence} " + "x" * (sequence % 50)
    return text.encode() if sequence % 2 else text


@pytest.mark.timeout(120)
async def test_a_thousand_clients_echo_a_hundred_messages_each():
    raise_open_file_limit(2 * CLIENTS + 200)
    async with websocket.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        host, port = server.local_address()
        url = f"ws://{host}:{port}/"

        async def run_client(number):
            async with websocket.connect(url, ping_interval=None, handshake_timeout=60) as client:
                expected = [message_for(number, sequence) for sequence in range(MESSAGES_PER_CLIENT)]
                for message in expected:
                    if isinstance(message, bytes):
                        await client.send(message)
                    else:
                        await client.send_text(message)
                received = [await client.recv_message() for _ in expected]
                assert received == expected
            return len(received)

        counts = await asyncio.wait_for(
            asyncio.gather(*(run_client(number) for number in range(CLIENTS))), 100
        )
        assert counts == [MESSAGES_PER_CLIENT] * CLIENTS
        assert not server.clients


@pytest.mark.parametrize("sender_side", ["client", "server"])
async def test_large_messages_sent_while_the_peer_is_not_reading_arrive_intact(sender_side):
    # Large frames are built in a buffer that is reused once the transport
    # has let go of it (WebSocketClient._write_large). The receiver reads
    # nothing until the sender's transport holds unsent data, and the sender
    # does not wait for it to drain, so frames wait there while later ones
    # are built; bytearrays are zeroed right after sending, since what was
    # sent is what they held then.
    sizes = [300_000, 1_000_000, 1_000_000, 100_000, 1_000_000, 70_000] * 2
    payloads = [os.urandom(size) for size in sizes]
    backed_up = asyncio.Event()

    async def send_all(connection):
        for index, payload in enumerate(payloads):
            message = bytearray(payload) if index % 2 else payload
            await connection.send(message)
            if isinstance(message, bytearray):
                message[:] = bytes(len(message))
            if connection._transport.get_write_buffer_size():
                backed_up.set()

    async def receive_all(connection):
        await asyncio.wait_for(backed_up.wait(), TIMEOUT)
        for payload in payloads:
            assert await asyncio.wait_for(connection.recv(), TIMEOUT) == payload

    roles = {"client": send_all, "server": receive_all}
    if sender_side == "server":
        roles = {"client": receive_all, "server": send_all}
    server_done = asyncio.get_running_loop().create_future()

    async def handler(connection):
        try:
            await roles["server"](connection)
        except BaseException as error:
            server_done.set_exception(error)
            raise
        server_done.set_result(None)
        await connection.recv()  # until the client leaves

    # The sender's buffer limit is high enough for send() never to wait.
    # Uncompressed: a compressed message is a new bytes object anyway, and
    # is queued like a small frame rather than written at once.
    limits = {"client": {"max_queue": 1, "compression": None}, "server": {"max_queue": 1, "compression": None}}
    limits[sender_side] = {"write_limit": 16 * 1024 * 1024, "compression": None}
    async with websocket.serve(
        handler, "127.0.0.1", 0, ping_interval=None, **limits["server"]
    ) as server:
        async with websocket.connect(
            url_of(server), ping_interval=None, **limits["client"]
        ) as client:
            await roles["client"](client)
            await asyncio.wait_for(server_done, TIMEOUT)
