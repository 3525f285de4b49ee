/* model.c - open a .moe file and bind every tensor by name to the shape the
 * configuration implies (docs/FORMAT.md "Tensor names"). After this succeeds
 * the forward pass trusts its inputs; every failure names the tensor and the
 * numbers. A tensor the configuration does not use is an error too. */
#include "model.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

typedef struct {
    const moe_file *f;
    moe_err *err;
} binder;

/* Find name (printf-style), check rank and shape; NULL + err on mismatch. */
static moe_tensor *find_checked(binder *b, const char *name, int nd, const uint64_t *dims) {
    moe_tensor *t = moef_tensor(b->f, name);
    if (!t) {
        moe_fail(b->err, "tensor %s is missing", name);
        return NULL;
    }
    int same = t->n_dims == nd;
    for (int i = 0; same && i < nd; i++) same = t->dims[i] == dims[i];
    if (!same) {
        char got[96], want[96];
        shape_str(t->dims, t->n_dims, got, sizeof got);
        shape_str(dims, nd, want, sizeof want);
        moe_fail(b->err, "tensor %s: shape %s, expected %s", name, got, want);
        return NULL;
    }
    t->used = 1;
    return t;
}

/* Norms, biases and routers are small enough to read whole at load: a NaN or
 * Inf there is named now (the large matrices are caught by the forward pass,
 * which stops at the first layer whose output is not finite). */
static int check_finite(binder *b, const char *name, moe_dtype dtype, const void *data, uint64_t n) {
    int64_t at = dtype_find_nonfinite(dtype, data, n);
    if (at >= 0) return moe_fail(b->err, "tensor %s: element %lld is not finite (NaN or Inf)", name, (long long)at);
    return 0;
}

/* An F32 tensor of rows vectors of n elements: [n] (rows == 0) or [rows, n]. */
static int bind_f32(binder *b, const float **out, const char *name, int rows, int n) {
    uint64_t dims[2] = {(uint64_t)rows, (uint64_t)n};
    moe_tensor *t = rows ? find_checked(b, name, 2, dims) : find_checked(b, name, 1, dims + 1);
    if (!t) return -1;
    if (t->dtype != DT_F32) return moe_fail(b->err, "tensor %s: dtype %s, expected F32", name, dtype_name(t->dtype));
    if (check_finite(b, name, DT_F32, t->data, t->nbytes / 4)) return -1;
    *out = t->data;
    return 0;
}

/* A 1-D F32 vector of n elements. */
static int bind_vec(binder *b, const float **out, const char *name, int n) { return bind_f32(b, out, name, 0, n); }
/* A 2-D F32 table [rows, cols] read by plain loops (conv taps). */
static int bind_f32_2d(binder *b, const float **out, const char *name, int rows, int cols) {
    uint64_t dims[2] = {(uint64_t)rows, (uint64_t)cols};
    moe_tensor *t = find_checked(b, name, 2, dims);
    if (!t) return -1;
    if (t->dtype != DT_F32) return moe_fail(b->err, "tensor %s: dtype %s, expected F32", name, dtype_name(t->dtype));
    if (check_finite(b, name, DT_F32, t->data, t->nbytes / 4)) return -1;
    *out = t->data;
    return 0;
}

/* A matrix [rows, cols] (n_mats == 0) or a stack [n_mats, rows, cols] of a
 * weight dtype: F32/F16/BF16 or a block-quantized type. */
static int bind_mat(binder *b, wmat *out, const char *name, int n_mats, int rows, int cols) {
    uint64_t dims[3];
    int nd = 0;
    if (n_mats) dims[nd++] = (uint64_t)n_mats;
    dims[nd++] = (uint64_t)rows;
    dims[nd++] = (uint64_t)cols;
    moe_tensor *t = find_checked(b, name, nd, dims);
    if (!t) return -1;
    const dtype_traits *dt = dtype_info(t->dtype);
    if (!dt->is_float && !dt->is_quant)
        return moe_fail(b->err, "tensor %s: dtype %s is not a weight type", name, dtype_name(t->dtype));
    out->data = t->data;
    out->dtype = t->dtype;
    out->rows = rows;
    out->cols = cols;
    out->n_mats = n_mats ? n_mats : 1;
    out->row_bytes = dtype_row_bytes(t->dtype, (uint64_t)cols);
    out->mat_bytes = (size_t)rows * out->row_bytes;
    return 0;
}

