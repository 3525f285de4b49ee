#!/usr/bin/python3
"""Make tests/data/chat_cases_extra.json: more renderings of the shared templates, made with the
real jinja2 (Debian's python3-jinja2) through ../shared/chat-templates/make_chat_cases.py's own
environment (HF's: sandbox, trim/lstrip blocks, tojson = json.dumps, strftime_now pinned).
A conversation whose rendering raises anything (not only a TemplateError: HF raises those too) is
recorded with "error" and the exception type. Not run by the tests (they must not need jinja2).

usage: /usr/bin/python3 tests/data/gen_chat_cases_extra.py"""
import json, os, sys

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
shared = os.path.join(root, "..", "shared", "chat-templates")
sys.path.insert(0, shared)
import jinja2  # noqa: E402
import make_chat_cases as m  # noqa: E402

convs = json.load(open(os.path.join(root, "tests", "data", "chat_conversations_extra.json"), encoding="utf-8"))
e = m.env()
cases = []
for fn in sorted(os.listdir(shared)):
    if not fn.endswith(".jinja"):
        continue
    name = fn[:-6]
    tmpl = e.from_string(open(os.path.join(shared, fn), encoding="utf-8").read())
    toks = json.load(open(os.path.join(shared, name + ".tokens.json"), encoding="utf-8"))
    for i, c in enumerate(convs):
        kw = dict(toks)
        kw.update(c.get("kwargs", {}))
        case = {"template": fn, "conversation": i, "messages": c["messages"],
                "add_generation_prompt": c["add_generation_prompt"], "kwargs": c.get("kwargs", {})}
        if "tools" in c:
            case["tools"] = c["tools"]
        try:
            case["expected"] = tmpl.render(messages=c["messages"], tools=c.get("tools"), documents=None,
                                           add_generation_prompt=c["add_generation_prompt"], **kw)
        except Exception as ex:  # noqa: BLE001 - any failure is a refusal the engine must match
            case["error"] = str(ex)
            case["error_type"] = type(ex).__name__
        cases.append(case)
doc = {"about": "extra renderings of ../shared/chat-templates made with the real jinja2 " + jinja2.__version__ +
                " by tests/data/gen_chat_cases_extra.py (HF's environment from make_chat_cases.py; "
                "strftime_now pinned to " + m.FIXED_DATE.isoformat() + ")", "cases": cases}
out = os.path.join(root, "tests", "data", "chat_cases_extra.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump(doc, f, ensure_ascii=False, indent=1)
print(f"{len(cases)} cases ({sum('error' in c for c in cases)} raise) -> {out}")
