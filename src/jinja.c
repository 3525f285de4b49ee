/* jinja.c - Jinja for chat templates (jinja.h).
 *
 * Sections: failure and arena; values; lexer; parser; evaluator (lookup,
 * operators, Python's str / repr); filters, tests and methods; statements;
 * entry points. Semantics follow jinja2 3.1 in the sandbox Hugging Face uses;
 * the comments name the jinja2 / Python behaviour each piece reproduces. */
#include "jinja.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode.h"
#include "util.h"

/* ================================================================ failure, arena */

typedef struct {
    jmp_buf jb;
    moe_err *err;
    const char *src; /* the normalized source, for line and column */
    size_t src_n;
    int code;        /* JINJA_ERROR or JINJA_RAISED */
} failctx;

static void where(const failctx *F, int pos, int *line, int *col) {
    *line = 1, *col = 1;
    for (int i = 0; i < pos && (size_t)i < F->src_n; i++) {
        if (F->src[i] == '\n') ++*line, *col = 1;
        else if (((unsigned char)F->src[i] & 0xc0) != 0x80) ++*col;
    }
}

/* Stop parsing or rendering: "template line L col C: message". */
static void fail_at(failctx *F, int pos, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
static void fail_at(failctx *F, int pos, const char *fmt, ...) {
    char msg[MOE_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *c = msg; *c; c++) /* one line, whatever the template's text held */
        if ((unsigned char)*c < 0x20) *c = ' ';
    if (pos >= 0) {
        int line, col;
        where(F, pos, &line, &col);
        moe_fail(F->err, "template line %d col %d: %s", line, col, msg);
    } else {
        moe_fail(F->err, "template: %s", msg);
    }
    F->code = JINJA_ERROR;
    longjmp(F->jb, 1);
}

typedef struct ablock {
    struct ablock *next;
    size_t used, cap;
    max_align_t data[];
} ablock;

typedef struct {
    ablock *head;
    size_t total, limit; /* bytes taken from malloc, and the most allowed */
    failctx *F;
} arena;

static void *arena_alloc(arena *A, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!A->head || A->head->cap - A->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        if (A->limit && (cap > A->limit || A->total > A->limit - cap))
            fail_at(A->F, -1, "memory limit reached (%zu MB)", A->limit >> 20);
        ablock *b = malloc(sizeof *b + cap);
        if (!b) fail_at(A->F, -1, "out of memory");
        b->next = A->head, b->used = 0, b->cap = cap;
        A->head = b;
        A->total += cap;
    }
    void *p = (char *)A->head->data + A->head->used;
    A->head->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(arena *A) {
    while (A->head) {
        ablock *b = A->head;
        A->head = b->next;
        free(b);
    }
    A->total = 0;
}

static char *arena_strdup(arena *A, const char *s, size_t n) {
    char *p = arena_alloc(A, n + 1);
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ================================================================ values */

typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_MACRO, V_FUNC, V_LOOP } vkind;

typedef struct value value;
typedef struct vlist vlist;
typedef struct vdict vdict;

struct value {
    vkind k;
    int b;         /* BOOL */
    int64_t i;     /* INT; FUNC: which builtin or method */
    double f;      /* FLOAT */
    const char *s; /* STR: (n) bytes; UNDEF: the error using it raises; FUNC: method name */
    size_t n;
    void *p;       /* LIST vlist; DICT, NS vdict; MACRO node; FUNC the bound object (value *) or NULL; LOOP */
};

struct vlist {
    value *v;
    size_t n, cap;
    int tuple;     /* prints as (a, b) */
};

struct vdict {
    value *keys, *vals; /* keys are strings */
    size_t n, cap;
};

static const value UNDEF = {.k = V_UNDEF};
static const value NONE = {.k = V_NONE};

static value mk_bool(int b) { return (value){.k = V_BOOL, .b = b != 0}; }
static value mk_int(int64_t i) { return (value){.k = V_INT, .i = i}; }
static value mk_float(double f) { return (value){.k = V_FLOAT, .f = f}; }
static value mk_str(const char *s, size_t n) { return (value){.k = V_STR, .s = s, .n = n}; }
static value mk_undef(const char *msg) { return (value){.k = V_UNDEF, .s = msg}; }

/* ================================================================ lexer */

typedef enum { T_EOF, T_TEXT, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STRING, T_INT, T_FLOAT, T_OP } ttype;

typedef struct {
    ttype t;
    int pos;        /* byte offset in the source */
    const char *s;  /* TEXT, NAME, OP: the text; STRING: the decoded value */
    size_t n;
    int64_t i;
    double f;
} token;

typedef struct {
    failctx *F;
    arena *A;
    const char *src;
    size_t n;
    token *toks;
    size_t nt, cap;
} lexer;

static void push_tok(lexer *L, token t) {
    if (L->nt == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        token *nt = arena_alloc(L->A, cap * sizeof *nt);
        if (L->nt) memcpy(nt, L->toks, L->nt * sizeof *nt);
        L->toks = nt, L->cap = cap;
    }
    L->toks[L->nt++] = t;
}

/* Python's str.isspace() / regex \s for one character at s[i]: its byte
 * length, or 0. */
static int space_len(const char *s, size_t n, size_t i) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) return (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) ? 1 : 0;
    int k;
    uint32_t cp = utf8_decode((const uint8_t *)s + i, n - i, &k);
    return cp < UNI_BAD_BASE && (uni_flags(cp) & UNI_WS) ? k : 0;
}
/* Length of s[0..n) without its trailing white space (str.rstrip()). */
static size_t rstrip_len(const char *s, size_t n) {
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xc0) == 0x80 && end - st < 4) st--;
        if (space_len(s, end, st) != (int)(end - st)) break;
        end = st;
    }
    return end;
}
static size_t skip_space(const char *s, size_t n, size_t i) {
    int k;
    while (i < n && (k = space_len(s, n, i)) > 0) i += (size_t)k;
    return i;
}

static int is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

/* A string literal at src[i] (the quote): decoded as Python's "unicode-escape"
 * does, which is what jinja2 applies to literals. */
static size_t lex_string(lexer *L, size_t i, token *t) {
    char q = L->src[i];
    size_t j = i + 1;
    strbuf b = {0};
    while (j < L->n && L->src[j] != q) {
        char c = L->src[j];
        if (c != '\\') {
            sb_putc(&b, c);
            j++;
            continue;
        }
        if (j + 1 >= L->n) break;
        char e = L->src[j + 1];
        j += 2;
        uint32_t cp = 0;
        int hex = 0;
        switch (e) {
        case 'n': sb_putc(&b, '\n'); break;
        case 't': sb_putc(&b, '\t'); break;
        case 'r': sb_putc(&b, '\r'); break;
        case '\\': sb_putc(&b, '\\'); break;
        case '\'': sb_putc(&b, '\''); break;
        case '"': sb_putc(&b, '"'); break;
        case 'a': sb_putc(&b, '\a'); break;
        case 'b': sb_putc(&b, '\b'); break;
        case 'f': sb_putc(&b, '\f'); break;
        case 'v': sb_putc(&b, '\v'); break;
        case '\n': break; /* a backslash-newline continues the line */
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        default:
            if (e >= '0' && e <= '7') { /* up to three octal digits */
                cp = (uint32_t)(e - '0');
                for (int k = 0; k < 2 && j < L->n && L->src[j] >= '0' && L->src[j] <= '7'; k++)
                    cp = cp * 8 + (uint32_t)(L->src[j++] - '0');
                hex = -1;
            } else if (e == 'N') {
                sb_free(&b);
                fail_at(L->F, (int)j - 2, "unsupported: \\N{...} escape in a string literal");
            } else { /* Python keeps unknown escapes as they are */
                sb_putc(&b, '\\');
                sb_putc(&b, e);
            }
        }
        if (hex > 0) {
            for (int k = 0; k < hex; k++, j++) {
                char d = j < L->n ? L->src[j] : 0;
                int v = d >= '0' && d <= '9' ? d - '0' : d >= 'a' && d <= 'f' ? d - 'a' + 10 : d >= 'A' && d <= 'F' ? d - 'A' + 10 : -1;
                if (v < 0) {
                    sb_free(&b);
                    fail_at(L->F, (int)i, "bad \\%c escape in a string literal", e);
                }
                cp = cp * 16 + (uint32_t)v;
            }
        }
        if (hex) {
            if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
                sb_free(&b);
                fail_at(L->F, (int)i, "string literal escape is not a Unicode scalar value (a surrogate?)");
            }
            uint8_t u[4];
            sb_put(&b, u, (size_t)utf8_encode(cp, u));
        }
    }
    if (j >= L->n) {
        sb_free(&b);
        fail_at(L->F, (int)i, "unterminated string literal");
    }
    if (b.failed) {
        sb_free(&b);
        fail_at(L->F, (int)i, "out of memory");
    }
    t->t = T_STRING;
    t->s = arena_strdup(L->A, b.p ? b.p : "", b.n);
    t->n = b.n;
    sb_free(&b);
    return j + 1;
}

/* A number at src[i]: integer (with _ separators, 0x / 0o / 0b) or float. */
static size_t lex_number(lexer *L, size_t i, token *t) {
    const char *s = L->src;
    char buf[128];
    size_t nb = 0, j = i;
    int base = 10, is_float = 0;
    if (s[j] == '0' && j + 1 < L->n && strchr("xXoObB", s[j + 1])) {
        base = s[j + 1] == 'x' || s[j + 1] == 'X' ? 16 : s[j + 1] == 'o' || s[j + 1] == 'O' ? 8 : 2;
        j += 2;
        while (j < L->n && (s[j] == '_' || (base == 16 ? strchr("0123456789abcdefABCDEF", s[j]) != NULL
                                                       : s[j] >= '0' && s[j] < '0' + base))) {
            if (s[j] != '_' && nb < sizeof buf - 1) buf[nb++] = s[j];
            j++;
        }
    } else {
        while (j < L->n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) {
            if (s[j] != '_' && nb < sizeof buf - 1) buf[nb++] = s[j];
            j++;
        }
        if (j + 1 < L->n && s[j] == '.' && s[j + 1] >= '0' && s[j + 1] <= '9') {
            is_float = 1;
            if (nb < sizeof buf - 1) buf[nb++] = s[j];
            j++;
            while (j < L->n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) {
                if (s[j] != '_' && nb < sizeof buf - 1) buf[nb++] = s[j];
                j++;
            }
        }
        if (j < L->n && s[j] == 'e') {
            size_t k = j + 1;
            if (k < L->n && (s[k] == '+' || s[k] == '-')) k++;
            if (k < L->n && s[k] >= '0' && s[k] <= '9') {
                is_float = 1;
                for (; j < k; j++)
                    if (nb < sizeof buf - 1) buf[nb++] = s[j];
                while (j < L->n && ((s[j] >= '0' && s[j] <= '9') || s[j] == '_')) {
                    if (s[j] != '_' && nb < sizeof buf - 1) buf[nb++] = s[j];
                    j++;
                }
            }
        }
    }
    buf[nb] = 0;
    if (nb >= sizeof buf - 2) fail_at(L->F, (int)i, "number literal too long");
    if (is_float) {
        t->t = T_FLOAT;
        t->f = strtod(buf, NULL);
    } else {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(buf, &end, base);
        if (errno || v > INT64_MAX || end == buf) fail_at(L->F, (int)i, "integer literal out of the 64-bit range");
        t->t = T_INT;
        t->i = (int64_t)v;
    }
    return j;
}

static const char *const OPS2[] = {"//", "**", "==", "!=", ">=", "<="};
static const char OPS1[] = "+-/*%~[](){}><=.:|,;";

/* The tokens inside {{ }} or {% %}, up to and including the closing tag. */
static size_t lex_tag(lexer *L, size_t i, int is_block, int *trimmed_nl) {
    const char *s = L->src;
    int depth = 0; /* open brackets: an end tag inside them is an operator */
    size_t start = i;
    for (;;) {
        if (i >= L->n) fail_at(L->F, (int)start - 2, "missing end of %s tag", is_block ? "block" : "variable");
        if (depth == 0) {
            const char *end = is_block ? "%}" : "}}";
            size_t k = 0;
            int sign = 0;
            if ((s[i] == '-' || (is_block && s[i] == '+')) && i + 3 <= L->n && !strncmp(s + i + 1, end, 2))
                sign = s[i], k = 1;
            if (i + k + 2 <= L->n && !strncmp(s + i + k, end, 2)) {
                push_tok(L, (token){.t = is_block ? T_BLOCK_END : T_VAR_END, .pos = (int)i});
                i += k + 2;
                *trimmed_nl = 0;
                if (sign == '-') {
                    size_t j = skip_space(s, L->n, i);
                    *trimmed_nl = j > i && s[j - 1] == '\n';
                    i = j;
                } else if (sign == 0 && is_block && i < L->n && s[i] == '\n') { /* trim_blocks */
                    i++;
                    *trimmed_nl = 1;
                }
                return i;
            }
        }
        int k = space_len(s, L->n, i);
        if (k) {
            i += (size_t)k;
            continue;
        }
        token t = {.pos = (int)i};
        char c = s[i];
        if (c == '\'' || c == '"') {
            i = lex_string(L, i, &t);
        } else if (c >= '0' && c <= '9') {
            i = lex_number(L, i, &t);
        } else if (is_name_start(c)) {
            size_t j = i;
            while (j < L->n && is_name_char(s[j])) j++;
            t.t = T_NAME, t.s = s + i, t.n = j - i;
            i = j;
        } else {
            t.t = T_OP, t.s = s + i, t.n = 0;
            for (size_t o = 0; o < sizeof OPS2 / sizeof OPS2[0]; o++)
                if (i + 1 < L->n && s[i] == OPS2[o][0] && s[i + 1] == OPS2[o][1]) t.n = 2;
            if (!t.n && c && strchr(OPS1, c)) t.n = 1;
            if (!t.n) fail_at(L->F, (int)i, "unexpected character '%c' in a tag", c);
            if (t.n == 1 && strchr("([{", c)) depth++;
            if (t.n == 1 && strchr(")]}", c)) {
                if (depth == 0) fail_at(L->F, (int)i, "unexpected '%c'", c);
                depth--;
            }
            i += t.n;
        }
        push_tok(L, t);
    }
}

/* Split the source into text and tags as jinja2's lexer does with
 * trim_blocks and lstrip_blocks: "-" strips all white space on that side of
 * a tag, "+" keeps it; lstrip_blocks removes the spaces and tabs between a
 * line start and a block or comment tag; trim_blocks removes the newline
 * right after a block or comment tag. */
static void lex(lexer *L) {
    const char *s = L->src;
    size_t i = 0;
    int line_starting = 1; /* the previous tag's match ended with a newline */
    while (i < L->n) {
        size_t q = i;
        while (q + 1 < L->n && !(s[q] == '{' && (s[q + 1] == '%' || s[q + 1] == '{' || s[q + 1] == '#'))) q++;
        if (q + 1 >= L->n) { /* the rest is text */
            push_tok(L, (token){.t = T_TEXT, .pos = (int)i, .s = s + i, .n = L->n - i});
            break;
        }
        char kind = s[q + 1];
        char sign = q + 2 < L->n && (s[q + 2] == '-' || s[q + 2] == '+') ? s[q + 2] : 0;
        size_t tn = q - i;
        if (sign == '-') {
            tn = rstrip_len(s + i, tn);
        } else if (sign != '+' && kind != '{') {
            size_t l = tn;
            while (l > 0 && s[i + l - 1] != '\n') l--;
            if (l > 0 || line_starting) {
                size_t j = i + l;
                while (j < q) {
                    int k = space_len(s, q, j);
                    if (!k) break;
                    j += (size_t)k;
                }
                if (j == q) tn = l;
            }
        }
        if (tn) push_tok(L, (token){.t = T_TEXT, .pos = (int)i, .s = s + i, .n = tn});
        size_t p = q + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t e = p;
            while (e + 1 < L->n && !(s[e] == '#' && s[e + 1] == '}')) e++;
            if (e + 1 >= L->n) fail_at(L->F, (int)q, "missing end of comment tag");
            char esign = e > p && (s[e - 1] == '-' || s[e - 1] == '+') ? s[e - 1] : 0;
            i = e + 2;
            line_starting = 0;
            if (esign == '-') {
                size_t j = skip_space(s, L->n, i);
                line_starting = j > i && s[j - 1] == '\n';
                i = j;
            } else if (esign == 0 && i < L->n && s[i] == '\n') {
                i++;
                line_starting = 1;
            }
            continue;
        }
        if (kind == '%') { /* {% raw %} is a lexer construct we do not take */
            size_t j = skip_space(s, L->n, p);
            if (j + 3 <= L->n && !strncmp(s + j, "raw", 3) && (j + 3 == L->n || !is_name_char(s[j + 3])))
                fail_at(L->F, (int)q, "unsupported tag 'raw'");
        }
        push_tok(L, (token){.t = kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, .pos = (int)q});
        i = lex_tag(L, p, kind == '%', &line_starting);
    }
    push_tok(L, (token){.t = T_EOF, .pos = (int)L->n});
}