#define LNAME(buf, l, what) (snprintf(buf, sizeof buf, "blk.%d.%s", l, what), buf)

static int bind_attention(binder *b, const moe_config *c, layer_weights *L, int l) {
    char nm[96];
    int d = c->dim, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    if (c->attn_type == ATTN_MLA) {
        int qk = c->nope_dim + c->mla_rope_dim;
        if (c->q_lora > 0) {
            if (bind_mat(b, &L->q_a, LNAME(nm, l, "attn_q_a"), 0, c->q_lora, d) ||
                bind_vec(b, &L->q_a_norm, LNAME(nm, l, "attn_q_a_norm"), c->q_lora) ||
                bind_mat(b, &L->q_b, LNAME(nm, l, "attn_q_b"), 0, nh * qk, c->q_lora))
                return -1;
        } else if (bind_mat(b, &L->q, LNAME(nm, l, "attn_q"), 0, nh * qk, d)) {
            return -1;
        }
        if (bind_mat(b, &L->kv_a, LNAME(nm, l, "attn_kv_a"), 0, c->kv_lora + c->mla_rope_dim, d) ||
            bind_vec(b, &L->kv_a_norm, LNAME(nm, l, "attn_kv_a_norm"), c->kv_lora) ||
            bind_mat(b, &L->k_b, LNAME(nm, l, "attn_k_b"), nh, c->kv_lora, c->nope_dim) ||
            bind_mat(b, &L->v_b, LNAME(nm, l, "attn_v_b"), nh, c->v_dim, c->kv_lora) ||
            bind_mat(b, &L->o, LNAME(nm, l, "attn_o"), 0, d, nh * c->v_dim))
            return -1;
        /* the per-head absorbed products run inside the attention's threads on float rows */
        if (!dtype_info(L->k_b.dtype)->is_float || !dtype_info(L->v_b.dtype)->is_float)
            return moe_fail(b->err, "tensors blk.%d.attn_k_b/attn_v_b must stay F32/F16/BF16", l);
        return 0;
    }
    if (bind_mat(b, &L->q, LNAME(nm, l, "attn_q"), 0, (c->out_gate ? 2 : 1) * nh * hd, d) ||
        bind_mat(b, &L->k, LNAME(nm, l, "attn_k"), 0, nkv * hd, d) ||
        bind_mat(b, &L->v, LNAME(nm, l, "attn_v"), 0, nkv * hd, d) ||
        bind_mat(b, &L->o, LNAME(nm, l, "attn_o"), 0, d, nh * hd))
        return -1;
    if (c->qkv_bias && (bind_vec(b, &L->q_bias, LNAME(nm, l, "attn_q_bias"), nh * hd) ||
                        bind_vec(b, &L->k_bias, LNAME(nm, l, "attn_k_bias"), nkv * hd) ||
                        bind_vec(b, &L->v_bias, LNAME(nm, l, "attn_v_bias"), nkv * hd)))
        return -1;
    if ((c->o_bias && bind_vec(b, &L->o_bias, LNAME(nm, l, "attn_o_bias"), d)) ||
        (c->sinks && bind_vec(b, &L->sinks, LNAME(nm, l, "attn_sinks"), nh)))
        return -1;
    if (c->qk_norm != QK_NORM_NONE) {
        int full = c->qk_norm == QK_NORM_FULL;
        if (bind_vec(b, &L->q_norm, LNAME(nm, l, "attn_q_norm"), full ? nh * hd : hd) ||
            bind_vec(b, &L->k_norm, LNAME(nm, l, "attn_k_norm"), full ? nkv * hd : hd))
            return -1;
    }
    return 0;
}

