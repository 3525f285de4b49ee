/* tokenizer.c - text <-> token ids for the two tokenizer models of moe.
 *
 *   bpe  byte-level BPE (GPT-2 and its descendants): the text is cut into short
 *        pieces by the family's pre-tokenizer, then each piece's bytes are merged
 *        pairwise, lowest merge rank first.
 *   spm  SentencePiece-style BPE (Llama 2, Mixtral, llama2.c): a space is
 *        prepended, characters are merged pairwise, highest token score first;
 *        characters without a token fall back to <0xXX> byte tokens.
 *
 * Both start by cutting the text at added tokens (user-defined ones always,
 * control ones such as <|im_start|> only with MOE_TOK_SPECIAL), as llama.cpp
 * does, leftmost-longest as Hugging Face does.
 *
 * Pre-tokenizers (the Hugging Face regexes, written out by hand) live in
 * pretok.c; this file hands their pieces to BPE. Everything works on bytes:
 * tokens are stored as the bytes they decode to (docs/FORMAT.md), so there is
 * no byte-to-unicode table here.
 *
 * Memory: one workspace per encode call, grown geometrically (nothing is
 * allocated per token); the loaded tokenizer is read-only and can be shared by
 * threads. */
#include "tokenizer.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pretok.h"
#include "unicode.h"
#include "util.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };
enum { MODEL_BPE, MODEL_SPM };

/* A node of the added-token trie: children are a sibling list (the root's
 * children are indexed directly by byte). */
typedef struct {
    int32_t child, sibling;
    int32_t id_user, id_control; /* token ending here, -1 if none */
    uint8_t byte;
} trie_node;

struct moe_tokenizer {
    int model;            /* MODEL_BPE / MODEL_SPM */
    const pretok *pre;    /* tok.pre; NULL: none (spm) */
    int nfc;              /* tok.normalize = nfc */
    int n;                /* number of tokens */
    const uint8_t *text;  /* tok.text, in the mapped file */
    uint32_t *off;        /* [n + 1] token i is text[off[i] .. off[i+1]) (validated copy) */
    uint8_t *type;        /* [n] TT_* */
    float *score;         /* [n] spm merge scores; NULL for bpe */
    int32_t bos, eos, unk, pad;
    int add_bos, add_eos, space_prefix, ignore_merges;
    int32_t *eos_ids;     /* [n_eos_ids] */
    int n_eos_ids;
    size_t max_len;       /* longest token, bytes */

    /* text -> id of normal and user-defined tokens: open addressing, -1 = empty */
    int32_t *hash;
    uint32_t hash_mask;

    /* bpe: merges[rank] = (left, right, merged); (left, right) -> rank hash */
    int32_t *merges;
    int n_merges;
    int32_t *merge_hash;
    uint32_t merge_mask;

    /* bpe: the token of each single byte; spm: the <0xXX> byte tokens (-1: none) */
    int32_t byte_tok[256];
    int missing_bytes;    /* bpe: some byte has no token */
    int spm_words;        /* spm: no token has a space after another byte, so a
                             segment can be merged word by word (see spm_segment) */

    /* added tokens (control and user-defined), for cutting the text */
    int32_t root[256];
    trie_node *trie;
    int n_trie;
};

/* ================================================================ hashing */

