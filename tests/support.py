"""What the tests share: a bound on every wait, a server's URL, an echo handler."""

from __future__ import annotations

# Seconds any single wait in a test may take before the test fails: generous
# for a loaded machine, short enough that a hang fails quickly and clearly.
TIMEOUT = 10


async def echo(client):
    """Send every message back with its own type until the connection ends."""
    async for message in client:
        if isinstance(message, bytes):
            await client.send(message)
        else:
            await client.send_text(message)


def url_of(server, path="/"):
    """The ws:// URL of an anynet server (anything with ``local_address()``)."""
    host, port = server.local_address()[:2]
    return f"ws://{host}:{port}{path}"
