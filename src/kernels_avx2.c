/* kernels_avx2.c - the AVX2 + FMA + F16C kernel set (x86-64).
 *
 * Compiled with -mavx2 -mfma -mf16c (CMake sets the flags for this file
 * only) and chosen at run time when the CPU has them. Each tile walks its
 * rows and handles up to 4 tokens per pass, so a weight block is loaded once
 * and used for several tokens during prefill. Int8 dot products use the
 * sign trick: |w| (unsigned) x sign(x, w) (signed) -> maddubs -> madd.
 * Every loop has a scalar tail; results must match the scalar set
 * (tests/unit/test_kernels.c). */
#if defined(__x86_64__) || defined(_M_X64)
#include <float.h>
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "quant_k.h"
#include "quant_legacy.h"
#include "quant_mxfp4.h"
#include "util.h"

#define TOK 4 /* tokens per pass over a weight row */
#define SIMD_FLOAT_ROWS /* row_float below: kernels_simd.h's tile_float_rows uses it */
#include "kernels_simd.h"

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* f16 -> f32 in one instruction (F16C); the scales of every block go through this */
static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }


/* ------------------------------------------------------------ float weights */

/* 8 weights widened to floats, per storage type */
static inline __m256 load8_f32(const void *p) { return _mm256_loadu_ps(p); }
static inline __m256 load8_f16(const void *p) { return _mm256_cvtph_ps(_mm_loadu_si128(p)); }
static inline __m256 load8_bf16(const void *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p)), 16));
}

/* 8 weights of a float row from p, widened; dt (F32, F16 or BF16) is a
 * constant at every call, so this is one of the three loads above. */
static inline __attribute__((always_inline)) __m256 load8(moe_dtype dt, const void *p) {
    return dt == DT_F16 ? load8_f16(p) : dt == DT_BF16 ? load8_bf16(p) : load8_f32(p);
}

/* One weight row against nt (<= TOK) float activation rows. */
static inline __attribute__((always_inline)) void row_float(moe_dtype dt, int n, const void *wr,
                                                            const float *const *x, int nt, float *out) {
    __m256 acc[TOK];
    for (int t = 0; t < TOK; t++) acc[t] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 w = load8(dt, (const char *)wr + (size_t)i * float_bytes(dt));
        for (int t = 0; t < nt; t++) acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x[t] + i), acc[t]);
    }
    for (int t = 0; t < nt; t++) {
        float s = hsum8(acc[t]);
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

/* Sum of the 32 products of signed bytes w and x, as 8 int32 lanes. */
static inline __m256i dot32_i8(__m256i w, __m256i x) {
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

/* 32 weights of a Q4_0 block as unsigned nibbles 0..15 (low nibbles are
 * elements 0..15, high ones 16..31); the "- 8" is applied per block through
 * the activation sum. */
static inline __m256i unpack_q4_0(const uint8_t *qs) {
    __m128i b = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0xF));
}

/* Sum of 32 products of unsigned bytes u and signed bytes x, as 8 int32 lanes. */
static inline __m256i dot32_u8i8(__m256i u, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
}

/* Decode (one token): a tile as DECODE_PARTS parts read at once, each a
 * linear stream with a prefetch DECODE_AHEAD bytes on in it (kernels_simd.h),
 * as in kernels_avx512.c; two accumulators per row. */
static inline __m256 q8_0_block(const block_q8_0 *w, const block_q8a *x, __m256 acc) {
    __m256i d = dot32_i8(_mm256_loadu_si256((const __m256i *)w->qs), _mm256_loadu_si256((const __m256i *)x->qs));
    return _mm256_fmadd_ps(_mm256_set1_ps(h2f(w->d) * x->d), _mm256_cvtepi32_ps(d), acc);
}

/* Q4_0 two blocks per step, the nibbles left where they are: byte i of a
 * block holds values i (low nibble) and i + 16 (high), so two blocks' 16
 * bytes side by side give values 0..15 of each (masked) and 16..31
 * (shifted), each 128-bit lane one block; the token's two blocks are laid
 * out the same way, once per tile call. The "- 8" enters as -8 * sum(x) in
 * one int32 lane of each block. */
static inline __m256i load2_128(const void *lo, const void *hi) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(lo)), _mm_loadu_si128(hi), 1);
}
static inline __m256 scales2(uint16_t lo, uint16_t hi) { /* f16 lo in lanes 0-3, hi in 4-7 */
    __m128 two = _mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(lo), hi, 1));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}
typedef struct {
    __m256i xl, xh, neg; /* values 0..15 and 16..31 of blocks b, b+1; the offset's share */
    __m256 xd;           /* their scales (0 for a missing b+1) */
} step_q4_0;

static inline __m256 q4_0_step(const block_q4_0 *w0, const block_q4_0 *w1, const step_q4_0 *s, __m256 acc) {
    const __m256i m4 = _mm256_set1_epi8(0xF), ones = _mm256_set1_epi16(1);
    __m256i q = load2_128(w0->qs, w1->qs);
    __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(q, m4), s->xl),
                                 _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), s->xh));
    __m256i d = _mm256_add_epi32(_mm256_madd_epi16(p, ones), s->neg);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(scales2(w0->d, w1->d), s->xd), acc);
}

/* S rows, r, r + part, ..., step by step (as rows32 below). */
static inline __attribute__((always_inline)) void q4_0_rows(int S, int nb, const void *w, size_t w_stride, int r,
                                                            int part, const step_q4_0 *st, float *y) {
    const block_q4_0 *wr[DECODE_PARTS];
    __m256 a0[DECODE_PARTS], a1[DECODE_PARTS];
    for (int s = 0; s < S; s++) {
        wr[s] = (const block_q4_0 *)((const char *)w + (size_t)(r + s * part) * w_stride);
        a0[s] = a1[s] = _mm256_setzero_ps();
    }
    int b = 0;
    for (; b + 4 <= nb; b += 4)
        for (int s = 0; s < S; s++) {
            prefetch_span((const char *)(wr[s] + b) + DECODE_AHEAD, 4 * (int)sizeof(block_q4_0));
            a0[s] = q4_0_step(&wr[s][b], &wr[s][b + 1], &st[b / 2], a0[s]);
            a1[s] = q4_0_step(&wr[s][b + 2], &wr[s][b + 3], &st[b / 2 + 1], a1[s]);
        }
    for (int s = 0; s < S; s++) {
        for (int k = b; k < nb; k += 2) a0[s] = q4_0_step(&wr[s][k], &wr[s][k + (k + 1 < nb)], &st[k / 2], a0[s]);
        y[r + s * part] = hsum8(_mm256_add_ps(a0[s], a1[s]));
    }
}

