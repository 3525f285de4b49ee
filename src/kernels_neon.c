/* kernels_neon.c - the NEON + dot-product kernel set (AArch64).
 *
 * Compiled with -march=armv8.2-a+dotprod (CMake sets the flag for this file
 * only) and chosen at run time when the CPU reports the dot-product
 * instructions (kernels.c asks the kernel's HWCAP). Float weights use 4-wide
 * fp32 FMA, two vectors per step; f16 weights widen with fcvtl, bf16 ones
 * with a 16-bit left shift. Int8 blocks use sdot (vdotq_s32: four signed
 * byte products summed into each int32 lane), which is signed x signed, so
 * unlike the x86 sets no offset or sign trick is needed: Q4_0's nibbles get
 * their "- 8" with one byte subtract and every block dot is exact in int32,
 * as in the scalar code.
 *
 * Every tile handles several tokens per pass over a weight row, so a weight
 * block is loaded once and used for all of them during prefill. Every float
 * loop has a scalar tail; results must match the scalar set
 * (tests/unit/test_kernels.c). */
#if defined(__aarch64__)
#include <float.h>
#include <arm_neon.h>
#include <string.h>

#include "kernels.h"
#include "quant_k.h"
#include "quant_legacy.h"
#include "quant_mxfp4.h"
#include "util.h"

#define TOK 4 /* tokens per pass over a weight row */
#define SIMD_FLOAT_ROWS /* row_float below: kernels_simd.h's tile_float_rows uses it */
#include "kernels_simd.h"

/* Unroll the short token / row loops before GCC decides where the
 * accumulator arrays live, so they become registers. */
#define UNROLL _Pragma("GCC unroll 4")

/* f16 -> f32 for the block scales, in one fcvtl (exact, as f16_to_f32) */
static inline float h2f(uint16_t h) { return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0); }


/* ------------------------------------------------------------ float weights */

/* 4 weights widened to floats, per storage type */
static inline float32x4_t load4_f32(const void *p) { return vld1q_f32((const float *)p); }
static inline float32x4_t load4_f16(const void *p) {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)p)));
}
static inline float32x4_t load4_bf16(const void *p) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)p), 16));
}

/* 4 weights of a float row from p, widened; dt (F32, F16 or BF16) is a
 * constant at every call, so this is one of the three loads above. */
static inline __attribute__((always_inline)) float32x4_t load4(moe_dtype dt, const void *p) {
    return dt == DT_F16 ? load4_f16(p) : dt == DT_BF16 ? load4_bf16(p) : load4_f32(p);
}

/* One weight row against nt (<= TOK) float activation rows: 8 weights per
 * step in two vectors, each with its own accumulator per token (two
 * independent FMA chains). Inlined with a constant nt at every call site, so
 * the token loops unroll and the accumulators stay in registers (with a
 * variable nt GCC keeps them in memory). */
static inline __attribute__((always_inline)) void row_float(moe_dtype dt, int n, const void *wr,
                                                            const float *const *x, int nt, float *out) {
    const size_t es = float_bytes(dt);
    float32x4_t acc0[TOK], acc1[TOK];
    UNROLL for (int t = 0; t < TOK; t++) acc0[t] = acc1[t] = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t w0 = load4(dt, (const char *)wr + (size_t)i * es);
        float32x4_t w1 = load4(dt, (const char *)wr + (size_t)(i + 4) * es);
        UNROLL for (int t = 0; t < nt; t++) {
            acc0[t] = vfmaq_f32(acc0[t], w0, vld1q_f32(x[t] + i));
            acc1[t] = vfmaq_f32(acc1[t], w1, vld1q_f32(x[t] + i + 4));
        }
    }
    if (i + 4 <= n) {
        float32x4_t w0 = load4(dt, (const char *)wr + (size_t)i * es);
        UNROLL for (int t = 0; t < nt; t++) acc0[t] = vfmaq_f32(acc0[t], w0, vld1q_f32(x[t] + i));
        i += 4;
    }
    UNROLL for (int t = 0; t < nt; t++) {
        float s = vaddvq_f32(vaddq_f32(acc0[t], acc1[t]));
        for (int j = i; j < n; j++) s += widen(dt, wr, j) * x[t][j];
        out[t] = s;
    }
}

