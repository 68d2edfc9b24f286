/* Strict UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF) that can resume across chunks, e.g. message fragments. */
#ifndef ANYNET_UTF8_H
#define ANYNET_UTF8_H

#include <stddef.h>

/* Validator states: ACCEPT between code points, REJECT for good once the
 * input cannot be valid UTF-8; any other value is inside a code point. */
#define ANYNET_UTF8_ACCEPT 0
#define ANYNET_UTF8_REJECT 6

/* Continues validation from state over n bytes and returns the new state. */
int anynet_utf8_validate(int state, const unsigned char *s, size_t n);

#endif
