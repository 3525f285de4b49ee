/* kernels_avx512.c - the AVX-512 (F, BW, VL) + VNNI kernel set (x86-64).
 *
 * Compiled with the AVX-512 flags for this file only and chosen at run time
 * when the CPU and OS support them (kernels.c). Each weight type's tile
 * (kernels.h) is built from always_inline functions that take the type as
 * a constant argument, with one thin wrapper per type; the file runs, in
 * this order:
 *
 *   float weights   16-wide FMA: 4 rows x up to 4 tokens (float_4x4,
 *                   tile_float), one token row by row (tile_float_rows,
 *                   kernels_simd.h);
 *   Q8_0, Q4_0,     VNNI's dpbusd (unsigned x signed bytes, summed in groups
 *   Q5_0, IQ4_NL    of 4 into int32; Q5_0 and IQ4_NL unpacked to bytes):
 *                   register tiles of 4 rows x 4 tokens
 *                   (int8_rxt), one token in three parts of the rows
 *                   at once (decode_rows), 16 or more tokens as the lanes
 *                   (tokens16), all chosen in tile_int8;
 *   _R16 types      the 16 rows of a group as the lanes (r16_pass, tile_r16;
 *                   one token in three parts at once, r16_decode_s);
 *   MXFP4           its levels looked up with a float permute
 *                   (avx512_tile_mxfp4);
 *   Q4_K/Q5_K/Q6_K  64 weights per dpbusd, 16-value groups scaled with one
 *                   permute per pair of sub-blocks: decode (kq_decode),
 *                   tokens as the lanes 16 at a time, a last group part
 *                   empty from 6 tokens (kq_tokens16), the rest 8 tokens at
 *                   a time (row_kq), all chosen in tile_kq;
 *   f32 helpers     dot and axpy for attention, the activation quantizer
 *                   (quantize_q8a), the bandwidth probe's read (read_sum);
 *   the sets        this one's table, and the AMX set's: the same with
 *                   kernels_amx.c's MXFP4 tile.
 *
 * IQ4_XS uses the AVX2 tile (kernels_avx2.c), as do K-quant rows longer
 * than 8192 values. What prefill lays out of its tokens sits on the stack
 * in chunks (at most ~55 KB), so a tile runs on a thread with a small stack
 * (128 KB: test_kernels). Results must match the scalar set
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

#define TOK 4
#define SIMD_FLOAT_ROWS /* row_float below: kernels_simd.h's tile_float_rows uses it */
#include "kernels_simd.h"

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

/* ------------------------------------------------------------ float weights */

static inline __m512 load16_f32(const void *p) { return _mm512_loadu_ps(p); }
static inline __m512 load16_f16(const void *p) { return _mm512_cvtph_ps(_mm256_loadu_si256(p)); }
static inline __m512 load16_bf16(const void *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p)), 16));
}
/* 16 weights of a float row from p, widened; dt (F32, F16 or BF16) is a
 * constant at every call, so this is one of the three loads above. */
static inline __attribute__((always_inline)) __m512 load16(moe_dtype dt, const void *p) {
    return dt == DT_F16 ? load16_f16(p) : dt == DT_BF16 ? load16_bf16(p) : load16_f32(p);
}

/* One weight row against nt (<= TOK) float activation rows. */
static inline __attribute__((always_inline)) void row_float(moe_dtype dt, int n, const void *wr,
                                                            const float *const *x, int nt, float *out) {
    __m512 acc[TOK];
    for (int t = 0; t < TOK; t++) acc[t] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 w = load16(dt, (const char *)wr + (size_t)i * float_bytes(dt));
        for (int t = 0; t < nt; t++) acc[t] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x[t] + i), acc[t]);
    }
    for (int t = 0; t < nt; t++) {
        float s = _mm512_reduce_add_ps(acc[t]);
        for (int j = i; j < n; j++) s += widen(dt, wr, j) * x[t][j];
        out[t] = s;
    }
}

/* The 8 sums of the lanes of v[0..7], in order: halves added, then a
 * horizontal-add tree, so 8 dot products cost one reduction's shuffles
 * twice instead of eight times. */
static inline __m256 sum8(const __m512 *v) {
    __m256 h[8];
    for (int k = 0; k < 8; k++)
        h[k] = _mm256_add_ps(_mm512_castps512_ps256(v[k]),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v[k]), 1)));
    __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
    __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(h[4], h[5]), _mm256_hadd_ps(h[6], h[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

/* Four weight rows by T <= 4 tokens: 16 accumulators (those of missing
 * tokens stay zero), each weight vector loaded once for the T tokens and
 * each token vector once for the four rows; o[r * 4 + t]. Head dimensions
 * (attention's use) are multiples of 16; other lengths finish in scalar. */
static inline __attribute__((always_inline)) void float_4x4(moe_dtype dt, int T, int n, const void *w, size_t w_stride,
                                                            const float *const *x, float *o) {
    __m512 acc[16];
    for (int k = 0; k < 16; k++) acc[k] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 xv[4];
        for (int t = 0; t < T; t++) xv[t] = _mm512_loadu_ps(x[t] + i);
        for (int r = 0; r < 4; r++) {
            __m512 wv = load16(dt, (const char *)w + (size_t)r * w_stride + (size_t)i * float_bytes(dt));
            for (int t = 0; t < T; t++) acc[r * 4 + t] = _mm512_fmadd_ps(wv, xv[t], acc[r * 4 + t]);
        }
    }
    _mm256_storeu_ps(o, sum8(acc));
    _mm256_storeu_ps(o + 8, sum8(acc + 8));
    for (; i < n; i++)
        for (int r = 0; r < 4; r++)
            for (int t = 0; t < T; t++) o[r * 4 + t] += widen(dt, (const char *)w + (size_t)r * w_stride, i) * x[t][i];
}

/* Float tiles: tokens in groups of 4 (2 or 3 at the end: a GQA group of
 * two or three heads is attention's whole tile) by 4 rows as above, the
 * rest of the rows one at a time, a last single token as decode's. */
static inline __attribute__((always_inline)) void tile_float(moe_dtype dt, int n, const void *w, size_t w_stride,
                                                             int nr, const void *a, size_t a_stride, const int *idx,
                                                             int nt, float *y, size_t ldy) {
    int t0 = 0;
    for (; nt - t0 >= 2; t0 += 4) {
        int m = nt - t0 < 4 ? nt - t0 : 4;
        const float *x[4];
        for (int t = 0; t < m; t++) x[t] = (const float *)AROW(t0 + t);
        int r = 0;
        for (; r + 4 <= nr; r += 4) {
            float o[16];
            const char *wr = (const char *)w + (size_t)r * w_stride;
            switch (m) { /* a constant token count keeps the accumulators in registers */
            case 4: float_4x4(dt, 4, n, wr, w_stride, x, o); break;
            case 3: float_4x4(dt, 3, n, wr, w_stride, x, o); break;
            default: float_4x4(dt, 2, n, wr, w_stride, x, o); break;
            }
            for (int i = 0; i < 4; i++)
                for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r + i] = o[i * 4 + t];
        }
        for (; r < nr; r++) {
            float o[4];
            row_float(dt, n, (const char *)w + (size_t)r * w_stride, x, m, o);
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = o[t];
        }
    }
    if (t0 < nt) { /* the last token (decode's matrices): rows one after another (kernels_simd.h) */
        const int *rest = idx ? idx + t0 : NULL;
        const void *a_rest = idx ? a : (const char *)a + (size_t)t0 * a_stride;
        tile_float_rows(dt, n, w, w_stride, nr, a_rest, a_stride, rest, nt - t0, y + (size_t)t0 * ldy, ldy);
    }
}
static void tile_f32(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                     int nt, float *y, size_t ldy) {
    tile_float(DT_F32, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_f16(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                     int nt, float *y, size_t ldy) {
    tile_float(DT_F16, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_bf16(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_float(DT_BF16, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* ------------------------------------------------------------ int8 blocks */

/* Q8_0 and Q4_0 as register tiles: R weight rows x T activation rows at a
 * time, two 32-value blocks per 512-bit register (block b in the low half,
 * b+1 in the high half). Each weight block is loaded once for T tokens and
 * each activation block once for R rows, so the inner step is one dpbusd,
 * one convert and two float ops per 64 multiply-adds.
 *
 * dpbusd multiplies unsigned by signed bytes, so the weights are made
 * unsigned with an offset: Q8_0's w + 128 (xor 0x80), Q4_0's nibbles q
 * already are w + 8, Q5_0's 5-bit q are w + 16. The offset's contribution, offset * sum(x), depends on
 * the activation block only: computed once per token and block, negated, it
 * starts the accumulator, so every dot comes out exact in int32. */
#define RT 4 /* rows per register tile */
#define TT 4 /* tokens per register tile */

static inline __m512i load2_256(const void *lo, const void *hi) {
    __m512i v = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)lo));
    return hi ? _mm512_inserti64x4(v, _mm256_loadu_si256((const __m256i *)hi), 1) : v;
}
static inline __m512 halves(float lo, float hi) {
    return _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_set1_ps(lo), _mm512_set1_ps(hi));
}
static inline __m256i unpack_q4_0(const uint8_t *qs) {
    __m128i b = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0xF));
}

/* Blocks b and b+1 (b1: NULL past the end, zeros) of one weight row as
 * unsigned bytes, and their scales. */
static inline __m512i wq_q8_0(const block_q8_0 *b0, const block_q8_0 *b1) {
    return _mm512_xor_si512(load2_256(b0->qs, b1 ? b1->qs : NULL), _mm512_set1_epi8((char)0x80));
}
static inline __m512i wq_q4_0(const block_q4_0 *b0, const block_q4_0 *b1) {
    __m512i v = _mm512_zextsi256_si512(unpack_q4_0(b0->qs));
    return b1 ? _mm512_inserti64x4(v, unpack_q4_0(b1->qs), 1) : v;
}
/* Q5_0: the nibbles unpacked as Q4_0's (byte i is value i), then 16 added
 * where qh's bit i is set: qh read as a byte mask. */
static inline __m256i unpack_q5_0(const block_q5_0 *b) {
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    __m256i v = unpack_q4_0(b->qs);
    return _mm256_mask_add_epi8(v, (__mmask32)qh, v, _mm256_set1_epi8(16));
}
static inline __m512i wq_q5_0(const block_q5_0 *b0, const block_q5_0 *b1) {
    __m512i v = _mm512_zextsi256_si512(unpack_q5_0(b0));
    return b1 ? _mm512_inserti64x4(v, unpack_q5_0(b1), 1) : v;
}
/* IQ4_NL: each nibble looks its level up in kvalues_iq4nl + 128 (one
 * shuffle), so the weights are unsigned with Q8_0's offset 128. */
static inline __m256i unpack_iq4_nl(const block_iq4_nl *b) {
    const __m256i lut = _mm256_xor_si256(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kvalues_iq4nl)),
                                         _mm256_set1_epi8((char)0x80));
    return _mm256_shuffle_epi8(lut, unpack_q4_0(b->qs));
}
static inline __m512i wq_iq4_nl(const block_iq4_nl *b0, const block_iq4_nl *b1) {
    __m512i v = _mm512_zextsi256_si512(unpack_iq4_nl(b0));
    return b1 ? _mm512_inserti64x4(v, unpack_iq4_nl(b1), 1) : v;
}

