/* matmul.h - weight matrices times activation rows, over threads: the
 * kernel set's tiles (kernels.h) run on row blocks of each matrix, and a
 * list of products shares one parallel region. */
#ifndef MOE_MATMUL_H
#define MOE_MATMUL_H

#include "act_rows.h"
#include "kernels.h"
#include "wmat.h"

/* y[t][r] = W row r . activation row t, for all n rows (y: n x w->rows):
 * a list of one job (matmul_jobs below). */
void matmul(float *y, const wmat *w, act_rows *a, int n_threads);
/* The same with an explicit kernel set and no threads (tests, nested use). */
void matmul_serial(const kernel_set *ks, float *y, const wmat *w, act_rows *a, const int *idx, int m);

/* A list of products run in one parallel region of up to n_threads threads
 * (an OpenMP num_threads clause: the caller's own OpenMP setting is never
 * changed), balanced over all their
 * rows: y (m x w->rows) = W . rows idx[0..m) of a (NULL: 0..m-1). With up
 * set, a gate/up pair on the same rows: y_up = Up . a, then y = silu(y) * y_up
 * (SwiGLU), each row block finished while it is in cache. */
#define MM_MAX_JOBS 64     /* jobs in one parallel region; a longer list runs as several */
#define MM_MAX_THREADS 256 /* threads a matmul uses at most */
typedef struct {
    float *y;
    const wmat *w;
    act_rows *a;
    const int *idx;
    int m;
    const wmat *up; /* optional */
    float *y_up;
} mm_job;
void matmul_jobs(const mm_job *jobs, int n, int n_threads);

/* Row r of W widened to floats (embedding lookup), any dtype. */
void wmat_row_to_f32(const wmat *w, int r, float *out);

#endif /* MOE_MATMUL_H */
