/* config.c - bind the file's metadata to moe_config through one table.
 *
 * Each key has a kind, a default (or "required"), and for string-valued
 * choices the list of allowed values. Keys not in the table are errors: a file
 * written by a newer converter is refused, never half understood. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "dtype.h"
#include "util.h"

typedef enum { K_INT, K_FLOAT, K_ENUM, K_TEXT, K_INTS } key_kind;

#define NOT_BOUND ((size_t)-1)
#define REQ 1   /* required in model files */
#define OPT 0

static const char *const ARCHS[] = {"llama", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe",
                                    "olmoe", "deepseek_v2", "deepseek_v3", "granitemoe", "glm4_moe",
                                    "gpt_oss", "qwen3_5_moe",
                                    "qwen3_next", NULL};
static const char *const ATTN_TYPES[] = {"gqa", "mla", NULL};
static const char *const QK_NORMS[] = {"none", "head", "full", NULL};
static const char *const ROPE_LAYOUTS[] = {"half", "pair", NULL};
static const char *const ROPE_SCALINGS[] = {"none", "linear", "yarn", "llama3", NULL};
static const char *const SCORES[] = {"softmax", "sigmoid", NULL};
static const char *const GROUP_SCORES[] = {"max", "top2sum", NULL};
static const char *const ACTS[] = {"swiglu", "swiglu_oai", NULL};

typedef struct {
    const char *key;
    key_kind kind;
    int required;
    size_t offset;               /* into moe_config, or NOT_BOUND (read elsewhere) */
    double def;                  /* default; for K_ENUM the index */
    const char *const *choices;  /* K_ENUM */
} key_spec;

#define AT(field) offsetof(moe_config, field)

