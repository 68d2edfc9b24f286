# The C types of anynet/_framing.py when Cython compiles it as
# anynet._framing_c (an augmenting .pxd: the logic is all in the .py). A
# "memory" argument there is a C pointer here; the connection core cimports
# the two classes to call their methods as C functions.

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memmove


cdef extern from "Python.h":
    int PyBUF_WRITE
    object PyMemoryView_FromMemory(char *mem, Py_ssize_t size, int flags)
    Py_buffer *PyMemoryView_GET_BUFFER(object view)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object text)
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL
    ctypedef struct PyByteArrayObject:
        Py_ssize_t ob_exports


cdef extern from *:
    unsigned char *NO_MEMORY "NULL"


cdef extern from "mask.h":
    void anynet_mask(const unsigned char *src, unsigned char *dst, size_t n,
                     const unsigned char *key) nogil
    int anynet_mask_ascii(const unsigned char *src, unsigned char *dst, size_t n,
                          const unsigned char *key) nogil


cdef extern from "utf8.h":
    int ANYNET_UTF8_ACCEPT
    int ANYNET_UTF8_REJECT
    int anynet_utf8_validate(int state, const unsigned char *s, size_t n) nogil


cdef int OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG
cdef Py_ssize_t MAX_CONTROL_PAYLOAD, MAX_CLOSE_REASON, READ_BUFFER_SIZE, MIN_READ_SIZE
cdef Py_ssize_t MAX_PREALLOCATION, DIRECT_READ_MIN, MASK_POOL_SIZE, DISCARD_SIZE, NOGIL_THRESHOLD
cdef unsigned char *_discarded
cdef object Close, Ping, Pong, ProtocolError, _urandom


cdef bint _is_valid_close_code(unsigned int code) noexcept

cdef unsigned char *_allocate(Py_ssize_t size) except NULL
cdef unsigned char *_reallocate(unsigned char *memory, Py_ssize_t used, Py_ssize_t size) except NULL
cdef void _free(void *memory) noexcept
cdef bytes _new_bytes(Py_ssize_t size)
cdef unsigned char *_bytes_memory(bytes data) noexcept
cdef bytes _finished_bytes(bytes data)
cdef unsigned char *_view_memory(object view) noexcept
cdef object _writable_view(unsigned char *memory, Py_ssize_t start, Py_ssize_t size)
cdef void _copy(unsigned char *target, Py_ssize_t target_start, const unsigned char *source,
                       Py_ssize_t source_start, Py_ssize_t size) noexcept
cdef void _move(unsigned char *memory, Py_ssize_t target_start, Py_ssize_t source_start,
                       Py_ssize_t size) noexcept
@cython.locals(i=int)
cdef bint _unmask(unsigned char *target, Py_ssize_t target_start, const unsigned char *source,
                  Py_ssize_t source_start, Py_ssize_t size, const unsigned char *key, Py_ssize_t key_start,
                  Py_ssize_t offset, bint check_ascii=*) noexcept
@cython.locals(result=bytes)
cdef bytes _payload(const unsigned char *data, Py_ssize_t start, Py_ssize_t size, Py_ssize_t key)
cdef object _decode_utf8(const unsigned char *data, Py_ssize_t start, Py_ssize_t size)
@cython.locals(out=cython.p_uchar)
cdef object _text(const unsigned char *data, Py_ssize_t start, Py_ssize_t size, Py_ssize_t key)
cdef int _validate(int state, const unsigned char *data, Py_ssize_t start, Py_ssize_t size) noexcept
@cython.locals(value=uint64_t, i=int)
cdef uint64_t _read_u64(const unsigned char *data, Py_ssize_t start) noexcept
cdef int _check_mask_size(Py_ssize_t size) except -1
@cython.locals(result=bytes, out=cython.p_uchar, source=cython.p_uchar, key_bytes=cython.p_uchar)
cpdef bytes apply_mask(data, mask)
cpdef bint validate_utf8(data) except -1
cpdef bint _buffer_exported(bytearray buffer) except -1
cdef int _check_frame(int opcode, uint64_t length, bint fin) except -1
cdef Py_ssize_t _header_size(uint64_t length) noexcept
@cython.locals(i=int)
cdef void _write_header(unsigned char *out, int opcode, uint64_t length, bint fin, unsigned int mask_bit) noexcept


cdef bytes _with_rsv1(bytes frame)


@cython.final
cdef class Utf8Validator:
    cdef int _state


