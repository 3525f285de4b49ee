/* test_kernels.c - the kernels, checked three ways:
 *   1. the scalar reference set against float64 arithmetic on the exact
 *      stored values (dequantized weights x dequantized activations);
 *   2. every other kernel set this CPU runs against the scalar set, per
 *      weight dtype, on odd sizes, row counts and token counts (gathered
 *      rows included), with a per-type error budget;
 *   3. quantization error budgets per type, the all-zero block, and exact
 *      half-precision conversions;
 *   4. the MXFP4 tiles (the AMX one splits activations into bf16 parts) on
 *      rows with one nonzero weight, where every set must be bit-exact,
 *      and against float64 within a bound derived from float rounding;
 * and before all, that every row of the dtype table is complete. Types
 * come from the table, so a new row is checked without editing this file. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "matmul.h"
#include "quant.h"
#include "quant_mxfp4.h"
#include "test_util.h"
#include "util.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / 8388608.0) - 1.0f;
}
static float grand(void) { /* roughly normal */
    return (frand() + frand() + frand() + frand()) * 0.8660254f;
}

/* Every weight type of the table (dtype.c), so a new row is tested here
 * without a line of this file changing. */
static moe_dtype TYPES[DT_COUNT];
static int N_TYPES;
static void list_weight_types(void) {
    for (int t = 0; t < DT_COUNT; t++)
        if (dtype_info(t) && (dtype_info(t)->is_float || dtype_info(t)->is_quant)) TYPES[N_TYPES++] = (moe_dtype)t;
}

/* 0. the table itself: every row complete and consistent */
static void test_dtype_table(void) {
    int rows = 0;
    for (int t = 0; t < DT_COUNT; t++) {
        const dtype_traits *d = dtype_info(t);
        if (!d) continue;
        rows++;
        const char *n = d->name;
        CHECK(dtype_from_name(n) == t, "%s: dtype_from_name finds it", n);
        CHECK(d->block >= 1 && d->block_bytes >= 1 && d->row_group >= 1, "%s: block sizes", n);
        CHECK(!(d->is_float && d->is_quant), "%s: float or quantized, not both", n);
        const dtype_traits *p = dtype_info(d->plain);
        CHECK(p && p->block == d->block && p->block_bytes == d->block_bytes && p->act == d->act,
              "%s: its plain twin stores the same blocks", n);
        if (!d->is_float && !d->is_quant) continue;
        if (d->row_group > 1) {
            CHECK((int)d->plain != t && p->row_group == 1 && p->dot, "%s: interleaved, with a plain twin that has functions", n);
            CHECK(!d->dequantize && !d->quantize && !d->dot, "%s: interleaved types use the twin's functions", n);
        } else {
            CHECK((int)d->plain == t && d->dequantize && d->dot, "%s: a weight type dequantizes and has a dot", n);
        }
        CHECK(d->block % act_info(d->act)->block == 0 || d->act == ACT_F32, "%s: whole activation blocks", n);
    }
    CHECK(dtype_info(-1) == NULL && dtype_info(DT_COUNT) == NULL && dtype_info(5) == NULL, "unknown ids have no row");
    CHECK(dtype_from_name("q4_k") == DT_Q4_K && dtype_from_name("Q4_K_") == -1 && dtype_from_name("") == -1,
          "names are matched whole, case-insensitively");
    CHECK(rows >= 10 && N_TYPES >= 8, "the table has %d rows, %d weight types", rows, N_TYPES);
}

/* A random matrix stored in dtype, plus the exact floats it holds. */
typedef struct {
    wmat w;
    void *data;
    float *exact;
} test_mat;

static test_mat make_mat(moe_dtype dt, int rows, int cols) {
    test_mat m;
    size_t rb = dtype_row_bytes(dt, (uint64_t)cols);
    m.data = malloc(rb * (size_t)rows);
    m.exact = malloc(sizeof(float) * (size_t)rows * cols);
    float *src = malloc(sizeof(float) * (size_t)rows * cols);
    for (int r = 0; r < rows; r++) {
        float *row = src + (size_t)r * cols;
        for (int c = 0; c < cols; c++) row[c] = grand() * (1 + (r % 3)); /* rows of different scales */
        if (r == 1 && rows > 2)
            for (int c = 0; c < cols && c < 32; c++) row[c] = 0; /* an all-zero first block */
    }
    quantize_rows(dt, src, m.data, rows, cols);
    for (int r = 0; r < rows; r++) dequantize_row_at(dt, m.data, rb, (size_t)r, m.exact + (size_t)r * cols, cols);
    free(src);
    m.w = (wmat){m.data, dt, rows, cols, 1, rb, (size_t)rows * rb};
    return m;
}

static void free_mat(test_mat *m) {
    free(m->data);
    free(m->exact);
}

