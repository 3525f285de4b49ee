/* cmd_logits.c - `moe logits`: evaluate token ids as one sequence and write
 * float32 logits, n_tokens x vocab, row-major, little-endian. This exact
 * contract is what the golden tests use. Several --tokens lists are several
 * sequences of one context stepped together (moe_eval_batch): what
 * tests/py/test_batch.py compares with each sequence evaluated alone. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char *CMD = "logits";

static void help(void) {
    printf("usage: moe logits -m MODEL --tokens ID,ID,... [--tokens ...] -o FILE [flags]\n\n"
           "Evaluates the ids as one sequence (row i = logits after reading ids 0..i) and\n"
           "writes float32 little-endian logits, n_tokens x vocab, row-major.\n"
           "Given several times, --tokens makes several sequences of one context, evaluated\n"
           "together in one batch (moe_eval_batch), then decoded together with --greedy;\n"
           "the files hold sequence 0's rows, then sequence 1's, ...; stdout one line each.\n\n"
           "  -m, --model FILE      model file (.moe or GGUF)\n"
           "      --tokens LIST     comma-separated token ids\n"
           "  -c, --ctx N           context length (default: the longest sequence + N of --greedy)\n"
           "  -o, --output FILE     where to write the logits\n"
           "  -b, --batch-size N    tokens per forward batch (default 512)\n"
           "      --greedy N        then decode N tokens greedily, one at a time through the\n"
           "                        KV cache, and print their ids on stdout\n"
           "      --greedy-logits F write the logits of those decode steps (N-1 rows: row j =\n"
           "                        logits after feeding continuation token j) to F\n"
           "  -t, --threads N       threads (default: all cores)\n"
           "      --kv f32|f16      KV cache type (default f32; f16 halves it)\n");
    route_opts_help();
}

static void write_floats(const char *path, const float *x, size_t count) {
    FILE *f = fopen(path, "wb");
    if (!f) die(1, CMD, "cannot create %s: %s", path, strerror(errno));
    if (fwrite(x, sizeof(float), count, f) != count || fclose(f) != 0) die(1, CMD, "cannot write %s", path);
}

#define MAX_SEQS 64

/* Several sequences: all prompts in one moe_eval_batch, then every decode
 * step of all of them in one call, as `moe serve` steps its slots. */
static void eval_together(moe_model *m, moe_ctx_params cp, const route_opts *ro, int32_t **ids, const int *n, int n_seqs,
                          const char *out, int greedy, const char *greedy_out) {
    moe_model_info info;
    moe_model_get_info(m, &info);
    size_t V = (size_t)info.vocab_size, rows = 0, done = 0;
    for (int s = 0; s < n_seqs; s++) rows += (size_t)n[s];
    cp.n_seq = n_seqs;
    moe_ctx *ctx = route_ctx_new(CMD, m, &cp, ro);
    float *logits = malloc(sizeof(float) * rows * V);
    float *steps = greedy_out ? malloc(sizeof(float) * V * (size_t)n_seqs * (size_t)greedy) : NULL;
    int32_t *cont = malloc(sizeof(int32_t) * (size_t)n_seqs * (size_t)(greedy ? greedy : 1));
    if (!logits || (greedy_out && !steps) || !cont) die(1, CMD, "out of memory for %zu x %zu logits", rows, V);
    moe_batch_item items[MAX_SEQS];
    for (int s = 0; s < n_seqs; done += (size_t)n[s], s++)
        items[s] = (moe_batch_item){.seq = s, .tokens = ids[s], .n = n[s], .logits = logits + done * V};
    moe_err err = {{0}};
    if (moe_eval_batch(ctx, items, n_seqs, &err)) die(1, CMD, "%s", err.msg);
    write_floats(out, logits, rows * V);
    for (int j = 0; j < greedy; j++) {
        for (int s = 0; s < n_seqs; s++) {
            const float *l = moe_seq_logits(ctx, s);
            int32_t best = 0;
            for (size_t v = 1; v < V; v++)
                if (l[v] > l[best]) best = (int32_t)v;
            cont[(size_t)s * greedy + j] = best;
            items[s] = (moe_batch_item){.seq = s, .tokens = &cont[(size_t)s * greedy + j], .n = 1};
        }
        if (j + 1 == greedy) break;
        if (moe_eval_batch(ctx, items, n_seqs, &err)) die(1, CMD, "%s", err.msg);
        if (steps)
            for (int s = 0; s < n_seqs; s++)
                memcpy(steps + ((size_t)s * (greedy - 1) + j) * V, moe_seq_logits(ctx, s), sizeof(float) * V);
    }
    for (int s = 0; greedy && s < n_seqs; s++)
        for (int j = 0; j < greedy; j++) printf(j + 1 < greedy ? "%d " : "%d\n", cont[(size_t)s * greedy + j]);
    if (steps) write_floats(greedy_out, steps, (size_t)n_seqs * (size_t)(greedy - 1) * V);
    free(steps);
    free(cont);
    free(logits);
    moe_ctx_free(ctx);
}

