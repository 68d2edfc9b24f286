/* Strict UTF-8 validation: ASCII runs are skipped 16 bytes at a time, whole
 * code points are checked with a few comparisons each, and a small state
 * machine carries a code point that a chunk boundary splits. */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

#define HIGH_BITS 0x8080808080808080ULL

/* Byte classes, following the table of well-formed byte sequences in the
 * Unicode standard (chapter 3, table 3-7). */
enum {
    C_ASCII,    /* 00..7F */
    C_CONT_LO,  /* 80..8F */
    C_CONT_MID, /* 90..9F */
    C_CONT_HI,  /* A0..BF */
    C_INVALID,  /* C0, C1, F5..FF */
    C_LEAD2,    /* C2..DF */
    C_E0,       /* E0: second byte A0..BF */
    C_LEAD3,    /* E1..EC, EE, EF */
    C_ED,       /* ED: second byte 80..9F (no surrogates) */
    C_F0,       /* F0: second byte 90..BF */
    C_LEAD4,    /* F1..F3 */
    C_F4,       /* F4: second byte 80..8F (nothing above U+10FFFF) */
    CLASS_COUNT
};

/* States inside a code point, after ACCEPT and REJECT: how many continuation
 * bytes are still due, and which range the next one must fall in. */
enum { S_NEED1 = 2, S_NEED2, S_NEED3, S_E0, S_ED, S_F0, S_F4, STATE_COUNT };

static unsigned char byte_class(unsigned char c) {
    if (c < 0x80) return C_ASCII;
    if (c < 0x90) return C_CONT_LO;
    if (c < 0xA0) return C_CONT_MID;
    if (c < 0xC0) return C_CONT_HI;
    if (c < 0xC2) return C_INVALID;
    if (c < 0xE0) return C_LEAD2;
    if (c == 0xE0) return C_E0;
    if (c == 0xED) return C_ED;
    if (c < 0xF0) return C_LEAD3;
    if (c == 0xF0) return C_F0;
    if (c < 0xF4) return C_LEAD4;
    if (c == 0xF4) return C_F4;
    return C_INVALID;
}

static const unsigned char transitions[STATE_COUNT][CLASS_COUNT] = {
#define R ANYNET_UTF8_REJECT
#define A ANYNET_UTF8_ACCEPT
    /*            ASCII CONT_LO CONT_MID CONT_HI INVALID LEAD2   E0    LEAD3    ED    F0    LEAD4    F4 */
    /* ACCEPT */ {A,    R,      R,       R,      R,      S_NEED1, S_E0, S_NEED2, S_ED, S_F0, S_NEED3, S_F4},
    /* REJECT */ {R,    R,      R,       R,      R,      R,       R,    R,       R,    R,    R,       R},
    /* NEED1 */  {R,    A,      A,       A,      R,      R,       R,    R,       R,    R,    R,       R},
    /* NEED2 */  {R,    S_NEED1, S_NEED1, S_NEED1, R,    R,       R,    R,       R,    R,    R,       R},
    /* NEED3 */  {R,    S_NEED2, S_NEED2, S_NEED2, R,    R,       R,    R,       R,    R,    R,       R},
    /* E0 */     {R,    R,      R,       S_NEED1, R,     R,       R,    R,       R,    R,    R,       R},
    /* ED */     {R,    S_NEED1, S_NEED1, R,     R,      R,       R,    R,       R,    R,    R,       R},
    /* F0 */     {R,    R,      S_NEED2, S_NEED2, R,     R,       R,    R,       R,    R,    R,       R},
    /* F4 */     {R,    S_NEED2, R,      R,      R,      R,       R,    R,       R,    R,    R,       R},
#undef A
#undef R
};

static inline int step(int state, unsigned char c) { return transitions[state][byte_class(c)]; }

static inline int is_continuation(unsigned char c) { return (c & 0xC0) == 0x80; }

static inline int ascii16(const unsigned char *p) {
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    return ((a | b) & HIGH_BITS) == 0;
}

int anynet_utf8_validate(int state, const unsigned char *s, size_t n) {
    const unsigned char *p = s, *end = s + n;

    /* Finish the code point the previous chunk left open. */
    while (state != ANYNET_UTF8_ACCEPT) {
        if (state == ANYNET_UTF8_REJECT || p == end) return state;
        state = step(state, *p++);
    }

    while (p < end) {
        unsigned char c = *p;
        size_t left = (size_t)(end - p);
        if (c < 0x80) {
            p++;
            while (end - p >= 16 && ascii16(p)) p += 16;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (left < 2) break;
            if (!is_continuation(p[1])) return ANYNET_UTF8_REJECT;
            p += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            unsigned char low = c == 0xE0 ? 0xA0 : 0x80, high = c == 0xED ? 0x9F : 0xBF;
            if (left < 3) break;
            if (p[1] < low || p[1] > high || !is_continuation(p[2])) return ANYNET_UTF8_REJECT;
            p += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            unsigned char low = c == 0xF0 ? 0x90 : 0x80, high = c == 0xF4 ? 0x8F : 0xBF;
            if (left < 4) break;
            if (p[1] < low || p[1] > high || !is_continuation(p[2]) || !is_continuation(p[3]))
                return ANYNET_UTF8_REJECT;
            p += 4;
        } else {
            return ANYNET_UTF8_REJECT;
        }
    }

    /* A code point cut by the end of the chunk: keep it if it can still be
     * completed, reject it at once otherwise. */
    while (p < end && state != ANYNET_UTF8_REJECT) state = step(state, *p++);
    return state;
}