/* Activation rows exactly as the kernels see them (after act quantization). */
static void exact_act(moe_dtype wt, const float *x, float *out, int n, int cols) {
    act_type at = dtype_info(wt)->act;
    size_t rb = act_row_bytes(at, cols);
    void *q = malloc(rb);
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * cols;
        float *o = out + (size_t)t * cols;
        if (at == ACT_F32) {
            memcpy(o, xr, sizeof(float) * (size_t)cols);
        } else if (at == ACT_Q8A) {
            quantize_row_q8a(xr, q, cols);
            const block_q8a *b = q;
            for (int i = 0; i < cols; i++) o[i] = b[i / 32].d * b[i / 32].qs[i % 32];
        } else {
            quantize_row_q8_K(xr, q, cols);
            const block_q8_K *b = q;
            for (int i = 0; i < cols; i++) o[i] = b[i / QK_K].d * b[i / QK_K].qs[i % QK_K];
        }
    }
    free(q);
}

/* 1. scalar kernels == float64 on the stored values */
static void test_scalar_vs_f64(void) {
    static const int cols_f[] = {1, 3, 31, 33, 257, 1000}, cols_q[] = {32, 96, 256, 768};
    for (int ti = 0; ti < N_TYPES; ti++) {
        moe_dtype dt = TYPES[ti];
        int is_q = dtype_info(dt)->is_quant;
        for (int ci = 0; ci < (is_q ? 4 : 6); ci++) {
            int cols = is_q ? cols_q[ci] : cols_f[ci];
            if (cols % dtype_info(dt)->block) continue;
            int rows = dtype_info(dt)->row_group > 1 ? 16 : 7, n = 3;
            test_mat m = make_mat(dt, rows, cols);
            float *x = malloc(sizeof(float) * n * cols), *xe = malloc(sizeof(float) * n * cols);
            for (int i = 0; i < n * cols; i++) x[i] = grand();
            exact_act(dt, x, xe, n, cols);
            void *scratch = malloc(act_scratch_bytes(n, cols));
            act_rows a;
            act_init(&a, x, n, cols, scratch);
            float y[16 * 3];
            matmul_serial(kernels_scalar(), y, &m.w, &a, NULL, n);
            for (int t = 0; t < n; t++)
                for (int r = 0; r < rows; r++) {
                    double ref = 0, mag = 0;
                    for (int c = 0; c < cols; c++) {
                        double p = (double)m.exact[(size_t)r * cols + c] * xe[(size_t)t * cols + c];
                        ref += p;
                        mag += fabs(p);
                    }
                    double tol = 2e-6 * mag * (1 + sqrt((double)cols)) + 1e-12;
                    CHECK(fabs(y[t * rows + r] - ref) <= tol, "scalar %s cols %d [%d,%d]: %.8g vs %.8g", dtype_name(dt),
                          cols, t, r, y[t * rows + r], ref);
                }
            free(x);
            free(xe);
            free(scratch);
            free_mat(&m);
        }
    }
}

/* MOE_EXPECT_KERNELS=avx512,avx2 (.ci/run sets it from /proc/cpuinfo): each
 * named set must be available here, so a detection or build slip that leaves
 * a SIMD set out fails the test instead of testing only the scalar one. */
static void test_expected_sets(void) {
    const char *want = getenv("MOE_EXPECT_KERNELS");
    if (!want || !*want) return;
    printf("expected kernel sets (MOE_EXPECT_KERNELS): %s\n", want);
    const kernel_set *sets[8];
    int n_sets = kernels_available(sets, 8);
    char list[256];
    snprintf(list, sizeof list, "%s", want);
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        int found = 0;
        for (int s = 0; s < n_sets; s++) found |= !strcmp(sets[s]->name, name);
        CHECK(found, "MOE_EXPECT_KERNELS names %s, which this build and CPU do not run", name);
    }
}

/* A set's rows x cols matrix of type dt times n tokens against the scalar
 * set's; what names the case in a failure. */
static void check_mat(const kernel_set *set, const test_mat *mp, int n, const char *what) {
    const test_mat m = *mp;
    moe_dtype dt = m.w.dtype;
    int rows = m.w.rows, cols = m.w.cols;
    float *x = malloc(sizeof(float) * n * cols), *y0 = malloc(sizeof(float) * n * rows),
          *y1 = malloc(sizeof(float) * n * rows);
    void *scratch = malloc(act_scratch_bytes(n, cols));
    for (int i = 0; i < n * cols; i++) x[i] = grand();
    int idx[16];
    for (int t = 0; t < n; t++) idx[t] = t;
    act_rows a;
    act_init(&a, x, n, cols, scratch);
    matmul_serial(kernels_scalar(), y0, &m.w, &a, idx, n);
    act_init(&a, x, n, cols, scratch);
    matmul_serial(set, y1, &m.w, &a, idx, n);
    int bad = -1;
    for (int i = 0; i < n * rows && bad < 0; i++)
        if (fabs(y0[i] - y1[i]) > 1e-5 * sqrt((double)cols) * (1 + fabs(y0[i])) * 2) bad = i;
    CHECK(bad < 0, "%s %s %s: rows %d cols %d n %d: [%d] %.8g vs scalar %.8g", set->name, dtype_name(dt), what, rows,
          cols, n, bad, bad < 0 ? 0 : y1[bad], bad < 0 ? 0 : y0[bad]);
    free(x);
    free(y0);
    free(y1);
    free(scratch);
}

