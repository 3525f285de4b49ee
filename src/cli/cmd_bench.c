/* cmd_bench.c - `moe bench`: prefill and decode speed, llama-bench style.
 *
 *   pp N   one moe_eval of N prompt tokens from an empty context (at depth d:
 *          after d tokens already in the cache)
 *   tg N   N single-token moe_evals, each feeding one token; with --parallel P,
 *          N steps of P sequences of one context, one token each per
 *          moe_eval_batch (a server's decode loop): P*N tokens
 * Each test runs once to warm up, then r times; we report mean +- sd of
 * tokens/s. Tokenization and sampling are excluded (ids are fixed pseudo-
 * random values). Achieved bandwidth = bytes read per decoded token (active
 * weights + the KV cache read at that depth) x decode tok/s, compared with
 * the fastest the machine streams that many bytes (the probe below),
 * measured beside every decode run. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cli.h"
#include "kernels.h"
#include "threads.h"

static const char *CMD = "bench";

static void help(void) {
    printf("usage: moe bench -m MODEL [-p 512] [-n 128] [-r 5] [-t N] [--depth 0,512,...] [--parallel P] [--phases]\n"
           "                [--json]\n"
           "       moe bench --bandwidth [-t N]\n\n"
           "Measures prefill (ppN) and decode (tgN) tokens/s as mean +- sd over r runs after\n"
           "a warm-up, the bytes read per decoded token, the bandwidth that achieves, and the\n"
           "machine's read bandwidth to compare it with: the fastest it streams as many bytes\n"
           "(same loads, prefetch and page size as decode, from a buffer and from the model's\n"
           "own mapped pages), probed beside every decode run\n"
           "(the share shown is the median of the runs' shares; docs/BENCHMARKS.md, Method).\n\n"
           "  -m, --model FILE     model file (.moe or GGUF)\n"
           "  -p, --n-prompt N     prompt tokens for the prefill test, 0 = skip (default 512)\n"
           "  -n, --n-gen N        tokens for the decode test, 0 = skip (default 128)\n"
           "  -r, --repetitions N  measured runs per test (default 5)\n"
           "  -b, --batch-size N   prefill batch (default 512)\n"
           "  -t, --threads N      threads (default: all cores)\n"
           "      --kv f32|f16     KV cache type (default f32)\n"
           "  -d, --depth LIST     context depths to test at, e.g. 0,512,2048 (default 0)\n"
           "      --parallel P     decode P sequences together, one token each per step (as moe serve\n"
           "                       does); tgN reports all P*N tokens/s and how many experts a step\n"
           "                       read (GB/s and %% of bandwidth: one sequence only, 0 here)\n"
           "      --phases         also time the phases of the forward pass (attention, DeltaNet, delta\n"
           "                       rule, routing, experts, output, other) in the measured runs: ms per\n"
           "                       token and share, after the table (a few clock reads per layer)\n"
           "      --json           one JSON object on stdout instead of the table\n"
           "      --bandwidth      only measure the machine's read bandwidth (a 1 GiB stream)\n");
}

typedef struct {
    double mean, sd;
    int n;
} stat;

static stat summarize(const double *v, int r, int n) {
    stat s = {0, 0, n};
    for (int i = 0; i < r; i++) s.mean += v[i];
    s.mean /= r;
    for (int i = 0; i < r; i++) s.sd += (v[i] - s.mean) * (v[i] - s.mean);
    s.sd = r > 1 ? sqrt(s.sd / (r - 1)) : 0;
    return s;
}

/* The read-bandwidth probe: the fastest a decoded token's bytes can be
 * streamed, the ceiling decode is compared with. Each thread sums its share
 * of the bytes with the kernel set's widest loads (read_sum: independent
 * sums, so the loop is bound by its loads), and the bytes are read as the
 * weights are:
 * - as many bytes as a decoded token reads (at most PROBE_MAX), so caches
 *   help the probe at least as much as decode, which reads that many bytes
 *   but not always the same ones (a larger buffer would miss caches that
 *   decode hits, and decode could beat it);
 * - from two places, one after the other: a buffer of its own in 2 MB
 *   pages, and the model file's own mapped pages, where the weights are
 *   (on a VM a fresh buffer can read a third slower than the page cache:
 *   docs/BENCHMARKS.md, 2026-12-07, fifth session);
 * - in three ways in turn: plainly, with the decode kernels' L2 prefetch
 *   PROBE_AHEAD bytes ahead, and as PROBE_PARTS parts a thread at once, as
 *   the x86 decode kernels read a tile (a loop of loads needs no prefetch
 *   to read fastest that way);
 * - the best pass counting, after an untimed one (a host may have paged
 *   the idle buffer out). A shared host's bandwidth moves by tens of
 *   percent from minute to minute, so decode runs are probed beside each. */
