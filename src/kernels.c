/* kernels.c - the scalar reference kernel set, activation preparation, the
 * matmul driver (threads over row blocks) and the dispatch point.
 *
 * The scalar tiles are written for clarity: one dot product per (row,
 * token). Faster sets live in kernels_<isa>.c and must agree with these
 * (tests/unit/test_kernels.c). */
#include "kernels.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "threads.h"
#include "util.h"

/* ------------------------------------------------------------ scalar set */

static float dot_f32(const float *a, const float *b, int n) { return dot_f32_ref(a, b, n); }

static void axpy_f32_ref(float *y, float s, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += s * x[i];
}

static void axpy_f16_ref(float *y, float s, const uint16_t *x, int n) {
    for (int i = 0; i < n; i++) y[i] += s * f16_to_f32(x[i]);
}

void tile_ref(moe_dtype t, int n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride,
              const int *idx, int nt, float *y, size_t ldy) {
    for (int r = 0; r < nr; r++)
        for (int k = 0; k < nt; k++) {
            const void *ak = (const char *)a + (size_t)(idx ? idx[k] : k) * a_stride;
            y[(size_t)k * ldy + r] = dot_row_at(t, w, w_stride, (size_t)r, ak, n);
        }
}

/* Sixteen independent sums, so the loop is bound by loads, not by one
 * chain of adds (the compiler vectorizes it). */
static uint64_t read_sum_ref(const uint64_t *p, size_t n) {
    uint64_t s[16] = {0}, t = 0;
    for (size_t i = 0; i < n; i += 16)
        for (int l = 0; l < 16; l++) s[l] += p[i + l];
    for (int l = 0; l < 16; l++) t += s[l];
    return t;
}

static const kernel_set SCALAR = {
    .name = "scalar", /* no tiles: every type runs tile_ref */
    .dot_f32 = dot_f32,
    .axpy_f32 = axpy_f32_ref,
    .axpy_f16 = axpy_f16_ref,
    .quantize_q8a = quantize_row_q8a,
    .read_sum = read_sum_ref,
};

const kernel_set *kernels_scalar(void) { return &SCALAR; }

/* ------------------------------------------------------------ dispatch */

/* SIMD sets, defined in kernels_<isa>.c, built with that ISA's flags when
 * the target has it (CMake defines MOE_HAVE_<ISA>); used only when this CPU
 * and the OS (saved register state) support the instructions. */
const kernel_set *kernels_avx2(void);
const kernel_set *kernels_avx512(void);
const kernel_set *kernels_neon(void);

#if defined(MOE_HAVE_AVX2) || defined(MOE_HAVE_AVX512)
#include <cpuid.h>

typedef struct {
    int avx2, avx512;
} x86_features;

static x86_features x86_detect(void) {
    x86_features f = {0, 0};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, f16c = (c >> 29) & 1;
    if (!osxsave) return f;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    int ymm = (lo & 0x6) == 0x6, zmm = (lo & 0xe6) == 0xe6; /* XMM|YMM, + opmask|ZMM state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    int vnni = (c >> 11) & 1;
    f.avx2 = ymm && avx2 && fma && f16c;
    f.avx512 = f.avx2 && zmm && avx512f && avx512bw && avx512vl && vnni;
    return f;
}
#endif

#if defined(MOE_HAVE_NEON) && defined(__aarch64__)
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20) /* arch/arm64 uapi hwcap bit for SDOT/UDOT */
#endif
#endif
/* The NEON set needs the dot-product extension (ARMv8.2 optional, v8.4
 * mandatory): ask the kernel on Linux; every Apple arm64 CPU has it;
 * elsewhere we cannot tell with libc alone, so stay scalar. */
static int arm_has_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    return 1;
#else
    return 0;
#endif
}
#endif

int kernels_available(const kernel_set **out, int cap) {
    int n = 0;
    if (n < cap) out[n++] = kernels_scalar();
#if defined(MOE_HAVE_AVX2) || defined(MOE_HAVE_AVX512)
    x86_features f = x86_detect();
#endif
#if defined(MOE_HAVE_AVX2)
    if (f.avx2 && n < cap) out[n++] = kernels_avx2();
#endif
#if defined(MOE_HAVE_AVX512)
    if (f.avx512 && n < cap) out[n++] = kernels_avx512();
#endif
#if defined(MOE_HAVE_NEON) && defined(__aarch64__)
    if (arm_has_dotprod() && n < cap) out[n++] = kernels_neon();
#endif
    return n;
}

const kernel_set *kernels_get(void) {
    static const kernel_set *chosen;
    if (!chosen) {
        const kernel_set *sets[8];
        int n = kernels_available(sets, 8);
        const kernel_set *pick = sets[n - 1];
        const char *want = getenv("MOE_KERNELS");
        if (want && *want)
            for (int i = 0; i < n; i++)
                if (!strcmp(sets[i]->name, want)) pick = sets[i];
        chosen = pick;
    }
    return chosen;
}

