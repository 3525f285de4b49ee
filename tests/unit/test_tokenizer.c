/* test_tokenizer.c - the tokenizers against real vocabularies.
 *
 * Converts every ground-truth tokenizer under $MOE_SHARED with
 * tools/tokenizer_convert.py into $MOE_WORK/tok_c/ (skipped when up to date),
 * then checks:
 *   - Unicode tables: class counts over all of Unicode, NFC test vectors
 *   - every .inp/.out case of the nine GGUF vocabularies and the two published
 *     tokenizer.json files (no BOS/EOS, special tokens not parsed)
 *   - decode(encode(text)) == text for every case, and for every single token
 *     of every vocabulary (baichuan and gpt-neox included)
 *   - added-token recognition with and without MOE_TOK_SPECIAL
 *   - streaming detokenization of UTF-8 split across tokens
 *   - random and hostile inputs (invalid UTF-8, long runs): no crash, round trips
 *   - rejection of corrupted tokenizer data
 * and prints encode speed on 1 MB of kjv.txt (measured, not asserted).
 *
 * Helper mode for tests/py/test_tokenizer.py:
 *   test_tokenizer encode FILE.moe [special] [bos]   stdin text -> ids on stdout
 *   test_tokenizer batch FILE.moe [special] [bos]    stdin cases, each followed by
 *                                                    "\n__ggml_vocab_test__\n" -> a line of ids each
 *   test_tokenizer detok FILE.moe                    stdin ids -> streamed text */
#include <math.h>
#include <time.h>

#include "tok_util.h"
#include "tok_unicode_cases.h"
#include "unicode.h"

static int n_fail = 0, n_check = 0;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        n_check++;                                                    \
        if (!(cond)) {                                                \
            n_fail++;                                                 \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);      \
            fprintf(stderr, __VA_ARGS__);                             \
            fprintf(stderr, "\n");                                    \
        }                                                             \
    } while (0)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* a tiny deterministic generator (splitmix64) */
static uint64_t rng_state = 0x1234567;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- vocabularies */

typedef struct {
    const char *name;  /* file stem under $MOE_WORK/tok_c */
    const char *src;   /* relative to $MOE_SHARED */
    const char *inp;   /* cases, or NULL */
    const char *out;
    const char *extra; /* converter arguments */
    int spm;           /* SentencePiece-style: decoding drops the dummy prefix */
    int nfc;           /* round trips compare with the NFC of the text */
} vocab;

#define GG(n) "tokenizer-cases/ggml-vocab-" n ".gguf"
static const vocab vocabs[] = {
    {"llama-spm", GG("llama-spm"), GG("llama-spm") ".inp", GG("llama-spm") ".out", NULL, 1, 0},
    {"phi-3", GG("phi-3"), GG("phi-3") ".inp", GG("phi-3") ".out", NULL, 1, 0},
    {"gpt-2", GG("gpt-2"), GG("gpt-2") ".inp", GG("gpt-2") ".out", NULL, 0, 0},
    {"deepseek-llm", GG("deepseek-llm"), GG("deepseek-llm") ".inp", GG("deepseek-llm") ".out", NULL, 0, 0},
    {"deepseek-coder", GG("deepseek-coder"), GG("deepseek-coder") ".inp", GG("deepseek-coder") ".out", NULL, 0, 0},
    {"falcon", GG("falcon"), GG("falcon") ".inp", GG("falcon") ".out", NULL, 0, 0},
    {"mpt", GG("mpt"), GG("mpt") ".inp", GG("mpt") ".out", NULL, 0, 1},
    {"starcoder", GG("starcoder"), GG("starcoder") ".inp", GG("starcoder") ".out", NULL, 0, 0},
    {"refact", GG("refact"), GG("refact") ".inp", GG("refact") ".out", NULL, 0, 0},
    {"qwen3", "tokenizer-cases-hf/qwen3", "tokenizer-cases-hf/qwen3/cases.inp", "tokenizer-cases-hf/qwen3/cases.out",
     NULL, 0, 1},
    {"deepseek-v3", "tokenizer-cases-hf/deepseek_v3", "tokenizer-cases-hf/deepseek_v3/cases.inp",
     "tokenizer-cases-hf/deepseek_v3/cases.out", NULL, 0, 0},
    {"gpt-oss", "tokenizer-cases-hf/gpt_oss", "tokenizer-cases-hf/gpt_oss/cases.inp", "tokenizer-cases-hf/gpt_oss/cases.out",
     NULL, 0, 0},
    {"baichuan", GG("baichuan"), NULL, NULL, NULL, 1, 0},
    {"gpt-neox", GG("gpt-neox"), NULL, NULL, "--pre gpt_neox", 0, 1},
    {"stories260k", "models/stories260K/tok512.bin", NULL, NULL, NULL, 1, 0},
    {"golden-qwen3", "golden/qwen3_moe", NULL, NULL, NULL, 0, 0},
};
#define N_VOCABS ((int)(sizeof vocabs / sizeof *vocabs))

