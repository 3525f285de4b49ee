/* fuzz_json.c - libFuzzer target for the JSON reader and writer (src/json.c):
 * any input either parses or is refused with a message; what parses writes
 * (compact, indented, sorted, ASCII) and reads back to the same text.
 *
 * Build and run: tests/fuzz/run.sh [SECONDS] fuzz_json. */
#include <stdlib.h>
#include <string.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    moe_err err;
    json_value *v = json_parse((const char *)data, size, &err);
    if (!v) {
        if (!err.msg[0]) abort(); /* a refusal always says why */
        return 0;
    }
    json_write_opts opts[4] = {{0}, {.indent = "  "}, {.sort_keys = 1, .item_sep = ",", .key_sep = ":"}, {.ensure_ascii = 1}};
    for (int k = 0; k < 4; k++) {
        strbuf a = {0}, b = {0};
        if (json_write(&a, v, &opts[k])) abort();
        json_value *w = json_parse(a.p, a.n, &err);
        if (!w || json_write(&b, w, &opts[k]) || a.n != b.n || memcmp(a.p, b.p, a.n)) abort();
        json_free(w);
        sb_free(&a);
        sb_free(&b);
    }
    json_free(v);
    return 0;
}
