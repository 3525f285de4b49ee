/* cmd_run.c - `moe run`: prompt in, text out, speed on stderr. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json.h"

static const char *CMD = "run";

/* --chat: the prompt as one user turn (after an optional system message),
 * rendered with the chat template; returns the prompt text (malloc'ed). */
static char *chat_prompt(const moe_model *m, const char *system, const char *user, size_t user_len,
                         const char *tmpl_path, size_t *len) {
    json_value *req = json_new(JSON_OBJECT), *msgs = json_new(JSON_ARRAY);
    const char *roles[2] = {"system", "user"};
    const char *texts[2] = {system, user};
    size_t lens[2] = {system ? strlen(system) : 0, user_len};
    for (int i = 0; i < 2 && msgs; i++) {
        if (!texts[i]) continue;
        json_value *o = json_new(JSON_OBJECT);
        if (!o || json_object_set(o, "role", 4, json_new_string(roles[i], strlen(roles[i]))) ||
            json_object_set(o, "content", 7, json_new_string(texts[i], lens[i])) || json_array_push(msgs, o))
            die(1, CMD, "out of memory");
    }
    strbuf body = {0};
    if (!req || !msgs || json_object_set(req, "messages", 8, msgs) || json_write(&body, req, NULL))
        die(1, CMD, "out of memory");
    json_free(req);
    moe_chat_opts o = {0};
    size_t tlen = 0;
    char *tsrc = tmpl_path ? read_file_or_die(CMD, tmpl_path, &tlen) : NULL;
    o.template_text = tsrc, o.template_len = tlen;
    moe_err err = {{0}};
    int raised;
    char *prompt = moe_chat_render(m, body.p, body.n, &o, len, &raised, &err);
    if (!prompt) die(1, CMD, "%s", err.msg);
    sb_free(&body);
    free(tsrc);
    return prompt;
}

static void help(void) {
    printf("usage: moe run [-m MODEL] [-p PROMPT | -f FILE] [flags]\n\n"
           "Generates text after the prompt and streams it to stdout; prefill and decode\n"
           "speed go to stderr. Without -m the default model in models/ is used.\n\n"
           "  -m, --model FILE        model file (.moe or GGUF)\n"
           "  -p, --prompt TEXT       prompt text (default: empty, start from BOS)\n"
           "  -f, --file FILE         read the prompt from a file\n"
           "  -n, --n-predict N       tokens to generate (default 256; -1 = until the context is full)\n"
           "  -c, --ctx-size N        context length (default: the model's, at most 4096)\n"
           "  -b, --batch-size N      prompt tokens per batch (default 512)\n"
           "  -t, --threads N         threads (default: all cores)\n"
           "      --kv f32|f16        KV cache type (default f32; f16 halves it)\n"
           "      --temp T            temperature, 0 = greedy (default 0.8)\n"
           "      --top-k K           keep the K most likely tokens, 0 = off (default 40)\n"
           "      --top-p P           nucleus sampling, 1 = off (default 0.95)\n"
           "      --min-p P           drop tokens below P x the best probability (default 0.05)\n"
           "      --repeat-penalty R  penalise recent tokens, 1 = off (default 1.0)\n"
           "      --repeat-last-n N   how many recent tokens the penalty sees (default 64)\n"
           "  -s, --seed S            random seed (default 42)\n"
           "      --no-special        treat special-token text in the prompt as plain text\n"
           "      --no-bos            do not prepend BOS\n"
           "      --chat              the prompt is one user message, rendered with the model's chat\n"
           "                          template; prints only the reply, which ends at an end-of-turn token\n"
           "      --system TEXT       with --chat: a system message first\n"
           "      --template FILE     with --chat: this Jinja template instead of the model's\n");
    route_opts_help();
}

