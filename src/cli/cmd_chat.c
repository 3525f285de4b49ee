/* cmd_chat.c - `moe chat`: a conversation in the terminal with the model's own
 * chat template. Each turn renders the whole conversation, keeps the part of
 * the KV cache its tokens share with what is cached, and evaluates only the
 * rest, so a turn pays for its new tokens only. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "json.h"
#include "think.h"

static const char *CMD = "chat";

/* Set by SIGINT; the only state a signal handler may touch. */
static volatile sig_atomic_t g_interrupted = 0;
static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

static void help(void) {
    printf("usage: moe chat [-m MODEL] [--template FILE.jinja] [--system TEXT] [--no-think] [--hide-think]\n"
           "                [--context-shift] [flags]\n\n"
           "A conversation with the model, rendered with its own chat template. Each turn\n"
           "evaluates only the tokens that are new since the last one (the KV cache keeps the\n"
           "prompt's common prefix) and says how many on stderr. Commands: /reset, /system TEXT,\n"
           "/save FILE, /load FILE (the messages as JSON), /exit. Ctrl-D exits, Ctrl-C stops a\n"
           "reply. Without a terminal, each line of stdin is one message and each reply one\n"
           "line of stdout.\n\n"
           "  -m, --model FILE        model file (.moe or GGUF)\n"
           "      --template FILE     use this Jinja chat template instead of the model's\n"
           "      --system TEXT       system prompt\n"
           "      --no-think          enable_thinking=false for thinking models\n"
           "      --hide-think        do not show the reasoning (<think> ... </think>, gpt-oss's analysis\n"
           "                          channel); a terminal shows it dimmed. It stays in the\n"
           "                          conversation; the template decides\n"
           "                          whether later turns see it\n"
           "      --context-shift     when the conversation outgrows the context, drop its oldest turns\n"
           "                          (never the system prompt) and go on, instead of stopping\n"
           "  -n, --n-predict N       most tokens per reply (default 1024)\n"
           "  -c, --ctx-size N        context length (default: the model's, at most 4096)\n"
           "  -t, --threads N         threads\n"
           "      --kv f32|f16        KV cache type\n"
           "      --temp T, --top-k K, --top-p P, --min-p P, --repeat-penalty R, -s SEED: sampling\n"
           "      --date YYYY-MM-DD   the date the template sees (default: today)\n");
}

typedef struct {
    moe_model *m;
    moe_ctx *ctx;
    moe_sampler *smp;
    moe_chat_opts copts;
    json_value *messages;   /* the conversation: [{"role", "content"}, ...] */
    int no_think, n_predict, tty;
    int context_shift;      /* drop the oldest turns when the context fills, instead of stopping */
    int hide_think, dim;    /* reasoning (<think> ... </think>): hidden, or dimmed on a terminal */
    int32_t *cache;         /* (n_cache) the token ids in the KV cache, in order */
    int n_cache, cap_cache;
    int32_t *end_ids;       /* (n_end) ids that end a reply */
    int n_end;
} chat;

static json_value *message(const char *role, const char *content, size_t n) {
    json_value *o = json_new(JSON_OBJECT);
    if (!o || json_object_set(o, "role", 4, json_new_string(role, strlen(role))) ||
        json_object_set(o, "content", 7, json_new_string(content, n)))
        die(1, CMD, "out of memory");
    return o;
}

static void set_system(chat *c, const char *text) {
    json_value *msgs = c->messages;
    if (msgs->len && !strcmp(json_get(msgs->items[0], "role")->str, "system")) {
        json_free(msgs->items[0]);
        msgs->items[0] = message("system", text, strlen(text));
        return;
    }
    if (json_array_push(msgs, message("system", text, strlen(text)))) die(1, CMD, "out of memory");
    for (size_t i = msgs->len - 1; i > 0; i--) { /* to the front */
        json_value *t = msgs->items[i];
        msgs->items[i] = msgs->items[i - 1];
        msgs->items[i - 1] = t;
    }
}

/* Render the conversation and tokenize it as HF does (special tokens as text, no BOS added);
 * with ts, start a reply's reasoning split where the prompt leaves off. */
