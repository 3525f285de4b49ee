/* cmd_serve.c - `moe serve`: an OpenAI-compatible HTTP server.
 *
 * Threads: the main thread accepts connections; each connection gets its own
 * thread (at most MAX_CONNS: when all are taken, the connection that has waited
 * longest for a request is closed to make room, and only when none waits is
 * the newcomer answered 503) that reads requests with a deadline, answers the cheap endpoints
 * itself (health, models, tokenize, templates: the model is read-only), and
 * hands generation jobs to the one model thread (serve_engine.c) through a
 * bounded queue (503 when full). A thread per connection keeps each
 * connection's code straight-line (read, answer, stream) and lets a slow or
 * stalled client block only its own thread; the single model thread keeps
 * the contexts free of locks and is where the slots will later step as one
 * batch. Connection threads stream text as the model thread produces it and
 * cancel their job when the client goes away. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "http.h"
#include "json.h"
#include "reasoning.h"
#include "serve.h"
#include "serve_page.h" /* generated: the chat page as serve_page[], serve_page_len */
#include "unicode.h"

static const char *CMD = "serve";

#define MAX_CONNS 64                    /* connection threads at once */
#define MAX_HEAD (16 * 1024)            /* request line + headers */
#define MAX_HEADERS 64
#define MAX_BODY (8 * 1024 * 1024)      /* request body */
#define MAX_STOP_LEN 256

typedef struct conn conn;

typedef struct {
    const moe_model *m;
    serve_engine *engine;
    const char *api_key;      /* NULL: no authentication */
    char *tmpl;               /* --template text, NULL: the model's own */
    size_t tmpl_len;
    int has_template;
    int thinking;             /* the template mentions <think>: split replies into reasoning and answer */
    const char *model_id;     /* what /v1/models lists */
    int n_ctx, vocab;
    int timeout_ms;           /* a request must arrive within this; also the keep-alive idle time */
    long created;
    http_limits limits;
    pthread_mutex_t mu;       /* guards loaded, n_conns, conns, each conn's waiting fields, next_id */
    pthread_cond_t conn_left; /* signalled when a connection thread ends */
    int loaded;               /* 0: the loader thread still fills in the fields above: only 503s */
    int n_conns;
    conn *conns[MAX_CONNS];   /* the open connections (NULL: a free place) */
    unsigned long next_id;
} server;

struct conn {
    server *srv;
    int fd;
    int place;                /* index in srv->conns */
    int waiting;              /* 1 while waiting for a request (may be closed to make room) */
    double waiting_since;     /* now_ms() when it began waiting */
    char peer[64];
    strbuf in;                /* bytes received and not yet consumed */
    int keep_alive;           /* of the current request */
    int head_only;            /* a HEAD request: responses carry no body */
    /* the current request's log line */
    int status, n_prompt, n_completion, n_reused, max_batch;
};

typedef struct {
    char msg[400];
    char param[96];           /* the offending field, "" for none */
} api_err;

static int api_fail(api_err *ae, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int api_fail(api_err *ae, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ae->msg, sizeof ae->msg, fmt, ap);
    va_end(ap);
    snprintf(ae->param, sizeof ae->param, "%s", param ? param : "");
    return -1;
}

/* 1 if s[0..n) contains the string w. */
static int find_text(const char *s, size_t n, const char *w) {
    size_t k = strlen(w);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(s + i, w, k)) return 1;
    return 0;
}

static double now_ms(void) { return now_seconds() * 1000.0; }

/* ---------------------------------------------------------------- socket I/O */

/* Send all n bytes; -1 when the client is gone or stalled past the send timeout. */
static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int send_buf(conn *c, strbuf *b) {
    int rc = b->failed ? -1 : send_all(c->fd, b->p, b->n);
    b->n = 0;
    return rc;
}