/* Gated DeltaNet (HF Qwen3NextGatedDeltaNet / Qwen3_5MoeGatedDeltaNet) */
static int bind_deltanet(binder *b, const moe_config *c, layer_weights *L, int l) {
    char nm[96];
    int d = c->dim, nv = c->ssm_n_v_heads, vw = ssm_value_width(c), ch = ssm_channels(c);
    int in = c->ssm_qkvz ? bind_mat(b, &L->ssm_qkvz, LNAME(nm, l, "ssm_qkvz"), 0, ch + vw, d)
                         : bind_mat(b, &L->ssm_qkv, LNAME(nm, l, "ssm_qkv"), 0, ch, d) ||
                               bind_mat(b, &L->ssm_z, LNAME(nm, l, "ssm_z"), 0, vw, d);
    return in || bind_mat(b, &L->ssm_beta, LNAME(nm, l, "ssm_beta"), 0, nv, d) ||
           bind_mat(b, &L->ssm_alpha, LNAME(nm, l, "ssm_alpha"), 0, nv, d) ||
           bind_f32_2d(b, &L->ssm_conv, LNAME(nm, l, "ssm_conv"), ch, c->ssm_conv_kernel) ||
           bind_vec(b, &L->ssm_a, LNAME(nm, l, "ssm_a"), nv) || bind_vec(b, &L->ssm_dt, LNAME(nm, l, "ssm_dt"), nv) ||
           bind_vec(b, &L->ssm_norm, LNAME(nm, l, "ssm_norm"), c->ssm_v_dim) ||
           bind_mat(b, &L->ssm_out, LNAME(nm, l, "ssm_out"), 0, d, vw);
}

/* The experts' gate and up matrices: ffn_gate_exps + ffn_up_exps, or views
 * into one fused ffn_gate_up_exps [n_experts, 2*ff, dim] whose experts hold
 * their ff gate rows, then their ff up rows (llama.cpp's FFN_GATE_UP_EXP, as
 * its converter's --fuse-gate-up-exps writes it): no copy, each half steps
 * 2*ff rows from one expert to the next. */
static int bind_gate_up(binder *b, layer_weights *L, int l, int E, int F, int d) {
    char nm[96];
    if (!moef_tensor(b->f, LNAME(nm, l, "ffn_gate_up_exps")))
        return bind_mat(b, &L->gate_exps, LNAME(nm, l, "ffn_gate_exps"), E, F, d) ||
               bind_mat(b, &L->up_exps, LNAME(nm, l, "ffn_up_exps"), E, F, d);
    if (moef_tensor(b->f, LNAME(nm, l, "ffn_gate_exps")) || moef_tensor(b->f, LNAME(nm, l, "ffn_up_exps")))
        return moe_fail(b->err, "blk.%d has both ffn_gate_up_exps and split ffn_gate_exps/ffn_up_exps", l);
    wmat gu;
    if (bind_mat(b, &gu, LNAME(nm, l, "ffn_gate_up_exps"), E, 2 * F, d)) return -1;
    size_t half = (size_t)F * gu.row_bytes;
    L->gate_exps = L->up_exps = (wmat){.data = gu.data, .dtype = gu.dtype, .rows = F, .cols = d, .n_mats = E,
                                       .row_bytes = gu.row_bytes, .mat_bytes = 2 * half};
    L->up_exps.data = (const char *)gu.data + half;
    return 0;
}

/* The experts' gate and up biases, [n_experts, ff] each, or the halves of a
 * fused ffn_gate_up_exps_bias [n_experts, 2*ff] (gate then up per expert). */
static int bind_gate_up_bias(binder *b, layer_weights *L, int l, int E, int F) {
    char nm[96];
    L->exps_bias_stride = F;
    if (!moef_tensor(b->f, LNAME(nm, l, "ffn_gate_up_exps_bias")))
        return bind_f32(b, &L->gate_exps_bias, LNAME(nm, l, "ffn_gate_exps_bias"), E, F) ||
               bind_f32(b, &L->up_exps_bias, LNAME(nm, l, "ffn_up_exps_bias"), E, F);
    if (bind_f32(b, &L->gate_exps_bias, LNAME(nm, l, "ffn_gate_up_exps_bias"), E, 2 * F)) return -1;
    L->up_exps_bias = L->gate_exps_bias + F;
    L->exps_bias_stride = 2 * F;
    return 0;
}