/* Q8_0, Q4_0, Q5_0 or IQ4_NL (ty): the kernels below serve all four with ty
 * a constant argument, so each compiles to one type's code. */
enum { I8_Q8_0, I8_Q4_0, I8_Q5_0, I8_IQ4_NL };
static inline size_t int8_block_bytes(int ty) {
    return ty == I8_Q5_0     ? sizeof(block_q5_0)
           : ty == I8_IQ4_NL ? sizeof(block_iq4_nl)
           : ty == I8_Q4_0   ? sizeof(block_q4_0)
                             : sizeof(block_q8_0);
}
static inline const void *int8_block(int ty, const void *row, int b) { /* block b of a row */
    return (const char *)row + (size_t)b * int8_block_bytes(ty);
}
static inline uint16_t int8_d(const void *blk) { /* the f16 scale every one of these blocks starts with */
    uint16_t d;
    memcpy(&d, blk, 2);
    return d;
}
static inline float int8_scale(int ty, const void *blk) { (void)ty; return h2f(int8_d(blk)); }
static inline __m512i int8_wq(int ty, const void *b0, const void *b1) {
    return ty == I8_Q5_0     ? wq_q5_0(b0, b1)
           : ty == I8_IQ4_NL ? wq_iq4_nl(b0, b1)
           : ty == I8_Q4_0   ? wq_q4_0(b0, b1)
                             : wq_q8_0(b0, b1);
}
/* The 32 weights of one block as unsigned bytes (Q5_0, IQ4_NL). */
static inline __m256i int8_unpack(int ty, const void *blk) {
    return ty == I8_IQ4_NL ? unpack_iq4_nl(blk) : unpack_q5_0(blk);
}
static inline int int8_offset(int ty) { /* makes weights unsigned */
    return ty == I8_Q5_0 ? 16 : ty == I8_Q4_0 ? 8 : 128;
}

/* out[r*TT + t] = row r . token t over nb blocks, for r < R, t < T (constants
 * at every call site, so the loops unroll into registers). */
static inline __attribute__((always_inline)) void int8_rxt(int ty, int nb, const void *const *w, int R,
                                                           const block_q8a *const *x, int T, float *out) {
    const __m512i off = _mm512_set1_epi8((char)int8_offset(ty));
    __m512 acc[RT][TT];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 2) {
        int two = b + 1 < nb;
        __m512i xq[TT], neg[TT];
        __m512 xd[TT];
        for (int t = 0; t < T; t++) {
            xq[t] = load2_256(x[t][b].qs, two ? x[t][b + 1].qs : NULL);
            neg[t] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, xq[t]));
            xd[t] = halves(x[t][b].d, two ? x[t][b + 1].d : 0.0f);
        }
        for (int r = 0; r < R; r++) {
            const void *b0 = int8_block(ty, w[r], b), *b1 = two ? int8_block(ty, w[r], b + 1) : NULL;
            __m512i wq = int8_wq(ty, b0, b1);
            __m512 wd = halves(int8_scale(ty, b0), two ? int8_scale(ty, b1) : 0.0f);
            for (int t = 0; t < T; t++) {
                __m512i dot = _mm512_dpbusd_epi32(neg[t], wq, xq[t]);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(wd, xd[t]), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) out[r * TT + t] = _mm512_reduce_add_ps(acc[r][t]);
}

/* Decode (one token): a tile as DECODE_PARTS parts read at once, step by
 * step, each part a linear stream with a software prefetch DECODE_AHEAD
 * bytes ahead in it: a decode thread, which computes between its loads,
 * keeps more of memory's requests in flight that way than with one stream
 * (docs/BENCHMARKS.md, 2026-12-02 and 2026-12-07, fifth session).
 *
 * The token's side of each step of four blocks (its values, laid out as the
 * weights will be, and the weights' offset share) is prepared once per tile
 * call, so a row's step is its own loads and arithmetic only. */

/* The f16 scales of four consecutive blocks, converted (words 0, 17, 34, 51
 * of 34-byte blocks: 0 and 17 of p, 2 and 19 of the next 64 bytes). */
static inline __m128 scales4_q8_0(__m512i p, __m512i q) {
    const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 0, 32 + 19, 32 + 2, 17, 0);
    return _mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutex2var_epi16(p, idx, q)));
}
static inline __m128 scales4_q4_0(__m512i p) { /* 18-byte blocks: words 0, 9, 18, 27 */
    const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 0, 27, 18, 9, 0);
    return _mm_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi16(idx, p)));
}

/* Per block of the tail (nb % 4): the block's dot (wq: its unsigned
 * weights, offset added), the offset's share taken off. */
static inline float tail_dot(__m512i wq, int offset, float wd, const block_q8a *x) {
    __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, load2_256(x->qs, NULL));
    return (float)(_mm512_reduce_add_epi32(d) - offset * x->sum) * wd * x->d;
}
static inline float int8_tail(int ty, const void *w, const block_q8a *x) {
    return tail_dot(int8_wq(ty, w, NULL), int8_offset(ty), int8_scale(ty, w), x);
}

/* Q8_0 (and Q5_0): a step is two block pairs (low half block b, high half
 * b + 1); the four weight scales are converted and multiplied by the
 * token's at once, then spread to the block halves by a permute. */
typedef struct {
    __m512i q[2], neg[2]; /* the token's values of blocks b, b+1 and b+2, b+3; -offset x their sums */
    __m128 d;             /* its four block scales */
} step_q8_0;

static void prepare_q8_0(int nb, const block_q8a *x, int offset, step_q8_0 *st) {
    const __m512i off = _mm512_set1_epi8((char)offset);
    for (int b = 0; b + 4 <= nb; b += 4) {
        step_q8_0 *s = &st[b / 4];
        for (int h = 0; h < 2; h++) {
            s->q[h] = load2_256(x[b + 2 * h].qs, x[b + 2 * h + 1].qs);
            s->neg[h] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), off, s->q[h]));
        }
        s->d = _mm_set_ps(x[b + 3].d, x[b + 2].d, x[b + 1].d, x[b].d);
    }
}

static inline __m512 q8_0_step(const block_q8_0 *wb, const step_q8_0 *s, __m512 acc, __m128 *corr) {
    (void)corr; /* the offset share is exact in int32 here (neg) */
    const __m512i lo = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(2));
    __m512i p = _mm512_loadu_si512(wb), q = _mm512_loadu_si512((const char *)wb + 64);
    __m512 s4 = _mm512_castps128_ps512(_mm_mul_ps(scales4_q8_0(p, q), s->d));
    __m512i d0 = _mm512_dpbusd_epi32(s->neg[0], wq_q8_0(&wb[0], &wb[1]), s->q[0]);
    __m512i d1 = _mm512_dpbusd_epi32(s->neg[1], wq_q8_0(&wb[2], &wb[3]), s->q[1]);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(lo, s4), acc);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(hi, s4), acc);
}

/* Q5_0 and IQ4_NL as Q8_0, their weights unpacked (offsets 16 and 128);
 * the four f16 scales, 22 or 18 bytes apart, gathered by hand. */
static inline __m512 unpacked_step(int ty, const void *wb, const step_q8_0 *s, __m512 acc) {
    const __m512i lo = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(2));
    const void *w0 = int8_block(ty, wb, 0), *w1 = int8_block(ty, wb, 1), *w2 = int8_block(ty, wb, 2),
               *w3 = int8_block(ty, wb, 3);
    __m128 sc = _mm_cvtph_ps(_mm_setr_epi16((short)int8_d(w0), (short)int8_d(w1), (short)int8_d(w2), (short)int8_d(w3),
                                            0, 0, 0, 0));
    __m512 s4 = _mm512_castps128_ps512(_mm_mul_ps(sc, s->d));
    __m512i d0 = _mm512_dpbusd_epi32(s->neg[0], int8_wq(ty, w0, w1), s->q[0]);
    __m512i d1 = _mm512_dpbusd_epi32(s->neg[1], int8_wq(ty, w2, w3), s->q[1]);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_permutexvar_ps(lo, s4), acc);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_permutexvar_ps(hi, s4), acc);
}

/* Q4_0, with the nibbles left where they are: byte i of a block holds
 * values i (low nibble) and i + 16 (high), so four blocks' 16-byte halves
 * side by side give values 0..15 of each block (masked) and 16..31
 * (shifted), and each 128-bit lane stays one block. The four blocks' halves
 * are gathered from two overlapping loads by one word permute (a block's
 * 16 bytes start at an even offset, 18i + 2); the token's values are laid
 * out the same way (lo, hi). */
typedef struct {
    __m512i lo, hi; /* values 0..15 and 16..31 of blocks b..b+3 */
    __m128 d, k;    /* block scales; -8 x sum x scale: the offset's share per unit of weight scale */
} step_q4_0;

static inline __m512i load4_128(const void *p0, const void *p1, const void *p2, const void *p3) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(p0));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(p1), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(p2), 2);
    return _mm512_inserti32x4(v, _mm_loadu_si128(p3), 3);
}

static void prepare_q4_0(int nb, const block_q8a *x, step_q4_0 *st) {
    for (int b = 0; b + 4 <= nb; b += 4) {
        step_q4_0 *s = &st[b / 4];
        s->lo = load4_128(x[b].qs, x[b + 1].qs, x[b + 2].qs, x[b + 3].qs);
        s->hi = load4_128(x[b].qs + 16, x[b + 1].qs + 16, x[b + 2].qs + 16, x[b + 3].qs + 16);
        s->d = _mm_set_ps(x[b + 3].d, x[b + 2].d, x[b + 1].d, x[b].d);
        s->k = _mm_mul_ps(s->d, _mm_set_ps((float)(-8 * x[b + 3].sum), (float)(-8 * x[b + 2].sum),
                                           (float)(-8 * x[b + 1].sum), (float)(-8 * x[b].sum)));
    }
}

/* The offset's share goes to the float side (corr: the row's scales times
 * k, summed at the end), so the step loads two 64-byte vectors of the token
 * instead of three: the loads, not the arithmetic, bound this step. */
static inline __m512 q4_0_step(const block_q4_0 *wb, const step_q4_0 *s, __m512 acc, __m128 *corr) {
    const __m512i m4 = _mm512_set1_epi8(0xF);
    const __m512i lane = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    /* word k of block i's qs: word 9i + 1 + k of the four blocks (72 bytes:
     * the last 8 come from a second, 8-byte load) */
    const __m512i qidx = _mm512_set_epi16(35, 34, 33, 32, 31, 30, 29, 28, 26, 25, 24, 23, 22, 21, 20, 19, 17, 16, 15,
                                          14, 13, 12, 11, 10, 8, 7, 6, 5, 4, 3, 2, 1);
    __m512i p = _mm512_loadu_si512(wb);
    __m512i t = _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)((const char *)wb + 64)));
    __m512i q = _mm512_permutex2var_epi16(p, qidx, t);
    __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(q, m4), s->lo);
    d = _mm512_dpbusd_epi32(d, _mm512_and_si512(_mm512_srli_epi16(q, 4), m4), s->hi);
    __m128 sc = scales4_q4_0(p);
    *corr = _mm_fmadd_ps(sc, s->k, *corr);
    __m512 s4 = _mm512_permutexvar_ps(lane, _mm512_castps128_ps512(_mm_mul_ps(sc, s->d)));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), s4, acc);
}