/* 1 when the client closed its side or the connection broke. */
static int client_gone(int fd) {
    char b;
    ssize_t k = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (k == 0) return 1;
    return k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

/* Read until a whole request is buffered. Returns HTTP_COMPLETE, 0 when the
 * connection ends (closed, or idle past the timeout), or a status to answer. */
static int read_request(conn *c, http_request *r) {
    double deadline = now_ms() + c->srv->timeout_ms;
    int started = c->in.n > 0;
    for (;;) {
        if (c->in.n) {
            const char *why;
            int rc = http_parse_request(c->in.p, c->in.n, &c->srv->limits, r, &why);
            if (rc != HTTP_INCOMPLETE) return rc;
        }
        double left = deadline - now_ms();
        if (left <= 0) return started ? 408 : 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int k = poll(&p, 1, (int)left + 1);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return 0;
        if (k == 0) continue;
        if (sb_reserve(&c->in, 65536)) return 413;
        ssize_t got = recv(c->fd, c->in.p + c->in.n, 65536, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return 0;
        if (!started) deadline = now_ms() + c->srv->timeout_ms; /* the request's clock starts at its first byte */
        started = 1;
        c->in.n += (size_t)got;
        c->in.p[c->in.n] = 0;
    }
}

/* ---------------------------------------------------------------- responses */

static void reply(conn *c, int status, const char *type, const char *body, size_t n, const char *extra) {
    strbuf b = {0};
    http_response_head(&b, status, type, (long long)n, c->keep_alive, extra);
    if (!c->head_only) sb_put(&b, body, n);
    c->status = status;
    if (send_buf(c, &b)) c->keep_alive = 0;
    sb_free(&b);
}

static void reply_json(conn *c, int status, const json_value *v) {
    strbuf b = {0};
    if (json_write(&b, v, NULL)) {
        sb_free(&b);
        const char *oom = "{\"error\": {\"message\": \"out of memory\", \"type\": \"server_error\"}}";
        reply(c, 500, "application/json", oom, strlen(oom), NULL);
        return;
    }
    reply(c, status, "application/json", b.p, b.n, NULL);
    sb_free(&b);
}

/* OpenAI's error object: {"error": {"message", "type", "param", "code"}}. */
static json_value *error_object(int status, const char *msg, const char *param) {
    const char *type = status == 401 ? "authentication_error" : status == 404 ? "not_found_error"
                     : status == 503 ? "unavailable_error" : status >= 500 ? "server_error" : "invalid_request_error";
    json_value *e = json_new(JSON_OBJECT), *o = json_new(JSON_OBJECT);
    if (!e || !o) {
        json_free(e);
        json_free(o);
        return NULL;
    }
    json_object_set(e, "message", 7, json_new_string(msg, strlen(msg)));
    json_object_set(e, "type", 4, json_new_string(type, strlen(type)));
    json_object_set(e, "param", 5, param && param[0] ? json_new_string(param, strlen(param)) : json_new(JSON_NULL));
    json_object_set(e, "code", 4, json_new_int(status));
    json_object_set(o, "error", 5, e);
    return o;
}

static void reply_error(conn *c, int status, const char *param, const char *msg) {
    json_value *o = error_object(status, msg, param);
    if (!o) {
        reply(c, 500, "text/plain", "out of memory\n", 14, NULL);
        return;
    }
    reply_json(c, status, o);
    json_free(o);
}

/* ---------------------------------------------------------------- request fields */

/* Each getter: 1 = present (out set), 0 = absent or null, -1 = wrong (ae set). */
static int get_number(const json_value *body, const char *key, double lo, double hi, double *out, api_err *ae) {
    json_value *v = json_get(body, key);
    if (!v || v->type == JSON_NULL) return 0;
    double x = v->type == JSON_INT ? (double)v->integer : v->type == JSON_FLOAT ? v->number : 0;
    if (v->type != JSON_INT && v->type != JSON_FLOAT) return api_fail(ae, key, "\"%s\" must be a number", key);
    if (!(x >= lo && x <= hi)) return api_fail(ae, key, "\"%s\" must be between %g and %g", key, lo, hi);
    *out = x;
    return 1;
}

static int get_int(const json_value *body, const char *key, int64_t lo, int64_t hi, int64_t *out, api_err *ae) {
    json_value *v = json_get(body, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_INT) return api_fail(ae, key, "\"%s\" must be an integer", key);
    if (v->integer < lo || v->integer > hi)
        return api_fail(ae, key, "\"%s\" must be between %lld and %lld", key, (long long)lo, (long long)hi);
    *out = v->integer;
    return 1;
}

static int get_bool(const json_value *body, const char *key, int *out, api_err *ae) {
    json_value *v = json_get(body, key);
    if (!v || v->type == JSON_NULL) return 0;
    if (v->type != JSON_BOOL) return api_fail(ae, key, "\"%s\" must be true or false", key);
    *out = v->boolean;
    return 1;
}

/* Options we do not implement are refused by name rather than ignored. */
static int refuse_unsupported(const json_value *body, api_err *ae) {
    int64_t n = 1;
    int b = 0;
    if (get_int(body, "n", 1, 1, &n, ae) < 0) return api_fail(ae, "n", "\"n\" must be 1 (one choice per request)");
    if (get_bool(body, "echo", &b, ae) < 0) return -1;
    if (b) return api_fail(ae, "echo", "\"echo\" is not supported");
    int64_t best_of = 1;
    if (get_int(body, "best_of", 1, 1, &best_of, ae) < 0) return api_fail(ae, "best_of", "\"best_of\" must be 1");
    json_value *v = json_get(body, "tools");
    if (v && v->type != JSON_NULL && !(v->type == JSON_ARRAY && v->len == 0))
        return api_fail(ae, "tools", "\"tools\" is not supported: the server does not execute or parse tool calls");
    v = json_get(body, "functions");
    if (v && v->type != JSON_NULL) return api_fail(ae, "functions", "\"functions\" is not supported");
    v = json_get(body, "logit_bias");
    if (v && v->type != JSON_NULL && !(v->type == JSON_OBJECT && v->len == 0))
        return api_fail(ae, "logit_bias", "\"logit_bias\" is not supported");
    v = json_get(body, "audio");
    if (v && v->type != JSON_NULL) return api_fail(ae, "audio", "\"audio\" is not supported: the server writes text only");
    v = json_get(body, "modalities");
    for (size_t i = 0; v && v->type == JSON_ARRAY && i < v->len; i++)
        if (v->items[i]->type != JSON_STRING || strcmp(v->items[i]->str, "text"))
            return api_fail(ae, "modalities", "\"modalities\": only [\"text\"] is supported");
    if (v && v->type != JSON_NULL && v->type != JSON_ARRAY)
        return api_fail(ae, "modalities", "\"modalities\" must be a list");
    v = json_get(body, "suffix");
    if (v && v->type != JSON_NULL) return api_fail(ae, "suffix", "\"suffix\" is not supported");
    v = json_get(body, "response_format");
    if (v && v->type != JSON_NULL) {
        json_value *t = json_get(v, "type");
        if (!t || t->type != JSON_STRING || strcmp(t->str, "text"))
            return api_fail(ae, "response_format", "\"response_format\": only {\"type\": \"text\"} is supported");
    }
    v = json_get(body, "model");
    if (v && v->type != JSON_NULL && v->type != JSON_STRING) return api_fail(ae, "model", "\"model\" must be a string");
    return 0;
}

/* logprobs into the job: chat: "logprobs": true and "top_logprobs": 0..20;
 * completions (the legacy API): "logprobs": 0..20, the alternatives per token. */
static int read_logprobs(const json_value *body, int chat, serve_job *j, api_err *ae) {
    int64_t top = 0;
    int rc;
    if (chat) {
        if (get_bool(body, "logprobs", &j->logprobs, ae) < 0) return -1;
        if ((rc = get_int(body, "top_logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &top, ae)) < 0) return -1;
        if (rc && !j->logprobs)
            return api_fail(ae, "top_logprobs", "\"top_logprobs\" needs \"logprobs\": true");
    } else {
        json_value *v = json_get(body, "logprobs");
        if (v && v->type != JSON_NULL && v->type != JSON_INT)
            return api_fail(ae, "logprobs", "\"logprobs\" must be an integer: the alternatives per token, 0 to %d",
                            SERVE_MAX_TOP_LOGPROBS);
        if ((rc = get_int(body, "logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &top, ae)) < 0) return -1;
        j->logprobs = rc;
    }
    j->top_logprobs = (int)top;
    return 0;
}

/* Sampling, length and stop options into the job. */
static int read_options(const server *srv, const json_value *body, serve_job *j, int *stream, int *usage, api_err *ae) {
    moe_sampler_params sp = moe_sampler_default_params();
    double x = 0;
    int64_t i = 0;
    int rc;
    if ((rc = get_number(body, "temperature", 0, 100, &x, ae)) < 0) return -1;
    if (rc) sp.temperature = (float)x;
    if ((rc = get_number(body, "top_p", 0, 1, &x, ae)) < 0) return -1;
    if (rc) sp.top_p = x > 0 ? (float)x : 1e-6f;
    if ((rc = get_int(body, "top_k", 0, 1 << 30, &i, ae)) < 0) return -1;
    if (rc) sp.top_k = (int)i;
    if ((rc = get_number(body, "min_p", 0, 1, &x, ae)) < 0) return -1;
    if (rc) sp.min_p = (float)x;
    if ((rc = get_number(body, "presence_penalty", -2, 2, &x, ae)) < 0) return -1;
    if (rc) sp.presence_penalty = (float)x;
    if ((rc = get_number(body, "frequency_penalty", -2, 2, &x, ae)) < 0) return -1;
    if (rc) sp.frequency_penalty = (float)x;
    if ((rc = get_number(body, "repeat_penalty", 1e-3, 100, &x, ae)) < 0) return -1;
    if (rc) sp.repeat_penalty = (float)x;
    if ((rc = get_int(body, "repeat_last_n", 0, 1 << 30, &i, ae)) < 0) return -1;
    if (rc) sp.repeat_last_n = (int)i;
    if ((rc = get_int(body, "seed", INT64_MIN, INT64_MAX, &i, ae)) < 0) return -1;
    sp.seed = rc ? (uint64_t)i : (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)j << 16);
    j->sp = sp;

    j->max_tokens = srv->n_ctx;
    if ((rc = get_int(body, "max_tokens", 1, INT32_MAX, &i, ae)) < 0) return -1;
    if (rc) j->max_tokens = (int)i;
    if ((rc = get_int(body, "max_completion_tokens", 1, INT32_MAX, &i, ae)) < 0) return -1;
    if (rc) j->max_tokens = (int)i;

    json_value *stop = json_get(body, "stop");
    if (stop && stop->type != JSON_NULL) {
        json_value *one[1] = {stop};
        json_value **list = stop->type == JSON_ARRAY ? stop->items : one;
        size_t n = stop->type == JSON_ARRAY ? stop->len : 1;
        if (n > SERVE_MAX_STOPS) return api_fail(ae, "stop", "\"stop\": at most %d strings", SERVE_MAX_STOPS);
        for (size_t k = 0; k < n; k++) {
            json_value *s = list[k];
            if (s->type != JSON_STRING || s->len == 0 || s->len > MAX_STOP_LEN || strlen(s->str) != s->len)
                return api_fail(ae, "stop", "\"stop\" must be a string or a list of strings of 1 to %d bytes",
                                MAX_STOP_LEN);
            if (!(j->stops[j->n_stops] = strdup(s->str))) return api_fail(ae, NULL, "out of memory");
            j->n_stops++;
        }
    }
    *stream = 0;
    *usage = 0;
    if (get_bool(body, "stream", stream, ae) < 0) return -1;
    json_value *so = json_get(body, "stream_options");
    if (so && so->type != JSON_NULL) {
        if (so->type != JSON_OBJECT) return api_fail(ae, "stream_options", "\"stream_options\" must be an object");
        if (get_bool(so, "include_usage", usage, ae) < 0)
            return api_fail(ae, "stream_options.include_usage",
                            "\"stream_options.include_usage\" must be true or false");
    }
    return 0;
}

/* ---------------------------------------------------------------- chat rendering */

/* The messages as the template gets them: content given as a list of parts
 * becomes the text of its "text" parts; anything else (images, audio) is refused. */
static json_value *normalize_messages(const json_value *msgs, api_err *ae) {
    if (!msgs || msgs->type != JSON_ARRAY || msgs->len == 0) {
        api_fail(ae, "messages", "\"messages\" must be a non-empty array of messages");
        return NULL;
    }
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    for (size_t i = 0; i < msgs->len; i++) {
        char where[64];
        const json_value *m = msgs->items[i];
        snprintf(where, sizeof where, "messages[%zu]", i);
        if (m->type != JSON_OBJECT) {
            api_fail(ae, where, "%s must be an object", where);
            return NULL;
        }
        json_value *role = json_get(m, "role");
        int known = 0;
        for (size_t r = 0; role && role->type == JSON_STRING && r < sizeof roles / sizeof *roles; r++)
            known |= !strcmp(role->str, roles[r]);
        if (!known) {
            snprintf(where, sizeof where, "messages[%zu].role", i);
            api_fail(ae, where, "%s must be one of system, developer, user, assistant, tool", where);
            return NULL;
        }
        json_value *content = json_get(m, "content");
        if (!content || content->type == JSON_STRING || content->type == JSON_NULL) continue;
        if (content->type != JSON_ARRAY) {
            snprintf(where, sizeof where, "messages[%zu].content", i);
            api_fail(ae, where, "%s must be a string or a list of text parts", where);
            return NULL;
        }
        for (size_t k = 0; k < content->len; k++) {
            json_value *part = content->items[k], *type = json_get(part, "type"), *text = json_get(part, "text");
            if (!type || type->type != JSON_STRING || strcmp(type->str, "text") || !text || text->type != JSON_STRING) {
                snprintf(where, sizeof where, "messages[%zu].content[%zu]", i, k);
                api_fail(ae, where, "%s: only text parts are supported (no images or audio)", where);
                return NULL;
            }
        }
    }
    /* a copy with list contents joined (written and read back: the tree has no deep copy) */
    strbuf b = {0};
    json_write(&b, msgs, NULL);
    moe_err err = {{0}};
    json_value *copy = b.failed ? NULL : json_parse(b.p, b.n, &err);
    sb_free(&b);
    for (size_t i = 0; copy && i < copy->len; i++) {
        json_value *m = copy->items[i], *content = json_get(m, "content");
        if (!content || content->type != JSON_ARRAY) continue;
        strbuf t = {0};
        for (size_t k = 0; k < content->len; k++) {
            json_value *text = json_get(content->items[k], "text");
            sb_put(&t, text->str, text->len);
        }
        json_value *s = t.failed ? NULL : json_new_string(t.p ? t.p : "", t.n);
        sb_free(&t);
        if (!s || json_object_set(m, "content", 7, s)) {
            json_free(copy);
            copy = NULL;
        }
    }
    if (!copy) api_fail(ae, NULL, "out of memory");
    return copy;
}

/* Render the chat request's messages with the template; the prompt text (malloc'ed). */
static char *render_chat(const server *srv, json_value *body, size_t *len, api_err *ae) {
    if (!srv->has_template) {
        api_fail(ae, NULL, "the model has no chat template (start the server with --template FILE.jinja)");
        return NULL;
    }
    json_value *msgs = normalize_messages(json_get(body, "messages"), ae);
    if (!msgs) return NULL;
    json_value *req = json_new(JSON_OBJECT);
    json_value *kw = json_get(body, "chat_template_kwargs");
    if (kw && kw->type != JSON_NULL && kw->type != JSON_OBJECT) {
        json_free(msgs);
        json_free(req);
        api_fail(ae, "chat_template_kwargs", "\"chat_template_kwargs\" must be an object");
        return NULL;
    }
    strbuf b = {0};
    int bad = !req || json_object_set(req, "messages", 8, msgs) ||
              json_object_set(req, "add_generation_prompt", 21, json_new_bool(1));
    if (!bad && kw && kw->type == JSON_OBJECT) { /* moved, not copied: the body is ours */
        for (size_t i = 0; i < body->len; i++)
            if (body->items[i] == kw) body->items[i] = json_new(JSON_NULL);
        bad = json_object_set(req, "chat_template_kwargs", 20, kw);
    }
    if (!bad) bad = json_write(&b, req, NULL);
    json_free(req);
    if (bad) {
        sb_free(&b);
        api_fail(ae, NULL, "out of memory");
        return NULL;
    }
    moe_chat_opts o = {.template_text = srv->tmpl, .template_len = srv->tmpl_len};
    moe_err err = {{0}};
    int raised = 0;
    char *prompt = moe_chat_render(srv->m, b.p, b.n, &o, len, &raised, &err);
    sb_free(&b);
    if (!prompt) api_fail(ae, "messages", "%s%s", raised ? "the chat template refused the messages: " : "", err.msg);
    return prompt;
}

/* Token ids of text (malloc'ed); a byte-level tokenizer makes at most one id per byte (+ BOS). */
static int32_t *tokenize(const server *srv, const char *text, size_t len, int flags, int *n, api_err *ae) {
    moe_err err = {{0}};
    if (len > MAX_BODY) {
        api_fail(ae, NULL, "the text is too long");
        return NULL;
    }
    int cap = (int)len + 8;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    if (!ids) {
        api_fail(ae, NULL, "out of memory");
        return NULL;
    }
    int got = moe_tokenize(srv->m, text, len, flags, ids, cap, &err);
    if (got < 0 || got > cap) {
        free(ids);
        api_fail(ae, NULL, "%s", got < 0 ? err.msg : "the text makes more tokens than bytes");
        return NULL;
    }
    *n = got;
    return ids;
}

/* ---------------------------------------------------------------- generation */

static json_value *usage_object(const serve_job *j) {
    json_value *u = json_new(JSON_OBJECT);
    if (!u) return NULL;
    json_object_set(u, "prompt_tokens", 13, json_new_int(j->n_prompt));
    json_object_set(u, "completion_tokens", 17, json_new_int(j->n_completion));
    json_object_set(u, "total_tokens", 12, json_new_int(j->n_prompt + j->n_completion));
    json_value *d = json_new(JSON_OBJECT);
    if (d) json_object_set(d, "cached_tokens", 13, json_new_int(j->n_reused));
    json_object_set(u, "prompt_tokens_details", 21, d ? d : json_new(JSON_NULL));
    return u;
}

/* The envelope every response and chunk shares: id, object, created, model. */
static json_value *envelope(const server *srv, const char *id, const char *object) {
    json_value *o = json_new(JSON_OBJECT);
    if (!o) return NULL;
    json_object_set(o, "id", 2, json_new_string(id, strlen(id)));
    json_object_set(o, "object", 6, json_new_string(object, strlen(object)));
    json_object_set(o, "created", 7, json_new_int(time(NULL)));
    json_object_set(o, "model", 5, json_new_string(srv->model_id, strlen(srv->model_id)));
    return o;
}

/* A reply's text: the answer, and a thinking model's reasoning (NULL: none). */
typedef struct {
    const char *content, *reasoning;
    size_t content_len, reasoning_len;
} reply_text;

/* A token's "token" (its bytes as a string, a byte that is not UTF-8 as U+FFFD), "bytes" and "id". */
static void put_token(json_value *o, const moe_model *m, int32_t id, int with_bytes) {
    size_t n = 0;
    const char *raw = moe_token_bytes(m, id, &n);
    strbuf t = {0};
    for (size_t i = 0; i < n;) {
        int k;
        uint32_t cp = utf8_decode((const uint8_t *)raw + i, n - i, &k);
        if (cp >= UNI_BAD_BASE) sb_put(&t, "\xef\xbf\xbd", 3);
        else sb_put(&t, raw + i, (size_t)k);
        i += (size_t)k;
    }
    json_object_set(o, "id", 2, json_new_int(id));
    json_object_set(o, "token", 5, t.failed ? NULL : json_new_string(t.p ? t.p : "", t.n));
    sb_free(&t);
    if (!with_bytes) return;
    json_value *bytes = json_new(JSON_ARRAY);
    for (size_t i = 0; bytes && i < n; i++) json_array_push(bytes, json_new_int((unsigned char)raw[i]));
    json_object_set(o, "bytes", 5, bytes);
}

/* Chat's logprobs of one token: {"id", "token", "logprob", "bytes", "top_logprobs": [{"id", "token",
 * "logprob", "bytes"}]}. */
static json_value *chat_logprob(const moe_model *m, const serve_logprob *e) {
    json_value *o = json_new(JSON_OBJECT), *tops = json_new(JSON_ARRAY);
    if (!o || !tops) {
        json_free(o);
        json_free(tops);
        return NULL;
    }
    put_token(o, m, e->id, 1);
    json_object_set(o, "logprob", 7, json_new_float(e->logprob));
    for (int k = 0; k < e->n_top; k++) {
        json_value *t = json_new(JSON_OBJECT);
        if (t) {
            put_token(t, m, e->top_id[k], 1);
            json_object_set(t, "logprob", 7, json_new_float(e->top_logprob[k]));
        }
        json_array_push(tops, t);
    }
    json_object_set(o, "top_logprobs", 12, tops);
    return o;
}

/* The "logprobs" of a choice for entries l[from..n): chat: {"content": [...]}; completion (legacy):
 * {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}, the offsets in
 * bytes of the completion's text (*end: where the previous token's text ended). */
static json_value *logprobs_json(const moe_model *m, int chat, const serve_logprobs *l, int from, size_t *end) {
    json_value *o = json_new(JSON_OBJECT);
    if (!o) return NULL;
    if (chat) {
        json_value *content = json_new(JSON_ARRAY);
        for (int i = from; content && i < l->n; i++) json_array_push(content, chat_logprob(m, &l->p[i]));
        json_object_set(o, "content", 7, content);
        return o;
    }
    json_value *tokens = json_new(JSON_ARRAY), *lps = json_new(JSON_ARRAY), *tops = json_new(JSON_ARRAY),
               *offsets = json_new(JSON_ARRAY);
    for (int i = from; tokens && lps && tops && offsets && i < l->n; i++) {
        const serve_logprob *e = &l->p[i];
        json_value *t = json_new(JSON_OBJECT), *top = json_new(JSON_OBJECT);
        if (t) put_token(t, m, e->id, 0);
        json_value *tok = json_get(t, "token");
        json_array_push(tokens, tok ? json_new_string(tok->str, tok->len) : NULL);
        json_array_push(lps, json_new_float(e->logprob));
        for (int k = 0; top && k < e->n_top; k++) {
            json_value *kt = json_new(JSON_OBJECT);
            if (kt) put_token(kt, m, e->top_id[k], 0);
            json_value *ks = json_get(kt, "token");
            if (ks) json_object_set(top, ks->str, ks->len, json_new_float(e->top_logprob[k]));
            json_free(kt);
        }
        json_array_push(tops, top);
        json_array_push(offsets, json_new_int((int64_t)*end));
        *end = e->text_end;
        json_free(t);
    }
    json_object_set(o, "tokens", 6, tokens);
    json_object_set(o, "token_logprobs", 14, lps);
    json_object_set(o, "top_logprobs", 12, tops);
    json_object_set(o, "text_offset", 11, offsets);
    return o;
}

/* One choice: chat: {"index", "message"|"delta": {"role", "content", "reasoning_content"},
 * "logprobs", "finish_reason"}; completion: {"index", "text", "logprobs", "finish_reason"}. Empty
 * parts are left out of a delta; logprobs (taken over) NULL: none (chat leaves the field out). */
static json_value *choice(int chat, int delta, const char *role, const reply_text *t, json_value *logprobs,
                          const char *finish) {
    json_value *c = json_new(JSON_OBJECT);
    if (!c) {
        json_free(logprobs);
        return NULL;
    }
    json_object_set(c, "index", 5, json_new_int(0));
    if (chat) {
        json_value *m = json_new(JSON_OBJECT);
        if (m && role) json_object_set(m, "role", 4, json_new_string(role, strlen(role)));
        if (m && t && t->content && (!delta || t->content_len || role))
            json_object_set(m, "content", 7, json_new_string(t->content, t->content_len));
        if (m && t && t->reasoning && t->reasoning_len)
            json_object_set(m, "reasoning_content", 17, json_new_string(t->reasoning, t->reasoning_len));
        json_object_set(c, delta ? "delta" : "message", delta ? 5 : 7, m ? m : json_new(JSON_NULL));
        if (logprobs) json_object_set(c, "logprobs", 8, logprobs);
    } else {
        json_object_set(c, "text", 4, json_new_string(t ? t->content : "", t ? t->content_len : 0));
        json_object_set(c, "logprobs", 8, logprobs ? logprobs : json_new(JSON_NULL));
    }
    json_object_set(c, "finish_reason", 13, finish ? json_new_string(finish, strlen(finish)) : json_new(JSON_NULL));
    return c;
}

static json_value *with_choices(json_value *o, json_value *c) {
    json_value *list = json_new(JSON_ARRAY);
    if (list && c) json_array_push(list, c);
    else json_free(c);
    if (o) json_object_set(o, "choices", 7, list ? list : json_new(JSON_NULL));
    else json_free(list);
    return o;
}

/* Write v as one server-sent event into b (freeing v). */
static void sse_json(strbuf *b, json_value *v) {
    strbuf t = {0};
    if (!v || json_write(&t, v, NULL)) b->failed = b->failed ? b->failed : 1;
    else http_sse_data(b, t.p, t.n);
    sb_free(&t);
    json_free(v);
}

/* The new text of a reply as a stream chunk's parts: split into reasoning and
 * answer when split is given (a thinking model's chat), else all answer. */
static void take_parts(reasoning_split *split, const char *s, size_t n, int last, strbuf *rs, strbuf *ct) {
    rs->n = ct->n = 0;
    if (split) reasoning_feed(split, s, n, last, rs, ct);
    else sb_put(ct, s, n);
}

/* Run a job and send its result (streamed or whole). The job is queued here
 * and released by the caller; the connection's log fields are filled in.
 * think: split the reply into reasoning_content and content; in_reasoning:
 * the prompt opened the reasoning. */
static void generate(conn *c, serve_job *j, int chat, int stream, int usage, int think, int in_reasoning) {
    server *srv = c->srv;
    c->n_prompt = j->n_prompt;
    if (j->max_tokens > srv->n_ctx - j->n_prompt) j->max_tokens = srv->n_ctx - j->n_prompt; /* what fits */
    char id[64];
    pthread_mutex_lock(&srv->mu);
    unsigned long seq = ++srv->next_id;
    pthread_mutex_unlock(&srv->mu);
    snprintf(id, sizeof id, "%s-%lx%lx", chat ? "chatcmpl" : "cmpl", (unsigned long)srv->created, seq);
    const char *object = chat ? (stream ? "chat.completion.chunk" : "chat.completion") : "text_completion";
    if (engine_submit(srv->engine, j)) {
        reply_error(c, 503, NULL, "the server is busy: all slots and the queue are taken; try again later");
        return;
    }
    reasoning_split rsplit, *split = NULL;
    if (think) {
        reasoning_init(&rsplit, in_reasoning);
        split = &rsplit;
    }
    strbuf text = {0}, out = {0}, rs = {0}, ct = {0};
    serve_logprobs lps = {0}; /* with logprobs: the entries of text; those from lp_sent on are not sent yet */
    int lp_sent = 0;
    size_t lp_end = 0;
    int gone = 0, done = 0;
    if (stream) {
        http_response_head(&out, 200, "text/event-stream", -1, c->keep_alive, "Cache-Control: no-cache\r\n");
        c->status = 200;
        reply_text empty = {.content = ""};
        if (chat) sse_json(&out, with_choices(envelope(srv, id, object), choice(1, 1, "assistant", &empty, NULL, NULL)));
        gone = send_buf(c, &out) != 0;
    }
    while (!gone && !done) {
        size_t had = text.n;
        done = engine_wait(srv->engine, j, &text, j->logprobs ? &lps : NULL, 200);
        if (stream && (text.n > had || (done && split))) {
            take_parts(split, text.p + had, text.n - had, done, &rs, &ct);
            reply_text t = {ct.p ? ct.p : "", rs.p, ct.n, rs.n};
            if (rs.n || ct.n) {
                json_value *lp = j->logprobs ? logprobs_json(srv->m, chat, &lps, lp_sent, &lp_end) : NULL;
                lp_sent = lps.n;
                sse_json(&out, with_choices(envelope(srv, id, object), choice(chat, 1, NULL, &t, lp, NULL)));
            }
            gone = out.n && send_buf(c, &out) != 0;
        }
        if (!done && !gone) gone = client_gone(c->fd);
    }
    if (gone) {
        engine_cancel(srv->engine, j);
        c->keep_alive = 0;
        if (!stream) c->status = 499; /* nginx's "client closed request", for the log only */
    } else if (j->error[0] || lps.failed) {
        if (!j->error[0]) snprintf(j->error, sizeof j->error, "out of memory");
        if (stream) { /* the head is sent: the error goes in the stream */
            json_value *e = error_object(500, j->error, NULL);
            sse_json(&out, e);
            http_chunk_end(&out);
            send_buf(c, &out);
        } else {
            reply_error(c, 500, NULL, j->error);
        }
    } else if (stream) {
        json_value *lp = j->logprobs && lp_sent < lps.n ? logprobs_json(srv->m, chat, &lps, lp_sent, &lp_end) : NULL;
        sse_json(&out, with_choices(envelope(srv, id, object), choice(chat, 1, NULL, NULL, lp, j->finish)));
        if (usage) {
            json_value *u = envelope(srv, id, object);
            if (u) {
                json_object_set(u, "choices", 7, json_new(JSON_ARRAY));
                json_object_set(u, "usage", 5, usage_object(j));
            }
            sse_json(&out, u);
        }
        http_sse_data(&out, "[DONE]", 6);
        http_chunk_end(&out);
        if (send_buf(c, &out)) c->keep_alive = 0;
    } else {
        take_parts(split, text.p ? text.p : "", text.n, 1, &rs, &ct);
        reply_text t = {ct.p ? ct.p : "", rs.p, ct.n, rs.n};
        json_value *lp = j->logprobs ? logprobs_json(srv->m, chat, &lps, 0, &lp_end) : NULL;
        json_value *o = with_choices(envelope(srv, id, object), choice(chat, 0, "assistant", &t, lp, j->finish));
        if (o) json_object_set(o, "usage", 5, usage_object(j));
        if (o && j->truncated) json_object_set(o, "truncated", 9, json_new_bool(1));
        if (o && !text.failed && !rs.failed && !ct.failed) reply_json(c, 200, o);
        else reply_error(c, 500, NULL, "out of memory");
        json_free(o);
    }
    c->n_completion = j->n_completion;
    c->n_reused = j->n_reused;
    c->max_batch = j->max_batch;
    if (split) reasoning_free(split);
    free(lps.p);
    sb_free(&text);
    sb_free(&out);
    sb_free(&rs);
    sb_free(&ct);
}

/* A prompt must leave room for at least one token: 400 naming the problem, or,
 * with "truncate": true, keep its first "n_keep" tokens and drop the oldest
 * after them until it leaves room for max_tokens (at most half the context). */
static int fit_prompt(const server *srv, const json_value *body, int chat, serve_job *j, api_err *ae) {
    int truncate = 0;
    int64_t keep = 0;
    if (get_bool(body, "truncate", &truncate, ae) < 0 || get_int(body, "n_keep", 0, INT32_MAX, &keep, ae) < 0)
        return -1;
    int room = j->max_tokens < srv->n_ctx / 2 ? j->max_tokens : srv->n_ctx / 2;
    if (room < 1) room = 1;
    int fits = srv->n_ctx - room; /* prompt tokens that leave the room */
    if (!truncate) {
        if (j->n_prompt < srv->n_ctx) return 0;
        return api_fail(ae, chat ? "messages" : "prompt",
                        "the prompt is %d tokens; the context holds %d (\"truncate\": true drops the oldest)",
                        j->n_prompt, srv->n_ctx);
    }
    if (j->n_prompt <= fits) return 0;
    if (keep >= fits)
        return api_fail(ae, "n_keep", "\"n_keep\" (%lld) leaves no room: the prompt may keep %d tokens here",
                        (long long)keep, fits);
    int drop = j->n_prompt - fits;
    memmove(j->prompt + keep, j->prompt + keep + drop, sizeof *j->prompt * (size_t)(j->n_prompt - keep - drop));
    j->n_prompt = fits;
    j->truncated = drop;
    return 0;
}

static void handle_completion(conn *c, json_value *body, int chat) {
    server *srv = c->srv;
    api_err ae = {{0}, {0}};
    serve_job j = {0};
    int stream = 0, usage = 0, think = 0, in_reasoning = 0;
    if (refuse_unsupported(body, &ae) || read_options(srv, body, &j, &stream, &usage, &ae) ||
        read_logprobs(body, chat, &j, &ae))
        goto bad;
    if (chat) {
        /* a template that knows <think> makes a thinking model: its reasoning goes to
         * reasoning_content unless "reasoning_format": "none" */
        json_value *rf = json_get(body, "reasoning_format");
        if (rf && rf->type != JSON_NULL &&
            (rf->type != JSON_STRING || (strcmp(rf->str, "none") && strcmp(rf->str, "auto") && strcmp(rf->str, "deepseek")))) {
            api_fail(&ae, "reasoning_format", "\"reasoning_format\" must be \"auto\", \"deepseek\" or \"none\"");
            goto bad;
        }
        think = srv->thinking && !(rf && rf->type == JSON_STRING && !strcmp(rf->str, "none"));
        size_t len;
        char *prompt = render_chat(srv, body, &len, &ae);
        if (!prompt) goto bad;
        in_reasoning = think && reasoning_prompt_open(prompt, len);
        /* tokenized as HF does after rendering: special tokens as text, no BOS added */
        j.prompt = tokenize(srv, prompt, len, MOE_TOK_SPECIAL, &j.n_prompt, &ae);
        free(prompt);
        if (!j.prompt) goto bad;
    } else {
        json_value *p = json_get(body, "prompt");
        if (p && p->type == JSON_ARRAY && p->len == 1 && p->items[0]->type == JSON_STRING) p = p->items[0];
        if (p && p->type == JSON_STRING) {
            j.prompt = tokenize(srv, p->str, p->len, MOE_TOK_SPECIAL | MOE_TOK_ADD_BOS, &j.n_prompt, &ae);
            if (!j.prompt) goto bad;
        } else if (p && p->type == JSON_ARRAY && p->len > 0 && p->items[0]->type == JSON_INT) { /* token ids */
            j.prompt = malloc(sizeof *j.prompt * p->len);
            if (!j.prompt || p->len > (size_t)INT32_MAX) {
                api_fail(&ae, NULL, "out of memory");
                goto bad;
            }
            for (size_t i = 0; i < p->len; i++) {
                json_value *t = p->items[i];
                if (t->type != JSON_INT || t->integer < 0 || t->integer >= srv->vocab) {
                    api_fail(&ae, "prompt", "\"prompt\"[%zu] is not a token id below %d", i, srv->vocab);
                    goto bad;
                }
                j.prompt[j.n_prompt++] = (int32_t)t->integer;
            }
        } else {
            api_fail(&ae, "prompt", "\"prompt\" must be a string (or one string in a list, or a list of token ids)");
            goto bad;
        }
        if (j.n_prompt == 0) {
            api_fail(&ae, "prompt", "\"prompt\" is empty (and the model adds no BOS token)");
            goto bad;
        }
    }
    if (fit_prompt(srv, body, chat, &j, &ae)) goto bad;
    j.chat = chat;
    generate(c, &j, chat, stream, usage, think, in_reasoning);
    job_release(&j);
    return;
bad:
    reply_error(c, 400, ae.param, ae.msg);
    job_release(&j);
}

/* ---------------------------------------------------------------- small endpoints */

static void handle_models(conn *c) {
    server *srv = c->srv;
    json_value *o = json_new(JSON_OBJECT), *list = json_new(JSON_ARRAY), *m = json_new(JSON_OBJECT);
    if (m) {
        json_object_set(m, "id", 2, json_new_string(srv->model_id, strlen(srv->model_id)));
        json_object_set(m, "object", 6, json_new_string("model", 5));
        json_object_set(m, "created", 7, json_new_int(srv->created));
        json_object_set(m, "owned_by", 8, json_new_string("moe", 3));
    }
    if (!o || !list || !m || json_array_push(list, m)) {
        json_free(o);
        json_free(list);
        reply_error(c, 500, NULL, "out of memory");
        return;
    }
    json_object_set(o, "object", 6, json_new_string("list", 4));
    json_object_set(o, "data", 4, list);
    reply_json(c, 200, o);
    json_free(o);
}

static void handle_tokenize(conn *c, const json_value *body) {
    api_err ae = {{0}, {0}};
    json_value *content = json_get(body, "content");
    int add_special = 0, parse_special = 1;
    if (!content || content->type != JSON_STRING) {
        reply_error(c, 400, "content", "\"content\" must be a string");
        return;
    }
    if (get_bool(body, "add_special", &add_special, &ae) < 0 ||
        get_bool(body, "parse_special", &parse_special, &ae) < 0) {
        reply_error(c, 400, ae.param, ae.msg);
        return;
    }
    int n;
    int32_t *ids = tokenize(c->srv, content->str, content->len,
                            (add_special ? MOE_TOK_ADD_BOS : 0) | (parse_special ? MOE_TOK_SPECIAL : 0), &n, &ae);
    if (!ids) {
        reply_error(c, 400, "content", ae.msg);
        return;
    }
    json_value *o = json_new(JSON_OBJECT), *list = json_new(JSON_ARRAY);
    for (int i = 0; list && i < n; i++) json_array_push(list, json_new_int(ids[i]));
    free(ids);
    if (o) json_object_set(o, "tokens", 6, list ? list : json_new(JSON_NULL));
    else json_free(list);
    if (o) reply_json(c, 200, o);
    else reply_error(c, 500, NULL, "out of memory");
    json_free(o);
}

static void handle_detokenize(conn *c, const json_value *body) {
    json_value *tokens = json_get(body, "tokens");
    if (!tokens || tokens->type != JSON_ARRAY) {
        reply_error(c, 400, "tokens", "\"tokens\" must be a list of token ids");
        return;
    }
    strbuf text = {0};
    moe_detok d;
    moe_detok_init(&d, c->srv->m);
    char piece[1024];
    for (size_t i = 0; i < tokens->len; i++) {
        json_value *t = tokens->items[i];
        if (t->type != JSON_INT || t->integer < 0 || t->integer >= c->srv->vocab) {
            char msg[96];
            snprintf(msg, sizeof msg, "\"tokens\"[%zu] is not a token id below %d", i, c->srv->vocab);
            sb_free(&text);
            reply_error(c, 400, "tokens", msg);
            return;
        }
        sb_put(&text, piece, moe_detok_push(&d, (int32_t)t->integer, piece, sizeof piece));
    }
    sb_put(&text, piece, moe_detok_flush(&d, piece, sizeof piece));
    json_value *o = json_new(JSON_OBJECT);
    if (o && !text.failed) json_object_set(o, "content", 7, json_new_string(text.p ? text.p : "", text.n));
    if (o && !text.failed) reply_json(c, 200, o);
    else reply_error(c, 500, NULL, "out of memory");
    json_free(o);
    sb_free(&text);
}

static void handle_apply_template(conn *c, json_value *body) {
    api_err ae = {{0}, {0}};
    size_t len;
    char *prompt = render_chat(c->srv, body, &len, &ae);
    if (!prompt) {
        reply_error(c, 400, ae.param, ae.msg);
        return;
    }
    json_value *o = json_new(JSON_OBJECT);
    if (o) json_object_set(o, "prompt", 6, json_new_string(prompt, len));
    free(prompt);
    if (o) reply_json(c, 200, o);
    else reply_error(c, 500, NULL, "out of memory");
    json_free(o);
}

/* ---------------------------------------------------------------- routing */

typedef struct {
    const char *path, *method;
    int kind;
} route;

enum { R_PAGE, R_HEALTH, R_MODELS, R_COMPLETIONS, R_CHAT, R_TOKENIZE, R_DETOKENIZE, R_APPLY_TEMPLATE };

static const route ROUTES[] = {
    {"/", "GET", R_PAGE},
    {"/health", "GET", R_HEALTH},
    {"/v1/health", "GET", R_HEALTH},
    {"/v1/models", "GET", R_MODELS},
    {"/models", "GET", R_MODELS},
    {"/v1/completions", "POST", R_COMPLETIONS},
    {"/completions", "POST", R_COMPLETIONS},
    {"/v1/chat/completions", "POST", R_CHAT},
    {"/chat/completions", "POST", R_CHAT},
    {"/tokenize", "POST", R_TOKENIZE},
    {"/detokenize", "POST", R_DETOKENIZE},
    {"/apply-template", "POST", R_APPLY_TEMPLATE},
};

static int authorized(const server *srv, const http_request *r) {
    if (!srv->api_key) return 1;
    const http_header *h = http_find_header(r, "authorization");
    char want[512];
    int n = snprintf(want, sizeof want, "Bearer %s", srv->api_key);
    if (!h || n < 0 || (size_t)n >= sizeof want) return 0;
    return http_secret_equal(h->value, h->value_len, want, (size_t)n);
}

static int loaded(server *srv) {
    pthread_mutex_lock(&srv->mu);
    int l = srv->loaded;
    pthread_mutex_unlock(&srv->mu);
    return l;
}

static void handle(conn *c, const http_request *r) {
    const route *found = NULL;
    int path_known = 0;
    for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES; i++) {
        if (!http_path_is(r, ROUTES[i].path)) continue;
        path_known = 1;
        if (http_method_is(r, ROUTES[i].method)) found = &ROUTES[i];
    }
    if (!path_known) {
        reply_error(c, 404, NULL, "no such endpoint");
        return;
    }
    if (!found) {
        char allow[64];
        for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES; i++)
            if (http_path_is(r, ROUTES[i].path)) snprintf(allow, sizeof allow, "Allow: %s\r\n", ROUTES[i].method);
        json_value *o = error_object(405, "method not allowed on this endpoint", NULL);
        strbuf b = {0};
        if (!o || json_write(&b, o, NULL)) b.failed = 1;
        json_free(o);
        reply(c, 405, "application/json", b.p ? b.p : "", b.failed ? 0 : b.n, allow);
        sb_free(&b);
        return;
    }
    if (!loaded(c->srv)) { /* llama-server's answer, which load balancers and clients know */
        reply_error(c, 503, NULL, "Loading model");
        return;
    }
    if (found->kind == R_PAGE) { /* open to all: it holds no data; its requests carry the key */
        reply(c, 200, "text/html; charset=utf-8", (const char *)serve_page, serve_page_len,
              "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
              "Content-Security-Policy: default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'\r\n");
        return;
    }
    if (found->kind == R_HEALTH) { /* open to all: load balancers and scripts poll it */
        const char *ok = "{\"status\": \"ok\"}";
        reply(c, 200, "application/json", ok, strlen(ok), NULL);
        return;
    }
    if (!authorized(c->srv, r)) {
        reply_error(c, 401, NULL, "invalid or missing API key (Authorization: Bearer KEY)");
        return;
    }
    if (found->kind == R_MODELS) {
        handle_models(c);
        return;
    }
    moe_err err = {{0}};
    json_value *body = json_parse(r->body ? r->body : "", r->body_len, &err);
    if (!body || body->type != JSON_OBJECT) {
        char msg[MOE_ERR_LEN + 64];
        snprintf(msg, sizeof msg, "the request body is not a JSON object%s%s", body ? "" : ": ", body ? "" : err.msg);
        reply_error(c, 400, NULL, msg);
        json_free(body);
        return;
    }
    switch (found->kind) {
    case R_COMPLETIONS: handle_completion(c, body, 0); break;
    case R_CHAT: handle_completion(c, body, 1); break;
    case R_TOKENIZE: handle_tokenize(c, body); break;
    case R_DETOKENIZE: handle_detokenize(c, body); break;
    case R_APPLY_TEMPLATE: handle_apply_template(c, body); break;
    default: reply_error(c, 500, NULL, "unrouted endpoint"); break;
    }
    json_free(body);
}

/* ---------------------------------------------------------------- connections */

static void log_request(const conn *c, const http_request *r, double t0) {
    int mn = (int)(r->method_len < 16 ? r->method_len : 16), pn = (int)(r->target_len < 200 ? r->target_len : 200);
    fprintf(stderr, "%s %.*s %.*s %d prompt %d (cached %d) completion %d tokens %.3f s batch %d\n", c->peer, mn, r->method,
            pn, r->target, c->status, c->n_prompt, c->n_reused, c->n_completion, (now_ms() - t0) / 1000.0, c->max_batch);
}

/* Whether the connection waits for a request (and may be closed to make room
 * for a new one) or is answering one (never interrupted). */
static void set_waiting(conn *c, int waiting) {
    pthread_mutex_lock(&c->srv->mu);
    c->waiting = waiting;
    c->waiting_since = now_ms();
    pthread_mutex_unlock(&c->srv->mu);
}

static void *conn_main(void *arg) {
    conn *c = arg;
    server *srv = c->srv;
    for (;;) {
        http_request r;
        set_waiting(c, 1);
        int rc = read_request(c, &r);
        set_waiting(c, 0);
        if (rc == 0) break;
        double t0 = now_ms();
        c->status = 0;
        c->n_prompt = c->n_completion = c->n_reused = c->max_batch = 0;
        if (rc != HTTP_COMPLETE) { /* the stream cannot be trusted after a bad request: answer, close */
            c->keep_alive = 0;
            c->head_only = 0;
            char msg[96];
            snprintf(msg, sizeof msg, "%s", rc == 408 ? "the request did not arrive in time" : http_reason(rc));
            reply_error(c, rc, NULL, msg);
            fprintf(stderr, "%s - - %d (%s)\n", c->peer, rc, msg);
            break;
        }
        c->keep_alive = r.keep_alive;
        c->head_only = http_method_is(&r, "HEAD");
        handle(c, &r);
        log_request(c, &r, t0);
        if (!c->keep_alive) break;
        memmove(c->in.p, c->in.p + r.total_len, c->in.n - r.total_len);
        c->in.n -= r.total_len;
    }
    pthread_mutex_lock(&srv->mu); /* out of the table first: nobody shuts the descriptor down after close */
    srv->conns[c->place] = NULL;
    srv->n_conns--;
    pthread_cond_signal(&srv->conn_left);
    pthread_mutex_unlock(&srv->mu);
    close(c->fd);
    sb_free(&c->in);
    free(c);
    return NULL;
}

/* All connection threads taken: end the connection that has waited longest
 * for a request (idle keep-alive, or a request trickling in byte by byte: a
 * client that sends its request promptly is never the oldest, and one whose
 * bytes wait to be read is skipped), then wait (bounded) for its thread to
 * leave. 1 when there is room now. Under srv->mu. */
static int make_room(server *srv) {
    conn *oldest = NULL;
    for (int i = 0; i < MAX_CONNS; i++) {
        conn *c = srv->conns[i];
        int pending = 0; /* bytes its thread has yet to read: a request about to be answered */
        if (!c || !c->waiting || ioctl(c->fd, FIONREAD, &pending) || pending > 0) continue;
        if (!oldest || c->waiting_since < oldest->waiting_since) oldest = c;
    }
    if (!oldest) return 0;
    oldest->waiting = 0;               /* chosen once */
    shutdown(oldest->fd, SHUT_RDWR);   /* its poll wakes, its recv sees the end: the thread leaves */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    while (srv->n_conns >= MAX_CONNS)
        if (pthread_cond_timedwait(&srv->conn_left, &srv->mu, &until)) break;
    return srv->n_conns < MAX_CONNS;
}

/* Over MAX_CONNS with no waiting connection to close: one short 503 without a thread, then close. */
static void refuse_connection(int fd) {
    const char *body = "{\"error\": {\"message\": \"too many connections\", \"type\": \"unavailable_error\", "
                       "\"param\": null, \"code\": 503}}";
    char buf[512];
    strbuf b = {.p = buf, .cap = sizeof buf, .limit = sizeof buf - 1}; /* on the stack: nothing to free */
    http_response_head(&b, 503, "application/json", (long long)strlen(body), 0, NULL);
    sb_puts(&b, body);
    if (!b.failed) send(fd, b.p, b.n, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(fd);
}

static void accept_loop(server *srv, int lfd) {
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept(lfd, (struct sockaddr *)&sa, &sl);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED) usleep(10000); /* e.g. out of descriptors: let some close */
            continue;
        }
        /* a client that stops reading cannot hold a thread longer than the timeout */
        struct timeval tv = {.tv_sec = srv->timeout_ms / 1000, .tv_usec = (srv->timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        conn *c = calloc(1, sizeof *c);
        if (c) {
            c->srv = srv;
            c->fd = fd;
            c->in.limit = MAX_HEAD + MAX_BODY + 65536;
            char host[INET6_ADDRSTRLEN] = "?";
            if (sa.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof host);
            else if (sa.ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, host, sizeof host);
            snprintf(c->peer, sizeof c->peer, "%s", host);
        }
        pthread_mutex_lock(&srv->mu);
        int room = c && (srv->n_conns < MAX_CONNS || make_room(srv));
        if (room) {
            for (c->place = 0; srv->conns[c->place]; c->place++) {}
            srv->conns[c->place] = c;
            srv->n_conns++;
        }
        pthread_mutex_unlock(&srv->mu);
        if (!room) {
            free(c);
            refuse_connection(fd);
            continue;
        }
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, conn_main, c)) {
            pthread_mutex_lock(&srv->mu);
            srv->conns[c->place] = NULL;
            srv->n_conns--;
            pthread_mutex_unlock(&srv->mu);
            free(c);
            refuse_connection(fd);
        }
        pthread_attr_destroy(&attr);
    }
}

/* A listening socket on host:port (port 0: any free port); the bound port in *bound. */
static int listen_on(const char *host, int port, int *bound) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc) die(1, CMD, "--host %s: %s", host, gai_strerror(rc));
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 128)) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) die(1, CMD, "cannot listen on %s:%d: %s", host, port, strerror(errno));
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *bound = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                            : ((struct sockaddr_in *)&sa)->sin_port);
    return fd;
}

