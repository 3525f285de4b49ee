/* writer.c - streaming .moe writer (docs/FORMAT.md). */
#include "writer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define ALIGN 64
#define WRITE_PIECE (2u << 20)

typedef struct {
    char name[256];
    moe_dtype dtype;
    int n_dims;
    uint64_t dims[MOEF_MAX_DIMS], offset, nbytes;
} wt_entry;

struct moe_writer {
    uint8_t *kv;          /* encoded metadata */
    size_t kv_len, kv_cap;
    int n_kv;
    wt_entry *t;
    int n_t, cap_t;
    FILE *f;
    char *buf;            /* f's buffer: WRITE_PIECE bytes */
    char path[4096], tmp[4100];
    int cur;              /* tensor being written */
    uint64_t cur_written, data_offset, pos;
};

moe_writer *writer_new(void) { return calloc(1, sizeof(moe_writer)); }

void writer_free(moe_writer *w) {
    if (!w) return;
    if (w->f) {
        fclose(w->f);
        remove(w->tmp);
    }
    free(w->buf);
    free(w->kv);
    free(w->t);
    free(w);
}

static int put(moe_writer *w, const void *p, size_t n) {
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = (w->kv_len + n) * 2 + 256;
        uint8_t *k = realloc(w->kv, cap);
        if (!k) return -1;
        w->kv = k;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return 0;
}
static int put_le(moe_writer *w, uint64_t v, int bytes) {
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t)(v >> (8 * i));
    return put(w, b, (size_t)bytes);
}

int writer_add_kv(moe_writer *w, const moe_kv *kv) {
    if (put_le(w, (uint64_t)kv->key_len, 2) || put(w, kv->key, (size_t)kv->key_len) || put_le(w, kv->type, 1)) return -1;
    int rc = 0;
    uint64_t u;
    switch (kv->type) {
    case KV_INT: rc = put_le(w, (uint64_t)kv->i, 8); break;
    case KV_FLOAT: memcpy(&u, &kv->f, 8); rc = put_le(w, u, 8); break;
    case KV_STR: rc = put_le(w, kv->len, 4) || put(w, kv->str, kv->len); break;
    case KV_INTS: rc = put_le(w, kv->len, 4) || put(w, kv->ints, (size_t)kv->len * 8); break;
    }
    w->n_kv++;
    return rc;
}

int writer_add_tensor(moe_writer *w, const char *name, moe_dtype dt, int n_dims, const uint64_t *dims) {
    if (w->n_t == w->cap_t) {
        int cap = w->cap_t ? w->cap_t * 2 : 64;
        wt_entry *t = realloc(w->t, sizeof *t * (size_t)cap);
        if (!t) return -1;
        w->t = t;
        w->cap_t = cap;
    }
    wt_entry *e = &w->t[w->n_t];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->dtype = dt;
    e->n_dims = n_dims;
    uint64_t n = 1;
    for (int i = 0; i < n_dims; i++) n *= e->dims[i] = dims[i];
    e->nbytes = n / (uint64_t)dtype_info(dt)->block * (uint64_t)dtype_info(dt)->block_bytes;
    uint64_t prev_end = w->n_t ? w->t[w->n_t - 1].offset + w->t[w->n_t - 1].nbytes : 0;
    e->offset = (prev_end + ALIGN - 1) / ALIGN * ALIGN;
    w->n_t++;
    return 0;
}

uint64_t writer_tensor_bytes(const moe_writer *w, int i) { return w->t[i].nbytes; }

static int zeros(moe_writer *w, uint64_t n) {
    static const uint8_t z[ALIGN];
    while (n) {
        size_t k = n < ALIGN ? (size_t)n : ALIGN;
        if (fwrite(z, 1, k, w->f) != k) return -1;
        n -= k;
    }
    return 0;
}