static tu_tok toks[N_VOCABS];
static int loaded[N_VOCABS];

static const moe_tokenizer *get_tok(const char *name) {
    for (int i = 0; i < N_VOCABS; i++)
        if (loaded[i] && !strcmp(vocabs[i].name, name)) return toks[i].tok;
    return NULL;
}

static int prepare(void) {
    char dir[2048], src[4096], out[4096];
    if (tu_path(dir, sizeof dir, tu_work(), "tok_c")) return -1;
    if (tu_mkdirs(dir)) {
        fprintf(stderr, "cannot create %s\n", dir);
        return -1;
    }
    int ok = 0;
    for (int i = 0; i < N_VOCABS; i++) {
        char stem[256];
        snprintf(stem, sizeof stem, "%s.moe", vocabs[i].name);
        if (tu_path(src, sizeof src, tu_shared(), vocabs[i].src) || tu_path(out, sizeof out, dir, stem)) return -1;
        if (tu_convert(src, out, vocabs[i].extra)) {
            CHECK(0, "converting %s failed", src);
            continue;
        }
        if (tu_load(&toks[i], out)) {
            CHECK(0, "loading %s failed", out);
            continue;
        }
        loaded[i] = 1;
        ok++;
    }
    return ok;
}

/* ---------------------------------------------------------------- Unicode */

static void test_unicode(void) {
    long counts[8] = {0}, ccc_sum = 0;
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        unsigned f = uni_flags(cp);
        for (int b = 0; b < 8; b++) counts[b] += f >> b & 1;
        ccc_sum += uni_ccc(cp);
        if (cp < 128) { /* the ASCII fast path agrees with the run table */
            unsigned want = 0;
            for (int i = 0; i < uni_class_count && (uni_class_runs[i] >> 8) <= cp; i++) want = uni_class_runs[i] & 0xFF;
            CHECK(f == want, "ASCII class of %u: %u, table %u", cp, f, want);
        }
        if (cp < 0xD800 || cp > 0xDFFF) {
            uint8_t b[4];
            int n = utf8_encode(cp, b), len;
            uint32_t back = utf8_decode(b, (size_t)n, &len);
            if (back != cp || len != n) CHECK(0, "utf8 round trip of U+%04X", cp);
        }
    }
    for (int b = 0; b < 8; b++)
        CHECK(counts[b] == uni_flag_counts[b], "class bit %d: %ld code points, expected %ld", b, counts[b],
              uni_flag_counts[b]);
    CHECK(ccc_sum == uni_ccc_sum, "ccc sum %ld, expected %ld", ccc_sum, uni_ccc_sum);
    /* ill-formed UTF-8 decodes byte by byte */
    static const char *bad[] = {"\x80", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xF5",
                                "\xE2\x82", "\xF0\x9F\x98"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int len;
        uint32_t c = utf8_decode((const uint8_t *)bad[i], strlen(bad[i]), &len);
        CHECK(c == UNI_BAD_BASE + (uint8_t)bad[i][0] && len == 1, "ill-formed %zu", i);
    }
    /* NFC vectors */
    uint8_t *buf = NULL;
    size_t cap = 0, nfc_fail = 0, n = sizeof uni_nfc_cases / sizeof *uni_nfc_cases;
    for (size_t i = 0; i < n; i++) {
        const char *in = uni_nfc_cases[i].in, *want = uni_nfc_cases[i].nfc;
        size_t m = uni_nfc((const uint8_t *)in, strlen(in), &buf, &cap);
        if (m != strlen(want) || memcmp(buf, want, m) != 0) {
            if (nfc_fail++ < 5) CHECK(0, "NFC case %zu", i);
        }
    }
    CHECK(nfc_fail == 0, "%zu of %zu NFC cases wrong", nfc_fail, n);
    /* NFC of invalid bytes passes them through; a long run of marks stays linear */
    size_t m = uni_nfc((const uint8_t *)"a\xCC\x81\xFF\xCC\x81", 6, &buf, &cap);
    CHECK(m == 5 && memcmp(buf, "\xC3\xA1\xFF\xCC\x81", 5) == 0, "NFC with an invalid byte");
    size_t big = 1 << 20;
    uint8_t *marks = malloc(big);
    for (size_t i = 0; i + 1 < big; i += 2) {
        marks[i] = 0xCC;
        marks[i + 1] = (i / 2) % 2 ? 0x81 : 0x96; /* U+0301 (230) and U+0316 (220) alternating */
    }
    double t0 = now();
    m = uni_nfc(marks, big, &buf, &cap);
    double dt = now() - t0;
    CHECK(m == big, "NFC of 1 MB of combining marks");
    printf("  NFC of 1 MB of alternating combining marks: %.3f s\n", dt);
    free(marks);
    free(buf);
    printf("unicode: Unicode %s, %zu NFC cases\n", uni_data_version, n);
}

