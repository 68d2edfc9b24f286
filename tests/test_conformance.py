"""Regression tests for what the Autobahn|Testsuite found, without the suite.

Each case sends what an Autobahn case sends, in one TCP write, and checks the
strict behaviour on the wire: the messages that arrived before a violation are
answered before the Close that reports it.
"""

from __future__ import annotations

import asyncio

import pytest

from anynet import websocket
from rawpeer import accept_upgrade, close_code, masked_frame, raw_upgrade, read_frame
from support import TIMEOUT, echo

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING = 0x0, 0x1, 0x2, 0x8, 0x9

# (Autobahn case, frames sent in one write, messages echoed before the Close)
VIOLATIONS_AFTER_VALID_MESSAGES = [
    (
        "3.2: RSV2 set on the second message",
        [(OP_TEXT, b"Hello, world!", True, 0), (OP_TEXT, b"Hello, world!", True, 2), (OP_PING, b"", True, 0)],
        [(OP_TEXT, b"Hello, world!")],
    ),
    (
        "4.1.3: a reserved data opcode",
        [(OP_TEXT, b"Hello, world!", True, 0), (0x5, b"", True, 0), (OP_PING, b"", True, 0)],
        [(OP_TEXT, b"Hello, world!")],
    ),
    (
        "4.2.3: a reserved control opcode",
        [(OP_BINARY, b"\x00\xff", True, 0), (0xB, b"", True, 0), (OP_PING, b"", True, 0)],
        [(OP_BINARY, b"\x00\xff")],
    ),
    (
        "5.15: a continuation with nothing to continue",
        [
            (OP_TEXT, b"fragment1", False, 0),
            (OP_CONTINUATION, b"fragment2", True, 0),
            (OP_CONTINUATION, b"fragment3", False, 0),
            (OP_TEXT, b"fragment4", True, 0),
        ],
        [(OP_TEXT, b"fragment1fragment2")],
    ),
]
CASE_IDS = [case[0].split(":")[0] for case in VIOLATIONS_AFTER_VALID_MESSAGES]


@pytest.fixture
async def echo_server():
    async with websocket.serve(echo, "127.0.0.1", 0, ping_interval=None) as server:
        yield server


@pytest.mark.parametrize("case, frames, echoes", VIOLATIONS_AFTER_VALID_MESSAGES, ids=CASE_IDS)
async def test_server_echoes_what_came_before_a_violation_then_closes_1002(echo_server, case, frames, echoes):
    reader, writer = await raw_upgrade(echo_server)
    try:
        writer.write(b"".join(masked_frame(op, data, fin, rsv=rsv) for op, data, fin, rsv in frames))
        for expected in echoes:
            assert await read_frame(reader) == expected
        opcode, payload = await read_frame(reader)
        assert opcode == OP_CLOSE and close_code(payload) == 1002  # no pong before it
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()


@pytest.mark.parametrize("case, frames, echoes", VIOLATIONS_AFTER_VALID_MESSAGES, ids=CASE_IDS)
async def test_client_echoes_what_came_before_a_violation_then_closes_1002(case, frames, echoes):
    seen = asyncio.get_running_loop().create_future()

    async def fuzzing_server(reader, writer):
        frames_sent = b"".join(masked_frame(op, data, fin, mask=False, rsv=rsv) for op, data, fin, rsv in frames)
        writer.write(await accept_upgrade(reader) + frames_sent)
        try:
            seen.set_result([await read_frame(reader) for _ in range(len(echoes) + 1)])
        except Exception as error:  # reported by the test, not lost in this task
            seen.set_exception(error)
        writer.close()

    server = await asyncio.start_server(fuzzing_server, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(websocket.ConnectionClosedError) as closed:
            async with websocket.connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as client:
                await echo(client)
        received = await asyncio.wait_for(seen, TIMEOUT)
    finally:
        server.close()
    assert received[:-1] == echoes
    opcode, payload = received[-1]
    assert opcode == OP_CLOSE and close_code(payload) == 1002
    assert closed.value.code == 1002


async def test_violation_is_reported_even_when_the_handler_stops_reading():
    stalled = asyncio.Event()

    async def reads_once(client):
        await client.recv()
        await stalled.wait()  # never reads again

    async with websocket.serve(reads_once, "127.0.0.1", 0, ping_interval=None, disconnect_timeout=0.2) as server:
        reader, writer = await raw_upgrade(server)
        try:
            writer.write(masked_frame(OP_BINARY, b"read") + masked_frame(OP_BINARY, b"unread") + masked_frame(0x3, b""))
            opcode, payload = await read_frame(reader)
            assert opcode == OP_CLOSE and close_code(payload) == 1002
        finally:
            writer.close()
            stalled.set()
