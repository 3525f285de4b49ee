/* gguf.c - parse and validate a GGUF file (gguf.h) held in a byte buffer.
 *
 * gguf_parse() is pure: it either accepts the buffer, with every offset and
 * size proven to lie inside it, or rejects it with one message naming the
 * entry and the numbers. Arithmetic on file-supplied numbers is
 * overflow-checked; counts are bounded by the bytes left before they are
 * used to allocate. */
#include "gguf.h"

#include <stdlib.h>
#include <string.h>

#include "file.h"
#include "util.h"

#define MAX_NEST 4          /* arrays of arrays: deeper nesting is refused */
#define MAX_NAME 65535      /* key and tensor name bytes */
#define MAX_KV 65536        /* metadata entries: a .moe's limit (file.c), far above any real file */
#define MAX_TENSORS 1048576 /* tensors: likewise; keeps the view's int counts and tables small */

/* ------------------------------------------------------------ ggml types */

typedef struct {
    const char *name;
    int block, block_bytes;
    int dtype;              /* the engine's dtype id, -1 if none */
} ggml_traits;

/* ggml's type ids (ggml.h enum ggml_type) with their block sizes. The dtype
 * ids 21..30 are the engine's numbers for the types it may implement; a
 * type counts as supported only when this build knows that dtype with the
 * same block shape (ggml_type_to_dtype). */
static const ggml_traits GGML_TYPES[] = {
    [0] = {"F32", 1, 4, DT_F32},        [1] = {"F16", 1, 2, DT_F16},
    [2] = {"Q4_0", 32, 18, DT_Q4_0},    [3] = {"Q4_1", 32, 20, 21},
    [6] = {"Q5_0", 32, 22, 22},         [7] = {"Q5_1", 32, 24, 23},
    [8] = {"Q8_0", 32, 34, DT_Q8_0},    [9] = {"Q8_1", 32, 36, -1},
    [10] = {"Q2_K", 256, 84, 24},       [11] = {"Q3_K", 256, 110, 25},
    [12] = {"Q4_K", 256, 144, DT_Q4_K}, [13] = {"Q5_K", 256, 176, 26},
    [14] = {"Q6_K", 256, 210, 27},      [15] = {"Q8_K", 256, 292, -1},
    [16] = {"IQ2_XXS", 256, 66, -1},    [17] = {"IQ2_XS", 256, 74, -1},
    [18] = {"IQ3_XXS", 256, 98, -1},    [19] = {"IQ1_S", 256, 50, -1},
    [20] = {"IQ4_NL", 32, 18, 28},      [21] = {"IQ3_S", 256, 110, -1},
    [22] = {"IQ2_S", 256, 82, -1},      [23] = {"IQ4_XS", 256, 136, 29},
    [24] = {"I8", 1, 1, -1},            [25] = {"I16", 1, 2, -1},
    [26] = {"I32", 1, 4, -1},           [27] = {"I64", 1, 8, -1},
    [28] = {"F64", 1, 8, -1},           [29] = {"IQ1_M", 256, 56, -1},
    [30] = {"BF16", 1, 2, DT_BF16},     [34] = {"TQ1_0", 256, 54, -1},
    [35] = {"TQ2_0", 256, 66, -1},      [39] = {"MXFP4", 32, 17, 30},
};
#define N_GGML_TYPES ((int)(sizeof GGML_TYPES / sizeof GGML_TYPES[0]))

static const ggml_traits *ggml_traits_of(int t) {
    return t >= 0 && t < N_GGML_TYPES && GGML_TYPES[t].name ? &GGML_TYPES[t] : NULL;
}
int ggml_type_known(int t) { return ggml_traits_of(t) != NULL; }
const char *ggml_type_name(int t) { return ggml_traits_of(t) ? ggml_traits_of(t)->name : "?"; }
int ggml_type_block(int t) { return ggml_traits_of(t)->block; }
int ggml_type_block_bytes(int t) { return ggml_traits_of(t)->block_bytes; }

