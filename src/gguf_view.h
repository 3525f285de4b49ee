/* gguf_view.h - translate a parsed GGUF file (gguf.h) into the engine's own
 * view of a model file (file.h): its {arch}.* metadata into the config keys
 * config.c reads (docs/FORMAT.md), its tensor names into the names model.c
 * binds, dims reversed (GGUF ne[0] is fastest), data pointers into the same
 * buffer, and its tokenizer.ggml.* keys into the tok.* keys and tables
 * tokenizer.c reads (gguf_tok.c). The forward pass never knows which format
 * it runs. Only small things are computed into owned memory: names, the
 * tokenizer tables, and the MLA k_b/v_b of a file that has only the fused
 * attn_kv_b (or quantized them). */
#ifndef MOE_GGUF_VIEW_H
#define MOE_GGUF_VIEW_H

#include <stddef.h>
#include <stdint.h>

#include "file.h"
#include "gguf.h"
#include "moe.h"

/* Parse buf as GGUF and fill f with the translated view (f->gguf keeps the
 * GGUF directory). On failure f is left empty. */
int gguf_view_parse(moe_file *f, const void *buf, size_t size, moe_err *err);

/* The view under construction (shared with gguf_tok.c). */
typedef struct {
    moe_file *f;
    const gguf_file *g;
    moe_err *err;
    unsigned char *consumed;  /* [g->n_kv] keys the translation read */
    int kv_cap, tensor_cap;
} gguf_view;

/* Append a metadata entry / tensor to the view (strings and data must
 * outlive the file: the GGUF buffer, literals or moef_alloc memory). */
int view_int(gguf_view *v, const char *key, int64_t value);
int view_float(gguf_view *v, const char *key, double value);
int view_str(gguf_view *v, const char *key, const char *s, size_t len);
int view_ints(gguf_view *v, const char *key, const int64_t *values, uint32_t n);
moe_tensor *view_tensor(gguf_view *v, const char *name, moe_dtype dtype, int n_dims, const uint64_t *dims,
                        const void *data);
/* The GGUF key (marked as read), or NULL. */
const gguf_kv *view_key(gguf_view *v, const char *key);

/* tokenizer.ggml.* -> tok.* keys and tensors (gguf_tok.c); 0 when the file has none. */
int gguf_view_tokenizer(gguf_view *v);

#endif /* MOE_GGUF_VIEW_H */