static int32_t *render_prompt(chat *c, int *n, think_split *ts) {
    json_value *req = json_new(JSON_OBJECT);
    if (!req || json_object_set(req, "add_generation_prompt", 21, json_new_bool(1))) die(1, CMD, "out of memory");
    if (c->no_think) {
        json_value *kw = json_new(JSON_OBJECT);
        if (!kw || json_object_set(kw, "enable_thinking", 15, json_new_bool(0)) ||
            json_object_set(req, "chat_template_kwargs", 20, kw))
            die(1, CMD, "out of memory");
    }
    strbuf body = {0};
    /* messages is shared, not copied: write it under the request by hand */
    sb_puts(&body, "{\"messages\": ");
    json_write(&body, c->messages, NULL);
    strbuf rest = {0};
    json_write(&rest, req, NULL);
    json_free(req);
    sb_puts(&body, ", ");
    sb_put(&body, rest.p + 1, rest.n - 1);
    sb_free(&rest);
    if (body.failed) die(1, CMD, "out of memory");
    moe_err err = {{0}};
    size_t len;
    int raised;
    char *prompt = moe_chat_render(c->m, body.p, body.n, &c->copts, &len, &raised, &err);
    sb_free(&body);
    if (!prompt) {
        fprintf(stderr, "moe chat: %s\n", err.msg);
        return NULL;
    }
    int32_t *ids = tokenize_or_die(CMD, c->m, prompt, len, MOE_TOK_SPECIAL, n);
    if (ts) think_split_init(ts, prompt, len);
    free(prompt);
    return ids;
}

static void cache_push(chat *c, int32_t id) {
    if (c->n_cache == c->cap_cache) {
        c->cap_cache = c->cap_cache ? 2 * c->cap_cache : 1024;
        c->cache = realloc(c->cache, sizeof *c->cache * (size_t)c->cap_cache);
        if (!c->cache) die(1, CMD, "out of memory");
    }
    c->cache[c->n_cache++] = id;
}

static int is_end(const chat *c, int32_t id) {
    for (int i = 0; i < c->n_end; i++)
        if (c->end_ids[i] == id) return 1;
    return 0;
}

static int is_role(const json_value *msg, const char *role) {
    const json_value *r = json_get(msg, "role");
    return r && r->type == JSON_STRING && !strcmp(r->str, role);
}

/* Drop the oldest turn after the system prompt: its user message and what follows it up to the
 * next user message. Returns how many messages went; 0 when the current turn is the oldest. */
static int drop_oldest_turn(chat *c) {
    json_value *msgs = c->messages;
    size_t first = msgs->len && is_role(msgs->items[0], "system") ? 1 : 0, end = first + 1;
    while (end < msgs->len && !is_role(msgs->items[end], "user")) end++;
    if (end >= msgs->len) return 0;
    for (size_t i = first; i < end; i++) json_free(msgs->items[i]);
    memmove(msgs->items + first, msgs->items + end, sizeof *msgs->items * (msgs->len - end));
    msgs->len -= end - first;
    return (int)(end - first);
}

/* --context-shift: drop the oldest turns until the rendered conversation, `extra` tokens of the
 * reply so far and `room` more fit the context. Returns the new rendering (*n tokens), or NULL
 * when there was nothing to drop or the template refused; says on stderr what it dropped. */
static int32_t *shift_context(chat *c, int extra, int room, int *n) {
    int32_t *ids = NULL;
    int turns = 0, msgs = 0, k;
    while ((k = drop_oldest_turn(c)) > 0) {
        turns++;
        msgs += k;
        free(ids);
        if (!(ids = render_prompt(c, n, NULL))) return NULL;
        if (*n + extra + room <= moe_ctx_n_ctx(c->ctx)) break;
    }
    if (turns)
        fprintf(stderr, "%s[context shift: dropped the oldest %d turn%s (%d messages); the prompt is now %d token%s]\n",
                extra ? "\n" : "", turns, plural(turns), msgs, *n, plural(*n));
    return ids;
}

/* Make the KV cache hold ids[0..n): keep the prefix it already shares with them and evaluate the
 * rest (at least one token, for its logits). Returns how many were kept. */