/* What the loader thread needs; the server answers 503 until it is done. */
typedef struct {
    server *srv;
    const char *path, *tmpl_path; /* the model, the --template file (NULL: the model's own) */
    moe_ctx_params cp;
    int parallel, queue;
    const char *host;
    int port;
} loader;

/* Load the template and the model and start the model thread while the main
 * thread already answers (503 "Loading model"): a client or load balancer can
 * tell a server that is loading from one that is down. Any failure ends the
 * process with one line, as it would before listening. */
static void *load_main(void *arg) {
    loader *ld = arg;
    server *srv = ld->srv;
    srv->tmpl = ld->tmpl_path ? read_file_or_die(CMD, ld->tmpl_path, &srv->tmpl_len) : NULL;
    moe_model *m = open_model_or_die(CMD, ld->path);
    srv->m = m;
    size_t own_len = 0;
    const char *own = moe_chat_template(m, &own_len);
    srv->has_template = srv->tmpl || own;
    srv->thinking = srv->tmpl ? find_text(srv->tmpl, srv->tmpl_len, "<think>") : own ? find_text(own, own_len, "<think>") : 0;
    const char *base = strrchr(ld->path, '/');
    srv->model_id = base ? base + 1 : ld->path;
    moe_model_info info;
    moe_model_get_info(m, &info);
    if (!info.has_weights) die(1, CMD, "%s holds a tokenizer only", ld->path);
    srv->vocab = info.vocab_size;
    moe_err err = {{0}};
    srv->engine = engine_new(m, &ld->cp, ld->parallel, ld->queue, &err);
    if (!srv->engine) die(1, CMD, "%s", err.msg);
    srv->n_ctx = engine_n_ctx(srv->engine);
    if (!srv->has_template)
        fprintf(stderr, "moe serve: the model has no chat template: /v1/chat/completions answers 400 "
                        "(use --template)\n");
    pthread_mutex_lock(&srv->mu);
    srv->loaded = 1;
    pthread_mutex_unlock(&srv->mu);
    fprintf(stderr, "moe serve: %s, %d slot%s of %d positions, listening on http://%s:%d\n", srv->model_id,
            ld->parallel, ld->parallel == 1 ? "" : "s", srv->n_ctx, ld->host, ld->port);
    fflush(stderr);
    return NULL;
}

