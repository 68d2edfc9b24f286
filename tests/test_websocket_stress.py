"""Many connections at once through one server: every byte arrives, in order."""

from __future__ import annotations

import asyncio
import sys

import pytest

from anynet import websocket
from support import echo

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