static void tile_f32(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                     int nt, float *y, size_t ldy) {
    tile_float_rows(DT_F32, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_f16(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                     int nt, float *y, size_t ldy) {
    tile_float_rows(DT_F16, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_bf16(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_float_rows(DT_BF16, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* ------------------------------------------------------------ int8 blocks */

/* Q8_0 and Q4_0 as register tiles: R weight rows x T activation rows at a
 * time. A 32-value block is two 16-byte vectors; its dot with an activation
 * block is two sdot into one int32x4 (exact), converted to float and added
 * with the product of the two block scales. Each weight block is loaded
 * (and for Q4_0 unpacked) once for T tokens, each activation block once for
 * R rows. With R = 2 and T = 4 the 8 accumulators, 4 weight and 8
 * activation vectors fit the 32 NEON registers. */
#define RT 2 /* rows per register tile */
#define TT 4 /* tokens per register tile */

/* The 32 weights of a block as signed bytes in two vectors (elements 0..15
 * and 16..31). Q4_0: low nibbles are elements 0..15, high nibbles 16..31,
 * each minus 8. */
static inline void wq_q8_0(const block_q8_0 *b, int8x16_t *w0, int8x16_t *w1) {
    *w0 = vld1q_s8(b->qs);
    *w1 = vld1q_s8(b->qs + 16);
}
static inline void wq_q4_0(const block_q4_0 *b, int8x16_t *w0, int8x16_t *w1) {
    uint8x16_t q = vld1q_u8(b->qs);
    const int8x16_t eight = vdupq_n_s8(8);
    *w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF))), eight);
    *w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);
}

/* Q8_0 (q4 = 0) or Q4_0 (q4 = 1): the kernels below serve both with q4 a
 * constant argument, so each compiles to one type's code. */
static inline const void *int8_block(int q4, const void *row, int b) { /* block b of a row */
    return q4 ? (const void *)((const block_q4_0 *)row + b) : (const void *)((const block_q8_0 *)row + b);
}
static inline float int8_scale(int q4, const void *blk) {
    return h2f(q4 ? ((const block_q4_0 *)blk)->d : ((const block_q8_0 *)blk)->d);
}
static inline void int8_wq(int q4, const void *blk, int8x16_t *w0, int8x16_t *w1) {
    if (q4) wq_q4_0(blk, w0, w1);
    else wq_q8_0(blk, w0, w1);
}

/* out[r*TT + t] = row r . token t over nb blocks, for r < R, t < T (constants
 * at every call site, so the loops unroll into registers). */
static inline __attribute__((always_inline)) void int8_rxt(int q4, int nb, const void *const *w, int R,
                                                           const block_q8a *const *x, int T, float *out) {
    float32x4_t acc[RT][TT];
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int t = 0; t < T; t++) acc[r][t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        int8x16_t x0[TT], x1[TT];
        UNROLL for (int t = 0; t < T; t++) {
            x0[t] = vld1q_s8(x[t][b].qs);
            x1[t] = vld1q_s8(x[t][b].qs + 16);
        }
        UNROLL for (int r = 0; r < R; r++) {
            const void *blk = int8_block(q4, w[r], b);
            int8x16_t w0, w1;
            int8_wq(q4, blk, &w0, &w1);
            float dw = int8_scale(q4, blk);
            UNROLL for (int t = 0; t < T; t++) {
                int32x4_t dot = vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0[t]), w1, x1[t]);
                acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(dot), dw * x[t][b].d);
            }
        }
    }
    UNROLL for (int r = 0; r < R; r++)
        UNROLL for (int t = 0; t < T; t++) out[r * TT + t] = vaddvq_f32(acc[r][t]);
}

/* The tile loop shared by both types: tokens in groups of TT, rows in groups
 * of RT, remainders with smaller constant tiles. */
