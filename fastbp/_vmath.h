/* Branch-free exp, tanh and sigmoid for fastbp's activation loops.
 *
 * libm calls are never vectorized without -ffast-math, and Cython turns every
 * conditional expression into an if statement that defeats the vectorizer. These
 * helpers are plain C arithmetic and selects, so that a loop over an array that
 * calls them vectorizes at -O3 (SSE2 on any x86-64, NEON on arm64).
 *
 * Method: u = n ln2 + r with |r| <= ln2 / 2, where n ln2_hi is exact and ln2_lo =
 * ln2 - ln2_hi to full precision (Cody-Waite); expm1(r) from its Taylor series,
 * degree 7 for float and 13 for double, which truncates below half an ulp (its
 * tail in Estrin's scheme); 2^n built directly in the exponent bits. Accurate to
 * about 1 ulp. NaN propagates; results below the normal range flush to zero.
 */
#ifndef FASTBP_VMATH_H
#define FASTBP_VMATH_H

#include <math.h>
#include <stddef.h>
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
    /* The series' first terms in Horner's scheme (their roundings, near 1, set the
     * accuracy), the rest in Estrin's (pairs of terms, then powers r^2 and r^4):
     * half the chain of dependent operations of Horner's alone, which bounded how
     * many elements a loop keeps in flight. */
    float r2 = r * r, r4 = r2 * r2;
    float rest = (1.0f / 6 + r * (1.0f / 24)) + r2 * (1.0f / 120 + r * (1.0f / 720))
                 + r4 * (1.0f / 5040);
    float q = r * (1.0f + r * (1.0f / 2 + r * rest));
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
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4; /* the two schemes, as for float */
    double rest = ((1.0 / 6 + r * (1.0 / 24)) + r2 * (1.0 / 120 + r * (1.0 / 720)))
                  + r4 * ((1.0 / 5040 + r * (1.0 / 40320)) + r2 * (1.0 / 362880
                  + r * (1.0 / 3628800)))
                  + r8 * ((1.0 / 39916800 + r * (1.0 / 479001600)) + r2 * (1.0 / 6227020800.0));
    double q = r * (1.0 + r * (1.0 / 2 + r * rest));
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

/* expm1(u) for u <= 0 (ELU and softplus's derivative): exact near 0, -1 far below. */
static inline float fbp_expm1_negf(float u)
{
    float v = u < -87.0f ? -87.0f : u;
    float scale;
    float q = fbp_pow2_expm1f(v, &scale);
    return scale * q + (scale - 1.0f);
}

static inline double fbp_expm1_neg(double u)
{
    double v = u < -708.0 ? -708.0 : u;
    double scale;
    double q = fbp_pow2_expm1(v, &scale);
    return scale * q + (scale - 1.0);
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

/* ------------------------------------------------------------------------------
 * Array loops compiled for several instruction sets and chosen at load time
 * (GCC function multi-versioning on x86-64 Linux: AVX-512, AVX2, or the SSE2
 * baseline that any x86-64 has; elsewhere the one baseline version). Floating-point
 * contraction is off (see setup.py), so every version computes the same bits.
 * ----------------------------------------------------------------------------*/
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define FBP_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef FBP_MULTIVERSION
#define FBP_MULTIVERSION
#endif
#if defined(_MSC_VER) && !defined(__clang__)
#define FBP_RESTRICT __restrict
#else
#define FBP_RESTRICT restrict
#endif

#define FBP_DEFINE_LOOPS(T, SUFFIX, EXP, TANH, SIGMOID, SQRT)                              \
/* In place z = z + bias (bias broadcast over the rows of a rows x cols block). */  \
FBP_MULTIVERSION static void fbp_add_bias_##SUFFIX(T *z, const T *bias, ptrdiff_t rows, \
                                                   ptrdiff_t cols)                   \
{                                                                                    \
    for (ptrdiff_t i = 0; i < rows; i++) {                                           \
        T *row = z + i * cols;                                                       \
        for (ptrdiff_t j = 0; j < cols; j++) row[j] = row[j] + bias[j];              \
    }                                                                                \
}                                                                                    \
/* In place z = relu(z + bias), in one pass (NaN passes through). */                \
FBP_MULTIVERSION static void fbp_bias_relu_##SUFFIX(T *z, const T *bias, ptrdiff_t rows, \
                                                    ptrdiff_t cols)                  \
{                                                                                    \
    for (ptrdiff_t i = 0; i < rows; i++) {                                           \
        T *row = z + i * cols;                                                       \
        for (ptrdiff_t j = 0; j < cols; j++) {                                       \
            T v = row[j] + bias[j];                                                  \
            row[j] = v < 0 ? 0 : v;                                                  \
        }                                                                            \
    }                                                                                \
}                                                                                    \
/* In place z = relu(z) (NaN passes through). */                                     \
FBP_MULTIVERSION static void fbp_relu_##SUFFIX(T *z, ptrdiff_t n)                     \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) z[i] = z[i] < 0 ? 0 : z[i];                    \
}                                                                                    \
/* d = d * relu'(z), from the output a = relu(z): d where a > 0, else 0. */         \
FBP_MULTIVERSION static void fbp_relu_backward_##SUFFIX(const T *a, T *d, ptrdiff_t n) \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) d[i] = a[i] > 0 ? d[i] : 0;                    \
}                                                                                    \
/* d = d * tanh'(z) = d * (1 - a^2) and d = d * sigmoid'(z) = d * (a (1 - a)), from    \
 * the output a. */                                                                  \
