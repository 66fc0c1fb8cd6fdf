/* The floating-point environment of fastbp's training: subnormal numbers flushed.
 *
 * A subnormal (denormal) float is one below the smallest normal number (about
 * 1.2e-38 in float32, 2.2e-308 in float64). Training makes them as a matter of
 * course: a momentum or Adam first moment whose gradient stays zero (a dead ReLU
 * unit, an unused input) decays by its beta every step, through the subnormal range
 * for about 150 steps (float32) before it reaches zero, and a saturated softmax's
 * probabilities fall there too. Arithmetic on them can take a microcode assist
 * (Intel documents one for subnormal results and inputs of its vector arithmetic),
 * many cycles instead of one: on this project's AMD Zen 4 host, Adam steps were
 * 1.12x as long with them as with them flushed (docs/performance.md).
 *
 * fbp_flush_begin() sets the calling thread's flush-to-zero and
 * denormals-are-zero controls (SSE's MXCSR FTZ and DAZ bits on x86-64, FPCR.FZ on
 * arm64) and returns the previous setting; fbp_flush_end() puts it back. Every
 * thread of a training team brackets its share of the work with them (the control
 * is per thread), so the caller's thread and the OpenMP workers leave a call with
 * the environment they entered it with. On other CPUs and compilers both do
 * nothing and FBP_FLUSHES_SUBNORMALS is 0.
 */
#ifndef FASTBP_FPENV_H
#define FASTBP_FPENV_H

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define FBP_FLUSHES_SUBNORMALS 1
#define FBP_MXCSR_FTZ_DAZ 0x8040u /* bit 15 flush to zero, bit 6 denormals are zero */
static inline unsigned long long fbp_flush_begin(void)
{
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | FBP_MXCSR_FTZ_DAZ);
    return saved;
}
static inline void fbp_flush_end(unsigned long long saved) { _mm_setcsr((unsigned int)saved); }
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define FBP_FLUSHES_SUBNORMALS 1
#define FBP_FPCR_FZ (1ull << 24) /* flush subnormal inputs and results to zero */
static inline unsigned long long fbp_flush_begin(void)
{
    unsigned long long saved;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved | FBP_FPCR_FZ));
    return saved;
}
static inline void fbp_flush_end(unsigned long long saved)
{
    __asm__ __volatile__("msr fpcr, %0" : : "r"(saved));
}
#else
#define FBP_FLUSHES_SUBNORMALS 0
static inline unsigned long long fbp_flush_begin(void) { return 0; }
static inline void fbp_flush_end(unsigned long long saved) { (void)saved; }
#endif

#endif