static int sync_cache(chat *c, const int32_t *ids, int n) {
    int keep = 0;
    while (keep < c->n_cache && keep < n && c->cache[keep] == ids[keep]) keep++;
    if (keep == n) keep--;
    moe_err err = {{0}};
    if (moe_ctx_truncate(c->ctx, keep, &err)) { /* a sliding-window ring moved on: start over */
        moe_ctx_reset(c->ctx);
        keep = 0;
    }
    c->n_cache = keep;
    if (moe_eval(c->ctx, ids + keep, n - keep, NULL, &err)) die(1, CMD, "%s", err.msg);
    for (int i = keep; i < n; i++) cache_push(c, ids[i]);
    return keep;
}

/* The context filled during a reply whose prompt was the first n_prompt cached tokens and whose
 * last sampled token `next` is not evaluated yet: with --context-shift, re-render the conversation
 * without its oldest turns, put the reply so far after it and evaluate what changed. Returns the
 * new prompt length, or -1 when the reply cannot go on. */
static int shift_mid_reply(chat *c, int n_prompt, int32_t next, int room) {
    if (!c->context_shift) return -1;
    int n_sofar = c->n_cache - n_prompt + 1, n;
    int32_t *ids = shift_context(c, n_sofar, room, &n);
    if (!ids || n + n_sofar >= moe_ctx_n_ctx(c->ctx)) {
        free(ids);
        return -1;
    }
    int32_t *seq = realloc(ids, sizeof *seq * (size_t)(n + n_sofar));
    if (!seq) die(1, CMD, "out of memory");
    memcpy(seq + n, c->cache + n_prompt, sizeof *seq * (size_t)(n_sofar - 1));
    seq[n + n_sofar - 1] = next;
    sync_cache(c, seq, n + n_sofar);
    free(seq);
    return n;
}

/* Print a span of the reply: reasoning dimmed (SGR 2) on a terminal, or not at all with --hide-think. */
static void show(void *user, const char *text, size_t n, int reasoning) {
    const chat *c = user;
    if (reasoning && c->hide_think) return;
    if (reasoning && c->dim) fputs("\033[2m", stdout);
    fwrite(text, 1, n, stdout);
    if (reasoning && c->dim) fputs("\033[0m", stdout);
}

/* One turn: the user's text in, the reply streamed to stdout and kept in the history. */
static void turn(chat *c, const char *text) {
    if (json_array_push(c->messages, message("user", text, strlen(text)))) die(1, CMD, "out of memory");
    int n, n_ctx = moe_ctx_n_ctx(c->ctx);
    /* the reply's room: what it may need, up to half the context */
    int room = c->n_predict < n_ctx / 2 ? c->n_predict : n_ctx / 2;
    think_split ts;
    int32_t *ids = render_prompt(c, &n, &ts);
    if (ids && c->context_shift && n + room > n_ctx) {
        int n2;
        int32_t *shifted = shift_context(c, 0, room, &n2);
        if (shifted) {
            free(ids);
            ids = shifted;
            n = n2;
        }
    }
    if (!ids) { /* the template refused: forget the message */
        json_free(c->messages->items[--c->messages->len]);
        return;
    }
    if (n == 0 || n >= n_ctx) {
        fprintf(stderr, "moe chat: the conversation is %d tokens; the context holds %d (/reset, raise -c, or "
                "--context-shift)\n", n, n_ctx);
        json_free(c->messages->items[--c->messages->len]);
        free(ids);
        return;
    }
    g_interrupted = 0; /* a Ctrl-C from here on stops this reply, even during the prompt */
    double t0 = now_seconds();
    int keep = sync_cache(c, ids, n), n_first = n;
    double t_prompt = now_seconds() - t0;

    strbuf reply = {0};
    moe_detok dt;
    moe_detok_init(&dt, c->m);
    dt.prev = ids[n - 1];
    char piece[1024];
    int n_gen = 0, full = 0;
    moe_err err = {{0}};
    double t1 = now_seconds();
    while (n_gen < c->n_predict && !g_interrupted) {
        int32_t next = moe_sample(c->smp, moe_ctx_logits(c->ctx), c->cache, c->n_cache);
        if (is_end(c, next)) break;
        size_t k = moe_detok_push(&dt, next, piece, sizeof piece);
        think_split_push(&ts, piece, k, show, c);
        fflush(stdout);
        sb_put(&reply, piece, k);
        n_gen++;
        if (moe_ctx_pos(c->ctx) >= n_ctx) {
            int left = c->n_predict - n_gen;
            int n2 = shift_mid_reply(c, n, next, left < room ? left : room);
            if (n2 < 0) {
                full = 1;
                break;
            }
            n = n2;
            continue;
        }
        if (moe_eval(c->ctx, &next, 1, NULL, &err)) die(1, CMD, "%s", err.msg);
        cache_push(c, next);
    }
    size_t k = moe_detok_flush(&dt, piece, sizeof piece);
    think_split_push(&ts, piece, k, show, c);
    think_split_flush(&ts, show, c);
    sb_put(&reply, piece, k);
    if (g_interrupted) clearerr(stdout); /* Ctrl-C may have interrupted a write to the terminal */
    fputc('\n', stdout);
    fflush(stdout);
    if (reply.failed) die(1, CMD, "out of memory");
    if (json_array_push(c->messages, message("assistant", reply.p ? reply.p : "", reply.n))) die(1, CMD, "out of memory");
    sb_free(&reply);
    double t_gen = now_seconds() - t1;
    fprintf(stderr, "[prompt %d token%s: %d evaluated in %.2f s, %d reused from the cache; %d generated, %.1f tok/s%s]\n",
            n_first, plural(n_first), n_first - keep, t_prompt, keep, n_gen, n_gen / (t_gen > 0 ? t_gen : 1e-9),
            g_interrupted ? "; stopped"
            : !full ? ""
            : c->context_shift ? "; the context is full (the reply alone fills it)"
                               : "; the context is full: /reset, raise -c, or --context-shift");
    free(ids);
}