static inline __attribute__((always_inline)) void tile_int8(int q4, int n, const void *w, size_t w_stride, int nr,
                                                            const void *a, size_t a_stride, const int *idx, int nt,
                                                            float *y, size_t ldy) {
    int nb = n / 32;
    for (int t0 = 0; t0 < nt; t0 += TT) {
        int m = nt - t0 < TT ? nt - t0 : TT;
        const block_q8a *x[TT];
        for (int t = 0; t < TT; t++) x[t] = (const block_q8a *)AROW(t0 + (t < m ? t : 0));
        for (int r0 = 0; r0 < nr; r0 += RT) {
            int k = nr - r0 < RT ? nr - r0 : RT;
            const void *wr[RT];
            for (int r = 0; r < RT; r++) wr[r] = (const char *)w + (size_t)(r0 + (r < k ? r : 0)) * w_stride;
            float o[RT * TT];
            if (k == RT) {
                switch (m) { /* a constant token count keeps the accumulators in registers */
                case 4: int8_rxt(q4, nb, wr, RT, x, 4, o); break;
                case 3: int8_rxt(q4, nb, wr, RT, x, 3, o); break;
                case 2: int8_rxt(q4, nb, wr, RT, x, 2, o); break;
                default: int8_rxt(q4, nb, wr, RT, x, 1, o); break;
                }
            } else {
                switch (m) {
                case 4: int8_rxt(q4, nb, wr, 1, x, 4, o); break;
                case 3: int8_rxt(q4, nb, wr, 1, x, 3, o); break;
                case 2: int8_rxt(q4, nb, wr, 1, x, 2, o); break;
                default: int8_rxt(q4, nb, wr, 1, x, 1, o); break;
                }
            }
            for (int r = 0; r < k; r++)
                for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r0 + r] = o[r * TT + t];
        }
    }
}
static void tile_q8_0(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_int8(0, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_q4_0(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_int8(1, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* Q4_K, Q5_K and Q6_K x Q8A (32-value activation blocks, quant.h), as the
 * AVX2 set does it: a super-block is unpacked once into 8 sub-blocks of 32
 * signed codes (two vectors each) and used for every token of the pass.
 * Q4_K/Q5_K codes are 0..15 / 0..31 (valid signed bytes for sdot) with one
 * float scale d * sc and min dmin * m per sub-block; Q6_K's are q - 32 with
 * one int8 scale per 16 values, applied in int32 (exact). */
typedef struct {
    int8x16_t q[16];   /* sub-block j: q[2j] values 0..15, q[2j+1] 16..31 */
    int32_t isc[16];   /* Q6_K: the int8 scale of each 16 values */
    float ds[8];       /* Q4_K/Q5_K: d * sc_j; Q6_K: d */
    float dm[8];       /* Q4_K/Q5_K: dmin * m_j; Q6_K: 0 */
} kq_super;

static inline void kq_scales(const uint8_t *scales, float d, float dmin, kq_super *u) {
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        q4_K_scale_min(j, scales, &sc, &m);
        u->ds[j] = d * (float)sc;
        u->dm[j] = dmin * (float)m;
    }
}

static inline void unpack_q4_K(const block_q4_K *w, kq_super *u) {
    const uint8x16_t m4 = vdupq_n_u8(0xF);
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < 2; i++) {
            uint8x16_t q = vld1q_u8(w->qs + 32 * c + 16 * i);
            u->q[4 * c + i] = vreinterpretq_s8_u8(vandq_u8(q, m4));
            u->q[4 * c + 2 + i] = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
        }
    kq_scales(w->scales, h2f(w->d), h2f(w->dmin), u);
}

static inline void unpack_q5_K(const block_q5_K *w, kq_super *u) {
    const uint8x16_t m4 = vdupq_n_u8(0xF), one = vdupq_n_u8(1);
    for (int i = 0; i < 2; i++) {
        uint8x16_t qh = vld1q_u8(w->qh + 16 * i);
        for (int c = 0; c < 4; c++) {
            uint8x16_t q = vld1q_u8(w->qs + 32 * c + 16 * i);
            uint8x16_t h1 = vshlq_n_u8(vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(-2 * c))), one), 4);
            uint8x16_t h2 = vshlq_n_u8(vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(-2 * c - 1))), one), 4);
            u->q[4 * c + i] = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, m4), h1));
            u->q[4 * c + 2 + i] = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(q, 4), h2));
        }
    }
    kq_scales(w->scales, h2f(w->d), h2f(w->dmin), u);
}

/* Q6_K (quant_k.h): value 128 h + 32 k + l has low bits in ql[64 h + 32 (k & 1) + l]
 * (nibble k / 2) and high bits at qh[32 h + l] bit 2k; sub-block 4 h + k. */