#define PROBE_MAX ((size_t)1 << 30) /* beyond 1 GiB a stream gains nothing from any cache here */
#define PROBE_PAGE ((size_t)2 << 20)
#define PROBE_AHEAD 8192 /* DECODE_AHEAD of kernels_simd.h */
#define PROBE_PIECE 512   /* words summed per read_sum call when prefetching (4 KB) */
#define PROBE_PARTS 3     /* DECODE_PARTS of kernels_simd.h */
#define PROBE_KINDS 3     /* plain, prefetched, in parts */

typedef struct {
    const uint64_t *src[2]; /* the probe's own buffer; the model's mapped file (or NULL) */
    size_t n[2];            /* their words */
    uint64_t *own;          /* src[0], to free */
} bw_probe;

/* a buffer of at least `bytes` (whole 2 MB pages, at most PROBE_MAX), every
 * page touched, and the `mapped` bytes at `map` (the model's file; NULL: none) */
static bw_probe bw_open(double bytes, const void *map, size_t mapped) {
    size_t size = bytes >= (double)PROBE_MAX ? PROBE_MAX : ((size_t)bytes + PROBE_PAGE - 1) / PROBE_PAGE * PROBE_PAGE;
    if (size < PROBE_PAGE) size = PROBE_PAGE;
    void *p = NULL;
    if (posix_memalign(&p, PROBE_PAGE, size)) die(1, CMD, "out of memory for the bandwidth buffer");
    uint64_t *buf = p;
    size_t n = size / sizeof(uint64_t);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(buf, size, MADV_HUGEPAGE); /* a hint: refused, the probe reads 4 KB pages */
#endif
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) buf[i] = i;
    /* a mapping starts on a page, so its words are aligned for read_sum */
    size_t mn = map && mapped >= PROBE_PAGE ? mapped / sizeof(uint64_t) / 64 * 64 : 0;
    return (bw_probe){.src = {buf, mn ? map : NULL}, .n = {n, mn}, .own = buf};
}

/* n words (a multiple of 64) at p, read as one decode thread reads its
 * rows: kind 0 plainly, 1 with the L2 prefetch PROBE_AHEAD bytes on (not
 * past the buffer's end), 2 as PROBE_PARTS parts at once */
static uint64_t read_stream(const uint64_t *p, size_t n, const uint64_t *end, int kind) {
    uint64_t (*read_sum)(const uint64_t *, size_t, int) = kernels_get()->read_sum;
    if (kind != 1) return read_sum(p, n, kind == 2 ? PROBE_PARTS : 1);
    uint64_t total = 0;
    const size_t left = (size_t)(end - p) * sizeof *p; /* bytes from p to the buffer's end */
    for (size_t i = 0; i < n; i += PROBE_PIECE) {
        size_t m = n - i < PROBE_PIECE ? n - i : PROBE_PIECE;
        for (size_t o = i * sizeof *p + PROBE_AHEAD, stop = o + m * sizeof *p; o < stop && o < left; o += 64)
            __builtin_prefetch((const char *)p + o, 0, 1); /* prefetcht2, as prefetch_span */
        total += read_sum(p + i, m, 1);
    }
    return total;
}

/* GB/s of one timed read of the first n words of src (whole 64-word chunks
 * a thread) the given way; *sink keeps the sums alive */
static double bw_pass(const uint64_t *src, size_t n, int kind, uint64_t *sink) {
    uint64_t total = 0;
    double t0 = now_seconds();
#pragma omp parallel reduction(+ : total)
    {
        size_t chunks = n / 64, team = (size_t)threads_in_team(), me = (size_t)thread_id();
        size_t lo = chunks * me / team * 64, hi = chunks * (me + 1) / team * 64;
        total += read_stream(src + lo, hi - lo, src + n, kind);
    }
    double t = now_seconds() - t0;
    *sink += total;
    return (double)n * sizeof(uint64_t) / t / 1e9;
}

