/* http.h - a small, strict HTTP/1.1 request parser over a byte buffer, and
 * the response pieces a server writes (status line and headers, chunked
 * transfer encoding, server-sent events).
 *
 * The parser is pure: it reads the bytes received so far and says whether a
 * whole request is there, more bytes are needed, or the request is bad (with
 * the status to answer: 400, 411, 413, 431, 501, 505). It keeps pointers into
 * the caller's buffer, copies nothing and allocates nothing, so a socket loop
 * and a fuzzer call it the same way.
 *
 * Accepted: "METHOD SP target SP HTTP/1.x CRLF", header lines "Name: value
 * CRLF" (token names, no obsolete line folding), an empty line, then a body of
 * exactly Content-Length bytes. Refused: bare LF line ends, white space before
 * a colon, control characters, repeated or malformed Content-Length, any
 * Transfer-Encoding (411: a request body must state its length). */
#ifndef MOE_HTTP_H
#define MOE_HTTP_H

#include <stddef.h>

#include "strbuf.h"

#define HTTP_MAX_HEADERS 100 /* most headers a request may carry (limits.max_headers <= this) */

typedef struct http_limits {
    size_t max_head;    /* bytes of request line + headers + empty line; more: 431 */
    int max_headers;    /* header lines; more: 431 */
    size_t max_body;    /* Content-Length; more: 413 */
} http_limits;

typedef struct http_header {
    const char *name, *value; /* into the buffer, not NUL-terminated; value without surrounding blanks */
    size_t name_len, value_len;
} http_header;

typedef struct http_request {
    const char *method, *target; /* into the buffer, not NUL-terminated */
    size_t method_len, target_len;
    int minor;                   /* HTTP/1.minor */
    http_header headers[HTTP_MAX_HEADERS];
    int n_headers;
    const char *body;            /* (body_len) bytes into the buffer */
    size_t body_len;
    size_t head_len;             /* bytes up to and including the empty line */
    size_t total_len;            /* head_len + body_len: where the next request starts */
    int keep_alive;              /* 1.1 unless "Connection: close"; 1.0 only with "keep-alive" */
} http_request;

enum {
    HTTP_INCOMPLETE = 0, /* a prefix of a valid request: read more */
    HTTP_COMPLETE = 1,   /* req filled; req->total_len bytes used */
};

/* Parse the request at the start of buf[0..len). Returns HTTP_COMPLETE,
 * HTTP_INCOMPLETE, or the status code of the refusal (>= 400) with *why set
 * to a short static reason. */
int http_parse_request(const char *buf, size_t len, const http_limits *lim, http_request *req, const char **why);

/* The header's value (first occurrence, name compared without case), or NULL. */
const http_header *http_find_header(const http_request *req, const char *name);
/* 1 if the method / target is exactly s. The target is compared without its query. */
int http_method_is(const http_request *req, const char *s);
int http_path_is(const http_request *req, const char *s);

const char *http_reason(int status);

/* The status line and headers of a response, then the empty line.
 * content_length < 0: "Transfer-Encoding: chunked" (then http_chunk ...,
 * http_chunk_end). extra: more header lines, each ending in CRLF, or NULL. */
void http_response_head(strbuf *out, int status, const char *content_type, long long content_length, int keep_alive,
                        const char *extra);
/* One chunk of a chunked body (nothing for n = 0: that would end the body). */
void http_chunk(strbuf *out, const char *data, size_t n);
/* The last (empty) chunk. */
void http_chunk_end(strbuf *out);
/* A server-sent event "data: ...\n\n" as one chunk; data must not hold a
 * newline (JSON written on one line has none). */
void http_sse_data(strbuf *out, const char *data, size_t n);

/* Compare two byte strings in time that depends only on their lengths (for
 * secrets such as an API key); 1 when equal. */
int http_secret_equal(const char *a, size_t a_len, const char *b, size_t b_len);

#endif /* MOE_HTTP_H */