int writer_begin(moe_writer *w, const char *path, moe_err *err) {
    /* directory bytes */
    size_t dir = 0;
    for (int i = 0; i < w->n_t; i++) dir += 2 + strlen(w->t[i].name) + 2 + 8 * (size_t)w->t[i].n_dims + 16;
    w->data_offset = (40 + w->kv_len + dir + ALIGN - 1) / ALIGN * ALIGN;
    uint64_t data_size = w->n_t ? w->t[w->n_t - 1].offset + w->t[w->n_t - 1].nbytes : 0;
    snprintf(w->path, sizeof w->path, "%s", path);
    snprintf(w->tmp, sizeof w->tmp, "%s.part", path);
    w->f = fopen(w->tmp, "wb");
    if (!w->f) return moe_fail(err, "cannot create %s: %s", w->tmp, strerror(errno));
    /* one 2 MB buffer: stdio then writes whole 2 MB pieces at 2 MB offsets,
     * so Linux caches the new file in 2 MB folios, which a run soon after
     * maps as huge pages (file.c) */
    if (!(w->buf = malloc(WRITE_PIECE)) || setvbuf(w->f, w->buf, _IOFBF, WRITE_PIECE) != 0)
        return moe_fail(err, "out of memory");
    uint8_t h[40];
    memcpy(h, "MOEF", 4);
    uint64_t fields[7] = {MOEF_VERSION, ALIGN, (uint64_t)w->n_kv, (uint64_t)w->n_t, 0, w->data_offset, data_size};
    int sizes[7] = {4, 4, 4, 4, 4, 8, 8}, at = 4;
    for (int i = 0; i < 7; i++)
        for (int b = 0; b < sizes[i]; b++) h[at++] = (uint8_t)(fields[i] >> (8 * b));
    size_t hdr_len = w->kv_len;
    for (int i = 0; i < w->n_t; i++) {
        const wt_entry *e = &w->t[i];
        if (put_le(w, strlen(e->name), 2) || put(w, e->name, strlen(e->name)) || put_le(w, e->dtype, 1) ||
            put_le(w, (uint64_t)e->n_dims, 1))
            return moe_fail(err, "out of memory");
        for (int d = 0; d < e->n_dims; d++) put_le(w, e->dims[d], 8);
        put_le(w, e->offset, 8);
        put_le(w, e->nbytes, 8);
    }
    if (fwrite(h, 1, 40, w->f) != 40 || fwrite(w->kv, 1, w->kv_len, w->f) != w->kv_len ||
        zeros(w, w->data_offset - 40 - w->kv_len))
        return moe_fail(err, "cannot write %s", w->tmp);
    w->kv_len = hdr_len; /* the directory bytes were only borrowed */
    w->cur = 0;
    w->cur_written = 0;
    w->pos = 0;
    return 0;
}

int writer_append(moe_writer *w, const void *data, size_t n, moe_err *err) {
    while (n) {
        if (w->cur >= w->n_t) return moe_fail(err, "writer: more data than the tensors declared");
        wt_entry *e = &w->t[w->cur];
        if (w->cur_written == 0 && zeros(w, e->offset - w->pos)) return moe_fail(err, "cannot write %s", w->tmp);
        w->pos = e->offset + w->cur_written;
        size_t k = n < e->nbytes - w->cur_written ? n : (size_t)(e->nbytes - w->cur_written);
        if (fwrite(data, 1, k, w->f) != k) return moe_fail(err, "cannot write %s: %s", w->tmp, strerror(errno));
        data = (const char *)data + k;
        n -= k;
        w->cur_written += k;
        w->pos += k;
        if (w->cur_written == e->nbytes) {
            w->cur++;
            w->cur_written = 0;
        }
    }
    return 0;
}

int writer_finish(moe_writer *w, moe_err *err) {
    if (w->cur != w->n_t) return moe_fail(err, "writer: tensor %d of %d not written", w->cur, w->n_t);
    int bad = fclose(w->f);
    w->f = NULL;
    if (bad) return moe_fail(err, "cannot write %s", w->tmp);
    if (rename(w->tmp, w->path)) return moe_fail(err, "cannot rename %s: %s", w->tmp, strerror(errno));
    return 0;
}