static void q4_0_decode(int nb, const void *w, size_t w_stride, int nr, const block_q8a *x, float *y) {
    step_q4_0 st[DECODE_MAX_BLOCKS / 2];
    for (int b = 0; b < nb; b += 2) {
        int two = b + 1 < nb; /* else the second lane is block b again, with a zero scale */
        const block_q8a *x1 = &x[b + two];
        step_q4_0 *s = &st[b / 2];
        s->xl = load2_128(x[b].qs, x1->qs);
        s->xh = load2_128(x[b].qs + 16, x1->qs + 16);
        s->neg = _mm256_setr_epi32(-8 * x[b].sum, 0, 0, 0, -8 * x1->sum, 0, 0, 0);
        s->xd = _mm256_set_m128(_mm_set1_ps(two ? x1->d : 0.0f), _mm_set1_ps(x[b].d));
    }
    int part = nr / DECODE_PARTS;
    for (int r = 0; r < part; r++) q4_0_rows(DECODE_PARTS, nb, w, w_stride, r, part, st, y);
    for (int r = DECODE_PARTS * part; r < nr; r++) q4_0_rows(1, nb, w, w_stride, r, 0, st, y);
}

/* Q5_0: the nibbles unpacked as Q4_0's, plus 16 where qh's bit i is set
 * (byte i gets qh's byte i / 8 by a shuffle, then its own bit is tested),
 * so the weights are unsigned q = w + 16; the offset's share -16 * sum(x)
 * is taken off in int32, so each block's dot is exact. */
static inline __m256i unpack_q5_0(const block_q5_0 *b) {
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i h = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread), bit);
    __m256i set = _mm256_cmpeq_epi8(h, bit);
    return _mm256_or_si256(unpack_q4_0(b->qs), _mm256_and_si256(set, _mm256_set1_epi8(16)));
}
static inline __m256 q5_0_block(__m256i wq, float dw, const block_q8a *x, __m256 acc) {
    __m256i d = dot32_u8i8(wq, _mm256_loadu_si256((const __m256i *)x->qs));
    d = _mm256_sub_epi32(d, _mm256_zextsi128_si256(_mm_cvtsi32_si128(16 * x->sum)));
    return _mm256_fmadd_ps(_mm256_set1_ps(dw * x->d), _mm256_cvtepi32_ps(d), acc);
}

/* Block b of a Q8_0 or Q5_0 row (q5, a constant at each call) into acc. */
static inline __attribute__((always_inline)) __m256 block32(int q5, const void *wr, int b, const block_q8a *x,
                                                             __m256 acc) {
    if (!q5) return q8_0_block((const block_q8_0 *)wr + b, &x[b], acc);
    const block_q5_0 *w = (const block_q5_0 *)wr + b;
    return q5_0_block(unpack_q5_0(w), h2f(w->d), &x[b], acc);
}

/* S rows of Q8_0 or Q5_0, r, r + part, ..., block pair by block pair (S
 * streams advancing together: kernels_simd.h's DECODE_PARTS). */
static inline __attribute__((always_inline)) void rows32(int q5, int S, int nb, const void *w, size_t w_stride, int r,
                                                         int part, const block_q8a *x, float *y) {
    const int bytes = q5 ? (int)sizeof(block_q5_0) : (int)sizeof(block_q8_0);
    const char *wr[DECODE_PARTS];
    __m256 a0[DECODE_PARTS], a1[DECODE_PARTS];
    for (int s = 0; s < S; s++) {
        wr[s] = (const char *)w + (size_t)(r + s * part) * w_stride;
        a0[s] = a1[s] = _mm256_setzero_ps();
    }
    int b = 0;
    for (; b + 2 <= nb; b += 2)
        for (int s = 0; s < S; s++) {
            if (b % 4 == 0) prefetch_span(wr[s] + (size_t)b * bytes + DECODE_AHEAD, 4 * bytes);
            a0[s] = block32(q5, wr[s], b, x, a0[s]);
            a1[s] = block32(q5, wr[s], b + 1, x, a1[s]);
        }
    for (int s = 0; s < S; s++) {
        if (b < nb) a0[s] = block32(q5, wr[s], b, x, a0[s]);
        y[r + s * part] = hsum8(_mm256_add_ps(a0[s], a1[s]));
    }
}

static void q8_0_decode(int nb, const void *w, size_t w_stride, int nr, const block_q8a *x, float *y) {
    int part = nr / DECODE_PARTS;
    for (int r = 0; r < part; r++) rows32(0, DECODE_PARTS, nb, w, w_stride, r, part, x, y);
    for (int r = DECODE_PARTS * part; r < nr; r++) rows32(0, 1, nb, w, w_stride, r, 0, x, y);
}
static void q5_0_decode(int nb, const void *w, size_t w_stride, int nr, const block_q8a *x, float *y) {
    int part = nr / DECODE_PARTS;
    for (int r = 0; r < part; r++) rows32(1, DECODE_PARTS, nb, w, w_stride, r, part, x, y);
    for (int r = DECODE_PARTS * part; r < nr; r++) rows32(1, 1, nb, w, w_stride, r, 0, x, y);
}

/* Many tokens of Q8_0, Q4_0 or Q5_0 (ty, a constant at each call): each
 * weight block unpacked once for TOK tokens. Q4_0's offset meets the
 * activation block sums after the row, as
 *   sum_b d_w d_x sum_j (q_j - 8) x_j  =  sum_b d_w (d_x sum_j q_j x_j - 8 s_x);
 * Q5_0's is taken off per block in int32 (q5_0_block). */
