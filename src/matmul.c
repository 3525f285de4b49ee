/* matmul.c - products of weight matrices with activation rows, spread over
 * threads: job lists, row blocks as work items, work stealing (matmul.h). */
#include "matmul.h"

#include <stdatomic.h>

#include "ops.h"
#include "quant.h"
#include "threads.h"

#define ROW_BLOCK 16 /* rows per work item: small enough to balance 2..64 threads; whole Q8_0_R16 groups */
#define DECODE_MAX_TOKENS 8 /* a list whose jobs have at most this many tokens each is bound by memory */
#define PAR_MIN_COST 8      /* total cost (item_cost units) below which a list runs on one thread */
/* ... and below this many multiply-adds: waking a team costs tens of microseconds (more with passive
 * waiting, and on a loaded machine each region waits for every team thread to be scheduled) */
#define PAR_MIN_MACS (1 << 18)
/* Decode's stretches: the owner takes runs of a quarter of what is left of its stretch, clamped
 * to this many row blocks (long weight streams, and a tail still fine enough for a helper) */
#define RUN_MIN_BLOCKS 4
#define RUN_MAX_BLOCKS 64
/* Prefill's items: up to ITEM_MAX_BLOCKS row blocks of one job, so a tile call's set-up (the
 * token-lane kernels interleave their tokens once per call) is spread over 64 rows, while each
 * thread still gets ITEMS_PER_THREAD items or more to balance with */
#define ITEM_MAX_BLOCKS 4
#define ITEMS_PER_THREAD 8
_Static_assert(ROW_BLOCK % R16 == 0, "a work item must not split an interleaved row group");

static void run_tiles(const kernel_set *ks, float *y, const wmat *w, const void *act, size_t stride, const int *idx,
                      int m, int r0, int r1) {
    kernel_tile(ks, w->dtype, w->cols, wmat_row(w, r0), w->row_bytes, r1 - r0, act, stride, idx, m, y + r0,
                (size_t)w->rows);
}

