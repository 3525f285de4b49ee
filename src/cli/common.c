/* common.c - flag parsing and helpers shared by the subcommands. */
#define _GNU_SOURCE /* nothing GNU-specific is relied on; keeps readlink/clock_gettime visible */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sys/stat.h>

#include "cli.h"

void die(int code, const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "moe %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

int args_next(args *a, const char **flag) {
    if (a->i >= a->argc) return 0;
    *flag = a->argv[a->i++];
    return 1;
}

int args_kv_type(args *a, const char *flag) {
    const char *s = args_value(a, flag);
    if (!strcmp(s, "f32")) return 0;
    if (!strcmp(s, "f16")) return 1;
    die(EXIT_USAGE, a->cmd, "%s: expected f32 or f16, got '%s'", flag, s);
}

const char *args_value(args *a, const char *flag) {
    if (a->i >= a->argc) die(EXIT_USAGE, a->cmd, "%s needs a value (see moe %s -h)", flag, a->cmd);
    return a->argv[a->i++];
}

int args_int(args *a, const char *flag, long lo, long hi) {
    const char *s = args_value(a, flag);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) die(EXIT_USAGE, a->cmd, "%s: \"%s\" is not an integer", flag, s);
    if (v < lo || v > hi) die(EXIT_USAGE, a->cmd, "%s: %ld is outside %ld..%ld", flag, v, lo, hi);
    return (int)v;
}

float args_float(args *a, const char *flag, double lo, double hi) {
    const char *s = args_value(a, flag);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v != v) die(EXIT_USAGE, a->cmd, "%s: \"%s\" is not a number", flag, s);
    if (v < lo || v > hi) die(EXIT_USAGE, a->cmd, "%s: %g is outside %g..%g", flag, v, lo, hi);
    return (float)v;
}

uint64_t args_u64(args *a, const char *flag) {
    const char *s = args_value(a, flag);
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-') die(EXIT_USAGE, a->cmd, "%s: \"%s\" is not a non-negative integer", flag, s);
    return (uint64_t)v;
}

int args_sampler(args *a, const char *flag, moe_sampler_params *sp) {
    if (!strcmp(flag, "--temp")) sp->temperature = args_float(a, flag, 0, 100);
    else if (!strcmp(flag, "--top-k")) sp->top_k = args_int(a, flag, 0, 1 << 30);
    else if (!strcmp(flag, "--top-p")) sp->top_p = args_float(a, flag, 1e-6, 1);
    else if (!strcmp(flag, "--min-p")) sp->min_p = args_float(a, flag, 0, 1);
    else if (!strcmp(flag, "--repeat-penalty")) sp->repeat_penalty = args_float(a, flag, 1e-3, 100);
    else if (!strcmp(flag, "-s") || !strcmp(flag, "--seed")) sp->seed = args_u64(a, flag);
    else return 0;
    return 1;
}

int32_t *parse_id_list(const char *cmd, const char *text, int *n) {
    size_t cap = 1;
    for (const char *p = text; *p; p++) cap += *p == ',';
    int32_t *ids = malloc(sizeof *ids * cap);
    if (!ids) die(1, cmd, "out of memory");
    int k = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v > INT32_MAX || (*end && *end != ','))
            die(EXIT_USAGE, cmd, "token list \"%.40s\": expected comma-separated non-negative integers", text);
        ids[k++] = (int32_t)v;
        p = *end ? end + 1 : end;
        if (*end == ',' && !*p) die(EXIT_USAGE, cmd, "token list ends with a comma");
    }
    if (!k) die(EXIT_USAGE, cmd, "empty token list");
    *n = k;
    return ids;
}

static int file_exists(const char *path) { return access(path, R_OK) == 0; }

/* models/ next to the repository: the binary lives in build/, so look beside
 * and above it, then in the current directory. */
const char *default_model_path(const char *argv0) {
    static char path[PATH_MAX + 64];
    const char *env = getenv("MOE_MODEL");
    if (env && *env) return env;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        const char *rel[] = {"models/default.moe", "../models/default.moe"};
        for (int i = 0; i < 2; i++) {
            snprintf(path, sizeof path, "%s/%s", exe, rel[i]);
            if (file_exists(path)) return path;
        }
    }
    (void)argv0;
    if (file_exists("models/default.moe")) return "models/default.moe";
    return NULL;
}

moe_model *open_model_or_die(const char *cmd, const char *path) {
    if (!path)
        die(1, cmd, "no model given and no default model found (models/default.moe). Pass -m FILE.moe; "
                    "convert a Hugging Face checkpoint with: python3 tools/convert.py HF_DIR -o FILE.moe");
    moe_err err = {{0}};
    moe_model *m = moe_model_open(path, &err);
    if (!m) die(1, cmd, "%s", err.msg);
    return m;
}

void refuse_model_as_output(const char *cmd, const char *model, const char *out, const char *flag) {
    struct stat a, b;
    if (out && stat(model, &a) == 0 && stat(out, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        die(EXIT_USAGE, cmd, "%s %s is the model file; writing it would destroy the weights", flag, out);
}

char *read_file_or_die(const char *cmd, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die(1, cmd, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) die(1, cmd, "%s is a directory, not a file", path);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) die(1, cmd, "out of memory");
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            if (!buf) die(1, cmd, "out of memory reading %s", path);
        }
    }
    if (ferror(f)) die(1, cmd, "error reading %s: %s", path, strerror(errno));
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

int32_t *tokenize_or_die(const char *cmd, const moe_model *m, const char *text, size_t len, int flags, int *n) {
    moe_err err = {{0}};
    int cap = (int)(len < (size_t)INT_MAX / 2 ? len : (size_t)INT_MAX / 2) + 8;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    if (!ids) die(1, cmd, "out of memory");
    int k = moe_tokenize(m, text, len, flags, ids, cap, &err);
    if (k < 0) die(1, cmd, "%s", err.msg);
    if (k > cap) { /* never for byte-level tokenizers; guard anyway */
        ids = realloc(ids, sizeof *ids * (size_t)k);
        if (!ids) die(1, cmd, "out of memory");
        k = moe_tokenize(m, text, len, flags, ids, k, &err);
        if (k < 0) die(1, cmd, "%s", err.msg);
    }
    *n = k;
    return ids;
}

double log_sum_exp(const float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    double sum = 0; /* in double: a 150k-word vocabulary's small terms still count */
    for (int i = 0; i < n; i++) sum += exp((double)x[i] - max);
    return max + log(sum);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}
