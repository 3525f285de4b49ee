/* test_quant_types.c - the ggml block types of quant_legacy.h, quant_k.h and
 * quant_mxfp4.h, block by block.
 *
 * Without arguments: unit tests.
 *   - each type's reference dot product against a double-precision dot of
 *     the dequantized weights with the dequantized activation, on random
 *     blocks (odd block counts), and a swapped-nibble and a shifted-scale
 *     copy of the weights must fail that same check;
 *   - MXFP4's levels and E8M0 scales against an independent decoding of
 *     E2M1 bits (sign, 2-bit exponent, 1-bit mantissa) and ldexp;
 *   - the quantizers: dequantize(quantize(x)) is close to x, and an all-zero
 *     block stays zero.
 * With arguments it is the helper tests/py/test_quant_types.py drives:
 *   test_quant_types dequant TYPE N   stdin: the bytes of N values of TYPE
 *                                     (a moe dtype id); stdout: N float32
 *   test_quant_types quantize TYPE N  stdin: N float32; stdout: the bytes
 *   test_quant_types dtypes           stdout: dtype.c's table, one type a line:
 *                                     id name block block_bytes row_group plain
 * The Python side compares with ggml's own values (../shared/gguf). */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "quant_k.h"
#include "quant_legacy.h"
#include "quant_mxfp4.h"
#include "test_util.h"
#include "util.h"

/* ------------------------------------------------------------ the types */

typedef void (*deq_fn)(const void *, float *, int);
typedef void (*qnt_fn)(const float *, void *, int);
typedef float (*dot_fn)(const void *, const void *, int);

static void deq_q8_0(const void *x, float *y, int n) { dequantize_row(DT_Q8_0, x, y, n); }
static void deq_q4_0(const void *x, float *y, int n) { dequantize_row(DT_Q4_0, x, y, n); }
static void deq_q4_K(const void *x, float *y, int n) { dequantize_row(DT_Q4_K, x, y, n); }

typedef struct {
    int id;                 /* moe dtype id */
    const char *name;
    int block, bytes;
    act_type act;
    deq_fn dequantize;
    dot_fn dot;
    qnt_fn quantize;        /* NULL: no quantizer */
    int scale_at;           /* a byte of a block's scales (the mutation test shifts it) */
    int codes_at, codes_len; /* where its (low) code bytes are (the mutation test swaps their nibbles) */
    float max_rel_err;      /* quantization round trip: rms error / rms value on Gaussian data */
} qtype;

static const qtype TYPES[] = {
    {16, "Q8_0", 32, 34, ACT_Q8A, deq_q8_0, dot_q8_0_q8a_ref, quantize_row_q8_0, 1, 2, 32, 0.008f},
    {17, "Q4_0", 32, 18, ACT_Q8A, deq_q4_0, dot_q4_0_q8a_ref, quantize_row_q4_0, 1, 2, 16, 0.1f},
    {18, "Q4_K", 256, 144, ACT_Q8A, deq_q4_K, dot_q4_K_q8a_ref, quantize_row_q4_K, 4, 16, 128, 0.09f},
    {21, "Q4_1", 32, 20, ACT_Q8A, dequantize_row_q4_1, dot_q4_1_q8a_ref, quantize_row_q4_1, 1, 4, 16, 0.1f},
    {22, "Q5_0", 32, 22, ACT_Q8A, dequantize_row_q5_0, dot_q5_0_q8a_ref, quantize_row_q5_0, 1, 6, 16, 0.055f},
    {23, "Q5_1", 32, 24, ACT_Q8A, dequantize_row_q5_1, dot_q5_1_q8a_ref, quantize_row_q5_1, 1, 8, 16, 0.05f},
    {24, "Q2_K", 256, 84, ACT_Q8_K, dequantize_row_q2_K, dot_q2_K_q8_K_ref, quantize_row_q2_K, 0, 16, 64, 0.33f},
    {25, "Q3_K", 256, 110, ACT_Q8_K, dequantize_row_q3_K, dot_q3_K_q8_K_ref, quantize_row_q3_K, 96, 32, 64, 0.16f},
    {26, "Q5_K", 256, 176, ACT_Q8A, dequantize_row_q5_K, dot_q5_K_q8a_ref, quantize_row_q5_K, 4, 48, 128, 0.045f},
    {27, "Q6_K", 256, 210, ACT_Q8A, dequantize_row_q6_K, dot_q6_K_q8a_ref, quantize_row_q6_K, 192, 0, 128, 0.022f},
    {28, "IQ4_NL", 32, 18, ACT_Q8A, dequantize_row_iq4_nl, dot_iq4_nl_q8a_ref, quantize_row_iq4_nl, 1, 2, 16, 0.1f},
    {29, "IQ4_XS", 256, 136, ACT_Q8_K, dequantize_row_iq4_xs, dot_iq4_xs_q8_K_ref, quantize_row_iq4_xs, 4, 8, 128, 0.1f},
    /* not a dtype: Q4_K with ggml's reference quantizer (the helper's "quantize 118") */
    {118, "Q4_K(ggml)", 256, 144, ACT_Q8A, deq_q4_K, dot_q4_K_q8a_ref, quantize_row_q4_K_ggml, 4, 16, 128, 0.09f},
    {30, "MXFP4", 32, 17, ACT_F32, dequantize_row_mxfp4, dot_mxfp4_f32_ref, quantize_row_mxfp4, 0, 1, 16, 0.14f},
};
#define N_TYPES ((int)(sizeof TYPES / sizeof TYPES[0]))