/* Defaults of -1 are derived from other keys after binding. */
static const key_spec KEYS[] = {
    {"general.arch", K_ENUM, REQ, AT(arch), 0, ARCHS},
    {"general.name", K_TEXT, OPT, AT(name), 0, NULL},
    {"general.source", K_TEXT, OPT, NOT_BOUND, 0, NULL},
    {"general.skipped", K_TEXT, OPT, NOT_BOUND, 0, NULL},

    {"model.vocab_size", K_INT, REQ, AT(vocab_size), 0, NULL},
    {"model.dim", K_INT, REQ, AT(dim), 0, NULL},
    {"model.n_layers", K_INT, REQ, AT(n_layers), 0, NULL},
    {"model.n_heads", K_INT, REQ, AT(n_heads), 0, NULL},
    {"model.n_kv_heads", K_INT, REQ, AT(n_kv_heads), 0, NULL},
    {"model.head_dim", K_INT, REQ, AT(head_dim), 0, NULL},
    {"model.ff_dim", K_INT, REQ, AT(ff_dim), 0, NULL},
    {"model.max_ctx", K_INT, REQ, AT(max_ctx), 0, NULL},
    {"model.norm_eps", K_FLOAT, REQ, AT(norm_eps), 0, NULL},
    {"model.tied_embd", K_INT, OPT, AT(tied_embd), 0, NULL},
    {"model.embd_scale", K_FLOAT, OPT, AT(embd_scale), 1, NULL},
    {"model.residual_scale", K_FLOAT, OPT, AT(residual_scale), 1, NULL},
    {"model.logit_scale", K_FLOAT, OPT, AT(logit_scale), 1, NULL},
    {"model.n_mtp_layers", K_INT, OPT, AT(n_mtp_layers), 0, NULL},

    {"attn.type", K_ENUM, OPT, AT(attn_type), ATTN_GQA, ATTN_TYPES},
    {"attn.scale", K_FLOAT, REQ, AT(attn_scale), 0, NULL},
    {"attn.qkv_bias", K_INT, OPT, AT(qkv_bias), 0, NULL},
    {"attn.qk_norm", K_ENUM, OPT, AT(qk_norm), QK_NORM_NONE, QK_NORMS},
    {"attn.clip_qkv", K_FLOAT, OPT, AT(clip_qkv), 0, NULL},
    {"attn.window", K_INT, OPT, AT(window), 0, NULL},
    {"attn.window_layers", K_INTS, OPT, NOT_BOUND, 0, NULL},
    {"attn.o_bias", K_INT, OPT, AT(o_bias), 0, NULL},
    {"attn.sinks", K_INT, OPT, AT(sinks), 0, NULL},
    {"attn.out_gate", K_INT, OPT, AT(out_gate), 0, NULL},

    {"rope.theta", K_FLOAT, REQ, AT(rope_theta), 0, NULL},
    {"rope.dim", K_INT, OPT, AT(rope_dim), -1, NULL},
    {"rope.layout", K_ENUM, OPT, AT(rope_layout), ROPE_HALF, ROPE_LAYOUTS},
    {"rope.scaling", K_ENUM, OPT, AT(rope_scaling), ROPE_SCALE_NONE, ROPE_SCALINGS},
    {"rope.factor", K_FLOAT, OPT, AT(rope_factor), 1, NULL},
    {"rope.orig_ctx", K_INT, OPT, AT(rope_orig_ctx), -1, NULL},
    {"rope.beta_fast", K_FLOAT, OPT, AT(rope_beta_fast), 32, NULL},
    {"rope.beta_slow", K_FLOAT, OPT, AT(rope_beta_slow), 1, NULL},
    {"rope.attn_factor", K_FLOAT, OPT, AT(rope_attn_factor), 1, NULL},
    {"rope.yarn_truncate", K_INT, OPT, AT(rope_yarn_truncate), 1, NULL},
    {"rope.low_freq_factor", K_FLOAT, OPT, AT(rope_low_freq_factor), 1, NULL},
    {"rope.high_freq_factor", K_FLOAT, OPT, AT(rope_high_freq_factor), 4, NULL},

    {"moe.n_experts", K_INT, OPT, AT(route.n_experts), 0, NULL},
    {"moe.n_active", K_INT, OPT, AT(route.k), 0, NULL},
    {"moe.ff_dim", K_INT, OPT, AT(moe_ff_dim), 0, NULL},
    {"moe.layers", K_INTS, OPT, NOT_BOUND, 0, NULL},
    {"moe.score", K_ENUM, OPT, AT(route.score), SCORE_SOFTMAX, SCORES},
    {"moe.norm_topk", K_INT, OPT, AT(route.norm_topk), 0, NULL},
    {"moe.scale", K_FLOAT, OPT, AT(route.scale), 1, NULL},
    {"moe.n_groups", K_INT, OPT, AT(route.n_groups), 1, NULL},
    {"moe.groups_active", K_INT, OPT, AT(route.groups_active), -1, NULL},
    {"moe.group_score", K_ENUM, OPT, AT(route.group_score), GROUP_MAX, GROUP_SCORES},
    {"moe.bias", K_INT, OPT, AT(route.use_bias), 0, NULL},
    {"moe.shared_ff", K_INT, OPT, AT(shared_ff), 0, NULL},
    {"moe.shared_gate", K_INT, OPT, AT(shared_gate), 0, NULL},
    {"moe.router_bias", K_INT, OPT, AT(router_bias), 0, NULL},
    {"moe.expert_bias", K_INT, OPT, AT(expert_bias), 0, NULL},
    {"moe.act", K_ENUM, OPT, AT(act), ACT_SWIGLU, ACTS},
    {"moe.act_limit", K_FLOAT, OPT, AT(act_limit), 0, NULL},
    {"moe.act_alpha", K_FLOAT, OPT, AT(act_alpha), 1.702, NULL},

    {"mla.q_lora", K_INT, OPT, AT(q_lora), 0, NULL},
    {"mla.kv_lora", K_INT, OPT, AT(kv_lora), 0, NULL},
    {"mla.nope_dim", K_INT, OPT, AT(nope_dim), 0, NULL},
    {"mla.rope_dim", K_INT, OPT, AT(mla_rope_dim), 0, NULL},
    {"mla.v_dim", K_INT, OPT, AT(v_dim), 0, NULL},
    {"mla.latent_act", K_INT, OPT, AT(mla_latent_act), 0, NULL},

    {"ssm.layers", K_INTS, OPT, NOT_BOUND, 0, NULL},
    {"ssm.conv_kernel", K_INT, OPT, AT(ssm_conv_kernel), 0, NULL},
    {"ssm.n_k_heads", K_INT, OPT, AT(ssm_n_k_heads), 0, NULL},
    {"ssm.n_v_heads", K_INT, OPT, AT(ssm_n_v_heads), 0, NULL},
    {"ssm.k_dim", K_INT, OPT, AT(ssm_k_dim), 0, NULL},
    {"ssm.v_dim", K_INT, OPT, AT(ssm_v_dim), 0, NULL},
    {"ssm.v_tiled", K_INT, OPT, AT(ssm_v_tiled), 0, NULL},
    {"ssm.qkvz", K_INT, OPT, AT(ssm_qkvz), 0, NULL},

    /* tok.* values are read by tokenizer.c; here only their presence and type */
    {"tok.model", K_TEXT, OPT, NOT_BOUND, 0, NULL},
    {"tok.pre", K_TEXT, OPT, NOT_BOUND, 0, NULL},
    {"tok.normalize", K_TEXT, OPT, NOT_BOUND, 0, NULL},
    {"tok.bos", K_INT, OPT, NOT_BOUND, 0, NULL},
    {"tok.eos", K_INT, OPT, NOT_BOUND, 0, NULL},
    {"tok.unk", K_INT, OPT, NOT_BOUND, 0, NULL},
    {"tok.pad", K_INT, OPT, NOT_BOUND, 0, NULL},
    {"tok.eos_ids", K_INTS, OPT, NOT_BOUND, 0, NULL},
    {"tok.add_bos", K_INT, OPT, NOT_BOUND, 0, NULL},
    {"tok.add_eos", K_INT, OPT, NOT_BOUND, 0, NULL},
    {"tok.add_space_prefix", K_INT, OPT, NOT_BOUND, 0, NULL},
    {"tok.ignore_merges", K_INT, OPT, NOT_BOUND, 0, NULL},
    {"tok.chat_template", K_TEXT, OPT, NOT_BOUND, 0, NULL},
};

