/* cmd_perplexity.c - `moe perplexity`: perplexity of a text as llama.cpp's
 * llama-perplexity measures it, and KL divergence against a saved run.
 *
 * The tokenized text (BOS first if the model adds one) is cut into chunks of
 * CTX tokens; each chunk is evaluated from an empty cache with its first
 * token replaced by BOS (when the model has add_bos), and only the second
 * half is scored: logits at position j (CTX/2 <= j <= CTX-2) against token
 * j+1, so every scored token sees at least CTX/2 tokens of context.
 *   PPL = exp(mean NLL),  ± = PPL x stderr(NLL)   (delta method, as llama.cpp)
 *
 * --save-logits FILE (little-endian; docs/ROUTING.md "Perplexity"):
 *   header, 32 bytes: "MOEL", u32 version 1, u32 vocab, u32 ctx, u32 chunks,
 *                     u32 first (= CTX/2), u32 0, u32 0
 *   per chunk: i32 tokens[ctx], then f32 log-probabilities [ctx-1-first][vocab]
 *              (log-softmax of the logits at positions first .. ctx-2)
 * --kl-base FILE reads such a file (same text, ctx and vocabulary) and reports
 * KL(base || this run) over the full vocabulary, top-1 agreement and ΔPPL. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *CMD = "perplexity";

static void help(void) {
    printf("usage: moe perplexity -m MODEL -f TEXT [-c CTX] [-b BATCH] [flags]\n\n"
           "Perplexity of a text, scored as llama-perplexity does: chunks of CTX tokens, the\n"
           "second half of each chunk scored. Prints PPL +/- its standard error.\n\n"
           "  -m, --model FILE       model file (.moe or GGUF)\n"
           "  -f, --file FILE        the text\n"
           "  -c, --ctx-size N       tokens per chunk (default 512, at most the model's context)\n"
           "  -b, --batch-size N     tokens per forward batch (default: CTX)\n"
           "      --chunks N         score at most N chunks (default: all)\n"
           "  -t, --threads N        threads (default: all cores)\n"
           "      --save-logits FILE save the scored log-probabilities (for --kl-base)\n"
           "      --kl-base FILE     compare with a saved run: KL divergence, top-1 agreement, dPPL\n");
    route_opts_help();
}

#define HEADER_U32 8

typedef struct {
    double sum, sum2;
    long n;
} acc;

static void acc_add(acc *a, double x) {
    a->sum += x;
    a->sum2 += x * x;
    a->n++;
}
static double acc_mean(const acc *a) { return a->n ? a->sum / (double)a->n : 0; }
/* standard error of the mean (sample variance, as llama.cpp) */
static double acc_se(const acc *a) {
    if (a->n < 2) return 0;
    double m = acc_mean(a), v = a->sum2 / (double)a->n - m * m;
    return v > 0 ? sqrt(v / (double)(a->n - 1)) : 0;
}

/* log-softmax of row into out (double sums) */
static void log_softmax(const float *row, float *out, int V) {
    double lz = log_sum_exp(row, V);
    for (int v = 0; v < V; v++) out[v] = (float)((double)row[v] - lz);
}

static int argmax(const float *x, int V) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (x[v] > x[best]) best = v;
    return best;
}

static void put_u32s(FILE *f, const uint32_t *v, int n, const char *path) {
    if (fwrite(v, sizeof *v, (size_t)n, f) != (size_t)n) die(1, CMD, "cannot write %s", path);
}