static inline void unpack_q6_K(const block_q6_K *w, kq_super *u) {
    const uint8x16_t m4 = vdupq_n_u8(0xF), m2 = vdupq_n_u8(3);
    const int8x16_t c32 = vdupq_n_s8(32);
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 2; i++) {
                uint8x16_t ql = vld1q_u8(w->ql + 64 * h + 32 * (k & 1) + 16 * i);
                uint8x16_t qh = vld1q_u8(w->qh + 32 * h + 16 * i);
                uint8x16_t lo = k < 2 ? vandq_u8(ql, m4) : vshrq_n_u8(ql, 4);
                uint8x16_t hi = vshlq_n_u8(vandq_u8(vshlq_u8(qh, vdupq_n_s8((int8_t)(-2 * k))), m2), 4);
                u->q[2 * (4 * h + k) + i] = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hi)), c32);
            }
    for (int g = 0; g < 16; g++) u->isc[g] = w->scales[g];
    float d = h2f(w->d);
    for (int j = 0; j < 8; j++) u->ds[j] = d, u->dm[j] = 0;
}

/* One unpacked super-block against token row x's 8 activation blocks. */
static inline float32x4_t kq_block(int q6, const kq_super *u, const block_q8a *x, float32x4_t acc, float *corr) {
    for (int j = 0; j < 8; j++) {
        int8x16_t x0 = vld1q_s8(x[j].qs), x1 = vld1q_s8(x[j].qs + 16);
        int32x4_t v;
        if (q6)
            v = vmlaq_n_s32(vmulq_n_s32(vdotq_s32(vdupq_n_s32(0), u->q[2 * j], x0), u->isc[2 * j]),
                            vdotq_s32(vdupq_n_s32(0), u->q[2 * j + 1], x1), u->isc[2 * j + 1]);
        else
            v = vdotq_s32(vdotq_s32(vdupq_n_s32(0), u->q[2 * j], x0), u->q[2 * j + 1], x1);
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(v), u->ds[j] * x[j].d);
        *corr += u->dm[j] * (x[j].d * (float)x[j].sum);
    }
    return acc;
}

/* Q4_K, Q5_K or Q6_K (dt, a constant at every call): tokens TOK at a time,
 * each super-block unpacked once for them. */
static inline __attribute__((always_inline)) void tile_kq(moe_dtype dt, int n, const void *w, size_t w_stride, int nr,
                                                          const void *a, size_t a_stride, const int *idx, int nt,
                                                          float *y, size_t ldy) {
    const size_t bytes = dt == DT_Q6_K ? sizeof(block_q6_K) : dt == DT_Q5_K ? sizeof(block_q5_K) : sizeof(block_q4_K);
    int nb = n / QK_K;
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const block_q8a *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const block_q8a *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const char *wr = (const char *)w + (size_t)r * w_stride;
            float32x4_t acc[TOK];
            float corr[TOK] = {0};
            for (int t = 0; t < TOK; t++) acc[t] = vdupq_n_f32(0.0f);
            for (int b = 0; b < nb; b++) {
                const char *wb = wr + (size_t)b * bytes;
                kq_super u;
                if (dt == DT_Q6_K) unpack_q6_K((const block_q6_K *)wb, &u);
                else if (dt == DT_Q5_K) unpack_q5_K((const block_q5_K *)wb, &u);
                else unpack_q4_K((const block_q4_K *)wb, &u);
                for (int t = 0; t < m; t++) acc[t] = kq_block(dt == DT_Q6_K, &u, x[t] + 8 * b, acc[t], &corr[t]);
            }
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = vaddvq_f32(acc[t]) - corr[t];
        }
    }
}
static void tile_q4_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_kq(DT_Q4_K, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_q5_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_kq(DT_Q5_K, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_q6_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_kq(DT_Q6_K, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* IQ4_XS x Q8_K: each nibble looks its signed level up in kvalues_iq4nl
 * (one table lookup), sdot with the activation bytes, times the sub-block's
 * 6-bit scale - 32 in int32 (exact), one float multiply per super-block. */
static void tile_iq4_xs(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                        int nt, float *y, size_t ldy) {
    int nb = n / QK_K;
    const uint8x16_t m4 = vdupq_n_u8(0xF);
    const int8x16_t lut = vld1q_s8(kvalues_iq4nl);
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const block_q8_K *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const block_q8_K *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const block_iq4_xs *wb = (const block_iq4_xs *)((const char *)w + (size_t)r * w_stride);
            float sum[TOK] = {0};
            for (int b = 0; b < nb; b++) {
                int32x4_t sumi[TOK];
                for (int t = 0; t < TOK; t++) sumi[t] = vdupq_n_s32(0);
                for (int j = 0; j < 8; j++) { /* sub-block j: bytes 16 j.., values i (low) and i + 16 (high) */
                    uint8x16_t q = vld1q_u8(wb[b].qs + 16 * j);
                    int8x16_t lo = vqtbl1q_s8(lut, vandq_u8(q, m4)), hi = vqtbl1q_s8(lut, vshrq_n_u8(q, 4));
                    int32_t ls = iq4_xs_scale(&wb[b], j) - 32;
                    for (int t = 0; t < m; t++) {
                        const int8_t *xq = x[t][b].qs + 32 * j;
                        int32x4_t p = vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(xq)), hi, vld1q_s8(xq + 16));
                        sumi[t] = vmlaq_n_s32(sumi[t], p, ls);
                    }
                }
                float d = h2f(wb[b].d);
                for (int t = 0; t < m; t++) sum[t] += d * x[t][b].d * (float)vaddvq_s32(sumi[t]);
            }
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = sum[t];
        }
    }
}