static inline __attribute__((always_inline)) void tokens_q8a(moe_dtype ty, int nb, const void *w, size_t w_stride,
                                                             int nr, const void *a, size_t a_stride, const int *idx,
                                                             int nt, float *y, size_t ldy) {
    const size_t bb = ty == DT_Q8_0 ? sizeof(block_q8_0) : ty == DT_Q4_0 ? sizeof(block_q4_0) : sizeof(block_q5_0);
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const block_q8a *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const block_q8a *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const char *wr = (const char *)w + (size_t)r * w_stride;
            __m256 acc[TOK];
            float corr[TOK] = {0};
            for (int t = 0; t < TOK; t++) acc[t] = _mm256_setzero_ps();
            for (int b = 0; b < nb; b++) {
                const void *wb = wr + (size_t)b * bb;
                if (ty == DT_Q8_0) {
                    const block_q8_0 *q = wb;
                    __m256i wq = _mm256_loadu_si256((const __m256i *)q->qs);
                    float dw = h2f(q->d);
                    for (int t = 0; t < m; t++) {
                        __m256i xq = _mm256_loadu_si256((const __m256i *)x[t][b].qs);
                        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t][b].d), _mm256_cvtepi32_ps(dot32_i8(wq, xq)),
                                                 acc[t]);
                    }
                } else if (ty == DT_Q4_0) {
                    const block_q4_0 *q = wb;
                    __m256i wq = unpack_q4_0(q->qs);
                    float dw = h2f(q->d);
                    for (int t = 0; t < m; t++) {
                        __m256i xq = _mm256_loadu_si256((const __m256i *)x[t][b].qs);
                        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x[t][b].d), _mm256_cvtepi32_ps(dot32_u8i8(wq, xq)),
                                                 acc[t]);
                        corr[t] += dw * (x[t][b].d * (float)x[t][b].sum);
                    }
                } else {
                    const block_q5_0 *q = wb;
                    __m256i wq = unpack_q5_0(q);
                    float dw = h2f(q->d);
                    for (int t = 0; t < m; t++) acc[t] = q5_0_block(wq, dw, &x[t][b], acc[t]);
                }
            }
            for (int t = 0; t < m; t++)
                y[(size_t)(t0 + t) * ldy + r] = ty == DT_Q4_0 ? hsum8(acc[t]) - 8.0f * corr[t] : hsum8(acc[t]);
        }
    }
}

static void tile_q8_0(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    if (nt == 1 && n / 32 <= DECODE_MAX_BLOCKS) { /* one token: the decode loop above */
        q8_0_decode(n / 32, w, w_stride, nr, (const block_q8a *)AROW(0), y);
        return;
    }
    tokens_q8a(DT_Q8_0, n / QK8_0, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

static void tile_q4_0(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    if (nt == 1 && n / 32 <= DECODE_MAX_BLOCKS) {
        q4_0_decode(n / 32, w, w_stride, nr, (const block_q8a *)AROW(0), y);
        return;
    }
    tokens_q8a(DT_Q4_0, n / QK4_0, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

static void tile_q5_0(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    int nb = n / QK5_0;
    if (nt == 1 && nb <= DECODE_MAX_BLOCKS) {
        q5_0_decode(nb, w, w_stride, nr, (const block_q8a *)AROW(0), y);
        return;
    }
    tokens_q8a(DT_Q5_0, nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* The 8-lane int32 sum of v. */
static inline int hsum8_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_hadd_epi32(s, s);
    s = _mm_hadd_epi32(s, s);
    return _mm_cvtsi128_si32(s);
}

/* Q4_K, Q5_K and Q6_K x Q8A (32-value activation blocks, quant.h). A
 * super-block is unpacked once into 8 sub-blocks of 32 unsigned codes and
 * their float scales, then used for every token of the pass: per sub-block
 * one exact int32 dot (maddubs, madd) and one multiply-add by the weight
 * scale times the activation block's scale; the mins meet the activation
 * block sums. */
typedef struct {
    __m256i q[8];   /* sub-block j's codes, unsigned bytes */
    float ds[8];    /* d * sc_j */
    float dm[8];    /* dmin * m_j (Q4_K, Q5_K) */
} kq_super;

/* Q4_K/Q5_K's first 16 bytes (d, dmin, 12 bytes of 6-bit scales and mins)
 * from one load: returns (d, dmin, -, -) as floats and leaves in *sm the 8
 * scales (bytes 0-7) and 8 mins (bytes 8-15), as q4_K_scale_min gives them.
 * Of the scale dwords w0, w1, w2: sub-blocks 0-3 are the low 6 bits of w0's
 * bytes (scales) and w1's (mins); sub-blocks 4-7 take their low 4 bits from
 * w2's nibbles and their top 2 from bits 6-7 of w0's / w1's bytes, which >> 2
 * puts at bits 4-5 (as kernels_avx512.c's q4_K_head). */
static inline __m128 q4_K_head(const void *blk, __m128i *sm) {
    __m128i v = _mm_loadu_si128((const __m128i *)blk); /* d|dmin, w0, w1, w2 */
    __m128i a = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(3, 2, 3, 1)), _mm_setr_epi32(0, 0, 0, 4));
    __m128i lo = _mm_and_si128(a, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m128i b = _mm_srli_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 1, 1)), 2); /* w0, w0, w1, w1 */
    *sm = _mm_or_si128(lo, _mm_and_si128(b, _mm_setr_epi32(0, 0x30303030, 0, 0x30303030)));
    return _mm_cvtph_ps(v);
}

/* 8 unsigned bytes as 8 floats. */
static inline __m256 bytes8_ps(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)); }

/* The 8 scales times d and the 8 mins times dmin of a Q4_K/Q5_K block, as
 * floats (q4_K_head). */
static inline void kq_scales_mins(const void *blk, float *ds, float *dm) {
    __m128i sm;
    __m128 f = q4_K_head(blk, &sm);
    _mm256_storeu_ps(ds, _mm256_mul_ps(bytes8_ps(sm), _mm256_broadcastss_ps(f)));
    _mm256_storeu_ps(dm, _mm256_mul_ps(bytes8_ps(_mm_srli_si128(sm, 8)), _mm256_broadcastss_ps(_mm_movehdup_ps(f))));
}

