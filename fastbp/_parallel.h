/* OpenMP glue for fastbp's training step, usable with and without OpenMP.
 *
 * fbp_barrier() is an orphaned "omp barrier": called from a function that runs
 * inside a parallel region, it binds to that region's team; outside one (or when
 * fastbp is built without OpenMP) it does nothing.
 */
#ifndef FASTBP_PARALLEL_H
#define FASTBP_PARALLEL_H

#ifdef _OPENMP
#include <omp.h>
#define FBP_HAVE_OPENMP 1
static inline void fbp_barrier(void)
{
#pragma omp barrier
}
static inline int fbp_team_size(void) { return omp_get_num_threads(); }
static inline int fbp_thread_id(void) { return omp_get_thread_num(); }
#else
#define FBP_HAVE_OPENMP 0
static inline void fbp_barrier(void) {}
static inline int fbp_team_size(void) { return 1; }
static inline int fbp_thread_id(void) { return 0; }
#endif

/* Phase timers of the training step, for profiling: a build with FASTBP_PHASE_TIMES=1
 * (setup.py) defines FBP_PHASE_TIMES, on POSIX systems with GCC or Clang. Each thread
 * (part) of a step adds the seconds it spends in each phase of _train_part to its
 * own row of fbp_phase_rows, and counts its steps in the row's column
 * FBP_PHASE_COUNT; _core.phase_times() reads and resets them. A row is a cache line
 * of its own, so that the threads' timers do not slow each other down. The rows are
 * shared by every fit in the process: time one fit at a time. In other builds the
 * calls compile to nothing. */
#define FBP_PHASE_COUNT 5 /* work, first barrier, gradients, update, second barrier */
#define FBP_PHASE_PARTS 64 /* MAX_PARTS (_core.pxd) */
#define FBP_PHASE_ROW 8 /* doubles a row: the phases, the steps, padding to 64 bytes */
#if defined(FASTBP_PHASE_TIMES) && !defined(_WIN32) && (defined(__GNUC__) || defined(__clang__))
#include <time.h>
#define FBP_PHASE_TIMES 1
static double fbp_phase_rows[FBP_PHASE_PARTS][FBP_PHASE_ROW] __attribute__((aligned(64)));
static inline double fbp_phase_clock(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}
/* Phase `phase` of part `part` ran from *since to now; the next one starts now. */
static inline void fbp_phase_mark(int part, int phase, double *since)
{
    double now = fbp_phase_clock();
    fbp_phase_rows[part][phase] += now - *since;
    *since = now;
}
static inline void fbp_phase_step(int part) { fbp_phase_rows[part][FBP_PHASE_COUNT] += 1; }
#else
#define FBP_PHASE_TIMES 0
static double fbp_phase_rows[FBP_PHASE_PARTS][FBP_PHASE_ROW];
static inline double fbp_phase_clock(void) { return 0; }
static inline void fbp_phase_mark(int part, int phase, double *since)
{
    (void)part; (void)phase; (void)since;
}
static inline void fbp_phase_step(int part) { (void)part; }
#endif

#endif
