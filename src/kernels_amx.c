/* kernels_amx.c - MXFP4 prefill on AMX-BF16 tiles: the tile of the "amx"
 * kernel set (the AVX-512 set with this tile for DT_MXFP4, kernels_avx512.c).
 *
 * Why it is exact. An MXFP4 weight is a level (0, 1, 2, 3, 4, 6, 8, 12
 * doubled, quant_mxfp4.h) times 2^(e - 128): a bf16 number, normal for every
 * scale byte e in [2, 252]. A float activation x is the sum of three bf16
 * numbers hi + mid + lo, each the top 8 significant bits of what the ones
 * before left (truncation: 3 x 8 bits cover float's 24). TDPBF16PS multiplies
 * bf16 pairs exactly into fp32 and adds in fp32, so the products are the
 * float kernel's; only the order of the fp32 additions differs, as between
 * any two sets. AMX flushes subnormal inputs, products and sums to zero, so
 * a panel takes the AVX-512 float tile instead when a block has e outside
 * [2, 252] (e = 255 is NaN), when an activation of the chunk is below
 * 2^-103 (a part could be subnormal), or when the smallest nonzero
 * activation's exponent ex and the panel's smallest e give e + ex < 25:
 * every product, and so every sum, is a multiple of 2^(e - 128 + ex - 23),
 * which is then at least 2^-126, so a nonzero one is never subnormal.
 *
 * Shape of one TDPBF16PS: C (16 tokens x 16 rows, fp32) += A (16 tokens x
 * 32 bf16) . B (32 x 16 rows, as 16 pairs per row). The 32 values of a block
 * pair up as (k, k + 16), the low and high nibble of code byte k, so a
 * weight row's block decodes to one register of pairs with one 16-bit
 * permute; a 16 x 16 transpose of those registers is the B tile. A token's
 * block splits into three A tile rows the same way. Per call, tokens go in
 * chunks of up to 64 (4 C tiles), rows in chunks of 64 (4 row panels) and
 * columns in steps of AMX_KS blocks: each step splits the chunk's
 * activations once and decodes each panel's weights once, and every decoded
 * B tile meets every token group; the C tiles wait in memory between steps.
 * One token (decode, memory-bound) and small groups keep the AVX-512 tile. */
#if defined(MOE_HAVE_AMX) /* CMake: x86-64 and a compiler with the AMX flags */
#include <immintrin.h>
#include <string.h>

#include "kernels.h"
#include "quant_mxfp4.h"

#define TOK 4
#include "kernels_simd.h"

#ifndef AMX_PARTS
#define AMX_PARTS 3 /* bf16 parts per activation: 3 represent every float (2: measured, docs/BENCHMARKS.md) */
#endif
#define AMX_GROUPS 4       /* token groups of 16 per chunk: C tiles tmm4..tmm7 */
#define AMX_PANELS 4       /* row panels of 16 per chunk */
#define AMX_KS 4           /* blocks of 32 columns per step */
#define AMX_MIN_TOKENS 5   /* fewer tokens take the AVX-512 tile (measured: docs/BENCHMARKS.md) */
#define TILE_BYTES 1024    /* 16 rows x 64 bytes */

/* The tile configuration: tmm0 (B), tmm1-3 (A parts), tmm4-7 (C), each 16
 * rows of 64 bytes. Loaded per call: tile state belongs to the thread. */
typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;
_Static_assert(sizeof(tile_config) == 64, "LDTILECFG reads 64 bytes");

/* GCC 12's tile intrinsics do not tell the compiler which memory they
 * touch (tile loads and stores: none; the configuration load: 8 bytes), so
 * it could drop or move the plain stores that fill a tile's memory, or
 * read a stored tile early. This barrier makes every store to memory that
 * a, b and c point into happen before it, and every read after it. */
static inline void memory_for_tiles(const void *a, const void *b, const void *c) {
    __asm__ volatile("" : : "r"(a), "r"(b), "r"(c) : "memory");
}

static void tiles_configure(void) {
    tile_config c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 8; i++) {
        c.colsb[i] = 64;
        c.rows[i] = 16;
    }
    memory_for_tiles(&c, &c, &c);
    _tile_loadconfig(&c);
}

