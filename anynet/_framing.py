"""WebSocket framing (RFC 6455 section 5): one source for both builds.

When the extension is built, Cython compiles this very file into
``anynet._framing_c``, with the C types declared in ``_framing_c.pxd``;
otherwise it runs as it is (``anynet._backend`` chooses). Every protocol
rule, limit and error message is written here once, and the differential
tests feed both builds the same bytes.

The builds differ only in how bytes are moved: in the small helpers below
that branch on ``cython.compiled``, and where the bytes of a caller's object
are taken (a Py_buffer, or a memoryview). A "memory" argument is a C pointer
in the compiled build and a bytes-like object (bytes, bytearray, or a
memoryview of single bytes) in the interpreted one, always addressed by
offsets. The compiled build masks and validates UTF-8 with the C kernels of
``src/``, keeps its buffers in PyMem blocks, unmasks a payload while copying
it into its final ``bytes``/``str`` (ASCII text is built without decoding),
and releases the GIL for multi-megabyte masking and validation.

The reader is sans-I/O: bytes in, events out (see ``anynet._events``). It
consumes every complete frame of each chunk in one call and keeps only an
incomplete tail, in a buffer it owns that is dropped again as soon as
nothing is left unparsed; the rest of a large binary frame is read straight
into its message. The module keeps no mutable state: each client writer has
its own pool of random masking keys, so it is safe under free threading as
long as each reader and writer is used by one thread at a time.
"""

from __future__ import annotations

import codecs
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Union

if TYPE_CHECKING:
    from anynet import _cython_shim as cython
else:
    try:
        import cython
    except ImportError:  # Cython builds the extension; running never needs it.
        from anynet import _cython_shim as cython

from anynet._events import (
    MAX_CLOSE_REASON,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Close,
    Ping,
    Pong,
    ProtocolError,
)
from anynet._ws_options import DEFAULT_MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    from anynet._deflate import Inflater

    Memory = Any  # a C pointer when compiled, a bytes-like object otherwise

__all__ = ["FrameReader", "FrameWriter", "Utf8Validator", "apply_mask", "validate_utf8"]

Buffer = Union[bytes, bytearray, memoryview]
Event = Union[bytes, str, Ping, Pong, Close, ProtocolError]

#: Size of a receive buffer allocated for an ordinary read: room for a 64 KiB
#: frame and what follows it, and below the 128 KiB from which glibc's malloc
#: maps every block afresh (the buffer is freed whenever it is drained).
READ_BUFFER_SIZE = 120 * 1024
#: get_buffer() never offers less free space than this.
MIN_READ_SIZE = 4 * 1024
#: A frame up to this size (that passed the size limit) gets its whole buffer
#: as soon as its header arrives; a larger one grows the buffer at most
#: geometrically with the bytes that actually arrive, so a header alone
#: cannot make the reader reserve more than this.
MAX_PREALLOCATION = 16 * 1024 * 1024
#: A binary frame with at least this much payload still to come is read
#: straight into its message: one copy less than through the receive buffer,
#: which pays for the extra read that stops at the frame's end.
DIRECT_READ_MIN = 64 * 1024
#: Client masking keys are cut from a per-writer pool of random bytes, so that
#: the operating system is asked once per 128 frames rather than per frame.
MASK_POOL_SIZE = 512
#: Where the bytes that arrive after a failure, a Close or ``stop()`` are
#: read to be dropped: one block of this size shared by every reader, as
#: nothing reads it.
DISCARD_SIZE = 64 * 1024
#: Masking or validating this much takes about 0.1 ms: below it, holding the
#: GIL is cheaper than releasing and taking it back (compiled build).
NOGIL_THRESHOLD = 4 * 1024 * 1024
#: Frame lengths and message limits are unsigned 64-bit numbers.
UINT64_MAX = (1 << 64) - 1

_utf8_decode = codecs.utf_8_decode
_urandom = os.urandom

if not cython.compiled:
    # UTF-8 validator states, the numbers of src/utf8.h: ACCEPT between code
    # points, REJECT for good. The interpreted validator's other states carry
    # the bytes of an incomplete code point (see _validate).
    ANYNET_UTF8_ACCEPT = 0
    ANYNET_UTF8_REJECT = 6
    # What stands for no buffer where the compiled build has a NULL pointer:
    # an empty one (every buffer allocated holds at least one byte).
    NO_MEMORY = b""
    # bytes.translate tables XOR-ing every byte with a constant: for large
    # payloads four strided translations beat converting the payload to one
    # huge integer.
    _XOR_TABLES = [
        (int.from_bytes(bytes(range(256)), "big") ^ int.from_bytes(bytes((key,)) * 256, "big")).to_bytes(
            256, "big"
        )
        for key in range(256)
    ]
    _TRANSLATE_THRESHOLD = 1024

    def _mask(data: Buffer, mask: bytes) -> bytes:
        """``data`` XOR-ed with the 4-byte ``mask`` (interpreted build)."""
        length = len(data)
        if length < _TRANSLATE_THRESHOLD:
            if not length:
                return b""
            key = int.from_bytes((mask * ((length + 3) >> 2))[:length], "little")
            return (int.from_bytes(data, "little") ^ key).to_bytes(length, "little")
        result = bytearray(data)
        for offset in range(4):
            result[offset::4] = result[offset::4].translate(_XOR_TABLES[mask[offset]])
        return bytes(result)


