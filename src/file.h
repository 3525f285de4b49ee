/* file.h - the .moe container: parse and validate a byte buffer (pure, what
 * tests and the fuzzer call), or map a file read-only and parse it.
 * Format: docs/FORMAT.md. After a successful parse every entry is known to lie
 * inside the buffer, so later code trusts these views. */
#ifndef MOE_FILE_H
#define MOE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "gguf.h"
#include "moe.h"

#define MOEF_VERSION 1
#define MOEF_MAX_DIMS 4

typedef enum { KV_INT = 0, KV_FLOAT = 1, KV_STR = 2, KV_INTS = 3 } kv_type;

typedef struct {
    const char *key;          /* points into the buffer, not NUL-terminated */
    int key_len;
    kv_type type;
    int64_t i;                /* KV_INT */
    double f;                 /* KV_FLOAT */
    const char *str;          /* KV_STR: bytes in the buffer */
    uint32_t len;             /* KV_STR: byte length; KV_INTS: count */
    const uint8_t *ints;      /* KV_INTS: count little-endian i64 values */
} moe_kv;

typedef struct {
    const char *name;         /* points into the buffer, not NUL-terminated */
    int name_len;
    moe_dtype dtype;
    int n_dims;
    uint64_t dims[MOEF_MAX_DIMS];   /* outermost first */
    uint64_t nbytes;
    const void *data;         /* inside the buffer, aligned */
    int used;                 /* set by the model binder; unused tensors are an error */
} moe_tensor;

typedef struct {
    const uint8_t *base;      /* the whole file */
    size_t size;
    uint32_t version, alignment;
    int n_kv, n_tensors;
    moe_kv *kv;               /* allocated: n_kv entries */
    moe_tensor *tensors;      /* allocated: n_tensors entries */
    int32_t *kv_index;        /* open-addressing hash tables of entry indices */
    int32_t *tensor_index;    /* (-1 = empty), sized to a power of two */
    uint32_t kv_index_cap, tensor_index_cap;
    /* mapping, when opened from disk */
    void *map;
    size_t map_size;
    /* A GGUF file (gguf.h): its own directory; the entries above are the
     * engine's view translated from it (gguf_view.c), their data pointing
     * into the same buffer. */
    gguf_file *gguf;
    /* memory the translation computed and the view points into (names,
     * tokenizer tables, small derived tensors): freed with the file */
    void **owned;
    int n_owned, owned_cap;
} moe_file;

/* Parse a buffer that stays alive as long as the moe_file (not copied): a
 * .moe file, or a GGUF file (recognised by its magic) translated into the
 * same view (gguf_view.c). */
int moef_parse(moe_file *f, const void *buf, size_t size, moe_err *err);
/* Touch every page of the mapping once (see moe_model_prefault). */
size_t moef_prefault(const moe_file *f);
/* Bytes of the mapping now mapped as 2 MB pages (Linux: /proc/self/smaps;
 * elsewhere 0). */
size_t moef_huge_bytes(const moe_file *f);
/* mmap(PROT_READ, MAP_PRIVATE) then parse. */
int moef_open(moe_file *f, const char *path, moe_err *err);
void moef_close(moe_file *f);

/* A zeroed allocation owned by f (freed by moef_close); NULL when out of memory. */
void *moef_alloc(moe_file *f, size_t n);
/* Build the name indexes over f->kv and f->tensors (duplicates are errors). */
int moef_index(moe_file *f, moe_err *err);

/* Lookups (NULL when absent). key/name are NUL-terminated C strings. */
const moe_kv *moef_kv(const moe_file *f, const char *key);
moe_tensor *moef_tensor(const moe_file *f, const char *name);
/* Element i of a KV_INTS value. */
int64_t moef_kv_int_at(const moe_kv *kv, uint32_t i);

/* Helpers for printing non-terminated names: printf("%.*s", T_NAME(t)). */
#define T_NAME(t) (t)->name_len, (t)->name

/* Shape to text, e.g. "[8, 96, 128]". */
void shape_str(const uint64_t *dims, int n, char *out, size_t cap);

#endif /* MOE_FILE_H */