/* MXFP4 x float: each block's 32 levels (a table lookup of the nibbles in
 * kvalues_mxfp4, widened to floats) times its power-of-two half scale are
 * exact floats, used for up to TOK float activation rows with FMA; no
 * activation rounding (quant_mxfp4.h says why). A block's eight FMAs per
 * token go into four accumulators per token, so one token (decode) is not
 * held to one FMA latency per 4 weights. Inlined with a constant token
 * count, as row_float, so the accumulators stay in registers. */
static inline float32x4_t mx_widen(int16x4_t v, float32x4_t d) { return vmulq_f32(d, vcvtq_f32_s32(vmovl_s16(v))); }

static inline __attribute__((always_inline)) void row_mxfp4(int T, int nb, const block_mxfp4 *wb, int8x16_t lut,
                                                              const float *const *x, float *o) {
    const uint8x16_t m4 = vdupq_n_u8(0xF);
    float32x4_t acc[4][TOK]; /* [chain][token]: chain c takes the quarters k with k % 4 == c */
    UNROLL for (int t = 0; t < T; t++) acc[0][t] = acc[1][t] = acc[2][t] = acc[3][t] = vdupq_n_f32(0.0f);
    for (int b = 0; b < nb; b++) {
        uint8x16_t q = vld1q_u8(wb[b].qs);
        int8x16_t l = vqtbl1q_s8(lut, vandq_u8(q, m4)), h = vqtbl1q_s8(lut, vshrq_n_u8(q, 4));
        int16x8_t w16[4] = {vmovl_s8(vget_low_s8(l)), vmovl_s8(vget_high_s8(l)), vmovl_s8(vget_low_s8(h)),
                            vmovl_s8(vget_high_s8(h))}; /* elements 0-7, 8-15, 16-23, 24-31 */
        float32x4_t d = vdupq_n_f32(mxfp4_half_scale(wb[b].e)), wv[8]; /* wv[k]: elements 4k..4k+3 */
        for (int k = 0; k < 4; k++) {
            wv[2 * k] = mx_widen(vget_low_s16(w16[k]), d);
            wv[2 * k + 1] = mx_widen(vget_high_s16(w16[k]), d);
        }
        UNROLL for (int t = 0; t < T; t++) for (int k = 0; k < 8; k++)
            acc[k % 4][t] = vfmaq_f32(acc[k % 4][t], wv[k], vld1q_f32(x[t] + 32 * b + 4 * k));
    }
    UNROLL for (int t = 0; t < T; t++)
        o[t] = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0][t], acc[1][t]), vaddq_f32(acc[2][t], acc[3][t])));
}

