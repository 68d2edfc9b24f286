"""permessage-deflate (RFC 7692 section 7.2): compressing and inflating messages.

One source, two builds. Compiled by Cython (as ``anynet._deflate_c``, with
``_deflate_c.pxd`` giving it C types), it calls zlib's C API through the
kernel in ``src/deflate.c`` and works in buffers it reuses; interpreted, it
runs on Python's ``zlib`` module. Both produce the same bytes and the same
errors: ``cython.compiled`` branches only where the compiled build calls C.

A ``Deflater`` compresses the messages we send, an ``Inflater`` inflates the
messages the peer sends, each for the window size and context takeover that
the handshake agreed on (``anynet._deflate_negotiation``).

Memory is what an idle connection must not hold. Without context takeover
a connection keeps no zlib state at all: the compiled build borrows one
stream per thread and parameter set, reset after every message; the
interpreted build makes a zlib object per message. With context takeover
the stream lives as long as the connection, set up on first use and sized
by the agreed window, with a hash table no larger than it pays for (see
``mem_level_for``; zlib's deflate needs ``2**(window_bits + 2) +
2**(mem_level + 9)`` bytes, its inflate about ``2**window_bits + 7 KiB``).

An inflated message is bounded by ``max_size`` while it is inflated, in
chunks that never grow past the limit: a small message that would inflate
to gigabytes costs at most ``max_size + 1`` bytes before it is refused with
close code 1009.
"""

from __future__ import annotations

import threading
import zlib
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

from anynet._events import CLOSE_INVALID_DATA, CLOSE_MESSAGE_TOO_BIG, ProtocolError

if TYPE_CHECKING:
    from anynet import _cython_shim as cython
else:
    try:
        import cython
    except ImportError:  # Cython builds the extension; running never needs it.
        from anynet import _cython_shim as cython

Buffer = Union[bytes, bytearray, memoryview]

#: The DEFLATE level: 1 is zlib's fastest. 1 KiB JSON game states compress
#: to 34 % at 1 and 30 % at 6, for half the instructions (docs/websocket.md).
DEFAULT_LEVEL = 1
#: The tail a sync flush ends with, removed before sending and restored
#: before inflating (RFC 7692 section 7.2.1).
_TAIL = b"\x00\x00\xff\xff"
#: Output buffers kept between messages up to this size (per thread).
_KEPT_OUTPUT = 256 * 1024
#: The unbounded message size, in the compiled build's size_t.
_NO_LIMIT = (1 << 64) - 1


def mem_level_for(window_bits: int) -> int:
    """zlib's memLevel for a window: 5 (a hash table of 4096 entries), less
    for windows under 4 KiB. Measured on 1 KiB JSON game states and 64 KiB
    text at level 1, 5 compresses within 1 % of zlib's default 8, halves
    deflate's memory (144 KiB instead of 256 KiB with a 32 KiB window) and
    a third of the cost of resetting a stream between messages."""
    return max(1, min(5, window_bits - 7))


def _deflate_bits(window_bits: int) -> int:
    # zlib refuses a 256-byte window for raw DEFLATE; a 512-byte one never
    # looks back more than 250 bytes, which a peer that asked for 8 bits
    # can follow.
    return max(window_bits, 9)


class _ThreadState:
    """What the compiled build shares between the connections of one thread:
    the output buffer and the streams of connections without context
    takeover (used for one message at a time and reset after it)."""

    def __init__(self) -> None:
        self.streams: Dict[Tuple[int, int, int], Any] = {}
        if cython.compiled:
            memset(cython.address(self.output), 0, cython.sizeof(anynet_output))

    def __dealloc__(self) -> None:
        if cython.compiled:
            anynet_output_trim(cython.address(self.output), 0)


class _Stream:
    """One zlib stream of the compiled build, set up on first use."""

    def __init__(self, inflating: bool) -> None:
        self.inflating = inflating
        if cython.compiled:
            self.stream = cython.cast(cython.pointer(anynet_zstream), PyMem_Malloc(cython.sizeof(anynet_zstream)))
            if self.stream == cython.NULL:
                raise MemoryError()
            self.stream.ready = 0

    def end(self) -> None:
        """Free the zlib state; it is set up again if used again."""
        if cython.compiled:
            if self.stream != cython.NULL:
                if self.inflating:
                    anynet_inflate_end(self.stream)
                else:
                    anynet_deflate_end(self.stream)

    def __dealloc__(self) -> None:
        if cython.compiled:
            self.end()
            PyMem_Free(self.stream)


_local = threading.local()


def _thread_state() -> _ThreadState:
    state: Optional[_ThreadState] = getattr(_local, "state", None)
    if state is None:
        state = _local.state = _ThreadState()
    return state


