/* test_util.h - tiny test harness: CHECK macros that count failures, and a
 * minimal .moe writer (an independent reading of docs/FORMAT.md) for crafting
 * valid and corrupted files in memory. */
#ifndef MOE_TEST_UTIL_H
#define MOE_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures = 0, g_checks = 0;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        g_checks++;                                                          \
        if (!(cond)) {                                                       \
            g_failures++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

#define CHECK_NEAR(a, b, tol, what)                                                                     \
    CHECK(fabs((double)(a) - (double)(b)) <= (tol), "%s: %.9g vs %.9g (tol %.3g)", what, (double)(a), \
          (double)(b), (double)(tol))

static inline int test_summary(const char *name) {
    if (g_failures) fprintf(stderr, "%s: %d of %d checks failed\n", name, g_failures, g_checks);
    else printf("%s: all %d checks passed\n", name, g_checks);
    return g_failures ? 1 : 0;
}

/* ------------------------------------------------------------ writer */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} tbuf;

static inline void tb_put(tbuf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}
static inline void tb_u8(tbuf *b, uint8_t v) { tb_put(b, &v, 1); }
static inline void tb_u16(tbuf *b, uint16_t v) { uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; tb_put(b, x, 2); }
static inline void tb_u32(tbuf *b, uint32_t v) { for (int i = 0; i < 4; i++) tb_u8(b, (uint8_t)(v >> (8 * i))); }
static inline void tb_u64(tbuf *b, uint64_t v) { for (int i = 0; i < 8; i++) tb_u8(b, (uint8_t)(v >> (8 * i))); }
static inline void tb_str16(tbuf *b, const char *s) { tb_u16(b, (uint16_t)strlen(s)); tb_put(b, s, strlen(s)); }

typedef struct {
    const char *name;
    int dtype, nd;
    uint64_t dims[4];
    const void *data;   /* may be NULL: zero bytes */
    uint64_t nbytes;
} ttensor;

typedef struct {
    tbuf kv;
    int n_kv;
    ttensor t[512];
    int n_t;
} tfile;

static inline void tf_int(tfile *f, const char *k, int64_t v) { tb_str16(&f->kv, k); tb_u8(&f->kv, 0); tb_u64(&f->kv, (uint64_t)v); f->n_kv++; }
static inline void tf_float(tfile *f, const char *k, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    tb_str16(&f->kv, k);
    tb_u8(&f->kv, 1);
    tb_u64(&f->kv, u);
    f->n_kv++;
}
static inline void tf_str(tfile *f, const char *k, const char *v) {
    tb_str16(&f->kv, k);
    tb_u8(&f->kv, 2);
    tb_u32(&f->kv, (uint32_t)strlen(v));
    tb_put(&f->kv, v, strlen(v));
    f->n_kv++;
}
static inline void tf_ints(tfile *f, const char *k, const int64_t *v, int n) {
    tb_str16(&f->kv, k);
    tb_u8(&f->kv, 3);
    tb_u32(&f->kv, (uint32_t)n);
    for (int i = 0; i < n; i++) tb_u64(&f->kv, (uint64_t)v[i]);
    f->n_kv++;
}
static inline void tf_tensor(tfile *f, const char *name, int dtype, int nd, const uint64_t *dims, const void *data,
                             uint64_t nbytes) {
    ttensor *t = &f->t[f->n_t++];
    t->name = name;
    t->dtype = dtype;
    t->nd = nd;
    memcpy(t->dims, dims, sizeof(uint64_t) * (size_t)nd);
    t->data = data;
    t->nbytes = nbytes;
}

/* Serialise: header, metadata, directory, aligned data (alignment 64). */
static inline uint8_t *tf_build(const tfile *f, size_t *size) {
    tbuf dir = {0}, out = {0};
    uint64_t off = 0, data_end = 0;
    for (int i = 0; i < f->n_t; i++) {
        const ttensor *t = &f->t[i];
        tb_str16(&dir, t->name);
        tb_u8(&dir, (uint8_t)t->dtype);
        tb_u8(&dir, (uint8_t)t->nd);
        for (int d = 0; d < t->nd; d++) tb_u64(&dir, t->dims[d]);
        tb_u64(&dir, off);
        tb_u64(&dir, t->nbytes);
        data_end = off + t->nbytes;
        off = (data_end + 63) / 64 * 64;
    }
    uint64_t data_offset = (40 + f->kv.n + dir.n + 63) / 64 * 64;
    tb_put(&out, "MOEF", 4);
    tb_u32(&out, 1);
    tb_u32(&out, 64);
    tb_u32(&out, (uint32_t)f->n_kv);
    tb_u32(&out, (uint32_t)f->n_t);
    tb_u32(&out, 0);
    tb_u64(&out, data_offset);
    tb_u64(&out, data_end);
    tb_put(&out, f->kv.p, f->kv.n);
    tb_put(&out, dir.p, dir.n);
    while (out.n < data_offset) tb_u8(&out, 0);
    off = 0;
    for (int i = 0; i < f->n_t; i++) {
        const ttensor *t = &f->t[i];
        while (out.n < data_offset + off) tb_u8(&out, 0);
        for (uint64_t j = 0; j < t->nbytes; j++) tb_u8(&out, t->data ? ((const uint8_t *)t->data)[j] : 0);
        off = (off + t->nbytes + 63) / 64 * 64;
    }
    free(dir.p);
    *size = out.n;
    return out.p;
}

#endif /* MOE_TEST_UTIL_H */
