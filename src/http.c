/* http.c - the HTTP/1.1 request parser and response writer of http.h
 * (RFC 9112 message syntax, strict: what a client may send is what we take). */
#include "http.h"

#include <stdio.h>
#include <string.h>

/* tchar of RFC 9110: the characters of methods and header names */
static int is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}
/* field-value characters: visible ASCII, blanks, obs-text (bytes >= 0x80) */
static int is_field_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
static int same_nocase(const char *a, size_t n, const char *b) {
    if (strlen(b) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
    return 1;
}

/* The line starting at pos: *end = index of its CR. Returns 1 (found), 0 (not
 * yet complete) or -1 (a bare CR or LF: only CRLF ends a line). */
static int find_line(const char *buf, size_t len, size_t pos, size_t *end) {
    for (size_t i = pos; i < len; i++) {
        if (buf[i] == '\n') return -1;
        if (buf[i] == '\r') {
            if (i + 1 == len) return 0;
            if (buf[i + 1] != '\n') return -1;
            *end = i;
            return 1;
        }
    }
    return 0;
}

static int fail(const char **why, const char *reason, int status) {
    if (why) *why = reason;
    return status;
}

/* "METHOD SP target SP HTTP/1.x" in line[0..n) */
static int parse_request_line(const char *line, size_t n, http_request *req, const char **why) {
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)line[i])) i++;
    if (i == 0 || i == n || line[i] != ' ') return fail(why, "malformed request line (method)", 400);
    req->method = line;
    req->method_len = i;
    size_t t = ++i;
    while (i < n && (unsigned char)line[i] > 0x20 && (unsigned char)line[i] < 0x7f) i++;
    if (i == t || i == n || line[i] != ' ') return fail(why, "malformed request line (target)", 400);
    req->target = line + t;
    req->target_len = i - t;
    if (!(req->target[0] == '/' || (req->target_len == 1 && req->target[0] == '*')))
        return fail(why, "the request target must be a path", 400);
    const char *v = line + i + 1;
    size_t vn = n - i - 1;
    if (vn != 8 || memcmp(v, "HTTP/", 5) || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
        return fail(why, "malformed request line (version)", 400);
    if (v[5] != '1') return fail(why, "only HTTP/1.x is served", 505);
    req->minor = v[7] - '0';
    return 0;
}

/* "Name: value" in line[0..n) */
static int parse_header(const char *line, size_t n, http_header *h, const char **why) {
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)line[i])) i++;
    if (i == 0 || i == n || line[i] != ':') return fail(why, "malformed header line", 400);
    h->name = line;
    h->name_len = i;
    size_t a = i + 1, b = n;
    for (size_t k = a; k < n; k++)
        if (!is_field_char((unsigned char)line[k])) return fail(why, "control character in a header value", 400);
    while (a < b && (line[a] == ' ' || line[a] == '\t')) a++;
    while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t')) b--;
    h->value = line + a;
    h->value_len = b - a;
    return 0;
}

/* The connection options in "Connection: a, b" decide keep-alive. */
static int wants_keep_alive(const http_request *req) {
    int keep = req->minor >= 1;
    for (int i = 0; i < req->n_headers; i++) {
        const http_header *h = &req->headers[i];
        if (!same_nocase(h->name, h->name_len, "connection")) continue;
        size_t p = 0;
        while (p < h->value_len) {
            size_t q = p;
            while (q < h->value_len && h->value[q] != ',') q++;
            size_t a = p, b = q;
            while (a < b && (h->value[a] == ' ' || h->value[a] == '\t')) a++;
            while (b > a && (h->value[b - 1] == ' ' || h->value[b - 1] == '\t')) b--;
            if (same_nocase(h->value + a, b - a, "close")) return 0;
            if (same_nocase(h->value + a, b - a, "keep-alive")) keep = 1;
            p = q + 1;
        }
    }
    return keep;
}

/* Content-Length: digits only, once, at most max_body. */
static int body_length(const http_request *req, const http_limits *lim, size_t *len, const char **why) {
    int seen = 0;
    *len = 0;
    for (int i = 0; i < req->n_headers; i++) {
        const http_header *h = &req->headers[i];
        if (same_nocase(h->name, h->name_len, "transfer-encoding"))
            return fail(why, "a request body must have a Content-Length (no Transfer-Encoding)", 411);
        if (!same_nocase(h->name, h->name_len, "content-length")) continue;
        if (seen++) return fail(why, "more than one Content-Length", 400);
        if (h->value_len == 0) return fail(why, "malformed Content-Length", 400);
        size_t v = 0;
        for (size_t k = 0; k < h->value_len; k++) {
            unsigned char c = (unsigned char)h->value[k];
            if (c < '0' || c > '9') return fail(why, "malformed Content-Length", 400);
            size_t d = (size_t)(c - '0');
            if (d > lim->max_body || v > (lim->max_body - d) / 10)
                return fail(why, "the request body is too large", 413);
            v = v * 10 + d;
        }
        *len = v;
    }
    return 0;
}

