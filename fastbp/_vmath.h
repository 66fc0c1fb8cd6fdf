/* Branch-free exp, tanh and sigmoid for fastbp's activation loops.
 *
 * libm calls are never vectorized without -ffast-math, and Cython turns every
 * conditional expression into an if statement that defeats the vectorizer. These
 * helpers are plain C arithmetic and selects, so that a loop over an array that
 * calls them vectorizes at -O3 (SSE2 on any x86-64, NEON on arm64).
 *
 * Method: u = n ln2 + r with |r| <= ln2 / 2, where n ln2_hi is exact and ln2_lo =
 * ln2 - ln2_hi to full precision (Cody-Waite); expm1(r) from its Taylor series, degree 7 for float and 13 for double, which
 * truncates below half an ulp; 2^n built directly in the exponent bits. Accurate to
 * about 1 ulp. NaN propagates; results below the normal range flush to zero.
 */
#ifndef FASTBP_VMATH_H
#define FASTBP_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* q = expm1(r) and *scale = 2^n, for u = n ln2 + r; u must lie in the clamped range. */
static inline float fbp_pow2_expm1f(float u, float *scale)
{
    /* Adding 1.5 * 2^23 rounds u / ln2 to an integer held in the low mantissa bits. */
    const float magic = 12582912.0f;
    float t = u * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = (u - n * 0.693145751953125f) - n * 1.4286068203094173e-06f;
    float q = r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
              + r * (1.0f / 720 + r * (1.0f / 5040)))))));
    int32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int32_t)((uint32_t)(bits + 127) << 23);
    memcpy(scale, &bits, sizeof bits);
    return q;
}

static inline double fbp_pow2_expm1(double u, double *scale)
{
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double t = u * 1.4426950408889634 + magic;
    double n = t - magic;
    double r = (u - n * 0.6931471805598903) - n * 5.497923018708371e-14;
    double q = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120
               + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880
               + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
               + r * (1.0 / 6227020800.0)))))))))))));
    int64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (int64_t)((uint64_t)(bits + 1023) << 52);
    memcpy(scale, &bits, sizeof bits);
    return q;
}

static inline float fbp_expf(float u)
{
    const float lo = -87.6f, hi = 88.0f; /* n >= -126: 2^n stays normal */
    float v = u > hi ? hi : u;
    v = v < lo ? lo : v;
    float scale;
    float q = fbp_pow2_expm1f(v, &scale);
    float res = scale + scale * q;
    res = u < lo ? 0.0f : res;
    return u > hi ? INFINITY : res;
}

static inline double fbp_exp(double u)
{
    const double lo = -708.7, hi = 709.0; /* n >= -1022 */
    double v = u > hi ? hi : u;
    v = v < lo ? lo : v;
    double scale;
    double q = fbp_pow2_expm1(v, &scale);
    double res = scale + scale * q;
    res = u < lo ? 0.0 : res;
    return u > hi ? INFINITY : res;
}

/* tanh(x) = sign(x) expm1(2|x|) / (expm1(2|x|) + 2): accurate near zero too, where
 * expm1 is the series itself (n = 0) and nothing cancels. */
static inline float fbp_tanhf(float x)
{
    float u = 2.0f * fabsf(x);
    u = u > 18.0f ? 18.0f : u; /* tanh(9) rounds to 1 */
    float scale;
    float q = fbp_pow2_expm1f(u, &scale);
    float em = scale * q + (scale - 1.0f);
    float t = em / (em + 2.0f);
    return x < 0.0f ? -t : t;
}

static inline double fbp_tanh(double x)
{
    double u = 2.0 * fabs(x);
    u = u > 40.0 ? 40.0 : u; /* tanh(20) rounds to 1 */
    double scale;
    double q = fbp_pow2_expm1(u, &scale);
    double em = scale * q + (scale - 1.0);
    double t = em / (em + 2.0);
    return x < 0.0 ? -t : t;
}

/* 1 / (1 + exp(-x)) from exp(-|x|) only: never overflows. */
static inline float fbp_sigmoidf(float x)
{
    float e = fbp_expf(-fabsf(x));
    return (x >= 0.0f ? 1.0f : e) / (1.0f + e);
}

static inline double fbp_sigmoid(double x)
{
    double e = fbp_exp(-fabs(x));
    return (x >= 0.0 ? 1.0 : e) / (1.0 + e);
}

#endif
