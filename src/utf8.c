/* Strict UTF-8 validation as a state machine that resumes across chunks.
 *
 * ASCII runs are skipped 64 bytes at a time (16 with SSE2/NEON loads, 8 with
 * portable 64-bit loads). Everything else goes through a "shift DFA": each
 * byte's table row packs the next state for every current state into one
 * 64-bit word, each state being the bit offset of its 6-bit slot, so one
 * step is a table load that does not depend on the state plus one shift that
 * does. That keeps multi-byte text near one cycle per byte, with no branches
 * to mispredict on mixed scripts. */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

#include "simd.h"

/* States are bit offsets of 6-bit slots. ACCEPT and REJECT must match utf8.h. */
#define S_ACCEPT 0  /* between code points */
#define S_REJECT 6  /* not UTF-8, for good */
#define S_NEED1 12  /* one continuation byte due */
#define S_NEED2 18  /* two */
#define S_NEED3 24  /* three */
#define S_E0 30     /* after E0: A0..BF (no overlong forms) */
#define S_ED 36     /* after ED: 80..9F (no surrogates) */
#define S_F0 42     /* after F0: 90..BF (no overlong forms) */
#define S_F4 48     /* after F4: 80..8F (nothing above U+10FFFF) */

#if ANYNET_UTF8_ACCEPT != S_ACCEPT || ANYNET_UTF8_REJECT != S_REJECT
#error "utf8.h and utf8.c disagree on the state numbers"
#endif

/* The next state from each state on byte b, following the table of
 * well-formed byte sequences in the Unicode standard (chapter 3, table 3-7). */
#define IS_CONT(b) ((b) >= 0x80 && (b) <= 0xBF)
#define FROM_ACCEPT(b)                               \
    ((b) < 0x80                  ? S_ACCEPT          \
     : (b) >= 0xC2 && (b) <= 0xDF ? S_NEED1          \
     : (b) == 0xE0                ? S_E0             \
     : (b) == 0xED                ? S_ED             \
     : (b) >= 0xE1 && (b) <= 0xEF ? S_NEED2          \
     : (b) == 0xF0                ? S_F0             \
     : (b) >= 0xF1 && (b) <= 0xF3 ? S_NEED3          \
     : (b) == 0xF4                ? S_F4             \
                                  : S_REJECT)
#define FROM_NEED1(b) (IS_CONT(b) ? S_ACCEPT : S_REJECT)
#define FROM_NEED2(b) (IS_CONT(b) ? S_NEED1 : S_REJECT)
#define FROM_NEED3(b) (IS_CONT(b) ? S_NEED2 : S_REJECT)
#define FROM_E0(b) ((b) >= 0xA0 && (b) <= 0xBF ? S_NEED1 : S_REJECT)
#define FROM_ED(b) ((b) >= 0x80 && (b) <= 0x9F ? S_NEED1 : S_REJECT)
#define FROM_F0(b) ((b) >= 0x90 && (b) <= 0xBF ? S_NEED2 : S_REJECT)
#define FROM_F4(b) ((b) >= 0x80 && (b) <= 0x8F ? S_NEED2 : S_REJECT)

#define ROW(b)                                                                      \
    ((uint64_t)FROM_ACCEPT(b) << S_ACCEPT | (uint64_t)S_REJECT << S_REJECT |        \
     (uint64_t)FROM_NEED1(b) << S_NEED1 | (uint64_t)FROM_NEED2(b) << S_NEED2 |      \
     (uint64_t)FROM_NEED3(b) << S_NEED3 | (uint64_t)FROM_E0(b) << S_E0 |            \
     (uint64_t)FROM_ED(b) << S_ED | (uint64_t)FROM_F0(b) << S_F0 |                  \
     (uint64_t)FROM_F4(b) << S_F4)
#define ROW4(b) ROW(b), ROW((b) + 1), ROW((b) + 2), ROW((b) + 3)
#define ROW16(b) ROW4(b), ROW4((b) + 4), ROW4((b) + 8), ROW4((b) + 12)
#define ROW64(b) ROW16(b), ROW16((b) + 16), ROW16((b) + 32), ROW16((b) + 48)

static const uint64_t rows[256] = {ROW64(0x00), ROW64(0x40), ROW64(0x80), ROW64(0xC0)};

/* Only the low 6 bits of a state matter; the mask costs nothing, since
 * x86-64 and ARM64 shifts ignore the higher bits of the count anyway. */
#define STEP(state, byte) (rows[(byte)] >> ((state) & 63))

/* Whether the 64 bytes at p are all ASCII. */
static inline int ascii64(const unsigned char *p) {
#if defined(ANYNET_SSE2)
    __m128i a = _mm_loadu_si128((const __m128i *)p);
    __m128i b = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(p + 48));
    return _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d))) == 0;
#elif defined(ANYNET_NEON)
    uint8x16_t any = vorrq_u8(vorrq_u8(vld1q_u8(p), vld1q_u8(p + 16)),
                              vorrq_u8(vld1q_u8(p + 32), vld1q_u8(p + 48)));
    return vmaxvq_u8(any) < 0x80;
#else
    uint64_t words[8], any = 0;
    memcpy(words, p, 64);
    for (int i = 0; i < 8; i++) any |= words[i];
    return (any & 0x8080808080808080ULL) == 0;
#endif
}

int anynet_utf8_validate(int state, const unsigned char *s, size_t n) {
    const unsigned char *p = s, *end = s + n;
    uint64_t current = (uint64_t)state;

    while (p < end) {
        const unsigned char *stop;
        if ((current & 63) == S_ACCEPT) {
            while (end - p >= 64 && ascii64(p)) p += 64;
        } else if ((current & 63) == S_REJECT) {
            return ANYNET_UTF8_REJECT;
        }
        /* Then a stretch through the state machine, however the text looks. */
        stop = end - p > 64 ? p + 64 : end;
        while (p < stop) {
            current = STEP(current, *p);
            p++;
        }
    }
    return (int)(current & 63);
}