/* One step (four blocks) of a row against the token's prepared step, by type. */
static inline __m512 int8_step(int ty, const void *wb, const void *st, __m512 acc, __m128 *corr) {
    return ty == I8_Q4_0   ? q4_0_step(wb, (const step_q4_0 *)st, acc, corr)
           : ty == I8_Q5_0 || ty == I8_IQ4_NL ? unpacked_step(ty, wb, (const step_q8_0 *)st, acc)
                           : q8_0_step(wb, (const step_q8_0 *)st, acc, corr);
}
/* step s of a row's prepared token (the types' step structs differ) */
static inline const void *int8_st(int ty, const void *st, int s) {
    return ty == I8_Q4_0 ? (const void *)((const step_q4_0 *)st + s) : (const void *)((const step_q8_0 *)st + s);
}
/* S rows, r, r + part, ..., r + (S - 1) part, step by step: S streams
 * advancing together (kq_decode's reason: more of memory's requests in
 * flight), each row two steps (two accumulators) at a time. */
static inline __attribute__((always_inline)) void decode_rows_s(int ty, int S, int nb, const void *w,
                                                                size_t w_stride, int r, int part, const void *st,
                                                                const block_q8a *x, float *y) {
    const int bytes = (int)int8_block_bytes(ty);
    const char *wr[DECODE_PARTS];
    __m512 a0[DECODE_PARTS], a1[DECODE_PARTS];
    __m128 c[DECODE_PARTS];
    for (int s = 0; s < S; s++) {
        wr[s] = (const char *)w + (size_t)(r + s * part) * w_stride;
        a0[s] = a1[s] = _mm512_setzero_ps();
        c[s] = _mm_setzero_ps();
    }
    int b = 0;
    for (; b + 8 <= nb; b += 8)
        for (int s = 0; s < S; s++) {
            prefetch_span((const char *)int8_block(ty, wr[s], b) + DECODE_AHEAD, 8 * bytes);
            a0[s] = int8_step(ty, int8_block(ty, wr[s], b), int8_st(ty, st, b / 4), a0[s], &c[s]);
            a1[s] = int8_step(ty, int8_block(ty, wr[s], b + 4), int8_st(ty, st, b / 4 + 1), a1[s], &c[s]);
        }
    for (int s = 0; s < S; s++) {
        int k = b;
        if (k + 4 <= nb) {
            a0[s] = int8_step(ty, int8_block(ty, wr[s], k), int8_st(ty, st, k / 4), a0[s], &c[s]);
            k += 4;
        }
        float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0[s], a1[s]), _mm512_zextps128_ps512(c[s])));
        for (; k < nb; k++) sum += int8_tail(ty, int8_block(ty, wr[s], k), &x[k]);
        y[r + s * part] = sum;
    }
}
/* A tile's rows for one token as DECODE_PARTS parts at once, the rows left
 * over one by one; the prefetch DECODE_AHEAD bytes on in each part
 * (kernels_simd.h; rows are contiguous, so it runs on into the next rows). */
static inline __attribute__((always_inline)) void decode_rows(int ty, int nb, const void *w, size_t w_stride, int nr,
                                                              const void *st, const block_q8a *x, float *y) {
    int part = nr / DECODE_PARTS;
    for (int r = 0; r < part; r++) decode_rows_s(ty, DECODE_PARTS, nb, w, w_stride, r, part, st, x, y);
    for (int r = DECODE_PARTS * part; r < nr; r++) decode_rows_s(ty, 1, nb, w, w_stride, r, 0, st, x, y);
}
/* Not inlined into the tile: their step arrays (80 and 48 KB) would join the
 * tile's frame and sit on the stack under the other paths' too. */
static __attribute__((noinline)) void q8_0_decode(int nb, const void *w, size_t w_stride, int nr, const block_q8a *x,
                                                  float *y) {
    step_q8_0 st[DECODE_MAX_BLOCKS / 4];
    prepare_q8_0(nb, x, 128, st);
    decode_rows(I8_Q8_0, nb, w, w_stride, nr, st, x, y);
}
static __attribute__((noinline)) void q5_0_decode(int nb, const void *w, size_t w_stride, int nr, const block_q8a *x,
                                                  float *y) {
    step_q8_0 st[DECODE_MAX_BLOCKS / 4];
    prepare_q8_0(nb, x, 16, st);
    decode_rows(I8_Q5_0, nb, w, w_stride, nr, st, x, y);
}
static __attribute__((noinline)) void iq4_nl_decode(int nb, const void *w, size_t w_stride, int nr, const block_q8a *x,
                                                    float *y) {
    step_q8_0 st[DECODE_MAX_BLOCKS / 4];
    prepare_q8_0(nb, x, 128, st);
    decode_rows(I8_IQ4_NL, nb, w, w_stride, nr, st, x, y);
}
static __attribute__((noinline)) void q4_0_decode(int nb, const void *w, size_t w_stride, int nr, const block_q8a *x,
                                                  float *y) {
    step_q4_0 st[DECODE_MAX_BLOCKS / 4];
    prepare_q4_0(nb, x, st);
    decode_rows(I8_Q4_0, nb, w, w_stride, nr, st, x, y);
}

/* Prefill with many tokens: lanes are tokens. The activations of 16 tokens
 * are laid out once per tile call as, per block, 8 steps of 64 bytes (step
 * k: values 4k..4k+3 of each token), with the tokens' scales and offset
 * shares beside them; then 4 bytes of a weight row are broadcast and one
 * dpbusd multiplies them with all 16 tokens: the mirror image of the _r16
 * kernel, on the plain layout. */
static inline __m512i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

#define XT 16             /* tokens per group */
#define XT_MAX_BLOCKS 256 /* rows up to this many blocks (8192 values); longer ones take the register tiles */
/* The 16 tokens are laid out XT_CHUNK blocks (2048 values) at a time, each
 * chunk against all the tile's rows, the rows' sums added up in y: 40 KB of
 * stack (640 bytes a block), where the whole row's layout took 160 KB, more
 * than a thread's stack may have (musl's default is 128 KB). */
#define XT_CHUNK 64
typedef struct {
    __m512i qs[8];
    __m512i neg; /* -offset * sum(x) per token: the weights' offset's share (Q8_0 +128, Q4_0 +8) */
    __m512 d;
} xblock16;

/* An 8x8 dword transpose in each 256-bit half: z[j] holds tokens j (low)
 * and j + 8 (high), 8 dwords each; out[k] gets dword k of every token. */
static inline void transpose16x8(const __m512i *z, __m512i *out) {
    __m512i t[8], u[8];
    for (int j = 0; j < 8; j += 2) {
        t[j] = _mm512_unpacklo_epi32(z[j], z[j + 1]);
        t[j + 1] = _mm512_unpackhi_epi32(z[j], z[j + 1]);
    }
    for (int j = 0; j < 8; j += 4) {
        u[j] = _mm512_unpacklo_epi64(t[j], t[j + 2]);
        u[j + 1] = _mm512_unpackhi_epi64(t[j], t[j + 2]);
        u[j + 2] = _mm512_unpacklo_epi64(t[j + 1], t[j + 3]);
        u[j + 3] = _mm512_unpackhi_epi64(t[j + 1], t[j + 3]);
    }
    const __m512i lo = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0), hi = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
    for (int j = 0; j < 4; j++) {
        out[j] = _mm512_permutex2var_epi64(u[j], lo, u[j + 4]);
        out[j + 4] = _mm512_permutex2var_epi64(u[j], hi, u[j + 4]);
    }
}

/* Blocks 0..nb-1 of the 16 token rows x[t] as 16-lane steps. */
static void interleave16(const block_q8a *const *x, int nb, int offset, xblock16 *xb) {
    for (int b = 0; b < nb; b++) {
        __m512i z[8];
        for (int j = 0; j < 8; j++) z[j] = load2_256(x[j][b].qs, x[j + 8][b].qs);
        transpose16x8(z, xb[b].qs);
        int32_t neg[XT];
        float d[XT];
        for (int t = 0; t < XT; t++) {
            neg[t] = -offset * x[t][b].sum;
            d[t] = x[t][b].d;
        }
        xb[b].neg = _mm512_loadu_si512(neg);
        xb[b].d = _mm512_loadu_ps(d);
    }
}

/* One weight row's block against the 16 interleaved tokens: their int32
 * dots, offset share included; two chains. */
static inline __m512i q8_0_dot16(const block_q8_0 *wb, const xblock16 *xb) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i d0 = xb->neg, d1 = _mm512_setzero_si512();
    for (int k = 0; k < 8; k += 2) {
        d0 = _mm512_dpbusd_epi32(d0, _mm512_xor_si512(bcast4(wb->qs + 4 * k), flip), xb->qs[k]);
        d1 = _mm512_dpbusd_epi32(d1, _mm512_xor_si512(bcast4(wb->qs + 4 * k + 4), flip), xb->qs[k + 1]);
    }
    return _mm512_add_epi32(d0, d1);
}

/* Q4_0: 4 bytes of a block hold values 4j..4j+3 (low nibbles, already
 * w + 8) and 16 + 4j.. (high), the tokens' steps j and 4 + j. The high
 * nibbles are used in place, as 16 x (w + 8) (they fit an unsigned byte),
 * and their sum divided by 16 once: one shift per block instead of four. */
static inline __m512i q4_0_dot16(const block_q4_0 *wb, const xblock16 *xb) {
    const __m512i lo = _mm512_set1_epi8(0x0F), hi = _mm512_set1_epi8((char)0xF0);
    __m512i d0 = xb->neg, d1 = _mm512_setzero_si512();
    for (int j = 0; j < 4; j++) {
        __m512i q = bcast4((const int8_t *)wb->qs + 4 * j);
        d0 = _mm512_dpbusd_epi32(d0, _mm512_and_si512(q, lo), xb->qs[j]);
        d1 = _mm512_dpbusd_epi32(d1, _mm512_and_si512(q, hi), xb->qs[4 + j]);
    }
    return _mm512_add_epi32(d0, _mm512_srai_epi32(d1, 4));
}

/* Q5_0, IQ4_NL: the block's 32 values unpacked once, then as Q8_0. */
static inline __m512i unpacked_dot16(int ty, const void *wb, const xblock16 *xb) {
    int8_t q[32];
    _mm256_storeu_si256((__m256i *)q, int8_unpack(ty, wb));
    __m512i d0 = xb->neg, d1 = _mm512_setzero_si512();
    for (int k = 0; k < 8; k += 2) {
        d0 = _mm512_dpbusd_epi32(d0, bcast4(q + 4 * k), xb->qs[k]);
        d1 = _mm512_dpbusd_epi32(d1, bcast4(q + 4 * k + 4), xb->qs[k + 1]);
    }
    return _mm512_add_epi32(d0, d1);
}
static inline __m512i int8_dot16(int ty, const void *blk, const xblock16 *xb) {
    return ty == I8_Q4_0 ? q4_0_dot16(blk, xb) : ty == I8_Q8_0 ? q8_0_dot16(blk, xb) : unpacked_dot16(ty, blk, xb);
}

/* acc[r] (lane t: token t) into y[t * ldy + r] for 4 rows and the first
 * m tokens: set by a row's first chunk, added to by the next ones. */
static inline void store_tokens16(const __m512 *acc, int m, int add, float *y, size_t ldy) {
    float v[4][XT];
    for (int r = 0; r < 4; r++) _mm512_storeu_ps(v[r], acc[r]);
    for (int t = 0; t < m; t++)
        for (int r = 0; r < 4; r++) y[(size_t)t * ldy + r] = add ? y[(size_t)t * ldy + r] + v[r][t] : v[r][t];
}