static uint32_t hash_bytes(const uint8_t *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(int32_t a, int32_t b) {
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static uint32_t table_size(uint64_t n) {
    uint32_t size = 16;
    while (size < 2 * n && size < (1u << 30)) size *= 2;
    return size;
}

static inline const uint8_t *tok_text(const moe_tokenizer *t, int32_t id, size_t *len) {
    *len = t->off[id + 1] - t->off[id];
    return t->text + t->off[id];
}

/* id of the normal or user-defined token whose bytes are s[0..n), or -1 */
static int32_t lookup(const moe_tokenizer *t, const uint8_t *s, size_t n) {
    uint32_t i = hash_bytes(s, n) & t->hash_mask;
    for (;;) {
        int32_t id = t->hash[i];
        if (id < 0) return -1;
        size_t len;
        const uint8_t *p = tok_text(t, id, &len);
        if (len == n && memcmp(p, s, n) == 0) return id;
        i = (i + 1) & t->hash_mask;
    }
}

/* rank of the merge (a, b), or -1 */
static int32_t merge_rank(const moe_tokenizer *t, int32_t a, int32_t b) {
    if (!t->merge_hash) return -1; /* no merges at all */
    uint32_t i = hash_pair(a, b) & t->merge_mask;
    for (;;) {
        int32_t r = t->merge_hash[i];
        if (r < 0) return -1;
        if (t->merges[3 * r] == a && t->merges[3 * r + 1] == b) return r;
        i = (i + 1) & t->merge_mask;
    }
}

/* ================================================================ loading */

static const char *known_keys[] = {
    "tok.model", "tok.pre", "tok.normalize", "tok.bos", "tok.eos", "tok.unk", "tok.pad", "tok.eos_ids",
    "tok.add_bos", "tok.add_eos", "tok.add_space_prefix", "tok.ignore_merges", "tok.chat_template",
};

static int kv_is(const moe_kv *kv, const char *s) {
    size_t n = strlen(s);
    return kv->len == n && memcmp(kv->str, s, n) == 0;
}

/* An INT key in [lo, hi], or def when absent. */
static int get_int(const moe_file *f, const char *key, int64_t def, int64_t lo, int64_t hi, int64_t *out,
                   moe_err *err) {
    const moe_kv *kv = moef_kv(f, key);
    if (!kv) {
        *out = def;
        return 0;
    }
    if (kv->type != KV_INT) return moe_fail(err, "%s: expected an integer", key);
    if (kv->i < lo || kv->i > hi)
        return moe_fail(err, "%s = %lld, expected %lld..%lld", key, (long long)kv->i, (long long)lo, (long long)hi);
    *out = kv->i;
    return 0;
}

static const moe_tensor *get_tensor(const moe_file *f, const char *name, moe_dtype dt, int n_dims,
                                    uint64_t d0, uint64_t d1, moe_err *err) {
    moe_tensor *tt = moef_tensor(f, name);
    if (!tt) {
        moe_fail(err, "%s: missing", name);
        return NULL;
    }
    if (tt->dtype != dt || tt->n_dims != n_dims || (d0 && tt->dims[0] != d0) || (n_dims > 1 && tt->dims[1] != d1)) {
        char shape[96];
        shape_str(tt->dims, tt->n_dims, shape, sizeof shape);
        moe_fail(err, "%s: %s %s, expected %s with %d dimension(s)", name, dtype_name(tt->dtype), shape,
                 dtype_name(dt), n_dims);
        return NULL;
    }
    tt->used = 1;
    return tt;
}

static int trie_insert(moe_tokenizer *t, int32_t id, int *cap) {
    size_t len;
    const uint8_t *s = tok_text(t, id, &len);
    if (len == 0) return 0;
    if ((size_t)(*cap - t->n_trie) < len) { /* room for a whole new branch */
        if (len > (size_t)INT32_MAX / 4 || t->n_trie > INT32_MAX / 4) return -1;
        int nc = *cap ? *cap : 1024;
        while ((size_t)(nc - t->n_trie) < len) nc *= 2;
        trie_node *p = realloc(t->trie, (size_t)nc * sizeof *p);
        if (!p) return -1;
        t->trie = p;
        *cap = nc;
    }
    if (t->root[s[0]] < 0) {
        t->trie[t->n_trie] = (trie_node){-1, -1, -1, -1, s[0]};
        t->root[s[0]] = t->n_trie++;
    }
    int32_t node = t->root[s[0]];
    for (size_t i = 1; i < len; i++) {
        int32_t c = t->trie[node].child;
        while (c >= 0 && t->trie[c].byte != s[i]) c = t->trie[c].sibling;
        if (c < 0) {
            c = t->n_trie++;
            t->trie[c] = (trie_node){-1, t->trie[node].child, -1, -1, s[i]};
            t->trie[node].child = c;
        }
        node = c;
    }
    int32_t *slot = t->type[id] == TT_CONTROL ? &t->trie[node].id_control : &t->trie[node].id_user;
    if (*slot < 0) *slot = id;
    return 0;
}

void tokenizer_free(moe_tokenizer *t) {
    if (!t) return;
    free(t->off);
    free(t->type);
    free(t->score);
    free(t->eos_ids);
    free(t->hash);
    free(t->merges);
    free(t->merge_hash);
    free(t->trie);
    free(t);
}

static int load_keys(moe_tokenizer *t, const moe_file *f, moe_err *err) {
    /* every tok.* key must be one we know: a file is never half understood */
    for (int i = 0; i < f->n_kv; i++) {
        const moe_kv *kv = &f->kv[i];
        if (kv->key_len < 4 || memcmp(kv->key, "tok.", 4) != 0) continue;
        int known = 0;
        for (size_t k = 0; k < sizeof known_keys / sizeof *known_keys; k++)
            if ((size_t)kv->key_len == strlen(known_keys[k]) && memcmp(kv->key, known_keys[k], kv->key_len) == 0)
                known = 1;
        if (!known) return moe_fail(err, "unknown tokenizer key %.*s", kv->key_len, kv->key);
    }
    const moe_kv *kv = moef_kv(f, "tok.model");
    if (!kv || kv->type != KV_STR) return moe_fail(err, "tok.model: missing (a string: bpe or spm)");
    if (kv_is(kv, "bpe")) t->model = MODEL_BPE;
    else if (kv_is(kv, "spm")) t->model = MODEL_SPM;
    else return moe_fail(err, "tok.model = \"%.*s\": expected bpe or spm", (int)kv->len, kv->str);

    t->pre = NULL;
    kv = moef_kv(f, "tok.pre");
    if (kv) {
        if (kv->type != KV_STR) return moe_fail(err, "tok.pre: expected a string");
        if (pretok_find(kv->str, kv->len, &t->pre))
            return moe_fail(err, "tok.pre = \"%.*s\": unknown pre-tokenizer", (int)kv->len, kv->str);
    }
    if (t->model == MODEL_BPE && !t->pre)
        return moe_fail(err, "tok.pre: a bpe tokenizer needs its pre-tokenizer (gpt2, qwen2, llama3, ...)");
    if (t->model == MODEL_SPM && t->pre)
        return moe_fail(err, "tok.pre: an spm tokenizer takes no pre-tokenizer (default)");

    kv = moef_kv(f, "tok.normalize");
    if (kv) {
        if (kv->type != KV_STR) return moe_fail(err, "tok.normalize: expected a string");
        if (kv_is(kv, "nfc")) t->nfc = 1;
        else if (!kv_is(kv, "none"))
            return moe_fail(err, "tok.normalize = \"%.*s\": expected none or nfc", (int)kv->len, kv->str);
    }
    kv = moef_kv(f, "tok.chat_template");
    if (kv && kv->type != KV_STR) return moe_fail(err, "tok.chat_template: expected a string");

    int64_t v = 0;
    const char *ids[4] = {"tok.bos", "tok.eos", "tok.unk", "tok.pad"};
    int32_t *dst[4] = {&t->bos, &t->eos, &t->unk, &t->pad};
    for (int i = 0; i < 4; i++) {
        if (get_int(f, ids[i], -1, -1, t->n - 1, &v, err)) return -1;
        *dst[i] = (int32_t)v;
    }
    const char *flags[4] = {"tok.add_bos", "tok.add_eos", "tok.add_space_prefix", "tok.ignore_merges"};
    int *fdst[4] = {&t->add_bos, &t->add_eos, &t->space_prefix, &t->ignore_merges};
    int64_t fdef[4] = {0, 0, t->model == MODEL_SPM, 0};
    for (int i = 0; i < 4; i++) {
        if (get_int(f, flags[i], fdef[i], 0, 1, &v, err)) return -1;
        *fdst[i] = (int)v;
    }
    kv = moef_kv(f, "tok.eos_ids");
    if (kv) {
        if (kv->type != KV_INTS) return moe_fail(err, "tok.eos_ids: expected a list of integers");
        t->eos_ids = malloc((kv->len ? kv->len : 1) * sizeof *t->eos_ids);
        if (!t->eos_ids) return moe_fail(err, "out of memory");
        for (uint32_t i = 0; i < kv->len; i++) {
            int64_t e = moef_kv_int_at(kv, i);
            if (e < 0 || e >= t->n) return moe_fail(err, "tok.eos_ids[%u] = %lld: not a token id", i, (long long)e);
            t->eos_ids[i] = (int32_t)e;
        }
        t->n_eos_ids = (int)kv->len;
    } else if (t->eos >= 0) {
        t->eos_ids = malloc(sizeof *t->eos_ids);
        if (!t->eos_ids) return moe_fail(err, "out of memory");
        t->eos_ids[0] = t->eos;
        t->n_eos_ids = 1;
    }
    return 0;
}

static int load_vocab(moe_tokenizer *t, const moe_file *f, int vocab_size, moe_err *err) {
    const moe_tensor *types = moef_tensor(f, "tok.types");
    if (!types) return moe_fail(err, "tok.types: missing");
    if (types->n_dims != 1) return moe_fail(err, "tok.types: expected 1 dimension");
    uint64_t n = types->dims[0];
    if (n > (1u << 28)) return moe_fail(err, "tok.types: %llu tokens is too many", (unsigned long long)n);
    if (vocab_size > 0 && n > (uint64_t)vocab_size)
        return moe_fail(err, "the tokenizer has %llu tokens, more than model.vocab_size %d", (unsigned long long)n,
                        vocab_size);
    if (!get_tensor(f, "tok.types", DT_U8, 1, n, 0, err)) return -1;
    const moe_tensor *text = get_tensor(f, "tok.text", DT_U8, 1, 0, 0, err);
    const moe_tensor *offs = text ? get_tensor(f, "tok.offsets", DT_I32, 1, n + 1, 0, err) : NULL;
    if (!offs) return -1;
    t->n = (int)n;
    t->text = text->data;
    t->off = malloc((n + 1) * sizeof *t->off);
    t->type = malloc(n ? n : 1);
    if (!t->off || !t->type) return moe_fail(err, "out of memory");
    const uint8_t *od = offs->data;
    for (uint64_t i = 0; i <= n; i++) {
        int32_t o = (int32_t)rd_u32(od + 4 * i);
        if (o < 0 || (uint64_t)o > text->nbytes || (i > 0 && (uint32_t)o < t->off[i - 1]) || (i == 0 && o != 0))
            return moe_fail(err, "tok.offsets[%llu] = %d: offsets must start at 0, never decrease and stay within "
                            "tok.text (%llu bytes)", (unsigned long long)i, o, (unsigned long long)text->nbytes);
        t->off[i] = (uint32_t)o;
        if (i > 0 && t->off[i] - t->off[i - 1] > t->max_len) t->max_len = t->off[i] - t->off[i - 1];
    }
    memcpy(t->type, types->data, n);
    for (uint64_t i = 0; i < n; i++) {
        if (t->type[i] < TT_NORMAL || t->type[i] > TT_BYTE)
            return moe_fail(err, "tok.types[%llu] = %d: expected 1..6", (unsigned long long)i, t->type[i]);
        if (t->type[i] == TT_BYTE && t->off[i + 1] - t->off[i] != 1)
            return moe_fail(err, "token %llu is a byte token but holds %u bytes", (unsigned long long)i,
                            t->off[i + 1] - t->off[i]);
    }
    return 0;
}

static int build_tables(moe_tokenizer *t, moe_err *err) {
    /* text -> id (the first id wins when two tokens share their bytes) */
    uint32_t size = table_size((uint64_t)t->n);
    t->hash = malloc((size_t)size * sizeof *t->hash);
    if (!t->hash) return moe_fail(err, "out of memory");
    memset(t->hash, 0xff, (size_t)size * sizeof *t->hash);
    t->hash_mask = size - 1;
    for (int i = 0; i < 256; i++) t->byte_tok[i] = t->root[i] = -1;
    for (int32_t id = 0; id < t->n; id++) {
        size_t len;
        const uint8_t *s = tok_text(t, id, &len);
        int ty = t->type[id];
        if (ty == TT_BYTE) {
            if (t->model == MODEL_SPM && t->byte_tok[s[0]] < 0) t->byte_tok[s[0]] = id;
            continue;
        }
        if ((ty != TT_NORMAL && ty != TT_USER) || len == 0) continue;
        if (t->model == MODEL_BPE && len == 1 && t->byte_tok[s[0]] < 0) t->byte_tok[s[0]] = id;
        if (lookup(t, s, len) >= 0) continue;
        uint32_t i = hash_bytes(s, len) & t->hash_mask;
        while (t->hash[i] >= 0) i = (i + 1) & t->hash_mask;
        t->hash[i] = id;
    }
    if (t->model == MODEL_BPE)
        for (int i = 0; i < 256; i++) t->missing_bytes |= t->byte_tok[i] < 0;
    t->spm_words = 1;
    for (int32_t id = 0; id < t->n && t->model == MODEL_SPM; id++) {
        size_t len;
        const uint8_t *s = tok_text(t, id, &len);
        if (t->type[id] != TT_NORMAL && t->type[id] != TT_USER) continue;
        for (size_t i = 1; i < len; i++)
            if (s[i] == ' ' && s[i - 1] != ' ') t->spm_words = 0;
    }
    /* the added-token trie */
    int cap = 0;
    for (int32_t id = 0; id < t->n; id++)
        if ((t->type[id] == TT_CONTROL || t->type[id] == TT_USER) && trie_insert(t, id, &cap))
            return moe_fail(err, "out of memory");
    return 0;
}

/* A BPE without merges reaches no token made of two others (unless pieces
 * are taken whole, ignore_merges), so a vocabulary holding one has lost its
 * merges (a damaged file) and would silently split every word into bytes; a
 * merge-free one (a bytes-only vocabulary) is valid. */
static int check_merges_not_needed(const moe_tokenizer *t, moe_err *err) {
    for (int32_t id = 0; id < t->n && !t->ignore_merges; id++) {
        if (t->type[id] != TT_NORMAL) continue;
        size_t n;
        const uint8_t *s = tok_text(t, id, &n);
        for (size_t k = 1; k < n; k++)
            if (lookup(t, s, k) >= 0 && lookup(t, s + k, n - k) >= 0)
                return moe_fail(err, "tok.merges: missing, but token %d is two tokens joined (a bpe tokenizer "
                                "needs its merges)", id);
    }
    return 0;
}

static int load_merges(moe_tokenizer *t, const moe_file *f, moe_err *err) {
    moe_tensor *mt = moef_tensor(f, "tok.merges");
    if (!mt) return check_merges_not_needed(t, err);
    if (mt->dtype != DT_I32 || mt->n_dims != 2 || mt->dims[1] != 3)
        return moe_fail(err, "tok.merges: expected I32 [m, 3]");
    if (mt->dims[0] > INT32_MAX / 4) return moe_fail(err, "tok.merges: too many merges");
    mt->used = 1;
    int m = (int)mt->dims[0];
    t->merges = malloc((size_t)m * 3 * sizeof *t->merges);
    uint32_t size = table_size((uint64_t)m);
    t->merge_hash = malloc((size_t)size * sizeof *t->merge_hash);
    if (!t->merges || !t->merge_hash) return moe_fail(err, "out of memory");
    memset(t->merge_hash, 0xff, (size_t)size * sizeof *t->merge_hash);
    t->merge_mask = size - 1;
    const uint8_t *d = mt->data;
    for (int r = 0; r < m; r++) {
        int32_t a = (int32_t)rd_u32(d + 12 * (size_t)r), b = (int32_t)rd_u32(d + 12 * (size_t)r + 4),
                c = (int32_t)rd_u32(d + 12 * (size_t)r + 8);
        if (a < 0 || a >= t->n || b < 0 || b >= t->n || c < 0 || c >= t->n)
            return moe_fail(err, "tok.merges[%d] = (%d, %d, %d): not token ids", r, a, b, c);
        size_t la, lb, lc;
        const uint8_t *sa = tok_text(t, a, &la), *sb = tok_text(t, b, &lb), *sc = tok_text(t, c, &lc);
        /* BPE relies on a merged symbol covering exactly its two halves */
        if (la == 0 || lb == 0 || lc != la + lb || memcmp(sc, sa, la) != 0 || memcmp(sc + la, sb, lb) != 0)
            return moe_fail(err, "tok.merges[%d]: token %d is not token %d followed by token %d", r, c, a, b);
        t->merges[3 * r] = a;
        t->merges[3 * r + 1] = b;
        t->merges[3 * r + 2] = c;
        if (merge_rank(t, a, b) >= 0) continue; /* a repeated pair keeps its first rank */
        uint32_t i = hash_pair(a, b) & t->merge_mask;
        while (t->merge_hash[i] >= 0) i = (i + 1) & t->merge_mask;
        t->merge_hash[i] = r;
    }
    t->n_merges = m;
    return 0;
}

moe_tokenizer *tokenizer_load(const moe_file *f, int vocab_size, moe_err *err) {
    if (!f) {
        moe_fail(err, "tokenizer: no file");
        return NULL;
    }
    moe_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        moe_fail(err, "tokenizer: out of memory");
        return NULL;
    }
    int rc = load_vocab(t, f, vocab_size, err);
    if (!rc) rc = load_keys(t, f, err);
    if (!rc) rc = build_tables(t, err);
    if (!rc && t->model == MODEL_BPE) {
        if (moef_tensor(f, "tok.scores")) rc = moe_fail(err, "tok.scores: only an spm tokenizer has scores");
        else rc = load_merges(t, f, err);
    }
    if (!rc && t->model == MODEL_SPM) {
        if (moef_tensor(f, "tok.merges")) rc = moe_fail(err, "tok.merges: an spm tokenizer merges by score");
        const moe_tensor *sc = rc ? NULL : get_tensor(f, "tok.scores", DT_F32, 1, (uint64_t)t->n, 0, err);
        if (!sc) rc = -1;
        if (!rc && !(t->score = malloc((t->n ? (size_t)t->n : 1) * sizeof *t->score)))
            rc = moe_fail(err, "out of memory");
        for (int i = 0; !rc && i < t->n; i++) {
            uint32_t u = rd_u32((const uint8_t *)sc->data + 4 * (size_t)i);
            memcpy(&t->score[i], &u, 4);
            if (isnan(t->score[i])) rc = moe_fail(err, "tok.scores[%d] is NaN", i);
            if (t->score[i] == 0) t->score[i] = 0; /* -0 ranks with +0 */
        }
    }
    if (rc) {
        tokenizer_free(t);
        return NULL;
    }
    return t;
}

/* ================================================================ queries */

int tokenizer_n_tokens(const moe_tokenizer *t) { return t ? t->n : 0; }
int tokenizer_bos(const moe_tokenizer *t) { return t ? t->bos : -1; }
int tokenizer_eos(const moe_tokenizer *t) { return t ? t->eos : -1; }

const char *tokenizer_token(const moe_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n) return NULL;
    size_t n;
    const uint8_t *s = tok_text(t, id, &n);
    if (len) *len = n;
    return (const char *)s;
}