static const qtype *type_by_id(int id) {
    for (int i = 0; i < N_TYPES; i++)
        if (TYPES[i].id == id) return &TYPES[i];
    return NULL;
}

/* ------------------------------------------------------------ random data */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rand32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float frand(void) { return (float)(rand32() & 0xFFFFFF) / 8388608.0f - 1.0f; } /* [-1, 1) */
static float grand(void) { return frand() + frand() + frand(); }

/* Random blocks of type t: random bytes, then every f16 field set to a
 * plausible scale (random bytes would be NaN or huge) and MXFP4's exponent
 * kept near 2^0. */
static void random_blocks(const qtype *t, uint8_t *w, int nblocks) {
    for (int b = 0; b < nblocks; b++) {
        uint8_t *p = w + (size_t)b * (size_t)t->bytes;
        for (int i = 0; i < t->bytes; i++) p[i] = (uint8_t)rand32();
        uint16_t h1 = f32_to_f16(0.01f + 0.05f * fabsf(frand())), h2 = f32_to_f16(0.01f * fabsf(frand()));
        switch (t->id) {
        case 16: case 17: case 22: case 28: memcpy(p, &h1, 2); break;                /* d first */
        case 21: case 23: memcpy(p, &h1, 2); h2 = f32_to_f16(-0.3f * fabsf(frand())); memcpy(p + 2, &h2, 2); break;
        case 18: case 118: case 26: memcpy(p, &h1, 2); memcpy(p + 2, &h2, 2); break;           /* d, dmin */
        case 29: memcpy(p, &h1, 2); break;
        case 24: memcpy(p + 80, &h1, 2); memcpy(p + 82, &h2, 2); break;              /* scales, qs, d, dmin */
        case 25: memcpy(p + 108, &h1, 2); break;                                     /* ..., d last */
        case 27: memcpy(p + 208, &h1, 2); break;
        case 30: p[0] = (uint8_t)(120 + rand32() % 12); break;
        }
    }
}

/* ------------------------------------------------------------ dot products */

/* An activation row of n values in the type t pairs with, and its exact
 * values as doubles (what the int8 codes times their scale stand for). */
static void make_act(const qtype *t, int n, void *act, double *exact) {
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) x[i] = grand();
    if (t->act == ACT_F32) {
        memcpy(act, x, sizeof(float) * (size_t)n);
        for (int i = 0; i < n; i++) exact[i] = x[i];
    } else if (t->act == ACT_Q8A) {
        quantize_row_q8a(x, act, n);
        const block_q8a *a = act;
        for (int i = 0; i < n; i++) exact[i] = (double)a[i / 32].d * a[i / 32].qs[i % 32];
    } else {
        quantize_row_q8_K(x, act, n);
        const block_q8_K *a = act;
        for (int i = 0; i < n; i++) exact[i] = (double)a[i / QK_K].d * a[i / QK_K].qs[i % QK_K];
    }
    free(x);
}

/* |dot(w) - sum of dequantize(ref_w) * act| within float rounding of the
 * accumulated products. */
