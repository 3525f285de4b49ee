/* cmd_quantize.c - `moe quantize IN OUT --type T`: requantize a model's
 * weight matrices, multi-threaded and streaming (one chunk of rows at a
 * time), with per-tensor precision rules:
 *   - routers (ffn_router) and Qwen2-MoE's shared-expert gate stay as they
 *     are: a routing decision must not flip because of quantization;
 *   - norms, biases (also gpt-oss's per-expert [E, n] ones) and every 1-D
 *     tensor stay F32; the tokenizer is copied;
 *   - the token embedding stays as it is unless --embd says otherwise;
 *   - the output matrix gets Q8_0 under 4-bit types (--output overrides);
 *   - MLA's absorbed per-head matrices (attn_k_b, attn_v_b) stay float;
 *   - MXFP4 matrices (gpt-oss's experts, published in it) stay as they are:
 *     requantizing would only add a second rounding to the published values;
 *   - q8_0_r16 / q4_0_r16 (16 rows interleaved, for the SIMD kernels)
 *     apply to matrices of whole 16-row groups; the token embedding and
 *     other matrices get plain Q8_0 / Q4_0, the output matrix under
 *     q4_0_r16 Q8_0_R16;
 *   - a matrix whose row length does not fit the block falls back to the
 *     next type that fits (Q4_K -> Q4_0 -> Q8_0), else stays as it is.
 * A llama.cpp mix (--type q4_k_m, q5_k_m, q6_k, q3_k_m, q2_k) gives each
 * matrix the type llama-quantize would (quant_mix.c: more bits for attn_v,
 * ffn_down, attn_output, the output matrix, MoE attention at Q8_0, its
 * fallbacks for rows not a multiple of 256), the token embedding included;
 * Q4_K there is rounded by ggml's reference algorithm (quantize_row_q4_K_ggml),
 * so the blocks are llama.cpp's. The keep-rules above still apply. From a
 * GGUF IN under a mix, an OUT.gguf is written as llama-quantize would
 * (quantize_gguf.c): IN's tensors by their own names, by the rules alone.
 * With --calib TEXT, Q8_0, Q4_0 (plain or _r16) and Q4_K matrices are rounded by
 * GPTQ (gptq.h) against what they read when IN runs on that text (calib.c):
 * the attention input, the heads' output, the FFN input, and each expert's
 * (or the dense / shared FFN's) hidden for its down projection; what
 * calibration does not cover rounds to nearest. */
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "cli.h"
#include "file.h"
#include "gptq.h"
#include "quant.h"
#include "quant_k.h"
#include "quant_mix.h"
#include "quantize_gguf.h"
#include "threads.h"
#include "writer.h"

static const char *CMD = "quantize";

static void help(void) {
    printf("usage: moe quantize IN OUT.moe --type q8_0|q4_0|q4_k|q4_k_m|q5_k_m|q6_k|... [flags]\n"
           "       moe quantize IN.gguf OUT.gguf --type q4_k_m|q5_k_m|q6_k|q3_k_m|q2_k [flags]\n\n"
           "Writes OUT with the weight matrices in TYPE (ggml-compatible blocks); IN is a .moe\n"
           "or GGUF file. Routers, norms, MXFP4 matrices (gpt-oss's experts) and (by default,\n"
           "but not under a mix) the token embedding keep their precision. An OUT ending in\n"
           ".gguf (from a GGUF IN, under a mix) is the GGUF file llama-quantize would write,\n"
           "the same metadata and tensor directory.\n\n"
           "      --type T       q8_0, q4_0 or q4_k (also f16, bf16, f32 and the other GGUF types);\n"
           "                     q8_0_r16, q4_0_r16: the same values with 16 rows interleaved;\n"
           "                     q4_k_m, q5_k_m, q6_k, q3_k_m, q2_k: llama.cpp's mixes, each\n"
           "                     tensor typed by llama-quantize's rules (docs/QUANTIZATION.md)\n"
           "      --embd T       type of the token embedding (default: keep; a mix's rule)\n"
           "      --output T     type of the output matrix (default: q8_0 for 4-bit types\n"
           "                     (q8_0_r16 for q4_0_r16), else T; a mix's rule)\n"
           "      --calib TEXT   round Q8_0/Q4_0/Q4_K matrices by GPTQ, against the inputs they see\n"
           "                     when IN runs on this text (slower; docs/QUANTIZATION.md)\n"
           "      --calib-tokens N  tokens of TEXT to use (default 4096)\n"
           "      --dry-run      print each tensor of IN and the type it gets, write nothing\n"
           "                     (a GGUF IN: its own names, typed as llama-quantize would)\n"
           "  -t, --threads N    threads (default: all cores)\n"
           "  -q, --quiet        no progress line\n");
}