size_t tokenizer_max_token_len(const moe_tokenizer *t) { return t ? t->max_len : 0; }

int tokenizer_is_eos(const moe_tokenizer *t, int32_t id) {
    if (!t) return 0;
    for (int i = 0; i < t->n_eos_ids; i++)
        if (t->eos_ids[i] == id) return 1;
    return 0;
}

int tokenizer_is_control(const moe_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n && t->type[id] == TT_CONTROL;
}

/* ================================================================ encoding workspace */

enum { SYM_MERGE = 1, SYM_BYTE = 0, SYM_UNK = -1 };

typedef struct {
    int32_t id;
    uint32_t start, len; /* bytes of the piece this symbol covers; len 0: merged away */
    int32_t prev, next;  /* neighbours, -1 at the ends */
    int kind;            /* spm: SYM_MERGE, or SYM_BYTE / SYM_UNK (fallbacks, which never merge) */
} symbol;

typedef struct {
    uint64_t key;   /* (priority << 32) | left symbol: smallest first */
    int32_t a, b;   /* bpe: the ids the pair was made for; spm: right symbol, merged token */
    uint32_t size;  /* bpe: the merge rank; spm: the pair's bytes, to spot stale entries */
} pair;

typedef struct {
    const moe_tokenizer *t;
    int32_t *out;
    int cap, n;           /* ids written (n counts past cap too) */
    moe_err *err;

    uint8_t *buf;         /* the prepared segment (prefix space, NFC) */
    size_t buf_cap;
    const uint8_t *s;     /* the segment being pre-tokenized */
    uint32_t *cp, *pos;   /* its code points and their byte offsets (pos[ncp] = length) */
    uint8_t *fl;          /* their UNI_* flags */
    size_t ncp, cp_cap;

    symbol *sym;
    size_t sym_cap;
    pair *heap;
    size_t heap_n, heap_cap;
    int last_unk;         /* spm: the last symbol emitted was a fallback unknown */
} enc;

