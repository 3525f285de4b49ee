/* cmd_info.c - `moe info`: what a model file holds. */
#include <inttypes.h>
#include <string.h>

#include "cli.h"
#include "model.h"

static const char *CMD = "info";

static void help(void) {
    printf("usage: moe info [-m MODEL] [--dump]\n\n"
           "Prints the architecture, layers, experts (total/active), total and active\n"
           "parameters, dtypes and sizes; for a GGUF file also the bytes per ggml type.\n"
           "--dump lists every metadata key and tensor (for GGUF: as written, with\n"
           "their types, then as the engine reads them).\n");
}

static void human(double v, const char *unit, char *out, size_t cap) {
    const char *pre[] = {"", "K", "M", "G", "T"};
    int i = 0;
    while (v >= 1000 && i < 4) { v /= 1000; i++; }
    snprintf(out, cap, "%.2f %s%s", v, pre[i], unit);
}

/* A GGUF file: bytes and tensor counts per ggml type, as llama.cpp wrote them. */
static void gguf_type_table(const gguf_file *g) {
    uint64_t bytes[64] = {0}, total = 0;
    int count[64] = {0};
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        int t = g->tensors[i].type;
        if (t < 0 || t >= 64) continue; /* the parser knows no type id past 63 */
        bytes[t] += g->tensors[i].nbytes;
        count[t]++;
        total += g->tensors[i].nbytes;
    }
    printf("GGUF v%u tensor types:\n", g->version);
    for (int t = 0; t < 64; t++)
        if (count[t])
            printf("  %-8s %5d tensors %14" PRIu64 " bytes %6.2f %%%s\n", ggml_type_name(t), count[t], bytes[t],
                   total ? 100.0 * (double)bytes[t] / (double)total : 0.0,
                   ggml_type_to_dtype(t) < 0 ? "  (not supported)" : "");
}

int cmd_info(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *flag;
    int dump = 0;
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "--dump")) dump = 1;
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe info -h)", flag);
    }
    moe_model *m = open_model_or_die(CMD, model ? model : default_model_path(argv[0]));
    moe_model_info i;
    moe_model_get_info(m, &i);
    char b1[32], b2[32], b3[32], b4[32];
    if (!i.has_weights) {
        printf("tokenizer-only file: %d tokens, bos %d, eos %d, %" PRIu64 " bytes\n", i.n_tokens, i.bos, i.eos,
               i.file_bytes);
    } else {
        printf("architecture      %s%s%s\n", i.arch, *i.name ? "  " : "", i.name);
        if (i.n_ssm_layers)
            printf("layers            %d (%d MoE; %d Gated DeltaNet, %d attention)\n", i.n_layers, i.n_moe_layers,
                   i.n_ssm_layers, i.n_layers - i.n_ssm_layers);
        else
            printf("layers            %d (%d MoE)\n", i.n_layers, i.n_moe_layers);
        if (i.n_mtp_layers)
            printf("mtp layers        %d multi-token-prediction layer%s of the checkpoint skipped (not converted, "
                   "not run)\n", i.n_mtp_layers, i.n_mtp_layers == 1 ? "" : "s");
        printf("hidden            %d, heads %d (kv %d), head dim %d\n", i.dim, i.n_heads, i.n_kv_heads, i.head_dim);
        if (i.n_experts) printf("experts           %d total, %d active per token\n", i.n_experts, i.n_active);
        else printf("experts           dense\n");
        human((double)i.n_params, "", b1, sizeof b1);
        human((double)i.n_params_active, "", b2, sizeof b2);
        printf("parameters        %s total, %s active per token\n", b1, b2);
        human((double)i.weight_bytes, "B", b3, sizeof b3);
        human((double)i.active_bytes, "B", b4, sizeof b4);
        printf("weights           %s, %s read per decoded token\n", b3, b4);
        printf("vocabulary        %d logits, %d tokens, bos %d, eos %d\n", i.vocab_size, i.n_tokens, i.bos, i.eos);
        printf("context           %d positions max, KV cache %" PRIu64 " bytes per position (f32)\n", i.max_ctx,
               i.kv_bytes_per_token);
        if (i.n_window_layers)
            printf("sliding window    %d positions on %d layers: their KV cache is a ring of %" PRIu64
                   " bytes in all (f32), not per position\n", i.window, i.n_window_layers, i.kv_ring_bytes);
        if (i.n_ssm_layers)
            printf("recurrent state   %" PRIu64 " bytes per sequence (f32, %d Gated DeltaNet layers)\n", i.state_bytes,
                   i.n_ssm_layers);
        if (i.skipped) printf("not run           %.*s\n", i.skipped_len, i.skipped);
        printf("file              %" PRIu64 " bytes\n", i.file_bytes);
    }
    if (m->file.gguf && m->file.gguf->n_tensors) gguf_type_table(m->file.gguf);
    if (dump) moe_model_dump(m, stdout);
    moe_model_free(m);
    return 0;
}
