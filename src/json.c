/* json.c - strict JSON reader and Python-exact writer (json.h). */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode.h"
#include "util.h"

/* ================================================================ tree */

json_value *json_new(json_type type) {
    json_value *v = calloc(1, sizeof *v);
    if (v) v->type = type;
    return v;
}
json_value *json_new_bool(int b) {
    json_value *v = json_new(JSON_BOOL);
    if (v) v->boolean = b != 0;
    return v;
}
json_value *json_new_int(int64_t i) {
    json_value *v = json_new(JSON_INT);
    if (v) v->integer = i;
    return v;
}
json_value *json_new_float(double d) {
    json_value *v = json_new(JSON_FLOAT);
    if (v) v->number = d;
    return v;
}
json_value *json_new_string(const char *s, size_t len) {
    json_value *v = json_new(JSON_STRING);
    if (!v) return NULL;
    v->str = malloc(len + 1);
    if (!v->str) {
        free(v);
        return NULL;
    }
    if (len) memcpy(v->str, s, len);
    v->str[len] = 0;
    v->len = len;
    return v;
}

void json_free(json_value *v) {
    if (!v) return;
    for (size_t i = 0; i < v->len && v->items; i++) {
        json_free(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->key_lens);
    free(v->str);
    free(v);
}

/* One more slot in an array or object. */
static int grow(json_value *c) {
    if (c->len < c->cap) return 0;
    size_t cap = c->cap ? c->cap * 2 : 4;
    if (cap > ((size_t)-1) / sizeof(void *) / 2) return -1;
    json_value **items = realloc(c->items, cap * sizeof *items);
    if (!items) return -1;
    c->items = items;
    if (c->type == JSON_OBJECT) {
        char **keys = realloc(c->keys, cap * sizeof *keys);
        if (!keys) return -1;
        c->keys = keys;
        size_t *lens = realloc(c->key_lens, cap * sizeof *lens);
        if (!lens) return -1;
        c->key_lens = lens;
    }
    c->cap = cap;
    return 0;
}

int json_array_push(json_value *arr, json_value *v) {
    if (!v || !arr || arr->type != JSON_ARRAY || grow(arr)) {
        json_free(v);
        return -1;
    }
    arr->items[arr->len++] = v;
    return 0;
}

static long find_key(const json_value *o, const char *key, size_t n) {
    for (size_t i = 0; i < o->len; i++)
        if (o->key_lens[i] == n && memcmp(o->keys[i], key, n) == 0) return (long)i;
    return -1;
}

int json_object_set(json_value *obj, const char *key, size_t key_len, json_value *v) {
    if (!v || !obj || obj->type != JSON_OBJECT) {
        json_free(v);
        return -1;
    }
    long at = find_key(obj, key, key_len);
    if (at >= 0) { /* a dict keeps the first position and the last value */
        json_free(obj->items[at]);
        obj->items[at] = v;
        return 0;
    }
    char *k = malloc(key_len + 1);
    if (!k || grow(obj)) {
        free(k);
        json_free(v);
        return -1;
    }
    memcpy(k, key, key_len);
    k[key_len] = 0;
    obj->keys[obj->len] = k;
    obj->key_lens[obj->len] = key_len;
    obj->items[obj->len++] = v;
    return 0;
}

json_value *json_get(const json_value *v, const char *key) {
    if (!v || v->type != JSON_OBJECT) return NULL;
    long at = find_key(v, key, strlen(key));
    return at < 0 ? NULL : v->items[at];
}

/* ================================================================ reader */

typedef struct {
    const char *s;
    size_t n, i;
    int depth;
    moe_err *err;
    strbuf tmp;  /* string being decoded */
} reader;

static json_value *fail(reader *r, const char *what) {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < r->i && k < r->n; k++) {
        if (r->s[k] == '\n') line++, col = 1;
        else col++;
    }
    moe_fail(r->err, "json: line %zu col %zu: %s", line, col, what);
    return NULL;
}

static void skip_ws(reader *r) {
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' || r->s[r->i] == '\r'))
        r->i++;
}

