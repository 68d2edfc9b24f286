"""Parsing frames, beside aiohttp's compiled reader, websockets' frame parser
and a plain copy of the same bytes: client (masked) frames on the server side,
and one large server (unmasked) frame on the client side."""

import asyncio
import os
import types

import pytest
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from websockets.frames import Frame
from websockets.streams import StreamReader

from anynet import _framing, _framing_c

IMPLEMENTATIONS = [
    "anynet compiled feed",
    "anynet compiled buffered",
    "anynet python feed",
    "aiohttp",
    "websockets",
    "copy",
]


# Each stream returns (bytes, number of frames, masked).


def small_binary_frames():
    writer = _framing_c.FrameWriter(is_client=True)
    return b"".join(writer.encode(0x2, os.urandom(32)) for _ in range(1000)), 1000, True


def small_text_frames():
    writer = _framing_c.FrameWriter(is_client=True)
    return b"".join(writer.encode(0x1, f"message number {i:05}, hello!") for i in range(1000)), 1000, True


def one_large_frame():
    return _framing_c.FrameWriter(is_client=True).encode(0x2, os.urandom(1 << 20)), 1, True


def one_large_server_frame():
    return _framing_c.FrameWriter(is_client=False).encode(0x2, os.urandom(1 << 20)), 1, False


STREAMS = {
    "1000 small binary frames": small_binary_frames,
    "1000 small text frames": small_text_frames,
    "one 1 MiB frame": one_large_frame,
    "one 1 MiB frame, unmasked": one_large_server_frame,
}


def anynet_feed(module, stream, masked):
    reader = module.FrameReader(is_client=not masked, max_message_size=1 << 20)
    return lambda: reader.feed(stream)


def anynet_buffered(stream, masked):
    # As an asyncio.BufferedProtocol sees it: the loop reads into our buffer
    # (here: a copy, standing in for recv_into), then we parse in place.
    reader = _framing_c.FrameReader(is_client=not masked, max_message_size=1 << 20)
    source = memoryview(stream)

    def run():
        events = []
        position = 0
        while position < len(stream):
            buffer = reader.get_buffer(-1)
            count = min(len(buffer), len(stream) - position)
            buffer[:count] = source[position : position + count]
            position += count
            events += reader.buffer_updated(count)
        return events

    return run


def aiohttp_reader(stream):
    # A protocol that never needs pausing, and a queue drained after each run.
    protocol = types.SimpleNamespace(_reading_paused=True)
    queue = WebSocketDataQueue(protocol, 1 << 30, loop=asyncio.new_event_loop())
    reader = WebSocketReader(queue, 2 << 20, False, True)

    def run():
        reader.feed_data(stream)
        messages = list(queue._buffer)
        queue._buffer.clear()
        return messages

    return run


def websockets_parser(stream, count, masked):
    def run():
        reader = StreamReader()
        reader.feed_data(stream)
        frames = []
        for _ in range(count):
            parser = Frame.parse(reader.read_exact, mask=masked, max_size=2 << 20)
            try:
                while True:
                    next(parser)
            except StopIteration as done:
                frames.append(done.value)
        return frames

    return run


def parse_with(implementation, stream, count, masked):
    if implementation == "anynet compiled feed":
        return anynet_feed(_framing_c, stream, masked)
    if implementation == "anynet compiled buffered":
        return anynet_buffered(stream, masked)
    if implementation == "anynet python feed":
        return anynet_feed(_framing, stream, masked)
    if implementation == "aiohttp":
        return aiohttp_reader(stream)
    if implementation == "websockets":
        return websockets_parser(stream, count, masked)
    buffer = bytearray(stream)
    return lambda: bytes(buffer)


@pytest.mark.parametrize("stream_name", STREAMS)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_parse(benchmark, stream_name, implementation):
    benchmark.group = f"parse {stream_name}"
    stream, count, masked = STREAMS[stream_name]()
    result = benchmark(parse_with(implementation, stream, count, masked))
    if implementation != "copy":
        assert len(result) == count