static void help(void) {
    printf("usage: moe serve [-m MODEL] [--host 127.0.0.1] [--port 8080] [flags]\n\n"
           "An OpenAI-compatible HTTP server: POST /v1/chat/completions (streamed with\n"
           "\"stream\": true), POST /v1/completions, GET /v1/models, GET /health, POST /tokenize,\n"
           "POST /detokenize, POST /apply-template, and a chat page at GET /. One line per\n"
           "request on stderr.\n\n"
           "  -m, --model FILE        .moe or GGUF model file\n"
           "      --host ADDR         address to listen on (default 127.0.0.1: this machine only)\n"
           "      --port N            port (default 8080; 0 = any free port, printed at start)\n"
           "      --parallel N        sequences generated at once, each with its own KV cache (default 1)\n"
           "      --queue N           requests that may wait for a slot; more get 503 (default 16)\n"
           "  -c, --ctx-size N        context length per sequence (default: the model's, at most 4096)\n"
           "  -t, --threads N         threads\n"
           "      --kv f32|f16        KV cache type\n"
           "      --api-key KEY       require \"Authorization: Bearer KEY\" (except on /health)\n"
           "      --template FILE     Jinja chat template instead of the model's\n"
           "      --timeout SECONDS   a request must arrive within this, idle connections close after it\n"
           "                          (default 30)\n\n"
           "OpenMP threads wait passively (OMP_WAIT_POLICY=passive) unless OMP_WAIT_POLICY is set.\n");
}

