# C types for anynet/_deflate.py, compiled as anynet._deflate_c (Cython's
# pure-Python mode: the .py is the one source of both builds).

cimport cython

cpdef int mem_level_for(int window_bits)
cdef int _deflate_bits(int window_bits)
cdef bytes _without_tail(bytes compressed, bytes flushed)
cdef object _shared_compressor(int window_bits, int level, int mem_level)
cdef void _forget_shared_compressor(int window_bits, int level, int mem_level) except *


@cython.final
cdef class Deflater:
    cdef readonly int window_bits
    cdef readonly bint no_context_takeover
    cdef readonly int level
    cdef readonly int mem_level
    cdef object _compressor

    cpdef bytes compress(self, data)


@cython.final
cdef class Inflater:
    cdef readonly int window_bits
    cdef readonly bint no_context_takeover
    cdef readonly object max_size
    cdef object _decompressor

    cpdef object decompress(self, data, bint text)
