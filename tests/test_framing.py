"""The framing layer, byte by byte: every test runs on both backends."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from anynet._events import Close, Ping, Pong, ProtocolError
from support import INVALID_CLOSE_CODES, VALID_CLOSE_CODES

MASK = b"\x37\xfa\x21\x3d"  # the key of the RFC 6455 section 5.7 examples


def reference_mask(data: bytes, mask: bytes) -> bytes:
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(data))


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    mask: bytes | None = None,
    rsv: int = 0,
    length: int | None = None,
    length_size: int | None = None,
) -> bytes:
    """A frame built field by field, so tests can break any rule they like.

    ``length`` overrides the declared payload length, ``length_size`` (0, 2 or
    8) forces a length encoding, minimal or not.
    """
    declared = len(payload) if length is None else length
    if length_size is None:
        length_size = 0 if declared < 126 else 2 if declared < 65536 else 8
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length_size == 0:
        header = bytes((first, mask_bit | declared))
    elif length_size == 2:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", declared)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", declared)
    if mask is None:
        return header + payload
    return header + mask + reference_mask(payload, mask)


def client_frame(opcode: int, payload: bytes = b"", **options) -> bytes:
    """A frame as a client sends it (masked), for a server-side reader."""
    return build_frame(opcode, payload, mask=MASK, **options)


def server_reader(framing, **options):
    return framing.FrameReader(is_client=False, **options)


def client_reader(framing, **options):
    return framing.FrameReader(is_client=True, **options)


def feed_bytewise(reader, data: bytes) -> list:
    events = []
    for i in range(len(data)):
        events += reader.feed(data[i : i + 1])
    return events


def feed_buffered(reader, data: bytes, chunk_size: int) -> list:
    """Deliver data the way asyncio.BufferedProtocol does, chunk_size at most per read."""
    events = []
    position = 0
    while position < len(data):
        buffer = reader.get_buffer(-1)
        assert len(buffer) > 0
        count = min(len(buffer), chunk_size, len(data) - position)
        buffer[:count] = data[position : position + count]
        position += count
        events += reader.buffer_updated(count)
    return events


def error_code(events: list) -> int:
    assert events, "expected a ProtocolError, got no events"
    assert isinstance(events[-1], ProtocolError), events
    return events[-1].code


# -- RFC 6455 section 5.7 examples ---------------------------------------------------


RFC_UNMASKED_HELLO = bytes.fromhex("810548656c6c6f")
RFC_MASKED_HELLO = bytes.fromhex("818537fa213d7f9f4d5158")
RFC_FRAGMENTED_HELLO = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f")
RFC_UNMASKED_PING = bytes.fromhex("890548656c6c6f")
RFC_MASKED_PONG = bytes.fromhex("8a8537fa213d7f9f4d5158")
RFC_BINARY_256 = bytes.fromhex("827e0100") + bytes(range(256))
RFC_BINARY_64K = bytes.fromhex("827f0000000000010000") + bytes(65536)


def test_rfc_unmasked_text_is_read_by_a_client(framing):
    assert client_reader(framing).feed(RFC_UNMASKED_HELLO) == ["Hello"]


def test_rfc_unmasked_text_is_written_by_a_server(framing):
    assert framing.FrameWriter(is_client=False).encode(0x1, "Hello") == RFC_UNMASKED_HELLO
    assert framing.FrameWriter(is_client=False).encode(0x1, b"Hello") == RFC_UNMASKED_HELLO


def test_rfc_masked_text_is_read_by_a_server(framing):
    assert server_reader(framing).feed(RFC_MASKED_HELLO) == ["Hello"]


def test_rfc_masked_text_is_written_by_a_client(framing):
    frame = framing.FrameWriter(is_client=True).encode(0x1, "Hello")
    assert frame[:2] == RFC_MASKED_HELLO[:2]
    key = frame[2:6]
    assert frame[6:] == reference_mask(b"Hello", key)
    assert framing.apply_mask(b"Hello", MASK) == RFC_MASKED_HELLO[6:]


def test_rfc_fragmented_text_is_read(framing):
    reader = client_reader(framing)
    assert reader.feed(RFC_FRAGMENTED_HELLO[:5]) == []
    assert reader.feed(RFC_FRAGMENTED_HELLO[5:]) == ["Hello"]


def test_rfc_fragmented_text_is_written(framing):
    writer = framing.FrameWriter(is_client=False)
    assert writer.encode(0x1, "Hel", fin=False) + writer.encode(0x0, "lo") == RFC_FRAGMENTED_HELLO


def test_rfc_ping_and_pong(framing):
    assert client_reader(framing).feed(RFC_UNMASKED_PING) == [Ping(b"Hello")]
    assert server_reader(framing).feed(RFC_MASKED_PONG) == [Pong(b"Hello")]
    assert framing.FrameWriter(is_client=False).encode(0x9, b"Hello") == RFC_UNMASKED_PING


def test_rfc_extended_lengths(framing):
    reader = client_reader(framing)
    assert reader.feed(RFC_BINARY_256) == [bytes(range(256))]
    assert reader.feed(RFC_BINARY_64K) == [bytes(65536)]
    writer = framing.FrameWriter(is_client=False)
    assert writer.encode(0x2, bytes(range(256))) == RFC_BINARY_256
    assert writer.encode(0x2, bytes(65536)) == RFC_BINARY_64K


# -- RFC 6455 section 5 rules, one close code each -----------------------------------


def test_server_rejects_unmasked_frames(framing):
    assert error_code(server_reader(framing).feed(build_frame(0x1, b"hi"))) == 1002


def test_client_rejects_masked_frames(framing):
    assert error_code(client_reader(framing).feed(client_frame(0x1, b"hi"))) == 1002


@pytest.mark.parametrize("rsv", [0b100, 0b010, 0b001, 0b111])
def test_reserved_bits_without_extension(framing, rsv):
    assert error_code(server_reader(framing).feed(client_frame(0x2, b"x", rsv=rsv))) == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes(framing, opcode):
    assert error_code(server_reader(framing).feed(client_frame(opcode, b"x"))) == 1002


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_fragmented_control_frame(framing, opcode):
    assert error_code(server_reader(framing).feed(client_frame(opcode, b"", fin=False))) == 1002


@pytest.mark.parametrize("opcode", [0x8, 0x9, 0xA])
def test_control_frame_over_125_bytes(framing, opcode):
    frame = client_frame(opcode, b"\x03\xe8" + b"x" * 124)
    assert error_code(server_reader(framing).feed(frame)) == 1002
    # Decided from the header alone.
    assert error_code(server_reader(framing).feed(frame[:4])) == 1002


def test_control_frame_of_125_bytes_is_fine(framing):
    assert server_reader(framing).feed(client_frame(0x9, b"p" * 125)) == [Ping(b"p" * 125)]


def test_continuation_without_a_message(framing):
    assert error_code(server_reader(framing).feed(client_frame(0x0, b"x"))) == 1002


def test_continuation_after_a_finished_message(framing):
    stream = client_frame(0x1, b"done") + client_frame(0x0, b"more")
    events = server_reader(framing).feed(stream)
    assert events[0] == "done"
    assert error_code(events) == 1002


@pytest.mark.parametrize("opcode", [0x1, 0x2])
def test_new_message_inside_a_fragmented_message(framing, opcode):
    stream = client_frame(0x2, b"first", fin=False) + client_frame(opcode, b"second")
    assert error_code(server_reader(framing).feed(stream)) == 1002


def test_64_bit_length_with_the_top_bit_set(framing):
    frame = client_frame(0x2, b"", length=1 << 63, length_size=8)
    assert error_code(server_reader(framing, max_message_size=None).feed(frame)) == 1002


@pytest.mark.parametrize("length_size", [2, 8])
def test_non_minimal_length_encodings_are_accepted(framing, length_size):
    frame = client_frame(0x2, b"tiny", length_size=length_size)
    assert server_reader(framing).feed(frame) == [b"tiny"]


def test_close_without_payload_reports_1005(framing):
    reader = server_reader(framing)
    assert reader.feed(client_frame(0x8)) == [Close(1005, "")]
    assert reader.closed


def test_close_with_code_and_reason(framing):
    payload = (1001).to_bytes(2, "big") + "au revoir ✓".encode()
    assert server_reader(framing).feed(client_frame(0x8, payload)) == [Close(1001, "au revoir ✓")]


def test_close_with_a_1_byte_payload(framing):
    assert error_code(server_reader(framing).feed(client_frame(0x8, b"\x03"))) == 1002


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_codes(framing, code):
    assert server_reader(framing).feed(client_frame(0x8, code.to_bytes(2, "big"))) == [Close(code, "")]


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_codes(framing, code):
    assert error_code(server_reader(framing).feed(client_frame(0x8, code.to_bytes(2, "big")))) == 1002


def test_close_reason_not_utf8(framing):
    frame = client_frame(0x8, b"\x03\xe8bad \xff reason")
    assert error_code(server_reader(framing).feed(frame)) == 1007


def test_text_message_not_utf8(framing):
    assert error_code(server_reader(framing).feed(client_frame(0x1, b"caf\xc3"))) == 1007


def test_invalid_utf8_fails_on_the_first_bad_fragment(framing):
    reader = server_reader(framing)
    assert reader.feed(client_frame(0x1, b"fine ", fin=False)) == []
    # The message has not ended, but it can no longer become valid UTF-8.
    assert error_code(reader.feed(client_frame(0x0, b"\xed\xa0\x80", fin=False))) == 1007


def test_truncated_surrogate_fails_at_the_end_of_a_fragment(framing):
    reader = server_reader(framing)
    assert error_code(reader.feed(client_frame(0x1, b"x\xed\xa0", fin=False))) == 1007


def test_code_points_split_across_fragments(framing):
    text = "€ and 𝄞"
    encoded = text.encode()
    stream = (
        client_frame(0x1, encoded[:1], fin=False)
        + client_frame(0x0, encoded[1:2], fin=False)
        + client_frame(0x0, encoded[2:8], fin=False)
        + client_frame(0x0, encoded[8:])
    )
    assert server_reader(framing).feed(stream) == [text]


def test_message_must_complete_its_last_code_point(framing):
    stream = client_frame(0x1, b"ok ", fin=False) + client_frame(0x0, "€".encode()[:2])
    assert error_code(server_reader(framing).feed(stream)) == 1007


# -- invalid UTF-8 inside a frame that arrives in pieces ----------------------------

# Autobahn cases 6.4.3 and 6.4.4: one text frame whose payload arrives in three
# pieces with pauses between them. The first piece is valid; the second makes
# the payload invalid (a code point above U+10FFFF), and must fail at once,
# without waiting for the third piece and the end of the frame.
GREEK = "κόσμε".encode()
SPLIT_TEXT_FRAMES = {
    "6.4.3": (GREEK, b"\xf4\x90\x80\x80", b"edited"),
    "6.4.4": (GREEK + b"\xf4", b"\x90", b"\x80\x80edited"),
}
# Where the payload of both stops being a prefix of valid UTF-8: at the 0x90.
FIRST_INVALID_BYTE = len(GREEK) + 1


def role_frame(is_client: bool, opcode: int, payload: bytes, **options) -> bytes:
    """A frame as the peer of a reader with this role sends it."""
    return build_frame(opcode, payload, mask=None if is_client else MASK, **options)


def header_size(is_client: bool, payload: bytes) -> int:
    return len(role_frame(is_client, 0x1, payload)) - len(payload)


@pytest.mark.parametrize("case", SPLIT_TEXT_FRAMES)
@pytest.mark.parametrize("is_client", [False, True])
def test_invalid_utf8_fails_in_the_middle_of_a_frame(framing, case, is_client):
    parts = SPLIT_TEXT_FRAMES[case]
    frame = role_frame(is_client, 0x1, b"".join(parts))
    first_end = header_size(is_client, frame) + len(parts[0])
    reader = framing.FrameReader(is_client)
    assert reader.feed(frame[:first_end]) == []
    assert reader.feed(frame[first_end : first_end + len(parts[1])]) == [
        ProtocolError(1007, "invalid UTF-8 in a text message")
    ]
    assert reader.failed
    assert reader.buffer_size == 0
    assert reader.feed(frame[first_end + len(parts[1]) :]) == []


@pytest.mark.parametrize("is_client", [False, True])
def test_invalid_utf8_fails_at_the_byte_that_breaks_it(framing, is_client):
    payload = b"".join(SPLIT_TEXT_FRAMES["6.4.3"])
    frame = role_frame(is_client, 0x1, payload)
    breaking = header_size(is_client, payload) + FIRST_INVALID_BYTE
    reader = framing.FrameReader(is_client)
    for index in range(len(frame)):
        events = reader.feed(frame[index : index + 1])
        if index < breaking:
            assert events == []
        else:
            assert error_code(events) == 1007
            break


@pytest.mark.parametrize("case", SPLIT_TEXT_FRAMES)
@pytest.mark.parametrize("is_client", [False, True])
def test_invalid_utf8_fails_fast_at_every_split(framing, case, is_client):
    payload = b"".join(SPLIT_TEXT_FRAMES[case])
    frame = role_frame(is_client, 0x1, payload)
    breaking = header_size(is_client, payload) + FIRST_INVALID_BYTE
    for split in range(len(frame) + 1):
        reader = framing.FrameReader(is_client)
        first = reader.feed(frame[:split])
        if split > breaking:
            assert error_code(first) == 1007
        else:
            assert first == []
            assert error_code(reader.feed(frame[split:])) == 1007


@pytest.mark.parametrize("chunk_size", [1, 5, 12])
def test_invalid_utf8_fails_in_the_middle_of_a_frame_read_into_the_buffer(framing, chunk_size):
    payload = b"".join(SPLIT_TEXT_FRAMES["6.4.4"])
    frame = client_frame(0x1, payload)
    breaking = header_size(False, payload) + FIRST_INVALID_BYTE
    cut = (breaking // chunk_size + 1) * chunk_size
    reader = server_reader(framing)
    # Everything up to and including the chunk with the breaking byte.
    assert error_code(feed_buffered(reader, frame[:cut], chunk_size)) == 1007
    assert reader.buffer_size == 0


@pytest.mark.parametrize("is_client", [False, True])
def test_invalid_utf8_fails_in_the_middle_of_a_continuation_frame(framing, is_client):
    reader = framing.FrameReader(is_client)
    assert reader.feed(role_frame(is_client, 0x1, b"first, then ", fin=False)) == []
    # The continuation starts with the second half of a code point.
    assert reader.feed(role_frame(is_client, 0x0, b"\xc3", fin=False)) == []
    payload = b"\xa9 and \xe2\x82\xac and \xed\xa0\x80 and more"
    frame = role_frame(is_client, 0x0, payload)
    # A surrogate: the byte after 0xED breaks it.
    breaking = header_size(is_client, payload) + payload.index(b"\xed") + 1
    assert reader.feed(frame[:breaking]) == []
    assert error_code(reader.feed(frame[breaking : breaking + 1])) == 1007


def test_a_truncated_surrogate_fails_in_the_middle_of_a_frame(framing):
    frame = client_frame(0x1, b"ok \xed\xa0\x80")
    assert error_code(server_reader(framing).feed(frame[:-1])) == 1007


@pytest.mark.parametrize("is_client", [False, True])
def test_valid_text_arriving_in_pieces_at_every_split(framing, is_client):
    text = "ascii, then é, € and 𝄞, κόσμε"
    frame = role_frame(is_client, 0x1, text.encode())
    for split in range(len(frame) + 1):
        reader = framing.FrameReader(is_client)
        assert reader.feed(frame[:split]) + reader.feed(frame[split:]) == [text]
        assert reader.buffer_size == 0


@pytest.mark.parametrize("is_client", [False, True])
def test_valid_fragmented_text_arriving_one_byte_at_a_time(framing, is_client):
    text = "é€𝄞 and some ASCII " * 3
    encoded = text.encode()
    stream = (
        role_frame(is_client, 0x1, encoded[:5], fin=False)
        + role_frame(is_client, 0x9, b"ping")
        + role_frame(is_client, 0x0, encoded[5:30], fin=False)
        + role_frame(is_client, 0x0, encoded[30:])
        + role_frame(is_client, 0x1, encoded)
    )
    assert feed_bytewise(framing.FrameReader(is_client), stream) == [Ping(b"ping"), text, text]


@pytest.mark.parametrize("chunk_size", [1, 3, 1000, 4096])
def test_large_text_arriving_in_pieces(framing, chunk_size):
    text = ("plain ASCII for a while, " * 200 + "then κόσμε and 𝄞, ") * 3
    frame = client_frame(0x1, text.encode())
    stream = frame + client_frame(0x1, b"next")
    assert feed_buffered(server_reader(framing), stream, chunk_size) == [text, "next"]
    reader = server_reader(framing)
    events = []
    for start in range(0, len(stream), chunk_size):
        events += reader.feed(stream[start : start + chunk_size])
    assert events == [text, "next"]


def test_a_text_frame_completed_with_more_frames_behind_it(framing):
    frame = client_frame(0x1, "€uro".encode())
    reader = server_reader(framing)
    assert reader.feed(frame[:8]) == []
    assert reader.feed(frame[8:] + client_frame(0x9, b"p") + client_frame(0x2, b"b")) == ["€uro", Ping(b"p"), b"b"]


def test_message_over_the_limit_is_refused_from_its_header(framing):
    reader = server_reader(framing, max_message_size=1000)
    frame = client_frame(0x2, bytes(1001))
    assert error_code(reader.feed(frame[:8])) == 1009
    assert reader.failed
    assert reader.buffer_size == 0


def test_message_at_the_limit_is_accepted(framing):
    assert server_reader(framing, max_message_size=1000).feed(client_frame(0x2, bytes(1000))) == [bytes(1000)]


def test_fragmented_message_over_the_limit(framing):
    reader = server_reader(framing, max_message_size=1000)
    assert reader.feed(client_frame(0x1, b"a" * 600, fin=False)) == []
    assert error_code(reader.feed(client_frame(0x0, b"b" * 401)[:8])) == 1009


def test_default_limit_is_one_mebibyte(framing):
    header = client_frame(0x2, b"", length=(1 << 20) + 1)
    assert error_code(server_reader(framing).feed(header)) == 1009


def test_no_limit(framing):
    reader = server_reader(framing, max_message_size=None)
    payload = os.urandom((1 << 20) + 1)
    assert reader.feed(client_frame(0x2, payload)) == [payload]


def test_control_frames_are_not_bound_by_the_message_limit(framing):
    assert server_reader(framing, max_message_size=10).feed(client_frame(0x9, b"p" * 100)) == [Ping(b"p" * 100)]


def test_control_frames_between_fragments(framing):
    stream = (
        client_frame(0x1, b"Hel", fin=False)
        + client_frame(0x9, b"ping")
        + client_frame(0x0, b"l", fin=False)
        + client_frame(0xA, b"pong")
        + client_frame(0x0, b"o")
    )
    assert server_reader(framing).feed(stream) == [Ping(b"ping"), Pong(b"pong"), "Hello"]


def test_valid_events_before_an_error_are_kept(framing):
    stream = client_frame(0x1, b"hello") + client_frame(0x1, b"x", rsv=0b100)
    events = server_reader(framing).feed(stream)
    assert events == ["hello", ProtocolError(1002, events[-1].reason)]


def test_input_after_an_error_is_ignored(framing):
    reader = server_reader(framing)
    assert error_code(reader.feed(build_frame(0x1, b"unmasked"))) == 1002
    assert reader.failed and not reader.closed
    assert reader.feed(client_frame(0x1, b"later")) == []
    assert reader.buffer_size == 0


def test_input_after_a_close_is_ignored(framing):
    reader = server_reader(framing)
    events = reader.feed(client_frame(0x1, b"before") + client_frame(0x8, b"\x03\xe8") + client_frame(0x1, b"after"))
    assert events == ["before", Close(1000, "")]
    assert reader.closed and not reader.failed
    assert reader.feed(client_frame(0x1, b"later")) == []
    buffer = reader.get_buffer(-1)
    buffer[:5] = b"bytes"
    assert reader.buffer_updated(5) == []


def test_reader_arguments_are_checked(framing):
    with pytest.raises(ValueError):
        framing.FrameReader(is_client=False, max_message_size=0)
    with pytest.raises(TypeError):
        framing.FrameReader(is_client=False, max_message_size="big")


def test_buffer_updated_without_get_buffer(framing):
    reader = server_reader(framing)
    with pytest.raises(ValueError):
        reader.buffer_updated(10)


# -- round trips ---------------------------------------------------------------------

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20]


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("writer_is_client", [True, False])
def test_round_trip(framing, length, writer_is_client):
    writer = framing.FrameWriter(is_client=writer_is_client)
    reader = framing.FrameReader(is_client=not writer_is_client)
    binary = os.urandom(length)
    text = ("aé€𝄞" * (length // 10 + 1))[: length // 4]
    stream = writer.encode(0x2, binary) + writer.encode(0x1, text)
    assert reader.feed(stream) == [binary, text]


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
@pytest.mark.parametrize("writer_is_client", [True, False])
def test_fragmented_round_trip(framing, length, writer_is_client):
    writer = framing.FrameWriter(is_client=writer_is_client)
    reader = framing.FrameReader(is_client=not writer_is_client)
    text = ("€𝄞xy" * length)[:length]
    encoded = text.encode()
    cuts = [len(encoded) // 3, 2 * len(encoded) // 3]  # cuts may fall inside code points
    pieces = [encoded[: cuts[0]], encoded[cuts[0] : cuts[1]], encoded[cuts[1] :]]
    binary = os.urandom(length)
    stream = (
        writer.encode(0x1, pieces[0], fin=False)
        + writer.encode(0x0, pieces[1], fin=False)
        + writer.encode(0x9, b"in between")
        + writer.encode(0x0, pieces[2])
        + writer.encode(0x2, binary[:10], fin=False)
        + writer.encode(0x0, binary[10:])
    )
    assert reader.feed(stream) == [Ping(b"in between"), text, binary]


def test_every_opcode_round_trips(framing):
    writer = framing.FrameWriter(is_client=True)
    stream = (
        writer.encode(0x1, "text")
        + writer.encode(0x2, b"binary")
        + writer.encode(0x9, b"ping")
        + writer.encode(0xA, b"pong")
        + writer.encode_close(4000, "bye")
    )
    assert server_reader(framing).feed(stream) == ["text", b"binary", Ping(b"ping"), Pong(b"pong"), Close(4000, "bye")]


def test_payload_types(framing):
    writer = framing.FrameWriter(is_client=True)
    reader = server_reader(framing)
    data = b"some payload"
    stream = writer.encode(0x2, data) + writer.encode(0x2, bytearray(data)) + writer.encode(0x2, memoryview(data))
    assert reader.feed(stream) == [data, data, data]
    assert reader.feed(bytearray(writer.encode(0x2, data))) == [data]
    assert reader.feed(memoryview(writer.encode(0x2, data))) == [data]


# -- chunking ------------------------------------------------------------------------


def mixed_stream() -> bytes:
    """Frames of every kind and every length encoding, as a client sends them."""
    return (
        client_frame(0x1, "héllo".encode())
        + client_frame(0x2, bytes(range(256)) * 2)
        + client_frame(0x9, b"are you there")
        + client_frame(0x1, "€"[:1].encode() + b"a", fin=False)
        + client_frame(0xA, b"")
        + client_frame(0x0, "€𝄞".encode())
        + client_frame(0x2, os.urandom(70000))
        + client_frame(0x2, b"")
        + client_frame(0x8, b"\x03\xe8done")
    )


def test_feeding_one_byte_at_a_time_equals_feeding_everything(framing):
    stream = mixed_stream()
    expected = server_reader(framing).feed(stream)
    assert len(expected) == 8 and expected[-1] == Close(1000, "done")
    assert feed_bytewise(server_reader(framing), stream) == expected


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 100, 4096, 65536, 1 << 20])
def test_buffered_protocol_path(framing, chunk_size):
    stream = mixed_stream()
    expected = server_reader(framing).feed(stream)
    assert feed_buffered(server_reader(framing), stream, chunk_size) == expected


def test_thousand_frames_in_one_chunk(framing):
    writer = framing.FrameWriter(is_client=True)
    messages = [os.urandom(i % 200) for i in range(1000)]
    stream = b"".join(writer.encode(0x2, message) for message in messages)
    assert server_reader(framing).feed(stream) == messages
    assert feed_buffered(server_reader(framing), stream, 65536) == messages


def test_errors_are_the_same_however_the_input_is_split(framing):
    stream = client_frame(0x1, b"ok") + client_frame(0x2, b"", length=1 << 63, length_size=8)
    expected = server_reader(framing, max_message_size=None).feed(stream)
    assert error_code(expected) == 1002
    assert feed_bytewise(server_reader(framing, max_message_size=None), stream) == expected


# -- the receive buffer --------------------------------------------------------------


def test_idle_reader_holds_no_buffer(framing):
    reader = server_reader(framing)
    assert reader.buffer_size == 0
    buffer = reader.get_buffer(-1)
    frame = client_frame(0x1, b"hi")
    buffer[: len(frame)] = frame
    assert reader.buffer_updated(len(frame)) == ["hi"]
    assert reader.buffer_size == 0


def test_buffer_grows_to_fit_a_large_frame_and_is_released(framing):
    reader = server_reader(framing)
    payload = os.urandom(1 << 20)
    frame = client_frame(0x2, payload)
    buffer = reader.get_buffer(-1)
    buffer[:100] = frame[:100]
    assert reader.buffer_updated(100) == []
    # The rest of the frame fits in the next read, and the reader holds room
    # for the frame (or just its payload), no more.
    buffer = reader.get_buffer(-1)
    assert len(buffer) >= len(frame) - 100
    assert len(payload) <= reader.buffer_size <= len(frame)
    buffer[: len(frame) - 100] = frame[100:]
    assert reader.buffer_updated(len(frame) - 100) == [payload]
    assert reader.buffer_size == 0


def test_idle_readers_read_into_the_shared_read_buffer(framing):
    shared = memoryview(bytearray(4096))
    reader = server_reader(framing, read_buffer=shared)
    assert reader.get_buffer(-1) is shared
    frame = client_frame(0x2, b"whole") + client_frame(0x1, b"and a half")
    shared[: len(frame) - 3] = frame[:-3]
    assert reader.buffer_updated(len(frame) - 3) == [b"whole"]
    # The incomplete frame moved to the reader's own buffer, which the rest
    # of it is read into; once drained, reads go to the shared buffer again.
    assert reader.buffer_size > 0
    shared[:] = bytes(len(shared))
    buffer = reader.get_buffer(-1)
    assert buffer is not shared
    buffer[:3] = frame[-3:]
    assert reader.buffer_updated(3) == ["and a half"]
    assert reader.buffer_size == 0
    assert reader.get_buffer(-1) is shared


@pytest.mark.parametrize("chunk_size", [1, 7, 100, 4096, 65536, 1 << 20])
def test_readers_sharing_a_read_buffer_take_turns(framing, chunk_size):
    """Two connections of one event loop, their reads interleaved."""
    shared = memoryview(bytearray(128 * 1024))
    streams = [mixed_stream(), b"".join(client_frame(0x2, os.urandom(size)) for size in (3, 300, 3000, 100000))]
    readers = [server_reader(framing, read_buffer=shared) for _ in streams]
    positions = [0, 0]
    events: list[list] = [[], []]
    while any(position < len(stream) for position, stream in zip(positions, streams)):
        for index, (reader, stream) in enumerate(zip(readers, streams)):
            position = positions[index]
            if position < len(stream):
                buffer = reader.get_buffer(-1)
                count = min(len(buffer), chunk_size, len(stream) - position)
                buffer[:count] = stream[position : position + count]
                positions[index] += count
                events[index] += reader.buffer_updated(count)
    assert events == [server_reader(framing).feed(stream) for stream in streams]


@pytest.mark.parametrize(
    "read_buffer", [memoryview(bytes(8192)), memoryview(bytearray(100)), memoryview(bytearray(8192)).cast("I"), bytearray(8192)]
)
def test_the_read_buffer_must_be_a_writable_memoryview_of_bytes(framing, read_buffer):
    with pytest.raises(ValueError, match="read_buffer"):
        server_reader(framing, read_buffer=read_buffer)


def test_tail_kept_by_feed_is_released(framing):
    reader = server_reader(framing)
    frame = client_frame(0x2, bytes(200000))
    assert reader.feed(frame[:150000]) == []
    assert reader.buffer_size >= len(frame)
    assert reader.feed(frame[150000:]) == [bytes(200000)]
    assert reader.buffer_size == 0


def test_a_huge_declared_length_is_not_preallocated(framing):
    reader = server_reader(framing, max_message_size=None)
    assert reader.feed(client_frame(0x2, b"", length=1 << 40)) == []
    assert reader.buffer_size < 1 << 20
    assert len(reader.get_buffer(-1)) < 1 << 20


def test_a_huge_frame_grows_the_buffer_with_its_bytes(framing):
    reader = server_reader(framing, max_message_size=None)
    payload = bytes(17 << 20)
    frame = framing.FrameWriter(is_client=True).encode(0x2, payload)
    events = feed_buffered(reader, frame, 1 << 20)
    assert events == [payload]
    assert reader.buffer_size == 0


@pytest.mark.parametrize("chunk_size", [1001, 4093, 65537, 100003])
@pytest.mark.parametrize("is_client", [False, True])
def test_large_binary_frame_arriving_in_pieces(framing, chunk_size, is_client):
    # Large enough that the compiled reader reads its payload in place; odd
    # chunk sizes start each piece at another phase of the mask.
    payload = os.urandom(300000)
    stream = role_frame(is_client, 0x2, payload) + role_frame(is_client, 0x2, b"next")
    reader = framing.FrameReader(is_client)
    assert feed_buffered(reader, stream, chunk_size) == [payload, b"next"]
    assert reader.buffer_size == 0
    reader = framing.FrameReader(is_client)
    events = []
    for start in range(0, len(stream), chunk_size):
        events += reader.feed(stream[start : start + chunk_size])
    assert events == [payload, b"next"]
    assert reader.buffer_size == 0


@pytest.mark.parametrize("is_client", [False, True])
def test_a_large_frame_is_read_into_no_more_than_its_size(framing, is_client):
    payload = os.urandom(300000)
    frame = role_frame(is_client, 0x2, payload)
    reader = framing.FrameReader(is_client)
    assert reader.feed(frame[:1000]) == []
    assert reader.buffer_size <= len(frame)
    buffer = reader.get_buffer(-1)
    assert len(frame) - 1000 <= len(buffer) <= len(frame)
    with pytest.raises(ValueError):
        reader.buffer_updated(len(buffer) + 1)
    buffer[: len(frame) - 1000] = frame[1000:]
    assert reader.buffer_updated(len(frame) - 1000) == [payload]
    assert reader.buffer_size == 0


# -- the writer ----------------------------------------------------------------------


def test_control_frames_over_125_bytes_are_refused(framing):
    writer = framing.FrameWriter(is_client=False)
    with pytest.raises(ValueError):
        writer.encode(0x9, bytes(126))
    with pytest.raises(ValueError):
        writer.encode_header(0xA, 126)


def test_fragmented_control_frames_are_refused(framing):
    writer = framing.FrameWriter(is_client=True)
    with pytest.raises(ValueError):
        writer.encode(0x9, b"", fin=False)


@pytest.mark.parametrize("opcode", [3, 7, 0xB, 0xF, 16, -1])
def test_unknown_opcodes_are_refused(framing, opcode):
    with pytest.raises(ValueError):
        framing.FrameWriter(is_client=True).encode(opcode, b"")


def test_client_frames_get_fresh_keys(framing):
    writer = framing.FrameWriter(is_client=True)
    keys = {writer.encode(0x2, b"same")[2:6] for _ in range(300)}
    assert len(keys) > 250


def test_text_payload_is_utf8(framing):
    frame = framing.FrameWriter(is_client=False).encode(0x1, "€")
    assert frame == b"\x81\x03" + "€".encode()


def test_encode_close(framing):
    writer = framing.FrameWriter(is_client=False)
    assert writer.encode_close() == b"\x88\x02\x03\xe8"
    assert writer.encode_close(None) == b"\x88\x00"
    assert writer.encode_close(4001, "é") == b"\x88\x04\x0f\xa1" + "é".encode()
    assert writer.encode_close(1000, "x" * 123)[1] == 125


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_encode_close_refuses_invalid_codes(framing, code):
    with pytest.raises(ValueError):
        framing.FrameWriter(is_client=False).encode_close(code)


def test_encode_close_refuses_long_reasons(framing):
    writer = framing.FrameWriter(is_client=False)
    with pytest.raises(ValueError):
        writer.encode_close(1000, "x" * 124)
    with pytest.raises(ValueError):
        writer.encode_close(1000, "€" * 42)
    with pytest.raises(ValueError):
        writer.encode_close(None, "reason without a code")


@pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536, 1 << 40])
def test_encode_header(framing, length):
    writer = framing.FrameWriter(is_client=False)
    header = writer.encode_header(0x2, length)
    assert header == build_frame(0x2, b"", length=length)
    assert writer.encode_header(0x1, 3, fin=False) + b"abc" == writer.encode(0x1, b"abc", fin=False)


def test_encode_header_is_only_for_servers(framing):
    with pytest.raises(ValueError):
        framing.FrameWriter(is_client=True).encode_header(0x2, 10)


def test_encode_header_refuses_impossible_lengths(framing):
    writer = framing.FrameWriter(is_client=False)
    with pytest.raises(ValueError):
        writer.encode_header(0x2, -1)
    with pytest.raises(ValueError):
        writer.encode_header(0x2, 1 << 63)


@pytest.mark.parametrize("is_client", [False, True])
@pytest.mark.parametrize("length", [0, 5, 125, 126, 65535, 65536, 300000])
def test_encode_into_writes_the_frame_encode_would(framing, is_client, length):
    writer = framing.FrameWriter(is_client)
    payload = os.urandom(length)
    buffer = bytearray(length + 20)
    buffer[-6:] = b"intact"
    size = writer.encode_into(buffer, 0x2, payload, fin=False)
    assert size == len(writer.encode(0x2, payload, fin=False))
    assert buffer[-6:] == b"intact"
    # Fed to a reader of the other side, the frame is the payload, unmasked.
    reader = framing.FrameReader(not is_client)
    assert reader.feed(bytes(buffer[:size])) == []
    assert reader.feed(build_frame(0x0, b"", mask=b"abcd" if is_client else None)) == [payload]


def test_encode_into_reuses_one_buffer_with_fresh_keys(framing):
    writer = framing.FrameWriter(is_client=True)
    buffer = bytearray(100)
    keys = set()
    for _ in range(300):
        size = writer.encode_into(buffer, 0x2, b"same")
        keys.add(bytes(buffer[2:6]))
    assert size == 10
    assert len(keys) > 250


def test_encode_into_refuses_a_small_read_only_or_text_argument(framing):
    writer = framing.FrameWriter(is_client=True)
    with pytest.raises(ValueError):
        writer.encode_into(bytearray(13), 0x2, b"12345678")
    with pytest.raises(TypeError):
        writer.encode_into(bytes(100), 0x2, b"payload")
    with pytest.raises(TypeError):
        writer.encode_into(bytearray(100), 0x1, "text")
    with pytest.raises(ValueError):
        writer.encode_into(bytearray(200), 0x9, bytes(126))


def test_buffer_exported_tells_whether_a_view_of_a_bytearray_exists(framing):
    exported = framing.buffer_exported
    if framing.__name__ == "anynet._framing":
        # Python code cannot tell, so this backend reuses no buffer.
        assert exported is None
        return
    buffer = bytearray(10)
    assert not exported(buffer)
    view = memoryview(buffer)[2:5]
    assert exported(buffer)
    view.release()
    assert not exported(buffer)
    with pytest.raises(TypeError):
        exported(b"bytes")


# -- masking -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 1023, 1024, 1025, 65537])
def test_apply_mask_matches_the_definition(framing, length):
    data = os.urandom(length)
    mask = os.urandom(4)
    masked = framing.apply_mask(data, mask)
    assert masked == reference_mask(data, mask)
    assert framing.apply_mask(masked, mask) == data
    assert framing.apply_mask(bytearray(data), memoryview(mask)) == masked


def test_apply_mask_of_an_unaligned_view(framing):
    data = os.urandom(1000)
    assert framing.apply_mask(memoryview(data)[3:], MASK) == reference_mask(data[3:], MASK)


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde"])
def test_apply_mask_refuses_wrong_keys(framing, mask):
    with pytest.raises(ValueError):
        framing.apply_mask(b"data", mask)


# -- UTF-8 ---------------------------------------------------------------------------

VALID_UTF8 = [
    b"",
    b"plain ascii",
    "é€𝄞".encode(),
    b"\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
    b"a" * 100 + "€".encode() + b"b" * 100,
]
INVALID_UTF8 = [
    b"\x80",  # lone continuation byte
    b"\xc0\xaf",  # overlong
    b"\xc1\xbf",  # overlong
    b"\xe0\x9f\xbf",  # overlong
    b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xed\xa0\x80",  # surrogate
    b"\xed\xbf\xbf",  # surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xc3",  # truncated
    b"\xe2\x82",  # truncated
    b"\xf0\x9d\x84",  # truncated
    b"a" * 40 + b"\xc3(" + b"b" * 40,
    b"a" * 17 + b"\x80",
]


@pytest.mark.parametrize("data", VALID_UTF8)
def test_valid_utf8(framing, data):
    assert framing.validate_utf8(data)
    assert framing.validate_utf8(memoryview(data))


@pytest.mark.parametrize("data", INVALID_UTF8)
def test_invalid_utf8(framing, data):
    assert not framing.validate_utf8(data)


@pytest.mark.parametrize("data", VALID_UTF8 + INVALID_UTF8)
def test_incremental_validation_agrees_at_every_split(framing, data):
    expected = framing.validate_utf8(data)
    validator = framing.Utf8Validator()
    for split in range(len(data) + 1):
        validator.reset()
        first = validator.feed(data[:split])
        second = validator.feed(data[split:])
        assert validator.finish() == expected
        if expected:
            assert first and second


@pytest.mark.parametrize(
    "prefix, can_continue",
    [
        (b"\xe2\x82", True),
        (b"\xf0\x90", True),
        (b"\xed\x9f", True),
        (b"\xed\xa0", False),  # a surrogate, whatever follows
        (b"\xe0\x80", False),  # overlong, whatever follows
        (b"\xf0\x80", False),
        (b"\xf4\x90", False),  # above U+10FFFF
        (b"\xf5", False),
        (b"\xc1", False),
    ],
)
def test_incremental_validation_fails_fast(framing, prefix, can_continue):
    validator = framing.Utf8Validator()
    assert validator.feed(prefix) == can_continue
    assert not validator.finish()


def test_validator_failure_sticks_until_reset(framing):
    validator = framing.Utf8Validator()
    assert not validator.feed(b"\xff")
    assert not validator.feed(b"fine")
    assert not validator.finish()
    validator.reset()
    assert validator.feed(b"fine") and validator.finish()
    assert validator.feed(b"\xe2\x82")
    assert not validator.finish()
    assert not validator.feed(b"\xac")  # a failed finish() sticks too


# -- the backend choice --------------------------------------------------------------


def test_backend_is_compiled_unless_disabled():
    from anynet import _backend

    disabled = os.environ.get("ANYNET_NO_EXTENSIONS", "") not in ("", "0")
    assert _backend.BACKEND == ("python" if disabled else "compiled")


def test_the_pure_python_build_runs_without_cython():
    # Cython builds the extension; the interpreted framing must not need it.
    script = (
        "import sys; sys.modules['cython'] = None\n"
        "from anynet import _framing\n"
        "frame = _framing.FrameWriter(is_client=True).encode(0x1, 'caf\\u00e9')\n"
        "print(_framing.cython.__name__, _framing.FrameReader(is_client=False).feed(frame))\n"
    )
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["anynet._cython_shim", "['café']"]


def test_disabling_extensions_selects_pure_python():
    environment = dict(os.environ, ANYNET_NO_EXTENSIONS="1")
    output = subprocess.run(
        [sys.executable, "-c", "from anynet import _backend; print(_backend.BACKEND)"],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert output.strip() == "python"
