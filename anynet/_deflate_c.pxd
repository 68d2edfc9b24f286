# C types for anynet/_deflate.py, compiled as anynet._deflate_c (Cython's
# pure-Python mode: the .py is the one source of both builds).

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memset

from anynet._deflate_kernel cimport (
    ANYNET_ZLIB_BAD_DATA,
    ANYNET_ZLIB_NO_MEMORY,
    ANYNET_ZLIB_TOO_BIG,
    anynet_deflate_end,
    anynet_deflate_message,
    anynet_inflate_end,
    anynet_inflate_message,
    anynet_output,
    anynet_output_trim,
    anynet_zstream,
)

cdef size_t _KEPT_OUTPUT
cdef size_t _NO_LIMIT

cpdef int mem_level_for(int window_bits)
cdef int _deflate_bits(int window_bits)


@cython.final
cdef class _ThreadState:
    cdef dict streams
    cdef anynet_output output


@cython.final
cdef class _Stream:
    cdef bint inflating
    cdef anynet_zstream *stream
    cdef void end(self) noexcept


cdef _ThreadState _thread_state()
cdef _Stream _shared_stream(_ThreadState state, tuple key)


@cython.final
cdef class Deflater:
    cdef readonly int window_bits
    cdef readonly bint no_context_takeover
    cdef readonly int level
    cdef readonly int mem_level
    cdef object _zobj
    cdef _Stream _stream

    @cython.locals(view=Py_buffer, status=int, state=_ThreadState, stream=_Stream)
    cpdef bytes compress(self, data)
    cdef _Stream _borrow(self, _ThreadState state)


@cython.final
cdef class Inflater:
    cdef readonly int window_bits
    cdef readonly bint no_context_takeover
    cdef readonly object max_size
    cdef object _zobj
    cdef _Stream _stream

    @cython.locals(view=Py_buffer, status=int, limit=size_t, state=_ThreadState, stream=_Stream,
                   output=cython.p_char)
    cpdef object decompress(self, data, bint text)
    cdef _Stream _borrow(self, _ThreadState state)