/* ================================================================ parser */

typedef enum {
    /* statements */
    N_TEXT, N_OUTPUT, N_IF, N_FOR, N_SET, N_SET_ATTR, N_SET_BLOCK, N_MACRO, N_BREAK, N_CONTINUE, N_BLOCK,
    /* expressions */
    N_CONST, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_NEG, N_POS, N_NOT, N_AND, N_OR,
    N_BINOP, N_COMPARE, N_COND, N_LIST, N_TUPLE, N_DICT
} nkind;

typedef struct node node;
typedef struct {
    node **v;
    int n, cap;
} nlist;

typedef struct {
    const char *s;
    size_t n;
} str;

struct node {
    nkind k;
    int pos;
    str name;         /* NAME, ATTR, FILTER, TEST, MACRO, SET*, BINOP / COMPARE operators (ops) */
    value cval;       /* CONST, TEXT (a string) */
    node *a, *b, *c;  /* operands; IF cond; FOR iter (a), filter (b); SLICE start, stop, step */
    nlist args;       /* call / filter / test positional args; LIST, TUPLE, DICT keys; COMPARE operands */
    nlist kwargs;     /* keyword argument values; DICT values; macro defaults (NULL = none) */
    str *names;       /* kwarg names; FOR / SET targets; macro parameter names; COMPARE operators */
    int n_names;
    nlist body, orelse;
    int negated;      /* TEST: "is not" */
};

typedef struct {
    failctx *F;
    arena *A;
    token *t;
    size_t i, nt;
    int depth;
} parser;

static void nl_push(arena *A, nlist *l, node *n) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 4;
        node **v = arena_alloc(A, (size_t)cap * sizeof *v);
        if (l->n) memcpy(v, l->v, (size_t)l->n * sizeof *v);
        l->v = v, l->cap = cap;
    }
    l->v[l->n++] = n;
}

static void names_push(arena *A, node *n, str s) {
    str *v = arena_alloc(A, (size_t)(n->n_names + 1) * sizeof *v);
    if (n->n_names) memcpy(v, n->names, (size_t)n->n_names * sizeof *v);
    v[n->n_names++] = s;
    n->names = v;
}

static node *mk_node(parser *P, nkind k, int pos) {
    node *n = arena_alloc(P->A, sizeof *n);
    n->k = k, n->pos = pos;
    return n;
}

static token *cur(parser *P) { return &P->t[P->i]; }
static token *next_tok(parser *P) { return &P->t[P->i < P->nt - 1 ? P->i++ : P->i]; }
static int is_op(const token *t, const char *op) { return t->t == T_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n); }
static int is_name(const token *t, const char *nm) { return t->t == T_NAME && t->n == strlen(nm) && !memcmp(t->s, nm, t->n); }
static int str_is(str s, const char *z) { return s.n == strlen(z) && !memcmp(s.s, z, s.n); }

static const char *tok_desc(const token *t) {
    switch (t->t) {
    case T_EOF: return "end of template";
    case T_TEXT: return "text";
    case T_VAR_BEGIN: return "'{{'";
    case T_VAR_END: return "'}}'";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_BLOCK_END: return "'%}'";
    case T_NAME: return "a name";
    case T_STRING: return "a string";
    case T_INT: return "an integer";
    case T_FLOAT: return "a float";
    case T_OP: return "an operator";
    }
    return "?";
}

static void expect_op(parser *P, const char *op) {
    if (!is_op(cur(P), op)) fail_at(P->F, cur(P)->pos, "expected '%s', got %s", op, tok_desc(cur(P)));
    next_tok(P);
}
static str expect_name(parser *P) {
    token *t = cur(P);
    if (t->t != T_NAME) fail_at(P->F, t->pos, "expected a name, got %s", tok_desc(t));
    next_tok(P);
    return (str){t->s, t->n};
}

static node *parse_expr(parser *P);
static node *parse_unary(parser *P, int with_filter);
static node *parse_primary(parser *P);
static node *parse_postfix(parser *P, node *n);

/* (args, name=value, ...) after the '(' */
static void parse_call_args(parser *P, node *call) {
    expect_op(P, "(");
    while (!is_op(cur(P), ")")) {
        if (call->args.n || call->kwargs.n) expect_op(P, ",");
        if (is_op(cur(P), ")")) break; /* trailing comma */
        if (is_op(cur(P), "*") || is_op(cur(P), "**")) fail_at(P->F, cur(P)->pos, "unsupported: *args / **kwargs in a call");
        if (cur(P)->t == T_NAME && is_op(&P->t[P->i + 1], "=")) {
            str nm = expect_name(P);
            next_tok(P);
            names_push(P->A, call, nm);
            nl_push(P->A, &call->kwargs, parse_expr(P));
        } else {
            if (call->kwargs.n) fail_at(P->F, cur(P)->pos, "positional argument after a keyword argument");
            nl_push(P->A, &call->args, parse_expr(P));
        }
    }
    next_tok(P);
}

static const char *const JINJA_FILTERS[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "items", "join",
    "last", "length", "list", "lower", "map", "max", "min", "pprint", "random", "reject", "rejectattr", "replace",
    "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum", "title",
    "tojson", "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr"};
static const char *const JINJA_TESTS[] = {
    "odd", "even", "divisibleby", "defined", "undefined", "filter", "test", "none", "boolean", "false", "true",
    "integer", "float", "lower", "upper", "string", "mapping", "number", "sequence", "iterable", "callable",
    "sameas", "escaped", "in", "==", "eq", "equalto", "!=", "ne", ">", "gt", "greaterthan", "ge", ">=", "<", "lt",
    "lessthan", "<=", "le"};

static int in_names(str s, const char *const *list, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (str_is(s, list[k])) return 1;
    return 0;
}

/* jinja2 resolves filter and test names when it compiles: an unknown one is
 * an error even in a branch never taken */
static node *parse_filter(parser *P, node *n) {
    token *t = next_tok(P); /* '|' */
    node *f = mk_node(P, N_FILTER, t->pos);
    f->name = expect_name(P);
    if (!in_names(f->name, JINJA_FILTERS, sizeof JINJA_FILTERS / sizeof *JINJA_FILTERS))
        fail_at(P->F, f->pos, "no filter named '%.*s'", (int)f->name.n, f->name.s);
    f->a = n;
    if (is_op(cur(P), "(")) parse_call_args(P, f);
    return f;
}

static node *parse_test(parser *P, node *n) {
    token *t = next_tok(P); /* 'is' */
    node *tn = mk_node(P, N_TEST, t->pos);
    if (is_name(cur(P), "not")) {
        next_tok(P);
        tn->negated = 1;
    }
    tn->name = expect_name(P);
    if (!in_names(tn->name, JINJA_TESTS, sizeof JINJA_TESTS / sizeof *JINJA_TESTS))
        fail_at(P->F, tn->pos, "no test named '%.*s'", (int)tn->name.n, tn->name.s);
    tn->a = n;
    token *c = cur(P);
    if (is_op(c, "(")) {
        parse_call_args(P, tn);
    } else if ((c->t == T_NAME || c->t == T_STRING || c->t == T_INT || c->t == T_FLOAT || is_op(c, "[") ||
                is_op(c, "{")) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is")) fail_at(P->F, c->pos, "you cannot chain multiple tests with is");
        nl_push(P->A, &tn->args, parse_postfix(P, parse_primary(P)));
    }
    return tn;
}

