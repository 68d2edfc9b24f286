"""permessage-deflate (RFC 7692 section 7.2): compressing and inflating messages.

The codec is zlib-ng (the ``zlib-ng`` package, a dependency wherever it has
wheels), whose API is the standard library's ``zlib``: where it cannot be
installed the same code runs on ``zlib``. Measured on 1 KiB JSON game states
and 64 KiB text at level 1, zlib-ng compresses and inflates a message in
40 to 50 % of zlib's instructions, and produces valid DEFLATE that any peer
inflates. One source serves both builds (compiled by Cython as
``anynet._deflate_c``, with ``_deflate_c.pxd`` giving it C types).

A ``Deflater`` compresses the messages we send, an ``Inflater`` inflates the
messages the peer sends, each for the window size and context takeover that
the handshake agreed on (``anynet._deflate_negotiation``).

Memory is what an idle connection must not hold. Without context takeover
a connection keeps no zlib state at all: its messages are compressed by one
stream per thread and parameter set, emptied after every message by a full
flush, and inflated by a stream made for the message. With context takeover
the streams live as long as the connection, set up on first use: zlib-ng's
deflate takes about 270 KiB with a 32 KiB window (a fixed 128 KiB hash
table, whatever the memory level), its inflate about 41 KiB.

An inflated message is bounded by ``max_size`` while it is inflated: a small
message that would inflate to gigabytes costs at most ``max_size + 1`` bytes
before it is refused with close code 1009.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Dict, Optional, Tuple, Union

from anynet._events import CLOSE_INVALID_DATA, CLOSE_MESSAGE_TOO_BIG, ProtocolError

if TYPE_CHECKING:
    import zlib
else:
    try:
        from zlib_ng import zlib_ng as zlib
    except ImportError:  # a platform without its wheels (pyproject.toml)
        import zlib

Buffer = Union[bytes, bytearray, memoryview]

#: The DEFLATE level: 1 is the fastest, and the only one of zlib-ng's well
#: ahead of zlib's level 1 (2.6 times on 1 KiB JSON game states), for
#: larger output: the game states compress to 44 % at 1, 34 % at 2 and
#: 30 % at 6 without context takeover (docs/websocket.md).
DEFAULT_LEVEL = 1
#: The tail a sync flush ends with, removed before sending and restored
#: before inflating (RFC 7692 section 7.2.1).
_TAIL = b"\x00\x00\xff\xff"


def mem_level_for(window_bits: int) -> int:
    """zlib's memLevel for a window: 5, less for windows under 4 KiB. On
    zlib, measured on 1 KiB JSON game states and 64 KiB text at level 1, 5
    compresses within 1 % of the default 8 and halves deflate's memory;
    zlib-ng sizes only its output buffer by it (70 KiB less than at 8)."""
    return max(1, min(5, window_bits - 7))


def _deflate_bits(window_bits: int) -> int:
    # zlib refuses a 256-byte window for raw DEFLATE; a 512-byte one never
    # looks back more than 250 bytes, which a peer that asked for 8 bits
    # can follow.
    return max(window_bits, 9)


def _without_tail(compressed: bytes, flushed: bytes) -> bytes:
    # The flush writes the whole tail. Cutting it off the flushed piece
    # before joining copies a message once, not twice (and not at all when
    # the compressor kept everything for the flush, as for small messages).
    return compressed + flushed[:-4]


_local = threading.local()


def _shared_compressor(window_bits: int, level: int, mem_level: int) -> zlib._Compress:
    """The thread's compressor for messages without context takeover."""
    compressors: Optional[Dict[Tuple[int, int, int], zlib._Compress]] = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    key = (window_bits, level, mem_level)
    compressor = compressors.get(key)
    if compressor is None:
        compressor = compressors[key] = zlib.compressobj(level, zlib.DEFLATED, -_deflate_bits(window_bits), mem_level)
    return compressor


def _forget_shared_compressor(window_bits: int, level: int, mem_level: int) -> None:
    """Drop a shared compressor whose message failed half-way."""
    compressors: Dict[Tuple[int, int, int], zlib._Compress] = _local.compressors
    compressors.pop((window_bits, level, mem_level), None)


