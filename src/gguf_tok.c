/* gguf_tok.c - tokenizer.ggml.* keys as the tok.* keys and tables of
 * tokenizer.c (the C twin of tools/tokenizer_convert.py's GGUF path). */
#include "gguf_view.h"

int gguf_view_tokenizer(gguf_view *v) {
    (void)v;
    return 0;
}