static node *parse_filter_expr(parser *P, node *n) {
    for (;;) {
        if (is_op(cur(P), "|")) n = parse_filter(P, n);
        else if (is_name(cur(P), "is")) n = parse_test(P, n);
        else if (is_op(cur(P), "(")) {
            node *c = mk_node(P, N_CALL, cur(P)->pos);
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else return n;
    }
}

static node *parse_subscript(parser *P, node *n) {
    token *t = next_tok(P);
    if (t->t == T_OP && t->s[0] == '.') {
        token *a = cur(P);
        if (a->t == T_INT) { /* x.0 is x[0] */
            next_tok(P);
            node *it = mk_node(P, N_ITEM, t->pos);
            it->a = n;
            it->b = mk_node(P, N_CONST, a->pos);
            it->b->cval = mk_int(a->i);
            return it;
        }
        node *at = mk_node(P, N_ATTR, t->pos);
        at->a = n;
        at->name = expect_name(P);
        return at;
    }
    /* '[' : an index or a slice */
    node *parts[3] = {NULL, NULL, NULL};
    int colons = 0;
    while (!is_op(cur(P), "]")) {
        if (is_op(cur(P), ":")) {
            if (++colons > 2) fail_at(P->F, cur(P)->pos, "a slice takes at most start:stop:step");
            next_tok(P);
            continue;
        }
        if (parts[colons]) fail_at(P->F, cur(P)->pos, "unsupported: a tuple as a subscript");
        parts[colons] = parse_expr(P);
        if (is_op(cur(P), ",")) fail_at(P->F, cur(P)->pos, "unsupported: a tuple as a subscript");
    }
    next_tok(P);
    if (!colons) {
        if (!parts[0]) fail_at(P->F, t->pos, "expected an expression inside [ ]");
        node *it = mk_node(P, N_ITEM, t->pos);
        it->a = n, it->b = parts[0];
        return it;
    }
    node *sl = mk_node(P, N_SLICE, t->pos);
    sl->a = n;
    sl->b = parts[0], sl->c = parts[1];
    if (parts[2]) nl_push(P->A, &sl->args, parts[2]);
    return sl;
}

static node *parse_postfix(parser *P, node *n) {
    for (;;) {
        if (is_op(cur(P), ".") || is_op(cur(P), "[")) n = parse_subscript(P, n);
        else if (is_op(cur(P), "(")) {
            node *c = mk_node(P, N_CALL, cur(P)->pos);
            c->a = n;
            parse_call_args(P, c);
            n = c;
        } else return n;
    }
}

static node *parse_primary(parser *P) {
    token *t = cur(P);
    node *n;
    if (++P->depth > 200) fail_at(P->F, t->pos, "expression nested too deeply");
    switch (t->t) {
    case T_NAME:
        next_tok(P);
        n = mk_node(P, N_CONST, t->pos);
        if (is_name(t, "true") || is_name(t, "True")) n->cval = mk_bool(1);
        else if (is_name(t, "false") || is_name(t, "False")) n->cval = mk_bool(0);
        else if (is_name(t, "none") || is_name(t, "None")) n->cval = NONE;
        else n->k = N_NAME, n->name = (str){t->s, t->n};
        break;
    case T_STRING: { /* adjacent literals concatenate */
        next_tok(P);
        n = mk_node(P, N_CONST, t->pos);
        n->cval = mk_str(t->s, t->n);
        while (cur(P)->t == T_STRING) {
            token *u = next_tok(P);
            char *s = arena_alloc(P->A, n->cval.n + u->n + 1);
            memcpy(s, n->cval.s, n->cval.n);
            memcpy(s + n->cval.n, u->s, u->n);
            n->cval = mk_str(s, n->cval.n + u->n);
        }
        break;
    }
    case T_INT:
    case T_FLOAT:
        next_tok(P);
        n = mk_node(P, N_CONST, t->pos);
        n->cval = t->t == T_INT ? mk_int(t->i) : mk_float(t->f);
        break;
    case T_OP:
        if (is_op(t, "(")) { /* parenthesized expression or tuple */
            next_tok(P);
            n = mk_node(P, N_TUPLE, t->pos);
            int comma = 0;
            while (!is_op(cur(P), ")")) {
                if (n->args.n) {
                    expect_op(P, ",");
                    comma = 1;
                    if (is_op(cur(P), ")")) break;
                }
                nl_push(P->A, &n->args, parse_expr(P));
            }
            next_tok(P);
            if (n->args.n == 1 && !comma) n = n->args.v[0];
            break;
        }
        if (is_op(t, "[") || is_op(t, "{")) {
            int dict = t->s[0] == '{';
            next_tok(P);
            n = mk_node(P, dict ? N_DICT : N_LIST, t->pos);
            while (!is_op(cur(P), dict ? "}" : "]")) {
                if (n->args.n) {
                    expect_op(P, ",");
                    if (is_op(cur(P), dict ? "}" : "]")) break;
                }
                nl_push(P->A, &n->args, parse_expr(P));
                if (dict) {
                    expect_op(P, ":");
                    nl_push(P->A, &n->kwargs, parse_expr(P));
                }
            }
            next_tok(P);
            break;
        }
        /* fall through */
    default: fail_at(P->F, t->pos, "unexpected %s", tok_desc(t));
    }
    P->depth--;
    return n;
}

static node *parse_unary(parser *P, int with_filter) {
    token *t = cur(P);
    node *n;
    if (++P->depth > 200) fail_at(P->F, t->pos, "expression nested too deeply");
    if (is_op(t, "-") || is_op(t, "+")) {
        next_tok(P);
        n = mk_node(P, t->s[0] == '-' ? N_NEG : N_POS, t->pos);
        n->a = parse_unary(P, 0);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static node *binop(parser *P, const char *op, int pos, node *a, node *b) {
    node *n = mk_node(P, N_BINOP, pos);
    n->name = (str){op, strlen(op)};
    n->a = a, n->b = b;
    return n;
}

static node *parse_pow(parser *P) {
    node *n = parse_unary(P, 1);
    while (is_op(cur(P), "**")) {
        int pos = next_tok(P)->pos;
        n = binop(P, "**", pos, n, parse_unary(P, 1));
    }
    return n;
}
static node *parse_math2(parser *P) {
    node *n = parse_pow(P);
    for (;;) {
        const char *op = is_op(cur(P), "*") ? "*" : is_op(cur(P), "/") ? "/" : is_op(cur(P), "//") ? "//" : is_op(cur(P), "%") ? "%" : NULL;
        if (!op) return n;
        int pos = next_tok(P)->pos;
        n = binop(P, op, pos, n, parse_pow(P));
    }
}
static node *parse_concat(parser *P) {
    node *n = parse_math2(P);
    while (is_op(cur(P), "~")) {
        int pos = next_tok(P)->pos;
        n = binop(P, "~", pos, n, parse_math2(P));
    }
    return n;
}
static node *parse_math1(parser *P) {
    node *n = parse_concat(P);
    for (;;) {
        const char *op = is_op(cur(P), "+") ? "+" : is_op(cur(P), "-") ? "-" : NULL;
        if (!op) return n;
        int pos = next_tok(P)->pos;
        n = binop(P, op, pos, n, parse_concat(P));
    }
}
static node *parse_compare(parser *P) {
    node *first = parse_math1(P), *n = NULL;
    for (;;) {
        token *t = cur(P);
        const char *op = NULL;
        if (t->t == T_OP) {
            static const char *const cmp[] = {"==", "!=", ">", ">=", "<", "<="};
            for (int k = 0; k < 6; k++)
                if (is_op(t, cmp[k])) op = cmp[k];
        } else if (is_name(t, "in")) {
            op = "in";
        } else if (is_name(t, "not") && is_name(&P->t[P->i + 1], "in")) {
            op = "not in";
            next_tok(P);
        }
        if (!op) return n ? n : first;
        next_tok(P);
        if (!n) {
            n = mk_node(P, N_COMPARE, t->pos);
            nl_push(P->A, &n->args, first);
        }
        names_push(P->A, n, (str){op, strlen(op)});
        nl_push(P->A, &n->args, parse_math1(P));
    }
}
static node *parse_not(parser *P) {
    if (is_name(cur(P), "not")) {
        node *n = mk_node(P, N_NOT, next_tok(P)->pos);
        if (++P->depth > 200) fail_at(P->F, n->pos, "expression nested too deeply");
        n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}
static node *parse_and(parser *P) {
    node *n = parse_not(P);
    while (is_name(cur(P), "and")) {
        node *a = mk_node(P, N_AND, next_tok(P)->pos);
        a->a = n, a->b = parse_not(P);
        n = a;
    }
    return n;
}
static node *parse_or(parser *P) {
    node *n = parse_and(P);
    while (is_name(cur(P), "or")) {
        node *o = mk_node(P, N_OR, next_tok(P)->pos);
        o->a = n, o->b = parse_and(P);
        n = o;
    }
    return n;
}
/* a if cond else b (no else: undefined) */
static node *parse_expr(parser *P) {
    node *n = parse_or(P);
    while (is_name(cur(P), "if")) {
        node *c = mk_node(P, N_COND, next_tok(P)->pos);
        c->b = n;
        c->a = parse_or(P);
        if (is_name(cur(P), "else")) {
            next_tok(P);
            c->c = parse_expr(P);
        }
        n = c;
    }
    return n;
}

/* ---------------------------------------------------------------- statements */

static void parse_body(parser *P, nlist *body, const char *const *ends, int n_ends, str *which);

static void expect_block_end(parser *P) {
    if (cur(P)->t != T_BLOCK_END) fail_at(P->F, cur(P)->pos, "expected the end of the tag, got %s", tok_desc(cur(P)));
    next_tok(P);
}

/* Targets of for / set: one name or several separated by commas. */
static void parse_targets(parser *P, node *n) {
    int paren = is_op(cur(P), "(");
    if (paren) next_tok(P);
    do {
        names_push(P->A, n, expect_name(P));
    } while (is_op(cur(P), ",") && (next_tok(P), cur(P)->t == T_NAME));
    if (paren) expect_op(P, ")");
}

static node *parse_for(parser *P, int pos) {
    node *n = mk_node(P, N_FOR, pos);
    parse_targets(P, n);
    if (!is_name(cur(P), "in")) fail_at(P->F, cur(P)->pos, "expected 'in' in a for loop");
    next_tok(P);
    n->a = parse_or(P); /* jinja2 parses the iterable without a conditional expression */
    if (is_name(cur(P), "if")) {
        next_tok(P);
        n->b = parse_expr(P);
    }
    if (is_name(cur(P), "recursive")) fail_at(P->F, cur(P)->pos, "unsupported: recursive for loops");
    expect_block_end(P);
    static const char *const ends[] = {"endfor", "else"};
    str which;
    parse_body(P, &n->body, ends, 2, &which);
    if (str_is(which, "else")) {
        static const char *const end2[] = {"endfor"};
        parse_body(P, &n->orelse, end2, 1, &which);
    }
    return n;
}

static node *parse_if(parser *P, int pos) {
    node *n = mk_node(P, N_IF, pos);
    n->a = parse_expr(P);
    expect_block_end(P);
    static const char *const ends[] = {"elif", "else", "endif"};
    str which;
    parse_body(P, &n->body, ends, 3, &which);
    if (str_is(which, "elif")) {
        nl_push(P->A, &n->orelse, parse_if(P, cur(P)->pos));
    } else if (str_is(which, "else")) {
        static const char *const end2[] = {"endif"};
        parse_body(P, &n->orelse, end2, 1, &which);
    }
    return n;
}

static node *parse_set(parser *P, int pos) {
    node *n = mk_node(P, N_SET, pos);
    str first = expect_name(P);
    if (is_op(cur(P), ".")) { /* ns.attr = value */
        next_tok(P);
        n->k = N_SET_ATTR;
        n->name = first;
        names_push(P->A, n, expect_name(P));
        expect_op(P, "=");
        n->a = parse_expr(P);
        expect_block_end(P);
        return n;
    }
    names_push(P->A, n, first);
    while (is_op(cur(P), ",")) {
        next_tok(P);
        names_push(P->A, n, expect_name(P));
    }
    if (cur(P)->t == T_BLOCK_END || is_op(cur(P), "|")) { /* {% set x %}...{% endset %} */
        if (n->n_names != 1) fail_at(P->F, pos, "a block set takes one name");
        if (is_op(cur(P), "|")) fail_at(P->F, cur(P)->pos, "unsupported: a filter on a block set");
        next_tok(P);
        n->k = N_SET_BLOCK;
        static const char *const ends[] = {"endset"};
        str which;
        parse_body(P, &n->body, ends, 1, &which);
        return n;
    }
    expect_op(P, "=");
    n->a = parse_expr(P);
    if (is_op(cur(P), ",")) { /* set a, b = x, y: a tuple */
        node *t = mk_node(P, N_TUPLE, n->a->pos);
        nl_push(P->A, &t->args, n->a);
        while (is_op(cur(P), ",")) {
            next_tok(P);
            nl_push(P->A, &t->args, parse_expr(P));
        }
        n->a = t;
    }
    expect_block_end(P);
    return n;
}

static node *parse_macro(parser *P, int pos) {
    node *n = mk_node(P, N_MACRO, pos);
    n->name = expect_name(P);
    expect_op(P, "(");
    while (!is_op(cur(P), ")")) {
        if (n->n_names) expect_op(P, ",");
        names_push(P->A, n, expect_name(P));
        node *def = NULL;
        if (is_op(cur(P), "=")) {
            next_tok(P);
            def = parse_expr(P);
        }
        nl_push(P->A, &n->kwargs, def);
    }
    next_tok(P);
    expect_block_end(P);
    static const char *const ends[] = {"endmacro"};
    str which;
    parse_body(P, &n->body, ends, 1, &which);
    return n;
}

/* Statements until one of the end tags (whose name is stored in *which and
 * whose tag is consumed, "%}" included, except "elif" whose condition follows). */
static void parse_body(parser *P, nlist *body, const char *const *ends, int n_ends, str *which) {
    if (++P->depth > 200) fail_at(P->F, cur(P)->pos, "blocks nested too deeply");
    for (;;) {
        token *t = cur(P);
        if (t->t == T_EOF) {
            if (n_ends) fail_at(P->F, t->pos, "unexpected end of template (expected '%s')", ends[n_ends - 1]);
            break;
        }
        if (t->t == T_TEXT) {
            next_tok(P);
            node *n = mk_node(P, N_TEXT, t->pos);
            n->cval = mk_str(t->s, t->n);
            nl_push(P->A, body, n);
            continue;
        }
        if (t->t == T_VAR_BEGIN) {
            next_tok(P);
            node *n = mk_node(P, N_OUTPUT, t->pos);
            n->a = parse_expr(P);
            if (cur(P)->t != T_VAR_END) fail_at(P->F, cur(P)->pos, "expected '}}', got %s", tok_desc(cur(P)));
            next_tok(P);
            nl_push(P->A, body, n);
            continue;
        }
        if (t->t != T_BLOCK_BEGIN) fail_at(P->F, t->pos, "unexpected %s", tok_desc(t));
        next_tok(P);
        token *kw = cur(P);
        if (kw->t != T_NAME) fail_at(P->F, kw->pos, "expected a tag name, got %s", tok_desc(kw));
        str tag = {kw->s, kw->n};
        for (int e = 0; e < n_ends; e++)
            if (str_is(tag, ends[e])) {
                next_tok(P);
                *which = tag;
                if (!str_is(tag, "elif")) expect_block_end(P);
                P->depth--;
                return;
            }
        next_tok(P);
        node *n;
        if (str_is(tag, "if")) n = parse_if(P, kw->pos);
        else if (str_is(tag, "for")) n = parse_for(P, kw->pos);
        else if (str_is(tag, "set")) n = parse_set(P, kw->pos);
        else if (str_is(tag, "macro")) n = parse_macro(P, kw->pos);
        else if (str_is(tag, "break") || str_is(tag, "continue")) {
            n = mk_node(P, str_is(tag, "break") ? N_BREAK : N_CONTINUE, kw->pos);
            expect_block_end(P);
        } else if (str_is(tag, "generation")) { /* transformers' AssistantTracker: renders its body */
            expect_block_end(P);
            n = mk_node(P, N_BLOCK, kw->pos);
            static const char *const ends_g[] = {"endgeneration"};
            str w;
            parse_body(P, &n->body, ends_g, 1, &w);
        } else if (str_is(tag, "elif") || str_is(tag, "else") || !strncmp(kw->s, "end", 3)) {
            fail_at(P->F, kw->pos, "unexpected '%.*s'", (int)tag.n, tag.s);
        } else {
            fail_at(P->F, kw->pos, "unsupported tag '%.*s'", (int)tag.n, tag.s);
        }
        nl_push(P->A, body, n);
    }
    P->depth--;
}

struct jinja_template {
    arena A;
    failctx F;
    char *src;   /* normalized: \r\n and \r -> \n, one trailing newline dropped */
    size_t n;
    nlist body;
};

void jinja_free(jinja_template *t) {
    if (!t) return;
    arena_free(&t->A);
    free(t->src);
    free(t);
}

static void parse_all(jinja_template *t) {
    for (size_t i = 0; i < t->n;) { /* the whole source is UTF-8 text */
        int k;
        if (utf8_decode((const uint8_t *)t->src + i, t->n - i, &k) >= UNI_BAD_BASE) fail_at(&t->F, (int)i, "invalid UTF-8");
        i += (size_t)k;
    }
    lexer L = {.F = &t->F, .A = &t->A, .src = t->src, .n = t->n};
    lex(&L);
    parser P = {.F = &t->F, .A = &t->A, .t = L.toks, .nt = L.nt};
    str which;
    parse_body(&P, &t->body, NULL, 0, &which);
}

/* Errors longjmp back here (it has no locals to clobber). */
static int parse_into(jinja_template *t) {
    if (setjmp(t->F.jb)) return -1;
    parse_all(t);
    return 0;
}

jinja_template *jinja_parse(const char *src, size_t len, moe_err *err) {
    jinja_template *t = calloc(1, sizeof *t);
    char *s = malloc(len + 1);
    if (!t || !s) {
        free(t);
        free(s);
        moe_fail(err, "template: out of memory");
        return NULL;
    }
    /* jinja2 normalizes newlines and drops one trailing newline (keep_trailing_newline off) */
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = 0;
    t->src = s, t->n = n;
    t->F = (failctx){.err = err, .src = s, .src_n = n};
    t->A = (arena){.limit = (size_t)1 << 30, .F = &t->F};
    if (parse_into(t)) {
        jinja_free(t);
        return NULL;
    }
    t->F.err = NULL;
    return t;
}

/* ================================================================ evaluator */

typedef struct scope scope;
struct scope {
    scope *parent;
    str *names;
    value *vals;
    int n, cap;
};

typedef struct {
    vlist *items;
    int64_t index0;
} loopobj;

typedef struct {
    failctx F;
    arena A;
    const jinja_opts *o;
    scope *root;
    strbuf *out;         /* where output goes now (the result, or a macro's capture) */
    strbuf caps[72];     /* capture buffers, one per nesting level of macro calls / block sets */
    int n_caps;
    strbuf scratch[8];   /* buffers that build one string value (scratch_take) */
    int n_scratch;
    uint64_t steps;
    int depth;
} rt;

/* Builtin functions and methods callable as values (FUNC .i). */
enum {
    F_RANGE = 1, F_NAMESPACE, F_DICT, F_RAISE, F_STRFTIME, F_CYCLE, F_METHOD, F_UNSAFE
};

static void step(rt *R, int pos) {
    if (++R->steps > R->o->max_steps)
        fail_at(&R->F, pos, "step limit reached (%llu loop iterations, calls and statements)",
                (unsigned long long)R->o->max_steps);
}

static char *rt_alloc_str(rt *R, size_t n) { return arena_alloc(&R->A, n + 1); }

/* A buffer to build one string value in (str(), join, replace, repr of a
 * key), held by the runtime and freed with it: a failure part way through
 * (fail_at leaves by a long jump) would leak a buffer of the caller's.
 * Taken and given back (scratch_give) in nested order. */
static strbuf *scratch_take(rt *R, size_t limit, int pos) {
    if (R->n_scratch >= (int)(sizeof R->scratch / sizeof R->scratch[0]))
        fail_at(&R->F, pos, "value nested too deeply to print");
    strbuf *b = &R->scratch[R->n_scratch++];
    b->n = 0;
    b->failed = 0;
    b->limit = limit;
    if (b->p) b->p[0] = 0;
    return b;
}

/* The scratch buffer taken last, given back; its text as an arena string. */
static value scratch_give(rt *R, strbuf *b) {
    value v = mk_str(arena_strdup(&R->A, b->p ? b->p : "", b->n), b->n);
    R->n_scratch--;
    return v;
}

static vlist *new_list(rt *R, size_t cap) {
    vlist *l = arena_alloc(&R->A, sizeof *l);
    if (cap) l->v = arena_alloc(&R->A, cap * sizeof *l->v), l->cap = cap;
    return l;
}
static void list_push(rt *R, vlist *l, value v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        value *nv = arena_alloc(&R->A, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv, l->cap = cap;
    }
    l->v[l->n++] = v;
}
static value mk_list(vlist *l) { return (value){.k = V_LIST, .p = l}; }

static vdict *new_dict(rt *R) { return arena_alloc(&R->A, sizeof(vdict)); }
static long dict_find(const vdict *d, const char *k, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (d->keys[i].n == n && !memcmp(d->keys[i].s, k, n)) return (long)i;
    return -1;
}
static void dict_set(rt *R, vdict *d, value key, value v) {
    long at = dict_find(d, key.s, key.n);
    if (at >= 0) {
        d->vals[at] = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        value *k = arena_alloc(&R->A, cap * sizeof *k), *vv = arena_alloc(&R->A, cap * sizeof *vv);
        if (d->n) memcpy(k, d->keys, d->n * sizeof *k), memcpy(vv, d->vals, d->n * sizeof *vv);
        d->keys = k, d->vals = vv, d->cap = cap;
    }
    d->keys[d->n] = key;
    d->vals[d->n++] = v;
}

static value from_json(rt *R, const json_value *j) {
    switch (j->type) {
    case JSON_NULL: return NONE;
    case JSON_BOOL: return mk_bool(j->boolean);
    case JSON_INT: return mk_int(j->integer);
    case JSON_FLOAT: return mk_float(j->number);
    case JSON_STRING: return mk_str(j->str, j->len);
    case JSON_ARRAY: {
        vlist *l = new_list(R, j->len);
        for (size_t i = 0; i < j->len; i++) l->v[l->n++] = from_json(R, j->items[i]);
        return mk_list(l);
    }
    case JSON_OBJECT: {
        vdict *d = new_dict(R);
        for (size_t i = 0; i < j->len; i++) dict_set(R, d, mk_str(j->keys[i], j->key_lens[i]), from_json(R, j->items[i]));
        return (value){.k = V_DICT, .p = d};
    }
    }
    return NONE;
}

/* ---------------------------------------------------------------- scopes */

static scope *new_scope(rt *R, scope *parent) {
    scope *s = arena_alloc(&R->A, sizeof *s);
    s->parent = parent;
    return s;
}
static void scope_set(rt *R, scope *s, str name, value v) {
    for (int i = 0; i < s->n; i++)
        if (s->names[i].n == name.n && !memcmp(s->names[i].s, name.s, name.n)) {
            s->vals[i] = v;
            return;
        }
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 8;
        str *nn = arena_alloc(&R->A, (size_t)cap * sizeof *nn);
        value *nv = arena_alloc(&R->A, (size_t)cap * sizeof *nv);
        if (s->n) memcpy(nn, s->names, (size_t)s->n * sizeof *nn), memcpy(nv, s->vals, (size_t)s->n * sizeof *nv);
        s->names = nn, s->vals = nv, s->cap = cap;
    }
    s->names[s->n] = name;
    s->vals[s->n++] = v;
}
static int scope_get(const scope *s, str name, value *out) {
    for (; s; s = s->parent)
        for (int i = s->n - 1; i >= 0; i--)
            if (s->names[i].n == name.n && !memcmp(s->names[i].s, name.s, name.n)) {
                *out = s->vals[i];
                return 1;
            }
    return 0;
}

/* ---------------------------------------------------------------- text helpers */

static const char *fmt_msg(rt *R, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *fmt_msg(rt *R, const char *fmt, ...) {
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return arena_strdup(&R->A, buf, strlen(buf));
}

/* Python's type names, as jinja2's messages use them. */
static const char *type_name(const value *v) {
    switch (v->k) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: return ((vlist *)v->p)->tuple ? "tuple" : "list";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_MACRO: return "Macro";
    case V_FUNC: return "function";
    case V_LOOP: return "LoopContext";
    }
    return "?";
}

static size_t n_chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}
/* Byte offset of code point index ci (ci <= number of code points). */
static size_t char_off(const char *s, size_t n, size_t ci) {
    size_t i = 0;
    while (i < n && ci) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xc0) == 0x80) i++;
        ci--;
    }
    return i;
}

static void emit(rt *R, const char *s, size_t n, int pos) {
    sb_put(R->out, s, n);
    if (R->out->failed)
        fail_at(&R->F, pos, R->out->failed == 2 ? "output limit reached (%zu bytes)" : "out of memory (%zu)",
                R->o->max_output);
}

static void to_str(rt *R, const value *v, strbuf *b, int pos);

/* Python's repr() of a string: single quotes unless it holds ' and no ". */
static void repr_str(strbuf *b, const char *s, size_t n) {
    int sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    sb_putc(b, q);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        char buf[16];
        if (c == '\\' || c == (unsigned char)q) {
            sb_putc(b, '\\'), sb_putc(b, (char)c), i++;
        } else if (c == '\n') {
            sb_puts(b, "\\n"), i++;
        } else if (c == '\r') {
            sb_puts(b, "\\r"), i++;
        } else if (c == '\t') {
            sb_puts(b, "\\t"), i++;
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(buf, sizeof buf, "\\x%02x", c), sb_puts(b, buf), i++;
        } else if (c < 0x80) {
            sb_putc(b, (char)c), i++;
        } else {
            int k;
            uint32_t cp = utf8_decode((const uint8_t *)s + i, n - i, &k);
            /* not printable for Python: C1 controls, non-space separators, format characters */
            int np = (cp >= 0x80 && cp <= 0xa0) || cp == 0xad || (uni_flags(cp) & UNI_WS) ||
                     (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e) ||
                     (cp >= 0x2060 && cp <= 0x206f) || cp == 0xfeff;
            if (np) {
                snprintf(buf, sizeof buf, cp < 0x100 ? "\\x%02x" : "\\u%04x", (unsigned)cp);
                sb_puts(b, buf);
            } else {
                sb_put(b, s + i, (size_t)k);
            }
            i += (size_t)k;
        }
    }
    sb_putc(b, q);
}