static int literal(reader *r, const char *word) {
    size_t k = strlen(word);
    if (r->n - r->i < k || memcmp(r->s + r->i, word, k) != 0) return 0;
    r->i += k;
    return 1;
}

static int hex4(reader *r, uint32_t *out) {
    if (r->n - r->i < 4) return -1;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        char c = r->s[r->i + k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + (uint32_t)d;
    }
    r->i += 4;
    *out = v;
    return 0;
}

/* A string literal (at the opening quote) decoded into r->tmp. */
static int read_string(reader *r) {
    r->tmp.n = 0;
    if (sb_reserve(&r->tmp, 1)) return fail(r, "out of memory"), -1;
    r->tmp.p[0] = 0;
    r->i++; /* the quote */
    for (;;) {
        if (r->i >= r->n) return fail(r, "unterminated string"), -1;
        unsigned char c = (unsigned char)r->s[r->i];
        if (c == '"') {
            r->i++;
            break;
        }
        if (c < 0x20) return fail(r, "control character in a string (escape it)"), -1;
        if (c == '\\') {
            if (r->i + 1 >= r->n) return fail(r, "unterminated string"), -1;
            char e = r->s[r->i + 1], plain = 0;
            switch (e) {
            case '"': case '\\': case '/': plain = e; break;
            case 'b': plain = '\b'; break;
            case 'f': plain = '\f'; break;
            case 'n': plain = '\n'; break;
            case 'r': plain = '\r'; break;
            case 't': plain = '\t'; break;
            case 'u': break;
            default: return fail(r, "invalid escape in a string"), -1;
            }
            r->i += 2;
            if (plain) {
                sb_putc(&r->tmp, plain);
                continue;
            }
            uint32_t cp;
            if (hex4(r, &cp)) return fail(r, "\\u needs four hex digits"), -1;
            if (cp >= 0xdc00 && cp <= 0xdfff) return fail(r, "lone low surrogate \\u escape"), -1;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t lo;
                if (r->n - r->i < 2 || r->s[r->i] != '\\' || r->s[r->i + 1] != 'u')
                    return fail(r, "high surrogate \\u escape without its low half"), -1;
                r->i += 2;
                if (hex4(r, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return fail(r, "high surrogate \\u escape without its low half"), -1;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            uint8_t u[4];
            sb_put(&r->tmp, u, (size_t)utf8_encode(cp, u));
            continue;
        }
        int k;
        uint32_t cp = utf8_decode((const uint8_t *)r->s + r->i, r->n - r->i, &k);
        if (cp >= UNI_BAD_BASE) return fail(r, "invalid UTF-8 in a string"), -1;
        sb_put(&r->tmp, r->s + r->i, (size_t)k);
        r->i += (size_t)k;
    }
    return r->tmp.failed ? (fail(r, "out of memory"), -1) : 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static json_value *read_number(reader *r) {
    size_t start = r->i;
    int is_float = 0;
    if (r->s[r->i] == '-') r->i++;
    if (r->i < r->n && r->s[r->i] == '0') r->i++;
    else if (r->i < r->n && is_digit(r->s[r->i]))
        while (r->i < r->n && is_digit(r->s[r->i])) r->i++;
    else return fail(r, "invalid number");
    if (r->i < r->n && r->s[r->i] == '.') {
        is_float = 1;
        r->i++;
        if (r->i >= r->n || !is_digit(r->s[r->i])) return fail(r, "invalid number (digits after '.')");
        while (r->i < r->n && is_digit(r->s[r->i])) r->i++;
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        is_float = 1;
        r->i++;
        if (r->i < r->n && (r->s[r->i] == '+' || r->s[r->i] == '-')) r->i++;
        if (r->i >= r->n || !is_digit(r->s[r->i])) return fail(r, "invalid number (exponent digits)");
        while (r->i < r->n && is_digit(r->s[r->i])) r->i++;
    }
    size_t len = r->i - start;
    char buf[128], *text = len < sizeof buf ? buf : malloc(len + 1);
    if (!text) return fail(r, "out of memory");
    memcpy(text, r->s + start, len);
    text[len] = 0;
    json_value *v = NULL;
    if (is_float) {
        /* strtod rounds correctly, as Python's float() does; overflow gives inf like Python */
        v = json_new_float(strtod(text, NULL));
    } else {
        errno = 0;
        long long i = strtoll(text, NULL, 10);
        if (errno == ERANGE) {
            if (text != buf) free(text);
            r->i = start;
            return fail(r, "integer out of the 64-bit range");
        }
        v = json_new_int((int64_t)i);
    }
    if (text != buf) free(text);
    return v ? v : fail(r, "out of memory");
}

static json_value *read_value(reader *r);

/* After an array element or object member: 1 after a ',' (another follows),
 * 0 after the closing bracket, -1 (failed, naming `what`) on anything else. */
static int next_item(reader *r, char close, const char *what) {
    skip_ws(r);
    if (r->i < r->n && r->s[r->i] == ',') {
        r->i++;
        return 1;
    }
    if (r->i < r->n && r->s[r->i] == close) {
        r->i++;
        return 0;
    }
    fail(r, what);
    return -1;
}

static json_value *read_array(reader *r) {
    json_value *a = json_new(JSON_ARRAY);
    if (!a) return fail(r, "out of memory");
    r->i++;
    skip_ws(r);
    if (r->i < r->n && r->s[r->i] == ']') {
        r->i++;
        return a;
    }
    for (;;) {
        json_value *v = read_value(r);
        if (!v) break;
        if (json_array_push(a, v)) {
            fail(r, "out of memory");
            break;
        }
        int more = next_item(r, ']', "expected ',' or ']' in an array");
        if (more == 0) return a;
        if (more < 0) break;
    }
    json_free(a);
    return NULL;
}

static json_value *read_object(reader *r) {
    json_value *o = json_new(JSON_OBJECT);
    if (!o) return fail(r, "out of memory");
    r->i++;
    skip_ws(r);
    if (r->i < r->n && r->s[r->i] == '}') {
        r->i++;
        return o;
    }
    for (;;) {
        skip_ws(r);
        if (r->i >= r->n || r->s[r->i] != '"') {
            fail(r, "expected a member name (a string) in an object");
            break;
        }
        if (read_string(r)) break;
        size_t kn = r->tmp.n;
        char *key = malloc(kn + 1);
        if (!key) {
            fail(r, "out of memory");
            break;
        }
        memcpy(key, r->tmp.p, kn + 1);
        skip_ws(r);
        if (r->i >= r->n || r->s[r->i] != ':') {
            free(key);
            fail(r, "expected ':' after a member name");
            break;
        }
        r->i++;
        json_value *v = read_value(r);
        if (!v) {
            free(key);
            break;
        }
        int bad = json_object_set(o, key, kn, v);
        free(key);
        if (bad) {
            fail(r, "out of memory");
            break;
        }
        int more = next_item(r, '}', "expected ',' or '}' in an object");
        if (more == 0) return o;
        if (more < 0) break;
    }
    json_free(o);
    return NULL;
}

static json_value *read_value(reader *r) {
    skip_ws(r);
    if (r->i >= r->n) return fail(r, "unexpected end of input");
    if (r->depth >= JSON_MAX_DEPTH) return fail(r, "nested too deeply");
    char c = r->s[r->i];
    json_value *v;
    switch (c) {
    case '{':
    case '[':
        r->depth++;
        v = c == '{' ? read_object(r) : read_array(r);
        r->depth--;
        return v;
    case '"':
        if (read_string(r)) return NULL;
        v = json_new_string(r->tmp.p, r->tmp.n);
        return v ? v : fail(r, "out of memory");
    case 't': if (literal(r, "true")) return json_new_bool(1); break;
    case 'f': if (literal(r, "false")) return json_new_bool(0); break;
    case 'n': if (literal(r, "null")) return json_new(JSON_NULL); break;
    case 'N': if (literal(r, "NaN")) return json_new_float(NAN); break;
    case 'I': if (literal(r, "Infinity")) return json_new_float(INFINITY); break;
    case '-':
        if (literal(r, "-Infinity")) return json_new_float(-INFINITY);
        return read_number(r);
    default:
        if (is_digit(c)) return read_number(r);
    }
    return fail(r, "unexpected character");
}

json_value *json_parse(const char *text, size_t len, moe_err *err) {
    reader r = {.s = text, .n = len, .err = err};
    json_value *v = read_value(&r);
    if (v) {
        skip_ws(&r);
        if (r.i != r.n) {
            fail(&r, "extra data after the value");
            json_free(v);
            v = NULL;
        }
    }
    sb_free(&r.tmp);
    return v;
}

/* ================================================================ writer */

/* Python's float repr: the shortest digit string that reads back as d, in
 * fixed notation when its decimal exponent is in [-4, 16), else as d.ddde+XX. */
void json_write_float_repr(strbuf *out, double d) {
    if (isnan(d)) return sb_puts(out, "nan");
    if (isinf(d)) return sb_puts(out, d < 0 ? "-inf" : "inf");
    if (d == 0) return sb_puts(out, signbit(d) ? "-0.0" : "0.0");
    char buf[64], digits[32];
    int exp10 = 0, nd = 0;
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, fabs(d));
        if (strtod(buf, NULL) != fabs(d)) {
            /* next to a power of two the interval that reads back as d is
             * lopsided: the nearest prec-digit decimal may miss it while the
             * next one up is inside */
            char *e = strchr(buf, 'e');
            char up[64];
            int k = (int)(e - buf);
            memcpy(up, buf, sizeof up);
            int j = k - 1;
            while (j >= 0 && (up[j] == '9' || up[j] == '.')) {
                if (up[j] == '9') up[j] = '0';
                j--;
            }
            if (j < 0) continue; /* 9.99..e -> 10.0e: a shorter form was tried already */
            up[j]++;
            if (strtod(up, NULL) != fabs(d)) continue;
            memcpy(buf, up, sizeof buf);
        }
        /* buf = "D.DDDDe[+-]XX" */
        char *e = strchr(buf, 'e');
        for (char *p = buf; p < e; p++)
            if (*p != '.') digits[nd++] = *p;
        exp10 = atoi(e + 1);
        break;
    }
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int decpt = exp10 + 1; /* value = 0.DIGITS * 10^decpt */
    if (d < 0) sb_putc(out, '-');
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            sb_puts(out, "0.");
            for (int k = 0; k < -decpt; k++) sb_putc(out, '0');
            sb_put(out, digits, (size_t)nd);
        } else if (decpt >= nd) {
            sb_put(out, digits, (size_t)nd);
            for (int k = nd; k < decpt; k++) sb_putc(out, '0');
            sb_puts(out, ".0");
        } else {
            sb_put(out, digits, (size_t)decpt);
            sb_putc(out, '.');
            sb_put(out, digits + decpt, (size_t)(nd - decpt));
        }
    } else {
        sb_putc(out, digits[0]);
        if (nd > 1) {
            sb_putc(out, '.');
            sb_put(out, digits + 1, (size_t)(nd - 1));
        }
        snprintf(buf, sizeof buf, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        sb_puts(out, buf);
    }
}

