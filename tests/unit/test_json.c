/* test_json.c - the JSON reader and writer (src/json.c). Expected strings are
 * what Python 3's json.loads / json.dumps / repr give, worked out by hand from
 * their documented rules (see json.h). */
#include "json.h"
#include "test_util.h"

#include <math.h>

/* dumps(loads(in)) with the given options equals want. */
static void roundtrip(const char *in, const json_write_opts *o, const char *want) {
    moe_err err = {{0}};
    json_value *v = json_parse(in, strlen(in), &err);
    CHECK(v != NULL, "parse %s: %s", in, err.msg);
    if (!v) return;
    strbuf b = {0};
    CHECK(json_write(&b, v, o) == 0, "write %s", in);
    CHECK(b.p && strcmp(b.p, want) == 0, "%s -> [%s], want [%s]", in, b.p ? b.p : "", want);
    sb_free(&b);
    json_free(v);
}

static void refused(const char *in, size_t n, const char *what) {
    moe_err err = {{0}};
    json_value *v = json_parse(in, n, &err);
    CHECK(v == NULL, "accepted bad json (%s)", what);
    CHECK(v || strstr(err.msg, what), "%s: message [%s] lacks [%s]", in, err.msg, what);
    json_free(v);
}

static void float_repr(double d, const char *want) {
    strbuf b = {0};
    json_write_float_repr(&b, d);
    CHECK(b.p && strcmp(b.p, want) == 0, "repr(%.17g) = [%s], want [%s]", d, b.p ? b.p : "", want);
    sb_free(&b);
}