#define N_KEYS ((int)(sizeof KEYS / sizeof KEYS[0]))

static const key_spec *find_spec(const char *key, int len) {
    for (int i = 0; i < N_KEYS; i++)
        if ((int)strlen(KEYS[i].key) == len && memcmp(KEYS[i].key, key, (size_t)len) == 0) return &KEYS[i];
    return NULL;
}

/* The fields a key binds to are ints, floats, enums (stored as int) or char arrays. */
static int *int_at(moe_config *c, const key_spec *s) { return (int *)((char *)c + s->offset); }
static float *float_at(moe_config *c, const key_spec *s) { return (float *)((char *)c + s->offset); }

static void set_defaults(moe_config *c) {
    for (int i = 0; i < N_KEYS; i++) {
        const key_spec *s = &KEYS[i];
        if (s->offset == NOT_BOUND) continue;
        if (s->kind == K_INT || (s->kind == K_ENUM && s->offset != AT(arch))) *int_at(c, s) = (int)s->def;
        if (s->kind == K_FLOAT) *float_at(c, s) = (float)s->def;
    }
}

/* Bind one metadata entry; type and range errors name the key. */
static int bind_key(moe_config *c, const key_spec *s, const moe_kv *kv, moe_err *err) {
    static const char *const TYPE_NAMES[] = {"INT", "FLOAT", "STR", "INTS"};
    kv_type want = s->kind == K_INT ? KV_INT : s->kind == K_FLOAT ? KV_FLOAT : s->kind == K_INTS ? KV_INTS : KV_STR;
    /* strict, FLOAT too: one flipped type byte must not turn norm_eps's bits into 4.5e18 */
    if (kv->type != want)
        return moe_fail(err, "metadata %s: type %s, expected %s", s->key, TYPE_NAMES[kv->type], TYPE_NAMES[want]);
    if (s->offset == NOT_BOUND) return 0;
    switch (s->kind) {
    case K_INT:
        if (kv->i < -1 || kv->i > ((int64_t)1 << 30))
            return moe_fail(err, "metadata %s: value %lld out of range", s->key, (long long)kv->i);
        *int_at(c, s) = (int)kv->i;
        return 0;
    case K_FLOAT: {
        double v = kv->f;
        if (!isfinite(v) || fabs(v) > 3.0e38) return moe_fail(err, "metadata %s: value %g is not a finite float", s->key, v);
        *float_at(c, s) = (float)v;
        return 0;
    }
    case K_ENUM:
        for (int i = 0; s->choices[i]; i++)
            if (strlen(s->choices[i]) == kv->len && memcmp(s->choices[i], kv->str, kv->len) == 0) {
                if (s->offset == AT(arch))
                    snprintf(c->arch, sizeof c->arch, "%s", s->choices[i]);
                else
                    *int_at(c, s) = i;
                return 0;
            }
        return moe_fail(err, "metadata %s: unknown value \"%.*s\"", s->key, (int)(kv->len > 64 ? 64 : kv->len), kv->str);
    case K_TEXT: {
        char *dst = (char *)c + s->offset;
        size_t cap = s->offset == AT(name) ? sizeof c->name : sizeof c->arch;
        snprintf(dst, cap, "%.*s", (int)(kv->len < cap ? kv->len : cap - 1), kv->str);
        return 0;
    }
    case K_INTS:
        return 0;
    }
    return 0;
}