FBP_MULTIVERSION static void fbp_tanh_backward_##SUFFIX(const T *a, T *d, ptrdiff_t n) \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) d[i] = d[i] * (1 - a[i] * a[i]);               \
}                                                                                    \
FBP_MULTIVERSION static void fbp_sigmoid_backward_##SUFFIX(const T *a, T *d,          \
                                                           ptrdiff_t n)              \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) d[i] = d[i] * (a[i] * (1 - a[i]));             \
}                                                                                    \
/* out[j] = sum over the rows of a rows x cols block (row stride ld) of column j,    \
 * summed in row order (the bias gradient). Narrow blocks (up to 128 columns): 32     \
 * columns at a time in accumulators that stay in registers, the last few in a       \
 * short loop; wider ones: row by row into out, which streams better. */            \
FBP_MULTIVERSION static void fbp_col_sums_##SUFFIX(const T *FBP_RESTRICT d,          \
                                                   ptrdiff_t rows, ptrdiff_t cols,   \
                                                   ptrdiff_t ld, T *FBP_RESTRICT out) \
{                                                                                    \
    ptrdiff_t j0 = 0;                                                                \
    if (cols > 128) {                                                                \
        for (ptrdiff_t j = 0; j < cols; j++) out[j] = 0;                             \
        for (ptrdiff_t i = 0; i < rows; i++) {                                       \
            const T *row = d + i * ld;                                               \
            for (ptrdiff_t j = 0; j < cols; j++) out[j] = out[j] + row[j];           \
        }                                                                            \
        return;                                                                      \
    }                                                                                \
    for (; j0 + 32 <= cols; j0 += 32) {                                              \
        T acc[32] = {0};                                                             \
        for (ptrdiff_t i = 0; i < rows; i++) {                                       \
            const T *row = d + i * ld + j0;                                          \
            for (int q = 0; q < 32; q++) acc[q] = acc[q] + row[q];                   \
        }                                                                            \
        for (int q = 0; q < 32; q++) out[j0 + q] = acc[q];                           \
    }                                                                                \
    if (j0 < cols) {                                                                 \
        ptrdiff_t left = cols - j0;                                                  \
        T acc[32] = {0};                                                             \
        for (ptrdiff_t i = 0; i < rows; i++) {                                       \
            const T *row = d + i * ld + j0;                                          \
            for (ptrdiff_t q = 0; q < left; q++) acc[q] = acc[q] + row[q];           \
        }                                                                            \
        for (ptrdiff_t q = 0; q < left; q++) out[j0 + q] = acc[q];                   \
    }                                                                                \
}                                                                                    \
/* In place z = exp(z). */                                                           \
FBP_MULTIVERSION static void fbp_exp_##SUFFIX(T *z, ptrdiff_t n)                      \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) z[i] = EXP(z[i]);                              \
}                                                                                    \
/* In place z = tanh(z). */                                                          \
FBP_MULTIVERSION static void fbp_tanh_##SUFFIX(T *z, ptrdiff_t n)                     \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) z[i] = TANH(z[i]);                             \
}                                                                                    \
/* In place z = sigmoid(z). */                                                       \
FBP_MULTIVERSION static void fbp_sigmoid_##SUFFIX(T *z, ptrdiff_t n)                  \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) z[i] = SIGMOID(z[i]);                          \
}                                                                                    \
/* PyTorch's SGD, dampening 0: g += wd p; buf = momentum buf + g (buf starts at 0);  \
 * p -= lr (g + momentum buf) with Nesterov, p -= lr buf without, p -= lr g when      \
 * momentum is 0 (buf unused). */                                                    \
FBP_MULTIVERSION static void fbp_sgd_##SUFFIX(T *p, const T *g, T *buf, ptrdiff_t n,  \
                                              T lr, T momentum, T wd, int nesterov)  \
{                                                                                    \
    if (momentum == 0) {                                                             \
        for (ptrdiff_t i = 0; i < n; i++) p[i] = p[i] - lr * (g[i] + wd * p[i]);     \
    } else if (nesterov) {                                                           \
        for (ptrdiff_t i = 0; i < n; i++) {                                          \
            T gi = g[i] + wd * p[i];                                                 \
            T b = momentum * buf[i] + gi;                                            \
            buf[i] = b;                                                              \
            p[i] = p[i] - lr * (gi + momentum * b);                                  \
        }                                                                            \
    } else {                                                                         \
        for (ptrdiff_t i = 0; i < n; i++) {                                          \
            T b = momentum * buf[i] + (g[i] + wd * p[i]);                            \
            buf[i] = b;                                                              \
            p[i] = p[i] - lr * b;                                                    \
        }                                                                            \
    }                                                                                \
}                                                                                    \
/* PyTorch's Adam: g += wd p; m += (1 - beta1) (g - m); v = beta2 v + (1 - beta2) g^2; \
 * p -= step_size m / (sqrt(v) / bias2_sqrt + eps), with step_size =                  \
 * lr / (1 - beta1^t) and bias2_sqrt = sqrt(1 - beta2^t). AdamW (decoupled weight     \
 * decay): p *= 1 - lr wd first, and wd = 0 in the gradient (decay is the caller's    \
 * factor, 1 for Adam). */                                                           \