static int bind_ffn(binder *b, const moe_config *c, layer_weights *L, int l) {
    char nm[96];
    int d = c->dim;
    L->is_moe = c->route.n_experts > 0 && c->moe_layer[l];
    if (!L->is_moe)
        return bind_mat(b, &L->ffn_gate, LNAME(nm, l, "ffn_gate"), 0, c->ff_dim, d) ||
               bind_mat(b, &L->ffn_up, LNAME(nm, l, "ffn_up"), 0, c->ff_dim, d) ||
               bind_mat(b, &L->ffn_down, LNAME(nm, l, "ffn_down"), 0, d, c->ff_dim);
    int E = c->route.n_experts, F = c->moe_ff_dim;
    if (bind_mat(b, &L->router, LNAME(nm, l, "ffn_router"), 0, E, d) || bind_gate_up(b, L, l, E, F, d) ||
        bind_mat(b, &L->down_exps, LNAME(nm, l, "ffn_down_exps"), E, d, F))
        return -1;
    if (!dtype_info(L->router.dtype)->is_float)
        return moe_fail(b->err, "tensor blk.%d.ffn_router: dtype %s; routers stay in F32/F16/BF16 so quantization "
                        "cannot flip a routing decision", l, dtype_name(L->router.dtype));
    if (check_finite(b, LNAME(nm, l, "ffn_router"), L->router.dtype, L->router.data, (uint64_t)E * (uint64_t)d))
        return -1;
    if (c->route.use_bias && bind_vec(b, &L->router_bias, LNAME(nm, l, "ffn_router_bias"), E)) return -1;
    if (c->router_bias && bind_vec(b, &L->router_logit_bias, LNAME(nm, l, "ffn_router_logit_bias"), E)) return -1;
    if (c->expert_bias && (bind_gate_up_bias(b, L, l, E, F) ||
                           bind_f32(b, &L->down_exps_bias, LNAME(nm, l, "ffn_down_exps_bias"), E, d)))
        return -1;
    if (c->shared_ff > 0 && (bind_mat(b, &L->gate_sh, LNAME(nm, l, "ffn_gate_shexp"), 0, c->shared_ff, d) ||
                             bind_mat(b, &L->up_sh, LNAME(nm, l, "ffn_up_shexp"), 0, c->shared_ff, d) ||
                             bind_mat(b, &L->down_sh, LNAME(nm, l, "ffn_down_shexp"), 0, d, c->shared_ff)))
        return -1;
    if (c->shared_gate && bind_mat(b, &L->shexp_gate, LNAME(nm, l, "ffn_shexp_gate"), 0, 1, d)) return -1;
    return 0;
}

static int bind_weights(moe_model *m, moe_err *err) {
    const moe_config *c = &m->cfg;
    binder b = {&m->file, err};
    if (bind_mat(&b, &m->tok_embd, "tok_embd", 0, c->vocab_size, c->dim) ||
        bind_vec(&b, &m->output_norm, "output_norm", c->dim))
        return -1;
    if (c->tied_embd)
        m->output = m->tok_embd;
    else if (bind_mat(&b, &m->output, "output", 0, c->vocab_size, c->dim))
        return -1;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return moe_fail(err, "out of memory");
    char nm[96];
    for (int l = 0; l < c->n_layers; l++) {
        layer_weights *L = &m->layers[l];
        if (bind_vec(&b, &L->attn_norm, LNAME(nm, l, "attn_norm"), c->dim) ||
            bind_vec(&b, &L->ffn_norm, LNAME(nm, l, "ffn_norm"), c->dim) ||
            (c->ssm_layer[l] ? bind_deltanet(&b, c, L, l) : bind_attention(&b, c, L, l)) || bind_ffn(&b, c, L, l))
            return -1;
    }
    return 0;
}