static void repr(rt *R, const value *v, strbuf *b, int pos) {
    if (v->k == V_STR) repr_str(b, v->s, v->n);
    else to_str(R, v, b, pos);
}

/* Python's str(): what {{ }} prints. */
static void to_str(rt *R, const value *v, strbuf *b, int pos) {
    char buf[32];
    if (++R->depth > R->o->max_depth + 200) fail_at(&R->F, pos, "value nested too deeply to print");
    switch (v->k) {
    case V_UNDEF: break;
    case V_NONE: sb_puts(b, "None"); break;
    case V_BOOL: sb_puts(b, v->b ? "True" : "False"); break;
    case V_INT: snprintf(buf, sizeof buf, "%lld", (long long)v->i), sb_puts(b, buf); break;
    case V_FLOAT: json_write_float_repr(b, v->f); break;
    case V_STR: sb_put(b, v->s, v->n); break;
    case V_LIST: {
        vlist *l = v->p;
        sb_putc(b, l->tuple ? '(' : '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) sb_puts(b, ", ");
            repr(R, &l->v[i], b, pos);
        }
        if (l->tuple && l->n == 1) sb_putc(b, ',');
        sb_putc(b, l->tuple ? ')' : ']');
        break;
    }
    case V_DICT: {
        vdict *d = v->p;
        sb_putc(b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) sb_puts(b, ", ");
            repr(R, &d->keys[i], b, pos);
            sb_puts(b, ": ");
            repr(R, &d->vals[i], b, pos);
        }
        sb_putc(b, '}');
        break;
    }
    default: fail_at(&R->F, pos, "unsupported: printing a %s object", type_name(v));
    }
    R->depth--;
    if (b->failed) fail_at(&R->F, pos, "output limit reached");
}

static value str_of(rt *R, const value *v, int pos) {
    if (v->k == V_STR) return *v;
    strbuf *b = scratch_take(R, R->o->max_output, pos);
    to_str(R, v, b, pos);
    return scratch_give(R, b);
}

static value concat(rt *R, const char *a, size_t an, const char *b, size_t bn, int pos) {
    if (an + bn > R->o->max_output) fail_at(&R->F, pos, "string longer than the output limit");
    char *s = rt_alloc_str(R, an + bn);
    memcpy(s, a, an);
    memcpy(s + an, b, bn);
    return mk_str(s, an + bn);
}

/* ---------------------------------------------------------------- truth, equality, order */

static int truthy(const value *v) {
    switch (v->k) {
    case V_UNDEF: case V_NONE: return 0;
    case V_BOOL: return v->b;
    case V_INT: return v->i != 0;
    case V_FLOAT: return v->f != 0;
    case V_STR: return v->n != 0;
    case V_LIST: return ((vlist *)v->p)->n != 0;
    case V_DICT: return ((vdict *)v->p)->n != 0;
    default: return 1;
    }
}

static int is_num(const value *v) { return v->k == V_BOOL || v->k == V_INT || v->k == V_FLOAT; }
static double num(const value *v) { return v->k == V_FLOAT ? v->f : v->k == V_INT ? (double)v->i : v->b; }
static int64_t ival(const value *v) { return v->k == V_INT ? v->i : v->b; }

/* Python ==. */
static int equal(rt *R, const value *a, const value *b) {
    if (R->depth > 100000) fail_at(&R->F, -1, "values nested too deeply to compare");
    if (is_num(a) && is_num(b)) {
        if (a->k != V_FLOAT && b->k != V_FLOAT) return ival(a) == ival(b);
        return num(a) == num(b);
    }
    if (a->k != b->k) return 0;
    switch (a->k) {
    case V_UNDEF: case V_NONE: return 1;
    case V_STR: return a->n == b->n && !memcmp(a->s, b->s, a->n);
    case V_LIST: {
        vlist *x = a->p, *y = b->p;
        if (x->n != y->n || x->tuple != y->tuple) return 0;
        int same = 1;
        R->depth++;
        for (size_t i = 0; i < x->n && same; i++) same = equal(R, &x->v[i], &y->v[i]);
        R->depth--;
        return same;
    }
    case V_DICT: {
        vdict *x = a->p, *y = b->p;
        if (x->n != y->n) return 0;
        int same = 1;
        R->depth++;
        for (size_t i = 0; i < x->n && same; i++) {
            long j = dict_find(y, x->keys[i].s, x->keys[i].n);
            same = j >= 0 && equal(R, &x->vals[i], &y->vals[j]);
        }
        R->depth--;
        return same;
    }
    default: return a->p == b->p && a->i == b->i;
    }
}

/* Python's <, as -1 / 0 / 1 (a TypeError is refused). */
static int compare(rt *R, const value *a, const value *b, const char *op, int pos) {
    if (a->k == V_UNDEF || b->k == V_UNDEF)
        fail_at(&R->F, pos, "%s", a->k == V_UNDEF && a->s ? a->s : b->k == V_UNDEF && b->s ? b->s : "undefined value compared");
    if (is_num(a) && is_num(b)) {
        if (a->k != V_FLOAT && b->k != V_FLOAT) return (ival(a) > ival(b)) - (ival(a) < ival(b));
        double x = num(a), y = num(b);
        return (x > y) - (x < y);
    }
    if (a->k == V_STR && b->k == V_STR) {
        int c = memcmp(a->s, b->s, a->n < b->n ? a->n : b->n);
        return c ? (c > 0) - (c < 0) : (a->n > b->n) - (a->n < b->n);
    }
    if (a->k == V_LIST && b->k == V_LIST) {
        vlist *x = a->p, *y = b->p;
        if (R->depth > 100000) fail_at(&R->F, pos, "values nested too deeply to compare");
        for (size_t i = 0; i < x->n && i < y->n; i++)
            if (!equal(R, &x->v[i], &y->v[i])) {
                R->depth++;
                int c = compare(R, &x->v[i], &y->v[i], op, pos);
                R->depth--;
                return c;
            }
        return (x->n > y->n) - (x->n < y->n);
    }
    fail_at(&R->F, pos, "'%s' not supported between instances of '%s' and '%s'", op, type_name(a), type_name(b));
}

static void check_undef(rt *R, const value *v, int pos) {
    if (v->k == V_UNDEF) fail_at(&R->F, pos, "%s", v->s ? v->s : "undefined value used");
}

/* `x in y` */
static int contains(rt *R, const value *hay, const value *needle, int pos) {
    switch (hay->k) {
    case V_UNDEF: return 0; /* iterating an Undefined yields nothing */
    case V_STR:
        if (needle->k != V_STR)
            fail_at(&R->F, pos, "'in <string>' requires string as left operand, not %s", type_name(needle));
        if (needle->n == 0) return 1;
        for (size_t i = 0; i + needle->n <= hay->n; i++)
            if (!memcmp(hay->s + i, needle->s, needle->n)) return 1;
        return 0;
    case V_LIST: {
        vlist *l = hay->p;
        for (size_t i = 0; i < l->n; i++)
            if (equal(R, &l->v[i], needle)) return 1;
        return 0;
    }
    case V_DICT:
        return needle->k == V_STR && dict_find(hay->p, needle->s, needle->n) >= 0;
    default: fail_at(&R->F, pos, "argument of type '%s' is not iterable", type_name(hay));
    }
}

/* The items a for loop (or list(), join, ...) walks. */
static vlist *iterate(rt *R, const value *v, int pos) {
    switch (v->k) {
    case V_UNDEF: return new_list(R, 0);
    case V_LIST: return v->p;
    case V_DICT: {
        vdict *d = v->p;
        vlist *l = new_list(R, d->n);
        for (size_t i = 0; i < d->n; i++) l->v[l->n++] = d->keys[i];
        return l;
    }
    case V_STR: {
        vlist *l = new_list(R, v->n);
        for (size_t i = 0; i < v->n;) {
            size_t j = i + 1;
            while (j < v->n && ((unsigned char)v->s[j] & 0xc0) == 0x80) j++;
            l->v[l->n++] = mk_str(v->s + i, j - i);
            i = j;
        }
        return l;
    }
    default: fail_at(&R->F, pos, "'%s' object is not iterable", type_name(v));
    }
}

/* ---------------------------------------------------------------- attributes and items */

static const char *const STR_METHODS[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith",
                                          "endswith", "replace", "lower", "upper", "title", "capitalize",
                                          "find", "rfind", "count", "join", "splitlines", "isdigit", "isalpha",
                                          "isalnum", "isspace", "islower", "isupper", "format", "index",
                                          "rindex", "center", "ljust", "rjust", "zfill", "partition",
                                          "rpartition", "casefold", "swapcase", "encode", "expandtabs",
                                          "removeprefix", "removesuffix", "isnumeric", "isdecimal",
                                          "istitle", "isidentifier", "isprintable", "isascii", "translate",
                                          "maketrans", "format_map"};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", "copy", "fromkeys"};
static const char *const DICT_MUTATORS[] = {"clear", "pop", "popitem", "setdefault", "update"};
static const char *const LIST_METHODS[] = {"count", "index", "copy"};
static const char *const LIST_MUTATORS[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"};
#define NAMES_IN(s, list) in_names(s, list, sizeof list / sizeof *list)

static value method(rt *R, const value *self, str name) {
    value *bound = arena_alloc(&R->A, sizeof *bound);
    *bound = *self;
    return (value){.k = V_FUNC, .i = F_METHOD, .s = name.s, .n = name.n, .p = bound};
}

/* The sandbox's answer to a method that modifies its object: an undefined
 * that raises SecurityError when called. */
static value unsafe(rt *R, const value *obj, str name) {
    value u = mk_undef(fmt_msg(R, "access to attribute '%.*s' of '%s' object is unsafe.", (int)name.n, name.s,
                               type_name(obj)));
    u.i = F_UNSAFE;
    return u;
}

static value missing_attr(rt *R, const value *obj, str name) {
    return mk_undef(fmt_msg(R, "'%s object' has no attribute '%.*s'", type_name(obj), (int)name.n, name.s));
}

static value loop_attr(rt *R, const value *v, str name, int pos);

/* obj.name: jinja2 tries the Python attribute first, then the item. */
static value get_attr(rt *R, const value *obj, str name, int pos) {
    switch (obj->k) {
    case V_UNDEF: check_undef(R, obj, pos); break;
    case V_DICT: {
        if (NAMES_IN(name, DICT_METHODS)) return method(R, obj, name);
        if (NAMES_IN(name, DICT_MUTATORS)) return unsafe(R, obj, name);
        long at = dict_find(obj->p, name.s, name.n);
        if (at >= 0) return ((vdict *)obj->p)->vals[at];
        break;
    }
    case V_NS: {
        long at = dict_find(obj->p, name.s, name.n);
        if (at >= 0) return ((vdict *)obj->p)->vals[at];
        break;
    }
    case V_STR:
        if (NAMES_IN(name, STR_METHODS)) return method(R, obj, name);
        break;
    case V_LIST:
        if (NAMES_IN(name, LIST_METHODS)) return method(R, obj, name);
        if (NAMES_IN(name, LIST_MUTATORS)) return unsafe(R, obj, name);
        break;
    case V_LOOP: return loop_attr(R, obj, name, pos);
    default: break;
    }
    if (name.n && name.s[0] == '_') fail_at(&R->F, pos, "unsupported: attribute '%.*s'", (int)name.n, name.s);
    return missing_attr(R, obj, name);
}

/* Python index semantics: negative counts from the end. */
static int norm_index(int64_t i, size_t n, size_t *out) {
    if (i < 0) i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n) return 0;
    *out = (size_t)i;
    return 1;
}

/* obj[key]: the item first, then (for a string key) the attribute. */
static value get_item(rt *R, const value *obj, const value *key, int pos) {
    check_undef(R, obj, pos);
    if ((obj->k == V_LIST || obj->k == V_STR) && (key->k == V_INT || key->k == V_BOOL)) {
        size_t n = obj->k == V_LIST ? ((vlist *)obj->p)->n : n_chars(obj->s, obj->n), at;
        if (norm_index(ival(key), n, &at)) {
            if (obj->k == V_LIST) return ((vlist *)obj->p)->v[at];
            size_t b = char_off(obj->s, obj->n, at), e = char_off(obj->s, obj->n, at + 1);
            return mk_str(obj->s + b, e - b);
        }
        return mk_undef(fmt_msg(R, "%s object has no element %lld", type_name(obj), (long long)ival(key)));
    }
    if (obj->k == V_DICT && key->k == V_STR) {
        long at = dict_find(obj->p, key->s, key->n);
        if (at >= 0) return ((vdict *)obj->p)->vals[at];
    }
    if (key->k == V_STR) return get_attr(R, obj, (str){key->s, key->n}, pos);
    check_undef(R, key, pos);
    if (obj->k == V_DICT) {
        strbuf *b = scratch_take(R, 256, pos);
        repr(R, key, b, pos);
        return mk_undef(fmt_msg(R, "dict object has no element %s", scratch_give(R, b).s));
    }
    fail_at(&R->F, pos, "unsupported: indexing a %s with a %s", type_name(obj), type_name(key));
}

/* obj[start:stop:step] on a list or a string (code points). */
static value get_slice(rt *R, const value *obj, const value *lo, const value *hi, const value *st, int pos) {
    check_undef(R, obj, pos);
    if (obj->k != V_LIST && obj->k != V_STR) fail_at(&R->F, pos, "unsupported: slicing a %s", type_name(obj));
    int64_t n = obj->k == V_LIST ? (int64_t)((vlist *)obj->p)->n : (int64_t)n_chars(obj->s, obj->n);
    const value *parts[3] = {lo, hi, st};
    for (int k = 0; k < 3; k++)
        if (parts[k] && parts[k]->k != V_NONE && parts[k]->k != V_INT && parts[k]->k != V_BOOL)
            fail_at(&R->F, pos, "slice indices must be integers or None");
    int64_t step = st && st->k != V_NONE ? ival(st) : 1;
    if (step == 0) fail_at(&R->F, pos, "slice step cannot be zero");
    int64_t a, b;
    /* CPython's PySlice_AdjustIndices */
    if (lo && lo->k != V_NONE) {
        a = ival(lo);
        if (a < 0) a = a + n < 0 ? (step < 0 ? -1 : 0) : a + n;
        else if (a >= n) a = step < 0 ? n - 1 : n;
    } else a = step < 0 ? n - 1 : 0;
    if (hi && hi->k != V_NONE) {
        b = ival(hi);
        if (b < 0) b = b + n < 0 ? (step < 0 ? -1 : 0) : b + n;
        else if (b >= n) b = step < 0 ? n - 1 : n;
    } else b = step < 0 ? -1 : n;
    vlist *src = obj->k == V_LIST ? obj->p : iterate(R, obj, pos);
    vlist *l = new_list(R, 0);
    for (int64_t i = a; step > 0 ? i < b : i > b; i += step) list_push(R, l, src->v[i]);
    if (obj->k == V_LIST) {
        l->tuple = src->tuple;
        return mk_list(l);
    }
    size_t len = 0;
    for (size_t i = 0; i < l->n; i++) len += l->v[i].n;
    char *s = rt_alloc_str(R, len);
    len = 0;
    for (size_t i = 0; i < l->n; i++) memcpy(s + len, l->v[i].s, l->v[i].n), len += l->v[i].n;
    return mk_str(s, len);
}

/* loop.index, loop.first, ... (jinja2's LoopContext) */
static value loop_attr(rt *R, const value *v, str name, int pos) {
    loopobj *L = v->p;
    int64_t n = (int64_t)L->items->n, i = L->index0;
    if (str_is(name, "index0")) return mk_int(i);
    if (str_is(name, "index")) return mk_int(i + 1);
    if (str_is(name, "revindex0")) return mk_int(n - i - 1);
    if (str_is(name, "revindex")) return mk_int(n - i);
    if (str_is(name, "first")) return mk_bool(i == 0);
    if (str_is(name, "last")) return mk_bool(i == n - 1);
    if (str_is(name, "length")) return mk_int(n);
    if (str_is(name, "depth")) return mk_int(1);
    if (str_is(name, "depth0")) return mk_int(0);
    if (str_is(name, "previtem")) return i > 0 ? L->items->v[i - 1] : mk_undef("there is no previous item");
    if (str_is(name, "nextitem")) return i + 1 < n ? L->items->v[i + 1] : mk_undef("there is no next item");
    if (str_is(name, "cycle")) return (value){.k = V_FUNC, .i = F_CYCLE, .p = (void *)v->p};
    fail_at(&R->F, pos, "unsupported: loop.%.*s", (int)name.n, name.s);
}

