/* calib.c - calibration for moe quantize --calib: run the model on a text,
 * gather H = sum x x^T of what each layer's matrices read (the inputs that
 * moe_ctx_set_input_hook reports), and turn each H into GPTQ's factor. */
#include "calib.h"

#include <stdlib.h>
#include <string.h>

#include "gptq.h"

#define CALIB_DAMP 0.01f /* GPTQ's usual dampening: 1 % of H's mean diagonal */
#define CALIB_CHUNK 512  /* positions per sequence */
/* The routed experts' down projections need an H per expert (layers x
 * experts x ff^2 floats: 14.5 GB for Qwen3-30B-A3B); gathered only when
 * they fit in this, else those matrices round to nearest. */
#define CALIB_EXPERT_BYTES (4.0 * (1 << 30))

typedef struct {
    int n;    /* columns; 0 = never seen */
    float *h; /* n x n: H while gathering, then GPTQ's U */
} gram;

struct calib {
    const char *cmd;
    int n_layers, n_moe_layers, n_experts, slots;
    int experts_skipped; /* the experts' down inputs would not fit CALIB_EXPERT_BYTES */
    gram *g;             /* [layer * slots + slot]: slot = kind, or MOE_INPUT_KINDS + routed expert */
};

static int slot(moe_input_kind kind, int expert) { return expert >= 0 ? MOE_INPUT_KINDS + expert : (int)kind; }

static void accumulate(void *user, int layer, moe_input_kind kind, int expert, const float *x, int n, int cols) {
    calib *c = user;
    if (expert >= 0 && !c->experts_skipped &&
        (double)c->n_moe_layers * c->n_experts * cols * cols * sizeof(float) > CALIB_EXPERT_BYTES)
        c->experts_skipped = 1;
    if (expert >= c->n_experts || (expert >= 0 && c->experts_skipped)) return;
    gram *g = &c->g[layer * c->slots + slot(kind, expert)];
    if (!g->h) {
        g->h = calloc((size_t)cols * cols, sizeof(float));
        if (!g->h) die(1, c->cmd, "out of memory for a %d x %d calibration matrix", cols, cols);
        g->n = cols;
    }
#pragma omp parallel for schedule(dynamic, 8)
    for (int i = 0; i < cols; i++) { /* row i of H += x_t[i] * x_t */
        float *hi = g->h + (size_t)i * cols;
        for (int t = 0; t < n; t++) {
            const float *xt = x + (size_t)t * cols;
            for (int j = 0; j < cols; j++) hi[j] += xt[i] * xt[j];
        }
    }
}

calib *calib_run(const char *cmd, const moe_model *m, const char *path, int max_tokens, int quiet) {
    moe_model_info info;
    moe_model_get_info(m, &info);
    if (!info.has_weights) die(1, cmd, "--calib: this is a tokenizer-only file: it has no weights to run");
    size_t len;
    char *text = read_file_or_die(cmd, path, &len);
    int n_tok;
    int32_t *toks = tokenize_or_die(cmd, m, text, len, MOE_TOK_ADD_BOS, &n_tok);
    free(text);
    if (n_tok < 2) die(1, cmd, "--calib %s: the text has %d tokens; calibration needs some text", path, n_tok);
    if (n_tok > max_tokens) n_tok = max_tokens;

    calib *c = calloc(1, sizeof *c);
    if (!c) die(1, cmd, "out of memory");
    c->cmd = cmd;
    c->n_layers = info.n_layers;
    c->n_moe_layers = info.n_moe_layers;
    c->n_experts = info.n_experts;
    c->slots = MOE_INPUT_KINDS + info.n_experts;
    if (!(c->g = calloc((size_t)c->n_layers * c->slots, sizeof(gram)))) die(1, cmd, "out of memory");
    moe_ctx_params cp = moe_ctx_default_params();
    cp.n_ctx = info.max_ctx < CALIB_CHUNK ? info.max_ctx : CALIB_CHUNK;
    moe_err err = {{0}};
    moe_ctx *ctx = moe_ctx_new(m, &cp, &err);
    if (!ctx) die(1, cmd, "%s", err.msg);
    moe_ctx_set_input_hook(ctx, accumulate, c);
    int32_t probe[2];
    int add_bos = moe_tokenize(m, "", 0, MOE_TOK_ADD_BOS, probe, 2, NULL) == 1 && info.bos >= 0;
    for (int p = 0; p < n_tok; p += cp.n_ctx) {
        int n = n_tok - p < cp.n_ctx ? n_tok - p : cp.n_ctx;
        int32_t first = toks[p];
        if (add_bos) toks[p] = info.bos; /* each chunk a sequence of its own, started as a text is */
        moe_ctx_reset(ctx);
        if (moe_eval(ctx, toks + p, n, NULL, &err)) die(1, cmd, "--calib: %s", err.msg);
        toks[p] = first;
        if (!quiet) fprintf(stderr, "\r  calibrating: %d of %d tokens   ", p + n, n_tok);
    }
    moe_ctx_free(ctx);
    free(toks);
    for (int i = 0; i < c->n_layers * c->slots; i++) {
        gram *g = &c->g[i];
        if (!g->h) continue;
        float *u = malloc(sizeof(float) * (size_t)g->n * g->n);
        if (!u) die(1, cmd, "out of memory for a %d x %d calibration matrix", g->n, g->n);
        if (gptq_factor(g->h, g->n, CALIB_DAMP, u))
            die(1, cmd, "--calib: layer %d's inputs give an H (%d x %d) GPTQ cannot factor: non-finite activations?",
                i / c->slots, g->n, g->n);
        free(g->h);
        g->h = u;
    }
    if (!quiet) fprintf(stderr, "\r%60s\r", "");
    fprintf(stderr, "calibrated on %d tokens of %s%s\n", n_tok, path,
            c->experts_skipped ? " (the routed experts' down projections round to nearest: their H would not fit 4 GB)"
                               : "");
    return c;
}