static void check_shape(const kernel_set *set, moe_dtype dt, int rows, int cols, int n, const char *what) {
    test_mat m = make_mat(dt, rows, cols);
    check_mat(set, &m, n, what);
    free_mat(&m);
}

/* A set against the scalar one on rows past 32768 columns, for every type
 * it has a tile for: one token (decode: the AVX-512 K-quant decode lays a
 * token of at most 8192 values out whole and hands longer rows to the AVX2
 * tile), 4 (a tile's token group) and 16 (the token-lane prefill; both lay
 * their tokens out a chunk of the row at a time). The main test stops at 8192. */
static void test_long_rows(const kernel_set *set) {
    static const int cols_l[] = {32768, 33280};
    static const int toks[] = {1, 4, 16};
    for (int ti = 0; ti < N_TYPES; ti++) {
        moe_dtype dt = TYPES[ti];
        if (!set->tile[dt]) continue;
        for (int ci = 0; ci < 2; ci++)
            for (int k = 0; k < 3; k++)
                if (cols_l[ci] % dtype_info(dt)->block == 0) check_shape(set, dt, 16, cols_l[ci], toks[k], "long rows");
    }
}

/* One token on many rows, as a model's output matrix: the decode tiles
 * reduce rows in groups (eight for the AVX-512 K-quants) with a tail, and
 * prefetch ahead into the rows that follow. 8197 rows as wide as a MoE
 * model's experts (768: three K-quant super-blocks, the shortest rows the
 * decode tiles see); two tokens take the other path over the same rows. */
static void test_many_rows(const kernel_set *set) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        moe_dtype dt = TYPES[ti];
        if (!set->tile[dt] || !dtype_info(dt)->is_quant || dtype_info(dt)->row_group > 1 || 768 % dtype_info(dt)->block)
            continue;
        test_mat m = make_mat(dt, 8197, 768);
        for (int n = 1; n <= 2; n++) check_mat(set, &m, n, "many rows");
        free_mat(&m);
    }
}

/* Tiles on a thread with a small stack: a program's own threads may have
 * 128 KB (musl's default), and a tile runs on whichever thread calls
 * moe_eval. Rows of 8192 values (the longest the stack-laid-out paths take)
 * for one token (decode), 8 (a K-quant token group) and 16 (the token-lane
 * prefill); the AVX-512 prefill tiles laid out a whole row of 16 tokens on
 * the stack (over 200 KB) and crashed here. */
#define SMALL_STACK (128 * 1024)
typedef struct {
    const kernel_set *set;
    const test_mat *m;
} stack_case;
static void *run_stack_case(void *arg) {
    const stack_case *c = arg;
    static const int toks[] = {1, 8, 16};
    for (int k = 0; k < 3; k++) check_mat(c->set, c->m, toks[k], "128 KB thread stack");
    return NULL;
}
static void test_small_stack(const kernel_set *set) {
    for (int ti = 0; ti < N_TYPES; ti++) {
        moe_dtype dt = TYPES[ti];
        if (!set->tile[dt] || 8192 % dtype_info(dt)->block) continue;
        test_mat m = make_mat(dt, 16, 8192);
        stack_case c = {set, &m};
        pthread_attr_t attr;
        pthread_t th;
        int ok = !pthread_attr_init(&attr) && !pthread_attr_setstacksize(&attr, SMALL_STACK) &&
                 !pthread_create(&th, &attr, run_stack_case, &c);
        CHECK(ok, "a thread with a %d KB stack starts", SMALL_STACK / 1024);
        if (ok) pthread_join(th, NULL);
        pthread_attr_destroy(&attr);
        free_mat(&m);
    }
}