static void save(chat *c, const char *path) {
    strbuf b = {0};
    json_write_opts o = {.indent = " "};
    json_write(&b, c->messages, &o);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b.p, 1, b.n, f) != b.n || fclose(f)) fprintf(stderr, "moe chat: cannot write %s\n", path);
    else fprintf(stderr, "[saved %zu messages to %s]\n", c->messages->len, path);
    sb_free(&b);
}

static void load(chat *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "moe chat: cannot open %s: %s\n", path, strerror(errno));
        return;
    }
    strbuf b = {0};
    char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) sb_put(&b, buf, got);
    fclose(f);
    moe_err err = {{0}};
    json_value *v = b.failed ? NULL : json_parse(b.p ? b.p : "", b.n, &err);
    sb_free(&b);
    int ok = v && v->type == JSON_ARRAY;
    for (size_t i = 0; ok && i < v->len; i++) {
        json_value *role = json_get(v->items[i], "role");
        ok = role && role->type == JSON_STRING;
    }
    if (!ok) {
        fprintf(stderr, "moe chat: %s: %s\n", path, v ? "expected a JSON array of messages with a role" : err.msg);
        json_free(v);
        return;
    }
    json_free(c->messages);
    c->messages = v;
    fprintf(stderr, "[loaded %zu messages]\n", v->len);
}

/* A line of input without its newline; NULL at end of input. Ctrl-C while
 * reading gives an empty line. */
static char *read_line(strbuf *b, int tty) {
    b->n = 0;
    if (tty) {
        fputs("> ", stdout);
        fflush(stdout);
    }
    for (;;) {
        int ch = getchar();
        if (ch == EOF) {
            if (ferror(stdin) && errno == EINTR && g_interrupted) {
                clearerr(stdin);
                g_interrupted = 0;
                fputc('\n', stdout);
                b->n = 0;
                sb_putc(b, 0);
                return b->p;
            }
            if (b->n == 0) return NULL;
            break;
        }
        if (ch == '\n') break;
        sb_putc(b, (char)ch);
    }
    sb_putc(b, 0);
    return b->failed ? NULL : b->p;
}

