/* The full 64 x 64 -> 128-bit product that unbiased bounded draws need (Lemire's
 * multiply-and-reject method, fastbp._core._permutation), on every compiler that
 * builds the wheels: GCC and Clang's 128-bit integers, MSVC's intrinsics, or four
 * 32-bit products elsewhere.
 */
#ifndef FASTBP_RANDOM_H
#define FASTBP_RANDOM_H


#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_ARM64))
#include <intrin.h>
#endif

/* Returns the high 64 bits of a * b; the low 64 bits go to *low. (unsigned long
 * long, not uint64_t, which is unsigned long on Linux: the type Cython passes.) */
static inline unsigned long long fbp_mul_wide(unsigned long long a, unsigned long long b,
                                              unsigned long long *low)
{
#if defined(__SIZEOF_INT128__)
    unsigned __int128 product = (unsigned __int128)a * b;
    *low = (unsigned long long)product;
    return (unsigned long long)(product >> 64);
#elif defined(_MSC_VER) && defined(_M_X64)
    unsigned long long high;
    *low = _umul128(a, b, &high);
    return high;
#elif defined(_MSC_VER) && defined(_M_ARM64)
    *low = a * b;
    return __umulh(a, b);
#else
    unsigned long long a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu;
    unsigned long long b1 = b >> 32;
    unsigned long long p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    unsigned long long middle = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    *low = (middle << 32) | (p00 & 0xffffffffu);  /* modulo 2^64 */
    return p11 + (p01 >> 32) + (p10 >> 32) + (middle >> 32);
#endif
}

#endif
