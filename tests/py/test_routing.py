"""Routing: traces (row count, CSV = JSONL, escaping), masked experts never chosen,
--experts-per-token at the trained k reproduces the logits bit for bit, perplexity equals a
direct computation from `moe logits`, KL/top-1 from --save-logits/--kl-base equal a direct
computation from the saved files, `moe route` statistics agree with the trace and its SVGs
are well-formed XML. Models: the golden Mixtral (softmax, no groups) and DeepSeek-V3
(sigmoid, bias, groups, a dense first layer) conversions (random weights); `moe route` also on
gpt-oss and the Qwen3.5-MoE hybrid (every MoE layer covered)."""

import csv
import json
import math
import os
import re
import struct
import unittest
import xml.etree.ElementTree as ET

import moetest

moetest.require_shared()

TEXT = ("In the beginning God created the heaven and the earth.\n"
        "And the earth was without form, and void; and darkness was upon the face of the deep. "
        "And the Spirit of God moved upon the face of the \"waters\".\n")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def log_softmax(row):
    m = max(row)
    lz = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lz for x in row]


class RoutingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.dir = moetest.workdir("routing")
        g = os.path.join(moetest.SHARED, "golden")
        cls.mixtral = moetest.convert(os.path.join(g, "mixtral"), os.path.join(cls.dir, "mixtral.moe"))
        cls.v3 = moetest.convert(os.path.join(g, "deepseek_v3"), os.path.join(cls.dir, "v3.moe"))
        cls.text = os.path.join(cls.dir, "text.txt")
        with open(cls.text, "w") as f:
            f.write(TEXT * 3)

    def path(self, name):
        return os.path.join(self.dir, name)

    def trace(self, model, tokens, *extra, fmt="csv"):
        out = self.path("t_%s.%s" % (self._testMethodName, fmt))
        moetest.moe("logits", "-m", model, "--tokens", ",".join(map(str, tokens)), "-o", self.path("l.f32"),
                    "--trace-routing", out, "--trace-format", fmt, *extra)
        return read_csv(out) if fmt == "csv" else read_jsonl(out)

    def test_row_count_is_positions_x_layers_x_k(self):
        toks = [1, 42, 71, 286, 81, 264, 280, 313, 9, 10, 11]
        rows = self.trace(self.mixtral, toks)  # 3 MoE layers, k = 2
        self.assertEqual(len(rows), len(toks) * 3 * 2)
        rows = self.trace(self.v3, toks)  # layer 0 dense, 2 MoE layers, k = 4
        self.assertEqual(len(rows), len(toks) * 2 * 4)
        self.assertEqual({int(r["layer"]) for r in rows}, {1, 2})
        # sorted by (position, layer, rank); ranks 0..k-1; weights sum to the scale (V3: 2.5)
        keys = [(int(r["pos"]), int(r["layer"]), int(r["rank"])) for r in rows]
        self.assertEqual(keys, sorted(keys))
        for i in range(0, len(rows), 4):
            self.assertAlmostEqual(sum(float(r["weight"]) for r in rows[i:i + 4]), 2.5, places=5)
            self.assertEqual(len(rows[i]["groups"].split(";")), 4)  # topk_group = 4 of 8
            self.assertEqual(float(rows[i]["shared"]), 1.0)
        rows = self.trace(self.v3, toks, "--experts-per-token", "6")
        self.assertEqual(len(rows), len(toks) * 2 * 6)

    def test_csv_and_jsonl_agree_and_escape(self):
        ids = moetest.moe("tokenize", "-m", self.mixtral, "--bos", 'say "hi",\n\tok\\').stdout.split()
        a = self.trace(self.mixtral, ids)
        b = self.trace(self.mixtral, ids, fmt="jsonl")
        self.assertEqual(len(a), len(b))
        for x, y in zip(a, b):
            for key in ("pos", "token", "layer", "rank", "expert"):
                self.assertEqual(int(x[key]), y[key])
            self.assertEqual(float(x["weight"]), y["weight"])
            unescaped = re.sub(r"\\(x[0-9A-F]{2}|.)", lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(
                m.group(1), m.group(0)), x["text"])
            self.assertEqual(unescaped, y["text"])
        self.assertTrue(any('"' in y["text"] for y in b))
        self.assertTrue(any("\n" in y["text"] for y in b))

    def test_disabled_experts_never_chosen(self):
        toks = list(range(3, 40))
        base = self.trace(self.v3, toks)
        # the most used experts of the unmasked run, so the mask has something to remove
        from collections import Counter
        hot = Counter((int(r["layer"]), int(r["expert"])) for r in base).most_common(3)
        spec = ",".join("%d:%d" % le for le, _ in hot) + ",*:0"
        rows = self.trace(self.v3, toks, "--disable-experts", spec)
        self.assertEqual(len(rows), len(toks) * 2 * 4)
        banned = {le for le, _ in hot} | {(1, 0), (2, 0)}
        self.assertFalse([r for r in rows if (int(r["layer"]), int(r["expert"])) in banned])
        rows = self.trace(self.mixtral, toks, "--disable-experts", "*:1,*:2,0:5")
        self.assertFalse([r for r in rows if int(r["expert"]) in (1, 2) or (r["layer"], r["expert"]) == ("0", "5")])
        for i in range(0, len(rows), 2):  # Mixtral renormalises over the k chosen
            self.assertAlmostEqual(float(rows[i]["weight"]) + float(rows[i + 1]["weight"]), 1.0, places=5)
        # too many disabled, bad specs, dense layer: usage errors
        for bad in ("0:1,0:2,0:3,0:4,0:5,0:6,0:7", "0:8", "x:1", "0:1,", "5:1"):
            p = moetest.moe("logits", "-m", self.mixtral, "--tokens", "1,2", "-o", self.path("x"),
                            "--disable-experts", bad, check=False)
            self.assertEqual(p.returncode, 2, (bad, p.stderr))
        p = moetest.moe("logits", "-m", self.v3, "--tokens", "1,2", "-o", self.path("x"), "--disable-experts", "0:1",
                        check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("dense", p.stderr)

    def test_trained_k_is_bit_exact(self):
        toks = [1, 42, 71, 286, 81, 264, 280, 313, 9]
        for model, k in ((self.mixtral, 2), (self.v3, 4)):
            a, b = self.path("a.f32"), self.path("b.f32")
            moetest.moe("logits", "-m", model, "--tokens", ",".join(map(str, toks)), "-o", a)
            moetest.moe("logits", "-m", model, "--tokens", ",".join(map(str, toks)), "-o", b,
                        "--experts-per-token", str(k))
            with open(a, "rb") as fa, open(b, "rb") as fb:
                self.assertEqual(fa.read(), fb.read())
            moetest.moe("logits", "-m", model, "--tokens", ",".join(map(str, toks)), "-o", b,
                        "--experts-per-token", "1")
            with open(a, "rb") as fa, open(b, "rb") as fb:
                self.assertNotEqual(fa.read(), fb.read())
        p = moetest.moe("logits", "-m", self.v3, "--tokens", "1", "-o", b, "--experts-per-token", "17", check=False)
        self.assertEqual(p.returncode, 2)  # 4 groups of 4 may be kept: at most 16

    def ppl_direct(self, model, ctx, chunks):
        ids = [int(x) for x in moetest.moe("tokenize", "-m", model, "--no-special", "--bos", "-f", self.text)
               .stdout.split()]
        nll, rows_all = [], []
        for c in range(chunks):
            chunk = ids[c * ctx:(c + 1) * ctx]
            chunk[0] = 1  # Mixtral's BOS replaces each chunk's first token
            rows = moetest.logits(model, chunk)
            for j in range(ctx // 2, ctx - 1):
                lp = log_softmax(rows[j])
                nll.append(-lp[chunk[j + 1]])
                rows_all.append(lp)
        return nll, rows_all

    def test_perplexity_matches_logits(self):
        nll, _ = self.ppl_direct(self.mixtral, 16, 3)
        out = moetest.moe("perplexity", "-m", self.mixtral, "-f", self.text, "-c", "16", "--chunks", "3").stdout
        mean = sum(nll) / len(nll)
        var = sum(x * x for x in nll) / len(nll) - mean * mean
        se = math.sqrt(var / (len(nll) - 1))
        m = re.search(r"mean NLL = ([0-9.]+) \+/- ([0-9.]+) over (\d+) positions", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(3)), 3 * 7)
        self.assertAlmostEqual(float(m.group(1)), mean, places=5)
        self.assertAlmostEqual(float(m.group(2)), se, places=5)
        m = re.search(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
        self.assertAlmostEqual(float(m.group(1)), math.exp(mean), delta=1e-3 * math.exp(mean))
        self.assertAlmostEqual(float(m.group(2)), math.exp(mean) * se, delta=1e-3 * math.exp(mean) * se + 1e-5)

    def test_kl_against_saved_run(self):
        base, new = self.path("base.lp"), self.path("new.lp")
        args = ["perplexity", "-m", self.mixtral, "-f", self.text, "-c", "16", "--chunks", "2"]
        moetest.moe(*args, "--save-logits", base)
        same = moetest.moe(*args, "--kl-base", base).stdout
        self.assertIn("KL divergence = 0.000000", same)
        self.assertIn("top-1 agreement = 100.000%", same)
        self.assertIn("dPPL = +0.0000", same)
        out = moetest.moe(*args, "--disable-experts", "*:0", "--kl-base", base, "--save-logits", new).stdout

        def load(path):
            with open(path, "rb") as f:
                data = f.read()
            magic, ver, V, ctx, n, first = struct.unpack("<4s5I", data[:24])
            self.assertEqual((magic, ver, ctx, n, first), (b"MOEL", 1, 16, 2, 8))
            off, rows = 32, []
            for _ in range(n):
                off += 4 * ctx
                for _ in range(ctx - 1 - first):
                    rows.append(struct.unpack_from("<%df" % V, data, off))
                    off += 4 * V
            self.assertEqual(off, len(data))
            return rows
        a, b = load(base), load(new)
        kl = [sum(math.exp(p) * (p - q) for p, q in zip(ra, rb)) for ra, rb in zip(a, b)]
        agree = [moetest.argmax(ra) == moetest.argmax(rb) for ra, rb in zip(a, b)]
        m = re.search(r"KL divergence = ([0-9.]+)", out)
        self.assertAlmostEqual(float(m.group(1)), sum(kl) / len(kl), places=5)
        self.assertGreater(float(m.group(1)), 0)
        m = re.search(r"top-1 agreement = ([0-9.]+)%", out)
        self.assertAlmostEqual(float(m.group(1)), 100.0 * sum(agree) / len(agree), places=2)
        # the saved log-probs are those of moe logits
        _, direct = self.ppl_direct(self.mixtral, 16, 2)
        self.assertLess(max(abs(x - y) for r, s in zip(direct, a) for x, y in zip(r, s)), 1e-4)
        p = moetest.moe("perplexity", "-m", self.mixtral, "-f", self.text, "-c", "32", "--kl-base", base, check=False)
        self.assertEqual(p.returncode, 1)

    def test_route_report(self):
        out = self.path("report")
        tr = self.path("route.csv")
        p = moetest.moe("route", "-m", self.v3, "-f", self.text, "-c", "64", "-o", out, "--trace-routing", tr)
        self.assertIn("top-k mass", p.stdout)
        with open(os.path.join(out, "routing.json")) as f:
            rep = json.load(f)
        rows = read_csv(tr)
        self.assertEqual(len(rows), rep["tokens"] * 2 * 4)
        for layer in rep["layers"]:
            counts = [0] * rep["n_experts"]
            for r in rows:
                if int(r["layer"]) == layer["layer"]:
                    counts[int(r["expert"])] += 1
            self.assertEqual(layer["count"], counts)
            self.assertEqual(sum(layer["count"]), layer["tokens"] * 4)
            self.assertEqual(sum(layer["entropy_hist"]), layer["tokens"])
            mean = sum(counts) / len(counts)
            sd = math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts))
            self.assertAlmostEqual(layer["cv"], sd / mean, places=5)
        svgs = [f for f in os.listdir(out) if f.endswith(".svg")]
        self.assertEqual(sorted(svgs), ["coact_layer2.svg", "entropy_hist.svg", "load_heatmap.svg"])
        for name in svgs:
            root = ET.parse(os.path.join(out, name)).getroot()
            self.assertEqual(root.tag, "{http://www.w3.org/2000/svg}svg")
            self.assertGreater(len(list(root.iter("{http://www.w3.org/2000/svg}rect"))), 10)
        p = moetest.moe("route", "-m", self.v3, "-f", self.text, "--layer", "0", check=False)
        self.assertEqual(p.returncode, 2)

    def test_route_covers_every_moe_layer_of_gpt_oss_and_the_hybrid(self):
        """`moe route` and its trace on gpt-oss (sliding/full attention alternating) and Qwen3.5-MoE
        (Gated DeltaNet and attention blocks): every layer's MoE appears, k rows per token and layer
        with weights summing to 1 (both renormalise the top k), counts equal to the trace's."""
        g = os.path.join(moetest.SHARED, "golden")
        for case in ("gpt_oss", "qwen3_5_moe"):
            with open(os.path.join(g, case, "config.json")) as f:
                cfg = json.load(f)
            cfg = cfg.get("text_config", cfg)
            n_layers, k = cfg["num_hidden_layers"], cfg["num_experts_per_tok"]
            model = moetest.convert(os.path.join(g, case), self.path(case + ".moe"))
            out, tr = self.path("report_" + case), self.path("route_%s.csv" % case)
            moetest.moe("route", "-m", model, "-f", self.text, "-c", "64", "-o", out, "--trace-routing", tr)
            with open(os.path.join(out, "routing.json")) as f:
                rep = json.load(f)
            self.assertEqual([x["layer"] for x in rep["layers"]], list(range(n_layers)), case)
            rows = read_csv(tr)
            self.assertEqual(len(rows), rep["tokens"] * n_layers * k, case)
            groups = []  # consecutive rows of one (position, layer); positions restart every -c chunk
            for r in rows:
                if not groups or groups[-1][0] != (r["pos"], r["layer"]):
                    groups.append(((r["pos"], r["layer"]), []))
                groups[-1][1].append(float(r["weight"]))
            self.assertEqual({len(w) for _, w in groups}, {k}, case)
            self.assertLess(max(abs(sum(w) - 1) for _, w in groups), 1e-5, case)
            for layer in rep["layers"]:
                counts = [0] * rep["n_experts"]
                for r in rows:
                    if int(r["layer"]) == layer["layer"]:
                        counts[int(r["expert"])] += 1
                self.assertEqual(layer["count"], counts, case)


if __name__ == "__main__":
    unittest.main()
