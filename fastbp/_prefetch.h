/* Software prefetch of the rows of the next shuffled minibatch.
 *
 * A shuffled minibatch gathers rows from all over X: each row copy waits for a
 * cache miss. Asking for the next minibatch's rows while this one is computed
 * turns those misses into hits. The rows go to the second-level cache (locality 2,
 * _MM_HINT_T1): a step's parameters, gradients and workspace fill the first level,
 * and would push them out again before the next minibatch. A hint only: it changes
 * no result, and compiles to nothing where the compiler has no prefetch instruction.
 */
#ifndef FASTBP_PREFETCH_H
#define FASTBP_PREFETCH_H

#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define FBP_PREFETCH(p) __builtin_prefetch((p), 0, 2)
/* GCC counts a prefetch as no effect at all: a function that only prefetches is
 * "const", and a call to it whose result is unused is deleted. An empty volatile
 * asm is an effect that it keeps. */
#define FBP_KEEP() __asm__ __volatile__("")
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_IX86))
#include <xmmintrin.h>
#define FBP_PREFETCH(p) _mm_prefetch((const char *)(p), _MM_HINT_T1)
#define FBP_KEEP()
#else
#define FBP_PREFETCH(p) ((void)(p))
#define FBP_KEEP()
#endif

/* Prefetch rows order[0..n) of a row-major array whose rows are row_bytes long. */
static inline void fbp_prefetch_rows(const void *base, const ptrdiff_t *order, ptrdiff_t n,
                                     ptrdiff_t row_bytes)
{
    const char *bytes = (const char *)base;
    FBP_KEEP();
    for (ptrdiff_t i = 0; i < n; i++) {
        const char *row = bytes + order[i] * row_bytes;
        for (ptrdiff_t at = 0; at < row_bytes; at += 64) FBP_PREFETCH(row + at);
        FBP_PREFETCH(row + row_bytes - 1);
    }
}

#endif