/* Tokens in groups of 16 for nr (a multiple of 4) rows, four rows at a
 * time, XT_CHUNK blocks of the rows at a time; returns the first token left
 * for the register tiles. */
static inline __attribute__((always_inline)) void tokens16_rows4(int ty, int nb, const void *const *wr,
                                                                 const xblock16 *xb, __m512 *acc) {
    for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < 4; r++) {
            const void *blk = int8_block(ty, wr[r], b);
            __m512 s = _mm512_mul_ps(xb[b].d, _mm512_set1_ps(int8_scale(ty, blk)));
            __m512i dot = int8_dot16(ty, blk, &xb[b]);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[r]);
        }
}
static inline __attribute__((always_inline)) int tokens16(int ty, int nb, const void *w, size_t w_stride, int nr,
                                                          const void *a, size_t a_stride, const int *idx, int nt,
                                                          float *y, size_t ldy) {
    if (nb > XT_MAX_BLOCKS || nr % 4) return 0;
    xblock16 xb[XT_CHUNK];
    int t0 = 0;
    for (; t0 + XT <= nt; t0 += XT)
        for (int c0 = 0; c0 < nb; c0 += XT_CHUNK) {
            int cn = nb - c0 < XT_CHUNK ? nb - c0 : XT_CHUNK;
            const block_q8a *x[XT];
            for (int t = 0; t < XT; t++) x[t] = (const block_q8a *)AROW(t0 + t) + c0;
            interleave16(x, cn, int8_offset(ty), xb);
            for (int r0 = 0; r0 < nr; r0 += 4) {
                const void *wr[4];
                for (int r = 0; r < 4; r++) wr[r] = int8_block(ty, (const char *)w + (size_t)(r0 + r) * w_stride, c0);
                __m512 acc[4];
                tokens16_rows4(ty, cn, wr, xb, acc);
                store_tokens16(acc, XT, c0 > 0, y + (size_t)t0 * ldy + r0, ldy);
            }
        }
    return t0;
}
/* Not inlined into the tiles, so their 40 KB sits on the stack only while they run. */
static __attribute__((noinline)) int q8_0_tokens16(int nb, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                         const int *idx, int nt, float *y, size_t ldy) {
    return tokens16(I8_Q8_0, nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static __attribute__((noinline)) int q4_0_tokens16(int nb, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                         const int *idx, int nt, float *y, size_t ldy) {
    return tokens16(I8_Q4_0, nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static __attribute__((noinline)) int q5_0_tokens16(int nb, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                         const int *idx, int nt, float *y, size_t ldy) {
    return tokens16(I8_Q5_0, nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static __attribute__((noinline)) int iq4_nl_tokens16(int nb, const void *w, size_t w_stride, int nr, const void *a,
                                                     size_t a_stride, const int *idx, int nt, float *y, size_t ldy) {
    return tokens16(I8_IQ4_NL, nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* The tile loop shared by the four types: one token takes the decode path,
 * many the token-lane one, the rest tokens in groups of TT, rows in groups
 * of RT, remainders with smaller constant tiles. */

static inline __attribute__((always_inline)) void tile_int8(int ty, int n, const void *w, size_t w_stride, int nr,
                                                            const void *a, size_t a_stride, const int *idx, int nt,
                                                            float *y, size_t ldy) {
    int nb = n / 32;
    if (nt == 1 && nb <= DECODE_MAX_BLOCKS) {
        const block_q8a *x = (const block_q8a *)AROW(0);
        if (ty == I8_Q4_0) q4_0_decode(nb, w, w_stride, nr, x, y);
        else if (ty == I8_Q5_0) q5_0_decode(nb, w, w_stride, nr, x, y);
        else if (ty == I8_IQ4_NL) iq4_nl_decode(nb, w, w_stride, nr, x, y);
        else q8_0_decode(nb, w, w_stride, nr, x, y);
        return;
    }
    int first = 0;
    if (nt >= XT) {
        first = ty == I8_Q4_0   ? q4_0_tokens16(nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy)
                : ty == I8_Q5_0 ? q5_0_tokens16(nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy)
                : ty == I8_IQ4_NL ? iq4_nl_tokens16(nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy)
                                : q8_0_tokens16(nb, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
    }
    for (int t0 = first; t0 < nt; t0 += TT) {
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
                case 4: int8_rxt(ty, nb, wr, RT, x, 4, o); break;
                case 3: int8_rxt(ty, nb, wr, RT, x, 3, o); break;
                case 2: int8_rxt(ty, nb, wr, RT, x, 2, o); break;
                default: int8_rxt(ty, nb, wr, RT, x, 1, o); break;
                }
            } else {
                for (int r = 0; r < k; r++) {
                    float o1[RT * TT];
                    int8_rxt(ty, nb, wr + r, 1, x, TT, o1); /* unused tokens repeat token 0 */
                    for (int t = 0; t < m; t++) o[r * TT + t] = o1[t];
                }
            }
            for (int r = 0; r < k; r++)
                for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r0 + r] = o[r * TT + t];
        }
    }
}
static void tile_q8_0(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_int8(I8_Q8_0, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_q5_0(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_int8(I8_Q5_0, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_iq4_nl(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                        int nt, float *y, size_t ldy) {
    tile_int8(I8_IQ4_NL, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static void tile_q4_0(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                      int nt, float *y, size_t ldy) {
    tile_int8(I8_Q4_0, n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* Q8_0_R16 and Q4_0_R16 (quant.h): lanes are the 16 rows of a group. Per
 * block column and token, eight dpbusd of 4 values of every row, made
 * unsigned (Q8_0: w + 128, a 64-byte step; Q4_0: the nibbles q = w + 8 of
 * half a step), with the token's 4 values broadcast, starting from the
 * offset's share -offset * sum(x), so the dot is exact in int32; then one
 * convert, a multiply by the token's scale and an FMA with the 16 row
 * scales. Weights are loaded once for TT tokens; few tokens split each dot
 * into several chains (4 for decode's one) so they are not latency bound. */
#define R16_TT 8
#ifndef R16_PREFETCH
#define R16_PREFETCH 1
#endif


/* Step k (values 4k..4k+3 of every row) of a block column's qs, unsigned. */
static inline __m512i r16_step(int q4, const uint8_t *qs, int k) {
    if (!q4) return _mm512_xor_si512(_mm512_loadu_si512(qs + 64 * k), _mm512_set1_epi8((char)0x80));
    __m512i v = _mm512_loadu_si512(qs + 64 * (k & 3)); /* low nibbles: values 4k'.., high: 16 + 4k'.. */
    return _mm512_and_si512(k < 4 ? v : _mm512_srli_epi16(v, 4), _mm512_set1_epi8(0xF));
}

static inline __attribute__((always_inline)) void r16_pass(int q4, int nb, const void *gv, const block_q8a *const *x,
                                                           int T, float *y, size_t ldy, const char *next) {
    const size_t col = q4 ? sizeof(block_q4_0x16) : sizeof(block_q8_0x16);
    const int32_t off = q4 ? 8 : 128;
    __m512 acc[R16_TT];
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *g = (const uint8_t *)gv + (size_t)b * col, *qs = g + 2 * R16;
        if (next) /* prefill: fetch the next row group while this one computes */
            for (size_t l = 0; l < col; l += 64) _mm_prefetch(next + (size_t)b * col + l, _MM_HINT_T1);
        /* chains per token: 4 for one token, 2 for two or three, else 1 */
        const int ch = T == 1 ? 4 : T < 4 ? 2 : 1;
        __m512i d[4][R16_TT];
        for (int t = 0; t < T; t++) {
            d[0][t] = _mm512_set1_epi32(-off * x[t][b].sum);
            for (int c = 1; c < ch; c++) d[c][t] = _mm512_setzero_si512();
        }
        for (int k = 0; k < 8; k++) {
            __m512i wq = r16_step(q4, qs, k);
            int xo = r16_x_offset(q4, k); /* the token's matching values */
            for (int t = 0; t < T; t++)
                d[k % ch][t] = _mm512_dpbusd_epi32(d[k % ch][t], wq, bcast4(x[t][b].qs + xo));
        }
        __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        for (int t = 0; t < T; t++) {
            __m512i sum = d[0][t];
            for (int c = 1; c < ch; c++) sum = _mm512_add_epi32(sum, d[c][t]);
            __m512 dot = _mm512_cvtepi32_ps(sum);
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dot, _mm512_set1_ps(x[t][b].d)), wd, acc[t]);
        }
    }
    for (int t = 0; t < T; t++) _mm512_storeu_ps(y + (size_t)t * ldy, acc[t]);
}

/* Decode (one token) of S row groups, r, r + part, ... rows, block column
 * by block column: S streams advancing together (decode_rows' reason),
 * each with the prefetch DECODE_AHEAD bytes on, each group's dot in 4
 * chains as r16_pass keeps it. Q8_0_R16 42.5 -> 50.5 t/s, Q4_0_R16 53.9 ->
 * 67.6 on the Qwen3-30B-A3B shape (docs/BENCHMARKS.md, 2026-12-07, fifth
 * session). */
static inline __attribute__((always_inline)) void r16_decode_s(int q4, int S, int nb, const void *w, size_t w_stride,
                                                               int r, int part, const block_q8a *x, float *y) {
    const size_t col = q4 ? sizeof(block_q4_0x16) : sizeof(block_q8_0x16);
    const int32_t off = q4 ? 8 : 128;
    const uint8_t *gs[DECODE_PARTS];
    __m512 acc[DECODE_PARTS];
    for (int s = 0; s < S; s++) {
        gs[s] = (const uint8_t *)w + (size_t)(r + s * part) * w_stride;
        acc[s] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nb; b++)
        for (int s = 0; s < S; s++) {
            const uint8_t *g = gs[s] + (size_t)b * col, *qs = g + 2 * R16;
            prefetch_span((const char *)g + DECODE_AHEAD, (int)col);
            __m512i d[4] = {_mm512_set1_epi32(-off * x[b].sum), _mm512_setzero_si512(), _mm512_setzero_si512(),
                            _mm512_setzero_si512()};
            for (int k = 0; k < 8; k++)
                d[k % 4] = _mm512_dpbusd_epi32(d[k % 4], r16_step(q4, qs, k), bcast4(x[b].qs + r16_x_offset(q4, k)));
            __m512i sum = _mm512_add_epi32(_mm512_add_epi32(d[0], d[1]), _mm512_add_epi32(d[2], d[3]));
            __m512 wd = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
            acc[s] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(x[b].d)), wd, acc[s]);
        }
    for (int s = 0; s < S; s++) _mm512_storeu_ps(y + r + s * part, acc[s]);
}

/* Groups of 16 rows (nr: whole groups, as matmul's row blocks are), tokens
 * in passes of up to R16_TT, each pass with a constant token count. */
static inline __attribute__((always_inline)) void tile_r16(int q4, int n, const void *w, size_t w_stride, int nr,
                                                           const void *a, size_t a_stride, const int *idx, int nt,
                                                           float *y, size_t ldy) {
    int nb = n / 32;
    if (nt == 1) { /* decode: DECODE_PARTS parts of the groups at once, the groups left over alone */
        const block_q8a *x = (const block_q8a *)AROW(0);
        int part = nr / R16 / DECODE_PARTS * R16;
        for (int r = 0; r < part; r += R16) r16_decode_s(q4, DECODE_PARTS, nb, w, w_stride, r, part, x, y);
        for (int r = DECODE_PARTS * part; r < nr; r += R16) r16_decode_s(q4, 1, nb, w, w_stride, r, 0, x, y);
        return;
    }
    for (int r0 = 0; r0 < nr; r0 += R16) {
        const void *g = (const char *)w + (size_t)r0 * w_stride;
        for (int t0 = 0; t0 < nt; t0 += R16_TT) {
            int m = nt - t0 < R16_TT ? nt - t0 : R16_TT;
            const block_q8a *x[R16_TT];
            for (int t = 0; t < m; t++) x[t] = (const block_q8a *)AROW(t0 + t);
            float *yt = y + (size_t)t0 * ldy + r0;
            const char *nx = t0 == 0 && nt > R16_TT ? (const char *)g + R16 * w_stride : NULL;
            switch (m) {
            case 8: r16_pass(q4, nb, g, x, 8, yt, ldy, nx); break;
            case 7: r16_pass(q4, nb, g, x, 7, yt, ldy, nx); break;
            case 6: r16_pass(q4, nb, g, x, 6, yt, ldy, nx); break;
            case 5: r16_pass(q4, nb, g, x, 5, yt, ldy, nx); break;
            case 4: r16_pass(q4, nb, g, x, 4, yt, ldy, nx); break;
            case 3: r16_pass(q4, nb, g, x, 3, yt, ldy, nx); break;
            case 2: r16_pass(q4, nb, g, x, 2, yt, ldy, nx); break;
            default: r16_pass(q4, nb, g, x, 1, yt, ldy, nx); break;
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


/* ------------------------------------------------------------ MXFP4 x float */

/* MXFP4 (quant_mxfp4.h) against float activations, nothing rounded before
 * the FMAs (quant_mxfp4.h says why). Per block, the 16 levels of the table
 * are scaled by the block's power-of-two half scale (exact floats), and
 * one permute per 16 weights looks them up by nibble: the zero-extended
 * code bytes index it directly (permutexvar reads the low 4 bits), shifted
 * right by 4 for the high nibbles (elements 16..31). Tokens go MX_TOK at a
 * time, so a decoded block is reused by up to MX_TOK activation rows; two
 * blocks per step into four accumulators per token, so one token (decode)
 * is not held to one FMA latency per 16 weights. Prefill's groups of 8
 * or more tokens take rows_mxfp4_wide below. */
#define MX_TOK 4

static inline __attribute__((always_inline)) void mx_levels(const block_mxfp4 *blk, __m512 lut, __m512 *lo,
                                                              __m512 *hi) {
    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)blk->qs));
    __m512 lv = _mm512_mul_ps(lut, _mm512_set1_ps(mxfp4_half_scale(blk->e)));
    *lo = _mm512_permutexvar_ps(q, lv);
    *hi = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), lv);
}

static inline __attribute__((always_inline)) void row_mxfp4(int T, int nb, const block_mxfp4 *wb, __m512 lut,
                                                              const float *const *x, float *o) {
    __m512 acc[4][MX_TOK]; /* [chain][token]: elements 0-15 / 16-31 of even blocks, then of odd ones */
    for (int c = 0; c < 4; c++)
        for (int t = 0; t < T; t++) acc[c][t] = _mm512_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m512 w[4];
        mx_levels(wb + b, lut, &w[0], &w[1]);
        mx_levels(wb + b + 1, lut, &w[2], &w[3]);
        for (int t = 0; t < T; t++)
            for (int c = 0; c < 4; c++) acc[c][t] = _mm512_fmadd_ps(w[c], _mm512_loadu_ps(x[t] + 32 * b + 16 * c), acc[c][t]);
    }
    if (b < nb) {
        __m512 w[2];
        mx_levels(wb + b, lut, &w[0], &w[1]);
        for (int t = 0; t < T; t++)
            for (int c = 0; c < 2; c++) acc[c][t] = _mm512_fmadd_ps(w[c], _mm512_loadu_ps(x[t] + 32 * b + 16 * c), acc[c][t]);
    }
    for (int t = 0; t < T; t++)
        o[t] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0][t], acc[1][t]), _mm512_add_ps(acc[2][t], acc[3][t])));
}

/* Prefill: two rows against T tokens (MX_TOK_WIDE, or MX_TOK_MID for a
 * last group of 8-11), one block per step into one accumulator per (row,
 * token). A decoded block feeds 2 * T FMAs per 16 weights instead of
 * MX_TOK, so its permutes (which share a port with the FMAs) weigh less,
 * and each activation load feeds both rows. 24 accumulators, 4 weight
 * vectors, 2 activations and the table fill the 32 registers. */
#define MX_TOK_WIDE 12
#define MX_TOK_MID 8

static inline __attribute__((always_inline)) void rows_mxfp4_wide(int T, int R, int nb, const block_mxfp4 *w0,
                                                                    const block_mxfp4 *w1, __m512 lut,
                                                                    const float *const *x, float *o) {
    __m512 acc[2][MX_TOK_WIDE]; /* [row][token] */
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) acc[r][t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m512 w[2][2];
        mx_levels(w0 + b, lut, &w[0][0], &w[0][1]);
        if (R == 2) mx_levels(w1 + b, lut, &w[1][0], &w[1][1]);
        for (int t = 0; t < T; t++) {
            __m512 xl = _mm512_loadu_ps(x[t] + 32 * b), xh = _mm512_loadu_ps(x[t] + 32 * b + 16);
            for (int r = 0; r < R; r++)
                acc[r][t] = _mm512_fmadd_ps(w[r][1], xh, _mm512_fmadd_ps(w[r][0], xl, acc[r][t]));
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) o[r * MX_TOK_WIDE + t] = _mm512_reduce_add_ps(acc[r][t]);
}

/* T tokens (x, y's rows) against all nr rows, two at a time. */
static inline __attribute__((always_inline)) void tokens_mxfp4_wide(int T, int nb, const void *w, size_t w_stride,
                                                                      int nr, const float *const *x, __m512 lut,
                                                                      float *y, size_t ldy) {
    for (int r = 0; r < nr; r += 2) {
        const block_mxfp4 *w0 = (const block_mxfp4 *)((const char *)w + (size_t)r * w_stride);
        int R = nr - r < 2 ? 1 : 2;
        const block_mxfp4 *w1 = R == 2 ? (const block_mxfp4 *)((const char *)w0 + w_stride) : w0;
        float o[2 * MX_TOK_WIDE];
        if (R == 2) rows_mxfp4_wide(T, 2, nb, w0, w1, lut, x, o);
        else rows_mxfp4_wide(T, 1, nb, w0, w1, lut, x, o);
        for (int i = 0; i < R; i++)
            for (int t = 0; t < T; t++) y[(size_t)t * ldy + r + i] = o[i * MX_TOK_WIDE + t];
    }
}

void avx512_tile_mxfp4(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                       int nt, float *y, size_t ldy) {
    int nb = n / QK_MXFP4;
    const __m512 lut = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)kvalues_mxfp4)));
    int t0 = 0;
    while (nt - t0 >= MX_TOK_MID) {
        int T = nt - t0 >= MX_TOK_WIDE ? MX_TOK_WIDE : MX_TOK_MID;
        const float *x[MX_TOK_WIDE];
        for (int t = 0; t < T; t++) x[t] = (const float *)AROW(t0 + t);
        if (T == MX_TOK_WIDE) tokens_mxfp4_wide(MX_TOK_WIDE, nb, w, w_stride, nr, x, lut, y + (size_t)t0 * ldy, ldy);
        else tokens_mxfp4_wide(MX_TOK_MID, nb, w, w_stride, nr, x, lut, y + (size_t)t0 * ldy, ldy);
        t0 += T;
    }
    for (; t0 < nt; t0 += MX_TOK) {
        int m = nt - t0 < MX_TOK ? nt - t0 : MX_TOK;
        const float *x[MX_TOK];
        for (int t = 0; t < m; t++) x[t] = (const float *)AROW(t0 + t);
        for (int r = 0; r < nr; r++) {
            const block_mxfp4 *wb = (const block_mxfp4 *)((const char *)w + (size_t)r * w_stride);
            if (nt == 1) prefetch_span((const char *)wb + DECODE_AHEAD, (int)w_stride);
            float o[MX_TOK] = {0}; /* (gcc cannot see that the switch fills o[0..m)) */
            switch (m) { /* a constant token count keeps the accumulators in registers */
            case 4: row_mxfp4(4, nb, wb, lut, x, o); break;
            case 3: row_mxfp4(3, nb, wb, lut, x, o); break;
            case 2: row_mxfp4(2, nb, wb, lut, x, o); break;
            default: row_mxfp4(1, nb, wb, lut, x, o); break;
            }
            for (int t = 0; t < m; t++) y[(size_t)(t0 + t) * ldy + r] = o[t];
        }
    }
}