static int grow_array(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    if (c > SIZE_MAX / elem) return -1;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static void emit(enc *e, int32_t id) {
    if (e->n < e->cap) e->out[e->n] = id;
    e->n++;
}

/* ---------------------------------------------------------------- heap */

static inline int pair_before(const pair *a, const pair *b) { return a->key < b->key; }

/* SPM: higher scores first, as a 32-bit priority where smaller comes first */
static inline uint32_t score_priority(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending with f */
    return ~u;
}

static int heap_push(enc *e, pair p) {
    if (e->heap_n == e->heap_cap &&
        grow_array((void **)&e->heap, &e->heap_cap, e->heap_n + 1, sizeof *e->heap))
        return moe_fail(e->err, "tokenizer: out of memory");
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &e->heap[up])) break;
        e->heap[i] = e->heap[up];
        i = up;
    }
    e->heap[i] = p;
    return 0;
}

static pair heap_pop(enc *e) {
    pair top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&e->heap[c + 1], &e->heap[c])) c++;
        if (!pair_before(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

/* ================================================================ byte-level BPE */

static int bpe_add_pair(enc *e, int32_t left) {
    const symbol *l = &e->sym[left];
    if (l->next < 0) return 0;
    int32_t rank = merge_rank(e->t, l->id, e->sym[l->next].id);
    if (rank < 0) return 0;
    return heap_push(e, (pair){((uint64_t)(uint32_t)rank << 32) | (uint32_t)left, l->id, e->sym[l->next].id,
                               (uint32_t)rank});
}

/* Merge the bytes s[0..n) of one pre-tokenized piece and emit its ids. Bytes
 * the vocabulary has no token for are left out, as Hugging Face's BPE does
 * when there is no unknown token (emit_piece refuses them in invalid UTF-8). */
static int bpe_piece(enc *e, const uint8_t *s, size_t n) {
    const moe_tokenizer *t = e->t;
    if (n == 0) return 0;
    if (n == 1) {
        if (t->byte_tok[s[0]] >= 0) emit(e, t->byte_tok[s[0]]);
        return 0;
    }
    if (t->ignore_merges) { /* a piece that is a token is taken whole (HF ignore_merges) */
        int32_t id = lookup(t, s, n);
        if (id >= 0) {
            emit(e, id);
            return 0;
        }
    }
    if (grow_array((void **)&e->sym, &e->sym_cap, n, sizeof *e->sym))
        return moe_fail(e->err, "tokenizer: out of memory");
    symbol *sym = e->sym;
    int32_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (t->byte_tok[s[i]] < 0) continue;
        sym[m] = (symbol){t->byte_tok[s[i]], (uint32_t)i, 1, m - 1, -1, SYM_MERGE};
        if (m > 0) sym[m - 1].next = m;
        m++;
    }
    if (m == 0) return 0;
    n = (size_t)m;
    e->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (bpe_add_pair(e, (int32_t)i)) return -1;
    while (e->heap_n) {
        pair p = heap_pop(e);
        /* stale: the left symbol was merged into another, or either side changed */
        uint32_t left = (uint32_t)p.key;
        symbol *l = &sym[left];
        if (l->len == 0 || l->id != p.a || l->next < 0 || sym[l->next].id != p.b) continue;
        symbol *r = &sym[l->next];
        l->id = t->merges[3 * (size_t)p.size + 2];
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = (int32_t)left;
        if (l->prev >= 0 && bpe_add_pair(e, l->prev)) return -1;
        if (bpe_add_pair(e, (int32_t)left)) return -1;
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) emit(e, sym[i].id);
    return 0;
}

/* ================================================================ pieces to BPE */

static int bpe_bytes(void *e, const uint8_t *s, size_t n) { return bpe_piece(e, s, n); }

/* A final piece, code points [b, end): on to BPE. */
static int emit_piece(void *user, size_t b, size_t end) {
    enc *e = user;
    if (e->t->missing_bytes)
        for (size_t i = b; i < end; i++)
            if (e->cp[i] >= UNI_BAD_BASE && e->t->byte_tok[e->cp[i] - UNI_BAD_BASE] < 0)
                return moe_fail(e->err, "tokenizer: the text is not valid UTF-8 and byte 0x%02X has no token in this "
                                "vocabulary", e->cp[i] - UNI_BAD_BASE);
    const uint8_t *s = e->s + e->pos[b];
    size_t n = e->pos[end] - e->pos[b];
    return pretok_bytes(e->t->pre, s, n, bpe_bytes, e);
}

/* Decode the segment s[0..n) into code points, their byte offsets and classes. */
static int decode_segment(enc *e, const uint8_t *s, size_t n) {
    if (n + 1 > e->cp_cap) {
        size_t c = e->cp_cap ? e->cp_cap : 256;
        while (c < n + 1) c *= 2;
        uint32_t *cp = realloc(e->cp, c * sizeof *cp);
        if (cp) e->cp = cp;
        uint32_t *pos = realloc(e->pos, c * sizeof *pos);
        if (pos) e->pos = pos;
        uint8_t *fl = realloc(e->fl, c);
        if (fl) e->fl = fl;
        if (!cp || !pos || !fl) return -1;
        e->cp_cap = c;
    }
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        int len;
        uint32_t c = utf8_decode(s + i, n - i, &len);
        e->cp[m] = c;
        e->pos[m] = (uint32_t)i;
        e->fl[m] = (uint8_t)uni_flags(c);
        m++;
        i += (size_t)len;
    }
    e->pos[m] = (uint32_t)n;
    e->ncp = m;
    e->s = s;
    return 0;
}