/* ------------------------------------------------------------ activations */

static inline __m512i top16_mask(void) { return _mm512_set1_epi32((int)0xFFFF0000u); }

/* x split into bf16-exact floats hi + mid + lo (lo: the at most 8 bits the
 * truncations left, exactly). A NaN's hi keeps it a NaN (its payload may sit
 * in the truncated bits); non-finite x has mid = lo = 0, so the tile sees
 * x itself, as a float kernel does. */
static inline void split3(__m512 x, __m512 *part) {
    __m512i hi = _mm512_and_si512(_mm512_castps_si512(x), top16_mask());
    hi = _mm512_mask_or_epi32(hi, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), hi, _mm512_set1_epi32(0x00400000));
    part[0] = _mm512_castsi512_ps(hi);
    __m512 r = _mm512_sub_ps(x, part[0]);
    __mmask16 finite = _mm512_cmp_ps_mask(r, r, _CMP_ORD_Q);
    part[1] = _mm512_castsi512_ps(_mm512_maskz_and_epi32(finite, _mm512_castps_si512(r), top16_mask()));
    part[2] = _mm512_maskz_sub_ps(finite, r, part[1]);
}

/* The lanes' biased exponent fields, least so far in lo; zero lanes leave
 * it: the smallest nonzero |x| bounds the lowest bit of every part. */
static inline __m512i min_exponent(__m512i lo, __m512 x) {
    __m512i m = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF));
    return _mm512_mask_min_epu32(lo, _mm512_test_epi32_mask(m, m), lo, _mm512_srli_epi32(m, 23));
}

/* bf16 pairs (lo[k], hi[k]) from floats that are bf16-exact. */
static inline __m512i pack_pairs(__m512 lo, __m512 hi) {
    return _mm512_or_si512(_mm512_srli_epi32(_mm512_castps_si512(lo), 16), _mm512_castps_si512(hi));
}

/* The A tiles of one step: tokens [t0, t0 + 16 G) (rows past nt zero) x
 * blocks [b0, b0 + ks), as at[g][kb][part] (tile rows = tokens). Returns
 * the least biased exponent of a nonzero activation (255 if none). */
static int split_tokens(int G, int b0, int ks, const void *a, size_t a_stride, const int *idx, int t0, int nt,
                        uint8_t *at) {
    __m512i lo = _mm512_set1_epi32(255);
    for (int g = 0; g < G; g++)
        for (int m = 0; m < 16; m++) {
            int t = t0 + 16 * g + m;
            for (int kb = 0; kb < ks; kb++) {
                uint8_t *row = at + ((size_t)(g * AMX_KS + kb) * AMX_PARTS * TILE_BYTES) + (size_t)m * 64;
                if (t >= nt) {
                    for (int p = 0; p < AMX_PARTS; p++) memset(row + p * TILE_BYTES, 0, 64);
                    continue;
                }
                const float *x = (const float *)AROW(t) + 32 * (b0 + kb);
                __m512 xl = _mm512_loadu_ps(x), xh = _mm512_loadu_ps(x + 16), pl[3], ph[3];
                lo = min_exponent(min_exponent(lo, xl), xh);
                split3(xl, pl);
                split3(xh, ph);
                for (int p = 0; p < AMX_PARTS; p++) _mm512_storeu_si512(row + p * TILE_BYTES, pack_pairs(pl[p], ph[p]));
            }
        }
    return (int)_mm512_reduce_min_epu32(lo);
}

/* ------------------------------------------------------------ weights */

/* The 16 levels as bf16 (words 0-15 of the table; 1-7 and 9-15 nonzero). */
static inline __m512i level_table(void) {
    __m512 lv = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)kvalues_mxfp4)));
    return _mm512_zextsi256_si512(_mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(lv), 16)));
}
#define LEVELS_NONZERO 0xFEFEu

/* One block as 16 bf16 pairs (element k, element k + 16): the levels
 * scaled by adding e - 128 to their exponents, looked up by nibble. */
