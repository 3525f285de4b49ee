/* test_jinja.c - the template interpreter (src/jinja.c), one construct at a
 * time. Each expected string is worked out by hand from jinja2's documented
 * behaviour (trim_blocks and lstrip_blocks on, as Hugging Face renders) and
 * Python's; refusals and limits are checked by their message. */
#include "jinja.h"
#include "test_util.h"

static const char *VARS =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"Hi \\u00e9\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nr\\n</think>\\n\\nA\"}],"
    " \"n\": 3, \"f\": 2.5, \"s\": \"  a b  \", \"none\": null, \"t\": true, \"lst\": [3, 1, 2],"
    " \"d\": {\"b\": 1, \"a\": [1, 2], \"items\": \"key\"}, \"tools\": null}";

static int render_rc(const char *tmpl, const char *vars, char **out, moe_err *err) {
    json_value *v = json_parse(vars ? vars : VARS, strlen(vars ? vars : VARS), err);
    if (!v) {
        *out = calloc(1, 1);
        return -9;
    }
    jinja_template *t = jinja_parse(tmpl, strlen(tmpl), err);
    if (!t) {
        json_free(v);
        *out = calloc(1, 1);
        return -8;
    }
    strbuf b = {0};
    jinja_opts o = {.now = {.tm_year = 126, .tm_mon = 0, .tm_mday = 15, .tm_hour = 9, .tm_min = 30, .tm_wday = 4, .tm_yday = 14}};
    int rc = jinja_render(t, v, &o, &b, err);
    *out = b.p ? b.p : calloc(1, 1);
    jinja_free(t);
    json_free(v);
    return rc;
}

#define R(tmpl, want) expect(__LINE__, tmpl, NULL, want)
#define RV(tmpl, vars, want) expect(__LINE__, tmpl, vars, want)
#define BAD(tmpl, msg) refuse(__LINE__, tmpl, msg, JINJA_ERROR)

static void expect(int line, const char *tmpl, const char *vars, const char *want) {
    moe_err err = {{0}};
    char *out = NULL;
    int rc = render_rc(tmpl, vars, &out, &err);
    CHECK(rc == 0, "line %d: %s: rc %d: %s", line, tmpl, rc, err.msg);
    CHECK(rc || strcmp(out, want) == 0, "line %d: %s\n  got  [%s]\n  want [%s]", line, tmpl, out, want);
    free(out);
}

static void refuse(int line, const char *tmpl, const char *msg, int want_rc) {
    moe_err err = {{0}};
    char *out = NULL;
    int rc = render_rc(tmpl, NULL, &out, &err);
    CHECK(rc != 0 && (want_rc == JINJA_ERROR ? rc == JINJA_ERROR || rc == -8 : rc == want_rc),
          "line %d: %s: rc %d (want a refusal)", line, tmpl, rc);
    CHECK(strstr(err.msg, msg) != NULL, "line %d: %s: message [%s] lacks [%s]", line, tmpl, err.msg, msg);
    CHECK(strchr(err.msg, '\n') == NULL || want_rc == JINJA_RAISED, "line %d: message on one line", line);
    CHECK(out && out[0] == 0, "line %d: output of a failed render: [%s]", line, out);
    free(out);
}

