/* The full 64 x 64 -> 128-bit product that unbiased bounded draws need (Lemire's
 * multiply-and-reject method, fastbp._core._permutation), on every compiler that
 * builds the wheels: GCC and Clang's 128-bit integers, MSVC's intrinsics, or four
 * 32-bit products elsewhere.
 */
#ifndef FASTBP_RANDOM_H
#define FASTBP_RANDOM_H

#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_ARM64))
#include <intrin.h>
#endif

/* Returns the high 64 bits of a * b; the low 64 bits go to *low. */
static inline uint64_t fbp_mul_wide(uint64_t a, uint64_t b, uint64_t *low)
{
#if defined(__SIZEOF_INT128__)
    unsigned __int128 product = (unsigned __int128)a * b;
    *low = (uint64_t)product;
    return (uint64_t)(product >> 64);
#elif defined(_MSC_VER) && defined(_M_X64)
    uint64_t high;
    *low = _umul128(a, b, &high);
    return high;
#elif defined(_MSC_VER) && defined(_M_ARM64)
    *low = a * b;
    return __umulh(a, b);
#else
    uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t middle = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    *low = (middle << 32) | (p00 & 0xffffffffu);
    return p11 + (p01 >> 32) + (p10 >> 32) + (middle >> 32);
#endif
}

#endif