const char *moe_kernel_name(void) { return kernels_get()->name; }

/* ------------------------------------------------------------ activations */

/* Bytes of one quantized copy of the rows, or 0 when cols is no multiple
 * of the type's block (no weight of that width pairs with it). */
static size_t act_copy_bytes(act_type at, int n, int cols) {
    if (cols % act_info(at)->block) return 0;
    return ((size_t)n * act_row_bytes(at, cols) + 63) & ~(size_t)63;
}

size_t act_scratch_bytes(int n, int cols) {
    size_t total = 128;
    for (int at = ACT_F32 + 1; at < ACT_COUNT; at++) total += act_copy_bytes((act_type)at, n, cols);
    return total;
}

void act_init(act_rows *a, const float *x, int n, int cols, void *scratch) {
    *a = (act_rows){.x = x, .n = n, .cols = cols};
    size_t off = 0;
    for (int at = ACT_F32 + 1; at < ACT_COUNT && scratch; at++) {
        a->q[at] = (char *)scratch + off;
        off += act_copy_bytes((act_type)at, n, cols);
    }
}

const void *act_prepare(const kernel_set *ks, act_rows *a, moe_dtype wtype, size_t *stride) {
    act_type at = dtype_info(wtype)->act;
    size_t rb = act_row_bytes(at, a->cols);
    *stride = rb;
    if (at == ACT_F32) return a->x;
    if (!a->have[at]) {
        quantize_fn quantize = at == ACT_Q8A && ks->quantize_q8a ? ks->quantize_q8a : act_info(at)->quantize;
        char *q = a->q[at];
#pragma omp parallel for schedule(static) if (a->n >= 64 && threads_max() > 1)
        for (int t = 0; t < a->n; t++) quantize(a->x + (size_t)t * a->cols, q + (size_t)t * rb, a->cols);
        a->have[at] = 1;
    }
    return a->q[at];
}

/* ------------------------------------------------------------ matmul */

#define ROW_BLOCK 16 /* rows per work item: small enough to balance 2..64 threads; whole Q8_0_R16 groups */
_Static_assert(ROW_BLOCK % R16 == 0, "a work item must not split an interleaved row group");

static void run_tiles(const kernel_set *ks, float *y, const wmat *w, const void *act, size_t stride, const int *idx,
                      int m, int r0, int r1) {
    kernel_tile(ks, w->dtype, w->cols, wmat_row(w, r0), w->row_bytes, r1 - r0, act, stride, idx, m, y + r0,
                (size_t)w->rows);
}

void matmul_serial(const kernel_set *ks, float *y, const wmat *w, act_rows *a, const int *idx, int m) {
    size_t stride;
    const void *act = act_prepare(ks, a, w->dtype, &stride);
    run_tiles(ks, y, w, act, stride, idx, m, 0, w->rows);
}


/* Row blocks [k0, k1) of one job, for all its tokens, as one tile call (a
 * long weight stream); a gate/up pair computes both and leaves
 * silu(gate) * up in y. */
static void run_item(const kernel_set *ks, const mm_job *j, const void *act, size_t stride, int k0, int k1) {
    int r0 = k0 * ROW_BLOCK, r1 = k1 * ROW_BLOCK < j->w->rows ? k1 * ROW_BLOCK : j->w->rows;
    run_tiles(ks, j->y, j->w, act, stride, j->idx, j->m, r0, r1);
    if (!j->up) return;
    run_tiles(ks, j->y_up, j->up, act, stride, j->idx, j->m, r0, r1);
    for (int t = 0; t < j->m; t++) {
        size_t o = (size_t)t * (size_t)j->w->rows + (size_t)r0;
        swiglu(j->y + o, j->y_up + o, r1 - r0);
    }
}

/* The cost of one row block of a job, in token rows: the tokens it
 * multiplies plus a few for streaming its weights in. */
static int64_t item_cost(const mm_job *j) { return (int64_t)j->m + 4; }

/* A thread's stretch of work items as one word, [lo, hi), so its owner
 * (taking from the front) and a helper (taking from the back) claim items
 * with one compare-and-swap and never both get the same one. Each word has
 * a cache line of its own: sharing one, every claim moved the line between
 * cores (2-4 % of decode's expert matmuls, measured). */
typedef struct {
    _Alignas(64) _Atomic uint64_t range;
} stretch_word;

static uint64_t pack_range(int lo, int hi) { return (uint64_t)(uint32_t)lo | (uint64_t)(uint32_t)hi << 32; }

static int take_range(_Atomic uint64_t *r, int front, int *a, int *b) {
    uint64_t old = atomic_load(r), new;
    do {
        int lo = (int)(uint32_t)old, hi = (int)(uint32_t)(old >> 32);
        if (lo >= hi) return 0;
        if (front) { /* the owner streams on in runs of a quarter of what is left (4..64 blocks): long
                      * weight streams, and a tail still fine enough for a helper to balance */
            int run = (hi - lo) / 4;
            run = run < 4 ? 4 : run > 64 ? 64 : run;
            *a = lo;
            *b = hi - lo < run ? hi : lo + run;
            new = pack_range(*b, hi);
        } else {
            *a = hi - 1;
            *b = hi;
            new = pack_range(lo, hi - 1);
        }
    } while (!atomic_compare_exchange_weak(r, &old, new));
    return 1;
}