int http_parse_request(const char *buf, size_t len, const http_limits *lim, http_request *req, const char **why) {
    memset(req, 0, sizeof *req);
    if (why) *why = "";
    int max_headers = lim->max_headers < HTTP_MAX_HEADERS ? lim->max_headers : HTTP_MAX_HEADERS;
    size_t pos = 0, end;
    int line_no = 0;
    for (;;) {
        int r = find_line(buf, len, pos, &end);
        if (r < 0) return fail(why, "lines must end in CRLF", 400);
        if (r == 0) { /* the line is not complete yet: is there still room for it? */
            if (len >= lim->max_head) return fail(why, line_no ? "request headers too large" : "request line too long",
                                                  line_no ? 431 : 414);
            return HTTP_INCOMPLETE;
        }
        if (end + 2 > lim->max_head) return fail(why, line_no ? "request headers too large" : "request line too long",
                                                 line_no ? 431 : 414);
        const char *line = buf + pos;
        size_t n = end - pos;
        pos = end + 2;
        if (line_no++ == 0) {
            int rc = parse_request_line(line, n, req, why);
            if (rc) return rc;
            continue;
        }
        if (n == 0) break; /* the empty line ends the head */
        if (line[0] == ' ' || line[0] == '\t') return fail(why, "obsolete header line folding", 400);
        if (req->n_headers == max_headers) return fail(why, "too many request headers", 431);
        int rc = parse_header(line, n, &req->headers[req->n_headers], why);
        if (rc) return rc;
        req->n_headers++;
    }
    req->head_len = pos;
    if (req->minor >= 1 && !http_find_header(req, "host")) return fail(why, "HTTP/1.1 request without Host", 400);
    int rc = body_length(req, lim, &req->body_len, why);
    if (rc) return rc;
    req->keep_alive = wants_keep_alive(req);
    if (len - pos < req->body_len) return HTTP_INCOMPLETE;
    req->body = buf + pos;
    req->total_len = pos + req->body_len;
    return HTTP_COMPLETE;
}

const http_header *http_find_header(const http_request *req, const char *name) {
    for (int i = 0; i < req->n_headers; i++)
        if (same_nocase(req->headers[i].name, req->headers[i].name_len, name)) return &req->headers[i];
    return NULL;
}

int http_method_is(const http_request *req, const char *s) {
    return strlen(s) == req->method_len && !memcmp(req->method, s, req->method_len);
}

int http_path_is(const http_request *req, const char *s) {
    size_t n = 0;
    while (n < req->target_len && req->target[n] != '?') n++;
    return strlen(s) == n && !memcmp(req->target, s, n);
}

const char *http_reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

void http_response_head(strbuf *out, int status, const char *content_type, long long content_length, int keep_alive,
                        const char *extra) {
    char line[256];
    snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\nServer: moe\r\n", status, http_reason(status));
    sb_puts(out, line);
    if (content_type) {
        sb_puts(out, "Content-Type: ");
        sb_puts(out, content_type);
        sb_puts(out, "\r\n");
    }
    if (content_length >= 0) snprintf(line, sizeof line, "Content-Length: %lld\r\n", content_length);
    else snprintf(line, sizeof line, "Transfer-Encoding: chunked\r\n");
    sb_puts(out, line);
    sb_puts(out, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (extra) sb_puts(out, extra);
    sb_puts(out, "\r\n");
}

void http_chunk(strbuf *out, const char *data, size_t n) {
    if (n == 0) return;
    char size[32];
    snprintf(size, sizeof size, "%zx\r\n", n);
    sb_puts(out, size);
    sb_put(out, data, n);
    sb_puts(out, "\r\n");
}

void http_chunk_end(strbuf *out) { sb_puts(out, "0\r\n\r\n"); }

void http_sse_data(strbuf *out, const char *data, size_t n) {
    char size[32];
    snprintf(size, sizeof size, "%zx\r\n", n + 8);
    sb_puts(out, size);
    sb_puts(out, "data: ");
    sb_put(out, data, n);
    sb_puts(out, "\n\n\r\n");
}

int http_secret_equal(const char *a, size_t a_len, const char *b, size_t b_len) {
    /* every byte of the longer string is looked at whatever the contents */
    size_t n = a_len > b_len ? a_len : b_len;
    unsigned diff = (unsigned)(a_len != b_len);
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < a_len ? (unsigned char)a[i] : 0, y = i < b_len ? (unsigned char)b[i] : 0;
        diff |= (unsigned)(x ^ y);
    }
    return diff == 0;
}