/* A type moe quantize can write: any in the table with a row quantizer, or
 * interleaved (its twin's). */
static int parse_type(const char *s, moe_dtype *out) {
    int t = dtype_from_name(s);
    const dtype_traits *d = dtype_info(t);
    if (!d || !(d->quantize || d->row_group > 1)) return -1;
    *out = (moe_dtype)t;
    return 0;
}

static int ends_with(const moe_tensor *t, const char *suffix) {
    size_t k = strlen(suffix);
    return (size_t)t->name_len >= k && !memcmp(t->name + t->name_len - k, suffix, k);
}

/* What --type and its companions asked for. */
typedef struct {
    moe_dtype want, embd, output; /* embd, output: when set */
    int embd_set, output_set;
    int mix;                      /* a quant_mix, or -1: every matrix gets want */
    mix_model mm;                 /* the model the mix's rules read */
} quant_opts;

/* The mix's type of a .moe tensor: llama.cpp's rule for its llama.cpp name. */
static moe_dtype mix_target(const moe_tensor *t, const quant_opts *o) {
    char name[300];
    if (quant_mix_gguf_name(t->name, t->name_len, name, sizeof name))
        snprintf(name, sizeof name, "%.*s.weight", T_NAME(t)); /* no llama.cpp name: the rules by its own */
    int want = quant_mix_type((quant_mix)o->mix, &o->mm, name, t->n_dims, t->dims[t->n_dims - 1]);
    if (t->name_len == 8 && !memcmp(t->name, "tok_embd", 8) && o->embd_set) want = o->embd;
    if (t->name_len == 6 && !memcmp(t->name, "output", 6) && o->output_set) want = o->output;
    if (want < 0) return t->dtype;
    want = dtype_info(want)->plain; /* --embd / --output q8_0_r16: rows may not fill 16-row groups */
    return t->dims[t->n_dims - 1] % (uint64_t)dtype_info(want)->block ? t->dtype : (moe_dtype)want;
}

/* The rules of the header comment. */
static moe_dtype target_type(const moe_tensor *t, const quant_opts *o) {
    if (t->name_len > 4 && !memcmp(t->name, "tok.", 4)) return t->dtype;
    const dtype_traits *have = dtype_info(t->dtype);
    if (t->n_dims == 1 || (!have->is_float && !have->is_quant)) return t->dtype;
    if (ends_with(t, "ffn_router") || ends_with(t, "ffn_shexp_gate") || ends_with(t, "_bias")) return t->dtype;
    if (ends_with(t, "attn_k_b") || ends_with(t, "attn_v_b")) return t->dtype;
    if (t->dtype == DT_MXFP4) return t->dtype;
    if (o->mix >= 0) return mix_target(t, o);
    moe_dtype want = o->want;
    if (t->name_len == 8 && !memcmp(t->name, "tok_embd", 8)) want = o->embd_set ? o->embd : t->dtype;
    if (t->name_len == 6 && !memcmp(t->name, "output", 6)) want = o->output;
    uint64_t cols = t->dims[t->n_dims - 1], rows = 1;
    for (int d = 0; d < t->n_dims - 1; d++) rows *= t->dims[d];
    int group = dtype_info(want)->row_group;
    if (group > 1 && (rows % (uint64_t)group || ends_with(t, "tok_embd")))
        want = dtype_info(want)->plain; /* interleaving needs whole row groups; a lookup table gains nothing */
    if (cols % (uint64_t)dtype_info(want)->block == 0) return want;
    if (want == DT_Q4_K && cols % QK4_0 == 0) return DT_Q4_0; /* rows not a multiple of 256 */
    return t->dtype;
}

static int64_t kv_int(const moe_file *f, const char *key) {
    const moe_kv *kv = moef_kv(f, key);
    return kv && kv->type == KV_INT ? kv->i : 0;
}

/* Per block, the attn_v tensors in the blocks before it (llama.cpp counts
 * them for attn_v's rules; a hybrid model's DeltaNet layers have none). A
 * GGUF's own directory is read: the view leaves the MTP blocks out. */
static int *attn_v_counts(const moe_file *f, int n_blocks) {
    int *idx = malloc(sizeof(int) * (size_t)(n_blocks > 0 ? n_blocks : 1));
    if (!idx) die(1, CMD, "out of memory");
    for (int l = 0, seen = 0; l < n_blocks; l++) {
        char name[64];
        idx[l] = seen;
        if (f->gguf) {
            snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
            seen += gguf_find_tensor(f->gguf, name) != NULL;
        } else {
            snprintf(name, sizeof name, "blk.%d.attn_v", l);
            seen += moef_tensor(f, name) != NULL;
        }
    }
    return idx;
}

