"""Reads for the HTTP protocols through one buffer per event loop.

For a plain ``asyncio.Protocol``, asyncio's socket transport reads into a
new bytes object of 256 KiB and shrinks it to what arrived: for a request or
response head of a few hundred bytes that is an mmap, an mremap and a munmap,
three system calls and a page fault per read. ``CopiedReads`` is a
``BufferedProtocol`` instead: the transport reads into the loop's buffer,
and ``buffer_updated`` copies what arrived into a bytes object of its size
before passing it on to ``data_received``. The copy is made before the
transport's read callback returns (every asyncio and uvloop transport calls
``get_buffer``, reads and calls ``buffer_updated`` in one go), so one buffer
serves all of a loop's connections, and an idle connection holds none.
The WebSocket connections that follow read through the same buffer (see
``anynet._framing.FrameReader``'s ``read_buffer``).
"""

from __future__ import annotations

import asyncio
import weakref

# Enough for a request or response head, a good part of a body, or a batch
# of WebSocket frames, per read.
READ_SIZE = 128 * 1024

_buffers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, memoryview] = (
    weakref.WeakKeyDictionary()
)


def loop_read_buffer(loop: asyncio.AbstractEventLoop) -> memoryview:
    buffer = _buffers.get(loop)
    if buffer is None:
        buffer = _buffers[loop] = memoryview(bytearray(READ_SIZE))
    return buffer


class CopiedReads(asyncio.BufferedProtocol):
    """A protocol that receives what it reads as ``data_received(bytes)``,
    read through its event loop's buffer (see the module)."""

    __slots__ = ("_read_buffer",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._read_buffer = loop_read_buffer(loop)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_buffer[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        raise NotImplementedError