/* Which layers attend within attn.window: attn.window_layers (1 = sliding,
 * 0 = full; gpt-oss alternates), or every layer when the list is absent. */
static int window_layers(moe_config *c, const moe_file *f, moe_err *err) {
    const moe_kv *list = moef_kv(f, "attn.window_layers");
    c->window_layer = malloc((size_t)c->n_layers);
    if (!c->window_layer) return moe_fail(err, "out of memory");
    memset(c->window_layer, c->window > 0, (size_t)c->n_layers);
    if (!list) return 0;
    if (c->window == 0) return moe_fail(err, "metadata attn.window_layers given without attn.window");
    if ((int)list->len != c->n_layers)
        return moe_fail(err, "attn.window_layers has %u entries, expected model.n_layers %d", list->len, c->n_layers);
    for (int l = 0; l < c->n_layers; l++) {
        int64_t v = moef_kv_int_at(list, (uint32_t)l);
        if (v != 0 && v != 1) return moe_fail(err, "attn.window_layers[%d] = %lld, expected 0 or 1", l, (long long)v);
        c->window_layer[l] = (unsigned char)v;
    }
    return 0;
}

/* The Gated DeltaNet keys: ssm.layers names the linear-attention layers;
 * when it is absent every layer is attention and no ssm.* key may be set. */