/* ---------------------------------------------------------------- cases */

static char *next_case(char **p, char *end, size_t *len) {
    static const char sep[] = "\n__ggml_vocab_test__\n";
    if (*p >= end) return NULL;
    char *s = *p;
    char *hit = NULL;
    for (char *q = s; q + sizeof sep - 1 <= end; q++)
        if (memcmp(q, sep, sizeof sep - 1) == 0) {
            hit = q;
            break;
        }
    if (!hit) { /* a trailing case without a separator */
        *len = (size_t)(end - s);
        *p = end;
        return s;
    }
    *len = (size_t)(hit - s);
    *p = hit + sizeof sep - 1;
    return s;
}

static int round_trip_ok(const vocab *v, const moe_tokenizer *tok, const char *text, size_t len, const int32_t *ids,
                         int n) {
    size_t dlen;
    char *dec = tu_decode_raw(tok, ids, n, &dlen, v->spm);
    const char *want = text;
    size_t wlen = len;
    uint8_t *buf = NULL;
    size_t cap = 0;
    if (v->nfc) {
        wlen = uni_nfc((const uint8_t *)text, len, &buf, &cap);
        want = (const char *)buf;
    }
    int ok = dec && dlen == wlen && memcmp(dec, want, wlen) == 0;
    free(dec);
    free(buf);
    return ok;
}

static void test_cases(void) {
    for (int vi = 0; vi < N_VOCABS; vi++) {
        const vocab *v = &vocabs[vi];
        if (!v->inp) continue;
        if (!loaded[vi]) {
            CHECK(0, "%s not loaded", v->name);
            continue;
        }
        char path[8192];
        size_t inp_len, out_len;
        char *inp = tu_path(path, sizeof path, tu_shared(), v->inp) ? NULL : tu_read(path, &inp_len);
        char *outf = tu_path(path, sizeof path, tu_shared(), v->out) ? NULL : tu_read(path, &out_len);
        if (!inp || !outf) {
            CHECK(0, "%s: cannot read the cases", v->name);
            free(inp);
            free(outf);
            continue;
        }
        char *p = inp, *line = outf;
        int n_cases = 0, n_pass = 0, n_rt = 0;
        size_t clen;
        char *text;
        while ((text = next_case(&p, inp + inp_len, &clen)) && line < outf + out_len) {
            char *eol = strchr(line, '\n');
            if (!eol) eol = outf + out_len;
            int32_t want[4096];
            int nw = 0;
            *eol = 0; /* strtol must not skip past the end of the line */
            for (char *q = line; q < eol && nw < 4096;) {
                char *e;
                long id = strtol(q, &e, 10);
                if (e == q) break;
                want[nw++] = (int32_t)id;
                q = e;
            }
            line = eol + 1;
            moe_err err = {{0}};
            int n = 0;
            int32_t *ids = tu_encode(toks[vi].tok, text, clen, 0, &n, &err);
            n_cases++;
            int same = ids && n == nw && (n == 0 || memcmp(ids, want, (size_t)n * sizeof *ids) == 0);
            if (same) {
                n_pass++;
            } else {
                fprintf(stderr, "  %s case %d [%.*s]%s\n    want:", v->name, n_cases, (int)(clen > 40 ? 40 : clen), text,
                        clen > 40 ? "..." : "");
                for (int i = 0; i < nw; i++) fprintf(stderr, " %d", want[i]);
                fprintf(stderr, "\n    got: ");
                for (int i = 0; ids && i < n; i++) fprintf(stderr, " %d", ids[i]);
                fprintf(stderr, "%s\n", ids ? "" : err.msg);
            }
            if (ids && round_trip_ok(v, toks[vi].tok, text, clen, ids, n)) n_rt++;
            free(ids);
        }
        CHECK(n_cases == 46 && n_pass == n_cases, "%s: %d/%d cases", v->name, n_pass, n_cases);
        CHECK(n_rt == n_cases, "%s: %d/%d case round trips", v->name, n_rt, n_cases);
        printf("cases %-15s %2d/%2d exact, %2d/%2d round trips\n", v->name, n_pass, n_cases, n_rt, n_cases);
        free(inp);
        free(outf);
    }
}

/* Every token's text, encoded and decoded, comes back (llama.cpp's
 * test-tokenizer-1): control tokens excepted, and for NFC tokenizers the
 * tokens whose text NFC changes. */
