/* fuzz_tokenizer.c - fuzz target for the tokenizers (libFuzzer entry point,
 * plus a main() that runs deterministic random inputs when built without
 * libFuzzer, -DMOE_LIBFUZZER unset).
 *
 * Two modes (environment MOE_FUZZ_MODE):
 *   encode (default)  the input is text: byte 0 picks the tokenizer and the
 *                     flags, the rest is encoded; then the ids are checked
 *                     (in range), decoded raw and compared with the input
 *                     (the round trip, modulo what the tokenizer defines:
 *                     NFC, SentencePiece's U+2581 and dummy prefix, bytes a
 *                     vocabulary lacks), and streamed through the detokenizer
 *                     (bounded output, always NUL-terminated, valid UTF-8).
 *   load              the input is a .moe file: parse, tokenizer_load, and if
 *                     that succeeds encode and decode a fixed text.
 * Tokenizers: $MOE_FUZZ_TOK (one .moe file), else every *.moe in
 * $MOE_FUZZ_DIR (default $MOE_WORK/tok_c, as the unit test writes them).
 * Build and run: tests/fuzz/run.sh [SECONDS] fuzz_tokenizer fuzz_tokenizer_load. */
#include <dirent.h>

#include "tok_util.h"
#include "unicode.h"

#define MAX_TOKS 32

typedef struct {
    tu_tok t;
    int spm, nfc;
    int missing[256];   /* bytes without a token (bpe) */
    const uint8_t *types;
} fuzz_tok;

static fuzz_tok ftoks[MAX_TOKS];
static int n_ftoks = -1;
static int mode_load = 0;

static int kv_str_is(const moe_file *f, const char *key, const char *want) {
    const moe_kv *kv = moef_kv(f, key);
    return kv && kv->type == KV_STR && kv->len == strlen(want) && memcmp(kv->str, want, kv->len) == 0;
}

static void add_tok(const char *path) {
    if (n_ftoks >= MAX_TOKS) return;
    fuzz_tok *ft = &ftoks[n_ftoks];
    if (tu_load(&ft->t, path)) return;
    ft->spm = kv_str_is(&ft->t.file, "tok.model", "spm");
    ft->nfc = kv_str_is(&ft->t.file, "tok.normalize", "nfc");
    ft->types = moef_tensor(&ft->t.file, "tok.types")->data;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        moe_err err;
        int k = 0;
        int32_t *ids = tu_encode(ft->t.tok, &c, 1, 0, &k, &err);
        ft->missing[b] = !ft->spm && (!ids || k == 0);
        free(ids);
    }
    n_ftoks++;
}

static void init(void) {
    if (n_ftoks >= 0) return;
    n_ftoks = 0;
    const char *mode = getenv("MOE_FUZZ_MODE");
    mode_load = mode && !strcmp(mode, "load");
    if (mode_load) return;
    const char *one = getenv("MOE_FUZZ_TOK");
    if (one && *one) {
        add_tok(one);
    } else {
        char dir[4096];
        const char *d = getenv("MOE_FUZZ_DIR");
        if (d && *d) snprintf(dir, sizeof dir, "%s", d);
        else if (tu_path(dir, sizeof dir, tu_work(), "tok_c")) return;
        DIR *dp = opendir(dir);
        struct dirent *de;
        while (dp && (de = readdir(dp))) {
            size_t n = strlen(de->d_name);
            char path[8192];
            if (n > 4 && !strcmp(de->d_name + n - 4, ".moe") && !tu_path(path, sizeof path, dir, de->d_name))
                add_tok(path);
        }
        if (dp) closedir(dp);
    }
    if (n_ftoks == 0) {
        fprintf(stderr, "fuzz_tokenizer: no tokenizer (set MOE_FUZZ_TOK or MOE_FUZZ_DIR; run the unit test first)\n");
        abort();
    }
}

static int is_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int len;
        if (utf8_decode(s + i, n - i, &len) >= UNI_BAD_BASE) return 0;
        i += (size_t)len;
    }
    return 1;
}

#define FUZZ_ASSERT(c, what)                                     \
    do {                                                         \
        if (!(c)) {                                              \
            fprintf(stderr, "fuzz_tokenizer: %s\n", what);      \
            abort();                                             \
        }                                                        \
    } while (0)

static void check_detok(const fuzz_tok *ft, const int32_t *ids, int n) {
    moe_detok d;
    memset(&d, 0, sizeof d);
    d.prev = -1;
    char out[64];
    for (int i = 0; i < n; i++) {
        size_t cap = 1 + (size_t)(ids[i] % 63); /* small buffers too */
        size_t k = tokenizer_detok_push(ft->t.tok, &d, ids[i], out, cap);
        FUZZ_ASSERT(k < cap && out[k] == 0, "detok wrote past its buffer");
        FUZZ_ASSERT(is_utf8((const uint8_t *)out, k), "detok produced invalid UTF-8");
    }
    size_t k = tokenizer_detok_flush(&d, out, sizeof out);
    FUZZ_ASSERT(k < sizeof out && is_utf8((const uint8_t *)out, k), "detok flush");
}