static int validate_ssm(moe_config *c, const moe_file *f, moe_err *err) {
    c->ssm_layer = calloc((size_t)c->n_layers, 1);
    if (!c->ssm_layer) return moe_fail(err, "out of memory");
    const moe_kv *layers = moef_kv(f, "ssm.layers");
    if (!layers) {
        if (c->ssm_conv_kernel || c->ssm_n_k_heads || c->ssm_n_v_heads || c->ssm_k_dim || c->ssm_v_dim || c->ssm_v_tiled ||
            c->ssm_qkvz)
            return moe_fail(err, "ssm.* dimensions given without ssm.layers");
        return 0;
    }
    if ((int)layers->len != c->n_layers)
        return moe_fail(err, "ssm.layers has %u entries, expected model.n_layers %d", layers->len, c->n_layers);
    for (int l = 0; l < c->n_layers; l++) {
        int64_t v = moef_kv_int_at(layers, (uint32_t)l);
        if (v != 0 && v != 1) return moe_fail(err, "ssm.layers[%d] = %lld, expected 0 or 1", l, (long long)v);
        c->ssm_layer[l] = (unsigned char)v;
        c->n_ssm_layers += (int)v;
    }
    if (!c->n_ssm_layers) return 0;
    if (c->ssm_conv_kernel < 1 || c->ssm_conv_kernel > MAX_CONV_KERNEL)
        return moe_fail(err, "ssm.conv_kernel %d out of range 1..%d", c->ssm_conv_kernel, MAX_CONV_KERNEL);
    if (c->ssm_n_k_heads < 1 || c->ssm_n_k_heads > 4096 || c->ssm_n_v_heads < 1 || c->ssm_n_v_heads > 4096 ||
        c->ssm_n_v_heads % c->ssm_n_k_heads)
        return moe_fail(err, "ssm.n_v_heads %d must be a multiple of ssm.n_k_heads %d (both in 1..4096)",
                        c->ssm_n_v_heads, c->ssm_n_k_heads);
    if (c->ssm_k_dim < 1 || c->ssm_k_dim > 4096 || c->ssm_v_dim < 1 || c->ssm_v_dim > 4096)
        return moe_fail(err, "ssm.k_dim %d and ssm.v_dim %d must be in 1..4096", c->ssm_k_dim, c->ssm_v_dim);
    if (c->ssm_v_tiled != 0 && c->ssm_v_tiled != 1) return moe_fail(err, "ssm.v_tiled %d, expected 0 or 1", c->ssm_v_tiled);
    if (c->ssm_qkvz != 0 && c->ssm_qkvz != 1) return moe_fail(err, "ssm.qkvz %d, expected 0 or 1", c->ssm_qkvz);
    /* HF's in_proj_qkvz groups the value heads by key head: the grouped order */
    if (c->ssm_qkvz && c->ssm_v_tiled) return moe_fail(err, "ssm.qkvz and ssm.v_tiled cannot both be set");
    return 0;
}