static void test_token_round_trips(void) {
    for (int vi = 0; vi < N_VOCABS; vi++) {
        if (!loaded[vi]) continue;
        const vocab *v = &vocabs[vi];
        const moe_tokenizer *tok = toks[vi].tok;
        int n = tokenizer_n_tokens(tok), bad = 0, tried = 0;
        double t0 = now();
        for (int32_t id = 0; id < n; id++) {
            size_t len;
            const char *s = tokenizer_token(tok, id, &len);
            if (tokenizer_is_control(tok, id) || len == 0) continue;
            /* an SPM token that starts with a space decodes without it at the start */
            const char *text = s;
            size_t tlen = len;
            moe_err err = {{0}};
            int k = 0;
            int32_t *ids = tu_encode(tok, text, tlen, 0, &k, &err);
            tried++;
            if (!ids) {
                /* the only acceptable refusal: bytes that are not UTF-8 in a
                 * byte-level vocabulary that lacks their byte tokens */
                if (!strstr(err.msg, "has no token")) {
                    if (bad++ < 5) CHECK(0, "%s: token %d: %s", v->name, id, err.msg);
                } else {
                    tried--;
                }
                continue;
            }
            if (!round_trip_ok(v, tok, text, tlen, ids, k)) {
                /* SPM: the dummy prefix makes " x" round-trip only as " x" with the
                 * prefix stripped once; check that explicitly */
                if (bad++ < 5) CHECK(0, "%s: token %d does not round-trip", v->name, id);
            }
            free(ids);
        }
        CHECK(bad == 0, "%s: %d of %d tokens do not round-trip", v->name, bad, tried);
        printf("tokens %-15s %6d/%6d round trips (%.2f s)\n", v->name, tried - bad, tried, now() - t0);
    }
}

/* ---------------------------------------------------------------- special tokens */

