"""moe template against Hugging Face's renderings: the 80 shared cases of ../shared/chat-templates
(made by transformers' environment over jinja2) byte for byte, and refusals where the template raises;
then tests/data/chat_cases_extra.json (tool calls, tool results, reasoning, gpt-oss kwargs, ... made
with the real jinja2 by tests/data/gen_chat_cases_extra.py); then the template stored in a converted
model (-m) and the CLI's error paths."""

import json
import os
import unittest

from moetest import SHARED, ROOT, moe, workdir, run, rewrite
import sys

import moetest  # noqa: E402


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


moetest.require_shared()

TEMPLATES = os.path.join(SHARED, "chat-templates")
DATE = "2026-01-15T09:30:00"  # strftime_now as the shared cases pinned it


def request_for(case, tokens=None):
    req = {"messages": case["messages"], "add_generation_prompt": case["add_generation_prompt"],
           "chat_template_kwargs": case.get("kwargs", {})}
    if "tools" in case:
        req["tools"] = case["tools"]
    if tokens is not None:
        req.update(tokens)
    return req


def write_request(path, req):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(req, f, ensure_ascii=False)
    return path


class ChatCases(unittest.TestCase):
    def render_all(self, cases_path, what):
        work = workdir("chat_templates")
        doc = read_json(cases_path)
        passed, n = 0, 0
        for c in doc["cases"]:
            name = c["template"][:-len(".jinja")]
            tokens = read_json(os.path.join(TEMPLATES, name + ".tokens.json"))
            req = write_request(os.path.join(work, "req.json"), request_for(c, tokens))
            p = moe("template", "--template", os.path.join(TEMPLATES, c["template"]), req, "--date", DATE,
                    check=False)
            label = "%s %s #%d" % (what, c["template"], c["conversation"])
            n += 1
            with self.subTest(label):
                if "error" in c:
                    self.assertEqual(p.returncode, 1, label + ": should refuse: " + c["error"])
                    self.assertEqual(p.stdout, "", label)
                    self.assertEqual(len(p.stderr.strip().splitlines()), 1, label + ": one line: " + p.stderr)
                    # the template's own message; a Python TypeError is ours to word
                    if c.get("error_type", "TemplateError") != "TypeError":
                        self.assertIn(c["error"], p.stderr, label)
                else:
                    self.assertEqual(p.returncode, 0, label + ": " + p.stderr)
                    self.assertEqual(p.stdout, c["expected"], label)
                    passed += 1 if p.stdout == c["expected"] else 0
        return passed, n

    def test_shared_cases(self):
        doc = read_json(os.path.join(TEMPLATES, "cases.json"))
        self.assertEqual(len(doc["cases"]), 80)
        self.assertTrue(any("error" in c for c in doc["cases"]))
        self.render_all(os.path.join(TEMPLATES, "cases.json"), "shared")

    def test_extra_cases(self):
        self.render_all(os.path.join(ROOT, "tests", "data", "chat_cases_extra.json"), "extra")