static moe_model *model_open_file(moe_model *m, moe_err *err) {
    if (config_load(&m->cfg, &m->file, err)) goto fail;
    if (m->cfg.has_weights && bind_weights(m, err)) goto fail;
    /* a model converted with --no-tokenizer runs on token ids alone */
    if (!moef_kv(&m->file, "tok.model") && !m->cfg.has_weights) {
        moe_fail(err, "the file has neither weights nor a tokenizer (tok.* section)");
        goto fail;
    }
    if (moef_kv(&m->file, "tok.model")) {
        m->tok = tokenizer_load(&m->file, m->cfg.has_weights ? m->cfg.vocab_size : 0, err);
        if (!m->tok) goto fail;
    }
    for (int i = 0; i < m->file.n_tensors; i++)
        if (!m->file.tensors[i].used) {
            moe_fail(err, "tensor %.*s is not used by this configuration", T_NAME(&m->file.tensors[i]));
            goto fail;
        }
    return m;
fail:
    moe_model_free(m);
    return NULL;
}

moe_model *moe_model_open(const char *path, moe_err *err) {
    if (!path) {
        moe_fail(err, "no model path");
        return NULL;
    }
    moe_model *m = calloc(1, sizeof *m);
    if (!m) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    if (moef_open(&m->file, path, err)) {
        free(m);
        return NULL;
    }
    if (!model_open_file(m, err)) {
        moe_err_prefix(err, path);
        return NULL;
    }
    return m;
}

moe_model *model_open_buffer(const void *buf, size_t size, moe_err *err) {
    moe_model *m = calloc(1, sizeof *m);
    if (!m) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    if (moef_parse(&m->file, buf, size, err)) {
        free(m);
        return NULL;
    }
    return model_open_file(m, err);
}

void moe_model_free(moe_model *m) {
    if (!m) return;
    tokenizer_free(m->tok);
    free(m->layers);
    config_free(&m->cfg);
    moef_close(&m->file);
    free(m);
}

const moe_tokenizer *model_tokenizer(const moe_model *m) { return m->tok; }

size_t moe_model_prefault(const moe_model *m) { return m ? moef_prefault(&m->file) : 0; }
size_t moe_model_huge_bytes(const moe_model *m) { return m ? moef_huge_bytes(&m->file) : 0; }
const void *moe_model_mapping(const moe_model *m, size_t *bytes) {
    *bytes = m && m->file.map ? m->file.map_size : 0;
    return *bytes ? m->file.map : NULL;
}

/* ------------------------------------------------------------ summary */

static uint64_t wmat_bytes(const wmat *w) { return w->data ? (uint64_t)w->n_mats * (uint64_t)w->rows * w->row_bytes : 0; }
static uint64_t wmat_elems(const wmat *w) { return w->data ? (uint64_t)w->n_mats * (uint64_t)w->rows * (uint64_t)w->cols : 0; }