def _is_valid_close_code(code: int) -> bool:
    """Close codes a peer may put in a Close frame (RFC 6455 7.4, IANA registry).

    1004 is reserved, 1005, 1006 and 1015 are only ever reported locally,
    1016-2999 are unassigned or reserved for future protocol revisions;
    3000-4999 belong to libraries and applications.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _as_bytes_view(data: Buffer) -> memoryview:
    return memoryview(data).cast("B")


# Moving bytes: the only code written for each build.


def _allocate(size: int) -> Memory:
    """An uninitialised block of ``size`` bytes."""
    if cython.compiled:
        memory = cython.cast(cython.p_uchar, PyMem_Malloc(size))
        if memory == cython.NULL:
            raise MemoryError()
        return memory
    else:
        return bytearray(size)


def _reallocate(memory: Memory, used: int, size: int) -> Memory:
    """``memory`` (or NULL) grown to ``size`` bytes, its first ``used`` kept."""
    if cython.compiled:
        larger = cython.cast(cython.p_uchar, PyMem_Realloc(memory, size))
        if larger == cython.NULL:
            raise MemoryError()
        return larger
    else:
        larger = bytearray(size)
        if used:
            larger[:used] = memory[:used]
        return larger


def _free(memory: Memory) -> None:
    """Give back a block from _allocate (the interpreted build leaves that to
    the garbage collector)."""
    if cython.compiled:
        PyMem_Free(memory)


def _new_bytes(size: int) -> Any:
    """A message or frame of ``size`` bytes to be filled in place: a bytes
    object when compiled, a bytearray (see _finished_bytes) otherwise."""
    if cython.compiled:
        return PyBytes_FromStringAndSize(cython.NULL, size)
    else:
        return bytearray(size)


def _bytes_memory(data: Any) -> Memory:
    """The memory of an object from _new_bytes, or of a bytes object."""
    if cython.compiled:
        return cython.cast(cython.p_uchar, PyBytes_AS_STRING(data))
    else:
        return data


def _finished_bytes(data: Any) -> bytes:
    """An object from _new_bytes, once filled."""
    if cython.compiled:
        return data  # type: ignore[no-any-return]
    else:
        return bytes(data)


def _view_memory(view: memoryview) -> Memory:
    """The memory of a memoryview of single bytes that its reader lends out."""
    if cython.compiled:
        return cython.cast(cython.p_uchar, PyMemoryView_GET_BUFFER(view).buf)
    else:
        return view


def _writable_view(memory: Memory, start: int, size: int) -> memoryview:
    """A writable memoryview of ``size`` bytes of ``memory`` from ``start``."""
    if cython.compiled:
        return PyMemoryView_FromMemory(cython.cast(cython.p_char, memory + start), size, PyBUF_WRITE)
    else:
        return memoryview(memory)[start : start + size]


def _copy(target: Memory, target_start: int, source: Memory, source_start: int, size: int) -> None:
    """Copy ``size`` bytes; nothing to do where they already are. The two
    ranges must not overlap otherwise."""
    if cython.compiled:
        if target + target_start != source + source_start:
            memcpy(target + target_start, source + source_start, size)
    else:
        if target is not source or target_start != source_start:
            target[target_start : target_start + size] = memoryview(source)[source_start : source_start + size]


def _move(memory: Memory, target_start: int, source_start: int, size: int) -> None:
    """Copy ``size`` bytes within one block; the ranges may overlap."""
    if cython.compiled:
        memmove(memory + target_start, memory + source_start, size)
    else:
        memory[target_start : target_start + size] = memory[source_start : source_start + size]


def _unmask(
    target: Memory, target_start: int, source: Memory, source_start: int, size: int,
    key: Memory, key_start: int, offset: int, check_ascii: bool = False,
) -> bool:
    """Write ``size`` unmasked bytes from ``source`` to ``target`` (which may
    be the same place): the payload bytes from ``offset`` on of a frame whose
    4-byte key is at ``key[key_start:]``. With ``check_ascii``, return whether
    every byte written is known to be ASCII (the interpreted build does not
    look, and says False)."""
    if cython.compiled:
        rotated = cython.declare(cython.uchar[4])
        for i in range(4):
            rotated[i] = key[key_start + ((offset + i) & 3)]
        if check_ascii:
            return anynet_mask_ascii(source + source_start, target + target_start, size, rotated) != 0
        anynet_mask(source + source_start, target + target_start, size, rotated)
        return False
    else:
        phase = key_start + (offset & 3)
        rotated_key = bytes(key[phase : key_start + 4]) + bytes(key[key_start:phase])
        target[target_start : target_start + size] = _mask(
            memoryview(source)[source_start : source_start + size], rotated_key
        )
        return False


def _payload(data: Memory, start: int, size: int, key: int) -> bytes:
    """``size`` bytes of ``data`` from ``start`` as bytes, unmasked on the
    way with the key at ``data[key:]`` unless ``key`` is negative."""
    if cython.compiled:
        result = PyBytes_FromStringAndSize(cython.NULL, size)
        if size:
            if key >= 0:
                anynet_mask(data + start, cython.cast(cython.p_uchar, PyBytes_AS_STRING(result)), size, data + key)
            else:
                memcpy(PyBytes_AS_STRING(result), data + start, size)
        return result  # type: ignore[no-any-return]
    else:
        payload = memoryview(data)[start : start + size]
        if key >= 0:
            return _mask(payload, bytes(data[key : key + 4]))
        return bytes(payload)


def _decode_utf8(data: Memory, start: int, size: int) -> Optional[str]:
    """``size`` bytes of ``data`` from ``start`` as text, or None when they
    are not valid UTF-8."""
    try:
        if cython.compiled:
            return PyUnicode_DecodeUTF8(cython.cast(cython.p_char, data + start), size, cython.NULL)
        else:
            text: str = _utf8_decode(memoryview(data)[start : start + size], "strict", True)[0]
            return text
    except UnicodeDecodeError:
        return None


def _text(data: Memory, start: int, size: int, key: int) -> Optional[str]:
    """As _payload, as text, or None when it is not valid UTF-8."""
    if cython.compiled:
        if size == 0:
            return ""
        if key < 0:
            return _decode_utf8(data, start, size)
        # Unmask straight into an ASCII string, betting that the text is ASCII:
        # if it is, that one pass was all. Otherwise decode the unmasked bytes
        # from there; the ASCII string never escapes.
        text = PyUnicode_New(size, 127)
        out = cython.cast(cython.p_uchar, PyUnicode_DATA(text))
        if anynet_mask_ascii(data + start, out, size, data + key):
            return text  # type: ignore[no-any-return]
        return _decode_utf8(out, 0, size)
    else:
        if key < 0:
            return _decode_utf8(data, start, size)
        try:
            text: str = _utf8_decode(_payload(data, start, size, key), "strict", True)[0]
            return text
        except UnicodeDecodeError:
            return None


def _validate(state: int, data: Memory, start: int, size: int) -> int:
    """The UTF-8 validator's state after ``size`` more bytes of ``data``."""
    if cython.compiled:
        if size >= NOGIL_THRESHOLD:
            with cython.nogil:
                state = anynet_utf8_validate(state, data + start, size)
            return state
        return anynet_utf8_validate(state, data + start, size)
    else:
        # Between ACCEPT and REJECT, the state is the bytes of an incomplete
        # code point behind a marker byte 1 (so it is never 0 or 6).
        if state == ANYNET_UTF8_REJECT:
            return state
        chunk: Buffer = memoryview(data)[start : start + size]
        if state != ANYNET_UTF8_ACCEPT:
            chunk = state.to_bytes(4, "big").lstrip(b"\0")[1:] + chunk
        try:
            rest = bytes(chunk[_utf8_decode(chunk, "strict", False)[1] :])
        except UnicodeDecodeError:
            return ANYNET_UTF8_REJECT
        if not rest:
            return ANYNET_UTF8_ACCEPT
        # CPython keeps a truncated surrogate (ED A0-BF) pending rather than
        # rejecting it, for the sake of the surrogatepass handler; strict UTF-8
        # can never complete it.
        if len(rest) > 1 and rest[0] == 0xED and rest[1] >= 0xA0:
            return ANYNET_UTF8_REJECT
        return int.from_bytes(b"\1" + rest, "big")


