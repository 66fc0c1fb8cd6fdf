/* The floating-point peak of one core: a loop of independent multiply-adds.
 *
 * bench/run.py quotes each training step as a share of two peaks measured in the
 * same run: BLAS gemm's on large squares, and this one, the rate at which the core
 * retires multiply-adds when nothing else limits it (no memory traffic, no
 * dependences between the chains). The loop keeps NACC vector accumulators
 * a_i <- a_i * m + c in registers, enough independent chains to cover the FMA's
 * latency on every pipe, and runs them `rounds` times: rounds * NACC * lanes * 2
 * floating-point operations.
 *
 * Chosen at load time on x86-64 with GCC or Clang: AVX-512F (16 accumulators of 16
 * floats or 8 doubles), AVX2 with FMA (12 of 8 or 4), else the portable version.
 * The portable one (any other CPU or compiler) uses the compiler's 16-byte vectors
 * where it has them (SSE2, NEON) with the multiply and add contracted into one FMA
 * where the CPU has one (arm64), else a plain C loop; its rate is the peak of code
 * that compilers write without intrinsics, a lower bound of the CPU's.
 *
 * Each chain starts at a distinct value, so no two chains can be merged, and the
 * caller gets their sum: a_i after n rounds is L + m^n (a_i(0) - L) with
 * L = c / (1 - m), which tests check to confirm that every round ran.
 */
#ifndef FASTBP_PEAK_H
#define FASTBP_PEAK_H

#include <stddef.h>