static int dot_agrees(const qtype *t, const uint8_t *w, const uint8_t *ref_w, const void *act, const double *exact,
                      int n, double *err, double *tol) {
    float *deq = malloc(sizeof(float) * (size_t)n);
    t->dequantize(ref_w, deq, n);
    double want = 0, mag = 0;
    for (int i = 0; i < n; i++) {
        want += (double)deq[i] * exact[i];
        mag += fabs((double)deq[i] * exact[i]);
    }
    free(deq);
    double got = t->dot(w, act, n);
    *err = fabs(got - want);
    *tol = 1e-6 * mag + 1e-30;
    return *err <= *tol;
}

static void test_dots(void) {
    static const int counts[] = {1, 3, 7, 9};
    for (int ti = 0; ti < N_TYPES; ti++) {
        const qtype *t = &TYPES[ti];
        for (int ci = 0; ci < 4; ci++) {
            int nb = counts[ci] * (t->block == 32 ? 3 : 1), n = nb * t->block; /* odd block counts */
            uint8_t *w = malloc((size_t)nb * (size_t)t->bytes), *bad = malloc((size_t)nb * (size_t)t->bytes);
            void *act = malloc(sizeof(float) * (size_t)n + sizeof(block_q8_K) * (size_t)(n / QK_K + 1));
            double *exact = malloc(sizeof(double) * (size_t)n), err, tol;
            random_blocks(t, w, nb);
            make_act(t, n, act, exact);
            CHECK(dot_agrees(t, w, w, act, exact, n, &err, &tol), "%s, %d blocks: dot off by %.3g (tol %.3g)", t->name,
                  nb, err, tol);

            /* mutations must be caught: the nibbles of every code byte
             * swapped (a kernel reading them in the wrong
             * order), one scale byte of the last block shifted */
            memcpy(bad, w, (size_t)nb * (size_t)t->bytes);
            for (int b = 0; b < nb; b++)
                for (int k = t->codes_at; k < t->codes_at + t->codes_len; k++) {
                    uint8_t *c = bad + (size_t)b * (size_t)t->bytes + k;
                    *c = (uint8_t)(*c << 4 | *c >> 4);
                }
            CHECK(!dot_agrees(t, bad, w, act, exact, n, &err, &tol), "%s: swapped nibbles went unnoticed (%d blocks: %.3g vs %.3g)", t->name, nb, err, tol);
            memcpy(bad, w, (size_t)nb * (size_t)t->bytes);
            uint8_t *last = bad + (size_t)(nb - 1) * (size_t)t->bytes;
            last[t->scale_at] = (uint8_t)(last[t->scale_at] + (t->id == 30 ? 1 : 8)); /* MXFP4: exponent + 1 */
            CHECK(!dot_agrees(t, bad, w, act, exact, n, &err, &tol), "%s: a shifted scale went unnoticed", t->name);
            free(w);
            free(bad);
            free(act);
            free(exact);
        }
    }
}

/* ------------------------------------------------------------ MXFP4 */

/* E2M1 decoded from its bits: sign, exponent (bias 1), one mantissa bit;
 * exponent 0 is subnormal (m * 0.5). */
static double e2m1(int code) {
    int s = code >> 3 & 1, e = code >> 1 & 3, m = code & 1;
    double v = e == 0 ? 0.5 * m : (1.0 + 0.5 * m) * ldexp(1.0, e - 1);
    return s ? -v : v;
}

static void test_mxfp4_levels(void) {
    for (int e = 0; e < 256; e++)
        CHECK(mxfp4_half_scale((uint8_t)e) == (float)ldexp(1.0, e - 128), "half scale of e=%d", e);
    block_mxfp4 b;
    float y[32];
    static const int exps[] = {0, 1, 2, 100, 127, 128, 200, 250}; /* 2^(254-127) * 6 would overflow float */
    for (int k = 0; k < 8; k++) {
        b.e = (uint8_t)exps[k];
        for (int j = 0; j < 16; j++) b.qs[j] = (uint8_t)(j | (15 - j) << 4);
        dequantize_row_mxfp4(&b, y, 32);
        for (int j = 0; j < 16; j++) {
            double s = ldexp(1.0, exps[k] - 127); /* E8M0: 2^(e - 127) */
            CHECK((double)y[j] == e2m1(j) * s, "MXFP4 e=%d code %d: %g vs %g", exps[k], j, y[j], e2m1(j) * s);
            CHECK((double)y[j + 16] == e2m1(15 - j) * s, "MXFP4 e=%d high code %d", exps[k], 15 - j);
        }
    }
}

