/* tok_util.h - helpers shared by the tokenizer tests and the fuzz target:
 * file reading, paths from the environment, converting a tokenizer with
 * tools/tokenizer_convert.py, loading a tokenizer-only .moe, decoding ids. */
#ifndef TOK_UTIL_H
#define TOK_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "file.h"
#include "model.h"
#include "tokenizer.h"

/* The library's public tokenizer functions call model_tokenizer(), which the
 * model loader defines; until a program links it, this weak stand-in lets the
 * tests link (they only call the tokenizer_* functions). */
__attribute__((weak)) const moe_tokenizer *model_tokenizer(const moe_model *m) {
    (void)m;
    return NULL;
}

static inline char *tu_read(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) break;
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        char *p = realloc(buf, 2 * cap + 1);
        if (!p) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = p;
        cap *= 2;
    }
    fclose(f);
    if (buf) buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* $name, else the fallback (relative to the repository) */
static inline const char *tu_env(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* out = a + "/" + b; 0, or -1 if it does not fit */
static inline int tu_path(char *out, size_t cap, const char *a, const char *b) {
    int n = snprintf(out, cap, "%s/%s", a, b);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

static inline const char *tu_root(void) { return tu_env("MOE_ROOT", "."); }
static inline const char *tu_shared(void) {
    static char buf[4096];
    const char *v = getenv("MOE_SHARED");
    if (v && *v) return v;
    return tu_path(buf, sizeof buf, tu_root(), "../shared") ? "../shared" : buf;
}
static inline const char *tu_work(void) { return tu_env("MOE_WORK", "/tmp/moe-testwork"); }

static inline int tu_mkdirs(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static inline double tu_mtime(const char *path) {
    struct stat st;
    return stat(path, &st) ? -1 : (double)st.st_mtime;
}

/* Convert src into out with the Python converter unless out is newer than both. */
static inline int tu_convert(const char *src, const char *out, const char *extra) {
    char conv[2048], cmd[16384];
    if (tu_path(conv, sizeof conv, tu_root(), "tools/tokenizer_convert.py")) return -1;
    double t = tu_mtime(out);
    if (t >= 0 && t >= tu_mtime(conv) && t >= tu_mtime(src) && t >= tu_mtime(tu_env("MOE_TOK_CONVERT_DEPS", conv)))
        return 0;
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' '%s' %s 2>/dev/null", tu_env("MOE_PYTHON", "python3"), conv, src, out,
             extra ? extra : "");
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct {
    moe_file file;
    moe_tokenizer *tok;
} tu_tok;

static inline int tu_load(tu_tok *t, const char *path) {
    moe_err err = {{0}};
    memset(t, 0, sizeof *t);
    if (moef_open(&t->file, path, &err)) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        return -1;
    }
    t->tok = tokenizer_load(&t->file, 0, &err);
    if (!t->tok) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        moef_close(&t->file);
        return -1;
    }
    return 0;
}

static inline void tu_free(tu_tok *t) {
    tokenizer_free(t->tok);
    moef_close(&t->file);
}

/* Encode into a malloc'ed array (*n ids); NULL on error (message in err). */
static inline int32_t *tu_encode(const moe_tokenizer *tok, const char *text, size_t len, int flags, int *n, moe_err *err) {
    *n = 0;
    int cap = 64;
    int32_t *ids = malloc((size_t)cap * sizeof *ids);
    for (;;) {
        if (!ids) return NULL;
        int k = tokenizer_encode(tok, text, len, flags, ids, cap, err);
        if (k < 0) {
            free(ids);
            return NULL;
        }
        if (k <= cap) {
            *n = k;
            return ids;
        }
        cap = k;
        free(ids);
        ids = malloc((size_t)cap * sizeof *ids);
    }
}

/* Raw decode: the concatenated bytes of the ids, control tokens skipped and the
 * SentencePiece leading space removed at the start and after BOS as the
 * streaming decoder does, but with no UTF-8 repair (so that invalid input
 * round-trips byte for byte). */
static inline char *tu_decode_raw(const moe_tokenizer *tok, const int32_t *ids, int n, size_t *len, int spm_strip) {
    size_t cap = 16, w = 0;
    char *out = malloc(cap);
    *len = 0;
    int at_start = 1;
    for (int i = 0; out && i < n; i++) {
        size_t k;
        const char *s = tokenizer_token(tok, ids[i], &k);
        if (!s || tokenizer_is_control(tok, ids[i])) {
            at_start = ids[i] == tokenizer_bos(tok) || (at_start && i == 0);
            continue;
        }
        if (spm_strip && at_start && k && s[0] == ' ') {
            s++;
            k--;
        }
        at_start = 0;
        if (w + k + 1 > cap) {
            while (w + k + 1 > cap) cap *= 2;
            char *p = realloc(out, cap);
            if (!p) {
                free(out);
                return NULL;
            }
            out = p;
        }
        memcpy(out + w, s, k);
        w += k;
    }
    if (out) out[w] = 0;
    *len = w;
    return out;
}

#endif /* TOK_UTIL_H */