def _read_u64(data: Memory, start: int) -> int:
    value = 0
    for i in range(8):
        value = (value << 8) | data[start + i]
    return value


# Acquiring the bytes of the caller's objects.


_discarded = _allocate(DISCARD_SIZE)


def _check_mask_size(size: int) -> None:
    if size != 4:
        raise ValueError(f"a WebSocket mask has 4 bytes, not {size}")


def apply_mask(data: Buffer, mask: Buffer) -> bytes:
    """Return ``data`` XOR-ed with the 4-byte ``mask`` (masking and unmasking
    are the same operation)."""
    if cython.compiled:
        key = cython.declare(Py_buffer)
        view = cython.declare(Py_buffer)
        PyObject_GetBuffer(mask, cython.address(key), PyBUF_SIMPLE)
        try:
            _check_mask_size(key.len)
            PyObject_GetBuffer(data, cython.address(view), PyBUF_SIMPLE)
            try:
                result = PyBytes_FromStringAndSize(cython.NULL, view.len)
                out = cython.cast(cython.p_uchar, PyBytes_AS_STRING(result))
                source = cython.cast(cython.p_uchar, view.buf)
                key_bytes = cython.cast(cython.p_uchar, key.buf)
                if view.len >= NOGIL_THRESHOLD:
                    with cython.nogil:
                        anynet_mask(source, out, view.len, key_bytes)
                elif view.len:
                    anynet_mask(source, out, view.len, key_bytes)
                return result  # type: ignore[no-any-return]
            finally:
                PyBuffer_Release(cython.address(view))
        finally:
            PyBuffer_Release(cython.address(key))
    else:
        key_bytes = bytes(mask)
        _check_mask_size(len(key_bytes))
        return _mask(_as_bytes_view(data), key_bytes)


def validate_utf8(data: Buffer) -> bool:
    """Whether ``data`` is complete, valid UTF-8."""
    if cython.compiled:
        view = cython.declare(Py_buffer)
        PyObject_GetBuffer(data, cython.address(view), PyBUF_SIMPLE)
        try:
            return _validate(ANYNET_UTF8_ACCEPT, cython.cast(cython.p_uchar, view.buf), 0, view.len) == ANYNET_UTF8_ACCEPT
        finally:
            PyBuffer_Release(cython.address(view))
    else:
        chunk = _as_bytes_view(data)
        return _validate(ANYNET_UTF8_ACCEPT, chunk, 0, len(chunk)) == ANYNET_UTF8_ACCEPT


def _buffer_exported(buffer: bytearray) -> bool:
    """Whether a view of ``buffer`` exists (a memoryview, or a transport's hold
    on one): while one does, writing into the buffer changes what it shows.
    Only the compiled build can tell (it reads CPython's count of views)."""
    if cython.compiled:
        return cython.cast(cython.pointer(PyByteArrayObject), buffer).ob_exports > 0
    else:
        return True  # cannot tell: one may exist


#: ``_buffer_exported`` where it can tell, else None: ``sys.getrefcount`` is
#: no help (Python 3.14 leaves some references uncounted), so no buffer is
#: known to be free, and none is reused.
buffer_exported: Optional[Callable[[bytearray], bool]] = (
    _buffer_exported if cython.compiled and sys.implementation.name == "cpython" else None
)


class Utf8Validator:
    """Incremental UTF-8 validation across chunks (e.g. message fragments).

    ``feed`` fails as soon as the bytes seen so far cannot begin valid UTF-8,
    including a code point split across chunks that cannot be completed.
    """

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = ANYNET_UTF8_ACCEPT

    def feed(self, data: Buffer) -> bool:
        """Add ``data``; False once the input so far is not a prefix of valid UTF-8."""
        if self._state != ANYNET_UTF8_REJECT:
            if cython.compiled:
                view = cython.declare(Py_buffer)
                PyObject_GetBuffer(data, cython.address(view), PyBUF_SIMPLE)
                self._state = _validate(self._state, cython.cast(cython.p_uchar, view.buf), 0, view.len)
                PyBuffer_Release(cython.address(view))
            else:
                chunk = _as_bytes_view(data)
                self._state = _validate(self._state, chunk, 0, len(chunk))
        return self._state != ANYNET_UTF8_REJECT

    def finish(self) -> bool:
        """True iff everything fed so far is complete, valid UTF-8.

        A False answer sticks until ``reset()``.
        """
        if self._state != ANYNET_UTF8_ACCEPT:
            self._state = ANYNET_UTF8_REJECT
        return self._state == ANYNET_UTF8_ACCEPT

    def reset(self) -> None:
        """Forget everything fed so far."""
        self._state = ANYNET_UTF8_ACCEPT