int cmd_chat(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *tmpl = NULL, *system = NULL, *date = NULL, *flag;
    chat c = {.n_predict = 1024};
    moe_ctx_params cp = moe_ctx_default_params();
    moe_sampler_params sp = moe_sampler_default_params();
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "--template")) tmpl = args_value(&a, flag);
        else if (!strcmp(flag, "--system")) system = args_value(&a, flag);
        else if (!strcmp(flag, "--no-think")) c.no_think = 1;
        else if (!strcmp(flag, "--context-shift")) c.context_shift = 1;
        else if (!strcmp(flag, "--hide-think")) c.hide_think = 1;
        else if (!strcmp(flag, "--date")) date = args_value(&a, flag);
        else if (!strcmp(flag, "-n") || !strcmp(flag, "--n-predict")) c.n_predict = args_int(&a, flag, 1, 1 << 30);
        else if (!strcmp(flag, "-c") || !strcmp(flag, "--ctx-size")) cp.n_ctx = args_int(&a, flag, 1, 1 << 24);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) cp.n_threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "--kv")) cp.kv_f16 = args_kv_type(&a, flag);
        else if (args_sampler(&a, flag, &sp)) continue;
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe chat -h)", flag);
    }
    if (date && sscanf(date, "%4d-%2d-%2d", &c.copts.year, &c.copts.month, &c.copts.day) != 3)
        die(EXIT_USAGE, CMD, "--date \"%s\": expected YYYY-MM-DD", date);
    size_t tlen = 0;
    char *tsrc = tmpl ? read_file_or_die(CMD, tmpl, &tlen) : NULL;
    c.copts.template_text = tsrc;
    c.copts.template_len = tlen;
    c.m = open_model_or_die(CMD, model ? model : default_model_path(argv[0]));
    if (!tsrc && !moe_chat_template(c.m, NULL))
        die(1, CMD, "the model has no chat template (give one with --template FILE.jinja)");
    moe_model_info info;
    moe_model_get_info(c.m, &info);
    moe_err err = {{0}};
    c.ctx = moe_ctx_new(c.m, &cp, &err);
    if (!c.ctx) die(1, CMD, "%s", err.msg);
    c.smp = moe_sampler_new(&sp, info.vocab_size, &err);
    if (!c.smp) die(EXIT_USAGE, CMD, "%s", err.msg);
    c.n_end = moe_chat_end_tokens(c.m, NULL, 0);
    c.end_ids = malloc(sizeof *c.end_ids * (size_t)(c.n_end + 1));
    c.messages = json_new(JSON_ARRAY);
    if (!c.end_ids || !c.messages) die(1, CMD, "out of memory");
    moe_chat_end_tokens(c.m, c.end_ids, c.n_end);
    if (system) set_system(&c, system);
    c.tty = isatty(STDIN_FILENO);
    c.dim = isatty(STDOUT_FILENO);

    struct sigaction sa = {0};
    sa.sa_handler = on_sigint; /* no SA_RESTART: Ctrl-C interrupts a read */
    sigaction(SIGINT, &sa, NULL);

    strbuf line = {0};
    char *text;
    while ((text = read_line(&line, c.tty)) != NULL) {
        if (!strcmp(text, "/exit") || !strcmp(text, "/quit")) break;
        if (!strcmp(text, "/reset")) {
            json_value *sys = c.messages->len && !strcmp(json_get(c.messages->items[0], "role")->str, "system")
                                  ? c.messages->items[0] : NULL;
            if (sys) c.messages->items[0] = NULL;
            json_free(c.messages);
            c.messages = json_new(JSON_ARRAY);
            if (!c.messages || (sys && json_array_push(c.messages, sys))) die(1, CMD, "out of memory");
            moe_ctx_reset(c.ctx);
            c.n_cache = 0;
            fprintf(stderr, "[conversation reset]\n");
        } else if (!strncmp(text, "/system ", 8)) {
            set_system(&c, text + 8);
            fprintf(stderr, "[system prompt set]\n");
        } else if (!strncmp(text, "/save ", 6)) {
            save(&c, text + 6);
        } else if (!strncmp(text, "/load ", 6)) {
            load(&c, text + 6);
        } else if (text[0] == '/' && text[1] != '/') {
            fprintf(stderr, "commands: /reset, /system TEXT, /save FILE, /load FILE, /exit (// starts a message with /)\n");
        } else if (text[0]) {
            turn(&c, text[0] == '/' ? text + 1 : text);
        }
    }
    sb_free(&line);
    json_free(c.messages);
    free(c.cache);
    free(c.end_ids);
    free(tsrc);
    moe_sampler_free(c.smp);
    moe_ctx_free(c.ctx);
    moe_model_free(c.m);
    return 0;
}
