"""A raw WebSocket peer for tests: frames and handshakes written byte by byte.

The tests that check what anynet puts on the wire, or how it reacts to a peer
that breaks the rules, need a peer that is not anynet: these helpers build and
read frames with struct, and speak the handshake over plain asyncio streams.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct

from anynet._ws_handshake import accept_value
from support import TIMEOUT

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def upgrade_request(path="/", **overrides):
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    fields.update(overrides)
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in fields.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), fields["Sec-WebSocket-Key"]


async def read_head(reader):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def masked_frame(opcode, payload, fin=True, mask=True, rsv=0):
    """One frame as a peer sends it; ``mask=False`` for a server's frame."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    key = os.urandom(4) if mask else b""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, (0x80 if mask else 0) | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, length)
    else:
        header = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, length)
    if mask:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + payload


def close_code(payload):
    """The close code of a Close frame's payload."""
    return struct.unpack("!H", payload[:2])[0]


async def read_frame(reader):
    """Read one frame; return (opcode, payload), unmasking a client's frame."""
    first, payload = await read_whole_frame(reader)
    return first & 0x0F, payload


async def read_whole_frame(reader):
    """Read one frame; return (its first header byte, payload), unmasking a client's frame."""
    first, second = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    key = await reader.readexactly(4) if second & 0x80 else None
    payload = await reader.readexactly(length)
    if key is not None:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return first, payload


async def raw_upgrade(server):
    """Open a raw connection to an anynet server and complete the handshake."""
    reader, writer = await asyncio.open_connection(*server.local_address())
    request, _ = upgrade_request()
    writer.write(request)
    status, _ = await read_head(reader)
    assert status == 101
    return reader, writer


async def accept_upgrade(reader):
    """Read a client's upgrade request; return the 101 response that accepts it."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    name = "sec-websocket-key:"
    key = next(line[len(name) :].strip() for line in head.split("\r\n") if line.lower().startswith(name))
    return accept_response(key)


class RawServer:
    """A TCP server that reads one upgrade request and answers with ``respond(key)``."""

    def __init__(self, respond):
        self.respond = respond
        self.requests = []

    async def handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.requests.append(head)
        key = ""
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "sec-websocket-key":
                key = value.strip()
        response = self.respond(key)
        if response is not None:
            writer.write(response)
        await reader.read()  # hold the connection until the client leaves
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = "ws://127.0.0.1:%d/" % self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info):
        self.server.close()


def accept_response(key, *extra, accept=None):
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Accept: " + (accept or accept_value(key)),
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
