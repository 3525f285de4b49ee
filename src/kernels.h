/* kernels.h - the kernel sets behind every projection, and which one runs.
 *
 * One dispatch point (kernels_get, kernels.c) picks a set for this CPU once;
 * the scalar set (kernels_ref.c) is always compiled and is what the SIMD sets
 * (kernels_<isa>.c) are tested against. A set supplies, per weight dtype,
 * one tile function:
 *
 *   y[t*ldy + r] = sum_c W[r][c] * a_t[c]     for r < nr, t < nt
 *
 * where W's rows are w + r*w_stride (storage dtype) and a_t is activation
 * row (idx ? idx[t] : t) at a + that * a_stride, in the type the weight dtype
 * pairs with (dtype.h: float, Q8A or Q8_K), so an expert reads its gathered
 * tokens in place, without copies (act_rows.h prepares those rows;
 * matmul.h runs tiles over threads). */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

typedef void (*tile_fn)(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                        const int *idx, int nt, float *y, size_t ldy);

typedef struct {
    const char *name;
    tile_fn tile[DT_COUNT];                      /* by weight dtype; NULL: tile_ref runs */
    float (*dot_f32)(const float *a, const float *b, int n);
    void (*axpy_f32)(float *y, float s, const float *x, int n);
    void (*axpy_f16)(float *y, float s, const uint16_t *x, int n); /* f16 KV cache */
    void (*quantize_q8a)(const float *x, void *y, int n); /* activations for Q8_0/Q4_0: bit-exact with quant.c's */
    uint64_t (*read_sum)(const uint64_t *p, size_t n, int parts); /* sum of n words (n % 64 == 0, p 64-byte
                                    aligned) with the widest loads, read as `parts` (>= 1) equal parts of whole
                                    64-word chunks at once, a chunk of each in turn, the rest after: moe bench's
                                    read-bandwidth probe */
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

#endif /* MOE_KERNELS_H */