/* 2. every kernel set == the scalar set */
static void test_sets_vs_scalar(void) {
    const kernel_set *sets[8];
    int n_sets = kernels_available(sets, 8);
    printf("kernel sets on this CPU:");
    for (int s = 0; s < n_sets; s++) printf(" %s", sets[s]->name);
    printf(" (dispatch picks %s)\n", kernels_get()->name);
    static const int cols_f[] = {1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257, 1024, 4099};
    static const int cols_q[] = {32, 64, 96, 160, 256, 512, 768, 2816, 4096, 8192};
    /* (rows, tokens) pairs; one token on 8k rows takes the decode paths,
     * 16 or more tokens on 4k rows the token-lane prefill path (the
     * K-quants' also a last group of 6 to 15 tokens in part-empty lanes: 6,
     * 9, 13, 22), 2 or 3 tokens on 4 or more rows the float tiles' short
     * token groups; one token on 40, 57 and 64 rows every part count of the
     * x86 decode kernels (3 parts, 2, 1, then single rows; the _R16 types'
     * 3 parts of 16-row groups and a group left over) */
    static const int rows_l[] = {1, 2, 3, 5, 8, 17, 16, 40, 32, 48, 16, 12, 6, 8, 7, 4, 8, 57, 64};
    static const int toks_l[] = {1, 2, 3, 4, 5, 9, 1, 1, 9, 13, 16, 33, 17, 2, 3, 6, 22, 1, 1};
    for (int s = 1; s < n_sets; s++)
        for (int ti = 0; ti < N_TYPES; ti++) {
            moe_dtype dt = TYPES[ti];
            if (!sets[s]->tile[dt]) { /* matmul falls back to the scalar tile */
                printf("  %s: no %s kernel (scalar fallback)\n", sets[s]->name, dtype_name(dt));
                continue;
            }
            int is_q = dtype_info(dt)->is_quant;
            int nc = is_q ? (int)(sizeof cols_q / sizeof *cols_q) : (int)(sizeof cols_f / sizeof *cols_f);
            for (int ci = 0; ci < nc; ci++) {
                int cols = is_q ? cols_q[ci] : cols_f[ci];
                if (cols % dtype_info(dt)->block) continue;
                for (int ri = 0; ri < (int)(sizeof rows_l / sizeof *rows_l); ri++) {
                    int rows = rows_l[ri], n = toks_l[ri];
                    if (rows % dtype_info(dt)->row_group) continue;
                    test_mat m = make_mat(dt, rows, cols);
                    float *x = malloc(sizeof(float) * n * cols);
                    for (int i = 0; i < n * cols; i++) x[i] = grand();
                    void *scratch = malloc(act_scratch_bytes(n, cols));
                    int idx[64];
                    for (int t = 0; t < n; t++) idx[t] = (t * 5 + 2) % n; /* a gathered, permuted row list */
                    float *y0 = malloc(sizeof(float) * n * rows), *y1 = malloc(sizeof(float) * n * rows);
                    act_rows a;
                    act_init(&a, x, n, cols, scratch);
                    matmul_serial(kernels_scalar(), y0, &m.w, &a, idx, n);
                    act_init(&a, x, n, cols, scratch);
                    matmul_serial(sets[s], y1, &m.w, &a, idx, n);
                    for (int i = 0; i < n * rows; i++) {
                        /* budget: float reassociation over cols terms of size ~|w||x| */
                        double tol = 1e-5 * sqrt((double)cols) * (1 + fabs(y0[i])) * (dt == DT_F32 ? 1 : 2);
                        if (fabs(y0[i] - y1[i]) > tol) {
                            CHECK(0, "%s %s rows %d cols %d n %d: [%d] %.8g vs scalar %.8g", sets[s]->name,
                                  dtype_name(dt), rows, cols, n, i, y1[i], y0[i]);
                            break;
                        }
                    }
                    g_checks++;
                    free(x);
                    free(scratch);
                    free(y0);
                    free(y1);
                    free_mat(&m);
                }
            }
            /* the f32 helpers used by attention */
            for (int len = 1; len < 300; len += 7) {
                float a[300], b[300], y0[300], y1[300];
                for (int i = 0; i < len; i++) { a[i] = grand(); b[i] = grand(); y0[i] = y1[i] = grand(); }
                CHECK_NEAR(sets[s]->dot_f32(a, b, len), kernels_scalar()->dot_f32(a, b, len), 1e-4 * sqrt(len), "dot_f32");
                sets[s]->axpy_f32(y1, 0.37f, a, len);
                kernels_scalar()->axpy_f32(y0, 0.37f, a, len);
                for (int i = 0; i < len; i++) CHECK_NEAR(y1[i], y0[i], 1e-6, "axpy_f32");
                uint16_t h[300];
                for (int i = 0; i < len; i++) { h[i] = f32_to_f16(a[i]); y0[i] = y1[i] = grand(); }
                sets[s]->axpy_f16(y1, -0.81f, h, len);
                kernels_scalar()->axpy_f16(y0, -0.81f, h, len);
                for (int i = 0; i < len; i++) CHECK_NEAR(y1[i], y0[i], 1e-6, "axpy_f16");
            }
        }
}

/* Every set's quantize_q8a gives quant.c's blocks (want) for x, bit for bit. */
static void check_sets_q8a(const kernel_set *const *sets, int n_sets, const float *x, int n, const block_q8a *want,
                           const char *what) {
    block_q8a got[16];
    if (n > 16 * 32) { CHECK(0, "check_sets_q8a: %d values exceed its buffer", n); return; }
    for (int s = 0; s < n_sets; s++) {
        if (!sets[s]->quantize_q8a) continue;
        memset(got, 0x5a, sizeof got);
        sets[s]->quantize_q8a(x, got, n);
        for (int b = 0; b < n / 32; b++)
            CHECK(want[b].d == got[b].d && want[b].sum == got[b].sum && !memcmp(want[b].qs, got[b].qs, 32),
                  "%s quantize_q8a %sblock %d differs from quant.c's", sets[s]->name, what, b);
    }
}