/* ------------------------------------------------------------ K-quants */

/* Q4_K, Q5_K and Q6_K x Q8A (32-value activation blocks, quant.h), 64
 * weights per dpbusd. A super-block's 256 codes are four pairs of 32-value
 * sub-blocks, each pair one 512-bit register in the order its bytes come
 * from memory ((0,2), (1,3), (4,6), (5,7) for Q4_K/Q5_K's nibbles, (0,1),
 * (2,3), ... for Q6_K); a token's activations are laid out once per tile
 * call in the same order. dpbusd leaves, per lane, a sum of 4 products, so
 * lane l holds values of 16-value group g(l) = the pair's 32-blocks j, j'
 * as 2j, 2j+1, 2j', 2j'+1 for lanes 0-3, 4-7, 8-11, 12-15. Per super-block
 * and token the 16 group scales (weight scale x activation block scale)
 * are one multiply, spread to the lanes by one permute per pair; the mins
 * (Q4_K/Q5_K) and Q6_K's -32 offset meet the activation group sums in one
 * more multiply-add per super-block. Each sub-block's dot stays exact in
 * int32; only the scaling is float, as in the scalar reference. */
enum {
    KQ_TOK = 8,        /* tokens per pass over a weight row */
    KQ_CHUNK = 8,      /* super-blocks of those tokens laid out at a time: 24 KB of stack */
    KQ_AHEAD_ROWS = 8, /* the token-lane path prefetches this many rows on (experts' weights come from memory) */
    KQ_LANES_MIN = 6,  /* tokens from which a group of 16 lanes, part empty, beats the per-token path */
    KQ_MAX_SUPER = 32  /* rows up to 8192 values (decode lays its token out whole: 18 KB) */
};

typedef struct {
    int8_t q[256];   /* the 8 activation blocks' values, pairs in the weight's order */
    float d[16];     /* group g's activation scale (its 32-block's) */
    float s[16];     /* that scale times the sum of the group's 16 values */
} kq_x;

typedef struct {
    __m512i q[4];    /* the super-block's codes (unsigned), pair by pair */
    __m512 sc;       /* group g's weight scale */
    __m512 mn;       /* group g's min (Q4_K/Q5_K: dmin * m; Q6_K: 32 * scale) */
} kq_w;