void moe_model_get_info(const moe_model *m, moe_model_info *info) {
    if (!info) return;
    memset(info, 0, sizeof *info);
    if (!m) return;
    const moe_config *c = &m->cfg;
    info->arch = c->arch;
    info->name = c->name;
    info->weight_type = "";
    info->has_weights = c->has_weights;
    info->n_tokens = tokenizer_n_tokens(m->tok);
    info->bos = tokenizer_bos(m->tok);
    info->eos = tokenizer_eos(m->tok);
    info->file_bytes = m->file.size;
    if (!c->has_weights) return;
    info->vocab_size = c->vocab_size;
    info->dim = c->dim;
    info->n_layers = c->n_layers;
    info->n_heads = c->n_heads;
    info->n_kv_heads = c->n_kv_heads;
    info->head_dim = c->head_dim;
    info->n_experts = c->route.n_experts;
    info->n_active = c->route.k;
    info->max_ctx = c->max_ctx;
    info->n_mtp_layers = c->n_mtp_layers;

    /* Every weight tensor is counted once; routed experts count k/E of
     * themselves as active. Decoding reads one embedding row, not the table. */
    uint64_t n = 0, n_act = 0, bytes = 0, act_bytes = 0, by_type[DT_COUNT] = {0};
    for (int i = 0; i < m->file.n_tensors; i++) {
        const moe_tensor *t = &m->file.tensors[i];
        if (t->name_len > 4 && memcmp(t->name, "tok.", 4) == 0) continue;
        uint64_t e = 1;
        for (int d = 0; d < t->n_dims; d++) e *= t->dims[d];
        n += e;
        bytes += t->nbytes;
        if (t->n_dims > 1) by_type[t->dtype] += t->nbytes;
    }
    int top = 0;
    for (int d = 1; d < DT_COUNT; d++)
        if (by_type[d] > by_type[top]) top = d;
    info->weight_type = dtype_name((moe_dtype)top);
    n_act = n;
    act_bytes = bytes;
    for (int l = 0; l < c->n_layers; l++) {
        const layer_weights *L = &m->layers[l];
        if (!L->is_moe) continue;
        info->n_moe_layers++;
        const wmat *exps[3] = {&L->gate_exps, &L->up_exps, &L->down_exps};
        for (int j = 0; j < 3; j++) {
            uint64_t idle = (uint64_t)(c->route.n_experts - c->route.k);
            n_act -= wmat_elems(exps[j]) / (uint64_t)c->route.n_experts * idle;
            act_bytes -= wmat_bytes(exps[j]) / (uint64_t)c->route.n_experts * idle;
        }
    }
    if (!c->tied_embd) act_bytes -= wmat_bytes(&m->tok_embd) - m->tok_embd.row_bytes;
    info->n_params = n;
    info->n_params_active = n_act;
    info->weight_bytes = bytes;
    info->active_bytes = act_bytes;
    uint64_t per_layer = c->attn_type == ATTN_MLA ? (uint64_t)(c->kv_lora + c->mla_rope_dim)
                                                  : 2u * (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim;
    /* a sliding-window layer keeps a ring of fixed size (config_cache_slots), not a row per position */
    for (int l = 0; l < c->n_layers; l++) {
        if (c->ssm_layer[l]) continue; /* Gated DeltaNet: a recurrent state instead (state_bytes) */
        int ring = c->attn_type == ATTN_GQA && c->window_layer[l];
        info->n_window_layers += ring;
        if (ring) info->kv_ring_bytes += per_layer * (uint64_t)config_cache_slots(c, INT32_MAX, l) * sizeof(float);
        else info->kv_bytes_per_token += per_layer * sizeof(float);
    }
    info->window = info->n_window_layers ? c->window : 0;
    info->n_ssm_layers = c->n_ssm_layers;
    info->state_bytes = (uint64_t)ssm_state_floats(c) * (uint64_t)c->n_ssm_layers * sizeof(float);
    const moe_kv *skipped = moef_kv(&m->file, "general.skipped");
    if (skipped && skipped->type == KV_STR) {
        info->skipped = skipped->str;
        info->skipped_len = (int)skipped->len;
    }
}

/* One GGUF metadata value, shortened: long strings and arrays show their head. */
static void dump_gguf_value(FILE *out, const gguf_kv *kv) {
    if (kv->type == GGUF_STRING) {
        if (kv->n > 60) fprintf(out, "\"%.40s...\" (%" PRIu64 " bytes)", (const char *)kv->data, kv->n);
        else fprintf(out, "\"%.*s\"", (int)kv->n, (const char *)kv->data);
        return;
    }
    if (kv->type == GGUF_ARRAY) {
        fprintf(out, "[%s x %" PRIu64 "]", gguf_vtype_name(kv->elem_type), kv->n);
        uint64_t pos = 0, len;
        for (uint64_t j = 0; j < kv->n && j < 4; j++) {
            if (kv->elem_type == GGUF_STRING) {
                const char *s = gguf_arr_next_str(kv, &pos, &len);
                fprintf(out, " \"%.*s\"", (int)(len > 24 ? 24 : len), s);
            } else if (kv->elem_type == GGUF_F32 || kv->elem_type == GGUF_F64) {
                fprintf(out, " %g", gguf_arr_float(kv, j));
            } else if (kv->elem_type != GGUF_ARRAY) {
                fprintf(out, " %" PRId64, gguf_arr_int(kv, j));
            }
        }
        if (kv->n > 4 && kv->elem_type != GGUF_ARRAY) fprintf(out, " ...");
        return;
    }
    double d;
    if (kv->type == GGUF_F32 || kv->type == GGUF_F64) {
        gguf_kv_float(kv, &d, NULL);
        fprintf(out, "%.9g", d);
    } else {
        uint64_t u;
        if (gguf_kv_uint(kv, &u, NULL) == 0) fprintf(out, "%" PRIu64, u);
        else if (gguf_kv_float(kv, &d, NULL) == 0) fprintf(out, "%.0f", d);
    }
}

/* The GGUF file as written: every key with its type, every tensor with its
 * ggml type and ne (fastest first). */
static void dump_gguf(FILE *out, const gguf_file *g) {
    fprintf(out, "GGUF v%u, alignment %" PRIu64 ", data at %" PRIu64 "\n", g->version, g->alignment, g->data_offset);
    fprintf(out, "GGUF metadata (%" PRIu64 " keys):\n", g->n_kv);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const gguf_kv *kv = &g->kv[i];
        fprintf(out, "  %-44.*s %-7s ", (int)kv->key_len, kv->key, gguf_vtype_name(kv->type));
        dump_gguf_value(out, kv);
        fputc('\n', out);
    }
    fprintf(out, "GGUF tensors (%" PRIu64 ", ne fastest first):\n", g->n_tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const gguf_tensor *t = &g->tensors[i];
        char shape[96];
        shape_str(t->ne, t->n_dims, shape, sizeof shape);
        fprintf(out, "  %-36.*s %-7s %-22s %12" PRIu64 " bytes\n", (int)t->name_len, t->name, ggml_type_name(t->type),
                shape, t->nbytes);
    }
    fprintf(out, "as the engine reads it:\n");
}