/* Each set's activation quantizer writes quant.c's bytes exactly: random
 * rows, an all-zero block, values that land on .5 after scaling (round half
 * to even), and a block whose largest magnitude is negative. */
static void test_quantize_q8a(void) {
    const kernel_set *sets[8];
    int n_sets = kernels_available(sets, 8);
    enum { N = 32 * 9 };
    float x[N];
    for (int i = 0; i < N; i++) x[i] = grand() * (float)(1 + i / 32);
    for (int i = 32; i < 64; i++) x[i] = 0.0f;
    for (int i = 64; i < 96; i++) x[i] = (float)(i - 80) + 0.5f; /* halves... */
    x[64] = -127.0f; /* ...and amax 127 (negative), so id = 1 and every x * id is a tie */
    for (int i = 96; i < 128; i++) x[i] = 1e-30f * (float)(i - 110);
    block_q8a want[N / 32];
    quantize_row_q8a(x, want, N);
    check_sets_q8a(sets, n_sets, x, N, want, "");
}

/* A block holding NaN or Inf (or so tiny that 1/d overflows) quantizes to a
 * zero block in quant.c and in every set, instead of converting a
 * non-finite float to an integer (undefined; UBSan checks it in CI). */
static void test_quantize_nonfinite(void) {
    const kernel_set *sets[8];
    int n_sets = kernels_available(sets, 8);
    enum { N = QK_K };
    float x[N];
    for (int i = 0; i < N; i++) x[i] = grand();
    x[3] = NAN;              /* block 0: one NaN among normal values */
    x[32 + 7] = INFINITY;    /* block 1: +Inf */
    x[64 + 31] = -INFINITY;  /* block 2: -Inf */
    for (int i = 96; i < 128; i++) x[i] = NAN;          /* block 3: all NaN */
    for (int i = 128; i < 160; i++) x[i] = 1e-40f;      /* block 4: 1/d overflows */
    /* blocks 5..7 stay finite: they must quantize as usual */
    block_q8a want[N / 32];
    quantize_row_q8a(x, want, N);
    for (int b = 0; b < 5; b++) {
        int zero = want[b].d == 0.0f && want[b].sum == 0;
        for (int i = 0; i < 32; i++) zero &= want[b].qs[i] == 0;
        CHECK(zero, "quantize_row_q8a: non-finite block %d is not a zero block", b);
    }
    for (int b = 5; b < N / 32; b++) CHECK(want[b].d > 0.0f, "quantize_row_q8a: finite block %d lost", b);
    check_sets_q8a(sets, n_sets, x, N, want, "non-finite test ");
    block_q8_K k;
    quantize_row_q8_K(x, &k, N);
    int zero = k.d == 0.0f;
    for (int i = 0; i < QK_K; i++) zero &= k.qs[i] == 0;
    CHECK(zero, "quantize_row_q8_K: a block with NaN/Inf is not a zero block");
    block_q8_0 q[N / QK8_0];
    quantize_row_q8_0(x, q, N);
    for (int b = 0; b < 5; b++) {
        zero = f16_to_f32(q[b].d) == 0.0f;
        for (int i = 0; i < QK8_0; i++) zero &= q[b].qs[i] == 0;
        CHECK(zero, "quantize_row_q8_0: non-finite block %d is not a zero block", b);
    }
}

/* Each set's read-bandwidth probe sums exactly what the loop says. */
static void test_read_sum(void) {
    const kernel_set *sets[8];
    int n_sets = kernels_available(sets, 8);
    size_t n = 64 * 37;
    uint64_t *p = aligned_alloc(64, n * sizeof *p), want = 0;
    for (size_t i = 0; i < n; i++) want += p[i] = i * 0x9E3779B97F4A7C15ull;
    for (int s = 0; s < n_sets; s++)
        for (int parts = 1; parts <= 4; parts++) /* 37 chunks: 3 and 4 parts leave a rest */
            CHECK(sets[s]->read_sum(p, n, parts) == want, "%s read_sum in %d parts", sets[s]->name, parts);
    free(p);
}