int main(void) {
    /* ---- output, literals, Python's str() */
    R("a{{ 'b' }}c", "abc");
    R("{{ 1 }} {{ 2.0 }} {{ -3 }} {{ 1e3 }} {{ 0.1 }} {{ 1_000 }} {{ 0x1f }}", "1 2.0 -3 1000.0 0.1 1000 31");
    R("{{ none }} {{ true }} {{ False }} {{ None }}", "None True False None");
    R("{{ [1, 'a', none, 1.5] }} {{ {'k': (1, 2)} }} {{ (1,) }}", "[1, 'a', None, 1.5] {'k': (1, 2)} (1,)");
    R("{{ [\"it's\", 'say \"x\"', 'both \\' \"'] }}", "[\"it's\", 'say \"x\"', 'both \\' \"']");
    R("{{ 'a\\nb\\t\\\\ \\x41\\u00e9\\U0001F600 \\d' }}", "a\nb\t\\ A\xc3\xa9\xf0\x9f\x98\x80 \\d");
    R("{{ 'ab' 'cd' }}", "abcd");
    R("{{ d }}", "{'b': 1, 'a': [1, 2], 'items': 'key'}");
    R("{{ ['a\\nb'] }}", "['a\\nb']");

    /* ---- whitespace control: trim_blocks, lstrip_blocks, - and + */
    R("a\n  {% if true %}\n  x\n  {% endif %}\nb", "a\n  x\nb");
    R("a  {%- if true -%}  x  {%- endif -%}  b", "axb");
    R("  {{ 'v' }}\n", "  v");                 /* lstrip is for blocks only; one final newline is dropped */
    R("{% if true %}\nx\n{% endif %}\n\n", "x\n"); /* one final newline dropped, then trim_blocks */
    R("a\n  {%+ if true %}x{% endif %}", "a\n  x");
    R("{% if true +%}\nx{% endif %}", "\nx");
    R("a {# c #} b\n  {# line #}\nc", "a  b\nc");
    R("x\r\ny\rz", "x\ny\nz");
    R("{{- ' a ' -}}  \n", " a ");
    R("a\n{%- if true %}b{% endif %}", "ab");
    R("\t{% if true %}x{% endif %}", "x");      /* start of the template counts as a line start */

    /* ---- if / elif / else, and / or / not, comparisons */
    R("{% if n > 5 %}a{% elif n == 3 %}b{% else %}c{% endif %}", "b");
    R("{% if not none and (t or x) %}y{% endif %}", "y");
    R("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 'z' }}|", "x y |");
    R("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' != 'b' }} {{ [1,2] < [1,3] }}",
      "True False True True True True");
    R("{{ 'b' in 'abc' }} {{ 2 in lst }} {{ 'a' in d }} {{ 'z' not in d }} {{ 'x' in undefined_v }}",
      "True True True True False");
    R("{{ 'yes' if t else 'no' }} {{ 'yes' if none else 'no' }}|{{ 'q' if none }}|", "yes no||");

    /* ---- arithmetic as Python */
    R("{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}",
      "3.5 3 -4 2 -2 1024 0.5");
    R("{{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 0.1 + 0.2 }} {{ 1 + 2.0 }} {{ -n }} {{ n - 5 }}",
      "3.0 0.5 0.30000000000000004 3.0 -3 -2");
    R("{{ 'ab' * 3 }}|{{ 'x' * 0 }}|{{ [1] + [2] }} {{ 'a' ~ 1 ~ none ~ undefined_v ~ 2.5 }}",
      "ababab||[1, 2] a1None2.5");
    R("{{ n * f }} {{ n / 3 }}", "7.5 1.0");

    /* ---- subscripts, slices, attributes */
    R("{{ messages[0].role }} {{ messages[1]['content'] }} {{ messages[-1].role }} {{ lst.1 }}", "system Hi \xc3\xa9 assistant 1");
    R("{{ lst[::-1] }} {{ lst[1:] }} {{ lst[:-1] }} {{ lst[5:] }} {{ lst[::2] }} {{ 'h\xc3\xa9llo'[1:3] }} {{ 'abc'[-1] }}",
      "[2, 1, 3] [1, 2] [3, 1] [] [3, 2] \xc3\xa9l c");
    R("{{ messages[1:] | length }} {{ 'h\xc3\xa9' | length }}", "2 2");
    /* d.items is dict's method, d['items'] its key */
    R("{{ d['items'] }} {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", "key b=1;a=[1, 2];items=key;");
    R("{{ d.get('b') }} {{ d.get('zz') }} {{ d.get('zz', 7) }} {{ d.keys() | list }}", "1 None 7 ['b', 'a', 'items']");

    /* ---- undefined as jinja2's default Undefined */
    R("[{{ nope }}] {{ nope is defined }} {{ nope is undefined }} {{ d.zz is defined }} {{ nope | default('dflt') }}",
      "[] False True False dflt");
    R("{% if nope %}x{% else %}y{% endif %}{% for x in nope %}z{% endfor %}{{ nope | length }}", "y0");
    R("{{ messages[0].zz }}|{{ lst[9] }}|{{ nope == nope2 }}", "||True");
    BAD("{{ nope.attr }}", "'nope' is undefined");
    BAD("{{ nope + 1 }}", "'nope' is undefined");
    BAD("{{ d.zz.y }}", "'dict object' has no attribute 'zz'");
    BAD("{{ nope() }}", "'nope' is undefined");
    BAD("{{ nope[0] }}", "'nope' is undefined");

    /* ---- for: loop.*, filter, else, unpacking, scoping, break / continue */
    R("{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }},{% endfor %}",
      "10TrueFalse33,21FalseFalse32,32FalseTrue31,");
    R("{% for x in lst if x > 1 %}{{ x }}:{{ loop.length }}{{ loop.last }} {% endfor %}", "3:2False 2:2True ");
    R("{% for x in [] %}a{% else %}empty{% endfor %}", "empty");
    R("{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}", "37");
    R("{% for c in 'h\xc3\xa9' %}[{{ c }}]{% endfor %}", "[h][\xc3\xa9]");
    R("{% for x in lst %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}", "3");
    R("{% for x in lst %}{{ loop.previtem }}/{{ loop.nextitem }} {% endfor %}", "/1 3/2 1/ ");
    R("{% for x in lst %}{{ loop.cycle('a', 'b') }}{% endfor %}", "aba");
    R("{% for i in range(3) %}{% for j in range(i) %}{{ loop.index }}{% endfor %}|{% endfor %}", "|1|12|");
    /* a set in a loop body lasts one iteration; a set in an if at top level stays */
    R("{% set c = 0 %}{% for i in range(3) %}{{ c }}{% set c = c + 1 %}{{ c }}{% endfor %}{{ c }}", "0101010");
    R("{% if true %}{% set z = 3 %}{% endif %}{{ z }}", "3");
    R("{{ range(2, 8, 3) | list }} {{ range(3, 0, -1) | list }}", "[2, 5] [3, 2, 1]");

    /* ---- set, namespace, block set */
    R("{% set ns = namespace(x=1, l=[]) %}{% for i in range(3) %}{% set ns.x = ns.x * 2 %}{% endfor %}{{ ns.x }}", "8");
    R("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set p = (3, 4) %}{% set c, e = p %}{{ c + e }}", "127");
    R("{% set blk %}x{{ n }}y{% endset %}[{{ blk }}]", "[x3y]");
    BAD("{% set s.x = 1 %}", "cannot assign attribute on non-namespace object");

    /* ---- macros */
    R("{% macro m(a, b='B', c=none) %}<{{ a }}|{{ b }}|{{ c }}>{% endmacro %}{{ m(1) }}{{ m(1, 2, c=3) }}{{ m(b=5, a=4) }}",
      "<1|B|None><1|2|3><4|5|None>");
    R("{% macro f(x) %}{% if x > 0 %}{{ x }}{{ f(x - 1) }}{% endif %}{% endmacro %}{{ f(3) }}", "321");
    R("{% set x = 1 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 2 %}{{ m() }}", "2");
    R("{% macro m() %}[{{ y }}]{% endmacro %}{% for y in [5] %}{{ m() }}{% endfor %}", "[]");
    R("{% macro m() %}  a  {% endmacro %}{% set r = m() %}{{ r | length }}{{ m() | trim }}", "5a");

    /* ---- tests */
    R("{{ 1 is number }}{{ true is number }}{{ true is integer }}{{ 1.0 is float }}{{ 's' is string }}{{ d is mapping }}"
      "{{ lst is iterable }}{{ 's' is iterable }}{{ 1 is iterable }}{{ none is none }}{{ t is true }}{{ t is boolean }}",
      "TrueTrueFalseTrueTrueTrueTrueTrueFalseTrueTrueTrue");
    R("{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ 2 is equalto 2 }}{{ 2 is eq(3) }}{{ 1 is in lst }}"
      "{{ 'ab' is lower }}{{ 'AB' is upper }}{{ n is not none }}{{ nope is not defined }}{{ 3 is gt 2 }}{{ 3 is le 2 }}",
      "TrueTrueTrueTrueFalseTrueTrueTrueTrueTrueTrueFalse");

    /* ---- filters */
    R("{{ s | trim }}|{{ 'xxaxx' | trim('x') }}|{{ lst | join(',') }}|{{ lst | join }}|{{ lst | first }}{{ lst | last }}",
      "a b|a|3,1,2|312|32");
    R("{{ 'hello World-foo(bar' | title }} {{ 'hELLO' | capitalize }} {{ 'Ab' | upper }}{{ 'Ab' | lower }}",
      "Hello World-Foo(Bar Hello ABab");
    R("{{ lst | sort }} {{ lst | sort(reverse=true) }} {{ ['b', 'A', 'a', 'C'] | sort }} {{ ['b', 'A', 'C'] | sort(case_sensitive=true) }}",
      "[1, 2, 3] [3, 2, 1] ['A', 'a', 'b', 'C'] ['A', 'C', 'b']");
    R("{{ messages | map(attribute='role') | join(' ') }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}",
      "system user assistant 1");
    R("{{ messages | rejectattr('role', 'in', ['user', 'system']) | map(attribute='role') | first }}", "assistant");
    R("{{ lst | select('odd') | list }} {{ lst | reject('odd') | list }} {{ [0, 1, '', 'a'] | select | list }}",
      "[3, 1] [2] [1, 'a']");
    R("{{ ['a', 'B'] | map('upper') | list }} {{ lst | max }}{{ lst | min }}{{ lst | sum }} {{ [1, 1, 2, 1] | unique | list }}",
      "['A', 'B'] 316 [1, 2]");
    R("{{ '3' | int + 1 }} {{ '2.7' | int }} {{ 'x' | int(7) }} {{ '1.5' | float }} {{ 3 | float }} {{ -2 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }}",
      "4 2 7 1.5 3.0 2 2.57 2.0");
    R("{{ 'aXbX' | replace('X', '-') }} {{ 'aaa' | replace('a', 'b', 2) }} {{ lst | reverse | list }} {{ 'abc' | reverse }}",
      "a-b- bba [2, 1, 3] cba");
    R("{{ none | default('d') }}|{{ '' | default('d', true) }}|{{ d | items | list | length }}|{{ 5 | string ~ 'x' }}",
      "None|d|3|5x");
    R("{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}", "a\n  b\n\n  c|  a\n  b");
    R("{{ lst | list | count }} {{ d | list }} {{ 'ab' | list }}", "3 ['b', 'a', 'items'] ['a', 'b']");

    /* ---- tojson = json.dumps(ensure_ascii=False, ...) */
    R("{{ d | tojson }}", "{\"b\": 1, \"a\": [1, 2], \"items\": \"key\"}");
    R("{{ messages[1] | tojson }}", "{\"role\": \"user\", \"content\": \"Hi \xc3\xa9\"}");
    R("{{ {'x': [1, {'y': none}], 'e': []} | tojson(indent=2) }}", "{\n  \"x\": [\n    1,\n    {\n      \"y\": null\n    }\n  ],\n  \"e\": []\n}");
    R("{{ d | tojson(separators=(',', ':'), sort_keys=true) }}", "{\"a\":[1,2],\"b\":1,\"items\":\"key\"}");
    R("{{ 'q\"\\n\\u00e9' | tojson }} {{ '\\u00e9' | tojson(true) }} {{ 2.0 | tojson }} {{ f | tojson }} {{ t | tojson }}",
      "\"q\\\"\\n\xc3\xa9\" \"\\u00e9\" 2.0 2.5 true");
    BAD("{{ nope | tojson }}", "not JSON serializable");

    /* ---- string methods */
    R("{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ '\\n\\nx\\n'.strip('\\n') }}|{{ 'xyx'.rstrip('x') }}",
      "a b|a b  |  a b|x|xy");
    R("{{ 'a,b,,c'.split(',') }} {{ s.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a-b-c'.rsplit('-', 1) }} {{ ' a  b '.split(none, 1) }}",
      "['a', 'b', '', 'c'] ['a', 'b'] ['a', 'b c'] ['a-b', 'c'] ['a', 'b ']");
    R("{{ messages[2].content.split('</think>')[-1].lstrip('\\n') }}|{{ messages[2].content.split('</think>', 1)[0] }}",
      "A|<think>\nr\n");
    R("{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}{{ 'abc'.endswith('x') }}",
      "TrueTrueTrueFalse");
    R("{{ 'aXa'.replace('a', 'bb') }} {{ 'Hello'.upper() }}{{ 'Hello'.lower() }} {{ \"they're bill's\".title() }} {{ 'ab'.find('b') }}{{ 'ab'.find('z') }} {{ 'aaa'.count('a') }}",
      "bbXbb HELLOhello They'Re Bill'S 1-1 3");
    R("{{ '-'.join(['a', 'b']) }} {{ '12'.isdigit() }}{{ 'a1'.isalpha() }} {{ 'x\\ny\\r\\nz'.splitlines() }}", "a-b TrueFalse ['x', 'y', 'z']");

    /* ---- globals */
    R("{{ strftime_now('%Y-%m-%d %B %d, %Y') }}", "2026-01-15 January 15, 2026");
    refuse(__LINE__, "a{{ raise_exception('Roles must alternate!') }}b", "Roles must alternate!", JINJA_RAISED);
    R("{{ dict(a=1, b='x') | tojson }} {{ namespace(v=2).v }}", "{\"a\": 1, \"b\": \"x\"} 2");

    /* ---- the sandbox: methods that modify are refused when called */
    BAD("{% set l = [] %}{{ l.append(1) }}", "access to attribute 'append' of 'list' object is unsafe.");
    BAD("{{ d.update({}) }}", "access to attribute 'update' of 'dict' object is unsafe.");
    R("{{ d.pop is defined }}", "False");

    /* ---- HF's {% generation %} block renders its body */
    R("{% generation %}g{{ n }}{% endgeneration %}", "g3");

    /* ---- refusals: outside the subset, with the construct and position */
    BAD("{% include 'x' %}", "line 1 col 4: unsupported tag 'include'");
    BAD("\n{% raw %}x{% endraw %}", "line 2 col 1: unsupported tag 'raw'");
    BAD("{% filter upper %}x{% endfilter %}", "unsupported tag 'filter'");
    BAD("{% call m() %}x{% endcall %}", "unsupported tag 'call'");
    BAD("{{ lst | groupby('a') }}", "unsupported filter 'groupby'");
    BAD("{% if false %}{{ x | nosuch }}{% endif %}", "no filter named 'nosuch'");
    BAD("{{ x is nosuch }}", "no test named 'nosuch'");
    BAD("{{ '%s' % 1 }}", "% string formatting");
    BAD("{{ '\\u00e9' | upper }}", "non-ASCII letters");
    BAD("{{ 'a' + 1 }}", "unsupported operand type(s) for +: 'str' and 'int'");
    BAD("{{ 1 < 'a' }}", "'<' not supported between instances of 'int' and 'str'");
    BAD("{{ 1 / 0 }}", "division by zero");
    BAD("{{ 2 ** 70 }}", "beyond 64 bits");
    BAD("{{ cycler() }}", "unsupported global 'cycler'");
    BAD("{{ messages | first | attr('x') }}", "unsupported filter 'attr'");
    BAD("{% for x in xs recursive %}{% endfor %}", "recursive");
    BAD("{{ 'a'.format(1) }}", "str.format");
    BAD("{{ namespace() }}", "printing a Namespace");

    /* ---- syntax errors name the position */
    BAD("{% if x %}", "expected 'endif'");
    BAD("ab\n  {{ x + }}", "line 2 col 10: unexpected '}}'");
    BAD("{{ 'abc }}", "unterminated string");
    BAD("{% endfor %}", "unexpected 'endfor'");
    BAD("{# open", "missing end of comment");
    BAD("{{ x", "missing end of variable tag");
    BAD("{{ (1 }}", "unexpected '}'");
    BAD("{{ ] }}", "unexpected ']'");
    BAD("{% for x %}{% endfor %}", "expected 'in'");

    /* ---- limits stop hostile templates */
    BAD("{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}", "step limit");
    BAD("{% set s = namespace(v='xxxxxxxxxxxxxxxx') %}{% for i in range(30) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}",
        "limit");
    BAD("{% for i in range(99999) %}{{ 'x' * 1000 }}{% endfor %}", "output limit");
    BAD("{% macro f(x) %}{{ f(x + 1) }}{% endmacro %}{{ f(0) }}", "recursion limit");
    BAD("{{ range(1000000) }}", "range too big");
    /* printing a value nested deeper than the printer goes fails part way through its text: the
     * buffers it was building are the runtime's and freed with it (LeakSanitizer checks, in CI) */
    BAD("{% set ns = namespace(v=1) %}{% for i in range(400) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}",
        "nested too deeply to print");
    BAD("{% set ns = namespace(v=1) %}{% for i in range(400) %}{% set ns.v = [ns.v] %}{% endfor %}{{ [ns.v] | join }}",
        "nested too deeply to print");
    BAD("{% set ns = namespace(v=1) %}{% for i in range(400) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v | string }}",
        "nested too deeply to print");
    {
        /* deep nesting is refused by the parser, not by the stack */
        char deep[4000];
        size_t k = 0;
        k += (size_t)snprintf(deep, sizeof deep, "{{ ");
        for (int i = 0; i < 1000; i++) deep[k++] = '(';
        deep[k++] = '1';
        for (int i = 0; i < 1000; i++) deep[k++] = ')';
        snprintf(deep + k, sizeof deep - k, " }}");
        BAD(deep, "nested too deeply");
    }
    return test_summary("test_jinja");
}