FBP_MULTIVERSION static void fbp_adam_##SUFFIX(T *p, const T *g, T *m, T *v,          \
                                               ptrdiff_t n, T step_size, T bias2_sqrt, \
                                               T one_minus_beta1, T beta2,             \
                                               T one_minus_beta2, T wd, T eps, T decay) \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T pi = p[i] * decay;                                                         \
        T gi = g[i] + wd * pi;                                                       \
        T mi = m[i] + one_minus_beta1 * (gi - m[i]);                                 \
        T vi = beta2 * v[i] + one_minus_beta2 * gi * gi;                             \
        m[i] = mi;                                                                   \
        v[i] = vi;                                                                   \
        p[i] = pi - step_size * mi / (SQRT(vi) / bias2_sqrt + eps);                  \
    }                                                                                \
}                                                                                    \
/* PyTorch's RMSprop: g += wd p; v = alpha v + (1 - alpha) g^2; centered: a = alpha a  \
 * + (1 - alpha) g and the denominator is sqrt(v - a^2) + eps, else sqrt(v) + eps;     \
 * momentum: buf = momentum buf + g / denominator, p -= lr buf; else                  \
 * p -= lr g / denominator. */                                                       \
FBP_MULTIVERSION static void fbp_rmsprop_##SUFFIX(T *p, const T *g, T *v, T *buf,    \
                                                  T *avg, ptrdiff_t n, T lr, T alpha, \
                                                  T eps, T wd, T momentum)            \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T gi = g[i] + wd * p[i];                                                     \
        T vi = alpha * v[i] + (1 - alpha) * gi * gi;                                 \
        T denom;                                                                     \
        v[i] = vi;                                                                   \
        if (avg) {                                                                   \
            T ai = alpha * avg[i] + (1 - alpha) * gi;                                \
            avg[i] = ai;                                                             \
            denom = SQRT(vi - ai * ai) + eps;                                        \
        } else {                                                                     \
            denom = SQRT(vi) + eps;                                                  \
        }                                                                            \
        if (buf) {                                                                   \
            T b = momentum * buf[i] + gi / denom;                                    \
            buf[i] = b;                                                              \
            p[i] = p[i] - lr * b;                                                    \
        } else {                                                                     \
            p[i] = p[i] - lr * (gi / denom);                                         \
        }                                                                            \
    }                                                                                \
}                                                                                    \
/* PyTorch's Adagrad: g += wd p; sum += g^2; p -= clr g / (sqrt(sum) + eps), with     \
 * clr = lr / (1 + (t - 1) lr_decay) from the caller. */                             \
FBP_MULTIVERSION static void fbp_adagrad_##SUFFIX(T *p, const T *g, T *sum,          \
                                                  ptrdiff_t n, T clr, T wd, T eps)    \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T gi = g[i] + wd * p[i];                                                     \
        T si = sum[i] + gi * gi;                                                     \
        sum[i] = si;                                                                 \
        p[i] = p[i] - clr * (gi / (SQRT(si) + eps));                                 \
    }                                                                                \
}                                                                                    \
/* Gradient clipping: sum of squares (for the global norm), scaling, clamping. */    \
FBP_MULTIVERSION static double fbp_sum_squares_##SUFFIX(const T *g, ptrdiff_t n)      \
{                                                                                    \
    double total = 0;                                                                \
    for (ptrdiff_t i = 0; i < n; i++) total += (double)g[i] * g[i];                  \
    return total;                                                                    \
}                                                                                    \
FBP_MULTIVERSION static void fbp_scale_##SUFFIX(T *g, ptrdiff_t n, T factor)          \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) g[i] = g[i] * factor;                          \
}                                                                                    \
FBP_MULTIVERSION static void fbp_clamp_##SUFFIX(T *g, ptrdiff_t n, T limit)           \
{                                                                                    \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T v = g[i];                                                                  \
        v = v > limit ? limit : v;                                                   \
        g[i] = v < -limit ? -limit : v;                                              \
    }                                                                                \
}

FBP_DEFINE_LOOPS(float, f32, fbp_expf, fbp_tanhf, fbp_sigmoidf, sqrtf)
FBP_DEFINE_LOOPS(double, f64, fbp_exp, fbp_tanh, fbp_sigmoid, sqrt)

#endif