/* llama.cpp's n_layer: a GGUF's block_count, its multi-token-prediction
 * blocks included (GLM-4.5's blk.46 of 47), whose tensors are typed as a
 * layer's. A .moe holds no MTP block (and whether llama.cpp's converter keeps
 * one depends on the family): its layers. */
static int mix_blocks(const moe_file *f) {
    return (int)kv_int(f, "model.n_layers") + (f->gguf ? (int)kv_int(f, "model.n_mtp_layers") : 0);
}

/* What the mix's rules read of f (attn_v_index: attn_v_counts's, of mix_blocks). */
static mix_model mix_model_of(const moe_file *f, const int *attn_v_index) {
    return (mix_model){.n_layers = mix_blocks(f), .n_experts = (int)kv_int(f, "moe.n_experts"),
                       .n_heads = (int)kv_int(f, "model.n_heads"), .n_kv_heads = (int)kv_int(f, "model.n_kv_heads"),
                       .has_output = moef_tensor(f, "output") != NULL, .attn_v_index = attn_v_index};
}

/* The mix's type of a GGUF tensor, by its own name (-1: as it is). */
static int gguf_target(const gguf_tensor *t, const quant_opts *o) {
    char name[300];
    snprintf(name, sizeof name, "%.*s", (int)t->name_len, t->name);
    int want = quant_mix_type((quant_mix)o->mix, &o->mm, name, t->n_dims, t->ne[0]);
    if (!strcmp(name, "token_embd.weight") && o->embd_set) want = o->embd;
    if (!strcmp(name, "output.weight") && o->output_set) want = o->output;
    if (want < 0 || ggml_type_to_dtype(t->type) == DT_MXFP4) return -1; /* MXFP4: as published */
    want = dtype_info(want)->plain;
    return t->ne[0] % (uint64_t)dtype_info(want)->block ? -1 : want;
}

/* --dry-run: each tensor and the type it gets. A GGUF input under a mix is
 * listed by its own tensor names, typed as a GGUF output would hold them:
 * what llama-quantize writes (a .moe output keeps MLA's k_b/v_b float besides). */
static void print_plan(const moe_file *f, const quant_opts *o) {
    const gguf_file *g = f->gguf;
    if (g && o->mix >= 0) {
        for (uint64_t i = 0; i < g->n_tensors; i++) {
            const gguf_tensor *t = &g->tensors[i];
            int q = gguf_target(t, o);
            printf("%.*s %s\n", (int)t->name_len, t->name, q >= 0 ? dtype_name(q) : ggml_type_name(t->type));
        }
        return;
    }
    for (int i = 0; i < f->n_tensors; i++)
        printf("%.*s %s\n", T_NAME(&f->tensors[i]), dtype_name(target_type(&f->tensors[i], o)));
}