static int encode_eq(const moe_tokenizer *tok, const char *text, int flags, const int32_t *want, int nw) {
    moe_err err = {{0}};
    int n = 0;
    int32_t *ids = tu_encode(tok, text, strlen(text), flags, &n, &err);
    int ok = ids && n == nw && memcmp(ids, want, (size_t)n * sizeof *ids) == 0;
    if (!ok) {
        fprintf(stderr, "  encode(%s, flags %d):", text, flags);
        for (int i = 0; ids && i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    free(ids);
    return ok;
}

static int contains(const moe_tokenizer *tok, const char *text, int flags, int32_t id) {
    moe_err err = {{0}};
    int n, hit = 0;
    int32_t *ids = tu_encode(tok, text, strlen(text), flags, &n, &err);
    for (int i = 0; ids && i < n; i++) hit |= ids[i] == id;
    free(ids);
    return hit;
}

static void test_special(void) {
    const moe_tokenizer *q = get_tok("qwen3");
    if (q) {
        /* <|im_start|> (151644) and <|im_end|> (151645) are control tokens */
        const char *chat = "<|im_start|>user\nHello<|im_end|>";
        CHECK(contains(q, chat, MOE_TOK_SPECIAL, 151644) && contains(q, chat, MOE_TOK_SPECIAL, 151645),
              "qwen3: <|im_start|> recognised with MOE_TOK_SPECIAL");
        CHECK(!contains(q, chat, 0, 151644) && !contains(q, chat, 0, 151645),
              "qwen3: <|im_start|> is plain text without MOE_TOK_SPECIAL");
        int32_t want[] = {151644, 872, 198, 9707, 151645};
        CHECK(encode_eq(q, chat, MOE_TOK_SPECIAL, want, 5), "qwen3 chat turn");
        /* <think> (151667) is added but not special: user-defined, always recognised */
        CHECK(contains(q, "a<think>b", 0, 151667) && contains(q, "a<think>b", MOE_TOK_SPECIAL, 151667),
              "qwen3: user-defined <think> always recognised");
        /* no BOS for Qwen even when asked */
        int32_t hello[] = {9707};
        CHECK(encode_eq(q, "Hello", MOE_TOK_ADD_BOS, hello, 1), "qwen3: no BOS");
        CHECK(tokenizer_is_eos(q, 151645), "qwen3: <|im_end|> ends generation");
    }
    const moe_tokenizer *l = get_tok("llama-spm");
    if (l) {
        int32_t want[] = {1, 15043}; /* <s> Hello */
        CHECK(encode_eq(l, "Hello", MOE_TOK_ADD_BOS, want, 2), "llama: BOS added");
        /* with MOE_TOK_SPECIAL, </s> and <s> are tokens, and each text segment gets
         * the dummy prefix (HF's per-segment Prepend normalizer, llama.cpp) */
        int32_t want2[] = {1, 15043, 2, 1, 15043};
        CHECK(encode_eq(l, "Hello</s><s>Hello", MOE_TOK_SPECIAL | MOE_TOK_ADD_BOS, want2, 5),
              "llama: </s><s> recognised with MOE_TOK_SPECIAL");
        CHECK(!contains(l, "Hello</s>", 0, 2), "llama: </s> is text without MOE_TOK_SPECIAL");
    }
    const moe_tokenizer *d = get_tok("deepseek-v3");
    if (d) {
        CHECK(contains(d, "<｜begin▁of▁sentence｜>x", MOE_TOK_SPECIAL, 0), "deepseek-v3: BOS text");
        int32_t want[] = {0, 19923}; /* BOS + "Hello" */
        CHECK(encode_eq(d, "Hello", MOE_TOK_ADD_BOS, want, 2), "deepseek-v3: BOS added");
    }
}

/* ---------------------------------------------------------------- streaming */

static void test_detok(void) {
    const moe_tokenizer *l = get_tok("llama-spm");
    if (!l) return;
    char out[256];
    moe_detok d;
    memset(&d, 0, sizeof d);
    d.prev = -1;
    /* 🦙 = F0 9F A6 99 comes as four byte tokens: nothing until the last */
    const int32_t llama[] = {29871, 243, 162, 169, 156}; /* "▁" then <0xF0> <0x9F> <0xA6> <0x99> */
    size_t n = tokenizer_detok_push(l, &d, llama[0], out, sizeof out);
    CHECK(n == 0, "the dummy-prefix space of the first token is dropped");
    for (int i = 1; i < 4; i++) {
        n = tokenizer_detok_push(l, &d, llama[i], out, sizeof out);
        CHECK(n == 0 && out[0] == 0, "partial UTF-8 held back (%d)", i);
    }
    n = tokenizer_detok_push(l, &d, llama[4], out, sizeof out);
    CHECK(n == 4 && memcmp(out, "\xF0\x9F\xA6\x99", 4) == 0, "the whole character at once");
    /* BOS is not printed, and the next token loses its leading space */
    memset(&d, 0, sizeof d);
    d.prev = -1;
    n = tokenizer_detok_push(l, &d, 1, out, sizeof out);
    CHECK(n == 0, "BOS prints nothing");
    n = tokenizer_detok_push(l, &d, 15043, out, sizeof out); /* "▁Hello" */
    CHECK(n == 5 && !strcmp(out, "Hello"), "leading space stripped after BOS: [%s]", out);
    n = tokenizer_detok_push(l, &d, 3186, out, sizeof out); /* "▁world" */
    CHECK(n == 6 && !strcmp(out, " world"), "later spaces kept: [%s]", out);
    n = tokenizer_detok_push(l, &d, 2, out, sizeof out); /* </s>: not printed, and no strip after it */
    n += tokenizer_detok_push(l, &d, 3186, out, sizeof out);
    CHECK(n == 6 && !strcmp(out, " world"), "no strip after a control token other than BOS: [%s]", out);
    n = tokenizer_detok_push(l, &d, 1, out, sizeof out); /* BOS mid-stream (llama2.c) */
    n += tokenizer_detok_push(l, &d, 3186, out, sizeof out);
    CHECK(n == 5 && !strcmp(out, "world"), "strip after BOS: [%s]", out);
    /* the continuation of a prompt keeps its space when prev is set */
    moe_detok c2 = {0};
    c2.prev = 15043;
    n = tokenizer_detok_push(l, &c2, 3186, out, sizeof out);
    CHECK(n == 6 && !strcmp(out, " world"), "continuation: [%s]", out);
    /* an incomplete sequence followed by another lead byte: one U+FFFD, then the
     * new character; a dangling lead at the end is flushed as U+FFFD */
    n = tokenizer_detok_push(l, &d, 3 + 0xE4, out, sizeof out);
    n = tokenizer_detok_push(l, &d, 3 + 0xC3, out, sizeof out);
    CHECK(n == 3 && !memcmp(out, "\xEF\xBF\xBD", 3), "broken sequence -> U+FFFD");
    n = tokenizer_detok_push(l, &d, 3 + 0xA9, out, sizeof out);
    CHECK(n == 2 && !memcmp(out, "\xC3\xA9", 2), "é after the broken one");
    n = tokenizer_detok_push(l, &d, 3 + 0xF0, out, sizeof out);
    CHECK(n == 0, "lead byte held");
    n = tokenizer_detok_flush(&d, out, sizeof out);
    CHECK(n == 3 && !memcmp(out, "\xEF\xBF\xBD", 3), "flush -> U+FFFD");
    CHECK(tokenizer_detok_flush(&d, out, sizeof out) == 0, "flush empties");
    /* a stray continuation byte and an out-of-range id */
    n = tokenizer_detok_push(l, &d, 3 + 0x80, out, sizeof out);
    CHECK(n == 3, "stray continuation -> U+FFFD");
    CHECK(tokenizer_detok_push(l, &d, -5, out, sizeof out) == 0 && tokenizer_detok_push(l, &d, 1 << 30, out, 8) == 0,
          "bad ids print nothing");
    /* a small buffer never overflows */
    memset(&d, 0, sizeof d);
    d.prev = 15043;
    n = tokenizer_detok_push(l, &d, 15043, out, 3);
    CHECK(n < 3 && out[n] == 0, "small buffer");

    /* byte-level: "é" split into two tokens in GPT-2 (Ã and ©) */
    const moe_tokenizer *g = get_tok("gpt-2");
    if (g) {
        moe_err err = {{0}};
        int k = 0;
        int32_t *ids = tu_encode(g, "\xF0\x9F\xA6\x99!", 5, 0, &k, &err); /* 🦙! */
        memset(&d, 0, sizeof d);
        d.prev = -1;
        char all[64] = "";
        int outputs = 0;
        for (int i = 0; ids && i < k; i++) {
            n = tokenizer_detok_push(g, &d, ids[i], out, sizeof out);
            if (n) outputs++;
            strcat(all, out);
        }
        CHECK(k >= 3 && !strcmp(all, "\xF0\x9F\xA6\x99!"), "gpt-2 llama emoji across %d tokens", k);
        free(ids);
    }
}

/* ---------------------------------------------------------------- fuzzing */

/* random text from pieces that exercise every pre-tokenizer rule, with some raw
 * random bytes; *tags is set when an added-token spelling went in */
static size_t random_text(uint8_t *buf, size_t cap, int *tags) {
    static const char *pieces[] = {" ", "  ", "\n", "\r\n", "\t", "a", "Hello", " world", "'s", "'LL", "123",
                                   "4567", "½", "²", "é", "e\xCC\x81", "Ω", "Ω", "ü", "Füh", "нещо", "我想", "天～",
                                   "カタ", "한국어", "ក", "ា", "🦙", "😶\u200d🌫️", "!!", "...", "<|im_start|>",
                                   "<s>", "</s>", "<think>", "\u2581", "\xC2\xA0", "\u3000", "ſ", "K", "\xEF\xBF\xBD",
                                   "$", "+=", "``", "``", "\xE2\x80\x99", "ΐ", "\xE1\xBF\x93"};
    size_t n = 0;
    size_t parts = rnd() % 24;
    *tags = 0;
    for (size_t i = 0; i < parts; i++) {
        if (rnd() % 8 == 0) { /* raw random bytes */
            size_t k = 1 + rnd() % 4;
            for (size_t j = 0; j < k && n < cap; j++) buf[n++] = (uint8_t)rnd();
        } else {
            const char *p = pieces[rnd() % (sizeof pieces / sizeof *pieces)];
            size_t k = strlen(p);
            if (p[0] == '<') *tags = 1;
            if (n + k > cap) break;
            memcpy(buf + n, p, k);
            n += k;
        }
    }
    return n;
}

static int is_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int len;
        if (utf8_decode(s + i, n - i, &len) >= UNI_BAD_BASE) return 0;
        i += (size_t)len;
    }
    return 1;
}

