/* kernels_simd.h - what the SIMD kernel sets (kernels_avx2.c,
 * kernels_avx512.c, kernels_neon.c) share: addressing the activation rows,
 * scalar tails for float weights, and the tile loop around a float row
 * function (tile_float_rows). Each set includes it after defining TOK
 * (tokens per pass over a weight row) and, if it defines row_float,
 * SIMD_FLOAT_ROWS; the instructions themselves stay in the set's own file. */
#ifndef MOE_KERNELS_SIMD_H
#define MOE_KERNELS_SIMD_H

#include "kernels.h"
#include "quant.h"
#include "util.h"

/* Activation row t of a tile: row idx[t] (gathered tokens) or t. */
#define AROW(t) ((const char *)a + (size_t)(idx ? idx[t] : (t)) * a_stride)

/* The bytes [p, p + n) into L2 (prefetcht2), one prefetch per 64-byte
 * line. The decode kernels read a tile's rows as linear streams (DECODE_PARTS
 * of them a thread on x86) and prefetch DECODE_AHEAD bytes on in each, which
 * runs on into the next rows; they lay out the token's side of each step on
 * the stack, for rows of up to DECODE_MAX_BLOCKS blocks. Into L2, not L1
 * (prefetcht0), because L1 prefetches hold the line-fill buffers the demand
 * loads need (the measurements: docs/BENCHMARKS.md, 2026-12-02). 8 KB on,
 * not 32: a stream that ends (an expert's matrix, a thread's stretch) has
 * fetched DECODE_AHEAD bytes it never reads, 4 % of an 864 KB Q4_K expert
 * at 32 KB; the experts' gate/up read 11-15 % faster at 8 KB and the
 * output matrix no slower (docs/BENCHMARKS.md, 2026-12-07, third session). */
static inline void prefetch_span(const char *p, int n) {
#if defined(__x86_64__) || defined(_M_X64)
    for (int o = 0; o < n; o += 64) __builtin_prefetch(p + o, 0, 1);
#else
    (void)p, (void)n; /* measured on x86 only: NEON keeps to the hardware prefetchers */
#endif
}
#define DECODE_AHEAD 8192
/* The x86 decode kernels read a tile as this many parts at once, a step of
 * each in turn: a thread that computes between its loads keeps more of
 * memory's requests in flight with three streams than with one (+13 % on a
 * Q4_K_M file; four and six were slower: docs/BENCHMARKS.md, 2026-12-07,
 * fifth session). */
#define DECODE_PARTS 3
#define DECODE_MAX_BLOCKS 1024

/* Element i of a float weight row, widened (the scalar tail of a row). */
static inline float widen_f32(const void *p, int i) { return ((const float *)p)[i]; }
static inline float widen_f16(const void *p, int i) { return f16_to_f32(((const uint16_t *)p)[i]); }
static inline float widen_bf16(const void *p, int i) { return bf16_to_f32(((const uint16_t *)p)[i]); }
/* The same for a float type dt (F32, F16 or BF16) given as a constant, and
 * the bytes of one element. */
static inline float widen(moe_dtype dt, const void *p, int i) {
    return dt == DT_F16 ? widen_f16(p, i) : dt == DT_BF16 ? widen_bf16(p, i) : widen_f32(p, i);
}
static inline size_t float_bytes(moe_dtype dt) { return dt == DT_F32 ? 4 : 2; }

#ifdef SIMD_FLOAT_ROWS /* defined by the sets that define row_float (not kernels_amx.c) */
/* One float weight row (dt: F32, F16 or BF16, a constant at every call)
 * against nt (<= TOK) float activation rows: out[t] = row . x[t]. Each set
 * defines it with its own instructions. */
static inline __attribute__((always_inline)) void row_float(moe_dtype dt, int n, const void *wr,
                                                            const float *const *x, int nt, float *out);

/* A float-weight tile from row_float: tokens in groups of TOK, each weight
 * row read once per group. row_float is called with a constant token count
 * so its accumulators stay in registers. One token (decode: routers, a
 * tied float output matrix) prefetches DECODE_AHEAD bytes on, as the int8
 * decode does. */
static inline __attribute__((always_inline)) void tile_float_rows(moe_dtype dt, int n, const void *w, size_t w_stride,
                                                                  int nr, const void *a, size_t a_stride,
                                                                  const int *idx, int nt, float *y, size_t ldy) {
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const float *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const float *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            float o[TOK];
            const void *wr = (const char *)w + (size_t)r * w_stride;
            if (nt == 1) prefetch_span((const char *)wr + DECODE_AHEAD, (int)w_stride);
            switch (m) {
            case 4: row_float(dt, n, wr, x, 4, o); break;
            case 3: row_float(dt, n, wr, x, 3, o); break;
            case 2: row_float(dt, n, wr, x, 2, o); break;
            default: row_float(dt, n, wr, x, 1, o); break;
            }
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = o[t];
        }
    }
}
#endif

/* Q8_0_R16 / Q4_0_R16 (quant.h): a step k of 8 multiplies 4 values of each
 * row by the token's values starting here: 4k for Q8_0; for Q4_0 the low
 * nibbles of chunk k (k < 4) hold values 4k.., the high ones 16 + 4(k-4).. */
static inline int r16_x_offset(int q4, int k) { return q4 ? (k < 4 ? 4 * k : 16 + 4 * (k - 4)) : 4 * k; }

#if defined(__x86_64__) || defined(_M_X64)
/* The K-quants, IQ4_XS and MXFP4 in AVX2 (kernels_avx2.c), which the
 * AVX-512 set uses too: madd already folds each sub-block's scale in, so
 * wider registers gain little. */
void avx2_tile_q4_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy);
void avx2_tile_q5_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy);
void avx2_tile_q6_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy);
void avx2_tile_iq4_xs(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy);
void avx2_tile_mxfp4(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy);
/* MXFP4 in AVX-512 (kernels_avx512.c), and on AMX tiles for prefill
 * (kernels_amx.c), which runs the AVX-512 one for few tokens. */
void avx512_tile_mxfp4(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                       int nt, float *y, size_t ldy);
void amx_tile_mxfp4(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy);
#endif

#endif /* MOE_KERNELS_SIMD_H */