enum { FBP_PEAK_PORTABLE = 0, FBP_PEAK_AVX2 = 1, FBP_PEAK_AVX512 = 2 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(_MSC_VER)
#define FBP_PEAK_X86 1
#include <immintrin.h>
#else
#define FBP_PEAK_X86 0
#endif

/* The widest version this CPU runs (FBP_PEAK_*). */
static int fbp_peak_isa(void)
{
#if FBP_PEAK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return FBP_PEAK_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return FBP_PEAK_AVX2;
#endif
    return FBP_PEAK_PORTABLE;
}

/* Lane j of n (all the chains' lanes) starts at start * (j + 1) / n: distinct values
 * in (0, start]. */
#define FBP_PEAK_START(T, j, n) (start * (T)((j) + 1) / (T)(n))

/* The sum of the chains after `rounds` rounds of an x86 version: NACC registers of
 * type V, SET1/LOADU/STOREU/FMA its intrinsics. */
#define FBP_PEAK_X86_LOOP(T, V, LANES, NACC, SET1, LOADU, STOREU, FMA)                  \
    {                                                                                   \
        T init[NACC * LANES];                                                           \
        V acc[NACC];                                                                    \
        for (int j = 0; j < NACC * LANES; j++) init[j] = FBP_PEAK_START(T, j, NACC * LANES); \
        for (int i = 0; i < NACC; i++) acc[i] = LOADU(init + i * LANES);                \
        V vm = SET1(m), vc = SET1(c);                                                   \
        for (long long r = 0; r < rounds; r++) {                                        \
            for (int i = 0; i < NACC; i++) acc[i] = FMA(acc[i], vm, vc);                \
        }                                                                               \
        for (int i = 0; i < NACC; i++) STOREU(init + i * LANES, acc[i]);                \
        double sum = 0;                                                                 \
        for (int j = 0; j < NACC * LANES; j++) sum += init[j];                          \
        return sum;                                                                     \
    }

#if FBP_PEAK_X86
__attribute__((target("avx512f"))) static double
fbp_peak_avx512_f32(long long rounds, float start, float m, float c)
FBP_PEAK_X86_LOOP(float, __m512, 16, 16, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps,
                  _mm512_fmadd_ps)
__attribute__((target("avx2,fma"))) static double
fbp_peak_avx2_f32(long long rounds, float start, float m, float c)
FBP_PEAK_X86_LOOP(float, __m256, 8, 12, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps,
                  _mm256_fmadd_ps)
__attribute__((target("avx512f"))) static double
fbp_peak_avx512_f64(long long rounds, double start, double m, double c)
FBP_PEAK_X86_LOOP(double, __m512d, 8, 16, _mm512_set1_pd, _mm512_loadu_pd, _mm512_storeu_pd,
                  _mm512_fmadd_pd)
__attribute__((target("avx2,fma"))) static double
fbp_peak_avx2_f64(long long rounds, double start, double m, double c)
FBP_PEAK_X86_LOOP(double, __m256d, 4, 12, _mm256_set1_pd, _mm256_loadu_pd, _mm256_storeu_pd,
                  _mm256_fmadd_pd)
#endif

/* The portable version: NACC 16-byte vectors (12 on x86-64, whose SSE2 has 16
 * registers; 16 elsewhere, arm64 has 32 and four FMA pipes), a * m + c contracted
 * into an FMA where the CPU has one (setup.py turns contraction off everywhere else). */
#if defined(__x86_64__) || defined(_M_X64)
#define FBP_PEAK_NACC 12
#else
#define FBP_PEAK_NACC 16
#endif

#if defined(__clang__)
#define FBP_PEAK_CONTRACT _Pragma("clang fp contract(fast)")
#define FBP_PEAK_CONTRACT_ATTR
#elif defined(__GNUC__)
#define FBP_PEAK_CONTRACT
#define FBP_PEAK_CONTRACT_ATTR __attribute__((optimize("fp-contract=fast")))
#else
#define FBP_PEAK_CONTRACT
#define FBP_PEAK_CONTRACT_ATTR
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FBP_PEAK_PORTABLE_LOOP(T, LANES)                                                \
    {                                                                                   \
        FBP_PEAK_CONTRACT                                                               \
        typedef T V __attribute__((vector_size(16)));                                   \
        V acc[FBP_PEAK_NACC];                                                           \
        for (int i = 0; i < FBP_PEAK_NACC; i++)                                         \
            for (int l = 0; l < LANES; l++)                                             \
                acc[i][l] = FBP_PEAK_START(T, i * LANES + l, FBP_PEAK_NACC * LANES);       \
        V zero = {0}, vm = zero + m, vc = zero + c;                                     \
        for (long long r = 0; r < rounds; r++) {                                        \
            for (int i = 0; i < FBP_PEAK_NACC; i++) acc[i] = acc[i] * vm + vc;          \
        }                                                                               \
        double sum = 0;                                                                 \
        for (int i = 0; i < FBP_PEAK_NACC; i++)                                         \
            for (int l = 0; l < LANES; l++) sum += acc[i][l];                           \
        return sum;                                                                     \
    }
#else
#define FBP_PEAK_PORTABLE_LOOP(T, LANES)                                                \
    {                                                                                   \
        T acc[FBP_PEAK_NACC * LANES];                                                   \
        int j;                                                                          \
        long long r;                                                                    \
        double sum = 0;                                                                 \
        for (j = 0; j < FBP_PEAK_NACC * LANES; j++)                                     \
            acc[j] = FBP_PEAK_START(T, j, FBP_PEAK_NACC * LANES);                          \
        for (r = 0; r < rounds; r++)                                                    \
            for (j = 0; j < FBP_PEAK_NACC * LANES; j++) acc[j] = acc[j] * m + c;        \
        for (j = 0; j < FBP_PEAK_NACC * LANES; j++) sum += acc[j];                      \
        return sum;                                                                     \
    }
#endif

FBP_PEAK_CONTRACT_ATTR static double
fbp_peak_portable_f32(long long rounds, float start, float m, float c)
FBP_PEAK_PORTABLE_LOOP(float, 4)
FBP_PEAK_CONTRACT_ATTR static double
fbp_peak_portable_f64(long long rounds, double start, double m, double c)
FBP_PEAK_PORTABLE_LOOP(double, 2)

/* Lanes of one accumulator and accumulators of version `isa` (its operations per
 * round: 2 * chains * lanes). */
static int fbp_peak_lanes(int isa, int itemsize)
{
    return (isa == FBP_PEAK_AVX512 ? 64 : isa == FBP_PEAK_AVX2 ? 32 : 16) / itemsize;
}

static int fbp_peak_chains(int isa)
{
    return isa == FBP_PEAK_AVX512 ? 16 : isa == FBP_PEAK_AVX2 ? 12 : FBP_PEAK_NACC;
}

/* Run version `isa` (one this CPU has: fbp_peak_isa() or below); the chains' sum. */
static double fbp_peak_f32(int isa, long long rounds, float start, float m, float c)
{
#if FBP_PEAK_X86
    if (isa == FBP_PEAK_AVX512) return fbp_peak_avx512_f32(rounds, start, m, c);
    if (isa == FBP_PEAK_AVX2) return fbp_peak_avx2_f32(rounds, start, m, c);
#endif
    return fbp_peak_portable_f32(rounds, start, m, c);
}

static double fbp_peak_f64(int isa, long long rounds, double start, double m, double c)
{
#if FBP_PEAK_X86
    if (isa == FBP_PEAK_AVX512) return fbp_peak_avx512_f64(rounds, start, m, c);
    if (isa == FBP_PEAK_AVX2) return fbp_peak_avx2_f64(rounds, start, m, c);
#endif
    return fbp_peak_portable_f64(rounds, start, m, c);
}

#undef FBP_PEAK_START
#endif
