# cython: freethreading_compatible=True
"""WebSocket framing (RFC 6455 section 5) and the connection core, compiled.

The framing has the same interface, events and error reasons as the
pure-Python reference ``anynet._framing``; the differential tests feed both
the same bytes. The connection core (``_connection_core.pxi``) is the twin of
``anynet._connection_core``. What differs is only how the work is done:

* the reader parses straight from the caller's buffer, or from a receive
  buffer it owns (PyMem, not zeroed) that an ``asyncio.BufferedProtocol``
  reads into; payloads are unmasked while they are copied into the final
  ``bytes``/``str``, one pass, and ASCII text is built without decoding;
* the rest of a large binary frame is read straight into its final
  ``bytes``, with no receive buffer in between;
* masking and UTF-8 validation are C kernels (``src/mask.c``, ``src/utf8.c``);
* the writer builds header, key and masked payload in one allocation.

The framing keeps no mutable module-level state: each client writer keeps
its own pool of random masking keys, so it is safe under free threading as
long as each reader and writer is used by one thread at a time. A connection
belongs to its event loop's thread.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memmove

import os
import sys

from anynet._events import Close, Ping, Pong, ProtocolError


cdef extern from "Python.h":
    int PyBUF_READ
    int PyBUF_WRITE
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object text)
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL


cdef extern from "mask.h":
    void anynet_mask(const unsigned char *src, unsigned char *dst, size_t n,
                     const unsigned char *key) nogil
    int anynet_mask_ascii(const unsigned char *src, unsigned char *dst, size_t n,
                          const unsigned char *key) nogil


cdef extern from "utf8.h":
    int ANYNET_UTF8_ACCEPT
    int ANYNET_UTF8_REJECT
    int anynet_utf8_validate(int state, const unsigned char *s, size_t n) nogil


# The same limits as anynet._framing (documented there).
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

cdef enum:
    MAX_CONTROL_PAYLOAD = 125
    MAX_CLOSE_REASON = 123
    READ_BUFFER_SIZE = 120 * 1024
    MIN_READ_SIZE = 4 * 1024
    MAX_PREALLOCATION = 16 * 1024 * 1024
    # A binary frame with at least this much payload still to come is read
    # straight into its message: one copy less than through the receive
    # buffer, which pays for the extra read that stops at the frame's end.
    DIRECT_READ_MIN = 64 * 1024
    MASK_POOL_SIZE = 512
    # Masking or validating this much takes about 0.1 ms: below it, holding
    # the GIL is cheaper than releasing and taking it back.
    NOGIL_THRESHOLD = 4 * 1024 * 1024

cdef uint64_t UINT64_MAX = 0xFFFFFFFFFFFFFFFF

# Where the bytes that arrive after a failure, a Close or stop() are read to be
# dropped: one buffer shared by every reader, as nothing reads it.
cdef char _discarded[65536]

cdef object _Close = Close
cdef object _Ping = Ping
cdef object _Pong = Pong
cdef object _ProtocolError = ProtocolError
cdef object _urandom = os.urandom


cdef inline bint _is_valid_close_code(unsigned int code) noexcept:
    # See anynet._framing._is_valid_close_code.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


cdef bytes _payload(const unsigned char *src, Py_ssize_t size, const unsigned char *key):
    """The payload as bytes, unmasked on the way when ``key`` is set."""
    cdef bytes result = PyBytes_FromStringAndSize(NULL, size)
    if size:
        if key != NULL:
            anynet_mask(src, <unsigned char *>PyBytes_AS_STRING(result), size, key)
        else:
            memcpy(PyBytes_AS_STRING(result), src, size)
    return result


cdef object _decode_utf8(const char *data, Py_ssize_t size):
    """The text, or None when it is not valid UTF-8."""
    try:
        return PyUnicode_DecodeUTF8(data, size, NULL)
    except UnicodeDecodeError:
        return None


cdef object _text(const unsigned char *src, Py_ssize_t size, const unsigned char *key):
    """The payload as str, or None when it is not valid UTF-8."""
    cdef object text
    if size == 0:
        return ""
    if key == NULL:
        return _decode_utf8(<const char *>src, size)
    # Unmask straight into an ASCII string, betting that the text is ASCII:
    # if it is, that one pass was all. Otherwise decode the unmasked bytes
    # from there; the ASCII string never escapes.
    text = PyUnicode_New(size, 127)
    if anynet_mask_ascii(src, <unsigned char *>PyUnicode_DATA(text), size, key):
        return text
    return _decode_utf8(<const char *>PyUnicode_DATA(text), size)


cdef inline void _key_at(const unsigned char *key, Py_ssize_t offset, unsigned char *rotated) noexcept:
    """The 4-byte mask rotated to unmask a payload from ``offset`` on."""
    cdef int i
    for i in range(4):
        rotated[i] = key[(offset + i) & 3]


cdef inline uint64_t _read_u64(const unsigned char *p) noexcept:
    cdef uint64_t value = 0
    cdef int i
    for i in range(8):
        value = (value << 8) | p[i]
    return value


@cython.final
@cython.no_gc
cdef class FrameReader:
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

    cdef:
        unsigned int _masked_bit
        bint _has_limit
        uint64_t _limit
        # Unparsed bytes live in _buffer[_start:_end]; no buffer while idle.
        unsigned char *_buffer
        Py_ssize_t _capacity
        Py_ssize_t _start
        Py_ssize_t _end
        # The incomplete frame at _start once its header is known: its total
        # size (0 until then), header size and first header byte.
        uint64_t _frame_size
        Py_ssize_t _frame_header_size
        unsigned int _frame_first
        # Payload bytes of that frame, if it carries text, already unmasked in
        # place and validated, so that invalid UTF-8 fails before the frame ends.
        Py_ssize_t _text_done
        # A large binary frame being read straight into its message (see
        # _read_payload_directly): the message, how much of it has arrived,
        # and the frame's mask. The receive buffer is released meanwhile.
        bytes _payload
        Py_ssize_t _payload_filled
        unsigned char _payload_key[4]
        # The fragmented message in progress: its opcode (0 when none), its
        # unmasked bytes so far, and the UTF-8 state after them and after the
        # validated part of an incomplete text frame (ACCEPT between messages).
        unsigned int _message_opcode
        unsigned char *_message
        Py_ssize_t _message_size
        Py_ssize_t _message_capacity
        int _utf8_state
        # permessage-deflate, when negotiated, and whether the message in
        # progress is compressed (its fragments are gathered, not validated).
        object _inflater
        bint _compressed
        readonly bint failed
        readonly bint closed

    def __init__(self, is_client, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, inflater=None):
        if max_message_size is not None:
            if not isinstance(max_message_size, int):
                raise TypeError(
                    f"max_message_size must be an int or None, not {type(max_message_size).__name__}"
                )
            if max_message_size < 1:
                raise ValueError(f"max_message_size must be positive or None, not {max_message_size}")
            self._has_limit = True
            # Beyond 2**64 - 1 no message can reach the limit anyway.
            self._limit = max_message_size if max_message_size < UINT64_MAX else UINT64_MAX
        self._masked_bit = 0 if is_client else 0x80
        self._inflater = inflater

    def __dealloc__(self):
        PyMem_Free(self._buffer)
        PyMem_Free(self._message)

    @property
    def buffer_size(self):
        """Bytes of receive buffer currently held (0 while idle), counting a
        large message being read in place."""
        if self._payload is not None:
            return PyBytes_GET_SIZE(self._payload)
        return self._capacity

    def stop(self):
        """Parse nothing more: drop what is buffered, and ignore further input."""
        self.closed = True
        self._payload = None
        self._release()
        self._drop_message()

    def feed(self, data):
        """Parse ``data`` after any incomplete frame kept from earlier calls."""
        cdef Py_buffer view
        cdef const unsigned char *src
        cdef Py_ssize_t consumed = 0, size, tail
        cdef list events
        if self.failed or self.closed:
            return []
        events = []
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            src = <const unsigned char *>view.buf
            size = view.len
            if self._payload is not None:
                consumed = self._fill_payload(src, size, events)
                if self._payload is not None:
                    return events
            if self._start == self._end:
                # Nothing pending: parse straight from the caller's bytes and
                # keep only the incomplete tail.
                consumed = self._parse(src, consumed, size, events)
                if consumed < size and not (self.failed or self.closed):
                    tail = size - consumed
                    if not self._read_payload_directly(src + consumed, tail, events):
                        self._reserve(max(tail, self._wanted_space()))
                        memcpy(self._buffer + self._end, src + consumed, tail)
                        self._end += tail
                        self._check_text_prefix(events)
                        if self.failed:
                            self._release()
            else:
                self._reserve(max(size - consumed, self._wanted_space()))
                memcpy(self._buffer + self._end, src + consumed, size - consumed)
                self._end += size - consumed
                self._parse_buffer(events)
        finally:
            PyBuffer_Release(&view)
        return events

    def get_buffer(self, Py_ssize_t sizehint):
        """Free space for the next read (asyncio.BufferedProtocol.get_buffer).

        ``sizehint`` is only a hint and is ignored: the space offered is enough
        for the rest of a partly received frame (up to the size limit), or an
        ordinary read. Once input is ignored, it is space shared by every
        reader, so that bytes read only to be dropped cost no memory.
        """
        return self._free_space()

    cdef object _free_space(self):
        if self.failed or self.closed:
            return PyMemoryView_FromMemory(_discarded, sizeof(_discarded), PyBUF_WRITE)
        if self._payload is not None:
            return PyMemoryView_FromMemory(
                PyBytes_AS_STRING(self._payload) + self._payload_filled,
                PyBytes_GET_SIZE(self._payload) - self._payload_filled,
                PyBUF_WRITE,
            )
        self._reserve(self._wanted_space())
        return PyMemoryView_FromMemory(
            <char *>self._buffer + self._end, self._capacity - self._end, PyBUF_WRITE
        )

    def buffer_updated(self, Py_ssize_t nbytes):
        """Parse the ``nbytes`` just written into the space from ``get_buffer()``."""
        return self._updated(nbytes)

    cdef list _updated(self, Py_ssize_t nbytes):
        cdef list events
        if self.failed or self.closed:
            return []
        if self._payload is not None:
            if not 0 <= nbytes <= PyBytes_GET_SIZE(self._payload) - self._payload_filled:
                raise ValueError("buffer_updated() without a matching get_buffer()")
            events = []
            # The bytes are in place already: only unmasking is left.
            self._fill_payload(
                <const unsigned char *>PyBytes_AS_STRING(self._payload) + self._payload_filled, nbytes, events
            )
            return events
        if self._buffer == NULL or not 0 <= nbytes <= self._capacity - self._end:
            raise ValueError("buffer_updated() without a matching get_buffer()")
        self._end += nbytes
        events = []
        self._parse_buffer(events)
        return events

    cdef int _parse_buffer(self, list events) except -1:
        if self._text_done and <uint64_t>(self._end - self._start) >= self._frame_size:
            self._finish_text_frame(events)
        if not (self.failed or self.closed):
            self._start = self._parse(self._buffer, self._start, self._end, events)
            if self._start < self._end and not (self.failed or self.closed):
                if self._read_payload_directly(self._buffer + self._start, self._end - self._start, events):
                    self._start = self._end
                else:
                    self._check_text_prefix(events)
        if self._start == self._end or self.failed or self.closed:
            self._release()
        return 0

    cdef bint _read_payload_directly(self, const unsigned char *frame, Py_ssize_t pending,
                                     list events) except -1:
        """Take over the incomplete frame at ``frame``, of which ``pending``
        bytes have arrived, if it is a large binary frame: the rest of its
        payload then goes straight into the message, through get_buffer()
        or feed(), unmasked as it arrives. Its size passed the limit and
        MAX_PREALLOCATION bounds it, as for a receive buffer. True if taken."""
        cdef Py_ssize_t header_size = self._frame_header_size, size
        if (
            not self._frame_size  # its length has not arrived yet
            or pending < header_size  # nor its mask
            or self._frame_first != 0x82
            or self._frame_size > MAX_PREALLOCATION
        ):
            return False
        size = <Py_ssize_t>self._frame_size - header_size
        if size - (pending - header_size) < DIRECT_READ_MIN:
            return False
        self._payload = PyBytes_FromStringAndSize(NULL, size)
        self._payload_filled = 0
        if self._masked_bit:
            memcpy(self._payload_key, frame + header_size - 4, 4)
        self._frame_size = 0
        self._fill_payload(frame + header_size, pending - header_size, events)
        return True

    cdef Py_ssize_t _fill_payload(self, const unsigned char *src, Py_ssize_t count, list events) except -1:
        """Add up to ``count`` bytes from ``src`` (which may be where they
        belong already) to the message being read in place; report it once
        complete. Returns how many bytes it took."""
        cdef unsigned char *out = <unsigned char *>PyBytes_AS_STRING(self._payload) + self._payload_filled
        cdef Py_ssize_t missing = PyBytes_GET_SIZE(self._payload) - self._payload_filled
        cdef unsigned char key[4]
        if count > missing:
            count = missing
        if self._masked_bit:
            _key_at(self._payload_key, self._payload_filled, key)
            anynet_mask(src, out, count, key)
        elif src != out:
            memcpy(out, src, count)
        self._payload_filled += count
        if count == missing:
            events.append(self._payload)
            self._payload = None
        return count

    cdef Py_ssize_t _wanted_space(self) noexcept:
        # See anynet._framing.FrameReader._wanted_space.
        cdef Py_ssize_t pending = self._end - self._start
        cdef Py_ssize_t rest = 0
        if self._frame_size > <uint64_t>pending:
            if self._frame_size > MAX_PREALLOCATION and self._frame_size - pending > <uint64_t>pending:
                rest = max(pending, <Py_ssize_t>READ_BUFFER_SIZE)
            else:
                rest = <Py_ssize_t>(self._frame_size - pending)
        return max(rest, <Py_ssize_t>MIN_READ_SIZE)

    cdef int _reserve(self, Py_ssize_t space) except -1:
        """Ensure ``space`` free bytes after the pending ones, moving the
        pending bytes to the front (at most once) or to a larger buffer."""
        cdef Py_ssize_t pending, capacity
        cdef unsigned char *larger
        if self._buffer == NULL:
            capacity = max(space, <Py_ssize_t>READ_BUFFER_SIZE)
            self._buffer = <unsigned char *>PyMem_Malloc(capacity)
            if self._buffer == NULL:
                raise MemoryError()
            self._capacity = capacity
            return 0
        if self._capacity - self._end >= space:
            return 0
        pending = self._end - self._start
        if self._capacity - pending >= space:
            memmove(self._buffer, self._buffer + self._start, pending)
        else:
            capacity = max(pending + space, <Py_ssize_t>READ_BUFFER_SIZE)
            if self._start == 0:
                larger = <unsigned char *>PyMem_Realloc(self._buffer, capacity)
                if larger == NULL:
                    raise MemoryError()
            else:
                larger = <unsigned char *>PyMem_Malloc(capacity)
                if larger == NULL:
                    raise MemoryError()
                memcpy(larger, self._buffer + self._start, pending)
                PyMem_Free(self._buffer)
            self._buffer = larger
            self._capacity = capacity
        self._start = 0
        self._end = pending
        return 0

    cdef void _release(self) noexcept:
        PyMem_Free(self._buffer)
        self._buffer = NULL
        self._capacity = self._start = self._end = self._text_done = 0
        self._frame_size = 0

    cdef void _drop_message(self) noexcept:
        PyMem_Free(self._message)
        self._message = NULL
        self._message_opcode = 0
        self._message_size = self._message_capacity = 0
        self._utf8_state = ANYNET_UTF8_ACCEPT
        self._compressed = False

    cdef Py_ssize_t _fail(self, list events, int code, str reason) except -1:
        events.append(_ProtocolError(code, reason))
        self.failed = True
        self._drop_message()
        return 0

    cdef Py_ssize_t _parse(self, const unsigned char *data, Py_ssize_t pos, Py_ssize_t end,
                           list events) except -1:
        """Consume every complete frame in ``data[pos:end]``; return the offset
        of the first incomplete one. On a Close or a violation the rest is
        irrelevant and the return value is meaningless."""
        cdef unsigned int first, second, opcode, fin
        cdef unsigned int masked_bit = self._masked_bit
        cdef uint64_t length, frame_size
        cdef Py_ssize_t available, header_size, payload_start, size
        cdef const unsigned char *key
        cdef object message
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
                if opcode == 0x0 or opcode >= 0x8:
                    return self._fail(events, 1002, "RSV1 set on a control or continuation frame")
            if opcode >= 0x8:
                if opcode > 0xA:
                    return self._fail(events, 1002, "unknown opcode")
                if not fin:
                    return self._fail(events, 1002, "fragmented control frame")
                if second & 0x7F > MAX_CONTROL_PAYLOAD:
                    return self._fail(events, 1002, "control frame payload over 125 bytes")
            elif opcode == 0x0:
                if not self._message_opcode:
                    return self._fail(events, 1002, "continuation frame without a message to continue")
            elif opcode > 0x2:
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
                length = (<uint64_t>data[pos + 2] << 8) | data[pos + 3]
                header_size = 4
            elif length == 127:
                if available < 10:
                    return pos
                length = _read_u64(data + pos + 2)
                if length >> 63:
                    return self._fail(events, 1002, "frame length with the most significant bit set")
                header_size = 10
            # _message_size never exceeds the limit, so this cannot wrap around.
            if opcode < 0x8 and self._has_limit and length > self._limit - <uint64_t>self._message_size:
                return self._fail(events, 1009, "message too big")
            if masked_bit:
                header_size += 4
            frame_size = header_size + length
            if <uint64_t>available < frame_size:
                self._frame_size = frame_size
                self._frame_header_size = header_size
                self._frame_first = first
                return pos
            size = <Py_ssize_t>length
            payload_start = pos + header_size
            pos += <Py_ssize_t>frame_size
            key = data + payload_start - 4 if masked_bit else NULL

            if opcode >= 0x8:
                if opcode == 0x9:
                    events.append(_Ping(_payload(data + payload_start, size, key)))
                elif opcode == 0xA:
                    events.append(_Pong(_payload(data + payload_start, size, key)))
                else:
                    return self._close(events, _payload(data + payload_start, size, key))
            elif first & 0x40 and fin:
                if not self._inflate(events, opcode, _payload(data + payload_start, size, key)):
                    return 0
            elif fin and not self._message_opcode:
                if opcode == 0x1:
                    message = _text(data + payload_start, size, key)
                    if message is None:
                        return self._fail(events, 1007, "invalid UTF-8 in a text message")
                    events.append(message)
                else:
                    events.append(_payload(data + payload_start, size, key))
            else:
                if first & 0x40:
                    self._compressed = True
                if not self._fragment(events, opcode, data + payload_start, size, key, fin, 0):
                    return 0

    cdef int _check_text_prefix(self, list events) except -1:
        """Unmask and validate, in place, the payload bytes that arrived since
        the last call of the incomplete frame at ``_start``, if it carries
        text: a text message fails on its first invalid byte, even in the
        middle of a frame."""
        cdef unsigned int opcode = self._frame_first & 0x0F
        cdef unsigned char *payload
        cdef unsigned char *chunk
        cdef Py_ssize_t arrived, count
        cdef unsigned char key[4]
        if not self._frame_size or not (opcode == 0x1 or (opcode == 0x0 and self._message_opcode == 0x1)):
            return 0
        if self._frame_first & 0x40 or self._compressed:
            return 0
        payload = self._buffer + self._start + self._frame_header_size
        arrived = self._end - self._start - self._frame_header_size
        if arrived <= self._text_done:
            return 0
        chunk = payload + self._text_done
        count = arrived - self._text_done
        if self._masked_bit:
            _key_at(payload - 4, self._text_done, key)
            if anynet_mask_ascii(chunk, chunk, count, key) and self._utf8_state == ANYNET_UTF8_ACCEPT:
                # ASCII between complete code points: nothing to validate.
                self._text_done = arrived
                return 0
        self._text_done = arrived
        self._utf8_state = _validate(self._utf8_state, chunk, count)
        if self._utf8_state == ANYNET_UTF8_REJECT:
            self._fail(events, 1007, "invalid UTF-8 in a text message")
        return 0

    cdef int _finish_text_frame(self, list events) except -1:
        """Complete the text frame at ``_start``, whose payload earlier calls
        began to unmask and validate, and move ``_start`` past it."""
        cdef unsigned char *payload = self._buffer + self._start + self._frame_header_size
        cdef Py_ssize_t size = <Py_ssize_t>self._frame_size - self._frame_header_size
        cdef Py_ssize_t done = self._text_done
        cdef unsigned int opcode = self._frame_first & 0x0F, fin = self._frame_first & 0x80
        cdef const unsigned char *key = payload - 4 if self._masked_bit else NULL
        cdef unsigned char rest_key[4]
        cdef object message
        self._text_done = 0
        self._start += <Py_ssize_t>self._frame_size
        if not (fin and opcode == 0x1):
            self._fragment(events, opcode, payload, size, key, fin, done)
            return 0
        # A whole message in one frame: decoding it validates the rest.
        if key != NULL:
            _key_at(key, done, rest_key)
            anynet_mask(payload + done, payload + done, size - done, rest_key)
        self._utf8_state = ANYNET_UTF8_ACCEPT
        message = _decode_utf8(<const char *>payload, size)
        if message is None:
            self._fail(events, 1007, "invalid UTF-8 in a text message")
        else:
            events.append(message)
        return 0

    cdef bint _fragment(self, list events, unsigned int opcode, const unsigned char *src,
                        Py_ssize_t size, const unsigned char *key, unsigned int fin,
                        Py_ssize_t done) except -1:
        """Add one fragment of a fragmented message; False after a violation.

        The first ``done`` bytes of ``src`` are already unmasked and, for
        text, validated (see _check_text_prefix).
        """
        cdef Py_ssize_t offset = self._message_size, capacity
        cdef unsigned char *larger
        cdef unsigned char *out
        cdef unsigned char rest_key[4]
        cdef object message
        cdef bint text
        if opcode:
            self._message_opcode = opcode
        text = self._message_opcode == 0x1 and not self._compressed
        if size:
            if offset + size > self._message_capacity:
                capacity = max(offset + size, 2 * self._message_capacity)
                larger = <unsigned char *>PyMem_Realloc(self._message, capacity)
                if larger == NULL:
                    raise MemoryError()
                self._message = larger
                self._message_capacity = capacity
            out = self._message + offset
            if key != NULL:
                memcpy(out, src, done)
                _key_at(key, done, rest_key)
                anynet_mask(src + done, out + done, size - done, rest_key)
            else:
                memcpy(out, src, size)
            self._message_size = offset + size
            if text:
                # Validating each fragment as it comes: a bad message fails on
                # its first bad fragment, not when it ends.
                self._utf8_state = anynet_utf8_validate(self._utf8_state, out + done, size - done)
        if text and (
            self._utf8_state == ANYNET_UTF8_REJECT or (fin and self._utf8_state != ANYNET_UTF8_ACCEPT)
        ):
            self._fail(events, 1007, "invalid UTF-8 in a text message")
            return False
        if fin and self._compressed:
            message = PyMemoryView_FromMemory(<char *>self._message, self._message_size, PyBUF_READ)
            opcode = self._message_opcode
            try:
                return self._inflate(events, opcode, message)
            finally:
                message.release()
                self._drop_message()
        if fin:
            if text:
                message = PyUnicode_DecodeUTF8(<const char *>self._message, self._message_size, NULL)
            else:
                message = PyBytes_FromStringAndSize(<const char *>self._message, self._message_size)
            events.append(message)
            self._drop_message()
        return True

    cdef bint _inflate(self, list events, unsigned int opcode, object payload) except -1:
        """Report the compressed message ``payload``; False after a violation."""
        try:
            events.append(self._inflater.decompress(payload, opcode == 0x1))
        except _ProtocolError as error:
            self._fail(events, error.code, error.reason)
            return False
        return True

    cdef Py_ssize_t _close(self, list events, bytes payload) except -1:
        cdef Py_ssize_t size = len(payload)
        cdef const unsigned char *data = <const unsigned char *>PyBytes_AS_STRING(payload)
        cdef unsigned int code
        cdef object reason
        if size == 0:
            events.append(_Close(1005, ""))
        elif size == 1:
            return self._fail(events, 1002, "close frame with a 1-byte payload")
        else:
            code = (<unsigned int>data[0] << 8) | data[1]
            if not _is_valid_close_code(code):
                return self._fail(events, 1002, "invalid close code")
            reason = _decode_utf8(<const char *>data + 2, size - 2)
            if reason is None:
                return self._fail(events, 1007, "invalid UTF-8 in a close reason")
            events.append(_Close(code, reason))
        self.closed = True
        self._drop_message()
        return 0


cdef int _check_frame(unsigned int opcode, Py_ssize_t length, bint fin) except -1:
    if opcode >= 0x8:
        if opcode > 0xA:
            raise ValueError(f"unknown opcode {opcode}")
        if not fin:
            raise ValueError("control frames cannot be fragmented")
        if length > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload of {length} bytes; at most 125 are allowed")
    elif opcode > 0x2:
        raise ValueError(f"unknown opcode {opcode}")
    return 0


cdef inline Py_ssize_t _header_size(uint64_t length) noexcept:
    return 2 if length < 126 else 4 if length < 0x10000 else 10


cdef void _write_header(unsigned char *out, unsigned int opcode, uint64_t length, bint fin,
                        unsigned int mask_bit) noexcept:
    cdef int i
    out[0] = opcode | 0x80 if fin else opcode
    if length < 126:
        out[1] = mask_bit | <unsigned int>length
    elif length < 0x10000:
        out[1] = mask_bit | 126
        out[2] = <unsigned char>(length >> 8)
        out[3] = <unsigned char>length
    else:
        out[1] = mask_bit | 127
        for i in range(8):
            out[2 + i] = <unsigned char>(length >> (56 - 8 * i))


@cython.final
@cython.no_gc
cdef class FrameWriter:
    """Encodes frames for one side of a connection.

    A client writer masks every frame with a fresh random key; a server
    writer never masks, so one encoded server frame can be sent to many
    connections.
    """

    cdef bint _is_client
    # Random masking keys, fetched MASK_POOL_SIZE bytes at a time.
    cdef bytes _keys
    cdef Py_ssize_t _key_offset

    def __init__(self, is_client):
        self._is_client = bool(is_client)

    def encode(self, int opcode, payload, bint fin=True, bint rsv1=False):
        """One complete frame; a ``str`` payload is encoded as UTF-8.

        ``rsv1`` marks the first frame of a compressed message (RFC 7692).
        """
        cdef bytes frame
        if not rsv1:
            return self._encode(opcode, payload, fin)
        if not 0x1 <= opcode <= 0x2:
            raise ValueError("only the first frame of a text or binary message can be compressed")
        frame = self._encode(opcode, payload, fin)
        # A new bytes object that nothing else has seen yet.
        (<unsigned char *>PyBytes_AS_STRING(frame))[0] |= 0x40
        return frame

    cdef bytes _encode(self, int opcode, payload, bint fin):
        cdef Py_buffer view
        cdef const char *text
        cdef Py_ssize_t size
        if opcode < 0:
            raise ValueError(f"unknown opcode {opcode}")
        if isinstance(payload, str):
            # The UTF-8 form of an ASCII string is its own storage; others
            # are encoded once into a cache inside the string: no bytes object.
            text = PyUnicode_AsUTF8AndSize(payload, &size)
            return self._frame(opcode, <const unsigned char *>text, size, fin)
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            return self._frame(opcode, <const unsigned char *>view.buf, view.len, fin)
        finally:
            PyBuffer_Release(&view)

    def encode_close(self, code=1000, str reason=""):
        """A Close frame; ``code=None`` sends one without a payload."""
        cdef bytes encoded
        if code is None:
            if reason:
                raise ValueError("a close reason needs a close code")
            return self._frame(0x8, NULL, 0, True)
        if not isinstance(code, int) or not 0 <= code <= 0xFFFF or not _is_valid_close_code(code):
            raise ValueError(f"invalid close code {code!r}")
        encoded = reason.encode("utf-8")
        if len(encoded) > MAX_CLOSE_REASON:
            raise ValueError(f"close reason of {len(encoded)} bytes of UTF-8; at most 123 are allowed")
        return self.encode(0x8, code.to_bytes(2, "big") + encoded)

    def encode_header(self, int opcode, length, bint fin=True):
        """The header of an unmasked (server) frame, so that a large payload can
        be written after it without copying."""
        cdef bytes header
        if self._is_client:
            raise ValueError("a client masks its frames: use encode(), not encode_header()")
        if not 0 <= length < 1 << 63:
            raise ValueError(f"invalid frame length {length}")
        if opcode < 0:
            raise ValueError(f"unknown opcode {opcode}")
        _check_frame(opcode, min(length, 126), fin)
        header = PyBytes_FromStringAndSize(NULL, _header_size(length))
        _write_header(<unsigned char *>PyBytes_AS_STRING(header), opcode, length, fin, 0)
        return header

    def encode_into(self, buffer, int opcode, payload, bint fin=True):
        """Encode one frame into the start of the writable ``buffer``; return its length.

        For frames with large payloads, built in a buffer that is reused
        rather than in a new bytes object every time. ``payload`` is
        bytes-like and must not share memory with ``buffer``.
        """
        cdef Py_buffer out, view
        cdef Py_ssize_t size
        if opcode < 0:
            raise ValueError(f"unknown opcode {opcode}")
        if isinstance(payload, str):
            raise TypeError("encode_into() takes a bytes-like payload, not str")
        try:
            PyObject_GetBuffer(buffer, &out, PyBUF_WRITABLE)
        except BufferError:
            raise TypeError("encode_into() needs a writable buffer") from None
        try:
            PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
            try:
                size = self._frame_size(view.len)
                _check_frame(opcode, view.len, fin)
                if out.len < size:
                    raise ValueError(f"a buffer of {out.len} bytes cannot hold a frame of {size}")
                self._frame_into(<unsigned char *>out.buf, opcode, <const unsigned char *>view.buf, view.len, fin)
                return size
            finally:
                PyBuffer_Release(&view)
        finally:
            PyBuffer_Release(&out)

    cdef inline Py_ssize_t _frame_size(self, Py_ssize_t payload_size) noexcept:
        return _header_size(payload_size) + (4 if self._is_client else 0) + payload_size

    cdef bytes _frame(self, unsigned int opcode, const unsigned char *payload, Py_ssize_t size, bint fin):
        cdef bytes frame
        _check_frame(opcode, size, fin)
        frame = PyBytes_FromStringAndSize(NULL, self._frame_size(size))
        self._frame_into(<unsigned char *>PyBytes_AS_STRING(frame), opcode, payload, size, fin)
        return frame

    cdef int _frame_into(self, unsigned char *out, unsigned int opcode, const unsigned char *payload,
                         Py_ssize_t size, bint fin) except -1:
        cdef Py_ssize_t header_size = _header_size(size)
        cdef const unsigned char *key
        if not self._is_client:
            _write_header(out, opcode, size, fin, 0)
            if size:
                memcpy(out + header_size, payload, size)
            return 0
        key = self._next_key()
        _write_header(out, opcode, size, fin, 0x80)
        memcpy(out + header_size, key, 4)
        if size:
            anynet_mask(payload, out + header_size + 4, size, key)
        return 0

    cdef const unsigned char *_next_key(self) except NULL:
        if self._keys is None or self._key_offset == MASK_POOL_SIZE:
            self._keys = _urandom(MASK_POOL_SIZE)
            self._key_offset = 0
        self._key_offset += 4
        return <const unsigned char *>PyBytes_AS_STRING(self._keys) + self._key_offset - 4


cdef extern from "Python.h":
    ctypedef struct PyByteArrayObject:
        Py_ssize_t ob_exports


def _buffer_exported(bytearray buffer):
    """Whether a view of ``buffer`` exists (a memoryview, or a transport's hold
    on one): while one does, writing into the buffer changes what it shows."""
    return (<PyByteArrayObject *>buffer).ob_exports > 0


# The count of views is CPython's own; elsewhere no buffer is known to be free.
buffer_exported = _buffer_exported if sys.implementation.name == "cpython" else None


def apply_mask(data, mask):
    """Return ``data`` XOR-ed with the 4-byte ``mask`` (masking and unmasking
    are the same operation)."""
    cdef Py_buffer view, key
    cdef bytes result
    cdef unsigned char *out
    PyObject_GetBuffer(mask, &key, PyBUF_SIMPLE)
    try:
        if key.len != 4:
            raise ValueError(f"a WebSocket mask has 4 bytes, not {key.len}")
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            result = PyBytes_FromStringAndSize(NULL, view.len)
            out = <unsigned char *>PyBytes_AS_STRING(result)
            if view.len >= NOGIL_THRESHOLD:
                with nogil:
                    anynet_mask(<const unsigned char *>view.buf, out, view.len,
                                <const unsigned char *>key.buf)
            elif view.len:
                anynet_mask(<const unsigned char *>view.buf, out, view.len, <const unsigned char *>key.buf)
            return result
        finally:
            PyBuffer_Release(&view)
    finally:
        PyBuffer_Release(&key)


cdef int _validate(int state, const unsigned char *data, Py_ssize_t size) noexcept:
    if size >= NOGIL_THRESHOLD:
        with nogil:
            return anynet_utf8_validate(state, data, size)
    return anynet_utf8_validate(state, data, size)


def validate_utf8(data):
    """Whether ``data`` is complete, valid UTF-8."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _validate(ANYNET_UTF8_ACCEPT, <const unsigned char *>view.buf, view.len) == ANYNET_UTF8_ACCEPT
    finally:
        PyBuffer_Release(&view)


@cython.final
cdef class Utf8Validator:
    """Incremental UTF-8 validation across chunks (e.g. message fragments).

    ``feed`` fails as soon as the bytes seen so far cannot begin valid UTF-8,
    including a code point split across chunks that cannot be completed.
    """

    cdef int _state

    def feed(self, data):
        """Add ``data``; False once the input so far is not a prefix of valid UTF-8."""
        cdef Py_buffer view
        if self._state != ANYNET_UTF8_REJECT:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            self._state = _validate(self._state, <const unsigned char *>view.buf, view.len)
            PyBuffer_Release(&view)
        return self._state != ANYNET_UTF8_REJECT

    def finish(self):
        """True iff everything fed so far is complete, valid UTF-8.

        A False answer sticks until ``reset()``.
        """
        if self._state != ANYNET_UTF8_ACCEPT:
            self._state = ANYNET_UTF8_REJECT
        return self._state == ANYNET_UTF8_ACCEPT

    def reset(self):
        """Forget everything fed so far."""
        self._state = ANYNET_UTF8_ACCEPT


include "_connection_core.pxi"