/* ================================================================ SentencePiece BPE */

static int spm_add_pair(enc *e, const uint8_t *s, int32_t left) {
    const symbol *l = &e->sym[left];
    if (l->next < 0) return 0;
    const symbol *r = &e->sym[l->next];
    if (l->kind != SYM_MERGE || r->kind != SYM_MERGE) return 0;
    int32_t id = lookup(e->t, s + l->start, l->len + r->len);
    if (id < 0) return 0;
    uint64_t key = ((uint64_t)score_priority(e->t->score[id]) << 32) | (uint32_t)left;
    return heap_push(e, (pair){key, l->next, id, l->len + r->len});
}

/* Merge one run of text s[0..n) and emit its ids. */
static int spm_merge(enc *e, const uint8_t *s, size_t n) {
    const moe_tokenizer *t = e->t;
    if (grow_array((void **)&e->sym, &e->sym_cap, n, sizeof *e->sym)) return moe_fail(e->err, "tokenizer: out of memory");
    symbol *sym = e->sym;
    int32_t m = 0;
    /* one symbol per character; a character without a token becomes its byte
     * tokens (byte fallback) or the unknown token, neither of which merges */
    for (size_t i = 0; i < n;) {
        int len;
        utf8_decode(s + i, n - i, &len);
        int32_t id = lookup(t, s + i, (size_t)len);
        if (id >= 0) {
            sym[m] = (symbol){id, (uint32_t)i, (uint32_t)len, m - 1, -1, SYM_MERGE};
            m++;
        } else {
            for (int k = 0; k < len; k++) {
                int32_t b = t->byte_tok[s[i + k]];
                if (b < 0 && t->unk < 0)
                    return moe_fail(e->err, "tokenizer: no token for byte 0x%02X and no unknown token", s[i + k]);
                /* the unknown token stands for the whole character */
                sym[m] = (symbol){b >= 0 ? b : t->unk, (uint32_t)(i + k), b >= 0 ? 1 : (uint32_t)len, m - 1, -1,
                                  b >= 0 ? SYM_BYTE : SYM_UNK};
                m++;
                if (b < 0) break;
            }
        }
        i += (size_t)len;
    }
    for (int32_t i = 0; i + 1 < m; i++) sym[i].next = i + 1;
    e->heap_n = 0;
    for (int32_t i = 0; i + 1 < m; i++)
        if (spm_add_pair(e, s, i)) return -1;
    while (e->heap_n) {
        pair p = heap_pop(e);
        uint32_t left = (uint32_t)p.key;
        symbol *l = &sym[left];
        if (l->len == 0 || l->next != p.a || sym[p.a].len == 0 || l->len + sym[p.a].len != p.size) continue;
        symbol *r = &sym[p.a];
        l->id = p.b;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = (int32_t)left;
        if (l->prev >= 0 && spm_add_pair(e, s, l->prev)) return -1;
        if (spm_add_pair(e, s, (int32_t)left)) return -1;
    }
    for (int32_t i = 0; m > 0 && i >= 0; i = sym[i].next) {
        int is_unk = sym[i].kind == SYM_UNK;
        if (!(is_unk && e->last_unk)) emit(e, sym[i].id); /* consecutive unknowns fuse */
        e->last_unk = is_unk;
    }
    return 0;
}