/* Q4_K/Q5_K's first 16 bytes (d, dmin, 12 bytes of 6-bit scales and mins)
 * from one load: returns (d, dmin, -, -) as floats and leaves in *sm the 8
 * scales (bytes 0-7) and 8 mins (bytes 8-15), as q4_K_scale_min gives them.
 * Of the scale dwords w0, w1, w2: sub-blocks 0-3 are the low 6 bits of w0's
 * bytes (scales) and w1's (mins); sub-blocks 4-7 take their low 4 bits from
 * w2's nibbles and their top 2 from bits 6-7 of w0's / w1's bytes, which >> 2
 * puts at bits 4-5. On the vector: the scalar word operations and inserts
 * this replaced were 9 % of Q4_K decode's in-cache time (docs/BENCHMARKS.md). */
static inline __m128 q4_K_head(const void *blk, __m128i *sm) {
    __m128i v = _mm_loadu_si128((const __m128i *)blk); /* d|dmin, w0, w1, w2 */
    __m128i a = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(3, 2, 3, 1)), _mm_setr_epi32(0, 0, 0, 4));
    __m128i lo = _mm_and_si128(a, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    __m128i b = _mm_srli_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 1, 1)), 2); /* w0, w0, w1, w1 */
    *sm = _mm_ternarylogic_epi32(lo, b, _mm_setr_epi32(0, 0x30303030, 0, 0x30303030), 0xF8); /* A | (B & C) */
    return _mm_cvtph_ps(v);
}

/* 8 unsigned bytes, each twice, as 16 floats times f. */
static inline __m512 groups_of_8(__m128i b, float f) {
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b))), _mm512_set1_ps(f));
}

static inline void kq_codes_q4_K(const block_q4_K *w, __m512i *q) {
    const __m512i m4 = _mm512_set1_epi8(0xF);
    for (int h = 0; h < 2; h++) {
        __m512i v = _mm512_loadu_si512(w->qs + 64 * h);
        q[2 * h] = _mm512_and_si512(v, m4);
        q[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
}

static inline void unpack_kq_q4_K(const block_q4_K *w, kq_w *u) {
    kq_codes_q4_K(w, u->q);
    __m128i sm;
    q4_K_head(w, &sm);
    u->sc = groups_of_8(sm, h2f(w->d));
    u->mn = groups_of_8(_mm_unpackhi_epi64(sm, sm), h2f(w->dmin));
}

/* The high bits of two sub-blocks' codes from their bit field hb (qh,
 * broadcast to both halves): the bits in mask (per half) moved to bit 4 by
 * a rotate of rot bits left (per half; they stay inside their byte), then
 * or-ed under the low nibbles of lo: (lo & 0xF) | hb in one ternary op.
 * Three or four operations per pair of sub-blocks where shifting the field
 * and masking after took five or six: decode is bound by these ports. */
static inline __m512i kq_merge_high(__m512i lo, __m512i qh, __m512i mask, __m512i rot) {
    __m512i hb = _mm512_rolv_epi32(_mm512_and_si512(qh, mask), rot);
    return _mm512_ternarylogic_epi32(lo, hb, _mm512_set1_epi8(0xF), 0xEC); /* (A & C) | B: 0xF0 & 0xAA | 0xCC */
}

/* Per-half constants: v for the low 256 bits, w for the high. */
static inline __m512i halves_epi8(int v, int w) {
    return _mm512_inserti64x4(_mm512_set1_epi8((char)v), _mm256_set1_epi8((char)w), 1);
}
static inline __m512i halves_epi32(int v, int w) {
    return _mm512_inserti64x4(_mm512_set1_epi32(v), _mm256_set1_epi32(w), 1);
}

/* Q5_K: the 5th bit of sub-block j is bit j of qh[l]; pair p holds
 * sub-blocks j (low half) and j + 2 (high half), j = (0, 1, 4, 5)[p]. */
static inline void kq_codes_q5_K(const block_q5_K *w, __m512i *q) {
    __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w->qh));
    for (int h = 0; h < 2; h++) {
        __m512i v = _mm512_loadu_si512(w->qs + 64 * h);
        for (int k = 0; k < 2; k++) {
            int j = 4 * h + k; /* bits j and j + 2 to bit 4: rotate left by 4 - j (mod 32) */
            __m512i lo = k ? _mm512_srli_epi16(v, 4) : v;
            q[2 * h + k] = kq_merge_high(lo, qh, halves_epi8(1 << j, 1 << (j + 2)),
                                         halves_epi32((4 - j) & 31, (2 - j) & 31));
        }
    }
}

static inline void unpack_kq_q5_K(const block_q5_K *w, kq_w *u) {
    kq_codes_q5_K(w, u->q);
    __m128i sm;
    q4_K_head(w, &sm);
    u->sc = groups_of_8(sm, h2f(w->d));
    u->mn = groups_of_8(_mm_unpackhi_epi64(sm, sm), h2f(w->dmin));
}

/* Q6_K: values 128 h + 32 k + l have low bits in ql[64 h + 32 (k & 1) + l]
 * (low nibble for k < 2, high for k >= 2) and high bits 2k.. of
 * qh[32 h + l]; one int8 scale per 16 values; codes 0..63 stand for
 * code - 32. Pairs are sub-blocks (0,1), (2,3), ... */
static inline void kq_codes_q6_K(const block_q6_K *w, __m512i *q) {
    for (int h = 0; h < 2; h++) {
        __m512i ql = _mm512_loadu_si512(w->ql + 64 * h);
        __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w->qh + 32 * h)));
        for (int k = 0; k < 4; k += 2) { /* sub-blocks 4h + k (low half), 4h + k + 1 (high half) */
            /* bits 2k.. and 2k + 2.. to bits 4, 5: rotate left by 4 - 2k and 2 - 2k (mod 32) */
            __m512i lo = k ? _mm512_srli_epi16(ql, 4) : ql;
            q[2 * h + k / 2] = kq_merge_high(lo, qh, halves_epi8(3 << (2 * k), 3 << (2 * k + 2)),
                                             halves_epi32((4 - 2 * k) & 31, (2 - 2 * k) & 31));
        }
    }
}

static inline void unpack_kq_q6_K(const block_q6_K *w, kq_w *u) {
    kq_codes_q6_K(w, u->q);
    u->sc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w->scales))),
                          _mm512_set1_ps(h2f(w->d)));
    u->mn = _mm512_mul_ps(u->sc, _mm512_set1_ps(32.0f));
}

/* Q4_K, Q5_K or Q6_K (dt): the kernels below serve all three with dt a
 * constant argument, so each compiles to one type's code. */
static inline size_t kq_block_bytes(moe_dtype dt) {
    return dt == DT_Q6_K ? sizeof(block_q6_K) : dt == DT_Q5_K ? sizeof(block_q5_K) : sizeof(block_q4_K);
}
static inline const void *kq_block(moe_dtype dt, const void *row, int b) { /* super-block b of a row */
    return (const char *)row + (size_t)b * kq_block_bytes(dt);
}
static inline void kq_unpack(moe_dtype dt, const void *blk, kq_w *u) {
    if (dt == DT_Q6_K) unpack_kq_q6_K(blk, u);
    else if (dt == DT_Q5_K) unpack_kq_q5_K(blk, u);
    else unpack_kq_q4_K(blk, u);
}
/* The order of a super-block's 32-value blocks in its registers' pairs:
 * as Q4_K/Q5_K's nibbles come from memory, or Q6_K's natural one. */
static const int NIBBLE_PAIRS[8] = {0, 2, 1, 3, 4, 6, 5, 7};
static const int NATURAL_PAIRS[8] = {0, 1, 2, 3, 4, 5, 6, 7};
static inline const int *kq_order(moe_dtype dt) { return dt == DT_Q6_K ? NATURAL_PAIRS : NIBBLE_PAIRS; }

/* A token row's super-blocks laid out for the pairs order[0..7] (pair p =
 * blocks order[2p], order[2p+1]). */
static inline __attribute__((always_inline)) void kq_prepare(const block_q8a *x, int ns, const int *order, kq_x *out) {
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    for (int b = 0; b < ns; b++, x += 8) {
        kq_x *o = &out[b];
        for (int i = 0; i < 8; i++) memcpy(o->q + 32 * i, x[order[i]].qs, 32);
        for (int j = 0; j < 8; j++) {
            /* the sums of 8-byte runs of (value + 128), unsigned: sad against zero */
            __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[j].qs), bias);
            __m256i r = _mm256_sad_epu8(v, _mm256_setzero_si256());
            int64_t e[4];
            _mm256_storeu_si256((__m256i *)e, r);
            o->d[2 * j] = o->d[2 * j + 1] = x[j].d;
            o->s[2 * j] = x[j].d * (float)(e[0] + e[1] - 16 * 128);
            o->s[2 * j + 1] = x[j].d * (float)(e[2] + e[3] - 16 * 128);
        }
    }
}

/* Lane l of pair p belongs to group 2j + (l / 4) % 2 of block j =
 * order[2p + l / 8]: the permute that spreads 16 group scales to it. */
static inline __m512i kq_perm(const int *order, int p) {
    int32_t ix[16];
    for (int l = 0; l < 16; l++) ix[l] = 2 * order[2 * p + l / 8] + (l / 4) % 2;
    return _mm512_loadu_si512(ix);
}

/* One weight row against T prepared tokens: per super-block and token,
 * the 16 group scales (one multiply), then the four pairs into two chains
 * for up to 4 tokens (one token, decode, is not held to one FMA latency
 * per pair), one for more (the registers would not hold two). */
static inline __attribute__((always_inline)) void row_kq(moe_dtype dt, int T, int ns, const void *wb,
                                                         const __m512i *perm, const kq_x *const *x, float *o) {
    __m512 acc[2][KQ_TOK], mins[KQ_TOK];
    for (int t = 0; t < T; t++) acc[0][t] = acc[1][t] = mins[t] = _mm512_setzero_ps();
    for (int b = 0; b < ns; b++) {
        kq_w u;
        kq_unpack(dt, kq_block(dt, wb, b), &u);
        for (int t = 0; t < T; t++) {
            const kq_x *xb = &x[t][b];
            __m512 g = _mm512_mul_ps(u.sc, _mm512_loadu_ps(xb->d));
            for (int p = 0; p < 4; p++) {
                int c = T <= 4 ? p & 1 : 0;
                __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u.q[p], _mm512_loadu_si512(xb->q + 64 * p));
                acc[c][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(perm[p], g), acc[c][t]);
            }
            mins[t] = _mm512_fmadd_ps(u.mn, _mm512_loadu_ps(xb->s), mins[t]);
        }
    }
    for (int t = 0; t < T; t++) {
        __m512 a = T <= 4 ? _mm512_add_ps(acc[0][t], acc[1][t]) : acc[0][t];
        o[t] = _mm512_reduce_add_ps(_mm512_sub_ps(a, mins[t])); /* one reduction a row */
    }
}

/* Decode's layout of the token (kq_prepare1): a row's sum stays a vector,
 * so eight rows are reduced at once; the per-row reductions and a prefetch
 * loop per row were a quarter of the in-cache time. */
typedef struct {
    int8_t q[256];      /* the values, pairs in the weight's order (as kq_x) */
    float k[16];        /* Q4_K/Q5_K: block j's scale (lane j) and scale x sum of its values (8 + j);
                         * Q6_K: 16-value group g's activation scale (its block's) */
    int32_t neg[4][16]; /* Q6_K: -32 x the 4 values of each dpbusd lane, pair by pair (the codes' offset) */
} kq_x1;

