# The C kernel of permessage-deflate (src/deflate.c), for anynet._deflate_c.

cdef extern from "deflate.h" nogil:
    ctypedef struct anynet_zstream:
        int ready

    ctypedef struct anynet_output:
        unsigned char *data
        size_t size
        size_t capacity

    int ANYNET_ZLIB_OK
    int ANYNET_ZLIB_NO_MEMORY
    int ANYNET_ZLIB_TOO_BIG
    int ANYNET_ZLIB_BAD_DATA

    int anynet_deflate_message(anynet_zstream *stream, int level, int window_bits, int mem_level,
                               int reset, const unsigned char *data, size_t size, anynet_output *out)
    int anynet_inflate_message(anynet_zstream *stream, int window_bits, int reset,
                               const unsigned char *data, size_t size, size_t limit, anynet_output *out)
    void anynet_deflate_end(anynet_zstream *stream)
    void anynet_inflate_end(anynet_zstream *stream)
    void anynet_output_trim(anynet_output *out, size_t keep)
