/* tokenizer.c - TEMPORARY stub until the tokenizer branch lands: loads the
 * token table and decodes; encoding is not available yet. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "util.h"

struct moe_tokenizer {
    int n, bos, eos;
    const uint8_t *text;
    const int32_t *offsets;
    const uint8_t *types;
};

static int kv_int(const moe_file *f, const char *key, int def) {
    const moe_kv *kv = moef_kv(f, key);
    return kv && kv->type == KV_INT ? (int)kv->i : def;
}

moe_tokenizer *tokenizer_load(const moe_file *f, int vocab_size, moe_err *err) {
    moe_tensor *text = moef_tensor(f, "tok.text"), *off = moef_tensor(f, "tok.offsets"), *ty = moef_tensor(f, "tok.types");
    if (!text || !off || !ty) { moe_fail(err, "tokenizer tensors missing"); return NULL; }
    moe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) { moe_fail(err, "out of memory"); return NULL; }
    t->n = (int)ty->dims[0];
    t->text = text->data; t->offsets = off->data; t->types = ty->data;
    t->bos = kv_int(f, "tok.bos", -1); t->eos = kv_int(f, "tok.eos", -1);
    text->used = off->used = ty->used = 1;
    moe_tensor *m = moef_tensor(f, "tok.merges"); if (m) m->used = 1;
    moe_tensor *s = moef_tensor(f, "tok.scores"); if (s) s->used = 1;
    (void)vocab_size;
    return t;
}
void tokenizer_free(moe_tokenizer *t) { free(t); }
int tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len, int flags, int32_t *out, int cap, moe_err *err) {
    (void)t; (void)text; (void)len; (void)flags; (void)out; (void)cap;
    return moe_fail(err, "tokenizer: encoding is not implemented yet");
}
int tokenizer_n_tokens(const moe_tokenizer *t) { return t->n; }
int tokenizer_bos(const moe_tokenizer *t) { return t->bos; }
int tokenizer_eos(const moe_tokenizer *t) { return t->eos; }
const char *tokenizer_token(const moe_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n) return NULL;
    *len = (size_t)(t->offsets[id + 1] - t->offsets[id]);
    return (const char *)t->text + t->offsets[id];
}
int tokenizer_is_eos(const moe_tokenizer *t, int32_t id) { return id == t->eos; }
int tokenizer_is_control(const moe_tokenizer *t, int32_t id) { return id >= 0 && id < t->n && t->types[id] == 3; }

int moe_tokenize(const moe_model *m, const char *text, size_t len, int flags, int32_t *out, int cap, moe_err *err) {
    return tokenizer_encode(model_tokenizer(m), text, len, flags, out, cap, err);
}
void moe_detok_init(moe_detok *d, const moe_model *m) { memset(d, 0, sizeof *d); d->model = m; d->prev = -1; }
size_t moe_detok_push(moe_detok *d, int32_t id, char *out, size_t cap) {
    size_t len; const char *s = tokenizer_token(model_tokenizer(d->model), id, &len);
    if (!s || cap == 0) return 0;
    if (len > cap - 1) len = cap - 1;
    memcpy(out, s, len); out[len] = 0; d->prev = id;
    return len;
}
size_t moe_detok_flush(moe_detok *d, char *out, size_t cap) { (void)d; if (cap) out[0] = 0; return 0; }
const char *moe_token_bytes(const moe_model *m, int32_t id, size_t *len) { return tokenizer_token(model_tokenizer(m), id, len); }
int moe_token_is_eos(const moe_model *m, int32_t id) { return tokenizer_is_eos(model_tokenizer(m), id); }
