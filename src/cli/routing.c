/* routing.c - the routing flags shared by run, logits, perplexity and route
 * (--experts-per-token, --disable-experts, --trace-routing, --trace-format)
 * and the trace writer. Columns and escaping: docs/ROUTING.md "Trace".
 *
 * Within one moe_eval call the engine reports routing layer by layer; the
 * writer keeps the events of one call and writes them sorted by (position,
 * layer, rank) when the caller flushes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int route_flag(args *a, const char *flag, route_opts *o) {
    if (!strcmp(flag, "--experts-per-token")) o->n_active = args_int(a, flag, 1, 65536);
    else if (!strcmp(flag, "--disable-experts")) o->disable = args_value(a, flag);
    else if (!strcmp(flag, "--trace-routing")) o->trace_path = args_value(a, flag);
    else if (!strcmp(flag, "--trace-format")) {
        const char *v = args_value(a, flag);
        if (!strcmp(v, "csv")) o->trace_jsonl = 0;
        else if (!strcmp(v, "jsonl")) o->trace_jsonl = 1;
        else die(EXIT_USAGE, a->cmd, "--trace-format: \"%s\" is not csv or jsonl", v);
    } else return 0;
    return 1;
}

void route_opts_help(void) {
    printf("      --experts-per-token K  route each token to K experts instead of the trained k\n"
           "      --disable-experts L:E[,L:E...]  never choose expert E of layer L (L = * : every\n"
           "                          MoE layer); see docs/ROUTING.md for how weights renormalise\n"
           "      --trace-routing FILE   write every routing decision (position, layer, rank) to FILE\n"
           "      --trace-format F       csv (default) or jsonl\n");
}

static void disable_one(const char *cmd, moe_ctx *ctx, int layer, int expert) {
    moe_err err = {{0}};
    if (moe_ctx_disable_expert(ctx, layer, expert, &err)) die(EXIT_USAGE, cmd, "--disable-experts: %s", err.msg);
}

void route_opts_apply(const char *cmd, const moe_model *m, moe_ctx *ctx, const route_opts *o) {
    if (!o->disable) return;
    moe_model_info info;
    moe_model_get_info(m, &info);
    const char *p = o->disable;
    while (*p) {
        int layer = -1;
        char *end;
        if (*p == '*') end = (char *)p + 1;
        else {
            errno = 0;
            long v = strtol(p, &end, 10);
            if (errno || end == p || v < 0 || v > 1 << 20) goto bad;
            layer = (int)v;
        }
        if (*end != ':') goto bad;
        p = end + 1;
        errno = 0;
        long e = strtol(p, &end, 10);
        if (errno || end == p || e < 0 || e > 1 << 20 || (*end && *end != ',')) goto bad;
        if (layer >= 0) disable_one(cmd, ctx, layer, (int)e);
        else
            for (int l = 0; l < info.n_layers; l++)
                if (moe_layer_is_moe(m, l)) disable_one(cmd, ctx, l, (int)e);
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) goto bad;
    }
    return;
bad:
    die(EXIT_USAGE, cmd, "--disable-experts \"%.60s\": expected LAYER:EXPERT[,LAYER:EXPERT...] (LAYER may be *)",
        o->disable);
}

moe_ctx *route_ctx_new(const char *cmd, const moe_model *m, moe_ctx_params *cp, const route_opts *o) {
    moe_err err = {{0}};
    cp->n_active = o->n_active;
    moe_ctx *ctx = moe_ctx_new(m, cp, &err);
    if (!ctx) die(o->n_active && strstr(err.msg, "experts per token") ? EXIT_USAGE : 1, cmd, "%s", err.msg);
    route_opts_apply(cmd, m, ctx, o);
    return ctx;
}

/* ------------------------------------------------------------ trace writer */

typedef struct {
    int pos, layer, token;
    float shared;
    size_t at;       /* index of its k ids / weights / logits / scores */
    size_t groups;   /* index of its n_groups flags */
} trace_rec;

struct trace_writer {
    const char *cmd;
    const moe_model *model;
    FILE *f;
    int jsonl, k, n_groups;
    trace_rec *recs;
    size_t n, cap;
    int *ids;
    float *w, *logit, *score;
    unsigned char *kept;
    size_t rows;
};

static void grow(trace_writer *t) {
    size_t cap = t->cap ? 2 * t->cap : 1024, k = (size_t)t->k, G = (size_t)t->n_groups;
    t->recs = realloc(t->recs, sizeof *t->recs * cap);
    t->ids = realloc(t->ids, sizeof *t->ids * cap * k);
    t->w = realloc(t->w, sizeof *t->w * cap * k);
    t->logit = realloc(t->logit, sizeof *t->logit * cap * k);
    t->score = realloc(t->score, sizeof *t->score * cap * k);
    t->kept = realloc(t->kept, cap * G);
    if (!t->recs || !t->ids || !t->w || !t->logit || !t->score || !t->kept) die(1, t->cmd, "out of memory for the trace");
    t->cap = cap;
}

static void on_route(void *user, const moe_route_event *ev) {
    trace_writer *t = user;
    if (t->k < 0) { /* sizes from the first event */
        t->k = ev->k;
        t->n_groups = ev->n_groups;
    }
    if (t->n == t->cap) grow(t);
    size_t k = (size_t)t->k, at = t->n * k;
    trace_rec *r = &t->recs[t->n];
    r->pos = ev->pos;
    r->layer = ev->layer;
    r->token = ev->token;
    r->shared = ev->shared_weight;
    r->at = at;
    r->groups = t->n * (size_t)t->n_groups;
    for (size_t i = 0; i < k; i++) {
        t->ids[at + i] = ev->ids[i];
        t->w[at + i] = ev->weights[i];
        t->logit[at + i] = ev->logits[ev->ids[i]];
        t->score[at + i] = ev->scores[ev->ids[i]];
    }
    for (int g = 0; g < t->n_groups; g++) t->kept[r->groups + g] = ev->group_kept ? ev->group_kept[g] : 1;
    t->n++;
}