/* ---------------------------------------------------------------- arithmetic */

static value arith(rt *R, const char *op, const value *a, const value *b, int pos) {
    if (a->k == V_UNDEF || b->k == V_UNDEF) check_undef(R, a->k == V_UNDEF ? a : b, pos);
    char o = op[0];
    int two = op[1] != 0;
    if (o == '+' && a->k == V_STR && b->k == V_STR) return concat(R, a->s, a->n, b->s, b->n, pos);
    if (o == '+' && a->k == V_LIST && b->k == V_LIST) {
        vlist *x = a->p, *y = b->p, *l = new_list(R, x->n + y->n);
        memcpy(l->v, x->v, x->n * sizeof *l->v);
        memcpy(l->v + x->n, y->v, y->n * sizeof *l->v);
        l->n = x->n + y->n;
        l->tuple = x->tuple;
        return mk_list(l);
    }
    if (o == '*' && !two && ((a->k == V_STR && (b->k == V_INT || b->k == V_BOOL)) ||
                             (b->k == V_STR && (a->k == V_INT || a->k == V_BOOL)))) {
        const value *s = a->k == V_STR ? a : b;
        int64_t times = ival(a->k == V_STR ? b : a);
        if (times <= 0) return mk_str("", 0);
        if (s->n && (uint64_t)times > R->o->max_output / s->n) fail_at(&R->F, pos, "string longer than the output limit");
        char *p = rt_alloc_str(R, s->n * (size_t)times);
        for (int64_t k = 0; k < times; k++) memcpy(p + (size_t)k * s->n, s->s, s->n);
        return mk_str(p, s->n * (size_t)times);
    }
    if (!is_num(a) || !is_num(b)) {
        if (o == '%' && a->k == V_STR) fail_at(&R->F, pos, "unsupported: %% string formatting");
        fail_at(&R->F, pos, "unsupported operand type(s) for %s: '%s' and '%s'", op, type_name(a), type_name(b));
    }
    int ints = a->k != V_FLOAT && b->k != V_FLOAT;
    int64_t x = ival(a), y = ival(b), r;
    if (o == '/' && !two) {
        if (num(b) == 0) fail_at(&R->F, pos, "division by zero");
        return mk_float(num(a) / num(b));
    }
    if (ints) {
        switch (o) {
        case '+': if (__builtin_add_overflow(x, y, &r)) goto overflow; return mk_int(r);
        case '-': if (__builtin_sub_overflow(x, y, &r)) goto overflow; return mk_int(r);
        case '*':
            if (!two) {
                if (__builtin_mul_overflow(x, y, &r)) goto overflow;
                return mk_int(r);
            }
            if (y < 0) return mk_float(pow((double)x, (double)y));
            r = 1;
            for (int64_t k = 0; k < y; k++) {
                if (__builtin_mul_overflow(r, x, &r)) goto overflow;
                if (r == 0 || r == 1) break;
                if (r == -1) { r = (y - k - 1) % 2 ? -r : r; break; }
            }
            return mk_int(r);
        case '/':
        case '%': {
            if (y == 0) fail_at(&R->F, pos, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) goto overflow;
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) q--, m += y; /* Python floors */
            return mk_int(o == '/' ? q : m);
        }
        }
    }
    double fx = num(a), fy = num(b);
    switch (o) {
    case '+': return mk_float(fx + fy);
    case '-': return mk_float(fx - fy);
    case '*':
        if (two) return mk_float(pow(fx, fy));
        return mk_float(fx * fy);
    case '/':
    case '%': {
        /* CPython's float_divmod */
        if (fy == 0) fail_at(&R->F, pos, "float division or modulo by zero");
        double m = fmod(fx, fy), d = (fx - m) / fy, fd;
        if (m != 0) {
            if ((fy < 0) != (m < 0)) m += fy, d -= 1.0;
        } else {
            m = copysign(0.0, fy);
        }
        if (o == '%') return mk_float(m);
        if (d != 0) {
            fd = floor(d);
            if (d - fd > 0.5) fd += 1.0;
        } else {
            fd = copysign(0.0, fx / fy);
        }
        return mk_float(fd);
    }
    }
overflow:
    fail_at(&R->F, pos, "unsupported: integer result beyond 64 bits");
}

/* ---------------------------------------------------------------- calls */

typedef struct {
    value *pos;
    int n;
    str *names;
    value *kw;
    int nk;
    int at; /* source position */
} args_t;

static value eval(rt *R, const node *n, scope *s);
static void exec_body(rt *R, const nlist *body, scope *s, int *flow);

/* Argument `name` at position `i` (or by keyword), else def. */
static value arg(const args_t *a, int i, const char *name, value def) {
    for (int k = 0; k < a->nk; k++)
        if (str_is(a->names[k], name)) return a->kw[k];
    return i >= 0 && i < a->n ? a->pos[i] : def;
}
static int has_arg(const args_t *a, int i, const char *name) {
    for (int k = 0; k < a->nk; k++)
        if (str_is(a->names[k], name)) return 1;
    return i >= 0 && i < a->n;
}
/* Refuse keyword arguments outside `known` and more than max_pos positionals. */
static void check_args(rt *R, const args_t *a, const char *what, int max_pos, const char *const *known, int nk) {
    if (a->n > max_pos) fail_at(&R->F, a->at, "%s takes at most %d positional argument(s), %d given", what, max_pos, a->n);
    for (int k = 0; k < a->nk; k++) {
        int ok = 0;
        for (int j = 0; j < nk; j++) ok |= str_is(a->names[k], known[j]);
        if (!ok) fail_at(&R->F, a->at, "%s: unexpected keyword argument '%.*s'", what, (int)a->names[k].n, a->names[k].s);
    }
}

static value need_str(rt *R, const value *v, const char *what, int pos) {
    check_undef(R, v, pos);
    if (v->k != V_STR) fail_at(&R->F, pos, "%s expects a string, got %s", what, type_name(v));
    return *v;
}

static value call_macro(rt *R, const node *m, const args_t *a) {
    if (++R->depth > R->o->max_depth || R->n_caps >= (int)(sizeof R->caps / sizeof R->caps[0]))
        fail_at(&R->F, a->at, "recursion limit reached (%d nested calls)", R->o->max_depth);
    step(R, a->at);
    if (a->n > m->n_names)
        fail_at(&R->F, a->at, "macro '%.*s' takes not more than %d argument(s)", (int)m->name.n, m->name.s, m->n_names);
    scope *s = new_scope(R, R->root);
    for (int i = 0; i < m->n_names; i++) {
        value v = UNDEF;
        int found = 0;
        if (i < a->n) v = a->pos[i], found = 1;
        for (int k = 0; k < a->nk; k++)
            if (a->names[k].n == m->names[i].n && !memcmp(a->names[k].s, m->names[i].s, a->names[k].n)) {
                if (found) fail_at(&R->F, a->at, "macro '%.*s' got multiple values for '%.*s'", (int)m->name.n,
                                   m->name.s, (int)m->names[i].n, m->names[i].s);
                v = a->kw[k], found = 1;
            }
        if (!found && m->kwargs.v[i]) v = eval(R, m->kwargs.v[i], s);
        if (!found && !m->kwargs.v[i])
            v = mk_undef(fmt_msg(R, "parameter '%.*s' was not provided", (int)m->names[i].n, m->names[i].s));
        scope_set(R, s, m->names[i], v);
    }
    for (int k = 0; k < a->nk; k++) {
        int ok = 0;
        for (int i = 0; i < m->n_names; i++) ok |= a->names[k].n == m->names[i].n && !memcmp(a->names[k].s, m->names[i].s, a->names[k].n);
        if (!ok) fail_at(&R->F, a->at, "macro '%.*s' takes no keyword argument '%.*s'", (int)m->name.n, m->name.s,
                         (int)a->names[k].n, a->names[k].s);
    }
    strbuf *saved = R->out, *cap = &R->caps[R->n_caps++];
    cap->n = 0;
    cap->limit = R->o->max_output;
    cap->failed = 0;
    R->out = cap;
    int flow = 0;
    exec_body(R, &m->body, s, &flow);
    R->out = saved;
    R->n_caps--;
    R->depth--;
    return mk_str(arena_strdup(&R->A, cap->p ? cap->p : "", cap->n), cap->n);
}

static value call_method(rt *R, const value *fn, const args_t *a);

static value call(rt *R, const value *fn, const args_t *a) {
    if (fn->k == V_MACRO) return call_macro(R, fn->p, a);
    if (fn->k == V_UNDEF) {
        if (fn->i == F_UNSAFE) fail_at(&R->F, a->at, "%s", fn->s);
        check_undef(R, fn, a->at);
    }
    if (fn->k != V_FUNC) fail_at(&R->F, a->at, "'%s' object is not callable", type_name(fn));
    switch (fn->i) {
    case F_RAISE: {
        value m = str_of(R, &(value){0}, a->at);
        if (a->n) m = str_of(R, &a->pos[0], a->at);
        moe_fail(R->F.err, "%.*s", (int)m.n, m.s);
        R->F.code = JINJA_RAISED;
        longjmp(R->F.jb, 1);
    }
    case F_STRFTIME: {
        value f = need_str(R, a->n ? &a->pos[0] : &UNDEF, "strftime_now", a->at);
        char buf[512];
        char *fmt = arena_strdup(&R->A, f.s, f.n);
        size_t k = strftime(buf, sizeof buf, fmt, &R->o->now);
        if (k == 0 && f.n) fail_at(&R->F, a->at, "strftime_now: format too long or empty result");
        return mk_str(arena_strdup(&R->A, buf, k), k);
    }
    case F_RANGE: {
        int64_t v[3] = {0, 0, 1};
        if (a->n < 1 || a->n > 3 || a->nk) fail_at(&R->F, a->at, "range takes 1 to 3 integers");
        for (int i = 0; i < a->n; i++) {
            if (a->pos[i].k != V_INT && a->pos[i].k != V_BOOL) fail_at(&R->F, a->at, "range takes integers");
            v[a->n == 1 ? 1 : i] = ival(&a->pos[i]);
        }
        if (v[2] == 0) fail_at(&R->F, a->at, "range() arg 3 must not be zero");
        vlist *l = new_list(R, 0);
        for (int64_t i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2]) {
            if (l->n >= 100000) fail_at(&R->F, a->at, "range too big (the sandbox allows 100000 items)");
            list_push(R, l, mk_int(i));
        }
        return mk_list(l);
    }
    case F_NAMESPACE:
    case F_DICT: {
        vdict *d = new_dict(R);
        if (a->n > 1) fail_at(&R->F, a->at, "namespace() / dict() take at most one positional argument");
        if (a->n == 1) {
            if (a->pos[0].k != V_DICT) fail_at(&R->F, a->at, "unsupported: namespace() / dict() of a %s", type_name(&a->pos[0]));
            vdict *src = a->pos[0].p;
            for (size_t i = 0; i < src->n; i++) dict_set(R, d, src->keys[i], src->vals[i]);
        }
        for (int k = 0; k < a->nk; k++) dict_set(R, d, mk_str(a->names[k].s, a->names[k].n), a->kw[k]);
        return (value){.k = fn->i == F_NAMESPACE ? V_NS : V_DICT, .p = d};
    }
    case F_CYCLE: {
        loopobj *L = fn->p;
        if (a->n == 0) fail_at(&R->F, a->at, "no items for cycling given");
        return a->pos[L->index0 % a->n];
    }
    case F_METHOD: return call_method(R, fn, a);
    }
    fail_at(&R->F, a->at, "not callable");
}

/* ---------------------------------------------------------------- Python string methods */

static int is_ascii_lower(char c) { return c >= 'a' && c <= 'z'; }
static int is_ascii_upper(char c) { return c >= 'A' && c <= 'Z'; }

/* Case mapping without Unicode tables: exact for text whose letters are
 * ASCII or have no case (CJK, ...); refused for other cased scripts. */
static void check_caseless(rt *R, const value *s, const char *what, int pos) {
    for (size_t i = 0; i < s->n;) {
        unsigned char c = (unsigned char)s->s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int k;
        uint32_t cp = utf8_decode((const uint8_t *)s->s + i, s->n - i, &k);
        int cased_script = cp < 0x0590 || (cp >= 0x10a0 && cp < 0x1100) || (cp >= 0x13a0 && cp < 0x1400) ||
                           (cp >= 0x1c80 && cp < 0x1cc0) || (cp >= 0x1d00 && cp < 0x2000) ||
                           (cp >= 0x2100 && cp < 0x2200) || (cp >= 0x24b0 && cp < 0x24f0) ||
                           (cp >= 0x2c00 && cp < 0x2e00) || (cp >= 0xa640 && cp < 0xa800) ||
                           (cp >= 0xab30 && cp < 0xabc0) || (cp >= 0xfb00 && cp < 0xfb10) ||
                           (cp >= 0xff21 && cp < 0xff5b) || (cp >= 0x10400 && cp < 0x10500) ||
                           (cp >= 0x10c80 && cp < 0x10d00) || (cp >= 0x118a0 && cp < 0x11900) ||
                           (cp >= 0x16e40 && cp < 0x16ea0) || (cp >= 0x1e900 && cp < 0x1e960);
        int cased_class = (uni_flags(cp) & UNI_L) || (cp >= 0x2160 && cp < 0x2190) || (cp >= 0x24b6 && cp < 0x24ea);
        if (cased_script && cased_class)
            fail_at(&R->F, pos, "unsupported: %s of non-ASCII letters (no case tables)", what);
        i += (size_t)k;
    }
}

/* mode: 'l' lower, 'u' upper, 't' Python str.title, 'c' capitalize, 'j' jinja2's title filter */
static value case_map(rt *R, const value *v, char mode, const char *what, int pos) {
    value s = need_str(R, v, what, pos);
    check_caseless(R, &s, what, pos);
    char *p = rt_alloc_str(R, s.n);
    int prev_cased = 0, word_start = 1;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.s[i];
        int letter = is_ascii_lower(c) || is_ascii_upper(c);
        int up;
        switch (mode) {
        case 'l': up = 0; break;
        case 'u': up = 1; break;
        case 't': up = !prev_cased; break; /* a cased letter after an uncased character starts a word */
        case 'c': up = i == 0; break;
        default: up = word_start; break;  /* jinja2: words start after - ( { [ < or white space */
        }
        if (letter) p[i] = up ? (char)(is_ascii_lower(c) ? c - 32 : c) : (char)(is_ascii_upper(c) ? c + 32 : c);
        else p[i] = c;
        prev_cased = letter; /* non-ASCII characters here are uncased (check_caseless) */
        if (((unsigned char)c & 0xc0) != 0x80) /* at a character's first byte */
            word_start = (c != 0 && strchr("-({[<", c)) || space_len(s.s, s.n, i) > 0;
    }
    return mk_str(p, s.n);
}

/* Python's str.strip family: which 1 left, 2 right, 3 both; chars NULL = white space. */
static value strip(rt *R, const value *v, const value *chars, int which, int pos) {
    value s = need_str(R, v, "strip", pos);
    size_t a = 0, b = s.n;
    if (chars && chars->k != V_NONE && chars->k != V_UNDEF) {
        value c = need_str(R, chars, "strip", pos);
        vlist *set = iterate(R, &c, pos);
        for (int again = 1; again && (which & 1) && a < b;) {
            again = 0;
            for (size_t k = 0; k < set->n; k++)
                if (b - a >= set->v[k].n && !memcmp(s.s + a, set->v[k].s, set->v[k].n)) {
                    a += set->v[k].n, again = 1;
                    break;
                }
        }
        for (int again = 1; again && (which & 2) && b > a;) {
            again = 0;
            for (size_t k = 0; k < set->n; k++)
                if (b - a >= set->v[k].n && !memcmp(s.s + b - set->v[k].n, set->v[k].s, set->v[k].n)) {
                    b -= set->v[k].n, again = 1;
                    break;
                }
        }
    } else {
        if (which & 1) {
            int k;
            while (a < b && (k = space_len(s.s, b, a)) > 0) a += (size_t)k;
        }
        if (which & 2) b = a + rstrip_len(s.s + a, b - a);
    }
    return mk_str(s.s + a, b - a);
}

static size_t find_sub(const char *h, size_t hn, const char *nd, size_t nn, size_t from) {
    if (nn == 0) return from <= hn ? from : (size_t)-1;
    for (size_t i = from; i + nn <= hn; i++)
        if (!memcmp(h + i, nd, nn)) return i;
    return (size_t)-1;
}
static size_t rfind_sub(const char *h, size_t hn, const char *nd, size_t nn) {
    if (nn > hn) return (size_t)-1;
    for (size_t i = hn - nn + 1; i-- > 0;)
        if (!memcmp(h + i, nd, nn)) return i;
    return (size_t)-1;
}