int cmd_perplexity(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *file = NULL, *save = NULL, *base = NULL, *flag;
    int ctx_len = 512, ctx_given = 0, max_chunks = 0;
    moe_ctx_params cp = moe_ctx_default_params();
    route_opts ro = {0, NULL, NULL, 0};
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "-f") || !strcmp(flag, "--file")) file = args_value(&a, flag);
        else if (!strcmp(flag, "-c") || !strcmp(flag, "--ctx-size")) {
            ctx_len = args_int(&a, flag, 4, 1 << 20);
            ctx_given = 1;
        }
        else if (!strcmp(flag, "-b") || !strcmp(flag, "--batch-size")) cp.n_batch = args_int(&a, flag, 1, 1 << 16);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) cp.n_threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "--chunks")) max_chunks = args_int(&a, flag, 1, 1 << 30);
        else if (!strcmp(flag, "--save-logits")) save = args_value(&a, flag);
        else if (!strcmp(flag, "--kl-base")) base = args_value(&a, flag);
        else if (route_flag(&a, flag, &ro)) continue;
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe perplexity -h)", flag);
    }
    if (!file) die(EXIT_USAGE, CMD, "-f TEXT is required");
    size_t len;
    char *text = read_file_or_die(CMD, file, &len);
    moe_model *m = open_model_or_die(CMD, model ? model : default_model_path(argv[0]));
    moe_model_info info;
    moe_model_get_info(m, &info);
    if (!info.has_weights) die(1, CMD, "this is a tokenizer-only file: it has no weights to run");
    if (ctx_len > info.max_ctx) {
        if (ctx_given) die(EXIT_USAGE, CMD, "-c %d exceeds the model's context of %d", ctx_len, info.max_ctx);
        ctx_len = info.max_ctx; /* the default, capped */
    }
    int n_tok;
    int32_t *toks = tokenize_or_die(CMD, m, text, len, MOE_TOK_ADD_BOS, &n_tok);
    int n_chunks = n_tok / ctx_len;
    if (max_chunks && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks < 1)
        die(EXIT_USAGE, CMD, "the text is %d tokens; one chunk needs -c %d (give more text or a smaller -c)", n_tok,
            ctx_len);
    int32_t probe[2];
    int add_bos = moe_tokenize(m, "", 0, MOE_TOK_ADD_BOS, probe, 2, NULL) == 1 && info.bos >= 0;

    cp.n_ctx = ctx_len;
    if (!cp.n_batch) cp.n_batch = ctx_len;
    moe_ctx *ctx = route_ctx_new(CMD, m, &cp, &ro);
    trace_writer *trace = trace_open(CMD, m, ctx, &ro);

    int V = info.vocab_size, first = ctx_len / 2, n_scored = ctx_len - 1 - first;
    int nb = moe_ctx_n_ctx(ctx) < cp.n_batch ? moe_ctx_n_ctx(ctx) : cp.n_batch; /* logits of one batch at a time */
    float *logits = malloc(sizeof(float) * (size_t)nb * (size_t)V);
    float *lp = malloc(sizeof(float) * (size_t)V), *lpb = malloc(sizeof(float) * (size_t)V);
    int32_t *chunk = malloc(sizeof(int32_t) * (size_t)ctx_len), *bchunk = malloc(sizeof(int32_t) * (size_t)ctx_len);
    if (!logits || !lp || !lpb || !chunk || !bchunk) die(1, CMD, "out of memory for %d x %d logits", nb, V);

    FILE *fs = NULL, *fb = NULL;
    uint32_t hdr[HEADER_U32] = {0x4c454f4d /* "MOEL" */, 1, (uint32_t)V, (uint32_t)ctx_len, (uint32_t)n_chunks,
                                (uint32_t)first, 0, 0};
    if (save) {
        fs = fopen(save, "wb");
        if (!fs) die(1, CMD, "cannot create %s: %s", save, strerror(errno));
        put_u32s(fs, hdr, HEADER_U32, save);
    }
    if (base) {
        fb = fopen(base, "rb");
        if (!fb) die(1, CMD, "cannot open %s: %s", base, strerror(errno));
        uint32_t bh[HEADER_U32];
        if (fread(bh, sizeof *bh, HEADER_U32, fb) != HEADER_U32 || bh[0] != hdr[0] || bh[1] != 1)
            die(1, CMD, "%s is not a moe --save-logits file", base);
        if (bh[2] != hdr[2] || bh[3] != hdr[3] || bh[5] != hdr[5])
            die(1, CMD, "%s: vocabulary %u, ctx %u; this run has vocabulary %d, ctx %d", base, bh[2], bh[3], V, ctx_len);
        if (bh[4] < (uint32_t)n_chunks)
            die(1, CMD, "%s holds %u chunks; this run scores %d (use --chunks)", base, bh[4], n_chunks);
    }

    printf("perplexity: %d tokens, %d chunk%s of %d, scoring %d positions per chunk\n", n_tok, n_chunks,
           plural(n_chunks), ctx_len, n_scored);
    acc nll = {0, 0, 0}, nll_base = {0, 0, 0}, diff = {0, 0, 0}, kl = {0, 0, 0}, top1 = {0, 0, 0};
    double kl_max = 0;
    moe_err err = {{0}};
    double t0 = now_seconds();
    for (int c = 0; c < n_chunks; c++) {
        memcpy(chunk, toks + (size_t)c * ctx_len, sizeof(int32_t) * (size_t)ctx_len);
        if (add_bos) chunk[0] = info.bos;
        moe_ctx_reset(ctx);
        if (fs && fwrite(chunk, sizeof(int32_t), (size_t)ctx_len, fs) != (size_t)ctx_len)
            die(1, CMD, "cannot write %s", save);
        if (fb) {
            if (fread(bchunk, sizeof(int32_t), (size_t)ctx_len, fb) != (size_t)ctx_len)
                die(1, CMD, "%s is truncated", base);
            if (memcmp(bchunk, chunk, sizeof(int32_t) * (size_t)ctx_len))
                die(1, CMD, "%s was made from other tokens (chunk %d differs): same text, same tokenizer?", base, c);
        }
        for (int b = 0; b < ctx_len; b += nb) { /* one batch through the KV cache, then score its rows */
            int n = ctx_len - b < nb ? ctx_len - b : nb;
            if (moe_eval(ctx, chunk + b, n, logits, &err)) die(1, CMD, "%s", err.msg);
            trace_flush(trace);
            for (int j = b > first ? b : first; j < b + n && j < ctx_len - 1; j++) {
                log_softmax(logits + (size_t)(j - b) * V, lp, V);
                int next = chunk[j + 1];
                acc_add(&nll, -(double)lp[next]);
                if (fs && fwrite(lp, sizeof(float), (size_t)V, fs) != (size_t)V) die(1, CMD, "cannot write %s", save);
                if (fb) {
                    if (fread(lpb, sizeof(float), (size_t)V, fb) != (size_t)V) die(1, CMD, "%s is truncated", base);
                    double d = 0;
                    for (int v = 0; v < V; v++) d += exp((double)lpb[v]) * ((double)lpb[v] - (double)lp[v]);
                    if (d > kl_max) kl_max = d;
                    acc_add(&kl, d);
                    acc_add(&top1, argmax(lpb, V) == argmax(lp, V));
                    acc_add(&nll_base, -(double)lpb[next]);
                    acc_add(&diff, (double)lpb[next] - (double)lp[next]);
                }
            }
        }
        printf("[%d]%.4f%s", c + 1, exp(acc_mean(&nll)), c + 1 < n_chunks ? "," : "\n");
        fflush(stdout);
    }
    double dt = now_seconds() - t0;
    double ppl = exp(acc_mean(&nll));
    printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, ppl * acc_se(&nll));
    printf("mean NLL = %.8f +/- %.8f over %ld positions (%.1f tokens/s)\n", acc_mean(&nll), acc_se(&nll), nll.n,
           (double)n_chunks * ctx_len / (dt > 0 ? dt : 1e-9));
    if (fb) {
        double pb = exp(acc_mean(&nll_base));
        /* ln(PPL / PPL_base) = mean(NLL - NLL_base): delta method on the paired differences */
        printf("base PPL = %.4f +/- %.5f\n", pb, pb * acc_se(&nll_base));
        printf("dPPL = %+.4f +/- %.5f (%+.3f%%)\n", ppl - pb, ppl * acc_se(&diff), 100.0 * (ppl / pb - 1.0));
        printf("KL divergence = %.6f +/- %.6f (max %.6f)\n", acc_mean(&kl), acc_se(&kl), kl_max);
        printf("top-1 agreement = %.3f%% +/- %.3f%%\n", 100.0 * acc_mean(&top1), 100.0 * acc_se(&top1));
        fclose(fb);
    }
    if (fs && fclose(fs) != 0) die(1, CMD, "cannot write %s", save);
    size_t rows = trace_close(trace);
    if (ro.trace_path) fprintf(stderr, "trace: %zu rows -> %s\n", rows, ro.trace_path);

    free(logits);
    free(lp);
    free(lpb);
    free(chunk);
    free(bchunk);
    free(toks);
    free(text);
    moe_ctx_free(ctx);
    moe_model_free(m);
    return 0;
}
