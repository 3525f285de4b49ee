/* gguf_tok.c - a GGUF file's tokenizer.ggml.* keys as the tok.* keys and
 * tables tokenizer.c reads: the C twin of tools/tokenizer_convert.py's GGUF
 * path (_gguf_tokenizer + _finish), which must give the same tokenizer
 * (tests/py/test_gguf.py compares their ids). Every token is stored as the
 * bytes it decodes to: byte-level text after undoing GPT-2's byte-to-unicode
 * map, SentencePiece's U+2581 as a space, <0xXX> as the byte. The tables are
 * built once into memory owned by the file (small beside the weights). */
#include <stdlib.h>
#include <string.h>

#include "gguf_view.h"
#include "unicode.h"
#include "util.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* tokenizer.ggml.pre -> the engine's pre-tokenizer (the same table as the
 * Python converter's GGUF_PRE) */
static const char *const PRE_MAP[][2] = {
    {"gpt-2", "gpt2"}, {"gpt2", "gpt2"}, {"mpt", "mpt"}, {"falcon", "falcon"}, {"starcoder", "starcoder"},
    {"refact", "refact"}, {"deepseek-llm", "deepseek_llm"}, {"deepseek-coder", "deepseek_coder"},
    {"deepseek-v3", "deepseek_v3"}, {"qwen2", "qwen2"}, {"gpt-4o", "o200k"}, {"llama-bpe", "llama3"},
    {"llama3", "llama3"}, {"llama-v3", "llama3"}, {"olmo", "gpt_neox"}, {"default", "default"},
    {"glm4", "llama3"},     /* GLM-4.5/4.6/4.7(-Flash): llama.cpp's CHATGLM4 type is the llama3 regex */
    {"qwen35", "qwen35"},   /* Qwen3.5: the qwen2 regex with [\p{L}\p{M}] for \p{L} */
};
/* pre-tokenizers whose tokenizer.json carries an NFC normalizer */
static const char *const NFC_PRE[] = {"qwen2", "qwen35", "mpt", "gpt_neox"};
/* tokenizer.ggml.pre names whose tokenizer takes a piece whole when it is a token
 * (HF ignore_merges: Llama 3; llama.cpp sets it for these names, not for glm4) */
static const char *const IGNORE_MERGES_PRE[] = {"llama-bpe", "llama3", "llama-v3"};

typedef struct {
    gguf_view *v;
    const char *const *str; /* [n] raw GGUF token strings */
    uint64_t *len;
    int64_t n;
} vocab;

static int fail(gguf_view *v, const char *msg, const char *key) {
    return moe_fail(v->err, "GGUF tokenizer: %s%s", key, msg);
}

static int valid_utf8(const char *s, uint64_t n) {
    for (uint64_t i = 0; i < n;) {
        int len;
        if (utf8_decode((const uint8_t *)s + i, n - i, &len) >= UNI_BAD_BASE) return 0;
        i += (uint64_t)len;
    }
    return 1;
}

/* GPT-2's printable stand-in code point -> byte, or -1 (bytes_to_unicode inverted). */
static int gpt2_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    int k = (int)(cp - 256); /* the k-th byte that is not printable, in order */
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (!printable && k-- == 0) return b;
    }
    return -1;
}

/* <0xXX> -> XX, or -1 */
static int byte_token(const char *s, uint64_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The bytes token i decodes to, appended at out (which has room for n bytes: decoding never grows). */
static int64_t token_bytes(const char *s, uint64_t n, int type, int spm, uint8_t *out) {
    if (type == TT_BYTE) {
        int b = byte_token(s, n);
        if (b < 0) return -1;
        out[0] = (uint8_t)b;
        return 1;
    }
    if (type == TT_CONTROL || type == TT_USER) {
        memcpy(out, s, n);
        return (int64_t)n;
    }
    uint64_t k = 0;
    if (spm) { /* U+2581 (e2 96 81) -> space */
        for (uint64_t i = 0; i < n;) {
            if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                out[k++] = ' ';
                i += 3;
            } else {
                out[k++] = (uint8_t)s[i++];
            }
        }
        return (int64_t)k;
    }
    for (uint64_t i = 0; i < n;) { /* byte-level; a character with no byte keeps the raw text */
        int len;
        int b = gpt2_byte(utf8_decode((const uint8_t *)s + i, n - i, &len));
        if (b < 0) {
            memcpy(out, s, n);
            return (int64_t)n;
        }
        out[k++] = (uint8_t)b;
        i += (uint64_t)len;
    }
    return (int64_t)k;
}