static void put_u_escape(strbuf *out, uint32_t u) {
    char buf[8];
    snprintf(buf, sizeof buf, "\\u%04x", (unsigned)u);
    sb_puts(out, buf);
}

void json_write_string(strbuf *out, const char *s, size_t len, int ensure_ascii) {
    sb_putc(out, '"');
    size_t run = 0; /* start of the bytes copied unchanged */
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        }
        if (!esc && c >= 0x20 && (c < 0x80 || !ensure_ascii)) {
            i++;
            continue;
        }
        sb_put(out, s + run, i - run);
        if (esc) {
            sb_puts(out, esc);
            i++;
        } else if (c < 0x20) {
            put_u_escape(out, c);
            i++;
        } else { /* ensure_ascii: \uXXXX, as a surrogate pair above the BMP */
            int k;
            uint32_t cp = utf8_decode((const uint8_t *)s + i, len - i, &k);
            if (cp >= UNI_BAD_BASE) cp = 0xfffd;
            if (cp >= 0x10000) {
                put_u_escape(out, 0xd800 + ((cp - 0x10000) >> 10));
                put_u_escape(out, 0xdc00 + ((cp - 0x10000) & 0x3ff));
            } else {
                put_u_escape(out, cp);
            }
            i += (size_t)k;
        }
        run = i;
    }
    sb_put(out, s + run, len - run);
    sb_putc(out, '"');
}