static void test_fuzz(void) {
    uint8_t buf[512];
    for (int vi = 0; vi < N_VOCABS; vi++) {
        if (!loaded[vi]) continue;
        const vocab *v = &vocabs[vi];
        const moe_tokenizer *tok = toks[vi].tok;
        /* bytes the vocabulary has no token for: dropped in UTF-8 text (as HF's
         * BPE does), refused in text that is not UTF-8 */
        int missing[256];
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            moe_err err = {{0}};
            int k = 0;
            int32_t *ids = tu_encode(tok, &c, 1, 0, &k, &err);
            missing[b] = !v->spm && (!ids || k == 0);
            free(ids);
        }
        int bad = 0, refused = 0, runs = 3000;
        for (int r = 0; r < runs; r++) {
            int tags;
            size_t n = random_text(buf, sizeof buf, &tags);
            int flags = (int)(rnd() % 4);
            moe_err err = {{0}};
            int k = 0;
            int32_t *ids = tu_encode(tok, (const char *)buf, n, flags, &k, &err);
            if (!ids) {
                if (is_utf8(buf, n) || !strstr(err.msg, "has no token")) {
                    if (bad++ < 3) CHECK(0, "%s: refused: %s", v->name, err.msg);
                }
                refused++;
                continue;
            }
            for (int i = 0; i < k; i++)
                if (ids[i] < 0 || ids[i] >= tokenizer_n_tokens(tok)) bad++;
            /* round trip, without special-token parsing (with it, text that spells a
             * control token comes back without it); SPM reads U+2581 as a space and
             * puts a space before the text after an added token, so skip those */
            if (!(flags & MOE_TOK_SPECIAL) && !(v->spm && tags)) {
                size_t dl;
                char *dec = tu_decode_raw(tok, ids, k, &dl, v->spm);
                uint8_t want[512 + 8];
                size_t wl = 0;
                for (size_t i = 0; i < n; i++) {
                    if (v->spm && i + 2 < n && buf[i] == 0xE2 && buf[i + 1] == 0x96 && buf[i + 2] == 0x81) {
                        want[wl++] = ' ';
                        i += 2;
                    } else if (!missing[buf[i]]) {
                        want[wl++] = buf[i];
                    }
                }
                uint8_t *nb = NULL;
                size_t ncap = 0;
                const uint8_t *w = want;
                if (v->nfc) {
                    wl = uni_nfc(want, wl, &nb, &ncap);
                    w = nb;
                }
                /* an SPM text that starts with a space decodes with one space less */
                int ok = dec && dl == wl && memcmp(dec, w, wl) == 0;
                if (!ok && v->spm && dec && wl && w[0] == ' ' && dl + 1 == wl && memcmp(dec, w + 1, dl) == 0) ok = 1;
                if (!ok && bad++ < 3) {
                    CHECK(0, "%s: round trip of %zu random bytes", v->name, n);
                    fprintf(stderr, "    in: ");
                    for (size_t i = 0; i < n; i++) fprintf(stderr, "%02x", buf[i]);
                    fprintf(stderr, "\n");
                }
                free(nb);
                free(dec);
            }
            free(ids);
        }
        CHECK(bad == 0, "%s: %d bad random encodings", v->name, bad);
        printf("fuzz %-15s %d random texts, %d refused (not UTF-8, and a byte without a token)\n", v->name, runs,
               refused);
    }
}

