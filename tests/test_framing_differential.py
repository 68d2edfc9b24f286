"""Random frame streams, valid and broken, split at random points.

``anynet/_framing.py`` is one source with two builds: compiled by Cython
(``anynet._framing_c``, where the helpers that move bytes call the C kernels)
and interpreted. The interpreted reader, fed each stream in one piece, is the
reference. The build under test must report exactly the same events, in the
same order, with the same error code and reason, however the stream is cut and
whichever way it is delivered (``feed`` or ``get_buffer``/``buffer_updated``).
For the compiled build this is the differential test against the interpreted
one; for the interpreted build it checks that chunking never changes the
outcome.

Cut streams are also compared piece by piece with the reference fed the same
pieces: every event, an error included, must be reported after the same
piece. Cuts fall inside headers and payloads alike, so this holds the
backends to failing fast on invalid UTF-8 in the middle of a text frame.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anynet import _framing as reference
from support import INVALID_CLOSE_CODES, VALID_CLOSE_CODES

# The framing fixture is a module: sharing it between examples is harmless.
fixture_settings = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# A test here runs thousands of examples (HYPOTHESIS_PROFILE=ci), so its
# duration grows with the profile and the machine's load, unlike the
# suite's single exchanges that the default timeout is sized for.
pytestmark = pytest.mark.timeout(900)

# Bytes that break UTF-8 in different ways: stray continuation, overlong,
# surrogate, above U+10FFFF, invalid lead, truncated sequences.
UTF8_BREAKERS = [b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xed\xbf", b"\xf4\x90\x80\x80", b"\xff", b"\xe2\x82", b"\xf0\x9f"]
# Lengths around the 7-bit, 16-bit and 64-bit encodings, and one large enough
# for the compiled reader to read it in place when it arrives in pieces.
LONG_LENGTHS = [125, 126, 127, 65535, 65536, 70000, 200000]
MAX_MESSAGE_SIZES = [None, 1 << 20, 1000, 60, 1]


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool,
    rsv: int,
    mask: bytes | None,
    length_size: int,
    declared: int | None,
) -> bytes:
    length = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length_size == 0:
        header = bytes((first, mask_bit | length))
    elif length_size == 2:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    if mask is None:
        return header + payload
    return header + mask + reference.apply_mask(payload, mask)


@st.composite
def payloads(draw, text: bool, max_size: int = 40) -> bytes:
    if text:
        data = draw(st.text(max_size=max_size)).encode("utf-8", "surrogatepass")
    else:
        data = draw(st.binary(max_size=max_size))
    if text and draw(st.integers(0, 4)) == 0:
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.sampled_from(UTF8_BREAKERS)) + data[position:]
    if draw(st.integers(0, 9)) == 0:
        # Long payloads, cut anywhere (for text, maybe inside a code point).
        target = draw(st.sampled_from(LONG_LENGTHS))
        data = (data or b"x") * (target // max(len(data), 1) + 1)
        data = data[:target]
    return data


@st.composite
def frame(draw, opcode: int, payload: bytes, fin: bool, masked: bool) -> bytes:
    """One frame, now and then with a header field broken or bent."""
    rsv = 0
    declared = None
    length = len(payload)
    length_size = 0 if length < 126 else 2 if length < 65536 else 8
    mutation = draw(st.integers(0, 40))
    if mutation == 0:
        rsv = draw(st.integers(1, 7))
    elif mutation == 1:
        masked = not masked
    elif mutation == 2 and length < 65536:
        length_size = draw(st.sampled_from([2, 8]))  # non-minimal, allowed
    elif mutation == 3:
        length_size = 8
        declared = (1 << 63) | length
    elif mutation == 4:
        # A declared length that does not match the payload.
        largest = {0: 125, 2: 0xFFFF, 8: 1 << 62}[length_size]
        declared = min(max(length + draw(st.integers(-3, 3)), 0), largest)
    mask = draw(st.binary(min_size=4, max_size=4)) if masked else None
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length_size=length_size, declared=declared)


@st.composite
def control_frame(draw, masked: bool) -> bytes:
    opcode = draw(st.sampled_from([0x8, 0x9, 0xA]))
    if opcode == 0x8:
        shape = draw(st.sampled_from(["empty", "one byte", "code", "code and reason", "bad reason"]))
        if shape == "empty":
            payload = b""
        elif shape == "one byte":
            payload = draw(st.binary(min_size=1, max_size=1))
        else:
            code = draw(
                st.sampled_from(VALID_CLOSE_CODES)
                | st.sampled_from(INVALID_CLOSE_CODES)
                | st.integers(0, 0xFFFF)
            )
            payload = code.to_bytes(2, "big")
            if shape == "code and reason":
                payload += draw(st.text(max_size=30)).encode("utf-8", "surrogatepass")
            elif shape == "bad reason":
                payload += b"bye" + draw(st.sampled_from(UTF8_BREAKERS))
    else:
        payload = draw(st.binary(max_size=130))  # over 125 now and then
    return draw(frame(opcode, payload, fin=draw(st.integers(0, 15)) > 0, masked=masked))


@st.composite
def message_frames(draw, masked: bool) -> bytes:
    """A text or binary message, often fragmented, with control frames between
    fragments; fragments may split code points."""
    opcode = draw(st.sampled_from([0x1, 0x2]))
    payload = draw(payloads(text=opcode == 0x1))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    pieces = [payload[start:end] for start, end in zip([0, *cuts], [*cuts, len(payload)])]
    stream = b""
    for index, piece in enumerate(pieces):
        if index and draw(st.integers(0, 3)) == 0:
            stream += draw(control_frame(masked))
        piece_opcode = opcode if index == 0 else 0x0
        stream += draw(frame(piece_opcode, piece, fin=index == len(pieces) - 1, masked=masked))
    return stream


@st.composite
def odd_frame(draw, masked: bool) -> bytes:
    """Any opcode (including unknown ones and stray continuations), any FIN."""
    opcode = draw(st.integers(0, 15))
    return draw(frame(opcode, draw(st.binary(max_size=20)), fin=draw(st.booleans()), masked=masked))


@st.composite
def frame_streams(draw, masked: bool) -> bytes:
    units = st.one_of(
        message_frames(masked),
        message_frames(masked),
        message_frames(masked),
        control_frame(masked),
        odd_frame(masked),
    )
    stream = b"".join(draw(st.lists(units, max_size=8)))
    if draw(st.integers(0, 9)) == 0:
        stream += draw(st.binary(max_size=20))
    return stream


@st.composite
def split_points(draw, size: int) -> list:
    return sorted(set(draw(st.lists(st.integers(0, size), max_size=12))))


def chunks(data: bytes, points: list) -> list:
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:])]


def typed(events: list) -> list:
    # Ping and Pong are tuples that compare equal to each other: keep the type.
    return [(type(event).__name__, event) for event in events]


def outcome(reader, events_per_piece: list) -> tuple:
    """The events each piece produced, and the reader's final state."""
    return [typed(events) for events in events_per_piece], reader.failed, reader.closed