int cmd_logits(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *tokens[MAX_SEQS] = {NULL}, *out = NULL, *greedy_out = NULL, *flag;
    int greedy = 0, n_seqs = 0, n_ctx = 0;
    moe_ctx_params cp = moe_ctx_default_params();
    route_opts ro = {0, NULL, NULL, 0};
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "--tokens")) {
            if (n_seqs == MAX_SEQS) die(EXIT_USAGE, CMD, "at most %d --tokens lists", MAX_SEQS);
            tokens[n_seqs++] = args_value(&a, flag);
        } else if (!strcmp(flag, "-c") || !strcmp(flag, "--ctx")) n_ctx = args_int(&a, flag, 1, 1 << 24);
        else if (!strcmp(flag, "-o") || !strcmp(flag, "--output")) out = args_value(&a, flag);
        else if (!strcmp(flag, "-b") || !strcmp(flag, "--batch-size")) cp.n_batch = args_int(&a, flag, 1, 1 << 16);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) cp.n_threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "--kv")) cp.kv_f16 = args_kv_type(&a, flag);
        else if (!strcmp(flag, "--greedy")) greedy = args_int(&a, flag, 1, 1 << 20);
        else if (!strcmp(flag, "--greedy-logits")) greedy_out = args_value(&a, flag);
        else if (route_flag(&a, flag, &ro)) continue;
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe logits -h)", flag);
    }
    if (!n_seqs) die(EXIT_USAGE, CMD, "--tokens is required");
    if (!out) die(EXIT_USAGE, CMD, "-o FILE is required");
    int lens[MAX_SEQS], longest = 0;
    int32_t *lists[MAX_SEQS];
    for (int s = 0; s < n_seqs; s++) {
        lists[s] = parse_id_list(CMD, tokens[s], &lens[s]);
        if (lens[s] > longest) longest = lens[s];
    }
    if (n_seqs > 1 && ro.trace_path) die(EXIT_USAGE, CMD, "--trace-routing takes one --tokens list");
    int n = lens[0];
    int32_t *ids = lists[0];
    if (!model) model = default_model_path(argv[0]);
    refuse_model_as_output(CMD, model, out, "-o");
    refuse_model_as_output(CMD, model, greedy_out, "--greedy-logits");
    moe_model *m = open_model_or_die(CMD, model);
    moe_model_info info;
    moe_model_get_info(m, &info);
    if (!info.has_weights) die(1, CMD, "this is a tokenizer-only file: it has no weights to run");
    if (greedy_out && !greedy) die(EXIT_USAGE, CMD, "--greedy-logits needs --greedy N");
    if ((long)longest + greedy > info.max_ctx)
        die(EXIT_USAGE, CMD, "%d tokens exceed the model's context of %d", longest + greedy, info.max_ctx);
    cp.n_ctx = n_ctx ? n_ctx : longest + greedy;
    if (n_seqs > 1) {
        eval_together(m, cp, &ro, lists, lens, n_seqs, out, greedy, greedy_out);
        for (int s = 0; s < n_seqs; s++) free(lists[s]);
        moe_model_free(m);
        return 0;
    }
    moe_err err = {{0}};
    moe_ctx *ctx = route_ctx_new(CMD, m, &cp, &ro);
    trace_writer *trace = trace_open(CMD, m, ctx, &ro);
    float *logits = malloc(sizeof(float) * (size_t)n * (size_t)info.vocab_size);
    if (!logits) die(1, CMD, "out of memory for %d x %d logits", n, info.vocab_size);
    if (moe_eval(ctx, ids, n, logits, &err)) die(1, CMD, "%s", err.msg);
    trace_flush(trace);

    write_floats(out, logits, (size_t)n * (size_t)info.vocab_size);
    free(logits);

    if (greedy) { /* argmax, feed back one token at a time */
        size_t V = (size_t)info.vocab_size;
        float *steps = greedy_out ? malloc(sizeof(float) * V * (size_t)greedy) : NULL;
        if (greedy_out && !steps) die(1, CMD, "out of memory");
        for (int j = 0; j < greedy; j++) {
            const float *l = moe_ctx_logits(ctx);
            int32_t best = 0;
            for (size_t v = 1; v < V; v++)
                if (l[v] > l[best]) best = (int32_t)v;
            printf(j ? " %d" : "%d", best);
            if (j + 1 < greedy) {
                if (moe_eval(ctx, &best, 1, NULL, &err)) die(1, CMD, "%s", err.msg);
                trace_flush(trace);
                if (steps) memcpy(steps + (size_t)j * V, moe_ctx_logits(ctx), sizeof(float) * V);
            }
        }
        printf("\n");
        if (steps) write_floats(greedy_out, steps, (size_t)(greedy - 1) * V);
        free(steps);
    }
    trace_close(trace);
    free(ids);
    moe_ctx_free(ctx);
    moe_model_free(m);
    return 0;
}
