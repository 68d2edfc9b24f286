#include "deflate.h"

#include <stdlib.h>
#include <string.h>

static const unsigned char TAIL[4] = {0x00, 0x00, 0xff, 0xff};

/* Ensure room for at least `wanted` bytes; false when out of memory. */
static int reserve(anynet_output *out, size_t wanted)
{
    unsigned char *larger;
    if (wanted <= out->capacity)
        return 1;
    larger = realloc(out->data, wanted);
    if (larger == NULL)
        return 0;
    out->data = larger;
    out->capacity = wanted;
    return 1;
}

int anynet_deflate_message(anynet_zstream *stream, int level, int window_bits, int mem_level,
                           int reset, const unsigned char *in, size_t size, anynet_output *out)
{
    z_stream *z = &stream->z;
    size_t bound;
    int status;
    if (size > 0xFFFFFFFFu)
        return ANYNET_ZLIB_TOO_BIG; /* zlib counts input in 32 bits */
    if (!stream->ready) {
        memset(z, 0, sizeof(*z));
        /* Raw DEFLATE (negative bits). zlib refuses a 256-byte window for raw
           streams; a 512-byte one never looks back further than 250 bytes,
           which any peer that asked for 8 bits can follow. */
        if (deflateInit2(z, level, Z_DEFLATED, -(window_bits < 9 ? 9 : window_bits), mem_level,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            return ANYNET_ZLIB_NO_MEMORY;
        stream->ready = 1;
    }
    /* deflateBound() covers Z_FINISH; a sync flush adds at most an empty
       stored block (5 bytes) and the bits of a pending block. */
    bound = deflateBound(z, (uLong)size) + 16;
    if (!reserve(out, bound))
        return ANYNET_ZLIB_NO_MEMORY;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)size;
    z->next_out = out->data;
    z->avail_out = (uInt)out->capacity;
    out->size = 0;
    /* As Python's zlib does it (compress, then flush): the input, then a
       sync flush that ends with an empty stored block even for an empty
       message, which one deflate(Z_SYNC_FLUSH) right after the previous
       message's would refuse to repeat. */
    status = deflate(z, Z_NO_FLUSH);
    if (status == Z_OK || status == Z_BUF_ERROR)
        status = deflate(z, Z_SYNC_FLUSH);
    if (status != Z_OK || z->avail_in != 0 || z->avail_out == 0) {
        /* Cannot happen with the bound above; give up on the stream rather
           than send a broken message. */
        anynet_deflate_end(stream);
        return ANYNET_ZLIB_NO_MEMORY;
    }
    out->size = out->capacity - z->avail_out - 4;
    if (reset)
        deflateReset(z);
    return ANYNET_ZLIB_OK;
}

int anynet_inflate_message(anynet_zstream *stream, int window_bits, int reset,
                           const unsigned char *in, size_t size, size_t limit, anynet_output *out)
{
    z_stream *z = &stream->z;
    size_t most = limit == (size_t)-1 ? limit : limit + 1, capacity, room;
    int status, tail_fed = 0, result = ANYNET_ZLIB_OK;
    if (size > 0xFFFFFFFFu)
        return ANYNET_ZLIB_TOO_BIG; /* zlib counts input in 32 bits */
    if (!stream->ready) {
        memset(z, 0, sizeof(*z));
        if (inflateInit2(z, -window_bits) != Z_OK)
            return ANYNET_ZLIB_NO_MEMORY;
        stream->ready = 1;
    }
    out->size = 0;
    z->next_in = (Bytef *)in;
    z->avail_in = (uInt)size;
    for (;;) {
        if (z->avail_in == 0 && !tail_fed) {
            z->next_in = (Bytef *)TAIL;
            z->avail_in = 4;
            tail_fed = 1;
        }
        /* The output may be a buffer kept from a larger message: still
           offer zlib no more than the limit allows. */
        room = (out->capacity < most ? out->capacity : most) - out->size;
        if (room == 0) {
            if (out->size >= most) {
                result = ANYNET_ZLIB_TOO_BIG;
                break;
            }
            /* Geometric growth, from a guess at the ratio of text, never past
               the limit: a bomb costs at most limit + 1 bytes. */
            capacity = out->capacity ? 2 * out->capacity : 4 * size + 256;
            if (capacity > most)
                capacity = most;
            if (!reserve(out, capacity)) {
                result = ANYNET_ZLIB_NO_MEMORY;
                break;
            }
            room = (out->capacity < most ? out->capacity : most) - out->size;
        }
        if (room > 0xFFFFFFFFu)
            room = 0xFFFFFFFFu;
        z->next_out = out->data + out->size;
        z->avail_out = (uInt)room;
        status = inflate(z, Z_SYNC_FLUSH);
        out->size += room - z->avail_out;
        if (status == Z_STREAM_END) {
            /* A final block (section 7.2.3.4): what follows is the tail. */
            inflateReset(z);
            break;
        }
        if (status == Z_BUF_ERROR) {
            /* No progress possible: done if all input is in, else it needs room. */
            if (z->avail_out != 0)
                break;
            continue;
        }
        if (status != Z_OK) {
            result = status == Z_MEM_ERROR ? ANYNET_ZLIB_NO_MEMORY : ANYNET_ZLIB_BAD_DATA;
            break;
        }
        if (z->avail_in == 0 && tail_fed && z->avail_out != 0)
            break;
    }
    if (result == ANYNET_ZLIB_OK && out->size > limit)
        result = ANYNET_ZLIB_TOO_BIG;
    if (result != ANYNET_ZLIB_OK || reset)
        inflateReset(z);
    return result;
}

void anynet_deflate_end(anynet_zstream *stream)
{
    if (stream->ready) {
        deflateEnd(&stream->z);
        stream->ready = 0;
    }
}

void anynet_inflate_end(anynet_zstream *stream)
{
    if (stream->ready) {
        inflateEnd(&stream->z);
        stream->ready = 0;
    }
}

void anynet_output_trim(anynet_output *out, size_t keep)
{
    if (out->capacity > keep) {
        free(out->data);
        out->data = NULL;
        out->capacity = 0;
    }
    out->size = 0;
}