static void tile_mxfp4(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                       int nt, float *y, size_t ldy) {
    int nb = n / QK_MXFP4;
    const int8x16_t lut = vld1q_s8(kvalues_mxfp4);
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const float *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const float *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const block_mxfp4 *wb = (const block_mxfp4 *)((const char *)w + (size_t)r * w_stride);
            float o[TOK] = {0}; /* (gcc cannot see that the switch fills o[0..m)) */
            switch (m) {        /* a constant token count keeps the accumulators in registers */
            case 4: row_mxfp4(4, nb, wb, lut, x, o); break;
            case 3: row_mxfp4(3, nb, wb, lut, x, o); break;
            case 2: row_mxfp4(2, nb, wb, lut, x, o); break;
            default: row_mxfp4(1, nb, wb, lut, x, o); break;
            }
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = o[t];
        }
    }
}

/* ------------------------------------------------------------ f32 helpers */

/* ------------------------------------------------------------ interleaved rows */

/* Q8_0_R16 and Q4_0_R16 (quant.h): lanes are rows. A 64-byte step is four
 * vectors of 4 rows x 4 values; sdot against the token's 4 matching values
 * (broadcast) adds each row's products into its lane, so the 16 row dots
 * of a block build up in four int32x4, exact. Q4_0's nibbles are q = w + 8
 * (0..15, fine as signed bytes): -8 * sum(x) starts the dot. One token per
 * pass over a group of rows; the group's blocks stay in cache for the next
 * token. */
static inline int8x16_t bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

/* The int32 dots of one block column (16 rows) with one token's block. */
static inline void r16_block(int q4, const uint8_t *qs, const block_q8a *x, int32x4_t d[4]) {
    for (int q = 0; q < 4; q++) d[q] = vdupq_n_s32(q4 ? -8 * x->sum : 0);
    for (int k = 0; k < 8; k++) {
        int8x16_t xb = bcast4(x->qs + r16_x_offset(q4, k));
        for (int q = 0; q < 4; q++) { /* rows 4q .. 4q+3 */
            int8x16_t w;
            if (q4) { /* low nibbles of chunk k, then the high ones */
                uint8x16_t v = vld1q_u8(qs + 64 * (k & 3) + 16 * q);
                w = vreinterpretq_s8_u8(k < 4 ? vandq_u8(v, vdupq_n_u8(0xF)) : vshrq_n_u8(v, 4));
            } else {
                w = vld1q_s8((const int8_t *)qs + 64 * k + 16 * q);
            }
            d[q] = vdotq_s32(d[q], w, xb);
        }
    }
}

static inline void r16_tile(int q4, int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                            const int *idx, int nt, float *y, size_t ldy) {
    const size_t col = q4 ? sizeof(block_q4_0x16) : sizeof(block_q8_0x16);
    for (int r0 = 0; r0 < nr; r0 += R16) { /* whole groups, as matmul's row blocks are */
        const uint8_t *g0 = (const uint8_t *)w + (size_t)r0 * w_stride;
        for (int t = 0; t < nt; t++) {
            const block_q8a *x = (const block_q8a *)AROW(t);
            float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
            for (int b = 0; b < n / 32; b++) {
                const uint8_t *g = g0 + (size_t)b * col;
                int32x4_t d[4];
                r16_block(q4, g + 2 * R16, &x[b], d);
                float16x8_t h0 = vreinterpretq_f16_u8(vld1q_u8(g)), h1 = vreinterpretq_f16_u8(vld1q_u8(g + 16));
                float32x4_t wd[4] = {vcvt_f32_f16(vget_low_f16(h0)), vcvt_high_f32_f16(h0), vcvt_f32_f16(vget_low_f16(h1)),
                                     vcvt_high_f32_f16(h1)};
                for (int q = 0; q < 4; q++)
                    acc[q] = vfmaq_f32(acc[q], vmulq_n_f32(vcvtq_f32_s32(d[q]), x[b].d), wd[q]);
            }
            for (int q = 0; q < 4; q++) vst1q_f32(y + (size_t)t * ldy + r0 + 4 * q, acc[q]);
        }
    }
}

