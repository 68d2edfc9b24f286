/* permessage-deflate (RFC 7692) on zlib: whole messages in, whole messages out. */
#ifndef ANYNET_DEFLATE_H
#define ANYNET_DEFLATE_H

#include <stddef.h>
#include <zlib.h>

/* A zlib stream that is set up on first use (an idle connection holds none). */
typedef struct {
    z_stream z;
    int ready;
} anynet_zstream;

/* A growable output buffer. */
typedef struct {
    unsigned char *data;
    size_t size;
    size_t capacity;
} anynet_output;

enum {
    ANYNET_ZLIB_OK = 0,
    ANYNET_ZLIB_NO_MEMORY = 1,
    ANYNET_ZLIB_TOO_BIG = 2,     /* the inflated message exceeds the limit */
    ANYNET_ZLIB_BAD_DATA = 3,    /* not a valid DEFLATE stream */
};

/* Compress one message into out (replacing its contents): DEFLATE blocks
   ending with a sync flush whose 4-byte tail (00 00 ff ff) is removed, as
   RFC 7692 section 7.2.1 sends it. reset: start the next message with an
   empty window (no context takeover). */
int anynet_deflate_message(anynet_zstream *stream, int level, int window_bits, int mem_level,
                           int reset, const unsigned char *in, size_t size, anynet_output *out);

/* Inflate one message (its payload without the tail, which is added here)
   into out (replacing its contents). More than limit bytes of output stop it
   with ANYNET_ZLIB_TOO_BIG, having allocated at most limit + 1 bytes. */
int anynet_inflate_message(anynet_zstream *stream, int window_bits, int reset,
                           const unsigned char *in, size_t size, size_t limit, anynet_output *out);

/* Free a stream's zlib state (it is set up again on next use). */
void anynet_deflate_end(anynet_zstream *stream);
void anynet_inflate_end(anynet_zstream *stream);

/* Free the output's memory if it holds more than keep bytes. */
void anynet_output_trim(anynet_output *out, size_t keep);

#endif
