/* test_file.c - the container parser accepts a valid file, rejects every
 * truncation and each kind of corruption with its own message, and never
 * crashes on random damage (run under ASan/UBSan in CI). */
#include "file.h"
#include "util.h"
#include "test_util.h"

/* A small valid file: metadata of every type and three tensors. */
static uint8_t *valid_file(size_t *size) {
    static tfile f;
    static float a[6] = {1, 2, 3, 4, 5, 6};
    static uint16_t b[32];
    free(f.kv.p); /* static builder state: release the previous call's buffer */
    memset(&f, 0, sizeof f);
    tf_str(&f, "general.arch", "llama");
    tf_int(&f, "model.dim", 6);
    tf_float(&f, "rope.theta", 10000.0);
    int64_t layers[3] = {1, 0, 1};
    tf_ints(&f, "moe.layers", layers, 3);
    tf_tensor(&f, "a", 0, 2, (uint64_t[]){2, 3}, a, sizeof a);
    tf_tensor(&f, "b", 2, 1, (uint64_t[]){32}, b, sizeof b);
    tf_tensor(&f, "q", 16, 2, (uint64_t[]){2, 32}, NULL, 2 * 34);
    return tf_build(&f, size);
}

static int parse_err(const uint8_t *buf, size_t n, moe_err *err) {
    moe_file f;
    int rc = moef_parse(&f, buf, n, err);
    if (rc == 0) moef_close(&f);
    return rc;
}

/* Expect a parse failure whose message contains `needle`. */
static void expect_error(const uint8_t *buf, size_t n, const char *needle, const char *what) {
    moe_err err = {{0}};
    int rc = parse_err(buf, n, &err);
    CHECK(rc != 0, "%s: accepted", what);
    CHECK(strstr(err.msg, needle) != NULL, "%s: message \"%s\" lacks \"%s\"", what, err.msg, needle);
}

static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

static size_t find_bytes(const uint8_t *buf, size_t n, const char *s) {
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(buf + i, s, k)) return i;
    return (size_t)-1;
}

/* Offset of the dtype byte of the directory entry of a one-letter tensor. */
static size_t tensor_entry(const uint8_t *buf, size_t n, char name) {
    const uint8_t pat[3] = {1, 0, (uint8_t)name};
    for (size_t i = 40; i + 3 <= n; i++)
        if (!memcmp(buf + i, pat, 3)) return i + 3;
    return (size_t)-1;
}

static void test_valid(void) {
    size_t n;
    uint8_t *buf = valid_file(&n);
    moe_file f;
    moe_err err = {{0}};
    CHECK(moef_parse(&f, buf, n, &err) == 0, "valid file rejected: %s", err.msg);
    CHECK(f.n_kv == 4 && f.n_tensors == 3, "counts %d %d", f.n_kv, f.n_tensors);
    const moe_kv *kv = moef_kv(&f, "model.dim");
    CHECK(kv && kv->type == KV_INT && kv->i == 6, "model.dim");
    kv = moef_kv(&f, "rope.theta");
    CHECK(kv && kv->type == KV_FLOAT && kv->f == 10000.0, "rope.theta");
    kv = moef_kv(&f, "moe.layers");
    CHECK(kv && kv->type == KV_INTS && kv->len == 3 && moef_kv_int_at(kv, 2) == 1, "moe.layers");
    kv = moef_kv(&f, "general.arch");
    CHECK(kv && kv->len == 5 && !memcmp(kv->str, "llama", 5), "general.arch");
    CHECK(moef_kv(&f, "model.di") == NULL && moef_kv(&f, "model.dimx") == NULL, "prefix lookups must miss");
    moe_tensor *t = moef_tensor(&f, "a");
    CHECK(t && t->dtype == DT_F32 && t->dims[0] == 2 && t->dims[1] == 3 && ((const float *)t->data)[5] == 6.0f, "tensor a");
    CHECK(t && ((uintptr_t)t->data - (uintptr_t)buf) % 64 == 0, "tensor data aligned");
    t = moef_tensor(&f, "q");
    CHECK(t && t->dtype == DT_Q8_0 && t->nbytes == 68, "q8_0 tensor");
    moef_close(&f);
    free(buf);
}

static void test_truncations(void) {
    size_t n;
    uint8_t *buf = valid_file(&n);
    int rejected = 0;
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact-size copy so ASan sees any over-read */
        memcpy(copy, buf, cut);
        moe_err err = {{0}};
        rejected += parse_err(copy, cut, &err) != 0;
        CHECK(err.msg[0] != 0 || cut == n, "cut %zu: no message", cut);
        free(copy);
    }
    CHECK(rejected == (int)n, "only %d of %zu truncations rejected", rejected, n);
    free(buf);
}