typedef struct {
    strbuf *out;
    const json_write_opts *o;
    const char *item_sep, *key_sep;
    int bad;
} writer;

static void newline_indent(writer *w, int level) {
    sb_putc(w->out, '\n');
    for (int k = 0; k < level; k++) sb_puts(w->out, w->o->indent);
}

static int key_cmp(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn); /* UTF-8 byte order is code point order */
    return c ? c : (an > bn) - (an < bn);
}

static void write_value(writer *w, const json_value *v, int level) {
    if (level > JSON_MAX_DEPTH) {
        w->bad = 1;
        return;
    }
    switch (v->type) {
    case JSON_NULL: sb_puts(w->out, "null"); return;
    case JSON_BOOL: sb_puts(w->out, v->boolean ? "true" : "false"); return;
    case JSON_INT: {
        char buf[32];
        snprintf(buf, sizeof buf, "%lld", (long long)v->integer);
        sb_puts(w->out, buf);
        return;
    }
    case JSON_FLOAT:
        if (isnan(v->number)) sb_puts(w->out, "NaN");
        else if (isinf(v->number)) sb_puts(w->out, v->number < 0 ? "-Infinity" : "Infinity");
        else json_write_float_repr(w->out, v->number);
        return;
    case JSON_STRING: json_write_string(w->out, v->str, v->len, w->o->ensure_ascii); return;
    case JSON_ARRAY:
    case JSON_OBJECT: break;
    default: w->bad = 1; return;
    }
    int obj = v->type == JSON_OBJECT;
    if (v->len == 0) {
        sb_puts(w->out, obj ? "{}" : "[]");
        return;
    }
    size_t *order = NULL;
    if (obj && w->o->sort_keys) { /* insertion sort of member indexes: objects are small */
        order = malloc(v->len * sizeof *order);
        if (!order) {
            w->bad = 1;
            return;
        }
        for (size_t i = 0; i < v->len; i++) {
            size_t j = i;
            while (j > 0 && key_cmp(v->keys[order[j - 1]], v->key_lens[order[j - 1]], v->keys[i], v->key_lens[i]) > 0) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = i;
        }
    }
    sb_putc(w->out, obj ? '{' : '[');
    for (size_t k = 0; k < v->len && !w->bad; k++) {
        size_t i = order ? order[k] : k;
        if (k) sb_puts(w->out, w->item_sep);
        if (w->o->indent) newline_indent(w, level + 1);
        if (obj) {
            json_write_string(w->out, v->keys[i], v->key_lens[i], w->o->ensure_ascii);
            sb_puts(w->out, w->key_sep);
        }
        write_value(w, v->items[i], level + 1);
    }
    if (w->o->indent) newline_indent(w, level);
    sb_putc(w->out, obj ? '}' : ']');
    free(order);
}

int json_write(strbuf *out, const json_value *v, const json_write_opts *opts) {
    json_write_opts def = {0};
    writer w = {.out = out, .o = opts ? opts : &def};
    w.item_sep = w.o->item_sep ? w.o->item_sep : w.o->indent ? "," : ", ";
    w.key_sep = w.o->key_sep ? w.o->key_sep : ": ";
    if (!v) return -1;
    write_value(&w, v, 0);
    return w.bad || out->failed ? -1 : 0;
}
