/* What writing parameters that another core has just read costs on this machine.
 *
 * fastbp splits a training step over its threads by rows of the minibatch for the
 * forward and backward passes, so every thread reads every weight; each thread then
 * updates its own share of the weights, lines of which the other cores hold. This
 * program times that update (SGD with momentum over float32 parameters, each thread
 * its half) after each thread has read
 *
 *   own: only its own half (no line is shared: the cost of the arithmetic),
 *   all: the whole array, as the forward pass reads every weight, or
 *   dropped: the whole array, and then dropped its copies of the other thread's
 *     half from the caches (CLFLUSH, x86-64 only), as a step could right after
 *     its backward pass,
 *
 * and prints the median time of the update per iteration for each, their ratio,
 * and, for "dropped", the time each iteration spent dropping the lines too.
 * On a 2-vCPU AMD EPYC (Zen 4) virtual machine, for 400 KB of parameters (the
 * small network's), "all" took 100-110 µs against 14-17 for "own" in most runs,
 * 250-460 in others, and no longer than "own" in one: where the hypervisor puts
 * the two vCPUs decides. "dropped" moves most of that cost into the dropping,
 * which also evicts the lines from the updating core (see docs/performance.md).
 *
 * Build and run (GCC or Clang with OpenMP), from the repository root:
 *
 *     cc -O3 -fopenmp bench/shared_writes.c -o /tmp/shared_writes
 *     /tmp/shared_writes [kilobytes of parameters, 400] [iterations, 2000]
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#define CAN_DROP 1
#else
#define CAN_DROP 0
#endif

enum { OWN, ALL, DROPPED };

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Eight sums in turn: a read at the cache's speed, not at one add's latency. */
static float read_range(const float *p, long lo, long hi)
{
    float s[8] = {0};
    long i = lo;
    for (; i + 8 <= hi; i += 8)
        for (int q = 0; q < 8; q++) s[q] += p[i + q];
    for (; i < hi; i++) s[0] += p[i];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

/* Write back and evict, from every cache, the lines of p[lo:hi]. */
static void drop_range(const float *p, long lo, long hi)
{
#if CAN_DROP
    for (long i = lo; i < hi; i += 16) _mm_clflush(p + i);
    _mm_clflush(p + hi - 1);
    _mm_mfence();
#else
    (void)p, (void)lo, (void)hi;
#endif
}

/* The medians over iterations of the slower thread's update time (returned) and,
 * for DROPPED, of its time dropping the lines (*dropping), in seconds. */
static double run(float *p, const float *g, float *buf, long n, int iters, int mode,
                  double *dropping)
{
    double *times = calloc(iters, sizeof(double)), *drops = calloc(iters, sizeof(double));
    volatile float sink = 0;
    if (times == NULL || drops == NULL) {
        fprintf(stderr, "shared_writes: out of memory\n");
        exit(1);
    }
#pragma omp parallel num_threads(2)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        long lo = n / nt * t, hi = t == nt - 1 ? n : n / nt * (t + 1);
        for (int it = 0; it < iters; it++) {
            double start, took, dropped = 0;
            sink = mode == OWN ? read_range(p, lo, hi) : read_range(p, 0, n);
            if (mode == DROPPED) {
                start = omp_get_wtime();
                if (lo > 0) drop_range(p, 0, lo);
                if (hi < n) drop_range(p, hi, n);
                dropped = omp_get_wtime() - start;
            }
#pragma omp barrier
            start = omp_get_wtime();
            for (long i = lo; i < hi; i++) {
                float b = 0.9f * buf[i] + g[i];
                buf[i] = b;
                p[i] = p[i] - 0.01f * b;
            }
            took = omp_get_wtime() - start;
#pragma omp barrier
#pragma omp critical
            {
                if (took > times[it]) times[it] = took;
                if (dropped > drops[it]) drops[it] = dropped;
            }
        }
    }
    (void)sink;
    qsort(times, iters, sizeof(double), by_value);
    qsort(drops, iters, sizeof(double), by_value);
    double median = times[iters / 2];
    if (dropping != NULL) *dropping = drops[iters / 2];
    free(times);
    free(drops);
    return median;
}

int main(int argc, char **argv)
{
    long kb = argc > 1 ? atol(argv[1]) : 400;
    int iters = argc > 2 ? atoi(argv[2]) : 2000;
    long n = kb * 1024 / (long)sizeof(float);
    float *p = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n);
    float *buf = malloc(sizeof(float) * n);
    double dropping = 0;
    if (kb < 1 || iters < 1 || !p || !g || !buf) {
        fprintf(stderr, "usage: shared_writes [kilobytes >= 1] [iterations >= 1]\n");
        return 2;
    }
    for (long i = 0; i < n; i++) {
        p[i] = 1.0f;
        g[i] = 1e-3f;
        buf[i] = 0.0f;
    }
    run(p, g, buf, n, iters < 50 ? iters : 50, ALL, NULL); /* warm-up */
    double own = run(p, g, buf, n, iters, OWN, NULL), all = run(p, g, buf, n, iters, ALL, NULL);
    printf("parameters: %ld KB, 2 threads, %d iterations\n", kb, iters);
    printf("update after reading its own half: %.2f us\n", own * 1e6);
    printf("update after reading all of them:  %.2f us\n", all * 1e6);
    printf("ratio: %.2f\n", all / own);
    if (CAN_DROP) {
        double dropped = run(p, g, buf, n, iters, DROPPED, &dropping);
        printf("update after reading all of them and dropping the other half: %.2f us"
               " (dropping: %.2f us)\n", dropped * 1e6, dropping * 1e6);
    } else {
        printf("dropping lines: not on this CPU (x86-64 only)\n");
    }
    return 0;
}