void matmul_serial(const kernel_set *ks, float *y, const wmat *w, act_rows *a, const int *idx, int m) {
    size_t stride;
    const void *act = act_prepare(ks, a, w->dtype, &stride, 1);
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

/* What one row block of a job costs where memory is the bound (decode):
 * the weight bytes it reads. A list mixing types (Qwen3's Q4_K q with
 * Q8_0 k and v, 1152 and 2176 bytes a row) is then split into stretches
 * of equal bytes, not equal rows, which left one thread a third more to
 * read and the other taking its leftovers from cold memory. */
static int64_t block_bytes(const mm_job *j) {
    return (int64_t)j->w->row_bytes * ROW_BLOCK * (j->up ? 2 : 1);
}

/* A thread's stretch of work items as one word, [lo, hi), so its owner
 * (taking from the front) and a helper (taking half from the back) claim
 * items with one compare-and-swap and never both get the same one. Each word has
 * a cache line of its own: sharing one, every claim moved the line between
 * cores. */
typedef struct {
    _Alignas(64) _Atomic uint64_t range;
} stretch_word;

static uint64_t pack_range(int lo, int hi) { return (uint64_t)(uint32_t)lo | (uint64_t)(uint32_t)hi << 32; }

static int take_range(_Atomic uint64_t *r, int front, int *a, int *b) {
    uint64_t old = atomic_load(r), new;
    do {
        int lo = (int)(uint32_t)old, hi = (int)(uint32_t)(old >> 32);
        if (lo >= hi) return 0;
        if (front) { /* the owner streams on in runs of a quarter of what is left */
            int run = (hi - lo) / 4;
            run = run < RUN_MIN_BLOCKS ? RUN_MIN_BLOCKS : run > RUN_MAX_BLOCKS ? RUN_MAX_BLOCKS : run;
            *a = lo;
            *b = hi - lo < run ? hi : lo + run;
            new = pack_range(*b, hi);
        } else { /* a helper takes half of what is left, so it too streams a run */
            int half = (hi - lo) / 2 > 1 ? (hi - lo) / 2 : 1;
            *a = hi - half;
            *b = hi;
            new = pack_range(lo, *a);
        }
    } while (!atomic_compare_exchange_weak(r, &old, new));
    return 1;
}

/* Up to MM_MAX_JOBS jobs in one parallel region of up to nt threads. */
static void run_jobs(const mm_job *jobs, int n, int nt) {
    stretch_word stretch[MM_MAX_THREADS];
    const kernel_set *ks = kernels_get();
    const void *act[MM_MAX_JOBS];
    size_t stride[MM_MAX_JOBS];
    int blocks[MM_MAX_JOBS], first[MM_MAX_JOBS + 1] = {0}; /* job i's blocks are items first[i].. */
    int64_t total = 0, macs = 0, bytes = 0;
    for (int i = 0; i < n; i++) {
        act[i] = act_prepare(ks, jobs[i].a, jobs[i].w->dtype, &stride[i], nt);
        blocks[i] = jobs[i].m > 0 ? (jobs[i].w->rows + ROW_BLOCK - 1) / ROW_BLOCK : 0;
        first[i + 1] = first[i] + blocks[i];
        total += blocks[i] * item_cost(&jobs[i]);
        bytes += blocks[i] * block_bytes(&jobs[i]);
        macs += (int64_t)jobs[i].m * jobs[i].w->rows * jobs[i].w->cols * (jobs[i].up ? 2 : 1);
    }
    if (macs < PAR_MIN_MACS) nt = 1; /* small matrices: one thread is faster than waking a team */
    /* One parallel region for every job: no barrier between them. Few
     * tokens (decode) are bound by memory: each thread takes one contiguous
     * stretch of row blocks of equal weight bytes, so it streams long runs of
     * weights (the hardware prefetchers follow them). Many tokens are bound
     * by arithmetic: threads take row blocks as they come, which balances
     * what a cost estimate cannot. */
    int many = 0;
    for (int i = 0; i < n; i++) many |= jobs[i].m > DECODE_MAX_TOKENS;
    if (many && nt > 1 && total > item_cost(&jobs[0])) {
        int run = first[n] / (ITEMS_PER_THREAD * nt), items[MM_MAX_JOBS + 1] = {0}; /* row blocks per item */
        run = run < 1 ? 1 : run > ITEM_MAX_BLOCKS ? ITEM_MAX_BLOCKS : run;
        for (int i = 0; i < n; i++) items[i + 1] = items[i] + (blocks[i] + run - 1) / run;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (int it = 0; it < items[n]; it++) {
            int i = 0;
            while (items[i + 1] <= it) i++;
            int k0 = (it - items[i]) * run, k1 = k0 + run < blocks[i] ? k0 + run : blocks[i];
            run_item(ks, &jobs[i], act[i], stride[i], k0, k1);
        }
        return;
    }
#pragma omp parallel num_threads(nt) if (total > PAR_MIN_COST && nt > 1)
    {
        int team = threads_in_team(), me = thread_id();
        if (team > MM_MAX_THREADS) team = MM_MAX_THREADS; /* the rest stay idle */
        if (me < team) {
            /* my stretch: the blocks whose bytes start in my equal share */
            int64_t lo = bytes * me / team, hi = bytes * (me + 1) / team, pos = 0;
            int b0 = 0, b1 = 0;
            for (int i = 0; i < n; pos += blocks[i] * block_bytes(&jobs[i]), i++) {
                int64_t c = block_bytes(&jobs[i]);
                int64_t k0 = lo > pos ? (lo - pos + c - 1) / c : 0, k1 = hi > pos ? (hi - pos + c - 1) / c : 0;
                if (k0 > blocks[i]) k0 = blocks[i];
                if (k1 > blocks[i]) k1 = blocks[i];
                if (lo >= pos) b0 = first[i] + (int)k0;
                if (hi > pos) b1 = first[i] + (int)k1;
            }
            atomic_store(&stretch[me].range, pack_range(b0, b1));
        }
#pragma omp barrier
        /* my own stretch from the front; then half of what another thread
         * has left, from its back, becomes my stretch: a core the host slowed
         * down is helped out instead of waited for, and the helper reads a
         * long run, which stays open to helping in turn (taking one 16-row
         * block at a time, each from cold memory, read the experts' downs
         * 5-7 % slower: docs/BENCHMARKS.md, 2026-12-07, fourth session) */
        for (int a, b; me < team;) {
            while (take_range(&stretch[me].range, 1, &a, &b))
                for (int i = 0; i < n; i++) { /* the claim's part in each job */
                    int k0 = a > first[i] ? a - first[i] : 0, k1 = b < first[i + 1] ? b - first[i] : blocks[i];
                    if (k0 < k1) run_item(ks, &jobs[i], act[i], stride[i], k0, k1);
                }
            int got = 0;
            for (int v = 1; v < team && !got; v++) got = take_range(&stretch[(me + v) % team].range, 0, &a, &b);
            if (!got) break;
            atomic_store(&stretch[me].range, pack_range(a, b));
        }
    }
}

void matmul_jobs(const mm_job *jobs, int n, int n_threads) {
    for (int i = 0; i < n; i += MM_MAX_JOBS) run_jobs(jobs + i, n - i < MM_MAX_JOBS ? n - i : MM_MAX_JOBS, n_threads);
}

void matmul(float *y, const wmat *w, act_rows *a, int n_threads) {
    mm_job one = {.y = y, .w = w, .a = a, .m = a->n};
    matmul_jobs(&one, 1, n_threads);
}

void wmat_row_to_f32(const wmat *w, int r, float *out) {
    dequantize_row_at(w->dtype, w->data, w->row_bytes, (size_t)r, out, w->cols);
}
