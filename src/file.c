/* file.c - parse and validate the .moe container (docs/FORMAT.md).
 *
 * moef_parse() is pure: it reads a byte buffer and either accepts it, with
 * every offset and size proven to lie inside the buffer, or rejects it with one
 * message naming the entry and the numbers. It is what the fuzzer calls. */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_view.h"
#include "util.h"

#define HEADER_BYTES 40
#define MAX_KV 65536
#define MAX_TENSORS 1048576
#define MAX_STR (16u << 20)
#define MAX_INTS 1048576

void shape_str(const uint64_t *dims, int n, char *out, size_t cap) {
    size_t k = 0;
    k += (size_t)snprintf(out + k, cap - k, "[");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

/* ------------------------------------------------------------ name index */

static uint32_t hash_bytes(const char *s, int n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int32_t *index_new(int n, uint32_t *cap) {
    uint32_t c = 16;
    while (c < (uint32_t)n * 2) c <<= 1;
    int32_t *t = malloc(sizeof *t * c);
    if (t) memset(t, 0xff, sizeof *t * c);
    *cap = c;
    return t;
}

/* Insert entry idx with the given name; returns the index of an existing entry
 * with the same name, or -1 after inserting. */
typedef const char *(*name_of_fn)(const moe_file *f, int idx, int *len);
static const char *kv_name(const moe_file *f, int i, int *len) { *len = f->kv[i].key_len; return f->kv[i].key; }
static const char *tensor_name(const moe_file *f, int i, int *len) {
    *len = f->tensors[i].name_len;
    return f->tensors[i].name;
}

static int index_insert(const moe_file *f, int32_t *tab, uint32_t cap, name_of_fn name_of, int idx) {
    int len;
    const char *name = name_of(f, idx, &len);
    for (uint32_t h = hash_bytes(name, len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
        if (tab[h] < 0) { tab[h] = idx; return -1; }
        int ol;
        const char *other = name_of(f, tab[h], &ol);
        if (ol == len && memcmp(other, name, (size_t)len) == 0) return tab[h];
    }
}

static int index_find(const moe_file *f, const int32_t *tab, uint32_t cap, name_of_fn name_of, const char *name) {
    if (!tab) return -1;
    int len = (int)strlen(name);
    for (uint32_t h = hash_bytes(name, len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
        if (tab[h] < 0) return -1;
        int ol;
        const char *other = name_of(f, tab[h], &ol);
        if (ol == len && memcmp(other, name, (size_t)len) == 0) return tab[h];
    }
}

/* ------------------------------------------------------------ reader cursor */

typedef struct {
    const uint8_t *buf;
    uint64_t size, pos;
    moe_err *err;
} cursor;

/* Ensure n more bytes exist; `what` names the field for the message. */
static int need(cursor *c, uint64_t n, const char *what) {
    if (n > c->size - c->pos)
        return moe_fail(c->err, "truncated file: %s at offset %llu needs %llu bytes, file has %llu", what,
                        (unsigned long long)c->pos, (unsigned long long)n, (unsigned long long)c->size);
    return 0;
}

static int key_char_ok(uint8_t ch) { return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.'; }

static int parse_kv(cursor *c, moe_kv *kv, int idx) {
    if (need(c, 2, "metadata key length")) return -1;
    int klen = rd_u16(c->buf + c->pos);
    c->pos += 2;
    if (klen < 1 || klen > 255) return moe_fail(c->err, "metadata entry %d: key length %d outside 1..255", idx, klen);
    if (need(c, (uint64_t)klen + 1, "metadata key")) return -1;
    kv->key = (const char *)c->buf + c->pos;
    kv->key_len = klen;
    for (int i = 0; i < klen; i++)
        if (!key_char_ok((uint8_t)kv->key[i]))
            return moe_fail(c->err, "metadata entry %d: key has byte 0x%02x outside [a-z0-9_.]", idx, (uint8_t)kv->key[i]);
    c->pos += (uint64_t)klen;
    int type = c->buf[c->pos++];
    switch (type) {
    case KV_INT:
        if (need(c, 8, "INT value")) return -1;
        kv->i = (int64_t)rd_u64(c->buf + c->pos);
        c->pos += 8;
        break;
    case KV_FLOAT:
        if (need(c, 8, "FLOAT value")) return -1;
        kv->f = rd_f64(c->buf + c->pos);
        c->pos += 8;
        break;
    case KV_STR:
        if (need(c, 4, "STR length")) return -1;
        kv->len = rd_u32(c->buf + c->pos);
        c->pos += 4;
        if (kv->len > MAX_STR)
            return moe_fail(c->err, "metadata %.*s: string of %u bytes exceeds %u", klen, kv->key, kv->len, MAX_STR);
        if (need(c, kv->len, "STR value")) return -1;
        kv->str = (const char *)c->buf + c->pos;
        c->pos += kv->len;
        break;
    case KV_INTS:
        if (need(c, 4, "INTS count")) return -1;
        kv->len = rd_u32(c->buf + c->pos);
        c->pos += 4;
        if (kv->len > MAX_INTS)
            return moe_fail(c->err, "metadata %.*s: %u integers exceed %u", klen, kv->key, kv->len, MAX_INTS);
        if (need(c, (uint64_t)kv->len * 8, "INTS values")) return -1;
        kv->ints = c->buf + c->pos;
        c->pos += (uint64_t)kv->len * 8;
        break;
    default:
        return moe_fail(c->err, "metadata %.*s: unknown value type %d", klen, kv->key, type);
    }
    kv->type = (kv_type)type;
    return 0;
}

static int parse_tensor(cursor *c, moe_tensor *t, int idx) {
    if (need(c, 2, "tensor name length")) return -1;
    int nlen = rd_u16(c->buf + c->pos);
    c->pos += 2;
    if (nlen < 1 || nlen > 255) return moe_fail(c->err, "tensor %d: name length %d outside 1..255", idx, nlen);
    if (need(c, (uint64_t)nlen + 2, "tensor name")) return -1;
    t->name = (const char *)c->buf + c->pos;
    t->name_len = nlen;
    for (int i = 0; i < nlen; i++)
        if ((uint8_t)t->name[i] <= 32 || (uint8_t)t->name[i] >= 127)
            return moe_fail(c->err, "tensor %d: name has non-printable byte 0x%02x", idx, (uint8_t)t->name[i]);
    c->pos += (uint64_t)nlen;
    int dtype = c->buf[c->pos++];
    int nd = c->buf[c->pos++];
    const dtype_traits *dt = dtype_info(dtype);
    if (!dt) return moe_fail(c->err, "tensor %.*s: unknown dtype %d", nlen, t->name, dtype);
    if (nd < 1 || nd > MOEF_MAX_DIMS)
        return moe_fail(c->err, "tensor %.*s: %d dimensions, expected 1..%d", nlen, t->name, nd, MOEF_MAX_DIMS);
    t->dtype = (moe_dtype)dtype;
    t->n_dims = nd;
    if (need(c, (uint64_t)nd * 8 + 16, "tensor dims, offset and size")) return -1;
    uint64_t n_elem = 1;
    for (int d = 0; d < nd; d++) {
        t->dims[d] = rd_u64(c->buf + c->pos);
        c->pos += 8;
        if (t->dims[d] == 0) return moe_fail(c->err, "tensor %.*s: dimension %d is 0", nlen, t->name, d);
        if (!mul_u64(n_elem, t->dims[d], &n_elem) || n_elem > ((uint64_t)1 << 62))
            return moe_fail(c->err, "tensor %.*s: element count overflows", nlen, t->name);
    }
    uint64_t offset = rd_u64(c->buf + c->pos), nbytes = rd_u64(c->buf + c->pos + 8);
    c->pos += 16;
    uint64_t last = t->dims[nd - 1], block = (uint64_t)dt->block;
    if (last % block)
        return moe_fail(c->err, "tensor %.*s: last dimension %llu is not a multiple of the %s block size %llu", nlen,
                        t->name, (unsigned long long)last, dt->name, (unsigned long long)block);
    uint64_t unit = (uint64_t)dt->row_group;
    if ((n_elem / last) % unit)
        return moe_fail(c->err, "tensor %.*s: %llu rows, %s needs a multiple of %llu", nlen, t->name,
                        (unsigned long long)(n_elem / last), dt->name, (unsigned long long)unit);
    uint64_t expect; /* n_elem <= 2^62, but 2^62 four-byte elements are 2^64 bytes */
    if (!mul_u64(n_elem / block, (uint64_t)dt->block_bytes, &expect))
        return moe_fail(c->err, "tensor %.*s: the byte size of %llu %s elements overflows", nlen, t->name,
                        (unsigned long long)n_elem, dt->name);
    if (nbytes != expect)
        return moe_fail(c->err, "tensor %.*s: size %llu bytes, expected %llu for %s of %llu elements", nlen, t->name,
                        (unsigned long long)nbytes, (unsigned long long)expect, dt->name,
                        (unsigned long long)n_elem);
    t->nbytes = nbytes;
    t->data = (const void *)(uintptr_t)offset; /* relative for now; resolved after the directory */
    return 0;
}

static void file_free_tables(moe_file *f) {
    free(f->kv);
    free(f->tensors);
    free(f->kv_index);
    free(f->tensor_index);
    f->kv = NULL;
    f->tensors = NULL;
    f->kv_index = f->tensor_index = NULL;
}

int moef_parse(moe_file *f, const void *buf, size_t size, moe_err *err) {
    if (gguf_is(buf, size)) return gguf_view_parse(f, buf, size, err);
    memset(f, 0, sizeof *f);
    f->base = buf;
    f->size = size;
    cursor c = {buf, size, 0, err};
    if (size < HEADER_BYTES)
        return moe_fail(err, "not a moe file: %zu bytes, shorter than the %d-byte header", size, HEADER_BYTES);
    if (memcmp(f->base, "MOEF", 4) != 0) return moe_fail(err, "not a moe file: bad magic (expected \"MOEF\")");
    f->version = rd_u32(f->base + 4);
    if (f->version != MOEF_VERSION)
        return moe_fail(err, "unsupported moe file version %u (this build reads version %d)", f->version, MOEF_VERSION);
    f->alignment = rd_u32(f->base + 8);
    uint32_t n_kv = rd_u32(f->base + 12), n_tensors = rd_u32(f->base + 16);
    uint64_t data_offset = rd_u64(f->base + 24), data_size = rd_u64(f->base + 32);
    if (f->alignment < 8 || f->alignment > 65536 || (f->alignment & (f->alignment - 1)))
        return moe_fail(err, "header: alignment %u is not a power of two in 8..65536", f->alignment);
    if (n_kv > MAX_KV) return moe_fail(err, "header: %u metadata entries exceed %d", n_kv, MAX_KV);
    if (n_tensors > MAX_TENSORS) return moe_fail(err, "header: %u tensors exceed %d", n_tensors, MAX_TENSORS);
    if (rd_u32(f->base + 20) != 0) return moe_fail(err, "header: reserved field is not 0");
    uint64_t end;
    if (!add_u64(data_offset, data_size, &end) || end != size)
        return moe_fail(err, "header: data_offset %llu + data_size %llu != file size %zu (truncated or padded file)",
                        (unsigned long long)data_offset, (unsigned long long)data_size, size);
    if (data_offset < HEADER_BYTES)
        return moe_fail(err, "header: data_offset %llu lies inside the header", (unsigned long long)data_offset);
    if (data_offset % f->alignment)
        return moe_fail(err, "header: data_offset %llu is not a multiple of the alignment %u",
                        (unsigned long long)data_offset, f->alignment);

    f->kv = calloc(n_kv ? n_kv : 1, sizeof *f->kv);
    f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *f->tensors);
    f->kv_index = index_new((int)n_kv, &f->kv_index_cap);
    f->tensor_index = index_new((int)n_tensors, &f->tensor_index_cap);
    if (!f->kv || !f->tensors || !f->kv_index || !f->tensor_index) {
        file_free_tables(f);
        return moe_fail(err, "out of memory reading the directory");
    }
    c.pos = HEADER_BYTES;
    c.size = data_offset; /* metadata and directory must end before the data */
    for (uint32_t i = 0; i < n_kv; i++) {
        f->n_kv = (int)i + 1;
        if (parse_kv(&c, &f->kv[i], (int)i)) goto fail;
        if (index_insert(f, f->kv_index, f->kv_index_cap, kv_name, (int)i) >= 0) {
            moe_fail(err, "metadata key %.*s appears twice", f->kv[i].key_len, f->kv[i].key);
            goto fail;
        }
    }
    uint64_t prev_end = 0;
    for (uint32_t i = 0; i < n_tensors; i++) {
        moe_tensor *t = &f->tensors[i];
        f->n_tensors = (int)i + 1;
        if (parse_tensor(&c, t, (int)i)) goto fail;
        if (index_insert(f, f->tensor_index, f->tensor_index_cap, tensor_name, (int)i) >= 0) {
            moe_fail(err, "tensor %.*s appears twice", T_NAME(t));
            goto fail;
        }
        uint64_t off = (uint64_t)(uintptr_t)t->data, tend;
        if (off % f->alignment) {
            moe_fail(err, "tensor %.*s: offset %llu is not a multiple of the alignment %u", T_NAME(t),
                     (unsigned long long)off, f->alignment);
            goto fail;
        }
        if (off < prev_end) {
            moe_fail(err, "tensor %.*s: offset %llu overlaps the previous tensor ending at %llu", T_NAME(t),
                     (unsigned long long)off, (unsigned long long)prev_end);
            goto fail;
        }
        if (!add_u64(off, t->nbytes, &tend) || tend > data_size) {
            moe_fail(err, "tensor %.*s: %llu bytes at offset %llu lie past the end of the data section (%llu bytes)",
                     T_NAME(t), (unsigned long long)t->nbytes, (unsigned long long)off, (unsigned long long)data_size);
            goto fail;
        }
        prev_end = tend;
        t->data = f->base + data_offset + off;
    }
    /* an entry left behind by a lowered count would sit here unread */
    for (uint64_t at = c.pos; at < data_offset; at++)
        if (f->base[at]) {
            moe_fail(err, "header: the padding after the directory is not zero (byte %llu of %llu..%llu)",
                     (unsigned long long)at, (unsigned long long)c.pos, (unsigned long long)data_offset);
            goto fail;
        }
    return 0;
fail:
    file_free_tables(f);
    f->n_kv = f->n_tensors = 0;
    return -1;
}

int moef_open(moe_file *f, const char *path, moe_err *err) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return moe_fail(err, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        moe_fail(err, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return moe_fail(err, "%s is not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return moe_fail(err, "%s is empty", path);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return moe_fail(err, "cannot map %s: %s", path, strerror(errno));
#ifdef MADV_HUGEPAGE
    /* Pages read in through this mapping come in as 2 MB folios, mapped as
     * huge pages (Linux with transparent huge pages and a file system with
     * large folios, e.g. ext4 or xfs on 6.x; elsewhere a no-op, and its
     * failure costs nothing). Decode reads every weight once per token, and
     * with 4 KB pages the TLB misses and the prefetchers' stops at each page
     * edge cost it a tenth of the read bandwidth (docs/BENCHMARKS.md).
     * Pages already cached keep their size: the writers (writer.c,
     * tools/moefile.py) write in 2 MB pieces so that a file just written is
     * cached in 2 MB folios too. */
    madvise(map, size, MADV_HUGEPAGE);
#endif
    if (moef_parse(f, map, size, err) != 0) {
        munmap(map, size);
        moe_err_prefix(err, path); /* the parser knows only bytes: say which file */
        return -1;
    }
    f->map = map;
    f->map_size = size;
    return 0;
}

size_t moef_prefault(const moe_file *f) {
    if (!f->map) return 0;
    madvise(f->map, f->map_size, MADV_WILLNEED);
    volatile unsigned char sink = 0;
    const unsigned char *p = f->map;
    for (size_t i = 0; i < f->map_size; i += 4096) sink ^= p[i];
    (void)sink;
    return f->map_size;
}

size_t moef_huge_bytes(const moe_file *f) {
    size_t huge = 0;
#ifdef __linux__
    FILE *sm = f->map ? fopen("/proc/self/smaps", "r") : NULL;
    if (!sm) return 0;
    char line[8192]; /* a mapping's first line ends in its path */
    int in_map = 0;
    while (fgets(line, sizeof line, sm)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) /* a mapping's first line */
            in_map = lo < (unsigned long)f->map + f->map_size && hi > (unsigned long)f->map;
        else if (in_map && !strncmp(line, "FilePmdMapped:", 14))
            huge += (size_t)strtoull(line + 14, NULL, 10) * 1024;
    }
    fclose(sm);
#else
    (void)f;
#endif
    return huge;
}

void *moef_alloc(moe_file *f, size_t n) {
    if (f->n_owned == f->owned_cap) {
        int cap = f->owned_cap ? 2 * f->owned_cap : 16;
        void **grown = realloc(f->owned, sizeof *grown * (size_t)cap);
        if (!grown) return NULL;
        f->owned = grown;
        f->owned_cap = cap;
    }
    void *p = calloc(1, n ? n : 1);
    if (p) f->owned[f->n_owned++] = p;
    return p;
}

int moef_index(moe_file *f, moe_err *err) {
    /* a GGUF view's counts come from its file: the .moe header's limits keep
     * index_new's table size (twice the count, a power of two) from wrapping */
    if (f->n_kv > MAX_KV) return moe_fail(err, "%d metadata entries exceed %d", f->n_kv, MAX_KV);
    if (f->n_tensors > MAX_TENSORS) return moe_fail(err, "%d tensors exceed %d", f->n_tensors, MAX_TENSORS);
    f->kv_index = index_new(f->n_kv, &f->kv_index_cap);
    f->tensor_index = index_new(f->n_tensors, &f->tensor_index_cap);
    if (!f->kv_index || !f->tensor_index) return moe_fail(err, "out of memory indexing the directory");
    for (int i = 0; i < f->n_kv; i++)
        if (index_insert(f, f->kv_index, f->kv_index_cap, kv_name, i) >= 0)
            return moe_fail(err, "metadata key %.*s appears twice", f->kv[i].key_len, f->kv[i].key);
    for (int i = 0; i < f->n_tensors; i++)
        if (index_insert(f, f->tensor_index, f->tensor_index_cap, tensor_name, i) >= 0)
            return moe_fail(err, "tensor %.*s appears twice", T_NAME(&f->tensors[i]));
    return 0;
}

void moef_close(moe_file *f) {
    if (!f) return;
    file_free_tables(f);
    for (int i = 0; i < f->n_owned; i++) free(f->owned[i]);
    free(f->owned);
    if (f->gguf) gguf_free(f->gguf);
    free(f->gguf);
    if (f->map) munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

const moe_kv *moef_kv(const moe_file *f, const char *key) {
    int i = index_find(f, f->kv_index, f->kv_index_cap, kv_name, key);
    return i < 0 ? NULL : &f->kv[i];
}

moe_tensor *moef_tensor(const moe_file *f, const char *name) {
    int i = index_find(f, f->tensor_index, f->tensor_index_cap, tensor_name, name);
    return i < 0 ? NULL : &f->tensors[i];
}

int64_t moef_kv_int_at(const moe_kv *kv, uint32_t i) { return (int64_t)rd_u64(kv->ints + (size_t)i * 8); }