@cython.final
@cython.no_gc
cdef class FrameReader:
    cdef:
        unsigned int _masked_bit
        bint _has_limit
        uint64_t _limit
        uint64_t _compressed_limit
        unsigned char *_buffer
        Py_ssize_t _capacity
        Py_ssize_t _start
        Py_ssize_t _end
        uint64_t _frame_size
        Py_ssize_t _frame_header_size
        unsigned int _frame_first
        Py_ssize_t _text_done
        bytes _payload
        Py_ssize_t _payload_filled
        unsigned char _payload_key[4]
        unsigned int _message_opcode
        unsigned char *_message
        Py_ssize_t _message_size
        Py_ssize_t _message_capacity
        int _utf8_state
        object _inflater
        bint _compressed
        object _seek_skip
        bytes _seek_pending
        object _read_buffer
        readonly bint failed
        readonly bint closed
        readonly bint seeking

    cpdef object get_buffer(self, Py_ssize_t sizehint)
    @cython.locals(shared=object)
    cpdef list buffer_updated(self, Py_ssize_t nbytes)
    @cython.locals(consumed=Py_ssize_t, tail=Py_ssize_t)
    cdef void _feed(self, unsigned char *data, Py_ssize_t size, list events)
    cdef void _parse_buffer(self, list events)
    @cython.locals(header_size=Py_ssize_t, size=Py_ssize_t)
    cdef bint _read_payload_directly(self, const unsigned char *data, Py_ssize_t start, Py_ssize_t pending,
                                     list events) except -1
    @cython.locals(filled=Py_ssize_t, missing=Py_ssize_t, out=cython.p_uchar)
    cdef Py_ssize_t _fill_payload(self, const unsigned char *data, Py_ssize_t start, Py_ssize_t count,
                                  list events) except -1
    @cython.locals(pending=Py_ssize_t, rest=Py_ssize_t)
    cdef Py_ssize_t _wanted_space(self) noexcept
    @cython.locals(pending=Py_ssize_t, capacity=Py_ssize_t, larger=cython.p_uchar)
    cdef void _reserve(self, Py_ssize_t space)
    cdef void _release(self) noexcept
    cdef void _drop_message(self) noexcept
    cdef Py_ssize_t _fail(self, list events, int code, str reason) except -1
    @cython.locals(masked_bit=cython.uint, first=cython.uint, second=cython.uint, opcode=cython.uint,
                   fin=cython.uint, length=uint64_t, frame_size=uint64_t, available=Py_ssize_t,
                   header_size=Py_ssize_t, payload_start=Py_ssize_t, size=Py_ssize_t, key=Py_ssize_t,
                   limit=uint64_t)
    cdef Py_ssize_t _parse(self, const unsigned char *data, Py_ssize_t pos, Py_ssize_t end,
                           list events) except -1
    @cython.locals(opcode=cython.uint, payload=Py_ssize_t, arrived=Py_ssize_t, done=Py_ssize_t,
                   buffer=cython.p_uchar)
    cdef void _check_text_prefix(self, list events)
    @cython.locals(buffer=cython.p_uchar, payload=Py_ssize_t, size=Py_ssize_t, done=Py_ssize_t,
                   key=Py_ssize_t, opcode=cython.uint, fin=cython.uint)
    cdef void _finish_text_frame(self, list events)
    @cython.locals(offset=Py_ssize_t, capacity=Py_ssize_t, text=bint)
    cdef bint _fragment(self, list events, unsigned int opcode, const unsigned char *data, Py_ssize_t start,
                        Py_ssize_t size, Py_ssize_t key, unsigned int fin, Py_ssize_t done) except -1
    cdef bint _inflate(self, list events, unsigned int opcode, object payload) except -1
    @cython.locals(size=Py_ssize_t, code=cython.uint)
    cdef Py_ssize_t _close(self, list events, bytes payload) except -1
    cdef int _resync(self, uint64_t skip, const unsigned char *data, Py_ssize_t start, Py_ssize_t end) except -1


@cython.final
@cython.no_gc
cdef class FrameWriter:
    cdef bint _is_client
    cdef bytes _keys
    cdef Py_ssize_t _key_offset

    cpdef bytes encode(self, int opcode, payload, bint fin=*, bint rsv1=*)
    cdef Py_ssize_t _frame_size(self, Py_ssize_t payload_size) noexcept
    cdef bytes _frame(self, int opcode, const unsigned char *payload, Py_ssize_t size, bint fin)
    @cython.locals(frame_size=Py_ssize_t)
    cdef Py_ssize_t _encode_into(self, unsigned char *out, Py_ssize_t capacity, int opcode,
                                 const unsigned char *payload, Py_ssize_t size, bint fin) except -1
    @cython.locals(header_size=Py_ssize_t, key=Py_ssize_t, keys=cython.p_uchar)
    cdef int _frame_into(self, unsigned char *out, int opcode, const unsigned char *payload, Py_ssize_t size,
                         bint fin) except -1
    cdef Py_ssize_t _next_key(self) except -1
