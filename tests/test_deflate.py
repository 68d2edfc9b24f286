"""The permessage-deflate codec (RFC 7692 section 7.2), on both builds of its one source."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anynet import _deflate as interpreted
from anynet._events import ProtocolError

fixture_settings = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

GAME_STATE = json.dumps(
    {"tick": 1, "players": [{"id": i, "x": i * 1.5, "y": i * 2.25, "hp": 100, "name": f"player{i}"} for i in range(16)]}
)


def inflate(deflate, payload: bytes, text: bool = False, limit: int | None = None, bits: int = 15):
    return deflate.Inflater(bits, True, limit).decompress(payload, text)


# ----------------------------------------------------------------------
# RFC 7692 section 7.2.3: the examples


def test_a_message_compressed_alone(deflate) -> None:
    assert deflate.Deflater(15, True, level=6).compress(b"Hello") == bytes.fromhex("f248cdc9c90700")
    assert inflate(deflate, bytes.fromhex("f248cdc9c90700"), text=True) == "Hello"


def test_context_takeover_shortens_the_second_message(deflate) -> None:
    deflater = deflate.Deflater(15, False, level=6)
    inflater = deflate.Inflater(15, False, None)
    first, second = deflater.compress(b"Hello"), deflater.compress(b"Hello")
    assert (first, second) == (bytes.fromhex("f248cdc9c90700"), bytes.fromhex("f200110000"))
    assert inflater.decompress(first, False) == inflater.decompress(second, False) == b"Hello"


def test_no_context_takeover_compresses_each_message_alone(deflate) -> None:
    deflater = deflate.Deflater(15, True, level=6)
    assert deflater.compress(b"Hello") == deflater.compress(b"Hello") == bytes.fromhex("f248cdc9c90700")


@pytest.mark.parametrize(
    "payload",
    [
        "0005 00faff 48656c6c6f 00",  # a stored block (7.2.3.3)
        "f348cdc9c9070000",  # a block with BFINAL set (7.2.3.4)
        "f2480500 0000ffff cac9c90700",  # two blocks in one message (7.2.3.5)
    ],
)
def test_other_encodings_a_peer_may_send(deflate, payload: str) -> None:
    assert inflate(deflate, bytes.fromhex(payload.replace(" ", "")), text=True) == "Hello"


def test_a_final_block_starts_the_next_message_afresh(deflate) -> None:
    inflater = deflate.Inflater(15, False, None)
    assert inflater.decompress(bytes.fromhex("f348cdc9c9070000"), True) == "Hello"
    assert inflater.decompress(bytes.fromhex("f248cdc9c90700"), True) == "Hello"


def test_an_empty_message(deflate) -> None:
    for takeover in (False, True):
        deflater = deflate.Deflater(15, not takeover)
        inflater = deflate.Inflater(15, not takeover, 10)
        for data in (b"", b"x", b"", b""):
            payload = deflater.compress(data)
            assert inflater.decompress(payload, False) == data
        assert deflater.compress(b"") == b"\x00"


# ----------------------------------------------------------------------
# Round trips and the two builds compared


@pytest.mark.parametrize("bits", [8, 9, 10, 12, 15])
@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_round_trip(deflate, bits: int, no_context_takeover: bool) -> None:
    deflater = deflate.Deflater(bits, no_context_takeover)
    inflater = deflate.Inflater(bits, no_context_takeover, 1 << 20)
    messages = [GAME_STATE, GAME_STATE.replace("100", "99"), os.urandom(3000), GAME_STATE * 40, "", "é" * 1000]
    for message in messages * 2:
        payload = deflater.compress(message)
        assert inflater.decompress(payload, isinstance(message, str)) == message


def test_a_window_of_8_bits_is_sent_with_9_and_read_with_8(deflate) -> None:
    # zlib cannot deflate raw streams with a 256-byte window; with 512 bytes
    # it never refers back more than 250 bytes, so an 8-bit peer follows.
    data = (bytes(range(100)) * 2 + os.urandom(40)) * 50
    payload = deflate.Deflater(8, False).compress(data)
    assert len(payload) < len(data) // 2
    assert zlib.decompressobj(-8).decompress(payload + b"\x00\x00\xff\xff") == data
    assert inflate(deflate, payload, bits=8) == data


@fixture_settings
@given(
    messages=st.lists(st.binary(max_size=3000) | st.sampled_from([GAME_STATE.encode(), b"a" * 5000]), max_size=6),
    bits=st.integers(8, 15),
    no_context_takeover=st.booleans(),
    level=st.sampled_from([-1, 0, 1, 6, 9]),
)
def test_both_builds_compress_to_the_same_bytes(deflate, messages, bits, no_context_takeover, level) -> None:
    ours = deflate.Deflater(bits, no_context_takeover, level)
    reference = interpreted.Deflater(bits, no_context_takeover, level)
    inflater = deflate.Inflater(bits, no_context_takeover, None)
    for message in messages:
        payload = ours.compress(message)
        assert payload == reference.compress(message)
        assert inflater.decompress(payload, False) == message


@fixture_settings
@given(payload=st.binary(max_size=200), text=st.booleans(), limit=st.sampled_from([None, 1, 100, 1000]))
def test_both_builds_judge_any_payload_alike(deflate, payload: bytes, text: bool, limit) -> None:
    def outcome(module):
        try:
            return module.Inflater(15, True, limit).decompress(payload, text)
        except ProtocolError as error:
            return error

    assert outcome(deflate) == outcome(interpreted)


# ----------------------------------------------------------------------
# Bad input from the peer


def test_invalid_compressed_data_is_1007(deflate) -> None:
    with pytest.raises(ProtocolError) as raised:
        inflate(deflate, b"\xff\xff\xff")
    assert (raised.value.code, raised.value.reason) == (1007, "invalid compressed data")


def test_invalid_utf8_after_inflating_is_1007(deflate) -> None:
    payload = interpreted.Deflater(15, True).compress(b"ok \xed\xa0\x80")
    with pytest.raises(ProtocolError) as raised:
        inflate(deflate, payload, text=True)
    assert (raised.value.code, raised.value.reason) == (1007, "invalid UTF-8 in a text message")
    assert inflate(deflate, payload) == b"ok \xed\xa0\x80"


def test_the_limit_applies_to_the_inflated_size(deflate) -> None:
    payload = interpreted.Deflater(15, True).compress(b"a" * 1000)
    assert len(payload) < 20
    assert inflate(deflate, payload, limit=1000) == b"a" * 1000
    with pytest.raises(ProtocolError) as raised:
        inflate(deflate, payload, limit=999)
    assert (raised.value.code, raised.value.reason) == (1009, "message too big")


def test_a_failed_message_leaves_other_connections_alone(deflate) -> None:
    # Without context takeover the connections of a thread share a stream.
    good = interpreted.Deflater(15, True).compress(GAME_STATE)
    first, second = deflate.Inflater(15, True, 100), deflate.Inflater(15, True, None)
    for bad in (good, b"\xff\xff\xff"):
        with pytest.raises(ProtocolError):
            first.decompress(bad, True)
        assert second.decompress(good, True) == GAME_STATE


def test_connections_with_context_takeover_keep_their_own_windows(deflate) -> None:
    pairs = [(deflate.Deflater(15, False), deflate.Inflater(15, False, None)) for _ in range(3)]
    for round_ in range(3):
        for index, (deflater, inflater) in enumerate(pairs):
            message = f"{index} {round_} {GAME_STATE}"
            assert inflater.decompress(deflater.compress(message), True) == message


BOMB_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, zlib
    sys.path.insert(0, sys.argv[1])
    import importlib
    module = importlib.import_module(sys.argv[2])
    # 1 GiB of zeros in about 1 MiB: the blocks that deflate 1 MiB of zeros,
    # sync-flushed, refer to nothing before them, so 1024 copies in a row
    # are a valid stream.
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    payload = (piece * 1024)[:-4]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    inflater = module.Inflater(15, True, 16 << 20)
    try:
        inflater.decompress(payload, False)
    except Exception as error:
        outcome = repr(error)
    else:
        outcome = "inflated"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert zlib.decompressobj(-15).decompress(piece * 3) == bytes(3 << 20)
    print(json.dumps([len(payload), outcome, (after - before) // 1024]))
    """
)