/* GB/s of the best of `passes` reads of the first `bytes` (at least 2 MB,
 * at most all there is) of each place, the ways in turn. One place after
 * the other, each after an untimed read: a pass must find in the caches
 * what the previous pass of its place left there, as a decoded token finds
 * what the previous token read. */
static double bw_best(const bw_probe *b, double bytes, int passes) {
    double best = 0;
    uint64_t sink = 0;
    for (int w = 0; w < 2 && b->src[w]; w++) {
        size_t n = bytes >= (double)(b->n[w] * sizeof(uint64_t)) ? b->n[w] : (size_t)bytes / sizeof(uint64_t);
        size_t floor = PROBE_PAGE / sizeof(uint64_t);
        if (n < floor) n = b->n[w] < floor ? b->n[w] : floor;
        n = n / 64 * 64; /* the threads read whole 64-word chunks: count only what they read */
        for (int rep = -1; rep < passes; rep++) {
            double gbps = bw_pass(b->src[w], n, rep < 0 ? 0 : rep % PROBE_KINDS, &sink);
            if (rep >= 0 && gbps > best) best = gbps;
        }
    }
    if (sink == 42) fprintf(stderr, " "); /* keep the sums alive */
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) { /* sorts v */
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint32_t next_id(uint64_t *s, int vocab) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)((*s >> 33) % (uint64_t)vocab);
}

static void fill(moe_ctx *ctx, int depth, int vocab, int32_t *ids, uint64_t *seed) {
    moe_err err = {{0}};
    moe_ctx_reset(ctx);
    if (!depth) return;
    for (int i = 0; i < depth; i++) ids[i] = (int32_t)next_id(seed, vocab);
    if (moe_eval(ctx, ids, depth, NULL, &err)) die(1, CMD, "%s", err.msg);
}

/* --phases: time the context's phases from here (ms non-NULL) ... */
static void phases_begin(moe_ctx *ctx, double *ms, moe_ctx_stats *s0) {
    if (!ms) return;
    moe_ctx_time_phases(ctx, 1);
    moe_ctx_get_stats(ctx, s0);
}
/* ... to here, adding each phase's ms per token over `tokens` to ms */
static void phases_end(moe_ctx *ctx, double *ms, const moe_ctx_stats *s0, double tokens) {
    if (!ms) return;
    moe_ctx_stats s1;
    moe_ctx_get_stats(ctx, &s1);
    moe_ctx_time_phases(ctx, 0);
    for (int p = 0; p < MOE_PHASE_COUNT; p++) ms[p] += 1e3 * (s1.phase_seconds[p] - s0->phase_seconds[p]) / tokens;
}

/* A prompt of n tokens at depth: tokens/s; with ms, its phases added (ms per token) */
static double run_pp(moe_ctx *ctx, int depth, int n, int vocab, int32_t *ids, uint64_t *seed, double *ms) {
    moe_err err = {{0}};
    moe_ctx_stats s0;
    fill(ctx, depth, vocab, ids, seed);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)next_id(seed, vocab);
    phases_begin(ctx, ms, &s0);
    double t0 = now_seconds();
    if (moe_eval(ctx, ids, n, NULL, &err)) die(1, CMD, "%s", err.msg);
    double t = now_seconds() - t0;
    phases_end(ctx, ms, &s0, n);
    return n / t;
}

#define MAX_PARALLEL 64

/* n decode steps of the context's first par sequences, each at depth;
 * *reads: routed-expert reads per step (all layers); with ms, the phases
 * added (ms per token). */
static double run_tg(moe_ctx *ctx, int par, int depth, int n, int vocab, int32_t *ids, uint64_t *seed,
                     double *reads, double *ms) {
    moe_err err = {{0}};
    moe_batch_item items[MAX_PARALLEL];
    int32_t next[MAX_PARALLEL];
    for (int s = 0; s < par; s++) {
        moe_seq_reset(ctx, s);
        for (int i = 0; i < depth; i++) ids[(size_t)s * depth + i] = (int32_t)next_id(seed, vocab);
        items[s] = (moe_batch_item){.seq = s, .tokens = ids + (size_t)s * depth, .n = depth};
    }
    if (depth && moe_eval_batch(ctx, items, par, &err)) die(1, CMD, "%s", err.msg);
    moe_ctx_stats s0, s1, p0;
    moe_ctx_get_stats(ctx, &s0);
    phases_begin(ctx, ms, &p0);
    double t0 = now_seconds();
    for (int i = 0; i < n; i++) {
        for (int s = 0; s < par; s++) {
            next[s] = (int32_t)next_id(seed, vocab);
            items[s] = (moe_batch_item){.seq = s, .tokens = &next[s], .n = 1};
        }
        if (moe_eval_batch(ctx, items, par, &err)) die(1, CMD, "%s", err.msg);
    }
    double t = now_seconds() - t0;
    phases_end(ctx, ms, &p0, (double)n * par);
    moe_ctx_get_stats(ctx, &s1);
    *reads = (double)(s1.expert_reads - s0.expert_reads) / n;
    return (double)n * par / t;
}