/* str.split / rsplit (sep None: runs of white space) */
static value split(rt *R, const value *s, const value *sep, int64_t maxsplit, int right, int pos) {
    vlist *l = new_list(R, 0);
    if (sep && sep->k != V_NONE) {
        value d = need_str(R, sep, "split", pos);
        if (d.n == 0) fail_at(&R->F, pos, "empty separator");
        if (!right) {
            size_t i = 0, j;
            while ((maxsplit < 0 || (int64_t)l->n < maxsplit) && (j = find_sub(s->s, s->n, d.s, d.n, i)) != (size_t)-1) {
                list_push(R, l, mk_str(s->s + i, j - i));
                i = j + d.n;
            }
            list_push(R, l, mk_str(s->s + i, s->n - i));
        } else {
            size_t end = s->n, j;
            vlist *rev = new_list(R, 0);
            while ((maxsplit < 0 || (int64_t)rev->n < maxsplit) && (j = rfind_sub(s->s, end, d.s, d.n)) != (size_t)-1) {
                list_push(R, rev, mk_str(s->s + j + d.n, end - j - d.n));
                end = j;
            }
            list_push(R, l, mk_str(s->s, end));
            for (size_t k = rev->n; k-- > 0;) list_push(R, l, rev->v[k]);
        }
        return mk_list(l);
    }
    if (right && maxsplit >= 0) fail_at(&R->F, pos, "unsupported: rsplit() on white space with maxsplit");
    size_t i = 0;
    int k;
    for (;;) {
        while (i < s->n && (k = space_len(s->s, s->n, i)) > 0) i += (size_t)k;
        if (i >= s->n) break;
        if (maxsplit >= 0 && (int64_t)l->n >= maxsplit) { /* the rest, trailing white space and all */
            list_push(R, l, mk_str(s->s + i, s->n - i));
            break;
        }
        size_t j = i;
        while (j < s->n && !space_len(s->s, s->n, j)) j++;
        list_push(R, l, mk_str(s->s + i, j - i));
        i = j;
    }
    return mk_list(l);
}

static value replace(rt *R, const value *s, const value *old, const value *new_, int64_t count, int pos) {
    value o = need_str(R, old, "replace", pos), w = need_str(R, new_, "replace", pos);
    strbuf *b = scratch_take(R, R->o->max_output, pos);
    size_t i = 0;
    int64_t done = 0;
    if (o.n == 0) { /* Python inserts new between every character */
        vlist *cs = iterate(R, s, pos);
        for (size_t k = 0; k <= cs->n; k++) {
            if (count < 0 || done < count) sb_put(b, w.s, w.n), done++;
            if (k < cs->n) sb_put(b, cs->v[k].s, cs->v[k].n);
        }
    } else {
        size_t j;
        while ((count < 0 || done < count) && (j = find_sub(s->s, s->n, o.s, o.n, i)) != (size_t)-1) {
            sb_put(b, s->s + i, j - i);
            sb_put(b, w.s, w.n);
            i = j + o.n;
            done++;
        }
        sb_put(b, s->s + i, s->n - i);
    }
    if (b->failed) fail_at(&R->F, pos, "string longer than the output limit");
    return scratch_give(R, b);
}

/* Python str predicates over ASCII (non-ASCII: refused unless the answer is certain). */
static value str_pred(rt *R, const value *s, str name, int pos) {
    int any = 0, ok = 1, cased = 0;
    for (size_t i = 0; i < s->n; i++) {
        unsigned char c = (unsigned char)s->s[i];
        if (c >= 0x80) fail_at(&R->F, pos, "unsupported: str.%.*s() of non-ASCII text", (int)name.n, name.s);
        any = 1;
        if (str_is(name, "isdigit")) ok &= c >= '0' && c <= '9';
        else if (str_is(name, "isalpha")) ok &= is_ascii_lower((char)c) || is_ascii_upper((char)c);
        else if (str_is(name, "isalnum")) ok &= is_ascii_lower((char)c) || is_ascii_upper((char)c) || (c >= '0' && c <= '9');
        else if (str_is(name, "isspace")) ok &= space_len(s->s, s->n, i) > 0;
        else if (str_is(name, "islower")) { ok &= !is_ascii_upper((char)c); cased |= is_ascii_lower((char)c); }
        else if (str_is(name, "isupper")) { ok &= !is_ascii_lower((char)c); cased |= is_ascii_upper((char)c); }
    }
    if (str_is(name, "islower") || str_is(name, "isupper")) return mk_bool(ok && cased);
    return mk_bool(any && ok);
}

static int64_t int_arg(rt *R, const value *v, const char *what, int pos) {
    if (v->k != V_INT && v->k != V_BOOL) fail_at(&R->F, pos, "%s expects an integer, got %s", what, type_name(v));
    return ival(v);
}

static value join_items(rt *R, vlist *items, const value *sep, int pos);

static value call_method(rt *R, const value *fn, const args_t *a) {
    const value *self = fn->p;
    str name = {fn->s, fn->n};
    int at = a->at;
    if (self->k == V_DICT) {
        vdict *d = self->p;
        if (str_is(name, "get")) {
            if (a->n < 1 || a->n > 2 || a->nk) fail_at(&R->F, at, "dict.get takes 1 or 2 positional arguments");
            long k = a->pos[0].k == V_STR ? dict_find(d, a->pos[0].s, a->pos[0].n) : -1;
            return k >= 0 ? d->vals[k] : a->n == 2 ? a->pos[1] : NONE;
        }
        if (a->n || a->nk) fail_at(&R->F, at, "dict.%.*s takes no arguments", (int)name.n, name.s);
        vlist *l = new_list(R, d->n);
        for (size_t i = 0; i < d->n; i++) {
            if (str_is(name, "keys")) l->v[l->n++] = d->keys[i];
            else if (str_is(name, "values")) l->v[l->n++] = d->vals[i];
            else if (str_is(name, "items")) {
                vlist *t = new_list(R, 2);
                t->v[0] = d->keys[i], t->v[1] = d->vals[i], t->n = 2, t->tuple = 1;
                l->v[l->n++] = mk_list(t);
            } else break;
        }
        if (str_is(name, "keys") || str_is(name, "values") || str_is(name, "items")) return mk_list(l);
        if (str_is(name, "copy")) {
            vdict *c = new_dict(R);
            for (size_t i = 0; i < d->n; i++) dict_set(R, c, d->keys[i], d->vals[i]);
            return (value){.k = V_DICT, .p = c};
        }
    } else if (self->k == V_LIST) {
        vlist *l = self->p;
        if (str_is(name, "copy") && !a->n && !a->nk) {
            vlist *c = new_list(R, l->n);
            memcpy(c->v, l->v, l->n * sizeof *c->v);
            c->n = l->n;
            return mk_list(c);
        }
        if ((str_is(name, "count") || str_is(name, "index")) && a->n == 1 && !a->nk) {
            int64_t cnt = 0;
            for (size_t i = 0; i < l->n; i++)
                if (equal(R, &l->v[i], &a->pos[0])) {
                    if (str_is(name, "index")) return mk_int((int64_t)i);
                    cnt++;
                }
            if (str_is(name, "index")) fail_at(&R->F, at, "list.index(x): x not in list");
            return mk_int(cnt);
        }
    } else if (self->k == V_STR) {
        const value *s = self;
        if (a->nk && !str_is(name, "split") && !str_is(name, "rsplit"))
            fail_at(&R->F, at, "unsupported: keyword arguments to str.%.*s", (int)name.n, name.s);
        if (str_is(name, "strip") || str_is(name, "lstrip") || str_is(name, "rstrip")) {
            if (a->n > 1) fail_at(&R->F, at, "str.%.*s takes at most 1 argument", (int)name.n, name.s);
            return strip(R, s, a->n ? &a->pos[0] : NULL, name.s[0] == 'l' ? 1 : name.s[0] == 'r' ? 2 : 3, at);
        }
        if (str_is(name, "split") || str_is(name, "rsplit")) {
            static const char *const kn[] = {"sep", "maxsplit"};
            check_args(R, a, "str.split", 2, kn, 2);
            value sep = arg(a, 0, "sep", NONE), ms = arg(a, 1, "maxsplit", mk_int(-1));
            return split(R, s, &sep, int_arg(R, &ms, "split", at), name.s[0] == 'r', at);
        }
        if (str_is(name, "startswith") || str_is(name, "endswith")) {
            if (a->n != 1) fail_at(&R->F, at, "unsupported: str.%.*s with start / end", (int)name.n, name.s);
            vlist one = {.v = (value *)&a->pos[0], .n = 1};
            vlist *cands = a->pos[0].k == V_LIST && ((vlist *)a->pos[0].p)->tuple ? a->pos[0].p : &one;
            for (size_t k = 0; k < cands->n; k++) {
                value p = need_str(R, &cands->v[k], name.s, at);
                if (p.n <= s->n && !memcmp(name.s[0] == 's' ? s->s : s->s + s->n - p.n, p.s, p.n)) return mk_bool(1);
            }
            return mk_bool(0);
        }
        if (str_is(name, "replace")) {
            if (a->n < 2 || a->n > 3) fail_at(&R->F, at, "str.replace takes 2 or 3 arguments");
            return replace(R, s, &a->pos[0], &a->pos[1], a->n == 3 ? int_arg(R, &a->pos[2], "replace", at) : -1, at);
        }
        if (!a->n) {
            if (str_is(name, "lower")) return case_map(R, s, 'l', "lower", at);
            if (str_is(name, "upper")) return case_map(R, s, 'u', "upper", at);
            if (str_is(name, "title")) return case_map(R, s, 't', "title", at);
            if (str_is(name, "capitalize")) {
                value lo = case_map(R, s, 'l', "capitalize", at);
                if (lo.n && is_ascii_lower(lo.s[0])) ((char *)lo.s)[0] = (char)(lo.s[0] - 32);
                return lo;
            }
            if (str_is(name, "splitlines")) {
                vlist *l = new_list(R, 0);
                size_t i = 0;
                while (i < s->n) {
                    size_t j = i;
                    while (j < s->n && s->s[j] != '\n' && s->s[j] != '\r') {
                        if ((unsigned char)s->s[j] >= 0x80 || (s->s[j] >= 0x0b && s->s[j] <= 0x0c) ||
                            (s->s[j] >= 0x1c && s->s[j] <= 0x1e))
                            fail_at(&R->F, at, "unsupported: splitlines() of text with other line breaks");
                        j++;
                    }
                    list_push(R, l, mk_str(s->s + i, j - i));
                    if (j < s->n && s->s[j] == '\r' && j + 1 < s->n && s->s[j + 1] == '\n') j++;
                    i = j + 1;
                }
                return mk_list(l);
            }
            if (name.n > 2 && name.s[0] == 'i' && name.s[1] == 's' &&
                (str_is(name, "isdigit") || str_is(name, "isalpha") || str_is(name, "isalnum") ||
                 str_is(name, "isspace") || str_is(name, "islower") || str_is(name, "isupper")))
                return str_pred(R, s, name, at);
        }
        if ((str_is(name, "find") || str_is(name, "rfind") || str_is(name, "count") || str_is(name, "index") ||
             str_is(name, "rindex")) && a->n == 1) {
            value sub = need_str(R, &a->pos[0], name.s, at);
            if (str_is(name, "count")) {
                int64_t c = 0;
                size_t i = 0, j;
                if (sub.n == 0) return mk_int((int64_t)n_chars(s->s, s->n) + 1);
                while ((j = find_sub(s->s, s->n, sub.s, sub.n, i)) != (size_t)-1) c++, i = j + sub.n;
                return mk_int(c);
            }
            size_t j = name.s[0] == 'r' ? rfind_sub(s->s, s->n, sub.s, sub.n) : find_sub(s->s, s->n, sub.s, sub.n, 0);
            if (j == (size_t)-1) {
                if (str_is(name, "index") || str_is(name, "rindex")) fail_at(&R->F, at, "substring not found");
                return mk_int(-1);
            }
            return mk_int((int64_t)n_chars(s->s, j));
        }
        if (str_is(name, "join") && a->n == 1) return join_items(R, iterate(R, &a->pos[0], at), s, at);
    }
    fail_at(&R->F, at, "unsupported: %s.%.*s() with these arguments", type_name(self), (int)name.n, name.s);
}

/* ---------------------------------------------------------------- tojson */

static json_value *to_json(rt *R, const value *v, int pos, int depth, const char **why) {
    if (depth > JSON_MAX_DEPTH) {
        *why = "nested too deeply";
        return NULL;
    }
    json_value *j = NULL;
    switch (v->k) {
    case V_NONE: return json_new(JSON_NULL);
    case V_BOOL: return json_new_bool(v->b);
    case V_INT: return json_new_int(v->i);
    case V_FLOAT: return json_new_float(v->f);
    case V_STR: return json_new_string(v->s, v->n);
    case V_LIST: {
        vlist *l = v->p;
        j = json_new(JSON_ARRAY);
        for (size_t i = 0; j && i < l->n; i++) {
            json_value *e = to_json(R, &l->v[i], pos, depth + 1, why);
            if (!e || json_array_push(j, e)) {
                json_free(j);
                return NULL;
            }
        }
        return j;
    }
    case V_DICT: {
        vdict *d = v->p;
        j = json_new(JSON_OBJECT);
        for (size_t i = 0; j && i < d->n; i++) {
            json_value *e = to_json(R, &d->vals[i], pos, depth + 1, why);
            if (!e || json_object_set(j, d->keys[i].s, d->keys[i].n, e)) {
                json_free(j);
                return NULL;
            }
        }
        return j;
    }
    default:
        *why = type_name(v);
        return NULL;
    }
}

/* HF's tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
static value tojson(rt *R, const value *v, const args_t *a) {
    static const char *const kn[] = {"ensure_ascii", "indent", "separators", "sort_keys"};
    check_args(R, a, "tojson", 4, kn, 4);
    value ea = arg(a, 0, "ensure_ascii", mk_bool(0)), ind = arg(a, 1, "indent", NONE),
          seps = arg(a, 2, "separators", NONE), sk = arg(a, 3, "sort_keys", mk_bool(0));
    json_write_opts o = {.ensure_ascii = truthy(&ea), .sort_keys = truthy(&sk)};
    char spaces[257];
    if (ind.k == V_INT || ind.k == V_BOOL) {
        int64_t k = ival(&ind);
        if (k > 256) fail_at(&R->F, a->at, "unsupported: tojson indent above 256");
        k = k < 0 ? 0 : k;
        memset(spaces, ' ', (size_t)k);
        spaces[k] = 0;
        o.indent = spaces;
    } else if (ind.k == V_STR) {
        o.indent = arena_strdup(&R->A, ind.s, ind.n);
    } else if (ind.k != V_NONE) {
        fail_at(&R->F, a->at, "unsupported: tojson indent of type %s", type_name(&ind));
    }
    if (seps.k == V_LIST && ((vlist *)seps.p)->n == 2 && ((vlist *)seps.p)->v[0].k == V_STR &&
        ((vlist *)seps.p)->v[1].k == V_STR) {
        vlist *l = seps.p;
        o.item_sep = arena_strdup(&R->A, l->v[0].s, l->v[0].n);
        o.key_sep = arena_strdup(&R->A, l->v[1].s, l->v[1].n);
    } else if (seps.k != V_NONE) {
        fail_at(&R->F, a->at, "tojson separators must be two strings");
    }
    const char *why = "?";
    json_value *j = to_json(R, v, a->at, 0, &why);
    if (!j) fail_at(&R->F, a->at, "tojson: object of type %s is not JSON serializable", why);
    strbuf b = {.limit = R->o->max_output};
    int bad = json_write(&b, j, &o);
    json_free(j);
    if (bad) {
        sb_free(&b);
        fail_at(&R->F, a->at, "tojson: output limit reached");
    }
    value r = mk_str(arena_strdup(&R->A, b.p ? b.p : "", b.n), b.n);
    sb_free(&b);
    return r;
}

/* ---------------------------------------------------------------- tests */