def _shared_stream(state: _ThreadState, key: Tuple[int, int, int]) -> _Stream:
    stream: Optional[_Stream] = state.streams.get(key)
    if stream is None:
        stream = state.streams[key] = _Stream(key[0] == 0)
    return stream


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
        self._zobj: Optional[zlib._Compress] = None
        self._stream: Optional[_Stream] = None

    def compress(self, data: Union[Buffer, str]) -> bytes:
        """The compressed payload of one message (``str`` is sent as UTF-8)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if cython.compiled:
            state = _thread_state()
            stream = self._borrow(state)
            PyObject_GetBuffer(data, cython.address(view), PyBUF_SIMPLE)
            try:
                status = anynet_deflate_message(
                    stream.stream,
                    self.level,
                    self.window_bits,
                    self.mem_level,
                    self.no_context_takeover,
                    cython.cast(cython.p_uchar, view.buf),
                    view.len,
                    cython.address(state.output),
                )
            finally:
                PyBuffer_Release(cython.address(view))
            if status != 0:
                raise MemoryError()
            compressed = PyBytes_FromStringAndSize(cython.cast(cython.p_char, state.output.data), state.output.size)
            anynet_output_trim(cython.address(state.output), _KEPT_OUTPUT)
            return compressed
        zobj = self._zobj
        if zobj is None:
            zobj = zlib.compressobj(self.level, zlib.DEFLATED, -_deflate_bits(self.window_bits), self.mem_level)
            if not self.no_context_takeover:
                self._zobj = zobj
        compressed = zobj.compress(data) + zobj.flush(zlib.Z_SYNC_FLUSH)
        return compressed[:-4]

    def _borrow(self, state: _ThreadState) -> _Stream:
        if self._stream is not None:
            return self._stream
        if self.no_context_takeover:
            stream = _shared_stream(state, (1, self.window_bits, self.level * 16 + self.mem_level))
        else:
            stream = _Stream(False)
        # A shared stream is remembered too: holding a reference costs the
        # connection nothing, the state belongs to the thread.
        self._stream = stream
        return stream

    def close(self) -> None:
        """Free a context-takeover stream (the connection is closing)."""
        self._zobj = None
        if self._stream is not None and not self.no_context_takeover:
            self._stream.end()
        self._stream = None


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
        self._zobj: Optional[zlib._Decompress] = None
        self._stream: Optional[_Stream] = None

    def decompress(self, data: Buffer, text: bool) -> Union[bytes, str]:
        """The inflated message, as ``str`` if ``text``; ``ProtocolError``
        (1009) if it exceeds ``max_size``, (1007) if it is not valid DEFLATE
        data or, for text, not valid UTF-8."""
        if cython.compiled:
            state = _thread_state()
            stream = self._borrow(state)
            limit = _NO_LIMIT if self.max_size is None else self.max_size
            PyObject_GetBuffer(data, cython.address(view), PyBUF_SIMPLE)
            try:
                status = anynet_inflate_message(
                    stream.stream,
                    self.window_bits,
                    self.no_context_takeover,
                    cython.cast(cython.p_uchar, view.buf),
                    view.len,
                    limit,
                    cython.address(state.output),
                )
            finally:
                PyBuffer_Release(cython.address(view))
            try:
                if status == ANYNET_ZLIB_TOO_BIG:
                    raise ProtocolError(CLOSE_MESSAGE_TOO_BIG, "message too big")
                if status == ANYNET_ZLIB_BAD_DATA:
                    raise ProtocolError(CLOSE_INVALID_DATA, "invalid compressed data")
                if status == ANYNET_ZLIB_NO_MEMORY:
                    raise MemoryError()
                output = cython.cast(cython.p_char, state.output.data)
                if not text:
                    return PyBytes_FromStringAndSize(output, state.output.size)
                try:
                    return PyUnicode_DecodeUTF8(output, state.output.size, cython.NULL)
                except UnicodeDecodeError:
                    raise ProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None
            finally:
                anynet_output_trim(cython.address(state.output), _KEPT_OUTPUT)
        limit = self.max_size
        zobj = self._zobj
        if zobj is None:
            zobj = zlib.decompressobj(-self.window_bits)
            if not self.no_context_takeover:
                self._zobj = zobj
        try:
            # max_length keeps the output within the limit, plus one byte to
            # see it pass. The tail goes in as a second piece of input, as in
            # the compiled build, so both meet a broken stream at the same point.
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
            self._zobj = None
        if not text:
            return inflated
        try:
            return inflated.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message") from None

    def _borrow(self, state: _ThreadState) -> _Stream:
        if self._stream is not None:
            return self._stream
        if self.no_context_takeover:
            stream = _shared_stream(state, (0, self.window_bits, 0))
        else:
            stream = _Stream(True)
        self._stream = stream
        return stream

    def close(self) -> None:
        """Free a context-takeover stream (the connection is closing)."""
        self._zobj = None
        if self._stream is not None and not self.no_context_takeover:
            self._stream.end()
        self._stream = None