/* Q4_K: sub-block 2c in the low nibbles of bytes 32c.., 2c+1 in the high ones. */
static inline void unpack_q4_K(const block_q4_K *w, kq_super *u) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * c));
        u->q[2 * c] = _mm256_and_si256(q, m4);
        u->q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    }
    kq_scales_mins(w, u->ds, u->dm);
}

/* Q5_K: Q4_K's nibbles plus the 5th bit of sub-block j (qh bit j of each
 * byte, moved to bit 4): codes 0..31. */
static inline void unpack_q5_K(const block_q5_K *w, kq_super *u) {
    const __m256i m4 = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
    __m256i qh = _mm256_loadu_si256((const __m256i *)w->qh);
    for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * c));
        __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
        __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
        u->q[2 * c] = _mm256_or_si256(_mm256_and_si256(q, m4), h1);
        u->q[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h2);
    }
    kq_scales_mins(w, u->ds, u->dm);
}

/* One super-block (unpacked) against token row x's 8 activation blocks,
 * in two chains each for the vector and the mins: one chain of 8 dependent
 * multiply-adds per super-block held decode (one token, nothing else to
 * overlap with) to their latency. */
static inline __m256 kq_block(const kq_super *u, const block_q8a *x, __m256 acc, float *corr) {
    __m256 a[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    float c[2] = {0, 0};
    for (int j = 0; j < 8; j++) {
        __m256i p = dot32_u8i8(u->q[j], _mm256_loadu_si256((const __m256i *)x[j].qs));
        a[j & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(u->ds[j] * x[j].d), a[j & 1]);
        c[j & 1] += u->dm[j] * (x[j].d * (float)x[j].sum);
    }
    *corr += c[0] + c[1];
    return _mm256_add_ps(acc, _mm256_add_ps(a[0], a[1]));
}

/* Decode (one token), Q4_K and Q5_K: the token's side is laid out once per
 * tile call (kq_tok: its block scales and scale x sum, 8 floats each per
 * super-block), so a super-block's scaling is two vector multiplies and its
 * mins one multiply-add, where unpacking it for any token count took a
 * scalar multiply per sub-block and the mins in scalar. Rows of up to
 * KQ1_MAX_SUPER super-blocks (the layout lives on the stack); longer ones
 * take the tile loop. */
#define KQ1_MAX_SUPER 64
typedef struct {
    float d[8];  /* block j's activation scale */
    float ds[8]; /* that scale times the sum of the block's values */
} kq_tok;

static void kq_prepare_tok(const block_q8a *x, int ns, kq_tok *t) {
    for (int b = 0; b < ns; b++)
        for (int j = 0; j < 8; j++) {
            t[b].d[j] = x[8 * b + j].d;
            t[b].ds[j] = x[8 * b + j].d * (float)x[8 * b + j].sum;
        }
}

/* Q5_K's 5th bit of sub-block j (bit j of each qh byte) at bit 4; the
 * 16-bit shift moves no other byte's bit there. */
static inline __m256i q5_K_high(__m256i qh, int j) {
    __m256i v = j <= 4 ? _mm256_slli_epi16(qh, 4 - j) : _mm256_srli_epi16(qh, j - 4);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* Codes of sub-blocks 2c (lo) and 2c + 1 (hi) of a Q4_K (q5 = 0) or Q5_K block, unsigned. */
static inline __attribute__((always_inline)) void kq_codes_pair(int q5, const void *blk, int c, __m256i *lo,
                                                                __m256i *hi) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const uint8_t *qs = q5 ? ((const block_q5_K *)blk)->qs : ((const block_q4_K *)blk)->qs;
    __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
    *lo = _mm256_and_si256(q, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    if (q5) {
        __m256i qh = _mm256_loadu_si256((const __m256i *)((const block_q5_K *)blk)->qh);
        *lo = _mm256_or_si256(*lo, q5_K_high(qh, 2 * c));
        *hi = _mm256_or_si256(*hi, q5_K_high(qh, 2 * c + 1));
    }
}

/* S rows' super-blocks (rows wr[0..S-1]) against the token, super-block by
 * super-block (S streams advancing together: kernels_avx512.c's kq_decode
 * says why), each as a vector to be summed (out[s]). */
static inline __attribute__((always_inline)) void kq_rows(int q5, int S, int ns, const char *const *wr, size_t bytes,
                                                          const block_q8a *x, const kq_tok *t, __m256 *out) {
    __m256 acc[DECODE_PARTS], mins[DECODE_PARTS];
    for (int r = 0; r < S; r++) acc[r] = mins[r] = _mm256_setzero_ps();
    for (int b = 0; b < ns; b++)
        for (int r = 0; r < S; r++) {
            const char *blk = wr[r] + (size_t)b * bytes;
            const block_q8a *xb = x + 8 * b;
            prefetch_span(blk + DECODE_AHEAD, (int)bytes);
            __m128i sm;
            __m128 dd = q4_K_head(blk, &sm);
            float s[8]; /* sub-block j's d x scale x activation scale, broadcast from memory below */
            _mm256_storeu_ps(s, _mm256_mul_ps(_mm256_mul_ps(bytes8_ps(sm), _mm256_broadcastss_ps(dd)),
                                              _mm256_loadu_ps(t[b].d)));
            __m256 mn = _mm256_mul_ps(bytes8_ps(_mm_srli_si128(sm, 8)), _mm256_broadcastss_ps(_mm_movehdup_ps(dd)));
            mins[r] = _mm256_fmadd_ps(mn, _mm256_loadu_ps(t[b].ds), mins[r]);
            for (int c = 0; c < 4; c++) {
                __m256i lo, hi;
                kq_codes_pair(q5, blk, c, &lo, &hi);
                __m256i p0 = dot32_u8i8(lo, _mm256_loadu_si256((const __m256i *)xb[2 * c].qs));
                __m256i p1 = dot32_u8i8(hi, _mm256_loadu_si256((const __m256i *)xb[2 * c + 1].qs));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_broadcast_ss(&s[2 * c]), acc[r]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_broadcast_ss(&s[2 * c + 1]), acc[r]);
            }
        }
    for (int r = 0; r < S; r++) out[r] = _mm256_sub_ps(acc[r], mins[r]);
}

/* S rows of a tile, r, r + part, ..., into y */
static inline __attribute__((always_inline)) void kq_rows_y(int q5, int S, int ns, const void *w, size_t w_stride,
                                                            int r, int part, const block_q8a *x, const kq_tok *t,
                                                            float *y) {
    size_t bytes = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    const char *wr[DECODE_PARTS];
    __m256 v[DECODE_PARTS];
    for (int s = 0; s < S; s++) wr[s] = (const char *)w + (size_t)(r + s * part) * w_stride;
    kq_rows(q5, S, ns, wr, bytes, x, t, v);
    for (int s = 0; s < S; s++) y[r + s * part] = hsum8(v[s]);
}

/* A tile's rows for one token as DECODE_PARTS parts read at once, the rows
 * left over one by one. Not inlined into the tile: its layout array would
 * join the tile's frame. */
static __attribute__((noinline)) void kq_decode(int q5, int ns, const void *w, size_t w_stride, int nr,
                                                const block_q8a *x, float *y) {
    kq_tok t[KQ1_MAX_SUPER];
    kq_prepare_tok(x, ns, t);
    int part = nr / DECODE_PARTS;
    for (int r = 0; r < part; r++) {
        if (q5) kq_rows_y(1, DECODE_PARTS, ns, w, w_stride, r, part, x, t, y);
        else kq_rows_y(0, DECODE_PARTS, ns, w, w_stride, r, part, x, t, y);
    }
    for (int r = DECODE_PARTS * part; r < nr; r++) {
        if (q5) kq_rows_y(1, 1, ns, w, w_stride, r, 0, x, t, y);
        else kq_rows_y(0, 1, ns, w, w_stride, r, 0, x, t, y);
    }
}

/* Q4_K (q5 = 0) or Q5_K (q5 = 1), a constant at both calls: one token
 * takes kq_decode, more go TOK at a time, each super-block unpacked once
 * for them. */
static inline __attribute__((always_inline)) void tile_q45_K(int q5, int n, const void *w, size_t w_stride, int nr,
                                                             const void *a, size_t a_stride, const int *idx, int nt,
                                                             float *y, size_t ldy) {
    const size_t bytes = q5 ? sizeof(block_q5_K) : sizeof(block_q4_K);
    int nb = n / QK_K;
    if (nt == 1 && nb <= KQ1_MAX_SUPER) {
        kq_decode(q5, nb, w, w_stride, nr, (const block_q8a *)AROW(0), y);
        return;
    }
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const block_q8a *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const block_q8a *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const char *wr = (const char *)w + (size_t)r * w_stride;
            __m256 acc[TOK];
            float corr[TOK] = {0};
            for (int t = 0; t < TOK; t++) acc[t] = _mm256_setzero_ps();
            for (int b = 0; b < nb; b++) {
                const char *wb = wr + (size_t)b * bytes;
                /* decode: DECODE_AHEAD bytes on, a constant count per super-block (unrolled) */
                if (nt == 1) prefetch_span(wb + DECODE_AHEAD, (int)bytes);
                kq_super u;
                if (q5) unpack_q5_K((const block_q5_K *)wb, &u);
                else unpack_q4_K((const block_q4_K *)wb, &u);
                for (int t = 0; t < m; t++) acc[t] = kq_block(&u, x[t] + 8 * b, acc[t], &corr[t]);
            }
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = hsum8(acc[t]) - corr[t];
        }
    }
}
void avx2_tile_q4_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy) {
    tile_q45_K(0, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
void avx2_tile_q5_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy) {
    tile_q45_K(1, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* Q6_K x Q8A: the 6-bit codes q = w + 32 (0..63) are unsigned, so maddubs
 * takes them as they are, and the - 32 is a second maddubs of 32 with the
 * same activation bytes, subtracted in int16 (|each pair| <= 2 * 63 * 127).
 * A 32-value sub-block has two int8 scales, one per 16 values: the two
 * 128-bit halves of the madd. */
static inline void unpack_q6_K(const block_q6_K *w, __m256i q[8], __m256i s[8]) {
    const __m256i m4 = _mm256_set1_epi8(0xF), m2 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        __m256i qh = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
        __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h));
        __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h + 32));
        for (int k = 0; k < 4; k++) { /* values 128 h + 32 k .. + 32: sub-block 4 h + k, scales 8 h + 2 k, + 1 */
            __m256i ql = k & 1 ? ql1 : ql0;
            __m256i lo = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), m4);
            __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2), 4);
            int g = 8 * h + 2 * k;
            q[4 * h + k] = _mm256_or_si256(lo, hi);
            s[4 * h + k] = _mm256_set_m128i(_mm_set1_epi16(w->scales[g + 1]), _mm_set1_epi16(w->scales[g]));
        }
    }
}

