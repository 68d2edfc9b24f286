/* Which vector instructions the C helpers may use, decided once for both. */
#ifndef ANYNET_SIMD_H
#define ANYNET_SIMD_H

#if defined(__SSE2__) || defined(_M_X64) || defined(_M_AMD64) || \
    (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define ANYNET_SSE2 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#include <arm_neon.h>
#define ANYNET_NEON 1
#endif

#endif