/* Checks that make later arithmetic safe and the model well-defined. */
static int validate(moe_config *c, const moe_file *f, moe_err *err) {
#define CHECK(cond, ...) \
    do {                 \
        if (!(cond)) return moe_fail(err, __VA_ARGS__); \
    } while (0)
    const int BIG = 1 << 20;
    CHECK(c->vocab_size > 0 && c->vocab_size <= 16 * BIG, "model.vocab_size %d out of range", c->vocab_size);
    CHECK(c->dim > 0 && c->dim <= BIG, "model.dim %d out of range", c->dim);
    CHECK(c->n_layers > 0 && c->n_layers <= 4096, "model.n_layers %d out of range", c->n_layers);
    CHECK(c->n_heads > 0 && c->n_heads <= 4096, "model.n_heads %d out of range", c->n_heads);
    CHECK(c->n_kv_heads > 0 && c->n_heads % c->n_kv_heads == 0,
          "model.n_heads %d is not a multiple of model.n_kv_heads %d", c->n_heads, c->n_kv_heads);
    CHECK(c->head_dim > 0 && c->head_dim <= 4096, "model.head_dim %d out of range", c->head_dim);
    CHECK(c->ff_dim >= 0 && c->ff_dim <= 16 * BIG, "model.ff_dim %d out of range", c->ff_dim);
    CHECK(c->max_ctx > 0, "model.max_ctx %d must be positive", c->max_ctx);
    CHECK(c->norm_eps > 0, "model.norm_eps %g must be positive", c->norm_eps);
    CHECK(c->tied_embd == 0 || c->tied_embd == 1, "model.tied_embd must be 0 or 1");
    CHECK(c->n_mtp_layers >= 0 && c->n_mtp_layers <= 4096, "model.n_mtp_layers %d out of range", c->n_mtp_layers);
    CHECK(c->attn_scale > 0, "attn.scale %g must be positive", c->attn_scale);
    CHECK(c->qkv_bias == 0 || c->qkv_bias == 1, "attn.qkv_bias must be 0 or 1");
    CHECK(c->clip_qkv >= 0, "attn.clip_qkv %g must be >= 0", c->clip_qkv);
    CHECK(c->window >= 0, "attn.window %d must be >= 0", c->window);
    CHECK(c->o_bias == 0 || c->o_bias == 1, "attn.o_bias must be 0 or 1");
    CHECK(c->sinks == 0 || (c->sinks == 1 && c->attn_type == ATTN_GQA), "attn.sinks must be 0 or 1 (gqa only)");
    CHECK(c->rope_yarn_truncate == 0 || c->rope_yarn_truncate == 1, "rope.yarn_truncate must be 0 or 1");
    if (window_layers(c, f, err)) return -1;
    CHECK(c->out_gate == 0 || c->out_gate == 1, "attn.out_gate must be 0 or 1");
    CHECK(!c->out_gate || c->attn_type == ATTN_GQA, "attn.out_gate applies to gqa attention only");

    if (c->rope_dim < 0) c->rope_dim = c->attn_type == ATTN_MLA ? c->mla_rope_dim : c->head_dim;
    if (c->rope_orig_ctx < 0) c->rope_orig_ctx = c->max_ctx;
    CHECK(c->rope_theta > 1, "rope.theta %g must be > 1", c->rope_theta);
    CHECK(c->rope_dim > 0 && c->rope_dim % 2 == 0 && c->rope_dim <= c->head_dim,
          "rope.dim %d must be even and in 2..head_dim %d", c->rope_dim, c->head_dim);
    CHECK(c->rope_factor > 0, "rope.factor %g must be positive", c->rope_factor);
    CHECK(c->rope_orig_ctx > 0, "rope.orig_ctx %d must be positive", c->rope_orig_ctx);
    CHECK(c->rope_beta_fast > 0 && c->rope_beta_slow > 0, "rope.beta_fast/beta_slow must be positive");
    CHECK(c->rope_scaling != ROPE_SCALE_LLAMA3 || c->rope_high_freq_factor > c->rope_low_freq_factor,
          "rope.high_freq_factor %g must exceed rope.low_freq_factor %g", c->rope_high_freq_factor,
          c->rope_low_freq_factor);

    if (c->attn_type == ATTN_MLA) {
        CHECK(c->kv_lora > 0 && c->kv_lora <= BIG, "mla.kv_lora %d out of range", c->kv_lora);
        CHECK(c->q_lora >= 0 && c->q_lora <= BIG, "mla.q_lora %d out of range", c->q_lora);
        CHECK(c->nope_dim > 0 && c->v_dim > 0 && c->v_dim <= 4096, "mla.nope_dim and mla.v_dim must be positive");
        CHECK(c->mla_latent_act >= 0 && c->mla_latent_act < ACT_COUNT, "mla.latent_act %d is no activation type",
              c->mla_latent_act);
        CHECK(c->mla_rope_dim == c->rope_dim, "mla.rope_dim %d differs from rope.dim %d", c->mla_rope_dim, c->rope_dim);
        CHECK(c->head_dim == c->nope_dim + c->mla_rope_dim, "model.head_dim %d != mla.nope_dim %d + mla.rope_dim %d",
              c->head_dim, c->nope_dim, c->mla_rope_dim);
        CHECK(c->qk_norm == QK_NORM_NONE && !c->qkv_bias, "attn.qk_norm and attn.qkv_bias do not apply to mla");
    }

    route_config *r = &c->route;
    CHECK(r->n_experts >= 0 && r->n_experts <= 65536, "moe.n_experts %d out of range", r->n_experts);
    c->moe_layer = calloc((size_t)c->n_layers, 1);
    if (!c->moe_layer) return moe_fail(err, "out of memory");
    const moe_kv *layers = moef_kv(f, "moe.layers");
    int any_dense = 1;
    if (r->n_experts > 0) {
        CHECK(r->k >= 1 && r->k <= r->n_experts, "moe.n_active %d must be in 1..moe.n_experts %d", r->k, r->n_experts);
        CHECK(c->moe_ff_dim > 0 && c->moe_ff_dim <= 16 * BIG, "moe.ff_dim %d out of range", c->moe_ff_dim);
        CHECK(layers != NULL, "metadata moe.layers is required when moe.n_experts > 0");
        CHECK((int)layers->len == c->n_layers, "moe.layers has %u entries, expected model.n_layers %d", layers->len,
              c->n_layers);
        any_dense = 0;
        for (int l = 0; l < c->n_layers; l++) {
            int64_t v = moef_kv_int_at(layers, (uint32_t)l);
            CHECK(v == 0 || v == 1, "moe.layers[%d] = %lld, expected 0 or 1", l, (long long)v);
            c->moe_layer[l] = (unsigned char)v;
            if (!v) any_dense = 1;
        }
        if (r->groups_active < 0) r->groups_active = r->n_groups;
        CHECK(r->n_groups >= 1 && r->n_experts % r->n_groups == 0,
              "moe.n_groups %d does not divide moe.n_experts %d", r->n_groups, r->n_experts);
        CHECK(r->groups_active >= 1 && r->groups_active <= r->n_groups,
              "moe.groups_active %d must be in 1..moe.n_groups %d", r->groups_active, r->n_groups);
        CHECK(r->k <= r->groups_active * (r->n_experts / r->n_groups),
              "moe.n_active %d exceeds the experts in %d active groups", r->k, r->groups_active);
        CHECK(r->group_score != GROUP_TOP2SUM || r->n_groups == 1 || r->n_experts / r->n_groups >= 2,
              "moe.group_score top2sum needs at least 2 experts per group");
        CHECK(r->norm_topk == 0 || r->norm_topk == 1, "moe.norm_topk must be 0 or 1");
        CHECK(r->use_bias == 0 || r->use_bias == 1, "moe.bias must be 0 or 1");
        CHECK(c->shared_ff >= 0 && c->shared_ff <= 16 * BIG, "moe.shared_ff %d out of range", c->shared_ff);
        CHECK(c->shared_gate == 0 || (c->shared_gate == 1 && c->shared_ff > 0), "moe.shared_gate needs moe.shared_ff > 0");
        CHECK(c->router_bias == 0 || c->router_bias == 1, "moe.router_bias must be 0 or 1");
        CHECK(c->expert_bias == 0 || c->expert_bias == 1, "moe.expert_bias must be 0 or 1");
        CHECK(c->act != ACT_SWIGLU_OAI || (c->act_limit > 0 && c->act_alpha > 0),
              "moe.act swiglu_oai needs moe.act_limit > 0 and moe.act_alpha > 0");
    } else {
        CHECK(layers == NULL, "moe.layers given for a dense model (moe.n_experts = 0)");
        if (r->groups_active < 0) r->groups_active = 1;
    }
    CHECK(!any_dense || c->ff_dim > 0, "model.ff_dim must be positive: the model has dense FFN layers");
    return validate_ssm(c, f, err);
#undef CHECK
}