int ggml_type_to_dtype(int t) {
    const ggml_traits *g = ggml_traits_of(t);
    const dtype_traits *d = g && g->dtype >= 0 ? dtype_info(g->dtype) : NULL;
    if (!d) return -1;
    /* the engine reads ggml's bytes as they are: the block shapes must agree */
    if (d->block != g->block || d->block_bytes != g->block_bytes || d->row_group != 1) return -1;
    return g->dtype;
}

const char *gguf_vtype_name(gguf_vtype t) {
    static const char *const N[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                    "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < sizeof N / sizeof N[0] ? N[t] : "?";
}

/* bytes of one scalar of type t; 0 for string/array/unknown */
static int scalar_bytes(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    }
    return 0;
}

/* ------------------------------------------------------------ reader cursor */

typedef struct {
    const uint8_t *buf;
    uint64_t size, pos;
    moe_err *err;
} cursor;

static int need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return moe_fail(c->err, "truncated GGUF: %s at offset %llu needs %llu bytes, the file has %llu", what,
                        (unsigned long long)c->pos, (unsigned long long)n, (unsigned long long)(c->size - c->pos));
    return 0;
}

static int read_u32(cursor *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    *v = rd_u32(c->buf + c->pos);
    c->pos += 4;
    return 0;
}

static int read_u64(cursor *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    *v = rd_u64(c->buf + c->pos);
    c->pos += 8;
    return 0;
}

/* A key or tensor name: u64 length + bytes, 1..MAX_NAME bytes, no NUL. */
static int read_name(cursor *c, const char **s, uint32_t *len, const char *what) {
    uint64_t n;
    if (read_u64(c, &n, what)) return -1;
    if (n == 0 || n > MAX_NAME)
        return moe_fail(c->err, "GGUF %s at offset %llu: length %llu outside 1..%d", what,
                        (unsigned long long)(c->pos - 8), (unsigned long long)n, MAX_NAME);
    if (need(c, n, what)) return -1;
    *s = (const char *)c->buf + c->pos;
    *len = (uint32_t)n;
    if (memchr(*s, 0, (size_t)n))
        return moe_fail(c->err, "GGUF %s \"%.*s\" holds a NUL byte", what, (int)(n > 64 ? 64 : n), *s);
    c->pos += n;
    return 0;
}

/* Skip over one value of type t (validating it); depth counts array nesting. */
static int skip_value(cursor *c, uint32_t t, int depth, const char *key, uint32_t key_len) {
    int sb = scalar_bytes(t);
    if (sb) return need(c, (uint64_t)sb, "metadata value") ? -1 : (c->pos += (uint64_t)sb, 0);
    if (t == GGUF_STRING) {
        uint64_t n;
        if (read_u64(c, &n, "string length")) return -1;
        if (n > c->size - c->pos)
            return moe_fail(c->err, "GGUF metadata %.*s: a string of %llu bytes runs past the end of the file", (int)key_len,
                            key, (unsigned long long)n);
        c->pos += n;
        return 0;
    }
    if (t == GGUF_ARRAY) {
        if (depth >= MAX_NEST)
            return moe_fail(c->err, "GGUF metadata %.*s: arrays nested deeper than %d", (int)key_len, key, MAX_NEST);
        uint32_t et;
        uint64_t n;
        if (read_u32(c, &et, "array element type") || read_u64(c, &n, "array count")) return -1;
        int eb = scalar_bytes(et);
        /* the smallest element: a scalar's bytes, a string's length, an array's header */
        uint64_t least = eb ? (uint64_t)eb : et == GGUF_STRING ? 8 : et == GGUF_ARRAY ? 12 : 0;
        if (!least)
            return moe_fail(c->err, "GGUF metadata %.*s: array of unknown value type %u", (int)key_len, key, et);
        if (n > (c->size - c->pos) / least)
            return moe_fail(c->err, "GGUF metadata %.*s: an array of %llu %s values runs past the end of the file",
                            (int)key_len, key, (unsigned long long)n, gguf_vtype_name((gguf_vtype)et));
        if (eb) {
            c->pos += n * (uint64_t)eb;
            return 0;
        }
        for (uint64_t i = 0; i < n; i++)
            if (skip_value(c, et, depth + 1, key, key_len)) return -1;
        return 0;
    }
    return moe_fail(c->err, "GGUF metadata %.*s: unknown value type %u", (int)key_len, key, t);
}