/* 3. quantization error budgets (relative rms over Gaussian data) */
static void test_quant_error(void) {
    const int n = 4096;
    struct { moe_dtype t; double budget; } cases[] = {{DT_Q8_0, 0.006}, {DT_Q4_0, 0.12}, {DT_Q4_K, 0.10},
                                                      {DT_F16, 0.0005}, {DT_BF16, 0.004}};
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    void *q = malloc((size_t)n * 4);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        double se = 0, sx = 0;
        for (int i = 0; i < n; i++) x[i] = grand() * (1 + (i / 256) % 4);
        quantize_row(cases[c].t, x, q, n);
        dequantize_row(cases[c].t, q, y, n);
        for (int i = 0; i < n; i++) {
            se += (double)(x[i] - y[i]) * (x[i] - y[i]);
            sx += (double)x[i] * x[i];
        }
        double rel = sqrt(se / sx);
        printf("quantization error %-5s relative rms %.4f (budget %.4f)\n", dtype_name(cases[c].t), rel, cases[c].budget);
        CHECK(rel <= cases[c].budget, "%s relative rms error %.4f > %.4f", dtype_name(cases[c].t), rel, cases[c].budget);
    }
    /* all-zero input: zero output, no NaN */
    memset(x, 0, sizeof(float) * n);
    for (int i = 0; i < N_TYPES; i++) {
        const dtype_traits *d = dtype_info(TYPES[i]);
        if (!d->is_quant || !d->quantize || QK_K % d->block) continue;
        d->quantize(x, q, QK_K);
        d->dequantize(q, y, QK_K);
        int ok = 1;
        for (int j = 0; j < QK_K; j++) ok &= y[j] == 0.0f;
        CHECK(ok, "%s: zeros must stay zeros", d->name);
    }
    free(x);
    free(y);
    free(q);
}

static void test_half_conversions(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        if (f != f) continue; /* NaN payloads need not round-trip exactly */
        if (f32_to_f16(f) != h) bad++;
    }
    CHECK(bad == 0, "%d f16 values do not round-trip", bad);
    CHECK(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0xc000) == -2.0f && f16_to_f32(0x0001) == ldexpf(1, -24),
          "f16 decoding");
    CHECK(f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(65519.0f) == 0x7bff, "f16 overflow rounding");
    CHECK(f32_to_bf16(1.0f) == 0x3f80 && bf16_to_f32(0x3f80) == 1.0f, "bf16 basics");
    CHECK(f32_to_bf16(bf16_to_f32(0x3f81) + ldexpf(1, -8)) == 0x3f82, "bf16 ties to even (odd rounds up)");
    CHECK(f32_to_bf16(bf16_to_f32(0x3f80) + ldexpf(1, -8)) == 0x3f80, "bf16 ties to even (even stays)");
}

/* 4. Q8_0_R16 / Q4_0_R16 hold exactly Q8_0's / Q4_0's scales and bytes,
 * placed as quant.h says */
static void test_r16_layout(void) {
    enum { ROWS = 32, COLS = 96, NB = COLS / 32 };
    static const moe_dtype pairs[2][2] = {{DT_Q8_0_R16, DT_Q8_0}, {DT_Q4_0_R16, DT_Q4_0}};
    float *x = malloc(sizeof(float) * ROWS * COLS), a[COLS], b[COLS];
    for (int i = 0; i < ROWS * COLS; i++) x[i] = grand();
    for (int p = 0; p < 2; p++) {
        moe_dtype rt = pairs[p][0], bt = pairs[p][1];
        size_t rb = dtype_row_bytes(bt, COLS), bb = (size_t)dtype_info(bt)->block_bytes;
        uint8_t *g = malloc(rb * ROWS), plain[NB * 34];
        quantize_rows(rt, x, g, ROWS, COLS);
        for (int r = 0; r < ROWS; r++) {
            quantize_row(bt, x + r * COLS, plain, COLS);
            dequantize_row(bt, plain, a, COLS);
            dequantize_row_at(rt, g, rb, (size_t)r, b, COLS);
            CHECK(!memcmp(a, b, sizeof a), "%s row %d differs from %s", dtype_name(rt), r, dtype_name(bt));
            /* block column 1 of r's group: scale r, then qs byte 11 of the row at step 2, offset 3 */
            const uint8_t *col = g + (size_t)(r / R16) * R16 * rb + R16 * bb, *blk = plain + bb;
            CHECK(!memcmp(col + 2 * (r % R16), blk, 2) && col[2 * R16 + 64 * 2 + 4 * (r % R16) + 3] == blk[2 + 11],
                  "%s row %d: block 1 not where quant.h puts it", dtype_name(rt), r);
            g_checks++;
        }
        free(g);
    }
    free(x);
}

/* ------------------------------------------------------------ 4. MXFP4 tiles */

/* A float with a random 24-bit significand, sign and exponent in [lo, hi]:
 * every bit of it matters to an exact product. */
static float full_float(int lo, int hi) {
    uint32_t mant = (uint32_t)(rng >> 41) & 0x7FFFFF;
    frand();
    int e = lo + (int)((rng >> 33) % (uint64_t)(hi - lo + 1));
    float f = ldexpf(1.0f + (float)mant / 8388608.0f, e);
    return (rng >> 20) & 1 ? -f : f;
}

/* MXFP4 rows of one power-of-two weight each (code 1, 2, 4 or 6: levels 1,
 * 2, 4, 8, signed at random; level 1 under scale bytes past 252, where a
 * larger one is past float's range) in a random column, all other codes 0;
 * scale bytes e_of(r, block). The nonzero weight's value goes to wv, its
 * column to wc. */