int config_load(moe_config *c, const moe_file *f, moe_err *err) {
    memset(c, 0, sizeof *c);
    set_defaults(c);
    /* every key must be known and well-typed, in model and tokenizer-only files */
    for (int i = 0; i < f->n_kv; i++) {
        const moe_kv *kv = &f->kv[i];
        const key_spec *s = find_spec(kv->key, kv->key_len);
        if (!s) return moe_fail(err, "unknown metadata key %.*s (file from a newer moe?)", kv->key_len, kv->key);
        if (bind_key(c, s, kv, err)) return -1;
    }
    c->has_weights = moef_kv(f, "general.arch") != NULL;
    if (!c->has_weights) {
        for (int i = 0; i < N_KEYS; i++)
            if (strncmp(KEYS[i].key, "tok.", 4) && strncmp(KEYS[i].key, "general.", 8) && moef_kv(f, KEYS[i].key))
                return moe_fail(err, "metadata %s present but general.arch missing", KEYS[i].key);
        return 0;
    }
    for (int i = 0; i < N_KEYS; i++)
        if (KEYS[i].required && !moef_kv(f, KEYS[i].key))
            return moe_fail(err, "metadata %s is required in a model file", KEYS[i].key);
    if (validate(c, f, err)) {
        config_free(c);
        return -1;
    }
    return 0;
}

void config_free(moe_config *c) {
    free(c->moe_layer);
    free(c->window_layer);
    c->moe_layer = NULL;
    c->window_layer = NULL;
    free(c->ssm_layer);
    c->ssm_layer = NULL;
}
