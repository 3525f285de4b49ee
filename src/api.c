/* api.c - the functions of moe.h that only hand a model to the module doing
 * the work. Each part of the API lives where its work is done, so a reader of
 * moe.h finds it there: opening a model in model.c, a context in ctx.c,
 * evaluation in forward.c, sampling in sampler.c, chat in chat.c, the kernel
 * name in kernels.c. The rest is gathered here: the tokenizer seen through a
 * model (tokenizer.c works on a moe_tokenizer and does not know the model),
 * one query of the model's layers, and the version. */
#include <string.h>

#include "model.h"
#include "tokenizer.h"
#include "util.h"

/* ------------------------------------------------------------ tokenizer (tokenizer.c) */

int moe_tokenize(const moe_model *m, const char *text, size_t len, int flags, int32_t *out, int cap,
                 moe_err *err) {
    if (!m) return moe_fail(err, "tokenize: no model");
    return tokenizer_encode(model_tokenizer(m), text, len, flags, out, cap, err);
}

void moe_detok_init(moe_detok *d, const moe_model *m) {
    if (!d) return;
    memset(d, 0, sizeof *d);
    d->model = m;
    d->prev = -1;
}

size_t moe_detok_push(moe_detok *d, int32_t id, char *out, size_t cap) {
    if (!d || !d->model) {
        if (cap) out[0] = 0;
        return 0;
    }
    return tokenizer_detok_push(model_tokenizer(d->model), d, id, out, cap);
}

size_t moe_detok_flush(moe_detok *d, char *out, size_t cap) { return tokenizer_detok_flush(d, out, cap); }

const char *moe_token_bytes(const moe_model *m, int32_t id, size_t *len) {
    return m ? tokenizer_token(model_tokenizer(m), id, len) : NULL;
}

int moe_token_is_eos(const moe_model *m, int32_t id) { return m ? tokenizer_is_eos(model_tokenizer(m), id) : 0; }

/* ------------------------------------------------------------ model and library */

int moe_layer_is_moe(const moe_model *m, int layer) {
    return m && layer >= 0 && layer < m->cfg.n_layers && m->layers && m->layers[layer].is_moe;
}

const char *moe_version(void) { return MOE_VERSION_STRING; }
