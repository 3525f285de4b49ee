/* kernels.h - the matrix kernels behind every projection.
 *
 * One dispatch point (kernels_get) picks a kernel set for this CPU once; the
 * scalar set is always compiled and is what the SIMD sets are tested
 * against. A kernel set supplies, per weight dtype, one tile function:
 *
 *   y[t*ldy + r] = sum_c W[r][c] * a_t[c]     for r < nr, t < nt
 *
 * where W's rows are w + r*w_stride (storage dtype) and a_t is activation
 * row (idx ? idx[t] : t) at a + that * a_stride, in the type the weight dtype
 * pairs with (dtype.h: float, Q8A or Q8_K), so an expert reads its gathered
 * tokens in place, without copies.
 *
 * Activations are prepared once per matmul input: an act_rows remembers
 * the float rows and quantizes them on first use for each activation type,
 * so q, k and v (or an expert's gate and up) share one quantization. */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include "quant.h"
#include "wmat.h"

typedef void (*tile_fn)(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                        const int *idx, int nt, float *y, size_t ldy);

typedef struct {
    const char *name;
    tile_fn tile[DT_COUNT];                      /* by weight dtype; NULL: tile_ref runs */
    float (*dot_f32)(const float *a, const float *b, int n);
    void (*axpy_f32)(float *y, float s, const float *x, int n);
    void (*axpy_f16)(float *y, float s, const uint16_t *x, int n); /* f16 KV cache */
    void (*quantize_q8a)(const float *x, void *y, int n); /* activations for Q8_0/Q4_0: bit-exact with quant.c's */
    uint64_t (*read_sum)(const uint64_t *p, size_t n);   /* sum of n words (n % 64 == 0, p 64-byte aligned) with the
                                                            widest loads: moe bench's read-bandwidth probe */
} kernel_set;

/* The reference tile of any weight type in the table (dtype.h): one
 * reference dot per (row, token). Every set's tiles are tested against it. */
void tile_ref(moe_dtype t, int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
              const int *idx, int nt, float *y, size_t ldy);
/* Set ks's tile for weight type t, or tile_ref where the set has none. */
static inline void kernel_tile(const kernel_set *ks, moe_dtype t, int n, const void *w, size_t w_stride, int nr,
                               const void *a, size_t a_stride, const int *idx, int nt, float *y, size_t ldy) {
    if (ks->tile[t]) ks->tile[t](n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
    else tile_ref(t, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* The reference set: no tiles (tile_ref runs), plain loops for the rest. */
const kernel_set *kernels_scalar(void);
/* Every set this binary has and this CPU can run, best last; returns the count. */
int kernels_available(const kernel_set **out, int cap);
/* The best of them, chosen once (MOE_KERNELS=scalar|avx2|... overrides). */
const kernel_set *kernels_get(void);

/* ------------------------------------------------------------ activations */

/* n float rows of cols values (row t at x + t*cols) plus lazily filled
 * quantized copies, one per activation type (dtype.h), in caller-provided
 * scratch. */
typedef struct {
    const float *x;             /* (n, cols) */
    int n, cols;
    void *q[ACT_COUNT];         /* (n, act_row_bytes(type, cols)) in the scratch; q[ACT_F32] unused */
    int have[ACT_COUNT];        /* q[type] holds the rows */
} act_rows;

/* Bytes of scratch act_rows needs for n rows of cols (scratch may be NULL
 * when only float weights will read the rows). */
size_t act_scratch_bytes(int n, int cols);
void act_init(act_rows *a, const float *x, int n, int cols, void *scratch);
/* Quantize for this weight dtype if not done yet (with the set's quantizer);
 * returns the rows' base and stride. */
const void *act_prepare(const kernel_set *ks, act_rows *a, moe_dtype wtype, size_t *stride);

/* y[t][r] = W row r . activation row t, for all n rows (y: n x w->rows):
 * a list of one job (matmul_jobs below). */
void matmul(float *y, const wmat *w, act_rows *a);
/* The same with an explicit kernel set and no threads (tests, nested use). */
void matmul_serial(const kernel_set *ks, float *y, const wmat *w, act_rows *a, const int *idx, int m);

/* A list of products run in one parallel region, balanced over all their
 * rows: y (m x w->rows) = W . rows idx[0..m) of a (NULL: 0..m-1). With up
 * set, a gate/up pair on the same rows: y_up = Up . a, then y = silu(y) * y_up
 * (SwiGLU), each row block finished while it is in cache. */
#define MM_MAX_JOBS 64
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
void matmul_jobs(const mm_job *jobs, int n);

/* Row r of W widened to floats (embedding lookup), any dtype. */
void wmat_row_to_f32(const wmat *w, int r, float *out);

#endif /* MOE_KERNELS_H */