int cmd_quantize(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *in = NULL, *out = NULL, *flag;
    quant_opts o = {.want = DT_F32, .embd = DT_F32, .output = DT_F32, .mix = -1};
    int have_type = 0, threads = 0, quiet = 0, dry_run = 0, calib_tokens = 4096;
    const char *calib_path = NULL;
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "--type")) {
            const char *v = args_value(&a, flag);
            o.mix = quant_mix_from_name(v);
            if (o.mix < 0 && parse_type(v, &o.want))
                die(EXIT_USAGE, CMD, "--type: unknown type \"%s\" (q8_0, q4_0, q4_k, q4_k_m, q5_k_m, q6_k, f16, bf16, f32)", v);
            have_type = 1;
        } else if (!strcmp(flag, "--embd")) {
            const char *v = args_value(&a, flag);
            if (parse_type(v, &o.embd)) die(EXIT_USAGE, CMD, "--embd: unknown type \"%s\"", v);
            o.embd_set = 1;
        } else if (!strcmp(flag, "--output")) {
            const char *v = args_value(&a, flag);
            if (parse_type(v, &o.output)) die(EXIT_USAGE, CMD, "--output: unknown type \"%s\"", v);
            o.output_set = 1;
        } else if (!strcmp(flag, "--calib")) calib_path = args_value(&a, flag);
        else if (!strcmp(flag, "--calib-tokens")) calib_tokens = args_int(&a, flag, 2, 1 << 24);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "-q") || !strcmp(flag, "--quiet")) quiet = 1;
        else if (!strcmp(flag, "--dry-run")) dry_run = 1;
        else if (flag[0] == '-') die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe quantize -h)", flag);
        else if (!in) in = flag;
        else if (!out) out = flag;
        else die(EXIT_USAGE, CMD, "unexpected argument \"%s\"", flag);
    }
    if (!in || (!out && !dry_run)) die(EXIT_USAGE, CMD, "usage: moe quantize IN OUT.moe --type TYPE");
    if (!have_type) die(EXIT_USAGE, CMD, "--type is required (q8_0, q4_0, q4_k)");
    if (!o.output_set)
        o.output = o.want == DT_Q4_0 || o.want == DT_Q4_K ? DT_Q8_0 : o.want == DT_Q4_0_R16 ? DT_Q8_0_R16 : o.want;
    if (threads) threads_set(threads);

    /* validate the input as a model first: never quantize a file we could not run */
    moe_model *check = open_model_or_die(CMD, in);
    calib *cal = calib_path ? calib_run(CMD, check, calib_path, calib_tokens, quiet) : NULL;
    moe_model_free(check);
    moe_file f;
    moe_err err = {{0}};
    if (moef_open(&f, in, &err)) die(1, CMD, "%s", err.msg);
    int *attn_v_index = attn_v_counts(&f, mix_blocks(&f));
    o.mm = mix_model_of(&f, attn_v_index);
    if (dry_run) {
        print_plan(&f, &o);
        free(attn_v_index);
        moef_close(&f);
        return 0;
    }
    size_t out_len = strlen(out);
    if (out_len > 5 && !strcmp(out + out_len - 5, ".gguf")) { /* llama.cpp's file format out */
        if (!f.gguf || o.mix < 0 || cal)
            die(EXIT_USAGE, CMD, "%s: GGUF output takes a GGUF input and a mix (q4_k_m, q5_k_m, q6_k, q3_k_m, q2_k), no --calib",
                out);
        int *want = malloc(sizeof(int) * (size_t)(f.gguf->n_tensors ? f.gguf->n_tensors : 1));
        if (!want) die(1, CMD, "out of memory");
        for (uint64_t i = 0; i < f.gguf->n_tensors; i++) want[i] = gguf_target(&f.gguf->tensors[i], &o);
        double t0 = now_seconds();
        quantize_write_gguf(f.gguf, want, (uint32_t)quant_mix_ftype((quant_mix)o.mix), out);
        fprintf(stderr, "quantized %s -> %s (%s) in %.1f s (%d threads)\n", in, out, quant_mix_name((quant_mix)o.mix),
                now_seconds() - t0, threads_max());
        free(want);
        free(attn_v_index);
        moef_close(&f);
        moe_model_free(open_model_or_die(CMD, out)); /* prove the result loads */
        return 0;
    }

    moe_writer *w = writer_new();
    if (!w) die(1, CMD, "out of memory");
    for (int i = 0; i < f.n_kv; i++)
        if (writer_add_kv(w, &f.kv[i])) die(1, CMD, "out of memory");
    moe_dtype *types = malloc(sizeof *types * (size_t)f.n_tensors);
    if (!types) die(1, CMD, "out of memory");
    uint64_t in_bytes = 0, out_bytes = 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const moe_tensor *t = &f.tensors[i];
        char name[256];
        snprintf(name, sizeof name, "%.*s", T_NAME(t));
        types[i] = target_type(t, &o);
        if (writer_add_tensor(w, name, types[i], t->n_dims, t->dims)) die(1, CMD, "out of memory");
        in_bytes += t->nbytes;
        out_bytes += writer_tensor_bytes(w, i);
    }
    if (writer_begin(w, out, &err)) die(1, CMD, "%s", err.msg);

    double t0 = now_seconds(), last = 0;
    uint64_t done = 0;
    size_t chunk_cap = 0;
    uint8_t *chunk = NULL;
    float *rowbuf = NULL;
    uint8_t *plainbuf = NULL; /* GPTQ's plain rows before an _r16 layout */
    int rowbuf_threads = threads_max();
    for (int i = 0; i < f.n_tensors; i++) {
        const moe_tensor *t = &f.tensors[i];
        if (types[i] == t->dtype) { /* copy as is */
            if (writer_append(w, t->data, t->nbytes, &err)) die(1, CMD, "%s", err.msg);
            done += t->nbytes;
            continue;
        }
        int cols = (int)t->dims[t->n_dims - 1];
        uint64_t rows = t->nbytes / dtype_row_bytes(t->dtype, (uint64_t)cols);
        size_t in_rb = dtype_row_bytes(t->dtype, (uint64_t)cols), out_rb = dtype_row_bytes(types[i], (uint64_t)cols);
        moe_dtype plain = dtype_info(types[i])->plain;
        uint64_t per_expert = t->n_dims == 3 ? t->dims[1] : rows; /* rows of one expert's matrix */
        int gptq = cal && (plain == DT_Q8_0 || plain == DT_Q4_0 || plain == DT_Q4_K) &&
                   (t->n_dims < 3 || per_expert % 16 == 0);
        /* rows quantized together: an _r16 group; GPTQ's tiles of one expert share each block column of U */
        uint64_t unit = gptq ? 16 : (uint64_t)dtype_info(types[i])->row_group;
        uint64_t per_chunk = ((8u << 20) / out_rb / unit + 1) * unit; /* ~8 MB of output per step */
        if (per_chunk * out_rb > chunk_cap) {
            chunk_cap = per_chunk * out_rb;
            chunk = realloc(chunk, chunk_cap);
        }
        free(rowbuf);
        free(plainbuf);
        rowbuf = malloc(sizeof(float) * (size_t)cols * unit * (size_t)rowbuf_threads);
        int repack = gptq && plain != types[i]; /* GPTQ writes plain rows, then an _r16 group */
        plainbuf = repack ? malloc(dtype_row_bytes(plain, (uint64_t)cols) * unit * (size_t)rowbuf_threads) : NULL;
        if (!chunk || !rowbuf || (repack && !plainbuf)) die(1, CMD, "out of memory");
        for (uint64_t r0 = 0; r0 < rows; r0 += per_chunk) {
            int m = (int)(rows - r0 < per_chunk ? rows - r0 : per_chunk);
#pragma omp parallel for schedule(static)
            for (int r = 0; r < m; r += (int)unit) {
                int k = m - r < (int)unit ? m - r : (int)unit; /* < unit only for GPTQ's last plain rows */
                float *tmp = rowbuf + (size_t)thread_id() * (size_t)cols * unit;
                uint8_t *dst = chunk + (size_t)r * out_rb;
                for (int u = 0; u < k; u++)
                    dequantize_row_at(t->dtype, t->data, in_rb, r0 + (uint64_t)(r + u), tmp + (size_t)u * cols, cols);
                int un = 0;
                const float *U =
                    gptq ? calib_factor(cal, t->name, t->name_len, (int)((r0 + (uint64_t)r) / per_expert), &un) : NULL;
                if (un != cols) U = NULL;
                if (!U && o.mix >= 0 && types[i] == DT_Q4_K) {
                    for (int u = 0; u < k; u++) /* a mix: ggml's Q4_K rounding, llama.cpp's blocks */
                        quantize_row_q4_K_ggml(tmp + (size_t)u * cols, dst + (size_t)u * out_rb, cols);
                } else if (!U) {
                    quantize_rows(types[i], tmp, dst, k, cols);
                } else if (plain == types[i]) {
                    gptq_rows(plain, tmp, k, cols, U, dst);
                } else {
                    uint8_t *p = plainbuf + (size_t)thread_id() * dtype_row_bytes(plain, (uint64_t)cols) * unit;
                    gptq_rows(plain, tmp, k, cols, U, p);
                    pack_rows_r16(types[i], p, dst, cols);
                }
            }
            if (writer_append(w, chunk, (size_t)m * out_rb, &err)) die(1, CMD, "%s", err.msg);
            done += (uint64_t)m * in_rb;
            double now = now_seconds();
            if (!quiet && now - last > 0.3) {
                last = now;
                fprintf(stderr, "\r  [%4d/%d] %-28.*s -> %-5s %5.1f%%  %7.1f MB/s   ", i + 1, f.n_tensors, T_NAME(t),
                        dtype_name(types[i]), 100.0 * (double)done / (double)in_bytes, done / (now - t0) / 1e6);
            }
        }
    }
    if (writer_finish(w, &err)) die(1, CMD, "%s", err.msg);
    double secs = now_seconds() - t0;
    if (!quiet) fprintf(stderr, "\r%100s\r", "");
    fprintf(stderr, "quantized %s -> %s: %.1f MB -> %.1f MB in %.1f s (%d threads)\n", in, out, in_bytes / 1e6,
            out_bytes / 1e6, secs, threads_max());
    free(chunk);
    free(rowbuf);
    free(plainbuf);
    calib_free(cal);
    free(types);
    free(attn_v_index);
    writer_free(w);
    moef_close(&f);
    /* prove the result loads */
    moe_model *m = open_model_or_die(CMD, out);
    moe_model_free(m);
    return 0;
}