/* Decode (one token), Q6_K: the token laid out once per tile call with its
 * block scales and, per 16-value group, -32 x its scale x the group's sum
 * (kq6_tok), so the codes' offset is two multiply-adds per super-block
 * instead of a second maddubs and a subtract per sub-block; each sub-block's
 * pair of int16 scales is one permute and one shuffle of the super-block's
 * scales, widened once. */
typedef struct {
    float d[8];   /* block j's activation scale */
    float off[16]; /* group g's -32 x its block's scale x the sum of its 16 values */
} kq6_tok;

static void kq6_prepare_tok(const block_q8a *x, int ns, kq6_tok *t) {
    for (int b = 0; b < ns; b++)
        for (int j = 0; j < 8; j++) {
            const block_q8a *xb = &x[8 * b + j];
            t[b].d[j] = xb->d;
            for (int h = 0; h < 2; h++) {
                int sum = 0;
                for (int i = 0; i < 16; i++) sum += xb->qs[16 * h + i];
                t[b].off[2 * j + h] = -32.0f * xb->d * (float)sum;
            }
        }
}

/* Codes (0..63) of sub-block 4h + k: low 4 bits from ql (the high nibbles
 * for k >= 2), bits 2k, 2k + 1 of qh moved to bits 4, 5 (no other byte's
 * bit lands there through the 16-bit shift). */