static void tile_q8_0_r16(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                          const int *idx, int nt, float *y, size_t ldy) {
    r16_tile(0, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_q4_0_r16(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                          const int *idx, int nt, float *y, size_t ldy) {
    r16_tile(1, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

static float dot_f32(const float *a, const float *b, int n) {
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = vdupq_n_f32(0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    if (i + 4 <= n) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        i += 4;
    }
    float s = vaddvq_f32(vaddq_f32(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_f32(float *y, float s, const float *x, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), s));
    for (; i < n; i++) y[i] += s * x[i];
}

static void axpy_f16(float *y, float s, const uint16_t *x, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vcvt_f32_f16(vget_low_f16(h)), s));
        vst1q_f32(y + i + 4, vfmaq_n_f32(vld1q_f32(y + i + 4), vcvt_high_f32_f16(h), s));
    }
    if (i + 4 <= n) {
        vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), load4_f16(x + i), s));
        i += 4;
    }
    for (; i < n; i++) y[i] += s * f16_to_f32(x[i]);
}

/* quantize_row_q8a (quant.c) 32 values at a time: the same amax, scale and
 * round-to-nearest-even (vcvtnq), so the bytes are identical. */
static void quantize_q8a(const float *x, void *vy, int n) {
    block_q8a *y = vy;
    for (int b = 0; b < n / 32; b++, x += 32) {
        float32x4_t v[8], m = vdupq_n_f32(0.0f), z = vdupq_n_f32(0.0f);
        for (int k = 0; k < 8; k++) {
            v[k] = vld1q_f32(x + 4 * k);
            m = vmaxq_f32(m, vabsq_f32(v[k]));
            z = vaddq_f32(z, vsubq_f32(v[k], v[k])); /* NaN iff a value is not finite */
        }
        float amax = vmaxvq_f32(m), d = bf16_to_f32(f32_to_bf16(amax / 127.0f)), id = d > 0 ? 1.0f / d : 0.0f;
        if (vaddvq_f32(z) != 0.0f || id > FLT_MAX) { /* a zero block, as quant.c */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        int32x4_t sum = vdupq_n_s32(0);
        for (int k = 0; k < 8; k += 2) {
            int32x4_t q0 = vcvtnq_s32_f32(vmulq_n_f32(v[k], id)), q1 = vcvtnq_s32_f32(vmulq_n_f32(v[k + 1], id));
            sum = vaddq_s32(sum, vaddq_s32(q0, q1));
            vst1_s8(y[b].qs + 4 * k, vmovn_s16(vcombine_s16(vmovn_s32(q0), vmovn_s32(q1))));
        }
        y[b].d = d;
        y[b].sum = vaddvq_s32(sum);
    }
}

/* 64 words at q into four sums */
static inline void read_chunk(const uint64_t *q, uint64x2_t *a) {
    for (int k = 0; k < 32; k++) a[k & 3] = vaddq_u64(a[k & 3], vld1q_u64(q + 2 * k));
}
static uint64_t read_sum(const uint64_t *p, size_t n, int parts) {
    uint64x2_t a[4] = {vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0), vdupq_n_u64(0)};
    size_t part = n / (size_t)parts / 64 * 64;
    for (size_t i = 0; i < part; i += 64)
        for (int s = 0; s < parts; s++) read_chunk(p + (size_t)s * part + i, a);
    for (size_t i = (size_t)parts * part; i < n; i += 64) read_chunk(p + i, a);
    return vaddvq_u64(vaddq_u64(vaddq_u64(a[0], a[1]), vaddq_u64(a[2], a[3])));
}

static const kernel_set NEON = {
    .name = "neon",
    .tile = {[DT_F32] = tile_f32, [DT_F16] = tile_f16, [DT_BF16] = tile_bf16,
             [DT_Q8_0] = tile_q8_0, [DT_Q4_0] = tile_q4_0, [DT_Q4_K] = tile_q4_K,
             [DT_Q5_K] = tile_q5_K, [DT_Q6_K] = tile_q6_K, [DT_IQ4_XS] = tile_iq4_xs,
             [DT_Q8_0_R16] = tile_q8_0_r16, [DT_Q4_0_R16] = tile_q4_0_r16, [DT_MXFP4] = tile_mxfp4},
    .dot_f32 = dot_f32,
    .axpy_f32 = axpy_f32,
    .axpy_f16 = axpy_f16,
    .quantize_q8a = quantize_q8a,
    .read_sum = read_sum,
};

const kernel_set *kernels_neon(void) { return &NEON; }
#endif