/* ---------------------------------------------------------------- corrupt data */

static void test_corrupt(void) {
    char path[8192];
    size_t len;
    char *orig = tu_path(path, sizeof path, tu_work(), "tok_c/gpt-2.moe") ? NULL : tu_read(path, &len);
    if (!orig) return;
    moe_file f;
    moe_err err;
    int rejected = 0, total = 0;
    /* flip bytes inside each tokenizer tensor: offsets, types and merges must be
     * validated; text bytes may change freely as long as merges stay consistent */
    const char *names[] = {"tok.offsets", "tok.types", "tok.merges"};
    for (int which = 0; which < 3; which++) {
        for (int trial = 0; trial < 20; trial++) {
            char *buf = malloc(len);
            memcpy(buf, orig, len);
            memset(&f, 0, sizeof f);
            if (moef_parse(&f, buf, len, &err)) {
                free(buf);
                continue;
            }
            moe_tensor *tt = moef_tensor(&f, names[which]);
            size_t off = (size_t)((const char *)tt->data - buf);
            size_t at = off + rnd() % tt->nbytes;
            buf[at] = (char)(buf[at] ^ (0x40 | (rnd() & 0xBF)));
            moe_tokenizer *t = tokenizer_load(&f, 0, &err);
            total++;
            if (!t) rejected++;
            else { /* if it loaded, it must still encode without crashing */
                int32_t ids[64];
                tokenizer_encode(t, "Hello world, the quick brown fox", 31, 0, ids, 64, &err);
            }
            tokenizer_free(t);
            moef_close(&f);
            free(buf);
        }
    }
    CHECK(rejected > total / 2, "corrupted tokenizer data rejected %d/%d", rejected, total);
    /* missing keys */
    memset(&f, 0, sizeof f);
    CHECK(moef_parse(&f, orig, len, &err) == 0, "parse");
    CHECK(tokenizer_load(&f, 1000, &err) == NULL && strstr(err.msg, "vocab_size"), "vocab_size bound: %s", err.msg);
    moef_close(&f);
    printf("corrupt data: %d/%d mutations rejected, the rest encode safely\n", rejected, total);
    free(orig);
}

/* ---------------------------------------------------------------- speed */