class ModelTemplate(unittest.TestCase):
    """The template a converted model carries (tok.chat_template), with its own BOS / EOS text."""

    def tokenizer(self, name):
        out = os.path.join(workdir("chat_templates"), name + ".moe")
        run([sys.executable, os.path.join(ROOT, "tools", "tokenizer_convert.py"),
             os.path.join(SHARED, "tokenizer-cases-hf", name), out])
        return out

    def test_model_template_matches(self):
        doc = read_json(os.path.join(TEMPLATES, "cases.json"))
        work = workdir("chat_templates")
        for model, tmpl in (("qwen3", "qwen3.jinja"), ("deepseek_v3", "deepseek-v3.jinja")):
            tok = self.tokenizer(model)
            for c in doc["cases"]:
                if c["template"] != tmpl or "error" in c:
                    continue
                req = write_request(os.path.join(work, "req_m.json"), request_for(c))  # no tokens given
                p = moe("template", "-m", tok, req, "--date", DATE)
                self.assertEqual(p.stdout, c["expected"], "%s #%d" % (model, c["conversation"]))

    def test_gguf_template_matches(self):
        """A GGUF file's tokenizer.chat_template (written as llama.cpp's converter writes it, from
        tokenizer_config.json) is the template moe template -m uses, with the file's BOS / EOS text."""
        import ggufio
        import hf_gguf
        doc = read_json(os.path.join(TEMPLATES, "cases.json"))
        work = workdir("chat_templates")
        for model, tmpl in (("qwen3_moe", "qwen3.jinja"), ("deepseek_v3", "deepseek-v3.jinja")):
            src = os.path.join(SHARED, "golden", model)
            hf = os.path.join(work, model + "_hf")  # the golden checkpoint with the template added
            os.makedirs(hf, exist_ok=True)
            for name in ("config.json", "model.safetensors", "tokenizer.json"):
                if not os.path.exists(os.path.join(hf, name)):
                    os.symlink(os.path.join(src, name), os.path.join(hf, name))
            tc = read_json(os.path.join(src, "tokenizer_config.json"))
            with open(os.path.join(TEMPLATES, tmpl), encoding="utf-8") as f:
                tc["chat_template"] = f.read()
            with open(os.path.join(hf, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(tc, f, ensure_ascii=False)
            path = hf_gguf.write(hf, os.path.join(work, model + ".gguf"))
            stored = ggufio.GGUF.read(path).get("tokenizer.chat_template")
            self.assertEqual(stored.decode("utf-8"), tc["chat_template"])
            checked = 0
            for c in doc["cases"]:
                if c["template"] != tmpl or "error" in c:
                    continue
                req = write_request(os.path.join(work, "req_g.json"), request_for(c))  # BOS / EOS from the file
                p = moe("template", "-m", path, req, "--date", DATE)
                self.assertEqual(p.stdout, c["expected"], "%s #%d" % (model, c["conversation"]))
                checked += 1
            self.assertGreaterEqual(checked, 6, model)
            # the same file without the key has no template
            g = ggufio.GGUF.read(path)
            g.drop("tokenizer.chat_template")
            p = moe("template", "-m", g.write(os.path.join(work, model + "-none.gguf")), req, check=False)
            self.assertEqual(p.returncode, 1)
            self.assertIn("no chat template", p.stderr)

    def test_no_template(self):
        tok = os.path.join(workdir("chat_templates"), "no_template.moe")
        rewrite(self.tokenizer("qwen3"), tok, drop_kv=("tok.chat_template",))
        req = write_request(os.path.join(workdir("chat_templates"), "req_n.json"),
                            {"messages": [{"role": "user", "content": "hi"}]})
        p = moe("template", "-m", tok, req, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no chat template", p.stderr)
        self.assertIn("--template", p.stderr)


class Cli(unittest.TestCase):
    def setUp(self):
        self.work = workdir("chat_templates")

    def template(self, text):
        path = os.path.join(self.work, "t.jinja")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_defaults(self):
        # add_generation_prompt defaults to true; tools and documents are None; kwargs reach the template
        t = self.template("{{ add_generation_prompt }}|{{ tools }}|{{ documents }}|{{ flag }}|{{ bos_token }}")
        req = write_request(os.path.join(self.work, "r.json"),
                            {"messages": [], "chat_template_kwargs": {"flag": 1.5}, "bos_token": "<s>"})
        self.assertEqual(moe("template", "--template", t, req).stdout, "True|None|None|1.5|<s>")

    def test_date(self):
        t = self.template("{{ strftime_now('%Y-%m-%d %A %B %d') }}")
        req = write_request(os.path.join(self.work, "r.json"), {"messages": []})
        self.assertEqual(moe("template", "--template", t, req, "--date", "2026-01-15").stdout,
                         "2026-01-15 Thursday January 15")
        self.assertEqual(moe("template", "--template", t, req, "--date", "2026-13-01", check=False).returncode, 2)

    def test_errors_one_line(self):
        req = write_request(os.path.join(self.work, "r.json"), {"messages": [{"role": "user", "content": "x"}]})
        for text, want in (("{{ raise_exception('bad\\nthing') }}", "bad thing"),
                           ("{% for %}", "line 1"),
                           ("{{ x | groupby('a') }}", "unsupported filter 'groupby'"),
                           ("{{ x | nosuch }}", "no filter named 'nosuch'"),
                           ("{% include 'a' %}", "unsupported tag 'include'"),
                           ("{{ undefined_thing.attr }}", "'undefined_thing' is undefined")):
            p = moe("template", "--template", self.template(text), req, check=False)
            self.assertEqual(p.returncode, 1, text)
            self.assertEqual(p.stdout, "", text)
            self.assertEqual(len(p.stderr.splitlines()), 1, text)
            self.assertIn(want, p.stderr, text)
        bad = os.path.join(self.work, "bad.json")
        with open(bad, "w") as f:
            f.write('{"messages": [1,]}')
        p = moe("template", "--template", self.template("x"), bad, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("request", p.stderr)
        write_request(bad, {"messages": "hi"})
        p = moe("template", "--template", self.template("x"), bad, check=False)
        self.assertIn("\"messages\" must be an array", p.stderr)


if __name__ == "__main__":
    unittest.main()