/* ------------------------------------------------------------ quantizers */

static void test_quantizers(void) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        const qtype *t = &TYPES[ti];
        if (!t->quantize) continue;
        int nb = 5 * (t->block == 32 ? 8 : 1), n = nb * t->block;
        float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
        uint8_t *q = malloc((size_t)nb * (size_t)t->bytes);
        for (int i = 0; i < n; i++) x[i] = 0.02f * grand();
        t->quantize(x, q, n);
        t->dequantize(q, y, n);
        double e2 = 0, x2 = 0;
        for (int i = 0; i < n; i++) {
            e2 += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
            x2 += (double)x[i] * x[i];
        }
        CHECK(sqrt(e2 / x2) <= t->max_rel_err, "%s round trip: relative rms error %.4f > %.4f", t->name, sqrt(e2 / x2),
              (double)t->max_rel_err);
        memset(x, 0, sizeof(float) * (size_t)t->block); /* an all-zero block stays zero, no NaN */
        t->quantize(x, q, t->block);
        t->dequantize(q, y, t->block);
        int zero = 1;
        for (int i = 0; i < t->block; i++) zero &= y[i] == 0.0f;
        CHECK(zero, "%s: an all-zero block does not dequantize to zeros", t->name);
        free(x);
        free(y);
        free(q);
    }
}

/* ------------------------------------------------------------ helper mode */

static int helper(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "dtypes")) { /* dtype.c's table, for tests/py/test_dtype_table.py */
        for (int id = 0; id < DT_COUNT; id++) {
            const dtype_traits *d = dtype_info(id);
            if (d) printf("%d %s %d %d %d %d\n", id, d->name, d->block, d->block_bytes, d->row_group, (int)d->plain);
        }
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: %s dequant|quantize TYPE N, or dtypes\n", argv[0]);
        return 2;
    }
    const qtype *t = type_by_id(atoi(argv[2]));
    long n = atol(argv[3]);
    if (!t || n <= 0 || n % t->block || n > (1L << 28)) {
        fprintf(stderr, "bad type %s or count %s\n", argv[2], argv[3]);
        return 2;
    }
    size_t nbytes = (size_t)(n / t->block) * (size_t)t->bytes;
    float *f = malloc(sizeof(float) * (size_t)n);
    uint8_t *q = malloc(nbytes);
    int rc = 0;
    if (!strcmp(argv[1], "dequant")) {
        if (fread(q, 1, nbytes, stdin) != nbytes) rc = fprintf(stderr, "short input\n") > 0 ? 1 : 1;
        else {
            t->dequantize(q, f, (int)n);
            fwrite(f, sizeof(float), (size_t)n, stdout);
        }
    } else if (!strcmp(argv[1], "quantize") && t->quantize) {
        if (fread(f, sizeof(float), (size_t)n, stdin) != (size_t)n) rc = fprintf(stderr, "short input\n") > 0 ? 1 : 1;
        else {
            t->quantize(f, q, (int)n);
            fwrite(q, 1, nbytes, stdout);
        }
    } else {
        fprintf(stderr, "%s: no such mode for %s\n", argv[1], t->name);
        rc = 2;
    }
    free(f);
    free(q);
    return rc;
}

/* dtype_find_nonfinite: the first NaN or Inf of each float type, by its bits
 * (F16 0x7c00 Inf / 0x7e00 NaN, BF16 0x7f80 / 0xff80 -Inf, F32 via float), past
 * its 1024-value chunks; the largest finite values are not flagged. */