class Deflater:
    """Compresses the messages of one direction of one connection.

    ``window_bits`` and ``no_context_takeover`` are the sending side's, as
    agreed; ``level`` is zlib's compression level, ``mem_level`` its memory
    level (matched to the window by default).
    """

    def __init__(
        self,
        window_bits: int,
        no_context_takeover: bool,
        level: int = DEFAULT_LEVEL,
        mem_level: Optional[int] = None,
    ) -> None:
        if not 8 <= window_bits <= 15:
            raise ValueError(f"window_bits must be from 8 to 15, not {window_bits}")
        if not -1 <= level <= 9:
            raise ValueError(f"level must be from -1 to 9, not {level}")
        self.window_bits = window_bits
        self.no_context_takeover = no_context_takeover
        self.level = level
        self.mem_level = mem_level_for(window_bits) if mem_level is None else mem_level
        if not 1 <= self.mem_level <= 9:
            raise ValueError(f"mem_level must be from 1 to 9, not {self.mem_level}")
        self._compressor: Optional[zlib._Compress] = None

    def compress(self, data: Union[Buffer, str]) -> bytes:
        """The compressed payload of one message (``str`` is sent as UTF-8)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not self.no_context_takeover:
            compressor = self._compressor
            if compressor is None:
                compressor = self._compressor = zlib.compressobj(
                    self.level, zlib.DEFLATED, -_deflate_bits(self.window_bits), self.mem_level
                )
            return _without_tail(compressor.compress(data), compressor.flush(zlib.Z_SYNC_FLUSH))
        # A full flush ends with the same tail as a sync flush and empties
        # the window, so the next message, whoever sends it, refers to
        # nothing before it: the stream can be the thread's.
        compressor = _shared_compressor(self.window_bits, self.level, self.mem_level)
        try:
            return _without_tail(compressor.compress(data), compressor.flush(zlib.Z_FULL_FLUSH))
        except BaseException:
            _forget_shared_compressor(self.window_bits, self.level, self.mem_level)
            raise

    def close(self) -> None:
        """Free a context-takeover stream (the connection is closing)."""
        self._compressor = None


class Inflater:
    """Inflates the messages of the peer of one connection.

    ``window_bits`` and ``no_context_takeover`` are the peer's, as agreed;
    ``max_size`` bounds each inflated message (None: no bound).
    """

    def __init__(self, window_bits: int, no_context_takeover: bool, max_size: Optional[int]) -> None:
        if not 8 <= window_bits <= 15:
            raise ValueError(f"window_bits must be from 8 to 15, not {window_bits}")
        self.window_bits = window_bits
        self.no_context_takeover = no_context_takeover
        self.max_size = max_size
        self._decompressor: Optional[zlib._Decompress] = None

    def decompress(self, data: Buffer, text: bool) -> Union[bytes, str]:
        """The inflated message, as ``str`` if ``text``; ``ProtocolError``
        (1009) if it exceeds ``max_size``, (1007) if it is not valid DEFLATE
        data or, for text, not valid UTF-8."""
        limit = self.max_size
        zobj = self._decompressor
        if zobj is None:
            # Without context takeover a stream per message: one shared by
            # the thread would keep another connection's last message in
            # its window, for a hostile peer to refer to.
            zobj = zlib.decompressobj(-self.window_bits)
            if not self.no_context_takeover:
                self._decompressor = zobj
        try:
            # max_length keeps the output within the limit, plus one byte to
            # see it pass.
            inflated = zobj.decompress(data, 0 if limit is None else limit + 1)
            if limit is not None and len(inflated) > limit:
                raise ProtocolError(CLOSE_MESSAGE_TOO_BIG, "message too big")
            if not zobj.eof:
                inflated += zobj.decompress(_TAIL, 0 if limit is None else limit + 1 - len(inflated))
        except zlib.error:
            raise ProtocolError(CLOSE_INVALID_DATA, "invalid compressed data") from None
        if limit is not None and len(inflated) > limit:
            raise ProtocolError(CLOSE_MESSAGE_TOO_BIG, "message too big")
        if zobj.eof:
            # A final block (section 7.2.3.4) ends the stream: the next
            # message starts a new one.
            self._decompressor = None
        if not text:
            return inflated
        try:
            return inflated.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None

    def close(self) -> None:
        """Free a context-takeover stream (the connection is closing)."""
        self._decompressor = None
