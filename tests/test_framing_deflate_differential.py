"""Compressed message streams fed to both builds of the reader and the codec.

The interpreted reader with the interpreted inflater, fed each stream in one
piece, is the reference; the build under test, fed the same stream cut at
random points, must report the same events. The streams hold messages
compressed with and without context takeover, fragmented at random points
(RSV1 on the first frame only), with pings between fragments, messages sent
uncompressed beside them, and random damage that makes some of them invalid.
"""

from __future__ import annotations

import importlib
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anynet import _deflate, _framing

fixture_settings = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_CODEC_OF = {"anynet._framing": "anynet._deflate", "anynet._framing_c": "anynet._deflate_c"}

messages = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500),
    st.sampled_from([b'{"x": 1, "y": 2}' * 40, "state " * 300, b"\x00" * 5000]),
)


@st.composite
def streams(draw):
    bits = draw(st.integers(8, 15))
    no_context_takeover = draw(st.booleans())
    limit = draw(st.sampled_from([None, 100, 5000, 1 << 20]))
    compressor = zlib.compressobj(draw(st.sampled_from([1, 6, 9])), zlib.DEFLATED, -max(bits, 9))
    writer = _framing.FrameWriter(is_client=True)
    stream = b""
    for message in draw(st.lists(messages, max_size=6)):
        opcode = 0x1 if isinstance(message, str) else 0x2
        data = message.encode() if isinstance(message, str) else message
        if draw(st.booleans()):
            stream += writer.encode(opcode, data)
            continue
        if no_context_takeover:
            compressor = zlib.compressobj(1, zlib.DEFLATED, -max(bits, 9))
        payload = (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)])]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            stream += writer.encode(opcode if index == 0 else 0x0, piece, last, index == 0)
            if not last and draw(st.booleans()):
                stream += writer.encode(0x9, b"ping")
    if stream and draw(st.booleans()):
        position = draw(st.integers(0, len(stream) - 1))
        stream = stream[:position] + bytes([stream[position] ^ draw(st.integers(1, 255))]) + stream[position + 1 :]
    return bits, no_context_takeover, limit, stream


def events_of(framing, codec, bits, no_context_takeover, limit, pieces):
    reader = framing.FrameReader(False, limit, codec.Inflater(bits, no_context_takeover, limit))
    events = []
    for piece in pieces:
        events += reader.feed(piece)
    return events


@fixture_settings
@given(case=streams(), data=st.data())
def test_both_builds_read_compressed_streams_alike(framing, case, data):
    bits, no_context_takeover, limit, stream = case
    codec = importlib.import_module(_CODEC_OF[framing.__name__])
    expected = events_of(_framing, _deflate, bits, no_context_takeover, limit, [stream])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    assert events_of(framing, codec, bits, no_context_takeover, limit, pieces) == expected