def test_a_bomb_costs_no_more_memory_than_the_limit(deflate) -> None:
    # The folder of the package under test: the installed one where it is
    # installed, whose compiled module a checkout does not have.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(deflate.__file__)))
    result = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, package_parent, deflate.__name__],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    size, outcome, grown_mib = json.loads(result.stdout)
    assert size < 1100 * 1024
    assert outcome == "ProtocolError(1009, 'message too big')"
    # A 16 MiB limit: the peak grows by about that, never towards 1 GiB.
    assert grown_mib < 48

def test_arguments_are_checked(deflate) -> None:
    with pytest.raises(ValueError, match="window_bits"):
        deflate.Deflater(16, True)
    with pytest.raises(ValueError, match="window_bits"):
        deflate.Inflater(7, True, None)
    with pytest.raises(ValueError, match="level"):
        deflate.Deflater(15, True, 10)
    with pytest.raises(ValueError, match="mem_level"):
        deflate.Deflater(15, True, 1, 10)


def test_mem_level_follows_small_windows() -> None:
    assert [interpreted.mem_level_for(bits) for bits in range(8, 16)] == [1, 2, 3, 4, 5, 5, 5, 5]


def test_the_codec_is_zlib_ng_where_it_is_a_dependency(deflate) -> None:
    # pyproject.toml leaves it out only on Windows on ARM before 3.11, which
    # has no wheels of it; a missing install must not pass for that.
    has_wheels = not (sys.platform == "win32" and platform.machine() == "ARM64" and sys.version_info < (3, 11))
    assert deflate.zlib.__name__ == ("zlib_ng.zlib_ng" if has_wheels else "zlib")