static int run_test(rt *R, str name, const value *v, const args_t *a) {
    int at = a->at;
    const value *x = a->n ? &a->pos[0] : NULL;
#define IS(nm) str_is(name, nm)
    if (IS("defined")) return v->k != V_UNDEF;
    if (IS("undefined")) return v->k == V_UNDEF;
    if (IS("none")) return v->k == V_NONE;
    if (IS("boolean")) return v->k == V_BOOL;
    if (IS("true")) return v->k == V_BOOL && v->b;
    if (IS("false")) return v->k == V_BOOL && !v->b;
    if (IS("integer")) return v->k == V_INT;
    if (IS("float")) return v->k == V_FLOAT;
    if (IS("number")) return is_num(v);
    if (IS("string")) return v->k == V_STR;
    if (IS("mapping")) return v->k == V_DICT;
    /* an Undefined is iterable, a sequence and callable to jinja2 */
    if (IS("iterable")) return v->k == V_UNDEF || v->k == V_STR || v->k == V_LIST || v->k == V_DICT;
    if (IS("sequence")) return v->k == V_UNDEF || v->k == V_STR || v->k == V_LIST || v->k == V_DICT;
    if (IS("callable")) return v->k == V_UNDEF || v->k == V_MACRO || v->k == V_FUNC;
    if (IS("lower") || IS("upper")) {
        value s = str_of(R, v, at);
        value r = str_pred(R, &s, (str){IS("lower") ? "islower" : "isupper", 7}, at);
        return r.b;
    }
    if (IS("odd") || IS("even")) {
        if (v->k != V_INT && v->k != V_BOOL) fail_at(&R->F, at, "test '%.*s' needs an integer", (int)name.n, name.s);
        return (int)((ival(v) % 2 + 2) % 2) == (IS("odd") ? 1 : 0);
    }
    if (!x) fail_at(&R->F, at, "test '%.*s' needs an argument", (int)name.n, name.s);
    if (IS("divisibleby")) {
        value r = arith(R, "%", v, x, at);
        return num(&r) == 0;
    }
    if (IS("==") || IS("eq") || IS("equalto")) return equal(R, v, x);
    if (IS("!=") || IS("ne")) return !equal(R, v, x);
    if (IS("in")) return contains(R, x, v, at);
    if (IS("sameas")) {
        if (v->k != x->k) return 0;
        if (v->k == V_NONE || v->k == V_UNDEF) return 1;
        if (v->k == V_BOOL) return v->b == x->b;
        if (v->k == V_LIST || v->k == V_DICT || v->k == V_NS) return v->p == x->p;
        fail_at(&R->F, at, "unsupported: 'sameas' on %s values (Python object identity)", type_name(v));
    }
    int c = 0;
    if (IS(">") || IS("gt") || IS("greaterthan")) return c = compare(R, v, x, ">", at), c > 0;
    if (IS(">=") || IS("ge")) return compare(R, v, x, ">=", at) >= 0;
    if (IS("<") || IS("lt") || IS("lessthan")) return compare(R, v, x, "<", at) < 0;
    if (IS("<=") || IS("le")) return compare(R, v, x, "<=", at) <= 0;
#undef IS
    fail_at(&R->F, at, "unsupported test '%.*s'", (int)name.n, name.s);
}

/* ---------------------------------------------------------------- filters */

static value join_items(rt *R, vlist *items, const value *sep, int pos) {
    strbuf *b = scratch_take(R, R->o->max_output, pos);
    for (size_t i = 0; i < items->n; i++) {
        if (i && sep) sb_put(b, sep->s, sep->n);
        to_str(R, &items->v[i], b, pos);
        if (b->failed) break;
    }
    if (b->failed) fail_at(&R->F, pos, "output limit reached");
    return scratch_give(R, b);
}

/* jinja2's attribute= argument: "a.b" walks attributes; integers index. */
static value attr_path(rt *R, const value *v, const value *path, int pos) {
    value cur_v = *v;
    if (path->k == V_INT) return get_item(R, &cur_v, path, pos);
    value p = need_str(R, path, "attribute", pos);
    size_t i = 0;
    while (i <= p.n) {
        size_t j = i;
        while (j < p.n && p.s[j] != '.') j++;
        str part = {p.s + i, j - i};
        int digits = part.n > 0;
        for (size_t k = 0; k < part.n; k++) digits &= part.s[k] >= '0' && part.s[k] <= '9';
        value key = digits ? mk_int(strtoll(part.s, NULL, 10)) : mk_str(part.s, part.n);
        cur_v = get_item(R, &cur_v, &key, pos);
        i = j + 1;
    }
    return cur_v;
}

static value apply_filter(rt *R, str name, const value *v, const args_t *a);

/* select / reject / selectattr / rejectattr: keep items whose test is (not) true */
static value select_items(rt *R, const value *v, const args_t *a, int by_attr, int keep) {
    vlist *src = iterate(R, v, a->at), *out = new_list(R, 0);
    int first = by_attr ? 1 : 0;
    if (by_attr && a->n < 1) fail_at(&R->F, a->at, "selectattr / rejectattr need an attribute name");
    str test = {0};
    if (a->n > first) {
        value t = need_str(R, &a->pos[first], "test name", a->at);
        test = (str){t.s, t.n};
        if (!in_names(test, JINJA_TESTS, sizeof JINJA_TESTS / sizeof *JINJA_TESTS))
            fail_at(&R->F, a->at, "no test named '%.*s'", (int)test.n, test.s);
    }
    args_t ta = {.pos = a->pos + first + 1, .n = a->n > first + 1 ? a->n - first - 1 : 0, .at = a->at};
    if (a->nk) fail_at(&R->F, a->at, "unsupported: keyword arguments to select filters");
    for (size_t i = 0; i < src->n; i++) {
        step(R, a->at);
        value x = by_attr ? attr_path(R, &src->v[i], &a->pos[0], a->at) : src->v[i];
        int r = test.n ? run_test(R, test, &x, &ta) : truthy(&x);
        if (r == keep) list_push(R, out, src->v[i]);
    }
    return mk_list(out);
}

/* Sort key comparison for sort / unique / min / max: strings compare
 * case-insensitively unless case_sensitive (jinja2's ignore_case). */
typedef struct {
    rt *R;
    value attr;
    int has_attr, case_sensitive, pos;
} sortctx;

static value sort_key(sortctx *c, const value *v) {
    value k = c->has_attr ? attr_path(c->R, v, &c->attr, c->pos) : *v;
    if (!c->case_sensitive && k.k == V_STR) k = case_map(c->R, &k, 'l', "sort", c->pos);
    return k;
}

static void merge_sort(sortctx *c, value *v, value *keys, value *tmp, value *tmpk, size_t n, int rev) {
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort(c, v, keys, tmp, tmpk, h, rev);
    merge_sort(c, v + h, keys + h, tmp, tmpk, n - h, rev);
    size_t i = 0, j = h, k = 0;
    while (i < h || j < n) {
        int take_right = i >= h || (j < n && (rev ? compare(c->R, &keys[i], &keys[j], "<", c->pos) < 0
                                                   : compare(c->R, &keys[j], &keys[i], "<", c->pos) < 0));
        if (take_right) tmp[k] = v[j], tmpk[k++] = keys[j++];
        else tmp[k] = v[i], tmpk[k++] = keys[i++];
    }
    memcpy(v, tmp, n * sizeof *v);
    memcpy(keys, tmpk, n * sizeof *keys);
}

static value sorted(rt *R, const value *v, const args_t *a) {
    static const char *const kn[] = {"reverse", "case_sensitive", "attribute"};
    check_args(R, a, "sort", 3, kn, 3);
    value rev = arg(a, 0, "reverse", mk_bool(0)), cs = arg(a, 1, "case_sensitive", mk_bool(0));
    sortctx c = {.R = R, .attr = arg(a, 2, "attribute", NONE), .case_sensitive = truthy(&cs), .pos = a->at};
    c.has_attr = c.attr.k != V_NONE;
    vlist *src = iterate(R, v, a->at), *out = new_list(R, src->n);
    value *keys = arena_alloc(&R->A, (src->n + 1) * sizeof *keys), *tmp = arena_alloc(&R->A, (src->n + 1) * sizeof *tmp),
          *tmpk = arena_alloc(&R->A, (src->n + 1) * sizeof *tmpk);
    for (size_t i = 0; i < src->n; i++) out->v[i] = src->v[i], keys[i] = sort_key(&c, &src->v[i]);
    out->n = src->n;
    /* Python's sort with reverse=True keeps equal items in their order, too */
    merge_sort(&c, out->v, keys, tmp, tmpk, out->n, truthy(&rev));
    return mk_list(out);
}

static value apply_filter(rt *R, str name, const value *v, const args_t *a) {
    int at = a->at;
#define IS(nm) str_is(name, nm)
    if (IS("default") || IS("d")) {
        value def = arg(a, 0, "default_value", mk_str("", 0)), boolean = arg(a, 1, "boolean", mk_bool(0));
        if (v->k == V_UNDEF || (truthy(&boolean) && !truthy(v))) return def;
        return *v;
    }
    if (IS("tojson")) return tojson(R, v, a);
    if (IS("string")) return str_of(R, v, at);
    if (IS("safe")) return *v;
    if (IS("items")) {
        if (v->k == V_UNDEF) return mk_list(new_list(R, 0));
        if (v->k != V_DICT) fail_at(&R->F, at, "items filter: can only get item pairs from a mapping");
        value fn = method(R, v, (str){"items", 5});
        args_t none = {.at = at};
        return call_method(R, &fn, &none);
    }
    if (IS("length") || IS("count")) {
        switch (v->k) {
        case V_UNDEF: return mk_int(0);
        case V_STR: return mk_int((int64_t)n_chars(v->s, v->n));
        case V_LIST: return mk_int((int64_t)((vlist *)v->p)->n);
        case V_DICT: return mk_int((int64_t)((vdict *)v->p)->n);
        default: fail_at(&R->F, at, "object of type '%s' has no len()", type_name(v));
        }
    }
    if (IS("list")) {
        vlist *src = iterate(R, v, at), *l = new_list(R, src->n);
        memcpy(l->v, src->v, src->n * sizeof *l->v);
        l->n = src->n;
        return mk_list(l);
    }
    if (IS("first") || IS("last")) {
        if (v->k == V_DICT && IS("last")) fail_at(&R->F, at, "unsupported: last of a mapping");
        vlist *l = iterate(R, v, at);
        if (!l->n) return mk_undef(IS("first") ? "No first item, sequence was empty." : "No last item, sequence was empty.");
        return l->v[IS("first") ? 0 : l->n - 1];
    }
    if (IS("reverse")) {
        if (v->k == V_STR) {
            static value none = {.k = V_NONE};
            value st = mk_int(-1);
            return get_slice(R, v, &none, &none, &st, at);
        }
        vlist *src = iterate(R, v, at), *l = new_list(R, src->n);
        for (size_t i = 0; i < src->n; i++) l->v[i] = src->v[src->n - 1 - i];
        l->n = src->n;
        return mk_list(l);
    }
    if (IS("join")) {
        value sep = arg(a, 0, "d", mk_str("", 0)), attr = arg(a, 1, "attribute", NONE);
        sep = str_of(R, &sep, at);
        vlist *src = iterate(R, v, at);
        if (attr.k != V_NONE) {
            vlist *m = new_list(R, src->n);
            for (size_t i = 0; i < src->n; i++) m->v[m->n++] = attr_path(R, &src->v[i], &attr, at);
            src = m;
        }
        return join_items(R, src, &sep, at);
    }
    if (IS("upper")) {
        value s = str_of(R, v, at);
        return case_map(R, &s, 'u', "upper", at);
    }
    if (IS("lower")) {
        value s = str_of(R, v, at);
        return case_map(R, &s, 'l', "lower", at);
    }
    if (IS("title")) {
        value s = str_of(R, v, at);
        return case_map(R, &s, 'j', "title", at);
    }
    if (IS("capitalize")) {
        value s = str_of(R, v, at), lo = case_map(R, &s, 'l', "capitalize", at);
        if (lo.n && is_ascii_lower(lo.s[0])) ((char *)lo.s)[0] = (char)(lo.s[0] - 32);
        return lo;
    }
    if (IS("trim")) {
        value s = str_of(R, v, at), chars = arg(a, 0, "chars", NONE);
        return strip(R, &s, &chars, 3, at);
    }
    if (IS("replace")) {
        value s = str_of(R, v, at);
        if (a->n < 2) fail_at(&R->F, at, "replace needs old and new");
        value old = str_of(R, &a->pos[0], at), nw = str_of(R, &a->pos[1], at), cnt = arg(a, 2, "count", NONE);
        return replace(R, &s, &old, &nw, cnt.k == V_NONE ? -1 : int_arg(R, &cnt, "replace", at), at);
    }
    if (IS("int")) {
        value def = arg(a, 0, "default", mk_int(0));
        if (has_arg(a, 1, "base")) fail_at(&R->F, at, "unsupported: int filter with a base");
        if (v->k == V_INT) return *v;
        if (v->k == V_BOOL) return mk_int(v->b);
        if (v->k == V_FLOAT) {
            if (!isfinite(v->f) || fabs(v->f) >= 9.2e18) return def;
            return mk_int((int64_t)v->f);
        }
        if (v->k == V_STR) {
            char *s = arena_strdup(&R->A, v->s, v->n), *end;
            errno = 0;
            long long i = strtoll(s, &end, 10);
            while (*end == ' ' || *end == '\t' || *end == '\n') end++;
            if (end != s && !*end && !errno && !strchr(s, '_')) return mk_int(i);
            double f = strtod(s, &end);
            while (*end == ' ' || *end == '\t' || *end == '\n') end++;
            if (end != s && !*end && isfinite(f) && fabs(f) < 9.2e18) return mk_int((int64_t)f);
            if (end != s) fail_at(&R->F, at, "unsupported: int filter of '%s'", s);
        }
        return def;
    }
    if (IS("float")) {
        value def = arg(a, 0, "default", mk_float(0));
        if (is_num(v)) return mk_float(num(v));
        if (v->k == V_STR) {
            char *s = arena_strdup(&R->A, v->s, v->n), *end;
            double f = strtod(s, &end);
            while (*end == ' ') end++;
            if (end != s && !*end && !strchr(s, 'x') && !strchr(s, 'X')) return mk_float(f);
        }
        return def;
    }
    if (IS("abs")) {
        if (v->k == V_INT) {
            if (v->i == INT64_MIN) fail_at(&R->F, at, "unsupported: integer beyond 64 bits");
            return mk_int(v->i < 0 ? -v->i : v->i);
        }
        if (v->k == V_BOOL) return mk_int(v->b);
        if (v->k == V_FLOAT) return mk_float(fabs(v->f));
        fail_at(&R->F, at, "bad operand type for abs(): '%s'", type_name(v));
    }
    if (IS("round")) {
        value prec = arg(a, 0, "precision", mk_int(0)), method_v = arg(a, 1, "method", mk_str("common", 6));
        int64_t p = int_arg(R, &prec, "round", at);
        if (!is_num(v)) fail_at(&R->F, at, "round needs a number");
        if (p < 0 || p > 300) fail_at(&R->F, at, "unsupported: round precision %lld", (long long)p);
        double x = num(v), r;
        if (str_is((str){method_v.s, method_v.n}, "common")) {
            char buf[400];
            snprintf(buf, sizeof buf, "%.*f", (int)p, x); /* round half to even on the exact value, as Python's round */
            r = strtod(buf, NULL);
        } else if (str_is((str){method_v.s, method_v.n}, "ceil")) {
            r = ceil(x * pow(10, (double)p)) / pow(10, (double)p);
        } else if (str_is((str){method_v.s, method_v.n}, "floor")) {
            r = floor(x * pow(10, (double)p)) / pow(10, (double)p);
        } else {
            fail_at(&R->F, at, "method must be common, ceil or floor");
        }
        return mk_float(r);
    }
    if (IS("select") || IS("reject")) return select_items(R, v, a, 0, IS("select"));
    if (IS("selectattr") || IS("rejectattr")) return select_items(R, v, a, 1, IS("selectattr"));
    if (IS("map")) {
        vlist *src = iterate(R, v, at), *out = new_list(R, src->n);
        if (a->n == 0) {
            static const char *const kn[] = {"attribute", "default"};
            check_args(R, a, "map", 0, kn, 2);
            value attr = arg(a, -1, "attribute", UNDEF), def = arg(a, -1, "default", UNDEF);
            if (attr.k == V_UNDEF) fail_at(&R->F, at, "map needs a filter name or attribute=");
            for (size_t i = 0; i < src->n; i++) {
                value x = attr_path(R, &src->v[i], &attr, at);
                out->v[out->n++] = x.k == V_UNDEF && has_arg(a, -1, "default") ? def : x;
            }
            return mk_list(out);
        }
        value f = need_str(R, &a->pos[0], "map", at);
        str fname = {f.s, f.n};
        if (!in_names(fname, JINJA_FILTERS, sizeof JINJA_FILTERS / sizeof *JINJA_FILTERS))
            fail_at(&R->F, at, "no filter named '%.*s'", (int)fname.n, fname.s);
        args_t fa = *a;
        fa.pos++, fa.n--;
        for (size_t i = 0; i < src->n; i++) {
            step(R, at);
            out->v[out->n++] = apply_filter(R, fname, &src->v[i], &fa);
        }
        return mk_list(out);
    }
    if (IS("sort")) return sorted(R, v, a);
    if (IS("unique")) {
        static const char *const kn[] = {"case_sensitive", "attribute"};
        check_args(R, a, "unique", 2, kn, 2);
        value cs = arg(a, 0, "case_sensitive", mk_bool(0));
        sortctx c = {.R = R, .attr = arg(a, 1, "attribute", NONE), .case_sensitive = truthy(&cs), .pos = at};
        c.has_attr = c.attr.k != V_NONE;
        vlist *src = iterate(R, v, at), *out = new_list(R, 0), *seen = new_list(R, 0);
        for (size_t i = 0; i < src->n; i++) {
            value k = sort_key(&c, &src->v[i]);
            if (k.k == V_LIST || k.k == V_DICT) fail_at(&R->F, at, "unhashable type: '%s'", type_name(&k));
            value seen_v = mk_list(seen);
            if (contains(R, &seen_v, &k, at)) continue;
            list_push(R, seen, k);
            list_push(R, out, src->v[i]);
        }
        return mk_list(out);
    }
    if (IS("min") || IS("max")) {
        static const char *const kn[] = {"case_sensitive", "attribute"};
        check_args(R, a, name.s, 2, kn, 2);
        value cs = arg(a, 0, "case_sensitive", mk_bool(0));
        sortctx c = {.R = R, .attr = arg(a, 1, "attribute", NONE), .case_sensitive = truthy(&cs), .pos = at};
        c.has_attr = c.attr.k != V_NONE;
        vlist *src = iterate(R, v, at);
        if (!src->n) return mk_undef(fmt_msg(R, "No aggregated item, sequence was empty."));
        size_t best = 0;
        value bk = sort_key(&c, &src->v[0]);
        for (size_t i = 1; i < src->n; i++) {
            value k = sort_key(&c, &src->v[i]);
            int cmp = compare(R, &k, &bk, IS("min") ? "<" : ">", at);
            if (IS("min") ? cmp < 0 : cmp > 0) best = i, bk = k;
        }
        return src->v[best];
    }
    if (IS("sum")) {
        value attr = arg(a, 0, "attribute", NONE), acc = arg(a, 1, "start", mk_int(0));
        vlist *src = iterate(R, v, at);
        for (size_t i = 0; i < src->n; i++) {
            value x = attr.k != V_NONE ? attr_path(R, &src->v[i], &attr, at) : src->v[i];
            acc = arith(R, "+", &acc, &x, at);
        }
        return acc;
    }
    if (IS("indent")) {
        static const char *const kn[] = {"width", "first", "blank"};
        check_args(R, a, "indent", 3, kn, 3);
        value s = str_of(R, v, at), w = arg(a, 0, "width", mk_int(4)), first = arg(a, 1, "first", mk_bool(0)),
              blank = arg(a, 2, "blank", mk_bool(0));
        value pad = w.k == V_STR ? w : UNDEF;
        if (w.k != V_STR) {
            int64_t k = int_arg(R, &w, "indent", at);
            if (k < 0 || k > 256) fail_at(&R->F, at, "unsupported: indent width %lld", (long long)k);
            char *p = rt_alloc_str(R, (size_t)k);
            memset(p, ' ', (size_t)k);
            pad = mk_str(p, (size_t)k);
        }
        /* jinja2: lines = s.splitlines(); join with "\n" + pad, blank lines padded only with blank=True */
        strbuf b = {.limit = R->o->max_output};
        size_t i = 0;
        int line = 0;
        while (i <= s.n) {
            size_t j = i;
            while (j < s.n && s.s[j] != '\n') j++;
            if (j == s.n && i == s.n && line > 0) break; /* splitlines drops the empty piece after a final \n */
            if (line > 0) sb_putc(&b, '\n');
            if ((line > 0 || truthy(&first)) && (truthy(&blank) || j > i)) sb_put(&b, pad.s, pad.n);
            sb_put(&b, s.s + i, j - i);
            line++;
            i = j + 1;
        }
        if (s.n && s.s[s.n - 1] == '\n') sb_putc(&b, '\n');
        if (memchr(s.s, '\r', s.n)) {
            sb_free(&b);
            fail_at(&R->F, at, "unsupported: indent of text with \\r line breaks");
        }
        if (b.failed) {
            sb_free(&b);
            fail_at(&R->F, at, "output limit reached");
        }
        value r = mk_str(arena_strdup(&R->A, b.p ? b.p : "", b.n), b.n);
        sb_free(&b);
        return r;
    }
#undef IS
    fail_at(&R->F, at, "unsupported filter '%.*s'", (int)name.n, name.s);
}

