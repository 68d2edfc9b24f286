"""Encoding frames beside websockets' frame serializer and a plain copy."""

import os

import pytest
from websockets.frames import Frame, Opcode

from anynet import _framing, _framing_c

PAYLOADS = {"32 B binary": os.urandom(32), "32 B text": "small text message, 32 bytes ok!", "1 MiB binary": os.urandom(1 << 20)}
ROLES = {"client (masked)": True, "server": False}


def encode_with(implementation, payload, is_client):
    opcode = 0x1 if isinstance(payload, str) else 0x2
    if implementation == "anynet compiled":
        writer = _framing_c.FrameWriter(is_client)
        return lambda: writer.encode(opcode, payload)
    if implementation == "anynet python":
        writer = _framing.FrameWriter(is_client)
        return lambda: writer.encode(opcode, payload)
    if implementation == "websockets":
        # websockets takes bytes: a text payload is encoded first, as its send() does.
        def run():
            data = payload.encode() if isinstance(payload, str) else payload
            return Frame(Opcode(opcode), data).serialize(mask=is_client)

        return run
    buffer = bytearray(payload.encode() if isinstance(payload, str) else payload)
    return lambda: bytes(buffer)


@pytest.mark.parametrize("payload_name", PAYLOADS)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("implementation", ["anynet compiled", "anynet python", "websockets", "copy"])
def test_encode(benchmark, payload_name, role, implementation):
    benchmark.group = f"encode {payload_name}, {role}"
    payload = PAYLOADS[payload_name]
    frame = benchmark(encode_with(implementation, payload, ROLES[role]))
    size = len(payload.encode() if isinstance(payload, str) else payload)
    assert len(frame) >= size
