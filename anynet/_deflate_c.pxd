# C types for anynet/_deflate.py, compiled as anynet._deflate_c (Cython's
# pure-Python mode: the .py is the one source of both builds).

cimport cython
from anynet._deflate_kernel cimport anynet_output, anynet_zstream

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

    cpdef bytes compress(self, data)
    @cython.locals(view=Py_buffer, status=int)
    cdef bytes _compress_c(self, data)
    cdef _Stream _borrow(self, _ThreadState state)


@cython.final
cdef class Inflater:
    cdef readonly int window_bits
    cdef readonly bint no_context_takeover
    cdef readonly object max_size
    cdef object _zobj
    cdef _Stream _stream

    cpdef object decompress(self, data, bint text)
    @cython.locals(view=Py_buffer, status=int, limit=size_t)
    cdef object _decompress_c(self, data, bint text)
    cdef _Stream _borrow(self, _ThreadState state)
