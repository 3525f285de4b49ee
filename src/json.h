/* json.h - a strict JSON reader into an ordered tree, and a writer that
 * reproduces Python's json.dumps byte for byte.
 *
 * Reading follows Python's json.loads (what the requests and configs we read
 * were written for): RFC 8259 grammar, plus NaN / Infinity / -Infinity, which
 * Python accepts too; UTF-8 validated; \u escapes with surrogate pairs (a lone
 * surrogate is refused: it cannot be UTF-8); an integer without fraction or
 * exponent stays an integer (JSON_INT, refused beyond int64), anything else is
 * a double (JSON_FLOAT); object members keep their order, a repeated key
 * replaces the earlier value in its place (as a Python dict does); nesting is
 * limited to JSON_MAX_DEPTH.
 *
 * Writing is json.dumps(v, ensure_ascii=..., indent=..., separators=...,
 * sort_keys=...): floats as Python's repr (shortest round-trip digits,
 * exponent form below 1e-4 and from 1e16), NaN / Infinity as Python writes
 * them, strings escaped as Python escapes them.
 *
 * Ownership: json_parse and the json_new_* constructors return a tree the
 * caller frees with json_free; json_array_push / json_object_set take
 * ownership of the value they are given (also when they fail). */
#ifndef MOE_JSON_H
#define MOE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "moe.h"
#include "strbuf.h"

#define JSON_MAX_DEPTH 512

typedef enum { JSON_NULL, JSON_BOOL, JSON_INT, JSON_FLOAT, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;
struct json_value {
    json_type type;
    int boolean;        /* JSON_BOOL: 0 or 1 */
    int64_t integer;    /* JSON_INT */
    double number;      /* JSON_FLOAT */
    char *str;          /* JSON_STRING: (len) bytes of UTF-8 and a NUL (may hold NUL bytes) */
    size_t len;         /* STRING: bytes; ARRAY, OBJECT: elements / members */
    size_t cap;         /* allocated slots of items (and keys) */
    json_value **items; /* ARRAY: (len) elements; OBJECT: (len) member values, in order */
    char **keys;        /* OBJECT: (len) member names, NUL-terminated */
    size_t *key_lens;   /* OBJECT: (len) their byte lengths */
};

/* Parse len bytes (the whole text is one value, surrounded by white space at
 * most). Returns NULL with err set: "json: line L col C: what". */
json_value *json_parse(const char *text, size_t len, moe_err *err);
void json_free(json_value *v);

/* Object member by name (NULL when absent or v is not an object). */
json_value *json_get(const json_value *v, const char *key);

/* Constructors (NULL when out of memory). */
json_value *json_new(json_type type);
json_value *json_new_bool(int b);
json_value *json_new_int(int64_t i);
json_value *json_new_float(double d);
json_value *json_new_string(const char *s, size_t len);
/* Append to an array; 0, or -1 (out of memory; v is freed). */
int json_array_push(json_value *arr, json_value *v);
/* Set a member of an object (replacing an existing one in its place); 0 or -1. */
int json_object_set(json_value *obj, const char *key, size_t key_len, json_value *v);

typedef struct json_write_opts {
    const char *indent;   /* NULL: one line; else one level of indentation ("" = newlines only) */
    const char *item_sep; /* NULL: Python's default, ", " on one line, "," with indent */
    const char *key_sep;  /* NULL: ": " */
    int sort_keys;        /* members in code point order of their names */
    int ensure_ascii;     /* escape every non-ASCII character as \uXXXX (surrogate pairs) */
} json_write_opts;

/* Append v as json.dumps writes it (opts NULL: the defaults). Returns 0, or -1
 * when the buffer failed (out of memory, over its limit) or v is malformed. */
int json_write(strbuf *out, const json_value *v, const json_write_opts *opts);
/* Python's repr(float) (json.dumps's form for finite values): "0.1", "1e+16",
 * "1.5e-05", "-0.0"; NaN and infinities as "nan", "inf", "-inf". */
void json_write_float_repr(strbuf *out, double d);
/* A JSON string literal, quotes included, as json.dumps escapes it. */
void json_write_string(strbuf *out, const char *s, size_t len, int ensure_ascii);

#endif /* MOE_JSON_H */