static void fuzz_encode(const uint8_t *data, size_t size) {
    if (size == 0) return;
    const fuzz_tok *ft = &ftoks[data[0] % n_ftoks];
    int flags = (data[0] / MAX_TOKS) & 3;
    const uint8_t *text = data + 1;
    size_t n = size - 1;
    moe_err err;
    int k = 0;
    int32_t *ids = tu_encode(ft->t.tok, (const char *)text, n, flags, &k, &err);
    if (!ids) {
        /* the only refusal: text that is not UTF-8, with a byte the vocabulary lacks */
        FUZZ_ASSERT(!is_utf8(text, n) && strstr(err.msg, "has no token"), err.msg);
        return;
    }
    int nt = tokenizer_n_tokens(ft->t.tok), added = 0;
    for (int i = 0; i < k; i++) {
        FUZZ_ASSERT(ids[i] >= 0 && ids[i] < nt, "token id out of range");
        added |= ft->types[ids[i]] == 3 || ft->types[ids[i]] == 4;
    }
    check_detok(ft, ids, k);
    if (!(flags & MOE_TOK_SPECIAL) && !(ft->spm && added)) {
        size_t dl;
        char *dec = tu_decode_raw(ft->t.tok, ids, k, &dl, ft->spm);
        uint8_t *want = malloc(n + 1), *nb = NULL;
        size_t wl = 0, cap = 0;
        for (size_t i = 0; i < n; i++) {
            if (ft->spm && i + 2 < n && text[i] == 0xE2 && text[i + 1] == 0x96 && text[i + 2] == 0x81) {
                want[wl++] = ' ';
                i += 2;
            } else if (!ft->missing[text[i]]) {
                want[wl++] = text[i];
            }
        }
        const uint8_t *w = want;
        if (ft->nfc) {
            wl = uni_nfc(want, wl, &nb, &cap);
            w = nb;
        }
        int ok = dec && dl == wl && memcmp(dec, w, wl) == 0;
        if (!ok && ft->spm && dec && wl && w[0] == ' ' && dl + 1 == wl && memcmp(dec, w + 1, dl) == 0) ok = 1;
        free(dec);
        free(want);
        free(nb);
        FUZZ_ASSERT(ok, "decode(encode(text)) != text");
    }
    free(ids);
}

static void fuzz_load(const uint8_t *data, size_t size) {
    /* moef_parse keeps pointers into the buffer; give it an aligned copy */
    void *buf = NULL;
    if (posix_memalign(&buf, 64, size ? size : 1)) return;
    memcpy(buf, data, size);
    moe_file f;
    moe_err err;
    memset(&f, 0, sizeof f);
    if (moef_parse(&f, buf, size, &err) == 0) {
        moe_tokenizer *t = tokenizer_load(&f, 0, &err);
        if (t) {
            static const char text[] = "Hello world! <|im_start|>user\n caf\xC3\xA9 123 \xF0\x9F\xA6\x99 \xFF";
            int k = 0;
            int32_t *ids = tu_encode(t, text, sizeof text - 1, MOE_TOK_SPECIAL | MOE_TOK_ADD_BOS, &k, &err);
            for (int i = 0; ids && i < k; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < tokenizer_n_tokens(t), "load: id");
            moe_detok d;
            memset(&d, 0, sizeof d);
            d.prev = -1;
            char out[256];
            for (int i = 0; ids && i < k; i++) tokenizer_detok_push(t, &d, ids[i], out, sizeof out);
            free(ids);
            tokenizer_free(t);
        }
        moef_close(&f);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init();
    if (mode_load) fuzz_load(data, size);
    else fuzz_encode(data, size);
    return 0;
}

#ifndef MOE_LIBFUZZER
/* Without libFuzzer: run the files given as arguments, or N random inputs
 * built from text fragments and random bytes (deterministic). */
static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv) {
    init();
    if (argc > 1 && strcmp(argv[1], "-n") != 0) {
        for (int i = 1; i < argc; i++) {
            size_t n;
            char *d = tu_read(argv[i], &n);
            if (d) LLVMFuzzerTestOneInput((const uint8_t *)d, n);
            free(d);
        }
        return 0;
    }
    long runs = argc > 2 ? atol(argv[2]) : 20000;
    static const char *frag[] = {"Hello", " world", "'s", "'Re", " 123", "4567", "\n\n", " \t ", "½", "é", "e\xCC\x81",
                                 "\xE1\x84\x80\xE1\x85\xA1", "нещо", "我想", "🦙", "<|im_start|>", "<s>", "</s>",
                                 "\xE2\x96\x81", "!!", "...", "```", "\xC2\xA0", "\xE3\x80\x80"};
    uint8_t buf[1024];
    for (long r = 0; r < runs; r++) {
        size_t n = 0;
        buf[n++] = (uint8_t)next();
        size_t parts = next() % 40;
        for (size_t i = 0; i < parts; i++) {
            if (next() % 4 == 0) {
                size_t k = 1 + next() % 6;
                for (size_t j = 0; j < k && n < sizeof buf; j++) buf[n++] = (uint8_t)next();
            } else {
                const char *f = frag[next() % (sizeof frag / sizeof *frag)];
                size_t k = strlen(f);
                if (n + k > sizeof buf) break;
                memcpy(buf + n, f, k);
                n += k;
            }
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("fuzz_tokenizer: %ld random inputs over %d tokenizers, no failure\n", runs, n_ftoks);
    return 0;
}
#endif