static block_mxfp4 *one_weight_rows(int rows, int cols, int (*e_of)(int, int), double *wv, int *wc) {
    int nb = cols / QK_MXFP4;
    block_mxfp4 *w = calloc((size_t)rows * nb, sizeof *w);
    static const uint8_t codes[4] = {1, 2, 4, 6};
    for (int r = 0; r < rows; r++) {
        for (int b = 0; b < nb; b++) w[(size_t)r * nb + b].e = (uint8_t)e_of(r, b);
        frand();
        int c = (int)((rng >> 30) % (uint64_t)cols);
        block_mxfp4 *blk = &w[(size_t)r * nb + c / 32];
        int q = (blk->e > 252 ? 1 : codes[(rng >> 50) & 3]) | ((rng >> 55) & 1 ? 8 : 0);
        int j = c % 32;
        blk->qs[j % 16] = (uint8_t)(j < 16 ? q : q << 4);
        wv[r] = kvalues_mxfp4[q] * (double)mxfp4_half_scale(blk->e);
        wc[r] = c;
    }
    return w;
}

static int e_normal(int r, int b) { return 100 + (r * 7 + b * 3) % 101; } /* products stay normal floats */
/* scale bytes 2-41: with activations of 2^-20..2^20 many products are
 * subnormal floats, which AMX flushes to zero */
static int e_low(int r, int b) { return 2 + (r * 5 + b) % 40; }
/* every fifth row of rows 16-31 (the AMX tile's second panel; the others
 * stay on tiles): scale bytes the AMX tile cannot take (0, 1: subnormal
 * weights; 253-255: level 12 overflows bf16, 255 is E8M0's NaN) */
static int e_edges(int r, int b) {
    static const int edge[5] = {0, 1, 253, 254, 255};
    return r / 16 == 1 && r % 5 == 2 ? edge[(r / 5 + b) % 5] : e_normal(r, b);
}

/* y[t][r] = w[r][c_r] * x[idx[t]][c_r] exactly (one rounding of the exact
 * product, as float arithmetic does), for every set with an MXFP4 tile:
 * an activation part lost on the way (a bf16 split short of 24 bits, a
 * flushed subnormal) shows here as a bit difference. Tokens cover normal
 * floats of every significand, tiny ones (below 2^-103, some subnormal),
 * subnormal products (scale bytes 2-41) and
 * token counts 1..80 around the AMX tile's groups of 16 and chunks of 64. */
static void test_mxfp4_exact(void) {
    const kernel_set *sets[8];
    int n_sets = kernels_available(sets, 8);
    static const int shapes[][2] = {{37, 96}, {16, 32}, {70, 160}, {5, 2880}, {64, 288}}; /* rows, cols */
    for (int si = 0; si < 5; si++)
        for (int nt = 1; nt <= 80; nt += si == 0 ? 1 : 13) {
            int rows = shapes[si][0], cols = shapes[si][1], na = nt + 5;
            double *wv = malloc(sizeof(double) * rows);
            int *wc = malloc(sizeof(int) * rows), *idx = malloc(sizeof(int) * nt);
            block_mxfp4 *w = one_weight_rows(rows, cols, nt % 2 ? e_edges : nt % 4 == 2 ? e_low : e_normal, wv, wc);
            float *x = malloc(sizeof(float) * (size_t)na * cols);
            for (int t = 0; t < na; t++) { /* for nt % 3 == 0, one token in 9 tiny (the AMX tile's whole chunk
                                              * then takes the float path) */
                int tiny = nt % 3 == 0 && t % 9 == 4;
                for (int c = 0; c < cols; c++) x[(size_t)t * cols + c] = tiny ? full_float(-135, -104) : full_float(-20, 20);
            }
            for (int t = 0; t < nt; t++) idx[t] = (t * 7 + 3) % na; /* gathered, permuted, some rows twice */
            size_t ldy = (size_t)rows + 3;
            float *y = malloc(sizeof(float) * nt * ldy);
            for (int s = 0; s < n_sets; s++) {
                int bad = -1;
                for (int g = 0; g < 2; g++) { /* gathered rows, then rows 0..nt-1 in place */
                    const int *ix = g ? NULL : idx;
                    kernel_tile(sets[s], DT_MXFP4, cols, w, sizeof(block_mxfp4) * (cols / 32), rows, x,
                                sizeof(float) * cols, ix, nt, y, ldy);
                    for (int i = 0; i < nt * rows && bad < 0; i++) {
                        int t = i / rows, r = i % rows, xt = ix ? ix[t] : t;
                        /* (+ 0: sums start at +0, so an underflow to -0 ends as +0) */
                        float want = (float)(wv[r] * x[(size_t)xt * cols + wc[r]]) + 0.0f;
                        if (memcmp(&want, &y[(size_t)t * ldy + r], sizeof want)) bad = i;
                    }
                }
                CHECK(bad < 0, "%s mxfp4 one-weight rows %d cols %d nt %d: [%d] %.9g", sets[s]->name, rows, cols, nt, bad,
                      bad < 0 ? 0 : y[(size_t)(bad / rows) * ldy + bad % rows]);
            }
            free(wv);
            free(wc);
            free(idx);
            free(w);
            free(x);
            free(y);
        }
}