/* Encode one segment s[0..n) (already prefixed, U+2581 read as a space).
 * SentencePiece merges the whole segment at once, best score first. When no
 * token holds a space after another byte (t->spm_words), no merge can cross
 * the point before a space that follows a non-space, and merges on either side
 * of it are independent: cutting the segment there gives the same tokens and
 * keeps each merge heap small. */
static int spm_segment(enc *e, const uint8_t *s, size_t n) {
    e->last_unk = 0;
    if (!e->t->spm_words) return spm_merge(e, s, n);
    size_t start = 0;
    for (size_t i = 1; i < n; i++) {
        if (s[i] == ' ' && s[i - 1] != ' ') {
            if (spm_merge(e, s + start, i - start)) return -1;
            start = i;
        }
    }
    return spm_merge(e, s + start, n - start);
}

/* ================================================================ segments */

static int ensure_buf(enc *e, size_t need) {
    if (grow_array((void **)&e->buf, &e->buf_cap, need, 1)) return moe_fail(e->err, "tokenizer: out of memory");
    return 0;
}

/* Text between added tokens. */
static int encode_segment(enc *e, const uint8_t *s, size_t n) {
    const moe_tokenizer *t = e->t;
    if (n == 0) return 0;
    if (t->model == MODEL_SPM) {
        /* the dummy prefix, and U+2581 (SentencePiece's space) read as a space */
        if (ensure_buf(e, n + 1)) return -1;
        size_t k = 0;
        if (t->space_prefix) e->buf[k++] = ' ';
        for (size_t i = 0; i < n; i++) {
            if (i + 2 < n && s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81) {
                e->buf[k++] = ' ';
                i += 2;
            } else {
                e->buf[k++] = s[i];
            }
        }
        return spm_segment(e, e->buf, k);
    }
    const uint8_t *seg = s;
    size_t len = n;
    if (t->nfc && !uni_nfc_quick(s, n)) {
        size_t m = uni_nfc(s, n, &e->buf, &e->buf_cap);
        if (m == (size_t)-1) return moe_fail(e->err, "tokenizer: out of memory");
        seg = e->buf;
        len = m;
    }
    if (t->space_prefix && seg[0] != ' ') { /* ByteLevel add_prefix_space */
        if (seg == e->buf) {
            if (ensure_buf(e, len + 1)) return -1;
            memmove(e->buf + 1, e->buf, len);
        } else {
            if (ensure_buf(e, len + 1)) return -1;
            memcpy(e->buf + 1, seg, len);
        }
        e->buf[0] = ' ';
        seg = e->buf;
        len++;
    }
    if (decode_segment(e, seg, len)) return moe_fail(e->err, "tokenizer: out of memory");
    pretok_text text = {.cp = e->cp, .fl = e->fl, .n = e->ncp};
    return pretok_split(t->pre, &text, emit_piece, e);
}