void moe_model_dump(const moe_model *m, void *file) {
    if (!m || !file) return;
    FILE *out = file;
    const moe_file *f = &m->file;
    if (f->gguf) dump_gguf(out, f->gguf);
    fprintf(out, "metadata (%d keys):\n", f->n_kv);
    for (int i = 0; i < f->n_kv; i++) {
        const moe_kv *kv = &f->kv[i];
        fprintf(out, "  %-24.*s ", kv->key_len, kv->key);
        switch (kv->type) {
        case KV_INT: fprintf(out, "%" PRId64 "\n", kv->i); break;
        case KV_FLOAT: fprintf(out, "%.9g\n", kv->f); break;
        case KV_STR:
            if (kv->len > 60) fprintf(out, "\"%.*s...\" (%u bytes)\n", 40, kv->str, kv->len);
            else fprintf(out, "\"%.*s\"\n", (int)kv->len, kv->str);
            break;
        case KV_INTS:
            fprintf(out, "[");
            for (uint32_t j = 0; j < kv->len && j < 32; j++) fprintf(out, "%s%" PRId64, j ? "," : "", moef_kv_int_at(kv, j));
            fprintf(out, "%s]\n", kv->len > 32 ? ",..." : "");
            break;
        }
    }
    fprintf(out, "tensors (%d):\n", f->n_tensors);
    for (int i = 0; i < f->n_tensors; i++) {
        const moe_tensor *t = &f->tensors[i];
        char shape[96];
        shape_str(t->dims, t->n_dims, shape, sizeof shape);
        fprintf(out, "  %-32.*s %-5s %-22s %12" PRIu64 " bytes\n", T_NAME(t), dtype_name(t->dtype), shape, t->nbytes);
    }
}