static void test_speed(void) {
    char path[8192];
    size_t len;
    char *kjv = tu_path(path, sizeof path, tu_shared(), "corpora/kjv.txt") ? NULL : tu_read(path, &len);
    if (!kjv) {
        printf("speed: no kjv.txt\n");
        return;
    }
    size_t mb = len < (1u << 20) ? len : (1u << 20);
    const char *names[] = {"gpt-2", "qwen3", "deepseek-v3", "deepseek-llm", "falcon", "llama-spm", "stories260k"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const moe_tokenizer *t = get_tok(names[i]);
        if (!t) continue;
        moe_err err = {{0}};
        int n = 0;
        double t0 = now();
        int32_t *ids = tu_encode(t, kjv, mb, 0, &n, &err);
        double dt = now() - t0;
        CHECK(ids != NULL, "%s: encoding kjv: %s", names[i], err.msg);
        printf("speed %-12s 1 MB of kjv.txt: %7d tokens in %.3f s (%.1f MB/s)\n", names[i], n, dt, mb / dt / 1e6);
        free(ids);
    }
    /* hostile: 1 MB of one letter (one huge piece), of spaces, of digits, of '<' */
    const char fill[] = {'a', ' ', '7', '<', '\n'};
    char *big = malloc(mb);
    for (size_t f = 0; f < sizeof fill; f++) {
        memset(big, fill[f], mb);
        for (size_t i = 0; i < 2; i++) {
            const moe_tokenizer *t = get_tok(i ? "llama-spm" : "deepseek-llm");
            if (!t) continue;
            moe_err err = {{0}};
            int n = 0;
            double t0 = now();
            int32_t *ids = tu_encode(t, big, mb, 0, &n, &err);
            double dt = now() - t0;
            CHECK(ids != NULL, "hostile input");
            printf("speed %-12s 1 MB of '%s': %7d tokens in %.3f s\n", i ? "llama-spm" : "deepseek-llm",
                   fill[f] == '\n' ? "\\n" : (char[]){fill[f], 0}, n, dt);
            free(ids);
        }
    }
    free(big);
    free(kjv);
}

/* ---------------------------------------------------------------- helper mode */

static int helper(int argc, char **argv) {
    tu_tok t;
    if (argc < 3 || tu_load(&t, argv[2])) return 2;
    int flags = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "special")) flags |= MOE_TOK_SPECIAL;
        if (!strcmp(argv[i], "bos")) flags |= MOE_TOK_ADD_BOS;
    }
    size_t len = 0, cap = 1 << 16;
    char *text = malloc(cap);
    size_t got;
    while (text && (got = fread(text + len, 1, cap - len, stdin)) > 0) {
        len += got;
        if (len == cap) text = realloc(text, cap *= 2);
    }
    if (!text) return 2;
    int rc = 0;
    if (!strcmp(argv[1], "batch")) { /* cases as in the .inp files: one line of ids per case */
        char *p = text, *c;
        size_t clen;
        while ((c = next_case(&p, text + len, &clen))) {
            moe_err err = {{0}};
            int n = 0;
            int32_t *ids = tu_encode(t.tok, c, clen, flags, &n, &err);
            if (!ids) printf("error: %s", err.msg);
            for (int i = 0; ids && i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
            printf("\n");
            free(ids);
        }
    } else if (!strcmp(argv[1], "encode")) {
        moe_err err = {{0}};
        int n = 0;
        int32_t *ids = tu_encode(t.tok, text, len, flags, &n, &err);
        if (!ids) {
            fprintf(stderr, "%s\n", err.msg);
            rc = 1;
        }
        for (int i = 0; ids && i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        free(ids);
    } else if (!strcmp(argv[1], "detok")) {
        moe_detok d;
        memset(&d, 0, sizeof d);
        d.prev = -1;
        char out[4096];
        for (char *p = text, *e; p < text + len; p = e) {
            long id = strtol(p, &e, 10);
            if (e == p) break;
            size_t n = tokenizer_detok_push(t.tok, &d, (int32_t)id, out, sizeof out);
            fwrite(out, 1, n, stdout);
        }
        size_t n = tokenizer_detok_flush(&d, out, sizeof out);
        fwrite(out, 1, n, stdout);
    } else {
        rc = 2;
    }
    free(text);
    tu_free(&t);
    return rc;
}

int main(int argc, char **argv) {
    if (argc > 1) return helper(argc, argv);
    test_unicode();
    char golden[4096];
    struct stat st;
    if (tu_path(golden, sizeof golden, tu_shared(), "golden") || stat(golden, &st) != 0) {
        /* everything below converts the shared tokenizers: skipped (77), never passed, without them */
        fprintf(stderr, "SKIPPED: the shared ground truth is not at %s (set MOE_SHARED); %d unicode checks ran, "
                "%d failed\n", tu_shared(), n_check, n_fail);
        return n_fail ? 1 : 77;
    }
    int ok = prepare();
    printf("loaded %d/%d tokenizers\n", ok, N_VOCABS);
    test_cases();
    test_special();
    test_detok();
    test_token_round_trips();
    test_fuzz();
    test_corrupt();
    test_speed();
    for (int i = 0; i < N_VOCABS; i++)
        if (loaded[i]) tu_free(&toks[i]);
    printf("%d checks, %d failed\n", n_check, n_fail);
    return n_fail ? 1 : 0;
}