/* Longest added token at s[0..n) that may match (user-defined always, control
 * with MOE_TOK_SPECIAL); returns its length and sets *id, or 0. */
static size_t match_added(const moe_tokenizer *t, const uint8_t *s, size_t n, int special, int32_t *id) {
    int32_t node = t->root[s[0]];
    size_t best = 0;
    for (size_t i = 0; node >= 0;) {
        const trie_node *nd = &t->trie[node];
        int32_t hit = special && nd->id_control >= 0 ? nd->id_control : nd->id_user;
        if (hit >= 0) {
            best = i + 1;
            *id = hit;
        }
        if (++i >= n) break;
        int32_t c = nd->child;
        while (c >= 0 && t->trie[c].byte != s[i]) c = t->trie[c].sibling;
        node = c;
    }
    return best;
}

int tokenizer_encode(const moe_tokenizer *t, const char *text, size_t len, int flags, int32_t *out, int cap,
                     moe_err *err) {
    if (!t) return moe_fail(err, "this model file has no tokenizer (converted with --no-tokenizer): give token ids");
    if (!text && len) return moe_fail(err, "tokenizer: no text");
    if (cap < 0 || (cap > 0 && !out)) return moe_fail(err, "tokenizer: bad output buffer");
    if (len > (size_t)INT_MAX / 2 - 8) return moe_fail(err, "tokenizer: text of %zu bytes is too long", len);
    enc e = {0};
    e.t = t;
    e.out = out;
    e.cap = cap;
    e.err = err;
    int rc = 0;
    if ((flags & MOE_TOK_ADD_BOS) && t->add_bos && t->bos >= 0) emit(&e, t->bos);
    const uint8_t *s = (const uint8_t *)text;
    int special = (flags & MOE_TOK_SPECIAL) != 0;
    size_t seg = 0;
    for (size_t i = 0; i < len && !rc;) {
        int32_t id = -1;
        size_t m = t->root[s[i]] >= 0 ? match_added(t, s + i, len - i, special, &id) : 0;
        if (m) {
            rc = encode_segment(&e, s + seg, i - seg);
            emit(&e, id);
            i += m;
            seg = i;
        } else {
            i++;
        }
    }
    if (!rc) rc = encode_segment(&e, s + seg, len - seg);
    if (!rc && (flags & MOE_TOK_ADD_BOS) && t->add_eos && t->eos >= 0) emit(&e, t->eos);
    free(e.buf);
    free(e.cp);
    free(e.pos);
    free(e.fl);
    free(e.sym);
    free(e.heap);
    return rc ? -1 : e.n;
}

