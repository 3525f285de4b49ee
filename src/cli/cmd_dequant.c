/* cmd_dequant.c - `moe dequant`: one tensor's values as float32, for tests
 * and for studying quantization. GGUF tensors are named as in the file
 * (blk.0.attn_q.weight) and written in GGUF order (ne[0] fastest), which is
 * also the row-major order of a .moe tensor (last dimension fastest). Only
 * the directory is parsed: the rest of the file need not be a model moe runs. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "file.h"
#include "gguf.h"
#include "quant.h"

static const char *CMD = "dequant";

static void help(void) {
    printf("usage: moe dequant -m FILE --tensor NAME -o OUT.f32\n\n"
           "Writes the tensor's values as float32 little-endian, row-major: for a GGUF file\n"
           "NAME is the file's own name (blk.0.attn_q.weight) and ne[0] is fastest; for a\n"
           ".moe file the last dimension is fastest. Works for every float and quantized\n"
           "type this build computes with.\n");
}

/* Map the file read-only. */
static const uint8_t *map_file(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(1, CMD, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) die(1, CMD, "%s: not a non-empty regular file", path);
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) die(1, CMD, "cannot map %s: %s", path, strerror(errno));
    *size = (size_t)st.st_size;
    return p;
}

/* Write rows x n values of dtype d from data, dequantized row by row. */
static void write_rows(const char *out, moe_dtype d, const void *data, uint64_t rows, uint64_t n) {
    if (n > (1u << 30)) die(1, CMD, "rows of %llu values are too long", (unsigned long long)n);
    FILE *f = fopen(out, "wb");
    if (!f) die(1, CMD, "cannot write %s: %s", out, strerror(errno));
    float *row = malloc(sizeof *row * (size_t)n);
    if (!row) die(1, CMD, "out of memory");
    size_t row_bytes = dtype_row_bytes(d, n);
    for (uint64_t r = 0; r < rows; r++) {
        dequantize_row_at(d, data, row_bytes, (size_t)r, row, (int)n);
        if (fwrite(row, sizeof *row, (size_t)n, f) != (size_t)n) die(1, CMD, "cannot write %s", out);
    }
    free(row);
    if (fclose(f) != 0) die(1, CMD, "cannot write %s", out);
}

int cmd_dequant(int argc, char **argv) {
    args a = {CMD, argc, 0, argv};
    const char *model = NULL, *name = NULL, *out = NULL, *flag;
    while (args_next(&a, &flag)) {
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) { help(); return 0; }
        else if (!strcmp(flag, "-m") || !strcmp(flag, "--model")) model = args_value(&a, flag);
        else if (!strcmp(flag, "--tensor")) name = args_value(&a, flag);
        else if (!strcmp(flag, "-o") || !strcmp(flag, "--output")) out = args_value(&a, flag);
        else die(EXIT_USAGE, CMD, "unknown flag \"%s\" (see moe dequant -h)", flag);
    }
    if (!model || !name || !out) die(EXIT_USAGE, CMD, "-m, --tensor and -o are required (see moe dequant -h)");
    refuse_model_as_output(CMD, model, out, "-o");
    size_t size;
    const uint8_t *buf = map_file(model, &size);
    moe_err err = {{0}};
    if (gguf_is(buf, size)) {
        gguf_file g;
        if (gguf_parse(&g, buf, size, &err)) die(1, CMD, "%s: %s", model, err.msg);
        const gguf_tensor *t = gguf_find_tensor(&g, name);
        if (!t) die(1, CMD, "%s: no tensor %s", model, name);
        int d = ggml_type_to_dtype(t->type);
        if (d < 0) die(1, CMD, "%s: ggml type %s (%d) is not supported", name, ggml_type_name(t->type), t->type);
        write_rows(out, (moe_dtype)d, t->data, t->ne[1] * t->ne[2] * t->ne[3], t->ne[0]);
        gguf_free(&g);
    } else {
        moe_file f;
        if (moef_parse(&f, buf, size, &err)) die(1, CMD, "%s: %s", model, err.msg);
        const moe_tensor *t = moef_tensor(&f, name);
        if (!t) die(1, CMD, "%s: no tensor %s", model, name);
        if (!dtype_info(t->dtype)->is_float && !dtype_info(t->dtype)->is_quant)
            die(1, CMD, "%s: dtype %s is not a float or quantized type", name, dtype_name(t->dtype));
        uint64_t n = t->dims[t->n_dims - 1], rows = 1;
        for (int i = 0; i < t->n_dims - 1; i++) rows *= t->dims[i];
        write_rows(out, t->dtype, t->data, rows, n);
        moef_close(&f);
    }
    munmap((void *)(uintptr_t)buf, size);
    return 0;
}
