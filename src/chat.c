/* chat.c - the chat side of the public API (moe.h "chat"): the model's
 * template, rendering an OpenAI-style request with it (jinja.c) the way
 * Hugging Face's apply_chat_template does, and the tokens that end a turn. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jinja.h"
#include "json.h"
#include "model.h"
#include "util.h"

const char *moe_chat_template(const moe_model *m, size_t *len) {
    const moe_kv *kv = m ? moef_kv(&m->file, "tok.chat_template") : NULL;
    if (!kv || kv->type != KV_STR || kv->len == 0) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = kv->len;
    return kv->str;
}

/* Move member `key` of src (if any) into dst under the same name. */
static int move_member(json_value *dst, json_value *src, const char *key) {
    for (size_t i = 0; i < src->len; i++)
        if (!strcmp(src->keys[i], key) && src->items[i]) {
            json_value *v = src->items[i];
            src->items[i] = NULL;
            return json_object_set(dst, key, strlen(key), v);
        }
    return 0;
}

static int set_token_text(json_value *vars, const char *name, const moe_model *m, int id) {
    size_t n;
    const char *s = id >= 0 ? moe_token_bytes(m, id, &n) : NULL;
    if (!s) return 0; /* HF leaves a missing special token undefined */
    return json_object_set(vars, name, strlen(name), json_new_string(s, n));
}

/* The template's variables, as transformers passes them: messages, tools and
 * documents (None when absent), add_generation_prompt, the special tokens, and
 * chat_template_kwargs on top. Takes members out of req. */
static json_value *build_vars(const moe_model *m, json_value *req, moe_err *err) {
    json_value *msgs = json_get(req, "messages");
    if (!msgs || msgs->type != JSON_ARRAY) {
        moe_fail(err, "request: \"messages\" must be an array of messages");
        return NULL;
    }
    for (size_t i = 0; i < msgs->len; i++)
        if (msgs->items[i]->type != JSON_OBJECT) {
            moe_fail(err, "request: messages[%zu] is not an object", i);
            return NULL;
        }
    json_value *agp = json_get(req, "add_generation_prompt"), *kw = json_get(req, "chat_template_kwargs");
    if (agp && agp->type != JSON_BOOL) {
        moe_fail(err, "request: \"add_generation_prompt\" must be true or false");
        return NULL;
    }
    if (kw && kw->type != JSON_OBJECT) {
        moe_fail(err, "request: \"chat_template_kwargs\" must be an object");
        return NULL;
    }
    json_value *vars = json_new(JSON_OBJECT);
    int bad = !vars;
    if (!bad && m) {
        const moe_tokenizer *t = model_tokenizer(m);
        bad |= set_token_text(vars, "bos_token", m, tokenizer_bos(t));
        bad |= set_token_text(vars, "eos_token", m, tokenizer_eos(t));
    }
    if (!bad) {
        bad |= move_member(vars, req, "bos_token");
        bad |= move_member(vars, req, "eos_token");
        bad |= move_member(vars, req, "messages");
        bad |= json_get(req, "tools") ? move_member(vars, req, "tools")
                                      : json_object_set(vars, "tools", 5, json_new(JSON_NULL));
        bad |= json_get(req, "documents") ? move_member(vars, req, "documents")
                                          : json_object_set(vars, "documents", 9, json_new(JSON_NULL));
        bad |= json_object_set(vars, "add_generation_prompt", 21, json_new_bool(agp ? agp->boolean : 1));
    }
    static const char *const fixed[] = {"messages", "tools", "documents", "add_generation_prompt"};
    for (size_t i = 0; !bad && kw && i < kw->len; i++) {
        int skip = 0;
        for (size_t k = 0; k < sizeof fixed / sizeof *fixed; k++) skip |= !strcmp(kw->keys[i], fixed[k]);
        if (skip) {
            json_free(vars);
            moe_fail(err, "request: chat_template_kwargs may not set \"%s\"", kw->keys[i]);
            return NULL;
        }
        json_value *v = kw->items[i];
        kw->items[i] = NULL;
        bad |= json_object_set(vars, kw->keys[i], kw->key_lens[i], v ? v : json_new(JSON_NULL));
    }
    if (bad) {
        json_free(vars);
        moe_fail(err, "out of memory");
        return NULL;
    }
    return vars;
}

char *moe_chat_render(const moe_model *m, const char *request_json, size_t request_len, const moe_chat_opts *opts,
                      size_t *len, int *raised, moe_err *err) {
    moe_chat_opts o = opts ? *opts : (moe_chat_opts){0};
    if (raised) *raised = 0;
    if (!request_json) {
        moe_fail(err, "no request");
        return NULL;
    }
    if (!o.template_text) {
        o.template_text = moe_chat_template(m, &o.template_len);
        if (!o.template_text) {
            moe_fail(err, "the model has no chat template (give one with --template FILE.jinja)");
            return NULL;
        }
    }
    json_value *req = json_parse(request_json, request_len, err);
    if (!req) {
        moe_err_prefix(err, "request");
        return NULL;
    }
    if (req->type != JSON_OBJECT) {
        json_free(req);
        moe_fail(err, "request: expected a JSON object");
        return NULL;
    }
    json_value *vars = build_vars(m, req, err);
    json_free(req);
    if (!vars) return NULL;
    jinja_template *t = jinja_parse(o.template_text, o.template_len, err);
    if (!t) {
        json_free(vars);
        return NULL;
    }
    jinja_opts jo = {0};
    if (o.year) {
        jo.now = (struct tm){.tm_year = o.year - 1900, .tm_mon = o.month - 1, .tm_mday = o.day,
                             .tm_hour = o.hour, .tm_min = o.minute, .tm_sec = o.second, .tm_isdst = -1};
        time_t tt = timegm(&jo.now); /* fills in the weekday and day of the year */
        gmtime_r(&tt, &jo.now);
    } else {
        time_t tt = time(NULL);
        localtime_r(&tt, &jo.now);
    }
    strbuf out = {0};
    int rc = jinja_render(t, vars, &jo, &out, err);
    jinja_free(t);
    json_free(vars);
    if (rc != JINJA_OK) {
        if (raised) *raised = rc == JINJA_RAISED;
        sb_free(&out);
        return NULL;
    }
    if (!out.p) sb_reserve(&out, 1);
    if (!out.p) {
        moe_fail(err, "out of memory");
        return NULL;
    }
    if (len) *len = out.n;
    return out.p;
}

/* Control tokens that close a turn in the chat formats we know. */
static const char *const END_OF_TURN[] = {
    "<|im_end|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|return|>", "<|call|>", "<|endoftext|>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>", "<|end_of_turn|>", "</s>", "[EOS]"};

int moe_chat_end_tokens(const moe_model *m, int32_t *out, int cap) {
    const moe_tokenizer *t = m ? model_tokenizer(m) : NULL;
    int n = 0, nt = t ? tokenizer_n_tokens(t) : 0;
    for (int32_t id = 0; id < nt; id++) {
        int end = tokenizer_is_eos(t, id);
        if (!end && tokenizer_is_control(t, id)) {
            size_t k;
            const char *s = tokenizer_token(t, id, &k);
            for (size_t e = 0; !end && e < sizeof END_OF_TURN / sizeof *END_OF_TURN; e++)
                end = k == strlen(END_OF_TURN[e]) && !memcmp(s, END_OF_TURN[e], k);
        }
        if (end) {
            if (n < cap && out) out[n] = id;
            n++;
        }
    }
    return n;
}
