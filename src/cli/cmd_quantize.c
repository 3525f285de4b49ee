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
#include "threads.h"
#include "writer.h"

static const char *CMD = "quantize";

static void help(void) {
    printf("usage: moe quantize IN.moe OUT.moe --type q8_0|q4_0|q4_k|q8_0_r16|q4_0_r16 [flags]\n\n"
           "Writes OUT with the weight matrices in TYPE (ggml-compatible blocks). Routers,\n"
           "norms, MXFP4 matrices (gpt-oss's experts) and (by default) the token embedding\n"
           "keep their precision.\n\n"
           "      --type T       q8_0, q4_0 or q4_k (also f16, bf16, f32); q8_0_r16, q4_0_r16: the\n"
           "                     same values with 16 rows interleaved, for faster kernels\n"
           "      --embd T       type of the token embedding (default: keep)\n"
           "      --output T     type of the output matrix (default: q8_0 for 4-bit types\n"
           "                     (q8_0_r16 for q4_0_r16), else T)\n"
           "      --calib TEXT   round Q8_0/Q4_0/Q4_K matrices by GPTQ, against the inputs they see\n"
           "                     when IN runs on this text (slower; docs/QUANTIZATION.md)\n"
           "      --calib-tokens N  tokens of TEXT to use (default 4096)\n"
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

/* The rules of the header comment. */
static moe_dtype target_type(const moe_tensor *t, moe_dtype want, int embd_set, moe_dtype embd, moe_dtype output) {
    if (t->name_len > 4 && !memcmp(t->name, "tok.", 4)) return t->dtype;
    const dtype_traits *have = dtype_info(t->dtype);
    if (t->n_dims == 1 || (!have->is_float && !have->is_quant)) return t->dtype;
    if (ends_with(t, "ffn_router") || ends_with(t, "ffn_shexp_gate") || ends_with(t, "_bias")) return t->dtype;
    if (ends_with(t, "attn_k_b") || ends_with(t, "attn_v_b")) return t->dtype;
    if (t->dtype == DT_MXFP4) return t->dtype;
    if (t->name_len == 8 && !memcmp(t->name, "tok_embd", 8)) want = embd_set ? embd : t->dtype;
    if (t->name_len == 6 && !memcmp(t->name, "output", 6)) want = output;
    uint64_t cols = t->dims[t->n_dims - 1], rows = 1;
    for (int d = 0; d < t->n_dims - 1; d++) rows *= t->dims[d];
    int group = dtype_info(want)->row_group;
    if (group > 1 && (rows % (uint64_t)group || ends_with(t, "tok_embd")))
        want = dtype_info(want)->plain; /* interleaving needs whole row groups; a lookup table gains nothing */
    if (cols % (uint64_t)dtype_info(want)->block == 0) return want;
    if (want == DT_Q4_K && cols % QK4_0 == 0) return DT_Q4_0; /* rows not a multiple of 256 */
    return t->dtype;
}

int cmd_quantize(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *in = NULL, *out = NULL, *flag;
    moe_dtype want = DT_F32, embd = DT_F32, output = DT_F32;
    int have_type = 0, embd_set = 0, output_set = 0, threads = 0, quiet = 0, calib_tokens = 4096;
    const char *calib_path = NULL;
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "--type")) {
            const char *v = args_value(&a, flag);
            if (parse_type(v, &want)) die(EXIT_USAGE, CMD, "--type: unknown type \"%s\" (q8_0, q4_0, q4_k, f16, bf16, f32)", v);
            have_type = 1;
        } else if (!strcmp(flag, "--embd")) {
            const char *v = args_value(&a, flag);
            if (parse_type(v, &embd)) die(EXIT_USAGE, CMD, "--embd: unknown type \"%s\"", v);
            embd_set = 1;
        } else if (!strcmp(flag, "--output")) {
            const char *v = args_value(&a, flag);
            if (parse_type(v, &output)) die(EXIT_USAGE, CMD, "--output: unknown type \"%s\"", v);
            output_set = 1;
        } else if (!strcmp(flag, "--calib")) calib_path = args_value(&a, flag);
        else if (!strcmp(flag, "--calib-tokens")) calib_tokens = args_int(&a, flag, 2, 1 << 24);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "-q") || !strcmp(flag, "--quiet")) quiet = 1;
        else if (flag[0] == '-') die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe quantize -h)", flag);
        else if (!in) in = flag;
        else if (!out) out = flag;
        else die(EXIT_USAGE, CMD, "unexpected argument \"%s\"", flag);
    }
    if (!in || !out) die(EXIT_USAGE, CMD, "usage: moe quantize IN.moe OUT.moe --type TYPE");
    if (!have_type) die(EXIT_USAGE, CMD, "--type is required (q8_0, q4_0, q4_k)");
    if (!output_set)
        output = want == DT_Q4_0 || want == DT_Q4_K ? DT_Q8_0 : want == DT_Q4_0_R16 ? DT_Q8_0_R16 : want;
    if (threads) threads_set(threads);

    /* validate the input as a model first: never quantize a file we could not run */
    moe_model *check = open_model_or_die(CMD, in);
    calib *cal = calib_path ? calib_run(CMD, check, calib_path, calib_tokens, quiet) : NULL;
    moe_model_free(check);
    moe_file f;
    moe_err err = {{0}};
    if (moef_open(&f, in, &err)) die(1, CMD, "%s", err.msg);

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
        types[i] = target_type(t, want, embd_set, embd, output);
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
                if (!U) {
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
    writer_free(w);
    moef_close(&f);
    /* prove the result loads */
    moe_model *m = open_model_or_die(CMD, out);
    moe_model_free(m);
    return 0;
}
