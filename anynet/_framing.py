"""WebSocket framing (RFC 6455 section 5) in pure Python.

This is the reference implementation of the framing interface and the
fallback wherever the compiled ``anynet._speedups`` is unavailable. Both
modules export the same names and produce the same events (see
``anynet._events``) and the same error reasons for the same bytes, however
the bytes are split; the differential tests hold them to that.

The reader is sans-I/O: bytes in, events out. It consumes every complete
frame of each chunk in one call and keeps only an incomplete tail, in a
buffer it owns, that is dropped again as soon as nothing is left unparsed.
"""

from __future__ import annotations

import codecs
import os
import struct
from typing import TYPE_CHECKING, Callable, List, Optional, Union, cast

from anynet._events import (
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

if TYPE_CHECKING:
    from anynet._deflate import Inflater

__all__ = ["FrameReader", "FrameWriter", "Utf8Validator", "apply_mask", "validate_utf8"]

Buffer = Union[bytes, bytearray, memoryview]
Event = Union[bytes, str, Ping, Pong, Close, ProtocolError]

#: Default limit on the size of one message (and so of one data frame).
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: RFC 6455 5.5: control frames carry at most 125 bytes.
MAX_CONTROL_PAYLOAD = 125
#: A close payload is a 2-byte code plus the reason.
MAX_CLOSE_REASON = MAX_CONTROL_PAYLOAD - 2
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
#: Client masking keys are cut from a per-writer pool of random bytes, so that
#: the operating system is asked once per 128 frames rather than per frame.
MASK_POOL_SIZE = 512

#: Where the bytes that arrive after a failure, a Close or ``stop()`` are
#: read to be dropped: one buffer shared by every reader, as nothing reads it.
_DISCARDED = memoryview(bytearray(64 * 1024))

_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_utf8_decode = codecs.utf_8_decode
_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack

# bytes.translate tables XOR-ing every byte with a constant: for large payloads
# four strided translations beat converting the payload to one huge integer.
_XOR_TABLES = [
    (int.from_bytes(bytes(range(256)), "big") ^ int.from_bytes(bytes((key,)) * 256, "big")).to_bytes(
        256, "big"
    )
    for key in range(256)
]
_TRANSLATE_THRESHOLD = 1024


def _is_valid_close_code(code: int) -> bool:
    """Close codes a peer may put in a Close frame (RFC 6455 7.4, IANA registry).

    1004 is reserved, 1005, 1006 and 1015 are only ever reported locally,
    1016-2999 are unassigned or reserved for future protocol revisions;
    3000-4999 belong to libraries and applications.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _as_bytes_view(data: Buffer) -> memoryview:
    return memoryview(data).cast("B")


#: Whether a view of a bytearray exists: a compiled-backend function. Python
#: code cannot tell (``sys.getrefcount`` is no help: Python 3.14 leaves some
#: references uncounted), so with this backend no buffer is reused.
buffer_exported: Optional[Callable[[bytearray], bool]] = None


def apply_mask(data: Buffer, mask: Buffer) -> bytes:
    """Return ``data`` XOR-ed with the 4-byte ``mask`` (masking and unmasking
    are the same operation)."""
    if len(mask) != 4:
        raise ValueError(f"a WebSocket mask has 4 bytes, not {len(mask)}")
    return _mask(data, bytes(mask))


def _mask(data: Buffer, mask: bytes) -> bytes:
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


def _key_at(mask: Buffer, offset: int) -> bytes:
    """The 4-byte mask rotated to unmask a payload from ``offset`` on."""
    phase = offset & 3
    return bytes(mask[phase:]) + bytes(mask[:phase])


def _decode_chunk(decoder: codecs.IncrementalDecoder, data: Buffer, final: bool) -> str:
    """Decode one chunk of a UTF-8 stream; UnicodeDecodeError as soon as the
    stream so far cannot be the beginning of valid UTF-8."""
    text: str = decoder.decode(data, final)
    if not final:
        # CPython keeps a truncated surrogate (ED A0-BF) pending rather than
        # rejecting it, for the sake of the surrogatepass handler; strict UTF-8
        # can never complete it, so fail now, as the compiled validator does.
        pending = decoder.getstate()[0]
        if len(pending) == 2 and pending[0] == 0xED and pending[1] >= 0xA0:
            raise UnicodeDecodeError("utf-8", pending, 0, 2, "surrogate code point")
    return text


def validate_utf8(data: Buffer) -> bool:
    """Whether ``data`` is complete, valid UTF-8."""
    try:
        _utf8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


class Utf8Validator:
    """Incremental UTF-8 validation across chunks (e.g. message fragments).

    ``feed`` fails as soon as the bytes seen so far cannot begin valid UTF-8,
    including a code point split across chunks that cannot be completed.
    """

    __slots__ = ("_decoder", "_valid")

    def __init__(self) -> None:
        self._decoder = _utf8_decoder()
        self._valid = True

    def feed(self, data: Buffer) -> bool:
        """Add ``data``; False once the input so far is not a prefix of valid UTF-8."""
        if self._valid:
            try:
                _decode_chunk(self._decoder, data, False)
            except UnicodeDecodeError:
                self._valid = False
        return self._valid

    def finish(self) -> bool:
        """True iff everything fed so far is complete, valid UTF-8.

        A False answer sticks until ``reset()``.
        """
        if self._valid:
            try:
                self._decoder.decode(b"", True)
            except UnicodeDecodeError:
                self._valid = False
        return self._valid

    def reset(self) -> None:
        """Forget everything fed so far."""
        self._decoder.reset()
        self._valid = True


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
    """

    __slots__ = (
        "_masked_bit",
        "_max_message_size",
        "_buffer",
        "_start",
        "_end",
        "_frame_size",
        "_frame_header_size",
        "_frame_first",
        "_text_done",
        "_message_opcode",
        "_message_size",
        "_fragments",
        "_decoder",
        "_inflater",
        "_compressed",
        "failed",
        "closed",
    )

    def __init__(
        self,
        is_client: bool,
        max_message_size: Optional[int] = DEFAULT_MAX_MESSAGE_SIZE,
        inflater: Optional[Inflater] = None,
    ) -> None:
        if max_message_size is not None:
            if not isinstance(max_message_size, int):
                raise TypeError(f"max_message_size must be an int or None, not {type(max_message_size).__name__}")
            if max_message_size < 1:
                raise ValueError(f"max_message_size must be positive or None, not {max_message_size}")
        # The MASK bit every frame from the peer must carry.
        self._masked_bit = 0 if is_client else 0x80
        self._max_message_size = max_message_size
        # Unparsed bytes live in _buffer[_start:_end]; no buffer while idle.
        self._buffer: Optional[bytearray] = None
        self._start = 0
        self._end = 0
        # The incomplete frame at _start once its header is known: its total
        # size (0 until then), header size and first header byte.
        self._frame_size = 0
        self._frame_header_size = 0
        self._frame_first = 0
        # Payload bytes of that frame, if it carries text, already decoded into
        # _fragments, so that invalid UTF-8 fails before the frame ends.
        self._text_done = 0
        # The message in progress: its opcode (0 when none; a text frame whose
        # beginning is decoded but that is not complete yet does not count),
        # size so far, and its pieces (text already decoded). The decoder is
        # left empty by the end of every text message.
        self._message_opcode = 0
        self._message_size = 0
        self._fragments: List[Union[bytes, str]] = []
        self._decoder = _utf8_decoder()
        self._inflater = inflater
        # Whether the message in progress is compressed (its first frame had
        # RSV1): its fragments are gathered as they are, not decoded.
        self._compressed = False
        #: A ProtocolError was reported; further input is ignored.
        self.failed = False
        #: A Close was reported, or ``stop()`` called; further input is ignored.
        self.closed = False

    @property
    def buffer_size(self) -> int:
        """Bytes of receive buffer currently held (0 while idle)."""
        return 0 if self._buffer is None else len(self._buffer)

    def stop(self) -> None:
        """Parse nothing more: drop what is buffered, and ignore further input."""
        self.closed = True
        self._fragments = []
        self._release()

    def feed(self, data: Buffer) -> List[Event]:
        """Parse ``data`` after any incomplete frame kept from earlier calls."""
        if self.failed or self.closed:
            return []
        events: List[Event] = []
        view = _as_bytes_view(data)
        if self._start == self._end:
            # Nothing pending: parse straight from the caller's bytes and keep
            # only the incomplete tail.
            consumed = self._parse(view, 0, len(view), events)
            if consumed < len(view) and not (self.failed or self.closed):
                tail = view[consumed:]
                self._reserve(max(len(tail), self._wanted_space()))
                self._append(tail)
                self._decode_text_prefix(events)
                if self.failed:
                    self._release()
        else:
            self._reserve(max(len(view), self._wanted_space()))
            self._append(view)
            self._parse_buffer(events)
        return events

    def get_buffer(self, sizehint: int) -> memoryview:
        """Free space for the next read (asyncio.BufferedProtocol.get_buffer).

        ``sizehint`` is only a hint and is ignored: the space offered is enough
        for the rest of a partly received frame (up to the size limit), or an
        ordinary read. Once input is ignored, it is space shared by every
        reader, so that bytes read only to be dropped cost no memory.
        """
        if self.failed or self.closed:
            return _DISCARDED
        self._reserve(self._wanted_space())
        assert self._buffer is not None
        return memoryview(self._buffer)[self._end :]

    def buffer_updated(self, nbytes: int) -> List[Event]:
        """Parse the ``nbytes`` just written into the space from ``get_buffer()``."""
        if self.failed or self.closed:
            return []
        buffer = self._buffer
        if buffer is None or not 0 <= nbytes <= len(buffer) - self._end:
            raise ValueError("buffer_updated() without a matching get_buffer()")
        self._end += nbytes
        events: List[Event] = []
        self._parse_buffer(events)
        return events

    def _parse_buffer(self, events: List[Event]) -> None:
        assert self._buffer is not None
        data = memoryview(self._buffer)
        if self._text_done and self._end - self._start >= self._frame_size:
            self._start = self._finish_text_frame(data, self._start, events)
        if not (self.failed or self.closed):
            self._start = self._parse(data, self._start, self._end, events)
            if self._start < self._end and not (self.failed or self.closed):
                self._decode_text_prefix(events)
        if self._start == self._end or self.failed or self.closed:
            self._release()

    def _wanted_space(self) -> int:
        """Free space worth offering for the next bytes: the rest of the frame
        being received if its header is known, else an ordinary read."""
        pending = self._end - self._start
        rest = self._frame_size - pending
        if rest > pending and self._frame_size > MAX_PREALLOCATION:
            rest = max(pending, READ_BUFFER_SIZE)
        return max(rest, MIN_READ_SIZE)

    def _reserve(self, space: int) -> None:
        """Ensure ``space`` free bytes after the pending ones, moving the
        pending bytes to the front (at most once) or to a larger buffer."""
        buffer = self._buffer
        if buffer is None:
            self._buffer = bytearray(max(space, READ_BUFFER_SIZE))
            return
        if len(buffer) - self._end >= space:
            return
        pending = self._end - self._start
        if len(buffer) - pending >= space:
            # Same-size slice assignment: allowed even while a memoryview of
            # the buffer is alive (the event loop may still hold one).
            buffer[:pending] = buffer[self._start : self._end]
        else:
            larger = bytearray(max(pending + space, READ_BUFFER_SIZE))
            larger[:pending] = buffer[self._start : self._end]
            self._buffer = larger
        self._start = 0
        self._end = pending

    def _append(self, data: memoryview) -> None:
        assert self._buffer is not None
        end = self._end + len(data)
        self._buffer[self._end : end] = data
        self._end = end

    def _release(self) -> None:
        self._buffer = None
        self._start = self._end = self._frame_size = self._text_done = 0

    def _fail(self, events: List[Event], code: int, reason: str) -> int:
        events.append(ProtocolError(code, reason))
        self.failed = True
        self._fragments = []
        return 0

    def _parse(self, data: memoryview, pos: int, end: int, events: List[Event]) -> int:
        """Consume every complete frame in ``data[pos:end]``; return the offset
        of the first incomplete one. On a Close or a violation the rest is
        irrelevant and the return value is meaningless."""
        masked_bit = self._masked_bit
        limit = self._max_message_size
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
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length >> 63:
                    return self._fail(events, 1002, "frame length with the most significant bit set")
                header_size = 10
            if opcode < OP_CLOSE and limit is not None and self._message_size + length > limit:
                return self._fail(events, 1009, "message too big")
            if masked_bit:
                header_size += 4
            frame_size = header_size + length
            if available < frame_size:
                self._frame_size = frame_size
                self._frame_header_size = header_size
                self._frame_first = first
                return pos
            payload_start = pos + header_size
            pos += frame_size
            payload: Union[bytes, memoryview]
            if masked_bit:
                payload = _mask(data[payload_start:pos], bytes(data[payload_start - 4 : payload_start]))
            else:
                payload = data[payload_start:pos]

            if opcode >= OP_CLOSE:
                if opcode == OP_PING:
                    events.append(Ping(bytes(payload)))
                elif opcode == OP_PONG:
                    events.append(Pong(bytes(payload)))
                else:
                    return self._close(events, payload)
            elif first & 0x40:
                if fin:
                    if not self._inflate(events, opcode, payload):
                        return 0
                else:
                    self._compressed = True
                    self._message_opcode = opcode
                    self._message_size = len(payload)
                    self._fragments.append(bytes(payload))
            elif fin and not self._message_opcode:
                if opcode == OP_TEXT:
                    try:
                        events.append(_utf8_decode(payload, "strict", True)[0])
                    except UnicodeDecodeError:
                        return self._fail(events, 1007, "invalid UTF-8 in a text message")
                else:
                    events.append(bytes(payload))
            elif not self._fragment(events, opcode, payload, fin):
                return 0

    def _inflate(self, events: List[Event], opcode: int, payload: Buffer) -> bool:
        """Report the compressed message ``payload``; False after a violation."""
        assert self._inflater is not None
        try:
            events.append(self._inflater.decompress(payload, opcode == OP_TEXT))
        except ProtocolError as error:
            self._fail(events, error.code, error.reason)
            return False
        return True

    def _fragment(self, events: List[Event], opcode: int, payload: Buffer, fin: int) -> bool:
        """Add one fragment of a fragmented message; False after a violation."""
        if opcode:
            self._message_opcode = opcode
        self._message_size += len(payload)
        if self._compressed:
            self._fragments.append(bytes(payload))
            if fin:
                compressed = b"".join(cast(List[bytes], self._fragments))
                opcode = self._message_opcode
                self._message_opcode = 0
                self._message_size = 0
                self._fragments = []
                self._compressed = False
                return self._inflate(events, opcode, compressed)
        elif self._message_opcode == OP_TEXT:
            try:
                # Decoding each fragment validates it at once: a bad message
                # fails on its first bad fragment, not when it ends.
                self._fragments.append(_decode_chunk(self._decoder, payload, bool(fin)))
            except UnicodeDecodeError:
                self._fail(events, 1007, "invalid UTF-8 in a text message")
                return False
        else:
            self._fragments.append(bytes(payload))
        if fin:
            if self._message_opcode == OP_TEXT:
                events.append("".join(cast(List[str], self._fragments)))
            else:
                events.append(b"".join(cast(List[bytes], self._fragments)))
            self._message_opcode = 0
            self._message_size = 0
            self._fragments = []
        return True

    def _decode_text_prefix(self, events: List[Event]) -> None:
        """Decode the payload bytes that arrived since the last call of the
        incomplete frame at ``_start``, if it carries text: a text message
        fails on its first invalid byte, even in the middle of a frame."""
        if not self._frame_size or self._frame_first & 0x40 or self._compressed:
            return
        opcode = self._frame_first & 0x0F
        if opcode != OP_TEXT and not (opcode == OP_CONTINUATION and self._message_opcode == OP_TEXT):
            return
        assert self._buffer is not None
        payload_start = self._start + self._frame_header_size
        done = self._text_done
        if self._end - payload_start <= done:
            return
        chunk: Buffer = memoryview(self._buffer)[payload_start + done : self._end]
        if self._masked_bit:
            chunk = _mask(chunk, _key_at(self._buffer[payload_start - 4 : payload_start], done))
        self._text_done = self._end - payload_start
        try:
            self._fragments.append(_decode_chunk(self._decoder, chunk, False))
        except UnicodeDecodeError:
            self._fail(events, 1007, "invalid UTF-8 in a text message")

    def _finish_text_frame(self, data: memoryview, pos: int, events: List[Event]) -> int:
        """Complete the text frame at ``pos`` whose payload earlier calls
        began to decode; return the offset after it."""
        header_size = self._frame_header_size
        payload_start = pos + header_size
        frame_end = pos + self._frame_size
        rest: Buffer = data[payload_start + self._text_done : frame_end]
        if self._masked_bit:
            rest = _mask(rest, _key_at(bytes(data[payload_start - 4 : payload_start]), self._text_done))
        self._text_done = 0
        fin = self._frame_first & 0x80
        try:
            self._fragments.append(_decode_chunk(self._decoder, rest, bool(fin)))
        except UnicodeDecodeError:
            return self._fail(events, 1007, "invalid UTF-8 in a text message")
        if fin:
            events.append("".join(cast(List[str], self._fragments)))
            self._message_opcode = 0
            self._message_size = 0
            self._fragments = []
        else:
            self._message_opcode = OP_TEXT
            self._message_size += self._frame_size - header_size
        return frame_end

    def _close(self, events: List[Event], payload: Buffer) -> int:
        if not payload:
            events.append(Close(1005, ""))
        elif len(payload) == 1:
            return self._fail(events, 1002, "close frame with a 1-byte payload")
        else:
            code = (payload[0] << 8) | payload[1]
            if not _is_valid_close_code(code):
                return self._fail(events, 1002, "invalid close code")
            try:
                reason = _utf8_decode(payload[2:], "strict", True)[0]
            except UnicodeDecodeError:
                return self._fail(events, 1007, "invalid UTF-8 in a close reason")
            events.append(Close(code, reason))
        self.closed = True
        self._fragments = []
        return 0


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


def _header(opcode: int, length: int, fin: bool, mask_bit: int, rsv1: bool = False) -> bytes:
    first = opcode | 0x80 if fin else opcode
    if rsv1:
        first |= 0x40
    if length < 126:
        return bytes((first, mask_bit | length))
    if length < 0x10000:
        return _pack_16(first, mask_bit | 126, length)
    return _pack_64(first, mask_bit | 127, length)


class FrameWriter:
    """Encodes frames for one side of a connection.

    A client writer masks every frame with a fresh random key; a server
    writer never masks, so one encoded server frame can be sent to many
    connections.
    """

    __slots__ = ("_is_client", "_keys", "_key_offset")

    def __init__(self, is_client: bool) -> None:
        self._is_client = bool(is_client)
        self._keys = b""
        self._key_offset = 0

    def encode(self, opcode: int, payload: Union[Buffer, str], fin: bool = True, rsv1: bool = False) -> bytes:
        """One complete frame; a ``str`` payload is encoded as UTF-8.

        ``rsv1`` marks the first frame of a compressed message (RFC 7692).
        """
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        elif not isinstance(payload, (bytes, bytearray)):
            payload = _as_bytes_view(payload)
        length = len(payload)
        _check_frame(opcode, length, fin)
        if rsv1 and not OP_TEXT <= opcode <= OP_BINARY:
            raise ValueError("only the first frame of a text or binary message can be compressed")
        if not self._is_client:
            return _header(opcode, length, fin, 0, rsv1) + payload
        key = self._next_key()
        return _header(opcode, length, fin, 0x80, rsv1) + key + _mask(payload, key)

    def encode_into(self, buffer: Buffer, opcode: int, payload: Buffer, fin: bool = True) -> int:
        """Encode one frame into the start of the writable ``buffer``; return its length.

        For frames with large payloads, built in a buffer that is reused
        rather than in a new bytes object every time. ``payload`` is
        bytes-like and must not share memory with ``buffer``.
        """
        if isinstance(payload, str):
            raise TypeError("encode_into() takes a bytes-like payload, not str")
        with memoryview(buffer) as out:
            if out.readonly:
                raise TypeError("encode_into() needs a writable buffer")
            frame = self.encode(opcode, payload, fin)
            if out.nbytes < len(frame):
                raise ValueError(f"a buffer of {out.nbytes} bytes cannot hold a frame of {len(frame)}")
            with out.cast("B") as octets:
                octets[: len(frame)] = frame
        return len(frame)

    def encode_close(self, code: Optional[int] = 1000, reason: str = "") -> bytes:
        """A Close frame; ``code=None`` sends one without a payload."""
        if code is None:
            if reason:
                raise ValueError("a close reason needs a close code")
            return self.encode(OP_CLOSE, b"")
        if not isinstance(code, int) or not _is_valid_close_code(code):
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
        return _header(opcode, length, fin, 0)

    def _next_key(self) -> bytes:
        offset = self._key_offset
        if offset == len(self._keys):
            self._keys = os.urandom(MASK_POOL_SIZE)
            offset = 0
        self._key_offset = offset + 4
        return self._keys[offset : offset + 4]