static void kq_prepare1(const block_q8a *x, int ns, const int *order, int q6, kq_x1 *out) {
    for (int b = 0; b < ns; b++, x += 8) {
        kq_x1 *o = &out[b];
        for (int i = 0; i < 8; i++) memcpy(o->q + 32 * i, x[order[i]].qs, 32);
        for (int j = 0; j < 8; j++) {
            if (q6) o->k[2 * j] = o->k[2 * j + 1] = x[j].d;
            else o->k[j] = x[j].d, o->k[8 + j] = x[j].d * (float)x[j].sum;
        }
        for (int p = 0; p < 4 && q6; p++) {
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), _mm512_loadu_si512(o->q + 64 * p));
            _mm512_storeu_si512(o->neg[p], _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(s, 5)));
        }
    }
}

/* Lane l of pair p belongs to 32-block order[2p + l / 8]: the permute that
 * spreads 8 block scales to it. */
static inline __m512i kq_perm_block(const int *order, int p) {
    int32_t ix[16];
    for (int l = 0; l < 16; l++) ix[l] = order[2 * p + l / 8];
    return _mm512_loadu_si512(ix);
}

/* One super-block (blk) of one row against the token's (x) into the
 * row's sums: acc, and for Q4_K/Q5_K the mins in lanes 8-15 of *mins (k's
 * upper half: 8 mins x dmin x the token's scale x block sums). Q6_K's -32
 * starts the int32 sums (neg); Q4_K/Q5_K's 8 scales and 8 mins are one
 * vector (k): one convert and two multiplies a super-block. The prefetch
 * DECODE_AHEAD bytes on is a constant count, unrolled. */
static inline __attribute__((always_inline)) void kq_step(moe_dtype dt, const void *blk, const __m512i *perm,
                                                          const kq_x1 *x, __m512 *acc, __m512 *mins) {
    prefetch_span((const char *)blk + DECODE_AHEAD, (int)kq_block_bytes(dt));
    __m512i q[4];
    __m512 k;
    if (dt == DT_Q6_K) {
        const block_q6_K *w = blk;
        kq_codes_q6_K(w, q);
        __m512 sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)w->scales)));
        k = _mm512_mul_ps(_mm512_mul_ps(sc, _mm512_loadu_ps(x->k)), _mm512_set1_ps(h2f(w->d)));
    } else {
        const __m512i sel = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        if (dt == DT_Q5_K) kq_codes_q5_K(blk, q);
        else kq_codes_q4_K(blk, q);
        __m128i sm8; /* the same first 16 bytes in both types */
        __m512 ddm = _mm512_permutexvar_ps(sel, _mm512_castps128_ps512(q4_K_head(blk, &sm8)));
        k = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sm8)), ddm), _mm512_loadu_ps(x->k));
        *mins = _mm512_mask_add_ps(*mins, (__mmask16)0xFF00, *mins, k);
    }
    for (int p = 0; p < 4; p++) {
        __m512i init = dt == DT_Q6_K ? _mm512_loadu_si512(x->neg[p]) : _mm512_setzero_si512();
        __m512i d = _mm512_dpbusd_epi32(init, q[p], _mm512_loadu_si512(x->q + 64 * p));
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(perm[p], k), *acc);
    }
}

/* S rows, r, r + part, ..., r + (S - 1) part, super-block by super-block,
 * each as a vector to be summed (out[8 s]): S streams advancing together. */
static inline __attribute__((always_inline)) void kq_rows_s(moe_dtype dt, int S, int ns, const char *w,
                                                            size_t w_stride, int r, int part, const __m512i *perm,
                                                            const kq_x1 *x, __m512 *out) {
    __m512 acc[DECODE_PARTS], mins[DECODE_PARTS];
    for (int s = 0; s < S; s++) acc[s] = mins[s] = _mm512_setzero_ps();
    for (int b = 0; b < ns; b++)
        for (int s = 0; s < S; s++)
            kq_step(dt, kq_block(dt, w + (size_t)(r + s * part) * w_stride, b), perm, &x[b], &acc[s], &mins[s]);
    for (int s = 0; s < S; s++) out[8 * s] = _mm512_sub_ps(acc[s], mins[s]);
}

/* Rows r.. r + 8 of each of S parts of `part` rows from row r0: eight rows
 * of a part are reduced at once (sum8). */
static inline __attribute__((always_inline)) void kq_groups(moe_dtype dt, int S, int ns, const void *w,
                                                            size_t w_stride, int r0, int part, const __m512i *perm,
                                                            const kq_x1 *x, float *y) {
    for (int r = r0; r < r0 + part; r += 8) {
        __m512 v[DECODE_PARTS * 8];
        for (int i = 0; i < 8; i++) kq_rows_s(dt, S, ns, w, w_stride, r + i, part, perm, x, v + i);
        for (int s = 0; s < S; s++) _mm256_storeu_ps(y + s * part + r, sum8(v + 8 * s));
    }
}

/* Decode (one token). The token is laid out once per tile call with what
 * makes a super-block's scaling cheapest (kq_x1), and the tile is read as
 * DECODE_PARTS parts at once, super-block by super-block: three streams a
 * thread keep more of memory's requests in flight than one, and decode
 * went from 69.4 to 78.5 t/s on the Qwen3-30B-A3B-shape Q4_K_M file (the
 * halves of a Q4_K tile eight rows at a time had given 2-3 %; four streams
 * and six read slower than three: docs/BENCHMARKS.md, 2026-12-07, fifth
 * session). Rows left over go two parts at a time, then one. */
static inline __attribute__((always_inline)) void kq_decode(moe_dtype dt, int ns, const void *w, size_t w_stride,
                                                            int nr, const block_q8a *xa, float *y) {
    const int q6 = dt == DT_Q6_K, *order = kq_order(dt);
    __m512i perm[4];
    for (int p = 0; p < 4; p++) perm[p] = q6 ? kq_perm(order, p) : kq_perm_block(order, p);
    kq_x1 x[KQ_MAX_SUPER];
    kq_prepare1(xa, ns, order, q6, x);
    int part = nr / (8 * DECODE_PARTS) * 8, r = DECODE_PARTS * part;
    kq_groups(dt, DECODE_PARTS, ns, w, w_stride, 0, part, perm, x, y);
    part = (nr - r) / 16 * 8;
    kq_groups(dt, 2, ns, w, w_stride, r, part, perm, x, y);
    r += 2 * part;
    part = (nr - r) / 8 * 8;
    kq_groups(dt, 1, ns, w, w_stride, r, part, perm, x, y);
    for (r += part; r < nr; r++) {
        __m512 v;
        kq_rows_s(dt, 1, ns, w, w_stride, r, 0, perm, x, &v);
        y[r] = _mm512_reduce_add_ps(v);
    }
}
static void q4_K_decode(int ns, const void *w, size_t w_stride, int nr, const block_q8a *xa, float *y) {
    kq_decode(DT_Q4_K, ns, w, w_stride, nr, xa, y);
}
static void q5_K_decode(int ns, const void *w, size_t w_stride, int nr, const block_q8a *xa, float *y) {
    kq_decode(DT_Q5_K, ns, w, w_stride, nr, xa, y);
}
static void q6_K_decode(int ns, const void *w, size_t w_stride, int nr, const block_q8a *xa, float *y) {
    kq_decode(DT_Q6_K, ns, w, w_stride, nr, xa, y);
}

/* Many tokens: lanes are tokens, as for Q8_0 (tokens16, interleave16): a
 * row's super-block is unpacked once into 256 code bytes in value order
 * and its 16 group scales, then 4 codes at a time are broadcast against
 * 16 tokens. Q4_K/Q5_K sum a 32-value sub-block in int32 (8 dpbusd) before
 * scaling it, their mins meeting the tokens' block sums; Q6_K scales each
 * 16 values, its -32 offset entering the int32 sum as -32 x the tokens'
 * group sums. Four rows share each load of the tokens' values. */
typedef struct {
    __m512 ds;       /* Q4_K/Q5_K: scale x block sum per token; unused for Q6_K */
    __m512i neg[2];  /* Q6_K: -32 x the sum of values 0-15 / 16-31 per token */
} kq_xsum16;

static void kq_sums16(const xblock16 *xb, int nb, int q6, kq_xsum16 *xs) {
    const __m512i ones = _mm512_set1_epi8(1);
    for (int b = 0; b < nb; b++) {
        if (!q6) {
            xs[b].ds = _mm512_mul_ps(xb[b].d, _mm512_cvtepi32_ps(xb[b].neg)); /* neg holds +sum (offset -1) */
            continue;
        }
        for (int h = 0; h < 2; h++) {
            __m512i s = _mm512_setzero_si512();
            for (int k = 0; k < 4; k++) s = _mm512_dpbusd_epi32(s, ones, xb[b].qs[4 * h + k]);
            xs[b].neg[h] = _mm512_mullo_epi32(s, _mm512_set1_epi32(-32));
        }
    }
}

/* A super-block's codes in value order (pair p of u holds 32-blocks
 * order[2p], order[2p+1]) and its group scales and mins. */
typedef struct {
    _Alignas(64) uint8_t q[256];
    float sc[16], mn[16];
} kq_row;

static inline void kq_store(const kq_w *u, const int *order, kq_row *o) {
    for (int p = 0; p < 4; p++) {
        _mm256_storeu_si256((__m256i *)(o->q + 32 * order[2 * p]), _mm512_castsi512_si256(u->q[p]));
        _mm256_storeu_si256((__m256i *)(o->q + 32 * order[2 * p + 1]), _mm512_extracti64x4_epi64(u->q[p], 1));
    }
    _mm512_storeu_ps(o->sc, u->sc);
    _mm512_storeu_ps(o->mn, u->mn);
}

/* Four rows' super-block against 16 tokens (32-blocks 8b.. of xb). */
static inline __attribute__((always_inline)) void kq_rows4_super(int q6, const kq_row *w, const xblock16 *xb,
                                                                   const kq_xsum16 *xs, __m512 *acc, __m512 *mins) {
    for (int j = 0; j < 8; j++) {
        const xblock16 *x = &xb[j];
        for (int r = 0; r < 4; r++) {
            const uint8_t *q = w[r].q + 32 * j;
            if (q6) {
                for (int h = 0; h < 2; h++) {
                    __m512i d = xs[j].neg[h];
                    for (int k = 0; k < 4; k++) d = _mm512_dpbusd_epi32(d, bcast4((const int8_t *)q + 16 * h + 4 * k), x->qs[4 * h + k]);
                    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(x->d, _mm512_set1_ps(w[r].sc[2 * j + h])), acc[r]);
                }
            } else {
                __m512i d0 = _mm512_setzero_si512(), d1 = d0;
                for (int k = 0; k < 8; k += 2) {
                    d0 = _mm512_dpbusd_epi32(d0, bcast4((const int8_t *)q + 4 * k), x->qs[k]);
                    d1 = _mm512_dpbusd_epi32(d1, bcast4((const int8_t *)q + 4 * k + 4), x->qs[k + 1]);
                }
                __m512i d = _mm512_add_epi32(d0, d1);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(x->d, _mm512_set1_ps(w[r].sc[2 * j])), acc[r]);
                mins[r] = _mm512_fmadd_ps(xs[j].ds, _mm512_set1_ps(w[r].mn[2 * j]), mins[r]);
            }
        }
    }
}