static inline __m256i q6_K_codes(__m256i ql, __m256i qh, int k) {
    __m256i lo = _mm256_and_si256(k < 2 ? ql : _mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0xF));
    __m256i hi = k < 3 ? _mm256_slli_epi16(qh, 4 - 2 * k) : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)));
}

/* S rows (wr[0..S-1]) super-block by super-block, as kq_rows, each as a
 * vector to be summed (out[s]). */
static inline __attribute__((always_inline)) void q6_K_rows(int S, int ns, const block_q6_K *const *wr,
                                                            const block_q8a *x, const kq6_tok *t, __m256 *out) {
    /* the words of dword j (scales 2j, 2j + 1) spread over the low and the high half */
    const __m256i spread = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                            2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    __m256 acc[DECODE_PARTS], off[DECODE_PARTS];
    for (int r = 0; r < S; r++) acc[r] = off[r] = _mm256_setzero_ps();
    for (int b = 0; b < ns; b++)
        for (int r = 0; r < S; r++) {
            const block_q6_K *w = &wr[r][b];
            const block_q8a *xb = x + 8 * b;
            prefetch_span((const char *)w + DECODE_AHEAD, (int)sizeof(block_q6_K));
            __m128i sc = _mm_loadu_si128((const __m128i *)w->scales);
            __m256 d = _mm256_set1_ps(h2f(w->d));
            float s[8]; /* d x block j's activation scale, broadcast from memory below */
            _mm256_storeu_ps(s, _mm256_mul_ps(d, _mm256_loadu_ps(t[b].d)));
            __m256 sc_lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc));
            __m256 sc_hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)));
            off[r] = _mm256_fmadd_ps(_mm256_fmadd_ps(sc_lo, _mm256_loadu_ps(t[b].off),
                                                     _mm256_mul_ps(sc_hi, _mm256_loadu_ps(t[b].off + 8))), d, off[r]);
            __m256i sc16 = _mm256_cvtepi8_epi16(sc);
            for (int h = 0; h < 2; h++) {
                __m256i qh = _mm256_loadu_si256((const __m256i *)(w->qh + 32 * h));
                __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h));
                __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w->ql + 64 * h + 32));
                for (int k = 0; k < 4; k++) {
                    int j = 4 * h + k;
                    __m256i q = q6_K_codes(k & 1 ? ql1 : ql0, qh, k);
                    __m256i sj = _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(j)), spread);
                    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)xb[j].qs)), sj);
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(&s[j]), acc[r]);
                }
            }
        }
    for (int r = 0; r < S; r++) out[r] = _mm256_add_ps(acc[r], off[r]);
}

/* S rows of a tile, r, r + part, ..., into y */
static inline __attribute__((always_inline)) void q6_K_rows_y(int S, int ns, const void *w, size_t w_stride, int r,
                                                              int part, const block_q8a *x, const kq6_tok *t, float *y) {
    const block_q6_K *wr[DECODE_PARTS];
    __m256 v[DECODE_PARTS];
    for (int s = 0; s < S; s++) wr[s] = (const block_q6_K *)((const char *)w + (size_t)(r + s * part) * w_stride);
    q6_K_rows(S, ns, wr, x, t, v);
    for (int s = 0; s < S; s++) y[r + s * part] = hsum8(v[s]);
}

/* As kq_decode: DECODE_PARTS parts at once, the rows left over one by one. */
static __attribute__((noinline)) void q6_K_decode(int ns, const void *w, size_t w_stride, int nr, const block_q8a *x,
                                                  float *y) {
    kq6_tok t[KQ1_MAX_SUPER];
    kq6_prepare_tok(x, ns, t);
    int part = nr / DECODE_PARTS;
    for (int r = 0; r < part; r++) q6_K_rows_y(DECODE_PARTS, ns, w, w_stride, r, part, x, t, y);
    for (int r = DECODE_PARTS * part; r < nr; r++) q6_K_rows_y(1, ns, w, w_stride, r, 0, x, t, y);
}

void avx2_tile_q6_K(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy) {
    int nb = n / QK_K;
    if (nt == 1 && nb <= KQ1_MAX_SUPER) {
        q6_K_decode(nb, w, w_stride, nr, (const block_q8a *)AROW(0), y);
        return;
    }
    const __m256i c32 = _mm256_set1_epi8(32);
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const block_q8a *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const block_q8a *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const block_q6_K *wb = (const block_q6_K *)((const char *)w + (size_t)r * w_stride);
            __m256 acc[TOK];
            for (int t = 0; t < TOK; t++) acc[t] = _mm256_setzero_ps();
            for (int b = 0; b < nb; b++) {
                if (nt == 1) prefetch_span((const char *)&wb[b] + DECODE_AHEAD, (int)sizeof(block_q6_K));
                __m256i q[8], s[8];
                unpack_q6_K(&wb[b], q, s);
                float d = h2f(wb[b].d);
                for (int t = 0; t < m; t++) {
                    const block_q8a *xb = x[t] + 8 * b;
                    __m256 ch[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()}; /* two chains, as kq_block */
                    for (int j = 0; j < 8; j++) {
                        __m256i xq = _mm256_loadu_si256((const __m256i *)xb[j].qs);
                        __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[j], xq), _mm256_maddubs_epi16(c32, xq));
                        ch[j & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, s[j])),
                                                    _mm256_set1_ps(d * xb[j].d), ch[j & 1]);
                    }
                    acc[t] = _mm256_add_ps(acc[t], _mm256_add_ps(ch[0], ch[1]));
                }
            }
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = hsum8(acc[t]);
        }
    }
}

/* IQ4_XS x Q8_K: each nibble looks its level up in kvalues_iq4nl (one
 * shuffle), the levels are signed, so the sign trick: |level| x sign(x,
 * level). Two sub-blocks per 32 code bytes: the low nibbles are values
 * 0..15 of each, the high nibbles 16..31; their scales sit in the two
 * 128-bit halves of the madd. */