/* Which input a matrix reads, by the part of its name after "blk.N.";
 * *per_expert: one input per routed expert (the experts' stacked downs). */
static int input_kind(const char *s, int len, int *per_expert) {
    static const struct {
        const char *name;
        moe_input_kind kind;
        int per_expert;
    } K[] = {{"attn_q", MOE_INPUT_ATTN, 0},           {"attn_k", MOE_INPUT_ATTN, 0},
             {"attn_v", MOE_INPUT_ATTN, 0},           {"attn_q_a", MOE_INPUT_ATTN, 0},
             {"attn_kv_a", MOE_INPUT_ATTN, 0},        {"attn_o", MOE_INPUT_ATTN_OUT, 0},
             {"ffn_gate", MOE_INPUT_FFN, 0},          {"ffn_up", MOE_INPUT_FFN, 0},
             {"ffn_gate_exps", MOE_INPUT_FFN, 0},     {"ffn_up_exps", MOE_INPUT_FFN, 0},
             {"ffn_gate_up_exps", MOE_INPUT_FFN, 0},
             {"ffn_gate_shexp", MOE_INPUT_FFN, 0},    {"ffn_up_shexp", MOE_INPUT_FFN, 0},
             {"ffn_down", MOE_INPUT_FFN_DOWN, 0},     {"ffn_down_shexp", MOE_INPUT_FFN_DOWN, 0},
             {"ffn_down_exps", MOE_INPUT_FFN_DOWN, 1},
             /* Gated DeltaNet layers report their mixer's input and output as attention's */
             {"ssm_qkv", MOE_INPUT_ATTN, 0},          {"ssm_z", MOE_INPUT_ATTN, 0},
             {"ssm_qkvz", MOE_INPUT_ATTN, 0},
             {"ssm_beta", MOE_INPUT_ATTN, 0},         {"ssm_alpha", MOE_INPUT_ATTN, 0},
             {"ssm_out", MOE_INPUT_ATTN_OUT, 0}};
    for (size_t i = 0; i < sizeof K / sizeof *K; i++)
        if ((int)strlen(K[i].name) == len && !memcmp(s, K[i].name, (size_t)len)) {
            *per_expert = K[i].per_expert;
            return (int)K[i].kind;
        }
    return -1;
}

const float *calib_factor(const calib *c, const char *name, int len, int expert, int *n) {
    if (!c || len < 6 || memcmp(name, "blk.", 4)) return NULL;
    int layer = 0, i = 4;
    for (; i < len && name[i] >= '0' && name[i] <= '9' && layer < 1 << 20; i++) layer = layer * 10 + (name[i] - '0');
    if (i == 4 || i >= len || name[i] != '.' || layer >= c->n_layers) return NULL;
    int per_expert = 0, kind = input_kind(name + i + 1, len - i - 1, &per_expert);
    if (kind < 0 || (per_expert && (expert < 0 || expert >= c->n_experts))) return NULL;
    const gram *g = &c->g[layer * c->slots + slot((moe_input_kind)kind, per_expert ? expert : -1)];
    *n = g->n;
    return g->h;
}

void calib_free(calib *c) {
    if (!c) return;
    for (int i = 0; i < c->n_layers * c->slots; i++) free(c->g[i].h);
    free(c->g);
    free(c);
}