/* Tokens in groups of 16 for nr (a multiple of 4) rows, a last group of
 * KQ_LANES_MIN to 15 tokens too, its empty lanes repeating its last token
 * (an expert's 16 tokens and a few more cost one group, not a group and a
 * per-token pass), XT_CHUNK / 8 super-blocks of the rows at a time; returns
 * the first token left for the per-token path. */
static inline __attribute__((always_inline)) int kq_tokens16(moe_dtype dt, int ns, const void *w, size_t w_stride,
                                                            int nr, const void *a, size_t a_stride, const int *idx,
                                                            int nt, float *y, size_t ldy) {
    if (8 * ns > XT_MAX_BLOCKS || nr % 4) return 0;
    const int q6 = dt == DT_Q6_K, *order = kq_order(dt), chunk = XT_CHUNK / 8; /* super-blocks a chunk */
    xblock16 xb[XT_CHUNK];
    kq_xsum16 xs[XT_CHUNK];
    int t0 = 0;
    for (; nt - t0 >= KQ_LANES_MIN; t0 += XT) {
        int m = nt - t0 < XT ? nt - t0 : XT; /* a last group of fewer fills its lanes with its last token */
        for (int s0 = 0; s0 < ns; s0 += chunk) {
            int sn = ns - s0 < chunk ? ns - s0 : chunk;
            const block_q8a *x[XT];
            for (int t = 0; t < XT; t++) x[t] = (const block_q8a *)AROW(t0 + (t < m ? t : m - 1)) + 8 * s0;
            interleave16(x, 8 * sn, q6 ? 0 : -1, xb);
            kq_sums16(xb, 8 * sn, q6, xs);
            for (int r0 = 0; r0 < nr; r0 += 4) {
                __m512 acc[4], mins[4];
                for (int r = 0; r < 4; r++) acc[r] = mins[r] = _mm512_setzero_ps();
                for (int b = 0; b < sn; b++) {
                    kq_row wr[4];
                    for (int r = 0; r < 4; r++) {
                        kq_w u;
                        const void *wb = kq_block(dt, (const char *)w + (size_t)(r0 + r) * w_stride, s0 + b);
                        prefetch_span((const char *)wb + KQ_AHEAD_ROWS * w_stride, (int)kq_block_bytes(dt));
                        kq_unpack(dt, wb, &u);
                        kq_store(&u, order, &wr[r]);
                    }
                    kq_rows4_super(q6, wr, xb + 8 * b, xs + 8 * b, acc, mins);
                }
                for (int r = 0; r < 4; r++) acc[r] = _mm512_sub_ps(acc[r], mins[r]);
                store_tokens16(acc, m, s0 > 0, y + (size_t)t0 * ldy + r0, ldy);
            }
        }
    }
    return t0 < nt ? t0 : nt;
}
/* Not inlined into the tiles, so their 52 KB sits on the stack only while they run. */
static __attribute__((noinline)) int q4_K_tokens16(int ns, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                         const int *idx, int nt, float *y, size_t ldy) {
    return kq_tokens16(DT_Q4_K, ns, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static __attribute__((noinline)) int q5_K_tokens16(int ns, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                         const int *idx, int nt, float *y, size_t ldy) {
    return kq_tokens16(DT_Q5_K, ns, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}
static __attribute__((noinline)) int q6_K_tokens16(int ns, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
                         const int *idx, int nt, float *y, size_t ldy) {
    return kq_tokens16(DT_Q6_K, ns, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
}

/* Tokens KQ_TOK at a time, each laid out KQ_CHUNK super-blocks at a time
 * per tile call (a group of fewer goes 4, then 3, 2 or 1 at a time over the
 * same row), after the token-lane path took what it could. Only decode lays
 * its token out whole, so only decode sends rows longer than KQ_MAX_SUPER
 * super-blocks to the AVX2 tile. */
static inline __attribute__((always_inline)) void tile_kq(moe_dtype dt, int n, const void *w, size_t w_stride, int nr,
                                                          const void *a, size_t a_stride, const int *idx, int nt,
                                                          float *y, size_t ldy) {
    int ns = n / QK_K;
    if (nt == 1 && ns > KQ_MAX_SUPER) {
        switch (dt) {
        case DT_Q6_K: avx2_tile_q6_K(n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy); break;
        case DT_Q5_K: avx2_tile_q5_K(n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy); break;
        default: avx2_tile_q4_K(n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy); break;
        }
        return;
    }
    if (nt == 1) {
        const block_q8a *x = (const block_q8a *)AROW(0);
        switch (dt) {
        case DT_Q6_K: q6_K_decode(ns, w, w_stride, nr, x, y); break;
        case DT_Q5_K: q5_K_decode(ns, w, w_stride, nr, x, y); break;
        default: q4_K_decode(ns, w, w_stride, nr, x, y); break;
        }
        return;
    }
    int first = 0;
    if (nt >= KQ_LANES_MIN) {
        first = dt == DT_Q6_K   ? q6_K_tokens16(ns, w, w_stride, nr, a, a_stride, idx, nt, y, ldy)
                : dt == DT_Q5_K ? q5_K_tokens16(ns, w, w_stride, nr, a, a_stride, idx, nt, y, ldy)
                                : q4_K_tokens16(ns, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
    }
    const int *order = kq_order(dt);
    __m512i perm[4];
    for (int p = 0; p < 4; p++) perm[p] = kq_perm(order, p);
    kq_x xs[KQ_TOK][KQ_CHUNK];
    for (int t0 = first; t0 < nt; t0 += KQ_TOK) {
        int m = nt - t0 < KQ_TOK ? nt - t0 : KQ_TOK;
        for (int s0 = 0; s0 < ns; s0 += KQ_CHUNK) {
            int sn = ns - s0 < KQ_CHUNK ? ns - s0 : KQ_CHUNK;
            const kq_x *x[KQ_TOK];
            for (int t = 0; t < m; t++) {
                kq_prepare((const block_q8a *)AROW(t0 + t) + 8 * s0, sn, order, xs[t]);
                x[t] = xs[t];
            }
            for (int r = 0; r < nr; r++) {
                const void *wb = kq_block(dt, (const char *)w + (size_t)r * w_stride, s0);
                float o[KQ_TOK] = {0};
                /* a constant token count keeps the accumulators in registers */
                if (m == KQ_TOK) row_kq(dt, KQ_TOK, sn, wb, perm, x, o);
                else {
                    int d = m >= 4 ? 4 : 0;
                    if (d) row_kq(dt, 4, sn, wb, perm, x, o);
                    switch (m - d) {
                    case 3: row_kq(dt, 3, sn, wb, perm, x + d, o + d); break;
                    case 2: row_kq(dt, 2, sn, wb, perm, x + d, o + d); break;
                    case 1: row_kq(dt, 1, sn, wb, perm, x + d, o + d); break;
                    }
                }
                float *yr = y + (size_t)t0 * ldy + r;
                for (int t = 0; t < m; t++) yr[(size_t)t * ldy] = s0 ? yr[(size_t)t * ldy] + o[t] : o[t];
            }
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

/* ------------------------------------------------------------ f32 helpers */

static float dot_f32(const float *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) { /* masked tail */
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static void axpy_f32(float *y, float s, const float *x, int n) {
    __m512 vs = _mm512_set1_ps(s);
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(vs, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(vs, _mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, y + i)));
    }
}

static void axpy_f16(float *y, float s, const uint16_t *x, int n) {
    __m512 vs = _mm512_set1_ps(s);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(vs, load16_f16(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 xv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, x + i));
        _mm512_mask_storeu_ps(y + i, k, _mm512_fmadd_ps(vs, xv, _mm512_maskz_loadu_ps(k, y + i)));
    }
}

/* quantize_row_q8a (quant.c) 32 values at a time: the same amax, scale and
 * round-to-nearest-even (cvtps under the default rounding mode is lrintf),
 * so the bytes are identical. */
static void quantize_q8a(const float *x, void *vy, int n) {
    block_q8a *y = vy;
    for (int b = 0; b < n / 32; b++, x += 32) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float d = bf16_to_f32(f32_to_bf16(amax / 127.0f)), id = d > 0 ? 1.0f / d : 0.0f; /* quant.h: a bf16 scale */
        /* a non-finite value (x - x is NaN) or an overflowing 1/d: a zero block, as quant.c */
        if (_mm512_cmp_ps_mask(_mm512_sub_ps(v0, v0), _mm512_sub_ps(v1, v1), _CMP_UNORD_Q) || id > FLT_MAX) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        __m512 vid = _mm512_set1_ps(id);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vid)), q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vid));
        _mm_storeu_si128((__m128i *)y[b].qs, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(y[b].qs + 16), _mm512_cvtepi32_epi8(q1));
        y[b].d = d;
        y[b].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

/* 64 words at q into four sums */
static inline void read_chunk(const uint64_t *q, __m512i *a) {
    for (int k = 0; k < 8; k++) a[k & 3] = _mm512_add_epi64(a[k & 3], _mm512_load_si512((const __m512i *)q + k));
}
static uint64_t read_sum(const uint64_t *p, size_t n, int parts) {
    __m512i a[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    size_t part = n / (size_t)parts / 64 * 64;
    for (size_t i = 0; i < part; i += 64)
        for (int s = 0; s < parts; s++) read_chunk(p + (size_t)s * part + i, a);
    for (size_t i = (size_t)parts * part; i < n; i += 64) read_chunk(p + i, a);
    uint64_t lane[8], t = 0; /* summed as unsigned: the reduce intrinsic adds signed (overflow is UB) */
    _mm512_storeu_si512(lane, _mm512_add_epi64(_mm512_add_epi64(a[0], a[1]), _mm512_add_epi64(a[2], a[3])));
    for (int l = 0; l < 8; l++) t += lane[l];
    return t;
}

/* The tiles of this set, with MXFP4's given: the AMX set (kernels_amx.c)
 * is this one with its own MXFP4 tile. */
#define AVX512_SET(NAME, MXFP4_TILE)                                                                          \
    {                                                                                                        \
        .name = NAME,                                                                                        \
        .tile = {[DT_F32] = tile_f32, [DT_F16] = tile_f16, [DT_BF16] = tile_bf16,                           \
                 [DT_Q8_0] = tile_q8_0, [DT_Q4_0] = tile_q4_0, [DT_Q5_0] = tile_q5_0, [DT_Q4_K] = tile_q4_K,        \
                 [DT_Q5_K] = tile_q5_K, [DT_Q6_K] = tile_q6_K, [DT_IQ4_XS] = avx2_tile_iq4_xs,               \
                 [DT_IQ4_NL] = tile_iq4_nl,                                                                  \
                 [DT_MXFP4] = MXFP4_TILE,                                                                    \
                 [DT_Q8_0_R16] = tile_q8_0_r16, [DT_Q4_0_R16] = tile_q4_0_r16},                             \
        .dot_f32 = dot_f32, .axpy_f32 = axpy_f32, .axpy_f16 = axpy_f16, .quantize_q8a = quantize_q8a,      \
        .read_sum = read_sum,                                                                                \
    }

static const kernel_set AVX512 = AVX512_SET("avx512", avx512_tile_mxfp4);
const kernel_set *kernels_avx512(void) { return &AVX512; }

#if defined(MOE_HAVE_AMX)
static const kernel_set AMX = AVX512_SET("amx", amx_tile_mxfp4);

const kernel_set *kernels_amx(void) { return &AMX; }
#endif
#endif