def joined(result: tuple) -> tuple:
    """The same outcome with the events of all the pieces in one list."""
    events_per_piece, failed, closed = result
    return [event for events in events_per_piece for event in events], failed, closed


def read_with_feed(framing, is_client, max_message_size, pieces) -> tuple:
    reader = framing.FrameReader(is_client, max_message_size)
    return outcome(reader, [reader.feed(piece) for piece in pieces])


def read_with_buffers(framing, is_client, max_message_size, pieces) -> tuple:
    reader = framing.FrameReader(is_client, max_message_size)
    events_per_piece = []
    for piece in pieces:
        events = []
        while piece:
            buffer = reader.get_buffer(-1)
            count = min(len(buffer), len(piece))
            buffer[:count] = piece[:count]
            piece = piece[count:]
            events += reader.buffer_updated(count)
        events_per_piece.append(events)
    return outcome(reader, events_per_piece)


def check_stream(framing, data, is_client, max_message_size, points) -> None:
    whole = read_with_feed(reference, is_client, max_message_size, [data])
    pieces = chunks(data, points)
    expected = read_with_feed(reference, is_client, max_message_size, pieces)
    assert joined(expected) == joined(whole)
    assert read_with_feed(framing, is_client, max_message_size, [data]) == whole
    assert read_with_feed(framing, is_client, max_message_size, pieces) == expected
    assert read_with_buffers(framing, is_client, max_message_size, pieces) == expected


@st.composite
def framed_cases(draw) -> tuple:
    is_client = draw(st.booleans())
    data = draw(frame_streams(masked=not is_client))
    return data, is_client, draw(st.sampled_from(MAX_MESSAGE_SIZES)), draw(split_points(len(data)))


@fixture_settings
@given(case=framed_cases())
def test_random_frame_streams(framing, case):
    check_stream(framing, *case)


@st.composite
def raw_cases(draw) -> tuple:
    data = draw(st.binary(max_size=300))
    return data, draw(st.booleans()), draw(st.sampled_from(MAX_MESSAGE_SIZES)), draw(split_points(len(data)))


@fixture_settings
@given(case=raw_cases())
def test_random_bytes(framing, case):
    check_stream(framing, *case)


@st.composite
def messages(draw) -> list:
    """(opcode, payload, fragment sizes) for valid messages."""
    result = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            payload = draw(st.text(max_size=50))
            opcode = 0x1
            size = len(payload.encode())
        else:
            payload = draw(st.binary(max_size=50))
            opcode = 0x2
            size = len(payload)
        cuts = sorted(draw(st.lists(st.integers(0, size), max_size=3)))
        result.append((opcode, payload, cuts))
    return result


@fixture_settings
@given(items=messages(), writer_is_client=st.booleans(), data=st.data())
def test_written_messages_are_read_back(framing, items, writer_is_client, data):
    writer = framing.FrameWriter(writer_is_client)
    stream = b""
    for opcode, payload, cuts in items:
        encoded = payload.encode() if isinstance(payload, str) else payload
        pieces = chunks(encoded, cuts)
        for index, piece in enumerate(pieces):
            stream += writer.encode(opcode if index == 0 else 0x0, piece, fin=index == len(pieces) - 1)
    points = data.draw(split_points(len(stream)))
    reader = framing.FrameReader(not writer_is_client)
    events = []
    for piece in chunks(stream, points):
        events += reader.feed(piece)
    assert typed(events) == typed([payload for _, payload, _ in items])
