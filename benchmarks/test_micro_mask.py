"""Masking throughput beside the peers' C implementations and a plain copy.

Run: python -m pytest benchmarks/ --benchmark-only --benchmark-columns=min,median,mean
"""

import os

import pytest
from aiohttp._websocket.helpers import websocket_mask as aiohttp_mask
from websockets.speedups import apply_mask as websockets_mask

from anynet import _framing, _framing_c

SIZES = {"16 B": 16, "1 KiB": 1024, "64 KiB": 64 * 1024, "1 MiB": 1 << 20}
MASK = os.urandom(4)


def mask_with(implementation, data):
    if implementation == "anynet compiled":
        return lambda: _framing_c.apply_mask(data, MASK)
    if implementation == "anynet python":
        return lambda: _framing.apply_mask(data, MASK)
    if implementation == "websockets":
        return lambda: websockets_mask(data, MASK)
    if implementation == "aiohttp (in place)":
        # aiohttp masks a bytearray in place, without allocating a result.
        buffer = bytearray(data)
        return lambda: aiohttp_mask(MASK, buffer)
    # The ceiling: allocating and copying the same number of bytes.
    buffer = bytearray(data)
    return lambda: bytes(buffer)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "implementation", ["anynet compiled", "anynet python", "websockets", "aiohttp (in place)", "copy"]
)
def test_mask(benchmark, size, implementation):
    benchmark.group = f"mask {size}"
    data = os.urandom(SIZES[size])
    result = benchmark(mask_with(implementation, data))
    if implementation in ("anynet compiled", "anynet python", "websockets"):
        assert result == websockets_mask(data, MASK)
