/* threads.h - the only place that knows whether OpenMP is there. Without it
 * the pragmas are ignored and these report one thread. */
#ifndef MOE_THREADS_H
#define MOE_THREADS_H

#ifdef _OPENMP
#include <omp.h>
static inline int thread_id(void) { return omp_get_thread_num(); }
static inline int threads_in_team(void) { return omp_get_num_threads(); }
static inline int threads_max(void) { return omp_get_max_threads(); }
static inline int cores_available(void) { return omp_get_num_procs(); }
static inline void threads_set(int n) { omp_set_num_threads(n); }
#else
static inline int thread_id(void) { return 0; }
static inline int threads_in_team(void) { return 1; }
static inline int threads_max(void) { return 1; }
static inline int cores_available(void) { return 1; }
static inline void threads_set(int n) { (void)n; }
#endif

/* Row loops (norms, residual adds, per-token attention work) run on one
 * thread below this many rows: decode's one row is not worth waking a team. */
#define PAR_MIN_ROWS 16

#endif /* MOE_THREADS_H */