static void test_corruptions(void) {
    size_t n;
    uint8_t *buf = valid_file(&n), *c = malloc(n);
#define MUTATE(stmt, needle, what) \
    do {                           \
        memcpy(c, buf, n);         \
        stmt;                      \
        expect_error(c, n, needle, what); \
    } while (0)
    MUTATE(c[0] = 'X', "bad magic", "magic");
    MUTATE(put_u32(c + 4, 2), "version 2", "version");
    MUTATE(put_u32(c + 8, 48), "alignment 48", "alignment not a power of two");
    MUTATE(put_u32(c + 20, 7), "reserved", "reserved field");
    MUTATE(put_u64(c + 32, rd_u64(buf + 32) + 1), "file size", "data_size too large");
    MUTATE((put_u64(c + 24, 0), put_u64(c + 32, n)), "inside the header", "data_offset in header");
    MUTATE(put_u32(c + 12, 5), "", "one more kv than present (runs into the directory)");
    MUTATE(put_u32(c + 16, 2000000), "exceed", "too many tensors");

    size_t at = find_bytes(buf, n, "model.dim");
    MUTATE(c[at] = 'M', "outside [a-z0-9_.]", "bad key byte");
    MUTATE(c[at + 9] = 9, "unknown value type 9", "kv type");

    /* tensor entry "a": name, dtype, nd, dims[2], offset, nbytes */
    size_t ta = tensor_entry(buf, n, 'a');
    MUTATE(c[ta] = 99, "unknown dtype 99", "dtype");
    MUTATE(c[ta + 1] = 0, "dimensions", "zero dims");
    MUTATE(c[ta + 1] = 5, "dimensions", "five dims");
    MUTATE(put_u64(c + ta + 2, 0), "dimension 0 is 0", "zero-sized dim");
    MUTATE(put_u64(c + ta + 2, 3), "size 24 bytes, expected 36", "nbytes mismatch");
    MUTATE(put_u64(c + ta + 2, UINT64_MAX / 2), "overflow", "element count overflow");
    /* 2^31 x 2^31 F32 elements are 2^64 bytes: a size that wraps to 0 must not match nbytes 0 */
    MUTATE((put_u64(c + ta + 2, 1ull << 31), put_u64(c + ta + 10, 1ull << 31), put_u64(c + ta + 26, 0)), "overflow",
           "byte size overflow");
    MUTATE(put_u64(c + ta + 18, 8), "not a multiple of the alignment", "misaligned offset");
    MUTATE(put_u64(c + ta + 18, 1u << 20), "past the end", "offset past end");
    MUTATE(put_u64(c + ta + 18, UINT64_MAX - 63), "past the end", "offset overflow");
    size_t tq = tensor_entry(buf, n, 'q');
    MUTATE(put_u64(c + tq + 10, 33), "multiple of the Q8_0 block", "quant last dim");
    MUTATE(c[tq] = DT_Q8_0_R16, "2 rows, Q8_0_R16 needs a multiple of 16", "interleaved type, partial row group");
    size_t tb = tensor_entry(buf, n, 'b');
    MUTATE(put_u64(c + tb + 10, 0), "overlaps", "overlapping tensors");
    MUTATE(c[tb - 1] = 'a', "appears twice", "duplicate tensor name");
    MUTATE(c[tb - 1] = 0x7f, "non-printable", "name byte");
#undef MUTATE
    free(c);
    free(buf);
}

/* Random damage: flips, overwrites with extreme values, truncations. The
 * parser must either accept or reject with a message; ASan checks reads. */
static void test_random_damage(void) {
    size_t n;
    uint8_t *buf = valid_file(&n);
    uint64_t s = 0x1234567;
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = n;
        uint8_t *c = malloc(n);
        memcpy(c, buf, n);
        int edits = 1 + (int)(s % 4);
        for (int e = 0; e < edits; e++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(s >> 33) % n;
            switch ((s >> 20) % 4) {
            case 0: c[pos] ^= (uint8_t)(1u << ((s >> 8) % 8)); break;
            case 1: c[pos] = 0xff; break;
            case 2: c[pos] = 0; break;
            case 3: len = pos; break;
            }
        }
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, c, len);
        moe_err err = {{0}};
        int rc = parse_err(exact, len, &err);
        if (rc == 0) accepted++;
        else CHECK(err.msg[0], "iteration %d: rejected without a message", iter);
        free(exact);
        free(c);
    }
    printf("random damage: %d of 20000 damaged files still parse (benign edits)\n", accepted);
    free(buf);
}

int main(void) {
    test_valid();
    test_truncations();
    test_corruptions();
    test_random_damage();
    return test_summary("test_file");
}