/* --phases: one test's split, ms per token (sums over reps runs) and share */
static void print_phases(const char *test, int n, int depth, const double *ms, int reps) {
    double total = 0.0;
    for (int p = 0; p < MOE_PHASE_COUNT; p++) total += ms[p] / reps;
    printf("\n%s%d%s%.0d phases, wall clock per token (mean of %d runs; threads' waits count as their phase):\n", test, n,
           depth ? " @ d" : "", depth, reps);
    for (int p = 0; p < MOE_PHASE_COUNT; p++)
        if (ms[p] > 0.0)
            printf("  %-28s %10.4f ms  %5.1f %%\n", moe_phase_name((moe_phase)p), ms[p] / reps,
                   total > 0 ? 100.0 * ms[p] / reps / total : 0.0);
    printf("  %-28s %10.4f ms\n", "total", total);
}

static int parse_depths(const char *s, int *out, int cap) {
    int n = 0;
    int32_t *ids = parse_id_list(CMD, s, &n);
    if (n > cap) die(EXIT_USAGE, CMD, "at most %d depths", cap);
    for (int i = 0; i < n; i++) out[i] = ids[i];
    free(ids);
    return n;
}

int cmd_bench(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *flag;
    int n_prompt = 512, n_gen = 128, reps = 5, json = 0, bw_only = 0, depths[16] = {0}, n_depths = 1, par = 1;
    int phases = 0;
    moe_ctx_params cp = moe_ctx_default_params();
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "-p") || !strcmp(flag, "--n-prompt")) n_prompt = args_int(&a, flag, 0, 1 << 20);
        else if (!strcmp(flag, "-n") || !strcmp(flag, "--n-gen")) n_gen = args_int(&a, flag, 0, 1 << 20);
        else if (!strcmp(flag, "-r") || !strcmp(flag, "--repetitions")) reps = args_int(&a, flag, 1, 1000);
        else if (!strcmp(flag, "-b") || !strcmp(flag, "--batch-size")) cp.n_batch = args_int(&a, flag, 1, 1 << 16);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) cp.n_threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "--kv")) cp.kv_f16 = args_kv_type(&a, flag);
        else if (!strcmp(flag, "-d") || !strcmp(flag, "--depth")) n_depths = parse_depths(args_value(&a, flag), depths, 16);
        else if (!strcmp(flag, "--parallel")) par = args_int(&a, flag, 1, MAX_PARALLEL);
        else if (!strcmp(flag, "--json")) json = 1;
        else if (!strcmp(flag, "--phases")) phases = 1;
        else if (!strcmp(flag, "--bandwidth")) bw_only = 1;
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe bench -h)", flag);
    }
    int threads = cp.n_threads ? cp.n_threads : cores_available();
    threads_set(threads);
    if (bw_only) {
        bw_probe probe = bw_open((double)PROBE_MAX, NULL, 0);
        double bw = bw_best(&probe, (double)PROBE_MAX, 2 * PROBE_KINDS);
        if (json) printf("{\"threads\": %d, \"bandwidth_gbps\": %.2f}\n", threads, bw);
        else printf("read bandwidth: %.2f GB/s (%d threads, 1 GiB in 2 MB pages, best of %d)\n", bw, threads, 2 * PROBE_KINDS);
        free(probe.own);
        return 0;
    }
    moe_model *m = open_model_or_die(CMD, model ? model : default_model_path(argv[0]));
    moe_model_info info;
    moe_model_get_info(m, &info);
    if (!info.has_weights) die(1, CMD, "this is a tokenizer-only file: it has no weights to run");
    int max_depth = 0;
    for (int i = 0; i < n_depths; i++) max_depth = depths[i] > max_depth ? depths[i] : max_depth;
    long need = (long)max_depth + (n_prompt > n_gen ? n_prompt : n_gen);
    if (need > info.max_ctx) die(EXIT_USAGE, CMD, "depth + tokens = %ld exceeds the model's context of %d", need, info.max_ctx);
    cp.n_ctx = (int)need;
    /* bytes per decoded token: active weights + the KV cache read at the mean position */
    double first_bytes = (double)info.active_bytes + (double)info.kv_bytes_per_token * (depths[0] + n_gen / 2.0);
    double most_bytes = (double)info.active_bytes + (double)info.kv_bytes_per_token * (max_depth + n_gen / 2.0);
    size_t map_bytes;
    const void *map = moe_model_mapping(m, &map_bytes);
    bw_probe probe = bw_open(most_bytes, map, map_bytes);
    double bw = bw_best(&probe, first_bytes, 4 * PROBE_KINDS);
    cp.n_threads = threads;
    cp.n_seq = par;
    moe_err err = {{0}};
    /* weights resident before timing, as in a warmed-up server (llama-bench maps with MAP_POPULATE):
     * otherwise the first touch of each rarely chosen expert is a page fault inside the measurement */
    double mapped = (double)moe_model_prefault(m), huge_pct = 100.0 * (double)moe_model_huge_bytes(m) / mapped;
    moe_ctx *ctx = moe_ctx_new(m, &cp, &err);
    if (!ctx) die(1, CMD, "%s", err.msg);
    int32_t *ids = malloc(sizeof *ids * (size_t)(need + 1) * (size_t)par);
    double *v = malloc(sizeof(double) * (size_t)reps), *rbw = malloc(sizeof(double) * (size_t)reps),
           *pct = malloc(sizeof(double) * (size_t)reps);
    if (!ids || !v || !rbw || !pct) die(1, CMD, "out of memory");
    uint64_t seed = 1234;
    const char *name = strrchr(model ? model : "default", '/');
    name = name ? name + 1 : (model ? model : "default");

    typedef struct {
        int depth;
        stat pp, tg;
        double bytes, gbps, bw, pct;
        double experts_per_step; /* routed experts read per MoE layer and step (--parallel) */
        double pp_ms[MOE_PHASE_COUNT], tg_ms[MOE_PHASE_COUNT]; /* --phases: ms per token */
    } result;
    result res[16];
    for (int di = 0; di < n_depths; di++) {
        result *R = &res[di];
        memset(R, 0, sizeof *R);
        R->depth = depths[di];
        if (n_prompt > 0) {
            run_pp(ctx, R->depth, n_prompt, info.vocab_size, ids, &seed, NULL); /* warm-up */
            for (int r = 0; r < reps; r++)
                v[r] = run_pp(ctx, R->depth, n_prompt, info.vocab_size, ids, &seed, phases ? R->pp_ms : NULL);
            R->pp = summarize(v, reps, n_prompt);
        }
        R->bytes = (double)info.active_bytes + (double)info.kv_bytes_per_token * (R->depth + n_gen / 2.0);
        if (n_gen > 0) {
            double reads;
            run_tg(ctx, par, R->depth, n_gen, info.vocab_size, ids, &seed, &reads, NULL);
            R->experts_per_step = info.n_moe_layers ? reads / info.n_moe_layers : 0;
            /* each run against the better of the probes just before and just after it */
            double before = bw_best(&probe, R->bytes, 2 * PROBE_KINDS);
            for (int r = 0; r < reps; r++) {
                v[r] = run_tg(ctx, par, R->depth, n_gen, info.vocab_size, ids, &seed, &reads, phases ? R->tg_ms : NULL);
                double after = bw_best(&probe, R->bytes, 2 * PROBE_KINDS);
                rbw[r] = before > after ? before : after;
                pct[r] = 100.0 * R->bytes * v[r] / 1e9 / rbw[r];
                before = after;
            }
            R->tg = summarize(v, reps, n_gen);
            R->gbps = R->bytes * R->tg.mean / 1e9;
            R->bw = median(rbw, reps);
            R->pct = median(pct, reps);
            if (par > 1) R->gbps = R->pct = 0; /* bytes per token assume one sequence: sequences share experts */
        }
    }

    if (json) { /* top level: the first depth; "depths": all of them */
        const result *R = &res[0];
        printf("{\"model\": \"%s\", \"arch\": \"%s\", \"type\": \"%s\", \"threads\": %d, \"kernels\": \"%s\", "
               "\"size_bytes\": %llu, \"params\": %llu, \"active_params\": %llu, "
               "\"pp\": {\"n\": %d, \"mean\": %.3f, \"sd\": %.3f}, \"tg\": {\"n\": %d, \"mean\": %.3f, \"sd\": %.3f}, "
               "\"active_bytes_per_token\": %.0f, \"gbps\": %.3f, \"bandwidth_gbps\": %.3f, \"roofline_pct\": %.2f, "
               "\"weights_huge_pct\": %.1f, \"parallel\": %d, \"experts_per_layer_step\": %.3f, \"depths\": [",
               name, info.arch, info.weight_type, threads, moe_kernel_name(), (unsigned long long)info.weight_bytes,
               (unsigned long long)info.n_params, (unsigned long long)info.n_params_active, R->pp.n, R->pp.mean, R->pp.sd,
               R->tg.n, R->tg.mean, R->tg.sd, R->bytes, R->gbps, n_gen > 0 ? R->bw : bw, R->pct, huge_pct, par,
               R->experts_per_step);
        for (int di = 0; di < n_depths; di++) {
            R = &res[di];
            printf("%s{\"depth\": %d, \"pp\": {\"n\": %d, \"mean\": %.3f, \"sd\": %.3f}, \"tg\": {\"n\": %d, "
                   "\"mean\": %.3f, \"sd\": %.3f}, \"bytes_per_token\": %.0f, \"gbps\": %.3f, \"bandwidth_gbps\": %.3f, "
                   "\"roofline_pct\": %.2f}",
                   di ? ", " : "", R->depth, R->pp.n, R->pp.mean, R->pp.sd, R->tg.n, R->tg.mean, R->tg.sd, R->bytes, R->gbps,
                   n_gen > 0 ? R->bw : bw, R->pct);
        }
        printf("]}\n");
    } else {
        printf("model %s (%s, %s): %.3f GB of weights, %.3f GB read per decoded token; %d threads, %s kernels\n",
               name, info.arch, info.weight_type, info.weight_bytes / 1e9, info.active_bytes / 1e9, threads,
               moe_kernel_name());
        printf("weights mapped in 2 MB pages: %.0f %% (4 KB pages read slower; see docs/MEMORY.md)\n", huge_pct);
        printf("read bandwidth (probe: a token's bytes streamed): %.2f GB/s at the start; each decode run is compared with probes beside it\n", bw);
        if (par > 1 && n_gen > 0)
            printf("%d sequences decode together: tg is all their tokens/s; a step read %.2f routed experts per MoE "
                   "layer for %d choices (k = %d each)\n", par, res[0].experts_per_step, par * info.n_active,
                   info.n_active);
        printf("\n");
        printf("| test            |              t/s | GB/s read | probe GB/s | %% of bandwidth |\n");
        printf("|-----------------|------------------|-----------|------------|----------------|\n");
        for (int di = 0; di < n_depths; di++) {
            const result *R = &res[di];
            char label[64];
            if (n_prompt > 0) {
                snprintf(label, sizeof label, R->depth ? "pp%d @ d%d" : "pp%d", n_prompt, R->depth);
                printf("| %-15s | %8.2f ± %6.2f |           |            |                |\n", label, R->pp.mean, R->pp.sd);
            }
            if (n_gen > 0) {
                snprintf(label, sizeof label, R->depth ? "tg%d @ d%d" : "tg%d", n_gen, R->depth);
                printf("| %-15s | %8.2f ± %6.2f | %9.2f | %10.2f | %13.1f%% |\n", label, R->tg.mean, R->tg.sd, R->gbps, R->bw,
                       R->pct);
            }
        }
        if (phases)
            for (int di = 0; di < n_depths; di++) {
                if (n_prompt > 0) print_phases("pp", n_prompt, res[di].depth, res[di].pp_ms, reps);
                if (n_gen > 0) print_phases("tg", n_gen, res[di].depth, res[di].tg_ms, reps);
            }
    }
    free(ids);
    free(v);
    free(rbw);
    free(pct);
    free(probe.own);
    moe_ctx_free(ctx);
    moe_model_free(m);
    return 0;
}
