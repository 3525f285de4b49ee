/* fuzz_http.c - libFuzzer target for the HTTP request parser (src/http.c):
 * any input is a complete request, a prefix of one, or a refusal that says
 * why; a complete request's pieces lie inside the input, and every prefix of
 * a complete request is incomplete or the same refusal-free parse.
 *
 * Build and run: tests/fuzz/run.sh [SECONDS] fuzz_http. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const char *p, size_t n, const char *buf, size_t len) {
    return n == 0 || (p >= buf && p + n <= buf + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a copy of exactly size bytes, so ASan sees any read past the end */
    char *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    http_limits lim = {.max_head = 512, .max_headers = 8, .max_body = 256};
    http_request req;
    const char *why = NULL;
    int rc = http_parse_request(buf, size, &lim, &req, &why);
    if (rc >= 400) {
        if (!why || !why[0]) abort();
    } else if (rc == HTTP_COMPLETE) {
        if (req.total_len > size || req.head_len > lim.max_head || req.body_len > lim.max_body) abort();
        if (req.n_headers > lim.max_headers) abort();
        if (!inside(req.method, req.method_len, buf, size) || !inside(req.target, req.target_len, buf, size) ||
            !inside(req.body, req.body_len, buf, size))
            abort();
        for (int i = 0; i < req.n_headers; i++)
            if (!inside(req.headers[i].name, req.headers[i].name_len, buf, size) ||
                !inside(req.headers[i].value, req.headers[i].value_len, buf, size))
                abort();
        /* a strict prefix of a complete request is never complete nor refused */
        size_t cut = req.total_len ? (size_t)data[0] % req.total_len : 0;
        http_request p;
        if (http_parse_request(buf, cut, &lim, &p, &why) != HTTP_INCOMPLETE) abort();
    } else if (rc != HTTP_INCOMPLETE) {
        abort();
    }
    free(buf);
    return 0;
}