/* Random MXFP4 rows against float64 on the same stored values: a float
 * dot product of n terms summed in any order (blocks, lanes, the AMX tile's
 * three parts per activation, 3n additions at most) is within
 * (3n + 64) * 2^-24 * sum |w x| of the exact sum (first-order rounding
 * bound, 1 % slack). Some activations are Inf or NaN: every set must give
 * the scalar set's Inf, -Inf or NaN there. Prints the largest error seen
 * per set on gpt-oss-shaped rows, in units of 2^-24 sum |w x|. */
static void test_mxfp4_bound(void) {
    const kernel_set *sets[8];
    int n_sets = kernels_available(sets, 8);
    static const int shapes[][3] = {{64, 2880, 64}, {33, 2880, 17}, {20, 8192, 40}, {7, 64, 80}}; /* rows, cols, nt */
    for (int si = 0; si < 4; si++) {
        int rows = shapes[si][0], cols = shapes[si][1], nt = shapes[si][2];
        size_t rb = dtype_row_bytes(DT_MXFP4, (uint64_t)cols);
        float *src = malloc(sizeof(float) * (size_t)rows * cols), *wf = malloc(sizeof(float) * (size_t)rows * cols);
        for (int i = 0; i < rows * cols; i++) src[i] = grand() * 0.02f;
        void *w = malloc(rb * rows);
        quantize_rows(DT_MXFP4, src, w, rows, cols);
        for (int r = 0; r < rows; r++) dequantize_row_at(DT_MXFP4, w, rb, (size_t)r, wf + (size_t)r * cols, cols);
        float *x = malloc(sizeof(float) * (size_t)nt * cols), *y0 = malloc(sizeof(float) * nt * rows),
              *y = malloc(sizeof(float) * nt * rows);
        for (int i = 0; i < nt * cols; i++) x[i] = grand() * 3;
        if (nt > 2) {
            x[(size_t)1 * cols + 5] = INFINITY; /* token 1: +-Inf, or NaN where the weight is 0 */
            x[(size_t)2 * cols + cols - 1] = NAN;
        }
        tile_ref(DT_MXFP4, cols, w, rb, rows, x, sizeof(float) * cols, NULL, nt, y0, rows);
        for (int s = 1; s < n_sets; s++) {
            if (!sets[s]->tile[DT_MXFP4]) continue;
            kernel_tile(sets[s], DT_MXFP4, cols, w, rb, rows, x, sizeof(float) * cols, NULL, nt, y, rows);
            double worst = 0;
            int bad = -1;
            for (int i = 0; i < nt * rows && bad < 0; i++) {
                int t = i / rows, r = i % rows;
                if (!isfinite(y0[i]) || !isfinite(y[i])) {
                    if (!(isnan(y0[i]) ? isnan(y[i]) : y[i] == y0[i])) bad = i;
                    continue;
                }
                double exact = 0, mag = 0;
                for (int c = 0; c < cols; c++) {
                    double p = (double)wf[(size_t)r * cols + c] * x[(size_t)t * cols + c];
                    exact += p;
                    mag += fabs(p);
                }
                double unit = mag * 0x1p-24, err = fabs(y[i] - exact);
                if (err > 1.01 * (3.0 * cols + 64) * unit) bad = i;
                if (unit > 0 && err / unit > worst) worst = err / unit;
            }
            CHECK(bad < 0, "%s mxfp4 rows %d cols %d nt %d: [%d] %.9g vs scalar %.9g", sets[s]->name, rows, cols, nt, bad,
                  bad < 0 ? 0 : y[bad], bad < 0 ? 0 : y0[bad]);
            if (si == 0) printf("  %s mxfp4 %dx%d, %d tokens: largest error %.2f x 2^-24 sum|wx| (bound %d)\n", sets[s]->name,
                                rows, cols, nt, worst, 3 * cols + 64);
        }
        free(src);
        free(wf);
        free(w);
        free(x);
        free(y0);
        free(y);
    }
}

int main(void) {
    list_weight_types();
    test_dtype_table();
    test_quantize_q8a();
    test_quantize_nonfinite();
    test_read_sum();
    test_half_conversions();
    test_quant_error();
    test_scalar_vs_f64();
    test_expected_sets();
    test_sets_vs_scalar();
    {
        const kernel_set *sets[8];
        int n_sets = kernels_available(sets, 8);
        for (int s = 1; s < n_sets; s++) {
            test_long_rows(sets[s]);
            test_many_rows(sets[s]);
            test_small_stack(sets[s]);
        }
    }
    test_r16_layout();
    test_mxfp4_exact();
    test_mxfp4_bound();
    return test_summary("test_kernels");
}
