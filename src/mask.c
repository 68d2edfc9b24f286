/* WebSocket masking, 64 bytes per step with SSE2 or NEON where the target has
 * them (every x86-64 and aarch64 does), 8 bytes per step otherwise. */
#include "mask.h"

#include <stdint.h>
#include <string.h>

#include "simd.h"

#define HIGH_BITS 0x8080808080808080ULL

/* memcpy makes unaligned access portable; compilers turn it into one move. */
static inline uint64_t load64(const unsigned char *p) {
    uint64_t value;
    memcpy(&value, p, 8);
    return value;
}

static inline void store64(unsigned char *p, uint64_t value) { memcpy(p, &value, 8); }

/* want_high is a constant at each call site, so the accumulation of the high
 * bits disappears from the plain masking loop once this is inlined. */
static inline uint64_t mask_into(const unsigned char *src, unsigned char *dst, size_t n,
                                 const unsigned char *key, int want_high) {
    unsigned char key16[16];
    size_t i = 0;
    uint64_t high = 0, key64;

    for (int j = 0; j < 16; j++) key16[j] = key[j & 3];
    key64 = load64(key16);

#if defined(ANYNET_SSE2)
    {
        const __m128i k = _mm_loadu_si128((const __m128i *)key16);
        __m128i acc = _mm_setzero_si128();
        for (; i + 64 <= n; i += 64) {
            __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i)), k);
            __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i + 16)), k);
            __m128i c = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i + 32)), k);
            __m128i d = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i + 48)), k);
            _mm_storeu_si128((__m128i *)(dst + i), a);
            _mm_storeu_si128((__m128i *)(dst + i + 16), b);
            _mm_storeu_si128((__m128i *)(dst + i + 32), c);
            _mm_storeu_si128((__m128i *)(dst + i + 48), d);
            if (want_high)
                acc = _mm_or_si128(acc, _mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)));
        }
        for (; i + 16 <= n; i += 16) {
            __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i)), k);
            _mm_storeu_si128((__m128i *)(dst + i), a);
            if (want_high) acc = _mm_or_si128(acc, a);
        }
        if (want_high) high = (uint64_t)_mm_movemask_epi8(acc);
    }
#elif defined(ANYNET_NEON)
    {
        const uint8x16_t k = vld1q_u8(key16);
        uint8x16_t acc = vdupq_n_u8(0);
        for (; i + 64 <= n; i += 64) {
            uint8x16_t a = veorq_u8(vld1q_u8(src + i), k);
            uint8x16_t b = veorq_u8(vld1q_u8(src + i + 16), k);
            uint8x16_t c = veorq_u8(vld1q_u8(src + i + 32), k);
            uint8x16_t d = veorq_u8(vld1q_u8(src + i + 48), k);
            vst1q_u8(dst + i, a);
            vst1q_u8(dst + i + 16, b);
            vst1q_u8(dst + i + 32, c);
            vst1q_u8(dst + i + 48, d);
            if (want_high) acc = vorrq_u8(acc, vorrq_u8(vorrq_u8(a, b), vorrq_u8(c, d)));
        }
        for (; i + 16 <= n; i += 16) {
            uint8x16_t a = veorq_u8(vld1q_u8(src + i), k);
            vst1q_u8(dst + i, a);
            if (want_high) acc = vorrq_u8(acc, a);
        }
        if (want_high)
            high = (vgetq_lane_u64(vreinterpretq_u64_u8(acc), 0) |
                    vgetq_lane_u64(vreinterpretq_u64_u8(acc), 1)) & HIGH_BITS;
    }
#endif
    /* The vector loops stop on a multiple of 16, so the key phase is still 0. */
    for (; i + 8 <= n; i += 8) {
        uint64_t value = load64(src + i) ^ key64;
        store64(dst + i, value);
        if (want_high) high |= value & HIGH_BITS;
    }
    for (; i < n; i++) {
        unsigned char value = (unsigned char)(src[i] ^ key[i & 3]);
        dst[i] = value;
        if (want_high) high |= value & 0x80;
    }
    return high;
}

void anynet_mask(const unsigned char *src, unsigned char *dst, size_t n,
                 const unsigned char *key) {
    (void)mask_into(src, dst, n, key, 0);
}

int anynet_mask_ascii(const unsigned char *src, unsigned char *dst, size_t n,
                      const unsigned char *key) {
    return mask_into(src, dst, n, key, 1) == 0;
}