static int parse_kv(cursor *c, gguf_kv *kv, uint64_t idx) {
    char what[48];
    snprintf(what, sizeof what, "metadata key %llu", (unsigned long long)idx);
    uint32_t t;
    if (read_name(c, &kv->key, &kv->key_len, what) || read_u32(c, &t, "metadata value type")) return -1;
    if (t > GGUF_F64)
        return moe_fail(c->err, "GGUF metadata %.*s: unknown value type %u", (int)kv->key_len, kv->key, t);
    kv->type = (gguf_vtype)t;
    uint64_t start = c->pos;
    if (t == GGUF_STRING || t == GGUF_ARRAY) {
        /* the header (length, or element type + count) is read twice: here for the view */
        if (t == GGUF_STRING) {
            if (need(c, 8, "string length")) return -1;
            kv->n = rd_u64(c->buf + c->pos);
            start += 8;
        } else {
            if (need(c, 12, "array header")) return -1;
            kv->elem_type = (gguf_vtype)rd_u32(c->buf + c->pos);
            kv->n = rd_u64(c->buf + c->pos + 4);
            start += 12;
        }
    }
    if (skip_value(c, t, 0, kv->key, kv->key_len)) return -1;
    kv->data = c->buf + start;
    kv->size = c->pos - start;
    return 0;
}