moe_route_hook trace_hook(trace_writer *t) { return t ? on_route : NULL; }

static int rec_cmp(const void *a, const void *b) {
    const trace_rec *x = a, *y = b;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    return (x->layer > y->layer) - (x->layer < y->layer);
}

/* CSV: the token's bytes with \\ \n \r \t escaped and any other control byte
 * or byte that is not part of valid UTF-8 as \xNN, inside double quotes with
 * " doubled. JSON: standard escapes, \u00NN for control bytes, U+FFFD for an
 * invalid byte. XML: as CSV, no quotes, & < > " as entities. */
void put_text(FILE *f, const unsigned char *s, size_t n, int mode) {
    int json = mode == TEXT_JSON, xml = mode == TEXT_XML;
    if (!xml) fputc('"', f);
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        int ok = len > 0 && i + len <= n && !(len == 2 && c < 0xc2);
        for (size_t j = 1; ok && j < len; j++) ok = (s[i + j] & 0xc0) == 0x80;
        if (!ok) {
            if (json) fputs("\\ufffd", f);
            else fprintf(f, "\\x%02X", c);
            i++;
            continue;
        }
        if (len > 1) {
            fwrite(s + i, 1, len, f);
            i += len;
            continue;
        }
        i++;
        if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (xml && (c == '&' || c == '<' || c == '>' || c == '"'))
            fputs(c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : "&quot;", f);
        else if (c == '"') fputs(json ? "\\\"" : "\"\"", f);
        else if (c < 0x20 || c == 0x7f) fprintf(f, json ? "\\u%04x" : "\\x%02X", c);
        else fputc((int)c, f);
    }
    if (!xml) fputc('"', f);
}

trace_writer *trace_open(const char *cmd, const moe_model *m, moe_ctx *ctx, const route_opts *o) {
    if (!o->trace_path) return NULL;
    moe_model_info info;
    moe_model_get_info(m, &info);
    if (!info.n_experts) die(EXIT_USAGE, cmd, "--trace-routing: the model is dense, there is no routing to trace");
    trace_writer *t = calloc(1, sizeof *t);
    if (!t) die(1, cmd, "out of memory");
    t->cmd = cmd;
    t->model = m;
    t->jsonl = o->trace_jsonl;
    t->k = t->n_groups = -1;
    t->f = fopen(o->trace_path, "w");
    if (!t->f) die(1, cmd, "cannot create %s: %s", o->trace_path, strerror(errno));
    if (!t->jsonl) fputs("pos,token,text,layer,rank,expert,weight,logit,score,groups,shared\n", t->f);
    moe_ctx_set_route_hook(ctx, on_route, t);
    return t;
}

static void put_groups(trace_writer *t, const trace_rec *r) {
    int first = 1;
    if (t->jsonl) fputc('[', t->f);
    for (int g = 0; g < t->n_groups && t->n_groups > 1; g++)
        if (t->kept[r->groups + g]) {
            fprintf(t->f, first ? "%d" : t->jsonl ? ",%d" : ";%d", g);
            first = 0;
        }
    if (t->jsonl) fputc(']', t->f);
}

void trace_flush(trace_writer *t) {
    if (!t) return;
    qsort(t->recs, t->n, sizeof *t->recs, rec_cmp);
    for (size_t i = 0; i < t->n; i++) {
        const trace_rec *r = &t->recs[i];
        size_t len = 0;
        const char *text = moe_token_bytes(t->model, r->token, &len);
        for (int j = 0; j < t->k; j++) {
            size_t a = r->at + (size_t)j;
            if (t->jsonl) {
                fprintf(t->f, "{\"pos\":%d,\"token\":%d,\"text\":", r->pos, r->token);
                put_text(t->f, (const unsigned char *)(text ? text : ""), text ? len : 0, TEXT_JSON);
                fprintf(t->f, ",\"layer\":%d,\"rank\":%d,\"expert\":%d,\"weight\":%.9g,\"logit\":%.9g,\"score\":%.9g,\"groups\":",
                        r->layer, j, t->ids[a], t->w[a], t->logit[a], t->score[a]);
                put_groups(t, r);
                fprintf(t->f, ",\"shared\":%.9g}\n", r->shared);
            } else {
                fprintf(t->f, "%d,%d,", r->pos, r->token);
                put_text(t->f, (const unsigned char *)(text ? text : ""), text ? len : 0, TEXT_CSV);
                fprintf(t->f, ",%d,%d,%d,%.9g,%.9g,%.9g,", r->layer, j, t->ids[a], t->w[a], t->logit[a], t->score[a]);
                put_groups(t, r);
                fprintf(t->f, ",%.9g\n", r->shared);
            }
            t->rows++;
        }
    }
    t->n = 0;
}

size_t trace_close(trace_writer *t) {
    if (!t) return 0;
    trace_flush(t);
    size_t rows = t->rows;
    if (fclose(t->f) != 0) die(1, t->cmd, "error writing the routing trace");
    free(t->recs);
    free(t->ids);
    free(t->w);
    free(t->logit);
    free(t->score);
    free(t->kept);
    free(t);
    return rows;
}