void avx2_tile_iq4_xs(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    int nb = n / QK_K;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvalues_iq4nl));
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const block_q8_K *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const block_q8_K *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const block_iq4_xs *wb = (const block_iq4_xs *)((const char *)w + (size_t)r * w_stride);
            if (nt == 1) prefetch_span((const char *)wb + DECODE_AHEAD, (int)w_stride);
            float sum[TOK] = {0};
            for (int b = 0; b < nb; b++) {
                __m256i sumi[TOK];
                for (int t = 0; t < TOK; t++) sumi[t] = _mm256_setzero_si256();
                for (int j = 0; j < 8; j += 2) {
                    __m256i q = _mm256_loadu_si256((const __m256i *)(wb[b].qs + 16 * j));
                    __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(q, m4));
                    __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
                    __m256i alo = _mm256_abs_epi8(lo), ahi = _mm256_abs_epi8(hi);
                    __m256i s = _mm256_set_m128i(_mm_set1_epi16((short)(iq4_xs_scale(&wb[b], j + 1) - 32)),
                                                 _mm_set1_epi16((short)(iq4_xs_scale(&wb[b], j) - 32)));
                    for (int t = 0; t < m; t++) {
                        const int8_t *xq = x[t][b].qs + 32 * j; /* sub-block j: xq[0..32), j + 1: xq[32..64) */
                        __m256i xlo = _mm256_loadu2_m128i((const __m128i *)(xq + 32), (const __m128i *)xq);
                        __m256i xhi = _mm256_loadu2_m128i((const __m128i *)(xq + 48), (const __m128i *)(xq + 16));
                        __m256i p1 = _mm256_maddubs_epi16(alo, _mm256_sign_epi8(xlo, lo));
                        __m256i p2 = _mm256_maddubs_epi16(ahi, _mm256_sign_epi8(xhi, hi));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(p1, s), _mm256_madd_epi16(p2, s)));
                    }
                }
                float d = h2f(wb[b].d);
                for (int t = 0; t < m; t++) sum[t] += d * x[t][b].d * (float)hsum8_epi32(sumi[t]);
            }
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = sum[t];
        }
    }
}

/* MXFP4 x float: each block's 32 levels (a shuffle of the nibbles through
 * kvalues_mxfp4) times its power-of-two half scale are exact floats, used
 * for up to TOK float activation rows with FMA; no activation rounding
 * (quant_mxfp4.h says why). A block's four FMAs per token go into
 * 4 / T accumulators per token (four chains for T = 1 or 2, one per token
 * from 3), so one token (decode) is not held to one FMA latency per
 * 8 weights, and four tokens still fit the 16 ymm registers. */
static inline __attribute__((always_inline)) void mx_levels8(const block_mxfp4 *blk, __m128i lut, __m256 wv[4]) {
    const __m128i m4 = _mm_set1_epi8(0xF);
    __m128i q = _mm_loadu_si128((const __m128i *)blk->qs);
    __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(q, m4));
    __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(q, 4), m4));
    __m256 d = _mm256_set1_ps(mxfp4_half_scale(blk->e));
    wv[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)));
    wv[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))));
    wv[2] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)));
    wv[3] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))));
}

static inline __attribute__((always_inline)) void row_mxfp4(int T, int nb, const block_mxfp4 *wb, __m128i lut,
                                                              const float *const *x, float *o) {
    const int C = T == 1 ? 4 : T == 2 ? 2 : 1; /* chains per token */
    __m256 acc[4][TOK];                        /* [chain][token]: chain c takes the quarters k with k % C == c */
    for (int c = 0; c < C; c++)
        for (int t = 0; t < T; t++) acc[c][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256 wv[4];
        mx_levels8(wb + b, lut, wv);
        for (int t = 0; t < T; t++)
            for (int k = 0; k < 4; k++)
                acc[k % C][t] = _mm256_fmadd_ps(wv[k], _mm256_loadu_ps(x[t] + 32 * b + 8 * k), acc[k % C][t]);
    }
    for (int t = 0; t < T; t++) {
        __m256 s = acc[0][t];
        for (int c = 1; c < C; c++) s = _mm256_add_ps(s, acc[c][t]);
        o[t] = hsum8(s);
    }
}

void avx2_tile_mxfp4(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                     int nt, float *y, size_t ldy) {
    int nb = n / QK_MXFP4;
    const __m128i lut = _mm_loadu_si128((const __m128i *)kvalues_mxfp4);
    for (int t0 = 0; t0 < nt; t0 += TOK) {
        int m = nt - t0 < TOK ? nt - t0 : TOK;
        const float *x[TOK];
        for (int t = 0; t < m; t++) x[t] = (const float *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const block_mxfp4 *wb = (const block_mxfp4 *)((const char *)w + (size_t)r * w_stride);
            if (nt == 1) prefetch_span((const char *)wb + DECODE_AHEAD, (int)w_stride);
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

static float dot_f32(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ------------------------------------------------------------ interleaved rows */

/* Q8_0_R16 and Q4_0_R16 (quant.h): lanes are rows, two 8-row halves per
 * 64-byte step. Q8_0 uses the sign trick per step (|w| once, sign(x, w) per
 * token); Q4_0's nibbles q = w + 8 are unsigned already, and -8 * sum(x)
 * starts the int32 dot. Up to two tokens per pass over a group (sixteen ymm
 * registers). */
static inline __m256i madd_u8i8(__m256i u, __m256i s) { /* 4-byte groups -> int32 */
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

static inline __attribute__((always_inline)) void r16_pass_avx2(int q4, int nb, const void *gv, const block_q8a *const *x,
                                                                int T, float *y, size_t ldy) {
    const size_t col = q4 ? sizeof(block_q4_0x16) : sizeof(block_q8_0x16);
    __m256 acc[2][2];
    for (int t = 0; t < T; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *g = (const uint8_t *)gv + (size_t)b * col, *qs = g + 2 * R16;
        __m256i d[2][2];
        for (int t = 0; t < T; t++) d[t][0] = d[t][1] = _mm256_set1_epi32(q4 ? -8 * x[t][b].sum : 0);
        for (int k = 0; k < 8; k++) {
            int xo = r16_x_offset(q4, k); /* the token's matching values */
            for (int half = 0; half < 2; half++) {
                __m256i w;
                if (q4) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 64 * (k & 3) + 32 * half));
                    w = _mm256_and_si256(k < 4 ? v : _mm256_srli_epi16(v, 4), _mm256_set1_epi8(0xF));
                } else {
                    w = _mm256_loadu_si256((const __m256i *)(qs + 64 * k + 32 * half));
                }
                __m256i aw = q4 ? w : _mm256_sign_epi8(w, w); /* |w| */
                for (int t = 0; t < T; t++) {
                    int32_t v4;
                    memcpy(&v4, x[t][b].qs + xo, 4);
                    __m256i xv = _mm256_set1_epi32(v4);
                    d[t][half] = _mm256_add_epi32(d[t][half], madd_u8i8(aw, q4 ? xv : _mm256_sign_epi8(xv, w)));
                }
            }
        }
        __m256 wd0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g));
        __m256 wd1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(g + 16)));
        for (int t = 0; t < T; t++) {
            __m256 xd = _mm256_set1_ps(x[t][b].d);
            acc[t][0] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d[t][0]), xd), wd0, acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d[t][1]), xd), wd1, acc[t][1]);
        }
    }
    for (int t = 0; t < T; t++) {
        _mm256_storeu_ps(y + (size_t)t * ldy, acc[t][0]);
        _mm256_storeu_ps(y + (size_t)t * ldy + 8, acc[t][1]);
    }
}