int cmd_run(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *prompt = NULL, *prompt_file = NULL, *flag;
    int n_predict = 256, no_special = 0, no_bos = 0, chat = 0;
    const char *system = NULL, *tmpl = NULL;
    moe_ctx_params cp = moe_ctx_default_params();
    moe_sampler_params sp = moe_sampler_default_params();
    route_opts ro = {0, NULL, NULL, 0};
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "-p") || !strcmp(flag, "--prompt")) prompt = args_value(&a, flag);
        else if (!strcmp(flag, "-f") || !strcmp(flag, "--file")) prompt_file = args_value(&a, flag);
        else if (!strcmp(flag, "-n") || !strcmp(flag, "--n-predict")) n_predict = args_int(&a, flag, -1, 1 << 30);
        else if (!strcmp(flag, "-c") || !strcmp(flag, "--ctx-size")) cp.n_ctx = args_int(&a, flag, 1, 1 << 24);
        else if (!strcmp(flag, "-b") || !strcmp(flag, "--batch-size")) cp.n_batch = args_int(&a, flag, 1, 1 << 16);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) cp.n_threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "--kv")) cp.kv_f16 = args_kv_type(&a, flag);
        else if (args_sampler(&a, flag, &sp)) continue;
        else if (!strcmp(flag, "--repeat-last-n")) sp.repeat_last_n = args_int(&a, flag, 0, 1 << 20);
        else if (!strcmp(flag, "--no-special")) no_special = 1;
        else if (!strcmp(flag, "--no-bos")) no_bos = 1;
        else if (!strcmp(flag, "--chat")) chat = 1;
        else if (!strcmp(flag, "--system")) system = args_value(&a, flag);
        else if (!strcmp(flag, "--template")) tmpl = args_value(&a, flag);
        else if (route_flag(&a, flag, &ro)) continue;
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe run -h)", flag);
    }
    if (prompt && prompt_file) die(EXIT_USAGE, CMD, "give -p or -f, not both");
    size_t plen = prompt ? strlen(prompt) : 0;
    char *ptext = prompt_file ? read_file_or_die(CMD, prompt_file, &plen) : NULL;
    const char *text = ptext ? ptext : prompt ? prompt : "";
    if ((system || tmpl) && !chat) die(EXIT_USAGE, CMD, "--system and --template go with --chat");

    moe_model *m = open_model_or_die(CMD, model ? model : default_model_path(argv[0]));
    char *rendered = NULL;
    int32_t *end_ids = NULL;
    int n_end = 0;
    if (chat) { /* tokenized as HF does after rendering: special tokens as text, no BOS added */
        rendered = chat_prompt(m, system, text, plen, tmpl, &plen);
        text = rendered;
        no_bos = 1;
        n_end = moe_chat_end_tokens(m, NULL, 0);
        end_ids = malloc(sizeof *end_ids * (size_t)(n_end + 1));
        if (!end_ids) die(1, CMD, "out of memory");
        moe_chat_end_tokens(m, end_ids, n_end);
    }
    moe_model_info info;
    moe_model_get_info(m, &info);
    moe_err err = {{0}};
    moe_ctx *ctx = route_ctx_new(CMD, m, &cp, &ro);
    trace_writer *trace = trace_open(CMD, m, ctx, &ro);
    moe_sampler *smp = moe_sampler_new(&sp, info.vocab_size, &err);
    if (!smp) die(EXIT_USAGE, CMD, "%s", err.msg);

    int n_prompt;
    int flags = (no_special ? 0 : MOE_TOK_SPECIAL) | (no_bos ? 0 : MOE_TOK_ADD_BOS);
    int32_t *prompt_ids = tokenize_or_die(CMD, m, text, plen, flags, &n_prompt);
    if (n_prompt == 0) { /* an empty prompt starts from BOS, as llama2.c does */
        if (info.bos < 0) die(EXIT_USAGE, CMD, "empty prompt and the model has no BOS token to start from");
        prompt_ids[n_prompt++] = info.bos;
    }
    int n_ctx = moe_ctx_n_ctx(ctx);
    if (n_prompt >= n_ctx)
        die(EXIT_USAGE, CMD, "the prompt is %d token%s; the context holds %d (raise -c, up to the model's %d)",
            n_prompt, plural(n_prompt), n_ctx, info.max_ctx);
    int ctx_bound = n_predict < 0 || n_predict > n_ctx - n_prompt; /* the context ends generation first */
    int max_new = ctx_bound ? n_ctx - n_prompt : n_predict;

    int32_t *hist = malloc(sizeof *hist * (size_t)(n_prompt + max_new + 1));
    if (!hist) die(1, CMD, "out of memory");
    memcpy(hist, prompt_ids, sizeof *hist * (size_t)n_prompt);
    int n_hist = n_prompt;

    if (!chat) fwrite(text, 1, plen, stdout); /* echo the prompt as given */
    fflush(stdout);
    double t0 = now_seconds();
    if (moe_eval(ctx, prompt_ids, n_prompt, NULL, &err)) die(1, CMD, "%s", err.msg);
    double t_prefill = now_seconds() - t0;

    moe_detok dt;
    moe_detok_init(&dt, m);
    dt.prev = prompt_ids[n_prompt - 1];
    char piece[1024];
    int n_gen = 0;
    double t1 = now_seconds();
    for (; n_gen < max_new; n_gen++) {
        int32_t next = moe_sample(smp, moe_ctx_logits(ctx), hist, n_hist);
        if (moe_token_is_eos(m, next)) break;
        int end = 0;
        for (int e = 0; e < n_end; e++) end |= end_ids[e] == next;
        if (end) break;
        hist[n_hist++] = next;
        size_t k = moe_detok_push(&dt, next, piece, sizeof piece);
        fwrite(piece, 1, k, stdout);
        fflush(stdout);
        if (n_gen + 1 < max_new && moe_eval(ctx, &next, 1, NULL, &err)) die(1, CMD, "%s", err.msg);
        trace_flush(trace);
    }
    trace_close(trace);
    size_t k = moe_detok_flush(&dt, piece, sizeof piece);
    fwrite(piece, 1, k, stdout);
    printf("\n");
    /* the context, not -n or an end token, stopped generation: say so */
    if (ctx_bound && n_gen == max_new)
        fprintf(stderr, "\ncontext full: stopped after %d token%s at the context's %d positions (raise -c, up to the "
                        "model's %d)\n", n_gen, plural(n_gen), n_ctx, info.max_ctx);
    double t_decode = now_seconds() - t1;
    fprintf(stderr, "\nprefill: %d token%s in %.3f s (%.1f tok/s)   decode: %d token%s in %.3f s (%.1f tok/s)\n",
            n_prompt, plural(n_prompt), t_prefill, n_prompt / (t_prefill > 0 ? t_prefill : 1e-9), n_gen,
            plural(n_gen), t_decode, n_gen / (t_decode > 0 ? t_decode : 1e-9));
    fprintf(stderr, "memory: %.1f MB allocated for %d positions (KV cache, scratch, RoPE tables); weights mapped, not copied\n",
            moe_ctx_bytes(ctx) / 1e6, moe_ctx_n_ctx(ctx));

    free(hist);
    free(rendered);
    free(end_ids);
    free(prompt_ids);
    free(ptext);
    moe_sampler_free(smp);
    moe_ctx_free(ctx);
    moe_model_free(m);
    return 0;
}