static inline __m512i decode_pairs(const block_mxfp4 *blk, __m512i levels) {
    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)blk->qs));
    __m512i nib = _mm512_and_si512(_mm512_or_si512(q, _mm512_slli_epi32(q, 12)), _mm512_set1_epi32(0x000F000F));
    __m512i lv = _mm512_mask_add_epi16(levels, LEVELS_NONZERO, levels, _mm512_set1_epi16((short)((blk->e - 128) * 128)));
    return _mm512_permutexvar_epi16(nib, lv);
}

/* r[i] := dword i of every r[j], in place of 16 x 16 dwords. */
static inline void transpose16(__m512i *r) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* u[i + c], 128-bit lane l: element 4l + c of rows i..i+3 */
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int c = 0; c < 4; c++) { /* 4 x 4 transpose of 128-bit lanes */
        __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
        __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44), v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
        r[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
    }
}

/* The B tiles of rows [0, rows) (rows past it zero) x blocks [b0, b0 + ks),
 * as bt[kb]. Returns whether a block's scale is outside [2, 252]; lowers
 * *emin to the least scale byte seen. */
static int decode_panel(const void *w, size_t w_stride, int rows, int b0, int ks, __m512i levels, uint8_t *bt,
                        int *emin) {
    int bad = 0;
    for (int kb = 0; kb < ks; kb++) {
        __m512i r[16];
        for (int n = 0; n < 16; n++) {
            if (n >= rows) {
                r[n] = _mm512_setzero_si512();
                continue;
            }
            const block_mxfp4 *blk = (const block_mxfp4 *)((const char *)w + (size_t)n * w_stride) + b0 + kb;
            bad |= (unsigned)(blk->e - 2) > 250u;
            if (blk->e < *emin) *emin = blk->e;
            r[n] = decode_pairs(blk, levels);
        }
        transpose16(r);
        for (int k = 0; k < 16; k++) _mm512_storeu_si512(bt + (size_t)kb * TILE_BYTES + 64 * k, r[k]);
    }
    return bad;
}

/* ------------------------------------------------------------ tiles */

/* C tiles of G token groups (cb[g], 16 x 16 floats) += A . B over ks
 * blocks; first: start from zero. The tile numbers must be literals. */
#define LOAD_C(g, T) \
    if (G > g) { if (first) _tile_zero(T); else _tile_loadd(T, cb + (g) * 256, 64); }
#define STORE_C(g, T) \
    if (G > g) _tile_stored(T, cb + (g) * 256, 64);
#define GROUP_DP(g, T)                                                              \
    if (G > g) {                                                                    \
        const uint8_t *ag = at + (size_t)((g) * AMX_KS + kb) * AMX_PARTS * TILE_BYTES; \
        _tile_loadd(1, ag, 64);                                                     \
        _tile_dpbf16ps(T, 1, 0);                                                    \
        _tile_loadd(2, ag + TILE_BYTES, 64);                                        \
        _tile_dpbf16ps(T, 2, 0);                                                    \
        if (AMX_PARTS > 2) {                                                        \
            _tile_loadd(3, ag + 2 * TILE_BYTES, 64);                                \
            _tile_dpbf16ps(T, 3, 0);                                                \
        }                                                                           \
    }

static inline __attribute__((always_inline)) void panel_step(int G, int ks, int first, const uint8_t *bt,
                                                               const uint8_t *at, float *cb) {
    memory_for_tiles(bt, at, cb); /* the A and B tiles written, the C tiles to load */
    LOAD_C(0, 4) LOAD_C(1, 5) LOAD_C(2, 6) LOAD_C(3, 7)
    for (int kb = 0; kb < ks; kb++) {
        _tile_loadd(0, bt + (size_t)kb * TILE_BYTES, 64);
        GROUP_DP(0, 4) GROUP_DP(1, 5) GROUP_DP(2, 6) GROUP_DP(3, 7)
    }
    STORE_C(0, 4) STORE_C(1, 5) STORE_C(2, 6) STORE_C(3, 7)
    memory_for_tiles(bt, at, cb); /* the C tiles stored before they are read, the A and B tiles read */
}