class FrameReader:
    """Parses the frames a peer sends into messages and control events.

    ``is_client`` is our role: a client requires unmasked frames from the
    server, a server requires masked frames from its clients.
    ``max_message_size`` bounds the bytes of one message (the sum of its
    fragments); ``None`` means unlimited. A frame that would exceed it is
    refused from its header, before its payload is buffered.

    ``inflater`` (an ``anynet._deflate.Inflater``) is given when the
    handshake agreed on permessage-deflate: a message whose first frame has
    RSV1 set is then compressed; it is gathered whole and inflated, within
    ``max_message_size`` again, when its last frame arrives. Without it,
    RSV1 is a protocol error like the other reserved bits.

    Feed it with ``feed(data)``, or read straight into its buffer with
    ``get_buffer()`` / ``buffer_updated()`` from an ``asyncio.BufferedProtocol``.
    Both return the events of every frame completed by the new bytes; see
    ``anynet._events``. The buffer returned by ``get_buffer()`` is valid only
    until the next call on the reader.

    ``read_buffer``, a writable memoryview of single bytes, is where
    ``get_buffer()`` has the next read go while no incomplete frame is
    pending: ``buffer_updated()`` parses it there and keeps only an
    incomplete tail. An event loop's readers can share one, as each read is
    parsed before the next starts; its contents are then valid only until
    the next call on any of them.
    """

    __slots__ = (
        "_masked_bit",
        "_has_limit",
        "_limit",
        "_compressed_limit",
        "_buffer",
        "_capacity",
        "_start",
        "_end",
        "_frame_size",
        "_frame_header_size",
        "_frame_first",
        "_text_done",
        "_payload",
        "_payload_filled",
        "_payload_key",
        "_message_opcode",
        "_message",
        "_message_size",
        "_message_capacity",
        "_utf8_state",
        "_inflater",
        "_compressed",
        "_seek_skip",
        "_seek_pending",
        "_read_buffer",
        "failed",
        "closed",
        "seeking",
    )

    def __init__(
        self,
        is_client: bool,
        max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
        inflater: Optional[Inflater] = None,
        read_buffer: Optional[memoryview] = None,
    ) -> None:
        if read_buffer is not None and (
            type(read_buffer) is not memoryview
            or read_buffer.readonly
            or read_buffer.format != "B"
            or not read_buffer.c_contiguous
            or read_buffer.nbytes < MIN_READ_SIZE
        ):
            raise ValueError(f"read_buffer must be a writable memoryview of at least {MIN_READ_SIZE} bytes")
        self._read_buffer = read_buffer
        self._has_limit = max_message_size is not None
        if max_message_size is not None:
            if not isinstance(max_message_size, int):
                raise TypeError(f"max_message_size must be an int or None, not {type(max_message_size).__name__}")
            if max_message_size < 1:
                raise ValueError(f"max_message_size must be positive or None, not {max_message_size}")
            # Beyond 2**64 - 1 no message can reach the limit anyway.
            self._limit = min(max_message_size, UINT64_MAX)
            # What a compressed message may take on the wire: deflate makes
            # incompressible data a little longer (stored blocks cost 5 bytes
            # per 64 KiB), and its inflated size is held to the limit anyway.
            self._compressed_limit = min(max_message_size + (max_message_size >> 10) + 64, UINT64_MAX)
        else:
            self._limit = self._compressed_limit = 0
        # The MASK bit every frame from the peer must carry.
        self._masked_bit = 0 if is_client else 0x80
        # Unparsed bytes live in _buffer[_start:_end] (of _capacity bytes);
        # no buffer while idle.
        self._buffer = NO_MEMORY
        self._capacity = self._start = self._end = 0
        # The incomplete frame at _start once its header is known: its total
        # size (0 until then), header size and first header byte.
        self._frame_size = 0
        self._frame_header_size = 0
        self._frame_first = 0
        # Payload bytes of that frame, if it carries text, already unmasked in
        # place and validated, so that invalid UTF-8 fails before the frame ends.
        self._text_done = 0
        # A large binary frame being read straight into its message (see
        # _read_payload_directly): the message, how much of it has arrived,
        # and the frame's mask. The receive buffer is released meanwhile.
        self._payload: Any = None
        self._payload_filled = 0
        if not cython.compiled:
            self._payload_key = bytearray(4)
        # The fragmented message in progress: its opcode (0 when none), its
        # unmasked bytes so far, and the UTF-8 state after them and after the
        # validated part of an incomplete text frame (ACCEPT between messages).
        self._message_opcode = 0
        self._message = NO_MEMORY
        self._message_size = self._message_capacity = 0
        self._utf8_state = ANYNET_UTF8_ACCEPT
        # permessage-deflate, when negotiated, and whether the message in
        # progress is compressed (its fragments are gathered, not validated).
        self._inflater = inflater
        self._compressed = False
        #: A ProtocolError was reported; further input is ignored.
        self.failed = False
        #: A Close was reported, or ``stop()`` called; further input is ignored.
        self.closed = False
        # Where the frame boundaries stand while the reader looks only for
        # the peer's Close (see seek_close): the bytes of the current frame
        # still to drop, and the start of the next frame that has arrived.
        # A failure that leaves the boundaries known records them here.
        self._seek_skip: Optional[int] = None
        self._seek_pending = b""
        #: Input is scanned for the peer's Close only (see seek_close()).
        self.seeking = False

    def __dealloc__(self) -> None:
        # Compiled build only: Python calls no __dealloc__.
        _free(self._buffer)
        _free(self._message)

    @property
    def buffer_size(self) -> int:
        """Bytes of receive buffer currently held (0 while idle), counting a
        large message being read in place."""
        if self._payload is not None:
            return len(self._payload)
        return self._capacity

    def stop(self) -> None:
        """Parse nothing more: drop what is buffered, and ignore further input."""
        self.closed = True
        self.seeking = False
        self._seek_skip = None
        self._seek_pending = b""
        self._payload = None
        self._release()
        self._drop_message()

    def seek_close(self) -> Optional[List[Event]]:
        """From now on look only for the peer's Close frame, if that is possible.

        After we sent our Close (we failed the connection, say), the peer may
        still be sending: the rest of an oversized message, then its answer
        to our Close. Reading on frame by frame, dropping every data frame
        and keeping no payload, finds that answer, so that the closing
        handshake completes instead of TCP ending with the peer's bytes
        unread. The Close (or a ProtocolError for a malformed one) is
        reported by ``buffer_updated``/``feed`` as usual, or returned here if
        its bytes arrived already. Possible while the frame boundaries are
        known: not after a Close, ``stop()``, or a violation of the framing
        itself (1002); then this is ``stop()`` and returns None.
        """
        events: List[Event] = []
        if self.seeking:
            return events
        skip = self._seek_skip
        pending = self._seek_pending
        if self.closed or (self.failed and skip is None):
            self.stop()
            return None
        if not self.failed:
            skip = 0
            if self._payload is not None:
                skip = len(self._payload) - self._payload_filled
            elif self._frame_size:
                skip = self._frame_size - (self._end - self._start)
            elif self._end > self._start:
                # Not even a whole header yet: those bytes begin the next frame.
                pending = _payload(self._buffer, self._start, self._end - self._start, -1)
        self.stop()
        self.closed = False
        self.failed = True
        self.seeking = True
        self._seek_skip = skip
        if pending:
            self._seek(pending, events)
        return events

    def feed(self, data: Buffer) -> List[Event]:
        """Parse ``data`` after any incomplete frame kept from earlier calls."""
        events: List[Event] = []
        if self.failed or self.closed:
            if self.seeking:
                self._seek(bytes(data), events)
            return events
        if cython.compiled:
            view = cython.declare(Py_buffer)
            PyObject_GetBuffer(data, cython.address(view), PyBUF_SIMPLE)
            try:
                self._feed(cython.cast(cython.p_uchar, view.buf), view.len, events)
            finally:
                PyBuffer_Release(cython.address(view))
        else:
            chunk = _as_bytes_view(data)
            self._feed(chunk, len(chunk), events)
        return events

    def _feed(self, data: Memory, size: int, events: List[Event]) -> None:
        consumed = 0
        if self._payload is not None:
            consumed = self._fill_payload(data, 0, size, events)
            if self._payload is not None:
                return
        if self._start == self._end:
            # Nothing pending: parse straight from the caller's bytes and keep
            # only the incomplete tail.
            consumed = self._parse(data, consumed, size, events)
            if consumed < size and not (self.failed or self.closed):
                tail = size - consumed
                if not self._read_payload_directly(data, consumed, tail, events):
                    self._reserve(max(tail, self._wanted_space()))
                    _copy(self._buffer, self._end, data, consumed, tail)
                    self._end += tail
                    self._check_text_prefix(events)
                    if self.failed:
                        self._release()
        else:
            self._reserve(max(size - consumed, self._wanted_space()))
            _copy(self._buffer, self._end, data, consumed, size - consumed)
            self._end += size - consumed
            self._parse_buffer(events)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Free space for the next read (asyncio.BufferedProtocol.get_buffer).

        ``sizehint`` is only a hint and is ignored: the space offered is enough
        for the rest of a partly received frame (up to the size limit), or an
        ordinary read. Once input is ignored, it is space shared by every
        reader, so that bytes read only to be dropped cost no memory.
        """
        if self.failed or self.closed:
            return _writable_view(_discarded, 0, DISCARD_SIZE)
        if self._payload is not None:
            return _writable_view(
                _bytes_memory(self._payload), self._payload_filled, len(self._payload) - self._payload_filled
            )
        if self._buffer == NO_MEMORY and self._read_buffer is not None:
            # Nothing pending: the read goes to the shared buffer, a view
            # made once, and only what a read leaves incomplete is copied.
            return self._read_buffer
        self._reserve(self._wanted_space())
        return _writable_view(self._buffer, self._end, self._capacity - self._end)

    def buffer_updated(self, nbytes: int) -> List[Event]:
        """Parse the ``nbytes`` just written into the space from ``get_buffer()``."""
        events: List[Event] = []
        if self.failed or self.closed:
            if self.seeking and 0 < nbytes <= DISCARD_SIZE:
                self._seek(_payload(_discarded, 0, nbytes, -1), events)
            return events
        if self._payload is not None:
            if not 0 <= nbytes <= len(self._payload) - self._payload_filled:
                raise ValueError("buffer_updated() without a matching get_buffer()")
            # The bytes are in place already: only unmasking is left.
            self._fill_payload(_bytes_memory(self._payload), self._payload_filled, nbytes, events)
            return events
        if self._buffer == NO_MEMORY:
            shared = self._read_buffer
            if shared is None or not 0 <= nbytes <= len(shared):
                raise ValueError("buffer_updated() without a matching get_buffer()")
            self._feed(_view_memory(shared), nbytes, events)
            return events
        if not 0 <= nbytes <= self._capacity - self._end:
            raise ValueError("buffer_updated() without a matching get_buffer()")
        self._end += nbytes
        self._parse_buffer(events)
        return events

    def _parse_buffer(self, events: List[Event]) -> None:
        if self._text_done and self._end - self._start >= self._frame_size:
            self._finish_text_frame(events)
        if not (self.failed or self.closed):
            self._start = self._parse(self._buffer, self._start, self._end, events)
            if self._start < self._end and not (self.failed or self.closed):
                if self._read_payload_directly(self._buffer, self._start, self._end - self._start, events):
                    self._start = self._end
                else:
                    self._check_text_prefix(events)
        if self._start == self._end or self.failed or self.closed:
            self._release()

    def _read_payload_directly(self, data: Memory, start: int, pending: int, events: List[Event]) -> bool:
        """Take over the incomplete frame at ``data[start:]``, of which
        ``pending`` bytes have arrived, if it is a large binary frame: the
        rest of its payload then goes straight into the message, through
        get_buffer() or feed(), unmasked as it arrives. Its size passed the
        limit and MAX_PREALLOCATION bounds it, as for a receive buffer.
        True if taken."""
        header_size = self._frame_header_size
        if (
            not self._frame_size  # its length has not arrived yet
            or pending < header_size  # nor its mask
            or self._frame_first != 0x80 | OP_BINARY
            or self._frame_size > MAX_PREALLOCATION
        ):
            return False
        size = self._frame_size - header_size
        if size - (pending - header_size) < DIRECT_READ_MIN:
            return False
        self._payload = _new_bytes(size)
        self._payload_filled = 0
        if self._masked_bit:
            _copy(self._payload_key, 0, data, start + header_size - 4, 4)
        self._frame_size = 0
        self._fill_payload(data, start + header_size, pending - header_size, events)
        return True

    def _fill_payload(self, data: Memory, start: int, count: int, events: List[Event]) -> int:
        """Add up to ``count`` bytes from ``data[start:]`` (which may be where
        they belong already) to the message being read in place; report it
        once complete. Returns how many bytes it took."""
        filled = self._payload_filled
        missing = len(self._payload) - filled
        out = _bytes_memory(self._payload)
        if count > missing:
            count = missing
        if self._masked_bit:
            _unmask(out, filled, data, start, count, self._payload_key, 0, filled)
        else:
            _copy(out, filled, data, start, count)
        self._payload_filled = filled + count
        if count == missing:
            events.append(_finished_bytes(self._payload))
            self._payload = None
        return count

    def _wanted_space(self) -> int:
        """Free space worth offering for the next bytes: the rest of the frame
        being received if its header is known, else an ordinary read."""
        pending = self._end - self._start
        rest = 0
        if self._frame_size > pending:
            if self._frame_size > MAX_PREALLOCATION and self._frame_size - pending > pending:
                rest = max(pending, READ_BUFFER_SIZE)
            else:
                rest = self._frame_size - pending
        return max(rest, MIN_READ_SIZE)

    def _reserve(self, space: int) -> None:
        """Ensure ``space`` free bytes after the pending ones, moving the
        pending bytes to the front (at most once) or to a larger buffer."""
        if self._buffer == NO_MEMORY:
            capacity = max(space, READ_BUFFER_SIZE)
            self._buffer = _allocate(capacity)
            self._capacity = capacity
            return
        if self._capacity - self._end >= space:
            return
        pending = self._end - self._start
        if self._capacity - pending >= space:
            _move(self._buffer, 0, self._start, pending)
        else:
            capacity = max(pending + space, READ_BUFFER_SIZE)
            if self._start == 0:
                self._buffer = _reallocate(self._buffer, pending, capacity)
            else:
                larger = _allocate(capacity)
                _copy(larger, 0, self._buffer, self._start, pending)
                _free(self._buffer)
                self._buffer = larger
            self._capacity = capacity
        self._start = 0
        self._end = pending

    def _release(self) -> None:
        _free(self._buffer)
        self._buffer = NO_MEMORY
        self._capacity = self._start = self._end = self._text_done = 0
        self._frame_size = 0

    def _drop_message(self) -> None:
        _free(self._message)
        self._message = NO_MEMORY
        self._message_opcode = 0
        self._message_size = self._message_capacity = 0
        self._utf8_state = ANYNET_UTF8_ACCEPT
        self._compressed = False

    def _fail(self, events: List[Event], code: int, reason: str) -> int:
        events.append(ProtocolError(code, reason))
        self.failed = True
        self._drop_message()
        return 0

    def _parse(self, data: Memory, pos: int, end: int, events: List[Event]) -> int:
        """Consume every complete frame in ``data[pos:end]``; return the offset
        of the first incomplete one. On a Close or a violation the rest is
        irrelevant and the return value is meaningless."""
        masked_bit = self._masked_bit
        self._frame_size = 0
        while True:
            available = end - pos
            if available < 2:
                return pos
            first = data[pos]
            second = data[pos + 1]
            opcode = first & 0x0F
            fin = first & 0x80
            if first & 0x70:
                if first & 0x70 != 0x40 or self._inflater is None:
                    return self._fail(events, 1002, "reserved bits set without an extension")
                if opcode == OP_CONTINUATION or opcode >= OP_CLOSE:
                    # RFC 7692 section 6.1: only a message's first frame says
                    # whether the message is compressed.
                    return self._fail(events, 1002, "RSV1 set on a control or continuation frame")
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    return self._fail(events, 1002, "unknown opcode")
                if not fin:
                    return self._fail(events, 1002, "fragmented control frame")
                if second & 0x7F > MAX_CONTROL_PAYLOAD:
                    return self._fail(events, 1002, "control frame payload over 125 bytes")
            elif opcode == OP_CONTINUATION:
                if not self._message_opcode:
                    return self._fail(events, 1002, "continuation frame without a message to continue")
            elif opcode > OP_BINARY:
                return self._fail(events, 1002, "unknown opcode")
            elif self._message_opcode:
                return self._fail(events, 1002, "new message inside a fragmented message")
            if second & 0x80 != masked_bit:
                if masked_bit:
                    return self._fail(events, 1002, "unmasked frame from a client")
                return self._fail(events, 1002, "masked frame from a server")
            length = second & 0x7F
            header_size = 2
            if length == 126:
                if available < 4:
                    return pos
                length = (data[pos + 2] << 8) | data[pos + 3]
                header_size = 4
            elif length == 127:
                if available < 10:
                    return pos
                length = _read_u64(data, pos + 2)
                if length >> 63:
                    return self._fail(events, 1002, "frame length with the most significant bit set")
                header_size = 10
            # _message_size never exceeds the limit, so this cannot wrap around.
            if opcode < OP_CLOSE and self._has_limit:
                limit = self._compressed_limit if first & 0x40 or self._compressed else self._limit
                if length > limit - self._message_size:
                    frame_size = header_size + length + (4 if masked_bit else 0)
                    if frame_size > available:
                        self._resync(frame_size - available, data, end, end)
                    else:
                        self._resync(0, data, pos + frame_size, end)
                    return self._fail(events, 1009, "message too big")
            if masked_bit:
                header_size += 4
            frame_size = header_size + length
            if available < frame_size:
                self._frame_size = frame_size
                self._frame_header_size = header_size
                self._frame_first = first
                return pos
            size = length
            payload_start = pos + header_size
            pos += frame_size
            key = payload_start - 4 if masked_bit else -1

            if opcode >= OP_CLOSE:
                if opcode == OP_PING:
                    events.append(Ping(_payload(data, payload_start, size, key)))
                elif opcode == OP_PONG:
                    events.append(Pong(_payload(data, payload_start, size, key)))
                else:
                    return self._close(events, _payload(data, payload_start, size, key))
            elif first & 0x40 and fin:
                if not self._inflate(events, opcode, _payload(data, payload_start, size, key)):
                    return 0
            elif fin and not self._message_opcode:
                if opcode == OP_TEXT:
                    message = _text(data, payload_start, size, key)
                    if message is None:
                        self._resync(0, data, pos, end)
                        return self._fail(events, 1007, "invalid UTF-8 in a text message")
                    events.append(message)
                else:
                    events.append(_payload(data, payload_start, size, key))
            else:
                if first & 0x40:
                    self._compressed = True
                if not self._fragment(events, opcode, data, payload_start, size, key, fin, 0):
                    self._resync(0, data, pos, end)
                    return 0

    def _check_text_prefix(self, events: List[Event]) -> None:
        """Unmask and validate, in place, the payload bytes that arrived since
        the last call of the incomplete frame at ``_start``, if it carries
        text: a text message fails on its first invalid byte, even in the
        middle of a frame."""
        opcode = self._frame_first & 0x0F
        if not self._frame_size or not (
            opcode == OP_TEXT or (opcode == OP_CONTINUATION and self._message_opcode == OP_TEXT)
        ):
            return
        if self._frame_first & 0x40 or self._compressed:
            return  # compressed bytes are not text: inflated whole, then decoded
        payload = self._start + self._frame_header_size
        arrived = self._end - payload
        done = self._text_done
        if arrived <= done:
            return
        self._text_done = arrived
        if self._masked_bit:
            buffer = self._buffer
            if (
                _unmask(buffer, payload + done, buffer, payload + done, arrived - done, buffer, payload - 4, done, True)
                and self._utf8_state == ANYNET_UTF8_ACCEPT
            ):
                # ASCII between complete code points: nothing to validate.
                return
        self._utf8_state = _validate(self._utf8_state, self._buffer, payload + done, arrived - done)
        if self._utf8_state == ANYNET_UTF8_REJECT:
            self._resync(self._frame_size - (self._end - self._start), self._buffer, self._end, self._end)
            self._fail(events, 1007, "invalid UTF-8 in a text message")

    def _finish_text_frame(self, events: List[Event]) -> None:
        """Complete the text frame at ``_start``, whose payload earlier calls
        began to unmask and validate, and move ``_start`` past it."""
        buffer = self._buffer
        payload = self._start + self._frame_header_size
        size = self._frame_size - self._frame_header_size
        done = self._text_done
        opcode = self._frame_first & 0x0F
        fin = self._frame_first & 0x80
        key = payload - 4 if self._masked_bit else -1
        self._text_done = 0
        self._start += self._frame_size
        if not (fin and opcode == OP_TEXT):
            if not self._fragment(events, opcode, buffer, payload, size, key, fin, done):
                self._resync(0, buffer, self._start, self._end)
            return
        # A whole message in one frame: decoding it validates the rest.
        if key >= 0:
            _unmask(buffer, payload + done, buffer, payload + done, size - done, buffer, key, done)
        self._utf8_state = ANYNET_UTF8_ACCEPT
        message = _decode_utf8(buffer, payload, size)
        if message is None:
            self._resync(0, buffer, self._start, self._end)
            self._fail(events, 1007, "invalid UTF-8 in a text message")
        else:
            events.append(message)

    def _fragment(
        self, events: List[Event], opcode: int, data: Memory, start: int, size: int, key: int, fin: int, done: int
    ) -> bool:
        """Add one fragment of a fragmented message; False after a violation.

        The first ``done`` bytes of the payload ``data[start:start + size]``
        are already unmasked and, for text, validated (see _check_text_prefix).
        """
        offset = self._message_size
        if opcode:
            self._message_opcode = opcode
        text = self._message_opcode == OP_TEXT and not self._compressed
        if size:
            if offset + size > self._message_capacity:
                capacity = max(offset + size, 2 * self._message_capacity)
                self._message = _reallocate(self._message, offset, capacity)
                self._message_capacity = capacity
            if key >= 0:
                _copy(self._message, offset, data, start, done)
                _unmask(self._message, offset + done, data, start + done, size - done, data, key, done)
            else:
                _copy(self._message, offset, data, start, size)
            self._message_size = offset + size
            if text:
                # Validating each fragment as it comes: a bad message fails on
                # its first bad fragment, not when it ends.
                self._utf8_state = _validate(self._utf8_state, self._message, offset + done, size - done)
        if text and (
            self._utf8_state == ANYNET_UTF8_REJECT or (fin and self._utf8_state != ANYNET_UTF8_ACCEPT)
        ):
            self._fail(events, 1007, "invalid UTF-8 in a text message")
            return False
        if fin and self._compressed:
            compressed = _writable_view(self._message, 0, self._message_size)
            opcode = self._message_opcode
            try:
                return self._inflate(events, opcode, compressed)
            finally:
                compressed.release()
                self._drop_message()
        if fin:
            if text:
                events.append(_decode_utf8(self._message, 0, self._message_size))  # type: ignore[arg-type]
            else:
                events.append(_payload(self._message, 0, self._message_size, -1))
            self._drop_message()
        return True

    def _inflate(self, events: List[Event], opcode: int, payload: Buffer) -> bool:
        """Report the compressed message ``payload``; False after a violation."""
        try:
            events.append(self._inflater.decompress(payload, opcode == OP_TEXT))  # type: ignore[union-attr]
        except ProtocolError as error:
            self._fail(events, error.code, error.reason)
            return False
        return True

    def _close(self, events: List[Event], payload: bytes) -> int:
        size = len(payload)
        if size == 0:
            events.append(Close(1005, ""))
        elif size == 1:
            return self._fail(events, 1002, "close frame with a 1-byte payload")
        else:
            code = (payload[0] << 8) | payload[1]
            if not _is_valid_close_code(code):
                return self._fail(events, 1002, "invalid close code")
            reason = _decode_utf8(_bytes_memory(payload), 2, size - 2)
            if reason is None:
                return self._fail(events, 1007, "invalid UTF-8 in a close reason")
            events.append(Close(code, reason))
        self.closed = True
        self._drop_message()
        return 0

    def _resync(self, skip: int, data: Memory, start: int, end: int) -> int:
        """Note, as a failure leaves them, where the frames go on: ``skip``
        more bytes of the failed frame, then the bytes ``data[start:end]``
        (see seek_close)."""
        self._seek_skip = skip
        self._seek_pending = _payload(data, start, end - start, -1) if end > start else b""
        return 0

    def _seek(self, data: bytes, events: List[Event]) -> None:
        """Scan ``data`` for the peer's Close frame, dropping every other frame
        (see seek_close). Only a header, or a Close frame of at most 139
        bytes, is ever kept between calls."""
        pending = self._seek_pending + data if self._seek_pending else data
        skip: int = self._seek_skip  # type: ignore[assignment]  # set while seeking
        pos = 0
        end = len(pending)
        while True:
            if skip:
                if skip >= end - pos:
                    self._seek_skip = skip - (end - pos)
                    self._seek_pending = b""
                    return
                pos += skip
                skip = 0
            if end - pos < 2:
                break
            first = pending[pos]
            second = pending[pos + 1]
            opcode = first & 0x0F
            length = second & 0x7F
            if (
                first & 0x70
                or OP_BINARY < opcode < OP_CLOSE
                or opcode > OP_PONG
                or second & 0x80 != self._masked_bit
                or (opcode >= OP_CLOSE and (length > MAX_CONTROL_PAYLOAD or not first & 0x80))
            ):
                # Not a frame boundary after all: nothing more can be found.
                self.stop()
                events.append(ProtocolError(1002, "no valid frame after the failure"))
                return
            header_size = 2
            if length == 126:
                header_size = 4
            elif length == 127:
                header_size = 10
            if self._masked_bit:
                header_size += 4
            if end - pos < header_size:
                break
            if length == 126:
                length = (pending[pos + 2] << 8) | pending[pos + 3]
            elif length == 127:
                length = int.from_bytes(pending[pos + 2 : pos + 10], "big")
            if opcode != OP_CLOSE:
                pos += header_size
                skip = length
                continue
            if end - pos < header_size + length:
                break
            payload = pending[pos + header_size : pos + header_size + length]
            if self._masked_bit:
                payload = apply_mask(payload, pending[pos + header_size - 4 : pos + header_size])
            self.seeking = False
            self._seek_skip = None
            self._seek_pending = b""
            self.failed = False
            self._close(events, payload)
            if not self.closed:
                self.stop()
            return
        self._seek_skip = 0
        self._seek_pending = pending[pos:]


def _check_frame(opcode: int, length: int, fin: bool) -> None:
    if opcode >= OP_CLOSE:
        if opcode > OP_PONG:
            raise ValueError(f"unknown opcode {opcode}")
        if not fin:
            raise ValueError("control frames cannot be fragmented")
        if length > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload of {length} bytes; at most 125 are allowed")
    elif not 0 <= opcode <= OP_BINARY:
        raise ValueError(f"unknown opcode {opcode}")


_NOT_WRITABLE = "encode_into() needs a writable buffer"


def _header_size(length: int) -> int:
    return 2 if length < 126 else 4 if length < 0x10000 else 10


def _write_header(out: Memory, opcode: int, length: int, fin: bool, mask_bit: int) -> None:
    out[0] = opcode | 0x80 if fin else opcode
    if length < 126:
        out[1] = mask_bit | length
    elif length < 0x10000:
        out[1] = mask_bit | 126
        out[2] = (length >> 8) & 0xFF
        out[3] = length & 0xFF
    else:
        out[1] = mask_bit | 127
        for i in range(8):
            out[2 + i] = (length >> (56 - 8 * i)) & 0xFF


def _with_rsv1(frame: bytes) -> bytes:
    """``frame`` with RSV1 set (the compressed-message bit)."""
    if cython.compiled:
        # A new bytes object that nothing else has seen yet.
        _bytes_memory(frame)[0] |= 0x40
        return frame
    return bytes((frame[0] | 0x40,)) + frame[1:]


class FrameWriter:
    """Encodes frames for one side of a connection.

    A client writer masks every frame with a fresh random key; a server
    writer never masks, so one encoded server frame can be sent to many
    connections.
    """

    __slots__ = ("_is_client", "_keys", "_key_offset")

    def __init__(self, is_client: bool) -> None:
        self._is_client = bool(is_client)
        # Random masking keys, fetched MASK_POOL_SIZE bytes at a time.
        self._keys: Optional[bytes] = None
        self._key_offset = 0

    def encode(self, opcode: int, payload: Union[Buffer, str], fin: bool = True, rsv1: bool = False) -> bytes:
        """One complete frame; a ``str`` payload is encoded as UTF-8.

        ``rsv1`` marks the first frame of a compressed message (RFC 7692).
        """
        if rsv1:
            if not OP_TEXT <= opcode <= OP_BINARY:
                raise ValueError("only the first frame of a text or binary message can be compressed")
            return _with_rsv1(self.encode(opcode, payload, fin))
        if cython.compiled:
            if isinstance(payload, str):
                # The UTF-8 form of an ASCII string is its own storage; others
                # are encoded once into a cache inside the string: no bytes object.
                size = cython.declare(cython.Py_ssize_t)
                text = PyUnicode_AsUTF8AndSize(payload, cython.address(size))
                return self._frame(opcode, cython.cast(cython.p_uchar, text), size, fin)
            view = cython.declare(Py_buffer)
            PyObject_GetBuffer(payload, cython.address(view), PyBUF_SIMPLE)
            try:
                return self._frame(opcode, cython.cast(cython.p_uchar, view.buf), view.len, fin)
            finally:
                PyBuffer_Release(cython.address(view))
        else:
            if isinstance(payload, str):
                data: Buffer = payload.encode("utf-8")
            elif isinstance(payload, (bytes, bytearray)):
                data = payload
            else:
                data = _as_bytes_view(payload)
            return self._frame(opcode, data, len(data), fin)

    def encode_into(self, buffer: Buffer, opcode: int, payload: Buffer, fin: bool = True) -> int:
        """Encode one frame into the start of the writable ``buffer``; return its length.

        For frames with large payloads, built in a buffer that is reused
        rather than in a new bytes object every time. ``payload`` is
        bytes-like and must not share memory with ``buffer``.
        """
        if isinstance(payload, str):
            raise TypeError("encode_into() takes a bytes-like payload, not str")
        if cython.compiled:
            out = cython.declare(Py_buffer)
            view = cython.declare(Py_buffer)
            try:
                PyObject_GetBuffer(buffer, cython.address(out), PyBUF_WRITABLE)
            except BufferError:
                raise TypeError(_NOT_WRITABLE) from None
            try:
                PyObject_GetBuffer(payload, cython.address(view), PyBUF_SIMPLE)
                try:
                    return self._encode_into(
                        cython.cast(cython.p_uchar, out.buf), out.len, opcode,
                        cython.cast(cython.p_uchar, view.buf), view.len, fin,
                    )
                finally:
                    PyBuffer_Release(cython.address(view))
            finally:
                PyBuffer_Release(cython.address(out))
        else:
            with memoryview(buffer) as target:
                if target.readonly:
                    raise TypeError(_NOT_WRITABLE)
                with target.cast("B") as octets:
                    data = _as_bytes_view(payload)
                    return self._encode_into(octets, len(octets), opcode, data, len(data), fin)

    def encode_close(self, code: Optional[int] = 1000, reason: str = "") -> bytes:
        """A Close frame; ``code=None`` sends one without a payload."""
        if code is None:
            if reason:
                raise ValueError("a close reason needs a close code")
            return self.encode(OP_CLOSE, b"")
        if not isinstance(code, int) or not 0 <= code <= 0xFFFF or not _is_valid_close_code(code):
            raise ValueError(f"invalid close code {code!r}")
        encoded = reason.encode("utf-8")
        if len(encoded) > MAX_CLOSE_REASON:
            raise ValueError(f"close reason of {len(encoded)} bytes of UTF-8; at most 123 are allowed")
        return self.encode(OP_CLOSE, code.to_bytes(2, "big") + encoded)

    def encode_header(self, opcode: int, length: int, fin: bool = True) -> bytes:
        """The header of an unmasked (server) frame, so that a large payload can
        be written after it without copying."""
        if self._is_client:
            raise ValueError("a client masks its frames: use encode(), not encode_header()")
        if not 0 <= length < 1 << 63:
            raise ValueError(f"invalid frame length {length}")
        _check_frame(opcode, length, fin)
        header = _new_bytes(_header_size(length))
        _write_header(_bytes_memory(header), opcode, length, fin, 0)
        return _finished_bytes(header)

    def _frame_size(self, payload_size: int) -> int:
        return _header_size(payload_size) + (4 if self._is_client else 0) + payload_size

    def _frame(self, opcode: int, payload: Memory, size: int, fin: bool) -> bytes:
        _check_frame(opcode, size, fin)
        if cython.compiled:
            frame = PyBytes_FromStringAndSize(cython.NULL, self._frame_size(size))
            self._frame_into(cython.cast(cython.p_uchar, PyBytes_AS_STRING(frame)), opcode, payload, size, fin)
            return frame  # type: ignore[no-any-return]
        else:
            # Joining the pieces copies the payload once; filling a frame
            # allocated beforehand, as the compiled build does, takes three.
            header = bytearray(_header_size(size))
            if not self._is_client:
                _write_header(header, opcode, size, fin, 0)
                return b"".join((header, payload))
            key = self._next_key()
            assert self._keys is not None
            mask = self._keys[key : key + 4]
            _write_header(header, opcode, size, fin, 0x80)
            return b"".join((header, mask, _mask(payload, mask)))

    def _encode_into(self, out: Memory, capacity: int, opcode: int, payload: Memory, size: int, fin: bool) -> int:
        frame_size = self._frame_size(size)
        _check_frame(opcode, size, fin)
        if capacity < frame_size:
            raise ValueError(f"a buffer of {capacity} bytes cannot hold a frame of {frame_size}")
        self._frame_into(out, opcode, payload, size, fin)
        return frame_size

    def _frame_into(self, out: Memory, opcode: int, payload: Memory, size: int, fin: bool) -> None:
        header_size = _header_size(size)
        if self._is_client:
            key = self._next_key()
            keys = _bytes_memory(self._keys)
            _write_header(out, opcode, size, fin, 0x80)
            _copy(out, header_size, keys, key, 4)
            _unmask(out, header_size + 4, payload, 0, size, keys, key, 0)
        else:
            _write_header(out, opcode, size, fin, 0)
            _copy(out, header_size, payload, 0, size)

    def _next_key(self) -> int:
        """The offset of a fresh masking key in ``_keys``."""
        if self._keys is None or self._key_offset == MASK_POOL_SIZE:
            self._keys = _urandom(MASK_POOL_SIZE)
            self._key_offset = 0
        self._key_offset += 4
        return self._key_offset - 4