static int parse_tensor_info(cursor *c, gguf_tensor *t, uint64_t idx) {
    char what[48];
    snprintf(what, sizeof what, "tensor name %llu", (unsigned long long)idx);
    uint32_t nd, type;
    if (read_name(c, &t->name, &t->name_len, what) || read_u32(c, &nd, "tensor dimension count")) return -1;
    int nl = (int)(t->name_len > 200 ? 200 : t->name_len);
    if (nd < 1 || nd > GGUF_MAX_DIMS)
        return moe_fail(c->err, "GGUF tensor %.*s: %u dimensions, expected 1..%d", nl, t->name, nd, GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    uint64_t n_elem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
    for (int d = 0; d < (int)nd; d++) {
        if (read_u64(c, &t->ne[d], "tensor dimensions")) return -1;
        if (t->ne[d] == 0) return moe_fail(c->err, "GGUF tensor %.*s: dimension %d is 0", nl, t->name, d);
        if (!mul_u64(n_elem, t->ne[d], &n_elem) || n_elem > ((uint64_t)1 << 62))
            return moe_fail(c->err, "GGUF tensor %.*s: element count overflows", nl, t->name);
    }
    if (read_u32(c, &type, "tensor type") || read_u64(c, &t->offset, "tensor offset")) return -1;
    if (!ggml_type_known((int)type))
        return moe_fail(c->err, "GGUF tensor %.*s: ggml type %u is unknown to this build", nl, t->name, type);
    t->type = (int)type;
    uint64_t block = (uint64_t)ggml_type_block(t->type);
    if (t->ne[0] % block)
        return moe_fail(c->err, "GGUF tensor %.*s: ne[0] = %llu is not a multiple of the %s block of %llu", nl, t->name,
                        (unsigned long long)t->ne[0], ggml_type_name(t->type), (unsigned long long)block);
    /* n_elem <= 2^62, but 2^62 four-byte (or 2^61 eight-byte) elements are 2^64 bytes */
    if (!mul_u64(n_elem / block, (uint64_t)ggml_type_block_bytes(t->type), &t->nbytes))
        return moe_fail(c->err, "GGUF tensor %.*s: the byte size of %llu %s elements overflows", nl, t->name,
                        (unsigned long long)n_elem, ggml_type_name(t->type));
    return 0;
}

/* ------------------------------------------------------------ duplicates */

static uint32_t hash_bytes(const char *s, uint32_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (uint32_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* First duplicate among n names (returns its index), or -1; -2 when out of memory. */
static int64_t find_duplicate(const void *items, size_t stride, size_t name_off, size_t len_off, uint64_t n) {
    uint64_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    int64_t *tab = malloc(sizeof *tab * cap);
    if (!tab) return -2;
    for (uint64_t i = 0; i < cap; i++) tab[i] = -1;
    int64_t dup = -1;
    for (uint64_t i = 0; i < n && dup < 0; i++) {
        const char *item = (const char *)items + i * stride;
        const char *name = *(const char *const *)(item + name_off);
        uint32_t len = *(const uint32_t *)(item + len_off);
        for (uint64_t h = hash_bytes(name, len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            if (tab[h] < 0) { tab[h] = (int64_t)i; break; }
            const char *other_item = (const char *)items + (uint64_t)tab[h] * stride;
            const char *other = *(const char *const *)(other_item + name_off);
            if (*(const uint32_t *)(other_item + len_off) == len && memcmp(other, name, len) == 0) {
                dup = (int64_t)i;
                break;
            }
        }
    }
    free(tab);
    return dup;
}

/* ------------------------------------------------------------ the file */

static int cmp_offset(const void *a, const void *b) {
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor's bytes lie in the data section, aligned, and no two overlap. */
static int check_layout(gguf_file *g, moe_err *err) {
    uint64_t data_size = g->size - g->data_offset;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        uint64_t end;
        if (t->offset % g->alignment)
            return moe_fail(err, "GGUF tensor %.*s: offset %llu is not a multiple of the alignment %llu",
                            (int)t->name_len, t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (!add_u64(t->offset, t->nbytes, &end) || end > data_size)
            return moe_fail(err, "GGUF tensor %.*s: bytes %llu..+%llu lie past the end of the data section (%llu bytes; "
                            "truncated file?)", (int)t->name_len, t->name, (unsigned long long)t->offset,
                            (unsigned long long)t->nbytes, (unsigned long long)data_size);
        t->data = g->base + g->data_offset + t->offset;
    }
    if (g->n_tensors < 2) return 0;
    const gguf_tensor **order = malloc(sizeof *order * g->n_tensors);
    if (!order) return moe_fail(err, "out of memory checking the GGUF tensor layout");
    for (uint64_t i = 0; i < g->n_tensors; i++) order[i] = &g->tensors[i];
    qsort(order, g->n_tensors, sizeof *order, cmp_offset);
    int rc = 0;
    for (uint64_t i = 1; i < g->n_tensors && !rc; i++)
        if (order[i]->offset < order[i - 1]->offset + order[i - 1]->nbytes)
            rc = moe_fail(err, "GGUF tensor %.*s: bytes at offset %llu overlap tensor %.*s (%llu..+%llu)",
                          (int)order[i]->name_len, order[i]->name, (unsigned long long)order[i]->offset,
                          (int)order[i - 1]->name_len, order[i - 1]->name, (unsigned long long)order[i - 1]->offset,
                          (unsigned long long)order[i - 1]->nbytes);
    free(order);
    return rc;
}

int gguf_is(const void *buf, size_t size) { return size >= 4 && memcmp(buf, "GGUF", 4) == 0; }

static int parse_alignment(gguf_file *g, moe_err *err) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(g, "general.alignment");
    if (!kv) return 0;
    uint64_t a;
    if (gguf_kv_uint(kv, &a, err)) return -1;
    if (a == 0 || (a & (a - 1)) || a > (1u << 30))
        return moe_fail(err, "GGUF general.alignment %llu is not a power of two", (unsigned long long)a);
    g->alignment = a;
    return 0;
}

int gguf_parse(gguf_file *g, const void *buf, size_t size, moe_err *err) {
    memset(g, 0, sizeof *g);
    g->base = buf;
    g->size = size;
    cursor c = {buf, size, 0, err};
    if (size < 4 || !gguf_is(buf, size)) return moe_fail(err, "not a GGUF file: bad magic (expected \"GGUF\")");
    c.pos = 4;
    if (read_u32(&c, &g->version, "version")) return -1;
    if (g->version != 2 && g->version != 3)
        return moe_fail(err, "GGUF version %u is not supported (2 or 3%s)", g->version,
                        g->version == 1 ? "; version 1 files predate 64-bit counts" : "; a big-endian file?");
    if (read_u64(&c, &g->n_tensors, "tensor count") || read_u64(&c, &g->n_kv, "metadata count")) return -1;
    /* every entry takes some bytes: bound the counts by the file before allocating */
    if (g->n_kv > (size - c.pos) / 12)
        return moe_fail(err, "truncated or damaged GGUF: %llu metadata entries cannot fit in %zu bytes", (unsigned long long)g->n_kv,
                        size);
    if (g->n_tensors > (size - c.pos) / 32)
        return moe_fail(err, "truncated or damaged GGUF: %llu tensors cannot fit in %zu bytes", (unsigned long long)g->n_tensors, size);
    if (g->n_kv > MAX_KV || g->n_tensors > MAX_TENSORS)
        return moe_fail(err, "GGUF: %llu metadata entries and %llu tensors exceed moe's limits (%d, %d)",
                        (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors, MAX_KV, MAX_TENSORS);
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) {
        gguf_free(g);
        return moe_fail(err, "out of memory reading the GGUF directory");
    }
    int64_t dup;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (parse_kv(&c, &g->kv[i], i)) goto fail;
    dup = find_duplicate(g->kv, sizeof *g->kv, offsetof(gguf_kv, key), offsetof(gguf_kv, key_len), g->n_kv);
    if (dup != -1) {
        if (dup == -2) moe_fail(err, "out of memory");
        else moe_fail(err, "GGUF metadata key %.*s appears twice", (int)g->kv[dup].key_len, g->kv[dup].key);
        goto fail;
    }
    if (parse_alignment(g, err)) goto fail;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (parse_tensor_info(&c, &g->tensors[i], i)) goto fail;
    dup = find_duplicate(g->tensors, sizeof *g->tensors, offsetof(gguf_tensor, name), offsetof(gguf_tensor, name_len),
                         g->n_tensors);
    if (dup != -1) {
        if (dup == -2) moe_fail(err, "out of memory");
        else moe_fail(err, "GGUF tensor %.*s appears twice", (int)g->tensors[dup].name_len, g->tensors[dup].name);
        goto fail;
    }
    /* the data section starts at the next multiple of the alignment */
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    if (g->n_tensors > 0 && pad > size - c.pos) {
        moe_fail(err, "truncated GGUF: the data section would start at %llu, past the end of the file (%zu bytes)",
                 (unsigned long long)(c.pos + pad), size);
        goto fail;
    }
    g->data_offset = pad > size - c.pos ? size : c.pos + pad;
    if (check_layout(g, err)) goto fail;
    return 0;
fail:
    gguf_free(g);
    return -1;
}

void gguf_free(gguf_file *g) {
    if (!g) return;
    free(g->kv);
    free(g->tensors);
    g->kv = NULL;
    g->tensors = NULL;
    g->n_kv = g->n_tensors = 0;
}

const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && memcmp(g->kv[i].key, key, n) == 0) return &g->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    size_t n = strlen(name);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name_len == n && memcmp(g->tensors[i].name, name, n) == 0) return &g->tensors[i];
    return NULL;
}

/* ------------------------------------------------------------ typed values */

static int64_t scalar_int(gguf_vtype t, const uint8_t *p) {
    switch (t) {
    case GGUF_U8: case GGUF_BOOL: return p[0];
    case GGUF_I8: return (int8_t)p[0];
    case GGUF_U16: return rd_u16(p);
    case GGUF_I16: return (int16_t)rd_u16(p);
    case GGUF_U32: return rd_u32(p);
    case GGUF_I32: return (int32_t)rd_u32(p);
    case GGUF_U64: case GGUF_I64: return (int64_t)rd_u64(p);
    default: return 0;
    }
}

static int is_int(gguf_vtype t) { return scalar_bytes(t) && t != GGUF_F32 && t != GGUF_F64; }

int gguf_kv_uint(const gguf_kv *kv, uint64_t *out, moe_err *err) {
    if (!is_int(kv->type))
        return moe_fail(err, "GGUF metadata %.*s: a %s, expected an integer", (int)kv->key_len, kv->key,
                        gguf_vtype_name(kv->type));
    int64_t v = scalar_int(kv->type, kv->data);
    if (v < 0 && kv->type != GGUF_U64)
        return moe_fail(err, "GGUF metadata %.*s: %lld is negative", (int)kv->key_len, kv->key, (long long)v);
    *out = (uint64_t)v;
    return 0;
}

int gguf_kv_float(const gguf_kv *kv, double *out, moe_err *err) {
    if (kv->type == GGUF_F32) {
        uint32_t u = rd_u32(kv->data);
        float f;
        memcpy(&f, &u, 4);
        *out = f;
    } else if (kv->type == GGUF_F64) {
        *out = rd_f64(kv->data);
    } else if (is_int(kv->type) && kv->type != GGUF_BOOL) {
        *out = (double)scalar_int(kv->type, kv->data);
    } else {
        return moe_fail(err, "GGUF metadata %.*s: a %s, expected a number", (int)kv->key_len, kv->key,
                        gguf_vtype_name(kv->type));
    }
    return 0;
}

int gguf_kv_bool(const gguf_kv *kv, int *out, moe_err *err) {
    if (!is_int(kv->type))
        return moe_fail(err, "GGUF metadata %.*s: a %s, expected a bool", (int)kv->key_len, kv->key,
                        gguf_vtype_name(kv->type));
    *out = scalar_int(kv->type, kv->data) != 0;
    return 0;
}

int gguf_kv_str(const gguf_kv *kv, const char **s, uint64_t *len, moe_err *err) {
    if (kv->type != GGUF_STRING)
        return moe_fail(err, "GGUF metadata %.*s: a %s, expected a string", (int)kv->key_len, kv->key,
                        gguf_vtype_name(kv->type));
    *s = (const char *)kv->data;
    *len = kv->n;
    return 0;
}

int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i) {
    return scalar_int(kv->elem_type, kv->data + i * (uint64_t)scalar_bytes(kv->elem_type));
}

double gguf_arr_float(const gguf_kv *kv, uint64_t i) {
    const uint8_t *p = kv->data + i * (uint64_t)scalar_bytes(kv->elem_type);
    if (kv->elem_type == GGUF_F32) {
        uint32_t u = rd_u32(p);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (kv->elem_type == GGUF_F64) return rd_f64(p);
    return (double)scalar_int(kv->elem_type, p);
}

const char *gguf_arr_next_str(const gguf_kv *kv, uint64_t *pos, uint64_t *len) {
    /* the parser proved every length lies inside kv->size */
    if (*pos + 8 > kv->size) return NULL;
    *len = rd_u64(kv->data + *pos);
    const char *s = (const char *)kv->data + *pos + 8;
    *pos += 8 + *len;
    return s;
}
