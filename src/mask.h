/* WebSocket masking (RFC 6455 section 5.3): XOR with a repeating 4-byte key. */
#ifndef ANYNET_MASK_H
#define ANYNET_MASK_H

#include <stddef.h>

/* Writes src XOR key (repeated from key[0]) to dst; dst may be src. */
void anynet_mask(const unsigned char *src, unsigned char *dst, size_t n,
                 const unsigned char *key);

/* The same, returning nonzero iff every byte written to dst is ASCII. */
int anynet_mask_ascii(const unsigned char *src, unsigned char *dst, size_t n,
                      const unsigned char *key);

#endif