static void test_find_nonfinite(void) {
    enum { N = 3000 };
    static float f[N];
    static uint16_t h[N], b[N];
    for (int i = 0; i < N; i++) {
        f[i] = i % 2 ? 3.4e38f : -1.0f; /* FLT_MAX-ish stays finite */
        h[i] = i % 2 ? 0x7bff : 0x3c00; /* f16 65504 and 1 */
        b[i] = i % 2 ? 0x7f7f : 0xbf80; /* bf16 largest finite and -1 */
    }
    CHECK(dtype_find_nonfinite(DT_F32, f, N) == -1, "f32: all finite");
    CHECK(dtype_find_nonfinite(DT_F16, h, N) == -1, "f16: all finite");
    CHECK(dtype_find_nonfinite(DT_BF16, b, N) == -1, "bf16: all finite");
    f[2500] = NAN;
    f[2900] = INFINITY;
    h[1024] = 0x7e00;
    b[2047] = 0xff80;
    CHECK(dtype_find_nonfinite(DT_F32, f, N) == 2500, "f32: NaN at 2500");
    CHECK(dtype_find_nonfinite(DT_F32, f, 2500) == -1, "f32: n stops before it");
    CHECK(dtype_find_nonfinite(DT_F16, h, N) == 1024, "f16: NaN at 1024");
    CHECK(dtype_find_nonfinite(DT_BF16, b, N) == 2047, "bf16: -Inf at 2047");
    h[3] = 0xfc00;
    CHECK(dtype_find_nonfinite(DT_F16, h, N) == 3, "f16: -Inf at 3");
    CHECK(dtype_find_nonfinite(DT_Q8_0, f, 32) == -1, "a quantized type is not scanned");
}

/* Every quantizer (weights, activations) on values at the edges of float:
 * NaN, +-Inf, +-FLT_MAX, huge, tiny and denormal, alone or among normal
 * values. Converting such a float to an integer is undefined behaviour in
 * C (clang's -fsanitize=float-cast-overflow stops the test: CMakeLists.txt
 * turns it on for clang's sanitizer and fuzz builds); defined code leaves a
 * block with a non-finite value or a scale that overflows as some finite
 * or zero block, and a finite block of ordinary values round trips. */
static void test_quantize_extremes(void) {
    const float edge[] = {NAN, INFINITY, -INFINITY, FLT_MAX, -FLT_MAX, 1e30f, -3e38f, 1e-38f, 1e-45f, -1e-45f};
    enum { N = 512, NE = sizeof edge / sizeof edge[0] };
    static float x[N], back[N];
    static uint8_t q[N * 8];
    int tried = 0;
    for (int t = 0; t < DT_COUNT; t++) {
        const dtype_traits *d = dtype_info(t);
        if (!d || !d->quantize || !d->dequantize || d->is_float || N % d->block) continue;
        for (int e = 0; e < NE; e++) {
            /* block-sized runs: one edge value among normal ones, all edge values, the edge value and zeros */
            for (int i = 0; i < N; i++) x[i] = sinf(0.37f * (float)i);
            for (int i = 0; i < N; i += 97) x[i] = edge[e];
            for (int i = N / 2; i < N / 2 + d->block && i < N; i++) x[i] = edge[e];
            for (int i = N - d->block; i < N; i++) x[i] = i == N - 1 ? edge[e] : 0.0f;
            d->quantize(x, q, N);
            d->dequantize(q, back, N);
            tried++;
        }
        /* after all that, ordinary values still round trip */
        for (int i = 0; i < N; i++) x[i] = sinf(0.37f * (float)i);
        d->quantize(x, q, N);
        d->dequantize(q, back, N);
        double err = 0;
        for (int i = 0; i < N; i++) { /* a NaN error counts as the largest (fmax would skip it) */
            double diff = fabs((double)back[i] - (double)x[i]);
            if (!(diff <= err)) err = diff;
        }
        CHECK(err < 0.35, "%s: ordinary values round trip (max error %g)", d->name, err);
    }
    for (int a = ACT_Q8A; a <= ACT_Q8_K; a++) {
        const act_traits *at = act_info((act_type)a);
        for (int e = 0; e < NE; e++) {
            for (int i = 0; i < N; i++) x[i] = i % 7 == 3 ? edge[e] : sinf(0.37f * (float)i);
            at->quantize(x, q, N);
            tried++;
        }
    }
    CHECK(tried >= 10 * NE, "the quantizers ran (%d of them x edge values)", tried);
}

int main(int argc, char **argv) {
    if (argc > 1) return helper(argc, argv);
    test_dots();
    test_mxfp4_levels();
    test_quantizers();
    test_find_nonfinite();
    test_quantize_extremes();
    return test_summary("test_quant_types");
}