/* Groups of 16 rows (whole groups, as matmul's row blocks are), tokens two
 * at a time, the last one alone. */
static inline __attribute__((always_inline)) void tile_r16(int q4, int n, const void *w, size_t w_stride, int nr,
                                                           const void *a, size_t a_stride, const int *idx, int nt,
                                                           float *y, size_t ldy) {
    for (int r0 = 0; r0 < nr; r0 += R16) {
        const void *g = (const char *)w + (size_t)r0 * w_stride;
        for (int t0 = 0; t0 < nt; t0 += 2) {
            const block_q8a *x[2] = {(const block_q8a *)AROW(t0), NULL};
            if (t0 + 1 < nt) {
                x[1] = (const block_q8a *)AROW(t0 + 1);
                r16_pass_avx2(q4, n / 32, g, x, 2, y + (size_t)t0 * ldy + r0, ldy);
            } else {
                r16_pass_avx2(q4, n / 32, g, x, 1, y + (size_t)t0 * ldy + r0, ldy);
            }
        }
    }
}
static void tile_q8_0_r16(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                          const int *idx, int nt, float *y, size_t ldy) {
    tile_r16(0, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_q4_0_r16(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                          const int *idx, int nt, float *y, size_t ldy) {
    tile_r16(1, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

static void axpy_f32(float *y, float s, const float *x, int n) {
    __m256 vs = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vs, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += s * x[i];
}

static void axpy_f16(float *y, float s, const uint16_t *x, int n) {
    __m256 vs = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(vs, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))),
                                                _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += s * _cvtsh_ss(x[i]);
}

/* quantize_row_q8a (quant.c) 32 values at a time: the same amax, scale and
 * round-to-nearest-even (cvtps under the default rounding mode is lrintf),
 * so the bytes are identical. */
static void quantize_q8a(const float *x, void *vy, int n) {
    block_q8a *y = vy;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < n / 32; b++, x += 32) {
        __m256 v[4], m = _mm256_setzero_ps(), z = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
            z = _mm256_add_ps(z, _mm256_sub_ps(v[k], v[k])); /* NaN iff a value is not finite */
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h), d = bf16_to_f32(f32_to_bf16(amax / 127.0f)), id = d > 0 ? 1.0f / d : 0.0f;
        /* a non-finite value (z is NaN) or an overflowing 1/d: a zero block, as quant.c */
        if (_mm256_movemask_ps(_mm256_cmp_ps(z, z, _CMP_UNORD_Q)) || id > FLT_MAX) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
        /* int32 -> int8 with packs (in range, so no saturation), then undo the lane interleave */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        y[b].d = d;
        y[b].sum = _mm_cvtsi128_si32(s4);
    }
}

/* 64 words at q into four sums */
static inline void read_chunk(const uint64_t *q, __m256i *a) {
    for (int k = 0; k < 16; k++) a[k & 3] = _mm256_add_epi64(a[k & 3], _mm256_load_si256((const __m256i *)q + k));
}
static uint64_t read_sum(const uint64_t *p, size_t n, int parts) {
    __m256i a[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
    size_t part = n / (size_t)parts / 64 * 64;
    for (size_t i = 0; i < part; i += 64)
        for (int s = 0; s < parts; s++) read_chunk(p + (size_t)s * part + i, a);
    for (size_t i = (size_t)parts * part; i < n; i += 64) read_chunk(p + i, a);
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a[0], a[1]), _mm256_add_epi64(a[2], a[3]));
    __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return (uint64_t)_mm_cvtsi128_si64(h) + (uint64_t)_mm_extract_epi64(h, 1);
}

static const kernel_set AVX2 = {
    .name = "avx2",
    .tile = {[DT_F32] = tile_f32, [DT_F16] = tile_f16, [DT_BF16] = tile_bf16,
             [DT_Q8_0] = tile_q8_0, [DT_Q4_0] = tile_q4_0, [DT_Q5_0] = tile_q5_0, [DT_Q4_K] = avx2_tile_q4_K,
             [DT_Q5_K] = avx2_tile_q5_K, [DT_Q6_K] = avx2_tile_q6_K, [DT_IQ4_XS] = avx2_tile_iq4_xs, [DT_MXFP4] = avx2_tile_mxfp4,
             [DT_Q8_0_R16] = tile_q8_0_r16, [DT_Q4_0_R16] = tile_q4_0_r16},
    .dot_f32 = dot_f32,
    .axpy_f32 = axpy_f32,
    .axpy_f16 = axpy_f16,
    .quantize_q8a = quantize_q8a,
    .read_sum = read_sum,
};

const kernel_set *kernels_avx2(void) { return &AVX2; }
#endif