/* ================================================================ decoding */

static void put(char *out, size_t cap, size_t *w, const uint8_t *b, size_t n) {
    if (*w + n < cap) { /* always keep room for the NUL */
        memcpy(out + *w, b, n);
        *w += n;
    }
}

static const uint8_t replacement[3] = {0xEF, 0xBF, 0xBD}; /* U+FFFD */

/* Feed one byte through the UTF-8 assembler: complete characters are written,
 * an incomplete one is held in d->pending, and each maximal ill-formed
 * subsequence becomes one U+FFFD. */
static void feed(moe_detok *d, uint8_t b, char *out, size_t cap, size_t *w) {
    for (;;) {
        if (d->n_pending == 0) {
            int need = utf8_lead_len(b);
            if (need == 1) put(out, cap, w, &b, 1);
            else if (need == 0) put(out, cap, w, replacement, 3);
            else d->pending[d->n_pending++] = b;
            return;
        }
        uint8_t lead = d->pending[0];
        uint8_t lo = 0x80, hi = 0xBF;
        if (d->n_pending == 1) {
            if (lead == 0xE0) lo = 0xA0;
            else if (lead == 0xED) hi = 0x9F;
            else if (lead == 0xF0) lo = 0x90;
            else if (lead == 0xF4) hi = 0x8F;
        }
        if (b >= lo && b <= hi) {
            d->pending[d->n_pending++] = b;
            if (d->n_pending == utf8_lead_len(lead)) {
                put(out, cap, w, d->pending, (size_t)d->n_pending);
                d->n_pending = 0;
            }
            return;
        }
        put(out, cap, w, replacement, 3); /* the held bytes can never complete */
        d->n_pending = 0;                 /* and b starts afresh */
    }
}

static void detok_sanitize(moe_detok *d) {
    if (d->n_pending < 0 || d->n_pending > 3 || (d->n_pending > 0 && utf8_lead_len(d->pending[0]) < 2))
        d->n_pending = 0;
}

size_t tokenizer_detok_push(const moe_tokenizer *t, moe_detok *d, int32_t id, char *out, size_t cap) {
    size_t w = 0;
    if (cap) out[0] = 0;
    if (!t || !d || id < 0 || id >= t->n) return 0;
    detok_sanitize(d);
    int prev = d->prev;
    int ty = t->type[id];
    if (ty == TT_CONTROL || ty == TT_UNUSED) {
        if (prev >= 0) d->prev = id; /* prev stays -1 until something prints */
        return 0;
    }
    d->prev = id;
    size_t len;
    const uint8_t *s = ty == TT_UNKNOWN ? (len = 3, replacement) : tok_text(t, id, &len);
    /* SentencePiece's dummy prefix: the first text of the stream, and text right
     * after BOS, lose their leading space (HF's Strip decoder strips the start of
     * the decoded text; llama2.c strips after BOS). A caller streaming the
     * continuation of a prompt sets d->prev to the prompt's last token. */
    if (t->model == MODEL_SPM && t->space_prefix && ty != TT_UNKNOWN && len && s[0] == ' ' &&
        (prev < 0 || (prev == t->bos && t->bos >= 0))) {
        s++;
        len--;
    }
    for (size_t i = 0; i < len; i++) feed(d, s[i], out, cap, &w);
    if (cap) out[w] = 0;
    return w;
}

size_t tokenizer_detok_flush(moe_detok *d, char *out, size_t cap) {
    size_t w = 0;
    if (cap) out[0] = 0;
    if (!d) return 0;
    detok_sanitize(d);
    if (d->n_pending) put(out, cap, &w, replacement, 3);
    d->n_pending = 0;
    if (cap) out[w] = 0;
    return w;
}