/* ---------------------------------------------------------------- expressions */

static void eval_args(rt *R, const node *n, scope *s, args_t *a) {
    a->at = n->pos;
    a->n = n->args.n;
    a->nk = n->kwargs.n;
    a->pos = arena_alloc(&R->A, (size_t)(a->n + 1) * sizeof *a->pos);
    a->kw = arena_alloc(&R->A, (size_t)(a->nk + 1) * sizeof *a->kw);
    a->names = n->names;
    for (int i = 0; i < a->n; i++) a->pos[i] = eval(R, n->args.v[i], s);
    for (int i = 0; i < a->nk; i++) a->kw[i] = eval(R, n->kwargs.v[i], s);
}

static value lookup(rt *R, const node *n, scope *s) {
    value v;
    if (scope_get(s, n->name, &v)) return v;
    static const struct { const char *name; int fn; } globals[] = {
        {"range", F_RANGE}, {"namespace", F_NAMESPACE}, {"dict", F_DICT},
        {"raise_exception", F_RAISE}, {"strftime_now", F_STRFTIME}};
    for (size_t k = 0; k < sizeof globals / sizeof *globals; k++)
        if (str_is(n->name, globals[k].name)) return (value){.k = V_FUNC, .i = globals[k].fn};
    if (str_is(n->name, "lipsum") || str_is(n->name, "cycler") || str_is(n->name, "joiner"))
        fail_at(&R->F, n->pos, "unsupported global '%.*s'", (int)n->name.n, n->name.s);
    return mk_undef(fmt_msg(R, "'%.*s' is undefined", (int)n->name.n, n->name.s));
}

static value eval(rt *R, const node *n, scope *s) {
    value a, b;
    switch (n->k) {
    case N_CONST: return n->cval;
    case N_NAME: return lookup(R, n, s);
    case N_ATTR: a = eval(R, n->a, s); return get_attr(R, &a, n->name, n->pos);
    case N_ITEM:
        a = eval(R, n->a, s);
        b = eval(R, n->b, s);
        return get_item(R, &a, &b, n->pos);
    case N_SLICE: {
        a = eval(R, n->a, s);
        value lo = n->b ? eval(R, n->b, s) : NONE, hi = n->c ? eval(R, n->c, s) : NONE,
              st = n->args.n ? eval(R, n->args.v[0], s) : NONE;
        return get_slice(R, &a, &lo, &hi, &st, n->pos);
    }
    case N_CALL: {
        value fn = eval(R, n->a, s);
        args_t args;
        eval_args(R, n, s, &args);
        return call(R, &fn, &args);
    }
    case N_FILTER: {
        a = eval(R, n->a, s);
        args_t args;
        eval_args(R, n, s, &args);
        return apply_filter(R, n->name, &a, &args);
    }
    case N_TEST: {
        a = eval(R, n->a, s);
        args_t args;
        eval_args(R, n, s, &args);
        int r = run_test(R, n->name, &a, &args);
        return mk_bool(n->negated ? !r : r);
    }
    case N_NEG:
    case N_POS:
        a = eval(R, n->a, s);
        check_undef(R, &a, n->pos);
        if (!is_num(&a)) fail_at(&R->F, n->pos, "bad operand type for unary %c: '%s'", n->k == N_NEG ? '-' : '+', type_name(&a));
        if (n->k == N_POS) return a.k == V_BOOL ? mk_int(a.b) : a;
        if (a.k == V_FLOAT) return mk_float(-a.f);
        if (ival(&a) == INT64_MIN) fail_at(&R->F, n->pos, "unsupported: integer beyond 64 bits");
        return mk_int(-ival(&a));
    case N_NOT: a = eval(R, n->a, s); return mk_bool(!truthy(&a));
    case N_AND: /* Python's and / or return an operand, not a bool */
        a = eval(R, n->a, s);
        return truthy(&a) ? eval(R, n->b, s) : a;
    case N_OR:
        a = eval(R, n->a, s);
        return truthy(&a) ? a : eval(R, n->b, s);
    case N_COND:
        a = eval(R, n->a, s);
        if (truthy(&a)) return eval(R, n->b, s);
        return n->c ? eval(R, n->c, s) : mk_undef("the inline if expression is false and has no else");
    case N_BINOP:
        a = eval(R, n->a, s);
        b = eval(R, n->b, s);
        if (n->name.s[0] == '~') {
            value x = str_of(R, &a, n->pos), y = str_of(R, &b, n->pos);
            return concat(R, x.s, x.n, y.s, y.n, n->pos);
        }
        return arith(R, n->name.s, &a, &b, n->pos);
    case N_COMPARE: {
        a = eval(R, n->args.v[0], s);
        for (int i = 0; i < n->n_names; i++) {
            b = eval(R, n->args.v[i + 1], s);
            str op = n->names[i];
            int r;
            if (str_is(op, "==")) r = equal(R, &a, &b);
            else if (str_is(op, "!=")) r = !equal(R, &a, &b);
            else if (str_is(op, "in")) r = contains(R, &b, &a, n->pos);
            else if (str_is(op, "not in")) r = !contains(R, &b, &a, n->pos);
            else {
                int c = compare(R, &a, &b, op.s, n->pos);
                r = op.s[0] == '<' ? (op.n == 2 ? c <= 0 : c < 0) : (op.n == 2 ? c >= 0 : c > 0);
            }
            if (!r) return mk_bool(0);
            a = b;
        }
        return mk_bool(1);
    }
    case N_LIST:
    case N_TUPLE: {
        vlist *l = new_list(R, (size_t)n->args.n);
        for (int i = 0; i < n->args.n; i++) l->v[l->n++] = eval(R, n->args.v[i], s);
        l->tuple = n->k == N_TUPLE;
        return mk_list(l);
    }
    case N_DICT: {
        vdict *d = new_dict(R);
        for (int i = 0; i < n->args.n; i++) {
            value k = eval(R, n->args.v[i], s);
            if (k.k != V_STR) fail_at(&R->F, n->args.v[i]->pos, "unsupported: a dict key of type %s", type_name(&k));
            dict_set(R, d, k, eval(R, n->kwargs.v[i], s));
        }
        return (value){.k = V_DICT, .p = d};
    }
    default: fail_at(&R->F, n->pos, "internal: not an expression");
    }
}

/* ================================================================ statements */

enum { FLOW_NORMAL = 0, FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

static void assign_targets(rt *R, scope *s, const node *n, const value *v) {
    if (n->n_names == 1) {
        scope_set(R, s, n->names[0], *v);
        return;
    }
    vlist *items = iterate(R, v, n->pos);
    if ((int)items->n != n->n_names)
        fail_at(&R->F, n->pos, "cannot unpack %zu values into %d names", items->n, n->n_names);
    for (int i = 0; i < n->n_names; i++) scope_set(R, s, n->names[i], items->v[i]);
}

static void exec_for(rt *R, const node *n, scope *s) {
    value it = eval(R, n->a, s);
    vlist *items = iterate(R, &it, n->a->pos);
    scope *is = new_scope(R, s); /* reused: nothing keeps a reference to an iteration's scope */
    if (n->b) { /* for x in xs if cond: the loop sees only the items that pass */
        vlist *kept = new_list(R, 0);
        for (size_t i = 0; i < items->n; i++) {
            step(R, n->pos);
            scope *fs = is;
            fs->n = 0;
            assign_targets(R, fs, n, &items->v[i]);
            value c = eval(R, n->b, fs);
            if (truthy(&c)) list_push(R, kept, items->v[i]);
        }
        items = kept;
    }
    loopobj *L = arena_alloc(&R->A, sizeof *L);
    L->items = items;
    for (size_t i = 0; i < items->n; i++) {
        step(R, n->pos);
        is->n = 0; /* each iteration's assignments are its own */
        L->index0 = (int64_t)i;
        scope_set(R, is, (str){"loop", 4}, (value){.k = V_LOOP, .p = L});
        assign_targets(R, is, n, &items->v[i]);
        int flow = FLOW_NORMAL;
        exec_body(R, &n->body, is, &flow);
        if (flow == FLOW_BREAK) break;
    }
    if (!items->n && n->orelse.n) {
        int flow = FLOW_NORMAL;
        exec_body(R, &n->orelse, s, &flow);
    }
}

static void exec_body(rt *R, const nlist *body, scope *s, int *flow) {
    for (int i = 0; i < body->n && *flow == FLOW_NORMAL; i++) {
        const node *n = body->v[i];
        step(R, n->pos);
        switch (n->k) {
        case N_TEXT: emit(R, n->cval.s, n->cval.n, n->pos); break;
        case N_OUTPUT: {
            value v = eval(R, n->a, s);
            if (v.k == V_STR) {
                emit(R, v.s, v.n, n->pos);
            } else {
                strbuf *b = scratch_take(R, R->o->max_output, n->pos);
                to_str(R, &v, b, n->pos);
                if (b->n) emit(R, b->p, b->n, n->pos);
                R->n_scratch--;
            }
            break;
        }
        case N_IF: {
            value c = eval(R, n->a, s);
            exec_body(R, truthy(&c) ? &n->body : &n->orelse, s, flow);
            break;
        }
        case N_FOR: exec_for(R, n, s); break;
        case N_SET: {
            value v = eval(R, n->a, s);
            assign_targets(R, s, n, &v);
            break;
        }
        case N_SET_ATTR: {
            value ns;
            if (!scope_get(s, n->name, &ns) || ns.k != V_NS)
                fail_at(&R->F, n->pos, "cannot assign attribute on non-namespace object");
            dict_set(R, ns.p, mk_str(n->names[0].s, n->names[0].n), eval(R, n->a, s));
            break;
        }
        case N_SET_BLOCK: {
            if (R->n_caps >= (int)(sizeof R->caps / sizeof R->caps[0]))
                fail_at(&R->F, n->pos, "block sets nested too deeply");
            strbuf *saved = R->out, *cap = &R->caps[R->n_caps++];
            cap->n = 0, cap->limit = R->o->max_output, cap->failed = 0;
            R->out = cap;
            int f2 = FLOW_NORMAL;
            exec_body(R, &n->body, s, &f2);
            R->out = saved;
            R->n_caps--;
            scope_set(R, s, n->names[0], mk_str(arena_strdup(&R->A, cap->p ? cap->p : "", cap->n), cap->n));
            break;
        }
        case N_MACRO: scope_set(R, s, n->name, (value){.k = V_MACRO, .p = (void *)n}); break;
        case N_BREAK: *flow = FLOW_BREAK; break;
        case N_CONTINUE: *flow = FLOW_CONTINUE; break;
        case N_BLOCK: exec_body(R, &n->body, s, flow); break;
        default: fail_at(&R->F, n->pos, "internal: not a statement");
        }
    }
}

/* ================================================================ entry point */

static void render_body(rt *R, const jinja_template *t, const json_value *vars) {
    if (vars && vars->type != JSON_OBJECT) fail_at(&R->F, -1, "the variables must be a JSON object");
    R->root = new_scope(R, NULL);
    for (size_t i = 0; vars && i < vars->len; i++)
        scope_set(R, R->root, (str){vars->keys[i], vars->key_lens[i]}, from_json(R, vars->items[i]));
    int flow = FLOW_NORMAL;
    exec_body(R, &t->body, R->root, &flow);
}

/* Errors longjmp back here (it has no locals to clobber). */
static int run(rt *R, const jinja_template *t, const json_value *vars) {
    if (setjmp(R->F.jb)) return R->F.code;
    render_body(R, t, vars);
    return JINJA_OK;
}

int jinja_render(const jinja_template *t, const json_value *vars, const jinja_opts *opts, strbuf *out,
                 moe_err *err) {
    jinja_opts o = {0};
    if (opts) o = *opts;
    if (!o.max_output) o.max_output = (size_t)16 << 20;
    if (!o.max_memory) o.max_memory = (size_t)256 << 20;
    if (!o.max_steps) o.max_steps = 10000000;
    if (!o.max_depth || o.max_depth > 64) o.max_depth = 64; /* at most the capture buffers */
    rt *R = calloc(1, sizeof *R);
    if (!R) return moe_fail(err, "template: out of memory");
    R->F = (failctx){.err = err, .src = t->src, .src_n = t->n};
    R->A = (arena){.limit = o.max_memory, .F = &R->F};
    R->o = &o;
    size_t out_start = out->n, out_limit = out->limit;
    out->limit = out->n + o.max_output;
    R->out = out;
    int rc = run(R, t, vars);
    if (rc != JINJA_OK) { /* nothing of a failed render stays in out */
        out->n = out_start;
        if (out->p) out->p[out->n] = 0;
        out->failed = 0;
    }
    out->limit = out_limit;
    for (size_t i = 0; i < sizeof R->caps / sizeof R->caps[0]; i++) sb_free(&R->caps[i]);
    for (size_t i = 0; i < sizeof R->scratch / sizeof R->scratch[0]; i++) sb_free(&R->scratch[i]);
    arena_free(&R->A);
    free(R);
    return rc;
}
