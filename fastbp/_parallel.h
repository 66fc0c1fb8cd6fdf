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

#endif