static void panel_step_g(int G, int ks, int first, const uint8_t *bt, const uint8_t *at, float *cb) {
    switch (G) { /* a constant group count: the unused tiles' code drops out */
    case 4: panel_step(4, ks, first, bt, at, cb); break;
    case 3: panel_step(3, ks, first, bt, at, cb); break;
    case 2: panel_step(2, ks, first, bt, at, cb); break;
    default: panel_step(1, ks, first, bt, at, cb); break;
    }
}

/* Rows [0, rc) (rc <= 64) x tokens [t0, t0 + ntc) (ntc <= 64) into y. */
static void chunk_mxfp4(int nb, const void *w, size_t w_stride, int rc, const void *a, size_t a_stride,
                        const int *idx, int t0, int ntc, float *y, size_t ldy, __m512i levels) {
    _Alignas(64) uint8_t at[AMX_GROUPS * AMX_KS * AMX_PARTS * TILE_BYTES]; /* [group][block][part] A tiles */
    _Alignas(64) uint8_t bt[AMX_KS * TILE_BYTES];                         /* [block] B tiles of one panel */
    _Alignas(64) float cb[AMX_PANELS][AMX_GROUPS][256];                   /* C tiles between steps */
    int G = (ntc + 15) / 16, NP = (rc + 15) / 16, bad[AMX_PANELS] = {0}, emin[AMX_PANELS] = {255, 255, 255, 255};
    int xmin = 255; /* least biased exponent of a nonzero activation */
    for (int b0 = 0; b0 < nb; b0 += AMX_KS) {
        int ks = nb - b0 < AMX_KS ? nb - b0 : AMX_KS;
        int xm = split_tokens(G, b0, ks, a, a_stride, idx, t0, t0 + ntc, at);
        if (xm < xmin) xmin = xm;
        for (int p = 0; p < NP; p++) {
            int rows = rc - 16 * p < 16 ? rc - 16 * p : 16;
            bad[p] |= decode_panel((const char *)w + (size_t)(16 * p) * w_stride, w_stride, rows, b0, ks, levels, bt,
                                   &emin[p]);
            panel_step_g(G, ks, b0 == 0, bt, at, cb[p][0]);
        }
    }
    for (int p = 0; p < NP; p++) {
        int r0 = 16 * p, rows = rc - r0 < 16 ? rc - r0 : 16;
        /* below 2^-103 (biased 24), or e + ex < 25: a part, product or sum could be subnormal */
        if (bad[p] || xmin < 24 || emin[p] + xmin - 127 < 25) { /* the exact float path for these rows and tokens */
            avx512_tile_mxfp4(32 * nb, (const char *)w + (size_t)r0 * w_stride, w_stride, rows,
                              idx ? a : (const char *)a + (size_t)t0 * a_stride, a_stride, idx ? idx + t0 : NULL, ntc,
                              y + (size_t)t0 * ldy + r0, ldy);
            continue;
        }
        for (int t = 0; t < ntc; t++)
            memcpy(y + (size_t)(t0 + t) * ldy + r0, cb[p][t / 16] + 16 * (t % 16), sizeof(float) * (size_t)rows);
    }
}

void amx_tile_mxfp4(int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, const int *idx,
                    int nt, float *y, size_t ldy) {
    if (nt < AMX_MIN_TOKENS || n == 0) {
        avx512_tile_mxfp4(n, w, w_stride, nr, a, a_stride, idx, nt, y, ldy);
        return;
    }
    const __m512i levels = level_table();
    tiles_configure();
    for (int r0 = 0; r0 < nr; r0 += 16 * AMX_PANELS) {
        int rc = nr - r0 < 16 * AMX_PANELS ? nr - r0 : 16 * AMX_PANELS;
        for (int t0 = 0; t0 < nt; t0 += 16 * AMX_GROUPS) {
            int ntc = nt - t0 < 16 * AMX_GROUPS ? nt - t0 : 16 * AMX_GROUPS;
            chunk_mxfp4(n / QK_MXFP4, (const char *)w + (size_t)r0 * w_stride, w_stride, rc, a, a_stride, idx, t0, ntc,
                        y + r0, ldy, levels);
        }
    }
    _tile_release();
}
#endif