int main(void) {
    /* Python's default separators ", " and ": "; key order kept */
    roundtrip("{\"b\":1,\"a\":[1,2,{}],\"c\":[]}", NULL, "{\"b\": 1, \"a\": [1, 2, {}], \"c\": []}");
    roundtrip(" [ true , false , null ] ", NULL, "[true, false, null]");
    /* a repeated key keeps its first place and its last value */
    roundtrip("{\"a\":1,\"b\":2,\"a\":3}", NULL, "{\"a\": 3, \"b\": 2}");
    /* int vs float stay distinct: 1.0 prints as 1.0, 1 as 1, 1e2 as 100.0 */
    roundtrip("[1, 1.0, -0, -0.0, 1e2, 1E-5, 0.1, 123456789012345678]", NULL,
              "[1, 1.0, 0, -0.0, 100.0, 1e-05, 0.1, 123456789012345678]");
    roundtrip("[NaN, Infinity, -Infinity, 1e400]", NULL, "[NaN, Infinity, -Infinity, Infinity]");
    /* escapes: ensure_ascii=False keeps non-ASCII, escapes controls as \u00XX,
     * \u escapes (incl. a surrogate pair) decode to UTF-8 */
    roundtrip("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0001\\u007f\\u00e9\\ud83d\\ude00 \xe6\x97\xa5\"", NULL,
              "\"a\\\"b\\\\c/d\\b\\f\\n\\r\\t\\u0001\x7f\xc3\xa9\xf0\x9f\x98\x80 \xe6\x97\xa5\"");
    json_write_opts ascii = {.ensure_ascii = 1};
    roundtrip("\"\xc3\xa9\xf0\x9f\x98\x80\"", &ascii, "\"\\u00e9\\ud83d\\ude00\"");
    /* indent: newlines and the indent string per level, "," between items,
     * empty containers stay [] / {} */
    json_write_opts ind = {.indent = "    "};
    roundtrip("{\"a\":[1,{\"b\":null}],\"c\":{},\"d\":[]}", &ind,
              "{\n    \"a\": [\n        1,\n        {\n            \"b\": null\n        }\n    ],\n"
              "    \"c\": {},\n    \"d\": []\n}");
    json_write_opts ind0 = {.indent = ""};
    roundtrip("[1,[2]]", &ind0, "[\n1,\n[\n2\n]\n]");
    json_write_opts seps = {.item_sep = ",", .key_sep = ":"};
    roundtrip("{\"a\": [1, 2], \"b\": \"x\"}", &seps, "{\"a\":[1,2],\"b\":\"x\"}");
    json_write_opts sorted = {.sort_keys = 1};
    roundtrip("{\"b\":1,\"\xc3\xa9\":2,\"a\":{\"z\":1,\"y\":2},\"B\":3}", &sorted,
              "{\"B\": 3, \"a\": {\"y\": 2, \"z\": 1}, \"b\": 1, \"\xc3\xa9\": 2}");
    /* \u0000 inside a string and a key */
    roundtrip("{\"k\\u0000\":\"v\\u0000w\"}", NULL, "{\"k\\u0000\": \"v\\u0000w\"}");

    /* Python's float repr: shortest round-trip digits; fixed for exponents in
     * [-4, 16), else d.ddde+XX with at least two exponent digits */
    float_repr(0.1, "0.1");
    float_repr(0.1 + 0.2, "0.30000000000000004");
    float_repr(1.0, "1.0");
    float_repr(-2.5, "-2.5");
    float_repr(1e15, "1000000000000000.0");
    float_repr(1e16, "1e+16");
    float_repr(1.5e16, "1.5e+16");
    float_repr(123456789.125, "123456789.125");
    float_repr(0.0001, "0.0001");
    float_repr(0.00001, "1e-05");
    float_repr(0.000123, "0.000123");
    float_repr(1.5e-7, "1.5e-07");
    float_repr(1e100, "1e+100");
    float_repr(5e-324, "5e-324");
    float_repr(1.7976931348623157e308, "1.7976931348623157e+308");
    float_repr(2.2250738585072014e-308, "2.2250738585072014e-308");
    float_repr(9007199254740993.0, "9007199254740992.0");
    float_repr(-0.0, "-0.0");
    float_repr(100.0, "100.0");
    float_repr(1.0 / 3, "0.3333333333333333");
    float_repr(2.0 / 3, "0.6666666666666666");

    /* a tree built by hand writes the same way */
    json_value *o = json_new(JSON_OBJECT);
    CHECK(json_object_set(o, "x", 1, json_new_int(-7)) == 0, "set");
    json_value *arr = json_new(JSON_ARRAY);
    CHECK(json_array_push(arr, json_new_string("q\"", 2)) == 0, "push");
    CHECK(json_array_push(arr, json_new_float(2.0)) == 0, "push");
    CHECK(json_object_set(o, "y", 1, arr) == 0, "set");
    CHECK(json_get(o, "x") && json_get(o, "x")->integer == -7, "get");
    CHECK(json_get(o, "z") == NULL, "get absent");
    strbuf b = {0};
    json_write(&b, o, NULL);
    CHECK(b.p && !strcmp(b.p, "{\"x\": -7, \"y\": [\"q\\\"\", 2.0]}"), "built: %s", b.p);
    sb_free(&b);
    json_free(o);

    /* strictness: each refused with a message naming the problem */
    refused("", 0, "unexpected end");
    refused("[1,]", 4, "unexpected character");
    refused("{\"a\" 1}", 7, "expected ':'");
    refused("{a:1}", 5, "member name");
    refused("[1 2]", 5, "expected ',' or ']'");
    refused("01", 2, "extra data");
    refused("1.", 2, "digits after");
    refused("1e", 2, "exponent");
    refused("+1", 2, "unexpected character");
    refused("\"abc", 4, "unterminated");
    refused("\"a\nb\"", 5, "control character");
    refused("\"\\x41\"", 6, "invalid escape");
    refused("\"\\u12\"", 6, "four hex");
    refused("\"\\ud800\"", 8, "without its low half");
    refused("\"\\udc00\"", 8, "lone low surrogate");
    refused("\"\xc3\"", 3, "invalid UTF-8");
    refused("\"\xed\xa0\x80\"", 5, "invalid UTF-8"); /* an encoded surrogate */
    refused("\"\xc0\xaf\"", 4, "invalid UTF-8");     /* overlong */
    refused("99999999999999999999", 20, "64-bit");
    refused("[1] x", 5, "extra data");
    refused("tru", 3, "unexpected character");
    refused("[\"a\\u0000\0\"]", 11, "control character"); /* a raw NUL byte */
    {
        /* nesting: JSON_MAX_DEPTH levels parse, one more is refused */
        size_t n = JSON_MAX_DEPTH + 1;
        char *deep = malloc(2 * n + 1);
        for (size_t i = 0; i < n; i++) deep[i] = '[', deep[2 * n - 1 - i] = ']';
        refused(deep, 2 * n, "nested too deeply");
        moe_err err;
        json_value *v = json_parse(deep + 1, 2 * n - 2, &err);
        CHECK(v != NULL, "%d levels: %s", JSON_MAX_DEPTH, err.msg);
        json_free(v);
        free(deep);
    }
    /* the error names line and column */
    {
        moe_err err = {{0}};
        json_value *v = json_parse("{\n  \"a\": tru\n}", 14, &err);
        CHECK(!v && strstr(err.msg, "line 2 col 8"), "position: %s", err.msg);
        json_free(v);
    }
    return test_summary("test_json");
}
