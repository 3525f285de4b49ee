/* test_http.c - the HTTP/1.1 request parser and response writer (src/http.c).
 * Each case's expected status follows RFC 9112 / 9110 as read by hand: what a
 * complete request gives, what every prefix of it gives (incomplete, never an
 * error), and what each kind of malformed or oversized request is refused with. */
#include "http.h"
#include "test_util.h"

static const http_limits LIM = {.max_head = 256, .max_headers = 4, .max_body = 100};

static int parse(const char *s, http_request *r, const char **why) {
    return http_parse_request(s, strlen(s), &LIM, r, why);
}

static void expect_status(int line, const char *s, int want) {
    http_request r;
    const char *why = NULL;
    int got = parse(s, &r, &why);
    CHECK(got == want, "line %d: status %d, want %d (%s)", line, got, want, why ? why : "");
    if (got >= 400) CHECK(why && why[0], "line %d: a refusal says why", line);
}
#define STATUS(s, want) expect_status(__LINE__, s, want)

static void complete_request(void) {
    const char *s = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                    "X-Pad:   spaced value \t\r\n\r\nhello" "GET / HTTP/1.1\r\n";
    http_request r;
    const char *why;
    size_t len = strlen(s);
    CHECK(http_parse_request(s, len, &LIM, &r, &why) == HTTP_COMPLETE, "complete: %s", why);
    CHECK(http_method_is(&r, "POST") && !http_method_is(&r, "POS"), "method");
    CHECK(http_path_is(&r, "/v1/chat/completions") && !http_path_is(&r, "/v1/chat"), "path without the query");
    CHECK(r.minor == 1 && r.keep_alive == 1, "HTTP/1.1 keeps the connection");
    CHECK(r.n_headers == 3, "3 headers, got %d", r.n_headers);
    const http_header *h = http_find_header(&r, "x-PAD");
    CHECK(h && h->value_len == 12 && !memcmp(h->value, "spaced value", 12), "value trimmed");
    CHECK(r.body_len == 5 && !memcmp(r.body, "hello", 5), "body");
    size_t total = strlen("POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                          "X-Pad:   spaced value \t\r\n\r\nhello");
    CHECK(r.total_len == total, "total %zu, want %zu (the pipelined request is not consumed)", r.total_len, total);
    /* every prefix is incomplete, never an error */
    int bad = 0;
    for (size_t n = 0; n < total; n++)
        if (http_parse_request(s, n, &LIM, &r, &why) != HTTP_INCOMPLETE) bad++;
    CHECK(bad == 0, "%d prefixes were not 'incomplete'", bad);
}

static void keep_alive(void) {
    http_request r;
    const char *why;
    CHECK(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, Close\r\n\r\n", &r, &why) == HTTP_COMPLETE &&
              r.keep_alive == 0, "close among options");
    CHECK(parse("GET / HTTP/1.0\r\n\r\n", &r, &why) == HTTP_COMPLETE && r.keep_alive == 0, "1.0 closes");
    CHECK(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r, &why) == HTTP_COMPLETE && r.keep_alive == 1,
          "1.0 with keep-alive");
    CHECK(parse("GET / HTTP/1.0\r\nContent-Length: 0\r\n\r\n", &r, &why) == HTTP_COMPLETE && r.body_len == 0, "empty");
}

static void refusals(void) {
    STATUS("GARBAGE\r\n\r\n", 400);
    STATUS("GET /\r\n\r\n", 400);
    STATUS("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    STATUS("GET / HTTP/1.1\nHost: a\n\n", 400);           /* bare LF */
    STATUS("GET / HTTP/1.1\rHost: a\r\n\r\n", 400);        /* bare CR */
    STATUS("GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n", 400); /* absolute form */
    STATUS("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    STATUS("GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400);
    STATUS("GET / HTTP/1.1\r\n\r\n", 400);                 /* no Host */
    STATUS("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);     /* blank before the colon */
    STATUS("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400);
    STATUS("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", 400);
    STATUS("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400);
    STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400);
    STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
    STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400);
    STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", HTTP_INCOMPLETE);
    STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", 413);
    STATUS("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413);
    STATUS("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 411);
    STATUS("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", HTTP_COMPLETE);
    STATUS("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", 431);
    /* head size: a header line running past max_head, complete or not */
    char big[400];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\nX: %0300d\r\n\r\n", 0);
    STATUS(big, 431);
    big[strlen(big) - 10] = 0; /* cut inside the long value */
    STATUS(big, 431);
    snprintf(big, sizeof big, "GET /%0300d HTTP/1.1\r\n", 0);
    STATUS(big, 414);
    /* just inside the limit: 256 bytes of head */
    char fit[300];
    int pad = 256 - (int)strlen("GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n");
    snprintf(fit, sizeof fit, "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n", pad, 0);
    CHECK(strlen(fit) == 256, "fit is %zu bytes", strlen(fit));
    STATUS(fit, HTTP_COMPLETE);
}

static void writer(void) {
    strbuf b = {0};
    http_response_head(&b, 200, "application/json", 2, 1, NULL);
    const char *want = "HTTP/1.1 200 OK\r\nServer: moe\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                       "Connection: keep-alive\r\n\r\n";
    CHECK(b.p && !strcmp(b.p, want), "head: %s", b.p);
    b.n = 0;
    http_response_head(&b, 503, "text/event-stream", -1, 0, "Cache-Control: no-cache\r\n");
    want = "HTTP/1.1 503 Service Unavailable\r\nServer: moe\r\nContent-Type: text/event-stream\r\n"
           "Transfer-Encoding: chunked\r\nConnection: close\r\nCache-Control: no-cache\r\n\r\n";
    CHECK(!strcmp(b.p, want), "chunked head: %s", b.p);
    b.n = 0;
    http_chunk(&b, "0123456789abcdefX", 17);
    http_chunk(&b, "", 0);
    http_sse_data(&b, "{}", 2);
    http_chunk_end(&b);
    want = "11\r\n0123456789abcdefX\r\n" "a\r\ndata: {}\n\n\r\n" "0\r\n\r\n";
    CHECK(!strcmp(b.p, want), "chunks: %s", b.p);
    sb_free(&b);
}

static void secrets(void) {
    CHECK(http_secret_equal("key", 3, "key", 3), "equal");
    CHECK(!http_secret_equal("key", 3, "kex", 3), "one byte differs");
    CHECK(!http_secret_equal("key", 3, "key2", 4), "prefix");
    CHECK(!http_secret_equal("", 0, "k", 1), "empty");
    CHECK(http_secret_equal("", 0, "", 0), "both empty");
}

int main(void) {
    complete_request();
    keep_alive();
    refusals();
    writer();
    secrets();
    return test_summary("test_http");
}