/* ------------------------------------------------------------ keys */

static const gguf_kv *tkey(gguf_view *v, const char *suffix) {
    char name[96];
    snprintf(name, sizeof name, "tokenizer.ggml.%s", suffix);
    return view_key(v, name);
}

/* A token id key: -1 when absent, else < n. */
static int token_id(gguf_view *v, const char *suffix, int64_t n, int64_t *out) {
    const gguf_kv *kv = tkey(v, suffix);
    *out = -1;
    if (!kv) return 0;
    uint64_t u;
    if (gguf_kv_uint(kv, &u, v->err)) return -1;
    if (u >= (uint64_t)n)
        return moe_fail(v->err, "GGUF tokenizer.ggml.%s = %llu is outside the vocabulary (%lld tokens)", suffix,
                        (unsigned long long)u, (long long)n);
    *out = (int64_t)u;
    return 0;
}

static int flag(gguf_view *v, const char *suffix, int def, int *out) {
    const gguf_kv *kv = tkey(v, suffix);
    *out = def;
    return kv ? gguf_kv_bool(kv, out, v->err) : 0;
}

/* ------------------------------------------------------------ merges */

static uint32_t hash_str(const char *s, uint64_t n) {
    uint32_t h = 2166136261u;
    for (uint64_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* First id whose raw text is s (an open-addressing table over the raw strings). */
static int64_t find_token(const vocab *vc, const int32_t *tab, uint32_t mask, const char *s, uint64_t n) {
    for (uint32_t h = hash_str(s, n) & mask;; h = (h + 1) & mask) {
        if (tab[h] < 0) return -1;
        if (vc->len[tab[h]] == n && !memcmp(vc->str[tab[h]], s, n)) return tab[h];
    }
}

/* tokenizer.ggml.merges "A B" -> (id A, id B, id AB) triples. */
static int build_merges(gguf_view *v, const vocab *vc, int32_t **out, uint64_t *n_out) {
    *out = NULL;
    *n_out = 0;
    const gguf_kv *kv = tkey(v, "merges");
    if (!kv || kv->n == 0) return 0;
    if (kv->type != GGUF_ARRAY || kv->elem_type != GGUF_STRING)
        return fail(v, " is not an array of strings", "tokenizer.ggml.merges");
    if (kv->n > (1u << 26)) return fail(v, " has too many entries", "tokenizer.ggml.merges");
    uint32_t cap = 16;
    while (cap < (uint64_t)vc->n * 2) cap <<= 1;
    int32_t *tab = malloc(sizeof *tab * cap);
    int32_t *m = moef_alloc(v->f, sizeof *m * 3 * (size_t)kv->n);
    char *joined = NULL;
    size_t joined_cap = 0;
    int rc = 0;
    if (!tab || !m) {
        free(tab);
        return moe_fail(v->err, "out of memory");
    }
    memset(tab, 0xff, sizeof *tab * cap);
    for (int64_t i = vc->n - 1; i >= 0; i--) { /* the first id of a text wins: insert from the back, replace */
        uint32_t h = hash_str(vc->str[i], vc->len[i]) & (cap - 1);
        for (;; h = (h + 1) & (cap - 1))
            if (tab[h] < 0 || (vc->len[tab[h]] == vc->len[i] && !memcmp(vc->str[tab[h]], vc->str[i], vc->len[i]))) break;
        tab[h] = (int32_t)i;
    }
    uint64_t pos = 0, len;
    for (uint64_t r = 0; r < kv->n && !rc; r++) {
        const char *s = gguf_arr_next_str(kv, &pos, &len);
        const char *sp = s ? memchr(s, ' ', len) : NULL;
        if (!sp || memchr(sp + 1, ' ', len - (uint64_t)(sp - s) - 1) || !valid_utf8(s, len)) {
            rc = moe_fail(v->err, "GGUF tokenizer.ggml.merges[%llu] is not two tokens separated by one space",
                          (unsigned long long)r);
            break;
        }
        uint64_t la = (uint64_t)(sp - s), lb = len - la - 1;
        if (la + lb > joined_cap) {
            joined_cap = (la + lb) * 2;
            char *g = realloc(joined, joined_cap);
            if (!g) {
                rc = moe_fail(v->err, "out of memory");
                break;
            }
            joined = g;
        }
        memcpy(joined, s, la);
        memcpy(joined + la, sp + 1, lb);
        int64_t a = find_token(vc, tab, cap - 1, s, la), b = find_token(vc, tab, cap - 1, sp + 1, lb);
        int64_t c = find_token(vc, tab, cap - 1, joined, la + lb);
        if (a < 0 || b < 0 || c < 0) {
            rc = moe_fail(v->err, "GGUF tokenizer.ggml.merges[%llu] (\"%.*s\") names a token not in the vocabulary",
                          (unsigned long long)r, (int)(len > 40 ? 40 : len), s);
            break;
        }
        m[3 * r] = (int32_t)a;
        m[3 * r + 1] = (int32_t)b;
        m[3 * r + 2] = (int32_t)c;
    }
    free(tab);
    free(joined);
    if (rc) return -1;
    *out = m;
    *n_out = kv->n;
    return 0;
}

/* ------------------------------------------------------------ the tokenizer */

static int read_vocab(gguf_view *v, vocab *vc) {
    const gguf_kv *kv = tkey(v, "tokens");
    if (!kv || kv->type != GGUF_ARRAY || kv->elem_type != GGUF_STRING || kv->n == 0)
        return fail(v, " is missing or not an array of strings", "tokenizer.ggml.tokens");
    if (kv->n > (1u << 24)) return fail(v, " has too many tokens", "tokenizer.ggml.tokens");
    vc->n = (int64_t)kv->n;
    vc->str = moef_alloc(v->f, sizeof *vc->str * kv->n);
    vc->len = moef_alloc(v->f, sizeof *vc->len * kv->n);
    if (!vc->str || !vc->len) return moe_fail(v->err, "out of memory");
    uint64_t pos = 0;
    for (int64_t i = 0; i < vc->n; i++) {
        ((const char **)vc->str)[i] = gguf_arr_next_str(kv, &pos, &vc->len[i]);
        if (!valid_utf8(vc->str[i], vc->len[i]))
            return moe_fail(v->err, "GGUF tokenizer.ggml.tokens[%lld] is not UTF-8", (long long)i);
    }
    return 0;
}

static int read_types(gguf_view *v, const vocab *vc, uint8_t **types) {
    *types = moef_alloc(v->f, (size_t)vc->n);
    if (!*types) return moe_fail(v->err, "out of memory");
    const gguf_kv *kv = tkey(v, "token_type");
    for (int64_t i = 0; i < vc->n; i++) (*types)[i] = TT_NORMAL;
    if (!kv) return 0;
    int int_elems = kv->type == GGUF_ARRAY && kv->elem_type != GGUF_STRING && kv->elem_type != GGUF_ARRAY &&
                    kv->elem_type != GGUF_F32 && kv->elem_type != GGUF_F64;
    if (!int_elems || kv->n != (uint64_t)vc->n)
        return fail(v, " does not match the tokens", "tokenizer.ggml.token_type");
    for (int64_t i = 0; i < vc->n; i++) {
        int64_t t = gguf_arr_int(kv, (uint64_t)i);
        if (t < 1 || t > 6)
            return moe_fail(v->err, "GGUF tokenizer.ggml.token_type[%lld] = %lld, expected 1..6", (long long)i, (long long)t);
        (*types)[i] = (uint8_t)t;
    }
    return 0;
}

/* tok.text (every token's bytes), tok.offsets, tok.types */
static int add_tables(gguf_view *v, const vocab *vc, const uint8_t *types, int spm) {
    uint64_t total = 0;
    for (int64_t i = 0; i < vc->n; i++) total += vc->len[i];
    if (total >= ((uint64_t)1 << 31)) return fail(v, " are too long", "tokenizer.ggml.tokens");
    uint8_t *text = moef_alloc(v->f, (size_t)total + 1);
    int32_t *off = moef_alloc(v->f, sizeof *off * (size_t)(vc->n + 1));
    if (!text || !off) return moe_fail(v->err, "out of memory");
    int64_t k = 0;
    for (int64_t i = 0; i < vc->n; i++) {
        off[i] = (int32_t)k;
        int64_t got = token_bytes(vc->str[i], vc->len[i], types[i], spm, text + k);
        if (got < 0)
            return moe_fail(v->err, "GGUF tokenizer: byte token %lld is \"%.*s\"", (long long)i,
                            (int)(vc->len[i] > 16 ? 16 : vc->len[i]), vc->str[i]);
        k += got;
    }
    off[vc->n] = (int32_t)k;
    uint64_t one = 1, n = (uint64_t)vc->n, n1 = n + 1, blob = k ? (uint64_t)k : one; /* a tensor cannot be empty */
    return view_tensor(v, "tok.text", DT_U8, 1, &blob, text) && view_tensor(v, "tok.offsets", DT_I32, 1, &n1, off) &&
                   view_tensor(v, "tok.types", DT_U8, 1, &n, types)
               ? 0
               : -1;
}

int gguf_view_tokenizer(gguf_view *v) {
    const gguf_kv *km = tkey(v, "model");
    if (!km) return 0;
    const char *model;
    uint64_t mlen;
    if (gguf_kv_str(km, &model, &mlen, v->err)) return -1;
    int spm = mlen == 5 && !memcmp(model, "llama", 5), bpe = mlen == 4 && !memcmp(model, "gpt2", 4);
    if (!spm && !bpe)
        return moe_fail(v->err, "GGUF tokenizer.ggml.model \"%.*s\" is not supported (llama or gpt2)",
                        (int)(mlen > 32 ? 32 : mlen), model);
    vocab vc = {.v = v};
    uint8_t *types;
    if (read_vocab(v, &vc) || read_types(v, &vc, &types)) return -1;
    int64_t bos, eos, unk, pad, eot, eom;
    if (token_id(v, "bos_token_id", vc.n, &bos) || token_id(v, "eos_token_id", vc.n, &eos) ||
        token_id(v, "unknown_token_id", vc.n, &unk) || token_id(v, "padding_token_id", vc.n, &pad) ||
        token_id(v, "eot_token_id", vc.n, &eot) || token_id(v, "eom_token_id", vc.n, &eom))
        return -1;
    /* the pre-tokenizer */
    const char *pre = NULL;
    const gguf_kv *kp = tkey(v, "pre");
    const char *praw = NULL;
    uint64_t plen = 0;
    if (kp) {
        if (gguf_kv_str(kp, &praw, &plen, v->err)) return -1;
        for (size_t i = 0; i < sizeof PRE_MAP / sizeof PRE_MAP[0] && !pre; i++)
            if (strlen(PRE_MAP[i][0]) == plen && !memcmp(PRE_MAP[i][0], praw, plen)) pre = PRE_MAP[i][1];
    }
    int add_bos, add_eos, space_prefix;
    if (flag(v, "add_bos_token", spm, &add_bos) || flag(v, "add_eos_token", 0, &add_eos) ||
        flag(v, "add_space_prefix", 1, &space_prefix))
        return -1;
    const gguf_kv *kt = view_key(v, "tokenizer.chat_template");
    const char *tmpl = NULL;
    uint64_t tlen = 0;
    if (kt && (gguf_kv_str(kt, &tmpl, &tlen, v->err) || !valid_utf8(tmpl, tlen)))
        return kt->type == GGUF_STRING ? fail(v, " is not UTF-8", "tokenizer.chat_template") : -1;
    if (spm) {
        if (pre && strcmp(pre, "default")) /* (an unknown name is ignored, as the Python converter does) */
            return moe_fail(v->err, "GGUF tokenizer: a SentencePiece vocabulary with pre-tokenizer \"%.*s\"",
                            (int)(plen > 32 ? 32 : plen), praw);
        pre = "default";
    } else if (!pre) {
        return moe_fail(v->err, "GGUF tokenizer.ggml.pre \"%.*s\" is not a pre-tokenizer moe knows (gpt-2, qwen2, "
                        "qwen35, llama-bpe, glm4, gpt-4o, deepseek-llm, deepseek-coder, deepseek-v3, olmo, falcon, mpt, "
                        "starcoder, refact)",
                        (int)(plen > 32 ? 32 : plen), praw ? praw : "");
    } else if (!strcmp(pre, "default")) {
        return fail(v, "a byte-level BPE vocabulary needs a pre-tokenizer, not 'default'", "");
    }
    for (int64_t i = 0; i < vc.n; i++)
        if (types[i] == TT_BYTE && byte_token(vc.str[i], vc.len[i]) < 0)
            return moe_fail(v->err, "GGUF tokenizer: byte token %lld is \"%.*s\"", (long long)i,
                            (int)(vc.len[i] > 16 ? 16 : vc.len[i]), vc.str[i]);
    if (add_tables(v, &vc, types, spm)) return -1;
    int nfc = 0, ignore_merges = 0;
    for (size_t i = 0; i < sizeof NFC_PRE / sizeof NFC_PRE[0]; i++) nfc |= !strcmp(pre, NFC_PRE[i]);
    for (size_t i = 0; i < sizeof IGNORE_MERGES_PRE / sizeof IGNORE_MERGES_PRE[0]; i++)
        ignore_merges |= strlen(IGNORE_MERGES_PRE[i]) == plen && !memcmp(IGNORE_MERGES_PRE[i], praw, plen);
    if (spm) {
        const gguf_kv *ks = tkey(v, "scores");
        float *sc = moef_alloc(v->f, sizeof *sc * (size_t)vc.n);
        if (!sc) return moe_fail(v->err, "out of memory");
        if (ks) {
            if (ks->type != GGUF_ARRAY || ks->n != (uint64_t)vc.n || ks->elem_type == GGUF_STRING ||
                ks->elem_type == GGUF_ARRAY)
                return fail(v, " does not match the tokens", "tokenizer.ggml.scores");
            for (int64_t i = 0; i < vc.n; i++) sc[i] = (float)gguf_arr_float(ks, (uint64_t)i);
        }
        uint64_t n = (uint64_t)vc.n;
        if (!view_tensor(v, "tok.scores", DT_F32, 1, &n, sc)) return -1;
    } else {
        int32_t *merges;
        uint64_t n_merges;
        if (build_merges(v, &vc, &merges, &n_merges)) return -1;
        uint64_t dims[2] = {n_merges, 3};
        if (n_merges && !view_tensor(v, "tok.merges", DT_I32, 2, dims, merges)) return -1;
    }
    /* end-of-sequence ids: eos, then end-of-turn and end-of-message, without repeats */
    int64_t ids[3];
    uint32_t n_ids = 0;
    int64_t cand[3] = {eos, eot, eom};
    for (int i = 0; i < 3; i++) {
        int seen = cand[i] < 0;
        for (uint32_t j = 0; j < n_ids && !seen; j++) seen = ids[j] == cand[i];
        if (!seen) ids[n_ids++] = cand[i];
    }
    const char *model_name = spm ? "spm" : "bpe", *norm = nfc ? "nfc" : "none";
    if (view_str(v, "tok.model", model_name, 3) || view_str(v, "tok.pre", pre, strlen(pre)) ||
        view_str(v, "tok.normalize", norm, strlen(norm)) || view_int(v, "tok.bos", bos) || view_int(v, "tok.eos", eos) ||
        view_int(v, "tok.unk", unk) || view_int(v, "tok.pad", pad) || (n_ids && view_ints(v, "tok.eos_ids", ids, n_ids)) ||
        view_int(v, "tok.add_bos", add_bos) || view_int(v, "tok.add_eos", add_eos) ||
        (spm && view_int(v, "tok.add_space_prefix", space_prefix)) ||
        (ignore_merges && view_int(v, "tok.ignore_merges", 1)) ||
        (tlen && view_str(v, "tok.chat_template", tmpl, tlen)))
        return -1;
    return 0;
}