void matmul_jobs(const mm_job *jobs, int n) {
    stretch_word stretch[MM_MAX_THREADS];
    const kernel_set *ks = kernels_get();
    const void *act[MM_MAX_JOBS];
    size_t stride[MM_MAX_JOBS];
    int blocks[MM_MAX_JOBS], first[MM_MAX_JOBS + 1] = {0}; /* job i's blocks are items first[i].. */
    int64_t total = 0;
    if (n > MM_MAX_JOBS) n = MM_MAX_JOBS; /* callers split longer lists (ffn.c) */
    for (int i = 0; i < n; i++) {
        act[i] = act_prepare(ks, jobs[i].a, jobs[i].w->dtype, &stride[i]);
        blocks[i] = jobs[i].m > 0 ? (jobs[i].w->rows + ROW_BLOCK - 1) / ROW_BLOCK : 0;
        first[i + 1] = first[i] + blocks[i];
        total += blocks[i] * item_cost(&jobs[i]);
    }
    /* One parallel region for every job: no barrier between them. Few
     * tokens (decode) are bound by memory: each thread takes one contiguous
     * stretch of row blocks of equal cost, so it streams long runs of
     * weights (the hardware prefetchers follow them). Many tokens are bound
     * by arithmetic: threads take row blocks as they come, which balances
     * what a cost estimate cannot. */
    int many = 0;
    for (int i = 0; i < n; i++) many |= jobs[i].m > 8;
    if (many && threads_max() > 1 && total > item_cost(&jobs[0])) {
        /* an item is up to 4 row blocks of one job, so a tile call's set-up
         * (the token-lane kernels interleave their tokens once per call) is
         * spread over 64 rows, while each thread still gets 8 items or more */
        int run = first[n] / (8 * threads_max()), items[MM_MAX_JOBS + 1] = {0};
        run = run < 1 ? 1 : run > 4 ? 4 : run;
        for (int i = 0; i < n; i++) items[i + 1] = items[i] + (blocks[i] + run - 1) / run;
#pragma omp parallel for schedule(dynamic, 1)
        for (int it = 0; it < items[n]; it++) {
            int i = 0;
            while (items[i + 1] <= it) i++;
            int k0 = (it - items[i]) * run, k1 = k0 + run < blocks[i] ? k0 + run : blocks[i];
            run_item(ks, &jobs[i], act[i], stride[i], k0, k1);
        }
        return;
    }
#pragma omp parallel if (total > 8 && threads_max() > 1)
    {
        int team = threads_in_team(), me = thread_id();
        if (team > MM_MAX_THREADS) team = MM_MAX_THREADS; /* the rest stay idle */
        if (me < team) {
            /* my stretch: the blocks whose cost starts in my equal share */
            int64_t lo = total * me / team, hi = total * (me + 1) / team, pos = 0;
            int b0 = 0, b1 = 0;
            for (int i = 0; i < n; pos += blocks[i] * item_cost(&jobs[i]), i++) {
                int64_t c = item_cost(&jobs[i]);
                int64_t k0 = lo > pos ? (lo - pos + c - 1) / c : 0, k1 = hi > pos ? (hi - pos + c - 1) / c : 0;
                if (k0 > blocks[i]) k0 = blocks[i];
                if (k1 > blocks[i]) k1 = blocks[i];
                if (lo >= pos) b0 = first[i] + (int)k0;
                if (hi > pos) b1 = first[i] + (int)k1;
            }
            atomic_store(&stretch[me].range, pack_range(b0, b1));
        }
#pragma omp barrier
        if (me < team) {
            /* my own stretch from the front, then other threads' leftovers
             * from their back: a core the host slowed down is helped out
             * instead of waited for */
            for (int v = 0; v < team; v++) {
                int owner = (me + v) % team, a, b;
                while (take_range(&stretch[owner].range, v == 0, &a, &b))
                    for (int i = 0; i < n; i++) { /* the claim's part in each job */
                        int k0 = a > first[i] ? a - first[i] : 0, k1 = b < first[i + 1] ? b - first[i] : blocks[i];
                        if (k0 < k1) run_item(ks, &jobs[i], act[i], stride[i], k0, k1);
                    }
            }
        }
    }
}

void matmul(float *y, const wmat *w, act_rows *a) {
    mm_job one = {y, w, a, NULL, a->n, NULL, NULL};
    matmul_jobs(&one, 1);
}

void wmat_row_to_f32(const wmat *w, int r, float *out) {
    dequantize_row_at(w->dtype, w->data, w->row_bytes, (size_t)r, out, w->cols);
}