/* The model thread waits between rounds for the connection threads, and they
 * and the clients share the cores with it: OpenMP workers that spin while they
 * wait (libgomp's default) take those cores, which stalls requests for seconds
 * on a loaded machine (docs/BENCHMARKS.md, 2026-12-06).
 * libgomp reads OMP_WAIT_POLICY once, before main, so unless the user chose a
 * policy the server runs itself again with passive waiting set. */
static void wait_passively(int argc, char **argv) {
#ifdef _OPENMP
    if (getenv("OMP_WAIT_POLICY") || setenv("OMP_WAIT_POLICY", "passive", 1)) return;
    char **again = calloc((size_t)argc + 3, sizeof *again);
    if (!again) return;
    again[0] = "moe";
    again[1] = "serve";
    for (int i = 0; i < argc; i++) again[i + 2] = argv[i];
    execv("/proc/self/exe", again);
    free(again); /* no /proc: serve with the default policy */
#else
    (void)argc, (void)argv;
#endif
}

int cmd_serve(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *host = "127.0.0.1", *tmpl = NULL, *api_key = NULL, *flag;
    int port = 8080, parallel = 1, queue = 16, timeout = 30;
    moe_ctx_params cp = moe_ctx_default_params();
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "--host")) host = args_value(&a, flag);
        else if (!strcmp(flag, "--port")) port = args_int(&a, flag, 0, 65535);
        else if (!strcmp(flag, "--parallel") || !strcmp(flag, "-np")) parallel = args_int(&a, flag, 1, 256);
        else if (!strcmp(flag, "--queue")) queue = args_int(&a, flag, 0, 1 << 16);
        else if (!strcmp(flag, "-c") || !strcmp(flag, "--ctx-size")) cp.n_ctx = args_int(&a, flag, 1, 1 << 24);
        else if (!strcmp(flag, "-t") || !strcmp(flag, "--threads")) cp.n_threads = args_int(&a, flag, 1, 1024);
        else if (!strcmp(flag, "--kv")) cp.kv_f16 = args_kv_type(&a, flag);
        else if (!strcmp(flag, "--api-key")) api_key = args_value(&a, flag);
        else if (!strcmp(flag, "--template")) tmpl = args_value(&a, flag);
        else if (!strcmp(flag, "--timeout")) timeout = args_int(&a, flag, 1, 3600);
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe serve -h)", flag);
    }
    if (api_key && (!api_key[0] || strlen(api_key) > 256)) die(EXIT_USAGE, CMD, "--api-key: 1 to 256 characters");
    wait_passively(argc, argv);
    /* a client that goes away mid-write must not kill the server */
    struct sigaction sa = {0};
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);

    server srv = {.api_key = api_key, .timeout_ms = timeout * 1000, .created = (long)time(NULL),
                  .limits = {.max_head = MAX_HEAD, .max_headers = MAX_HEADERS, .max_body = MAX_BODY}};
    pthread_mutex_init(&srv.mu, NULL);
    pthread_cond_init(&srv.conn_left, NULL);
    int bound;
    int lfd = listen_on(host, port, &bound);
    loader ld = {.srv = &srv, .path = model ? model : default_model_path(argv[0]), .tmpl_path = tmpl, .cp = cp,
                 .parallel = parallel, .queue = queue, .host = host, .port = bound};
    fprintf(stderr, "moe serve: bound to http://%s:%d, loading %s (503 until ready)\n", host, bound, ld.path);
    fflush(stderr);
    pthread_t t;
    if (pthread_create(&t, NULL, load_main, &ld)) die(1, CMD, "cannot start the loader thread");
    pthread_detach(t);
    accept_loop(&srv, lfd);
    return 0;
}
