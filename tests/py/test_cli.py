"""CLI behaviour: help everywhere, clear one-line errors with usage exit code 2 for unknown
flags and bad numbers, exit 1 for bad files; logits contract (float32 LE, n x vocab)."""

import json
import os
import struct
import unittest

import moetest

moetest.require_shared()

COMMANDS = ["run", "logits", "tokenize", "info", "perplexity", "route", "bench", "quantize"]


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.dir = moetest.workdir("cli")
        cls.model = moetest.convert(os.path.join(moetest.SHARED, "golden", "qwen3_moe"), os.path.join(cls.dir, "q3.moe"))

    def usage_error(self, *args, needle=""):
        p = moetest.moe(*args, check=False)
        self.assertEqual(p.returncode, 2, "%s -> %d: %s" % (args, p.returncode, p.stderr))
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn(needle, p.stderr)

    def test_help(self):
        self.assertEqual(moetest.moe("-h").returncode, 0)
        for c in COMMANDS:
            p = moetest.moe(c, "-h")
            self.assertIn("usage: moe " + c, p.stdout)

    def test_unknown_command_and_flags(self):
        p = moetest.moe("frobnicate", check=False)
        self.assertEqual(p.returncode, 2)
        for c in COMMANDS:
            self.usage_error(c, "-m", self.model, "--definitely-not-a-flag", needle="unknown flag")

    def test_small_ones(self):
        """issue 16 review item 12, one line each: an unknown command, a folder given as a file,
        an output folder that cannot be written (before any work), the model file as the output,
        and counts spelt for one."""
        p = moetest.moe("frobnicate", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr.strip().splitlines(), ['moe: unknown command "frobnicate" (moe help lists them)'])
        p = moetest.moe("tokenize", "-m", self.model, "-f", self.dir, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("%s is a directory" % self.dir, p.stderr)
        text = os.path.join(self.dir, "text.txt")
        with open(text, "w") as f:
            f.write("Once upon a time there was a cat. " * 4)
        p = moetest.moe("route", "-m", self.model, "-f", text, "-o", "/nonexistent/x", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(p.stdout, "", "the report came before the failure")
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("/nonexistent/x", p.stderr)
        size = os.path.getsize(self.model)
        p = moetest.moe("logits", "-m", self.model, "--tokens", "1,2", "-o", self.model, check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("is the model file", p.stderr)
        self.assertEqual(os.path.getsize(self.model), size)
        moetest.moe("info", "-m", self.model)
        p = moetest.moe("run", "-m", self.model, "-p", "a", "-n", "1", "--temp", "0")
        self.assertIn("prefill: 1 token in", p.stderr)
        self.assertIn("decode: 1 token in", p.stderr)

    def test_bad_numbers(self):
        self.usage_error("run", "-m", self.model, "-n", "ten", needle="not an integer")
        self.usage_error("run", "-m", self.model, "--temp", "-1", needle="outside")
        self.usage_error("run", "-m", self.model, "--top-p", "1.5", needle="outside")
        self.usage_error("run", "-m", self.model, "-t", "0", needle="outside")
        self.usage_error("run", "-m", self.model, "-c", "12abc", needle="not an integer")
        self.usage_error("logits", "-m", self.model, "--tokens", "1,,2", "-o", "/dev/null", needle="token list")
        self.usage_error("logits", "-m", self.model, "--tokens", "1,-2", "-o", "/dev/null", needle="token list")
        self.usage_error("logits", "-m", self.model, "-o", "/dev/null", needle="--tokens")

    def test_quantize_calib(self):
        """--calib: bad text is a one-line error; on an MoE and an MLA model the matrices reading
        the attention input, the heads' output, the FFN input and the experts' hidden rows are
        GPTQ-rounded (their bytes differ from plain rounding's) and the ones calibration does not
        cover (the output matrix, MLA's q_b) are not."""
        import sys
        sys.path.insert(0, os.path.join(moetest.ROOT, "tools"))
        import moefile
        out = os.path.join(self.dir, "calib.moe")
        text = os.path.join(self.dir, "calib.txt")
        with open(text, "w") as f:
            f.write("Once upon a time there was a little girl who liked to play in the park. " * 8)
        p = moetest.moe("quantize", self.model, out, "--type", "q4_0", "--calib", text + ".missing", check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("calib.txt.missing", p.stderr)
        empty = os.path.join(self.dir, "empty.txt")
        open(empty, "w").close()
        p = moetest.moe("quantize", self.model, out, "--type", "q4_0", "--calib", empty, check=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("needs some text", p.stderr)
        self.usage_error("quantize", self.model, out, "--type", "q4_0", "--calib", text, "--calib-tokens", "1",
                         needle="outside")
        for case, gptq, plain_only in (
                ("qwen3_moe", ("blk.0.attn_q", "blk.0.attn_o", "blk.1.ffn_gate_exps", "blk.1.ffn_up_exps",
                               "blk.1.ffn_down_exps"), ("output",)),
                ("deepseek_v3", ("blk.0.attn_kv_a", "blk.0.attn_o", "blk.1.ffn_gate_exps", "blk.1.ffn_down_exps",
                                 "blk.1.ffn_down_shexp"), ("blk.0.attn_q_b", "output"))):
            src = moetest.convert(os.path.join(moetest.SHARED, "golden", case), os.path.join(self.dir, case + ".moe"))
            files = {}
            for t in ("q4_0", "q8_0_r16"):
                for extra in ((), ("--calib", text)):
                    files[t, bool(extra)] = os.path.join(self.dir, "%s-%s-%d.moe" % (case, t, bool(extra)))
                    moetest.moe("quantize", src, files[t, bool(extra)], "--type", t, *extra)
                plain, calib = moefile.MoeFile(files[t, False]), moefile.MoeFile(files[t, True])
                for name in gptq:
                    self.assertNotEqual(plain.read_tensor(name), calib.read_tensor(name), "%s %s %s" % (case, t, name))
                for name in plain_only:
                    self.assertEqual(plain.read_tensor(name), calib.read_tensor(name), "%s %s %s" % (case, t, name))
                rows = moetest.logits(files[t, True], [1, 2, 3])
                self.assertTrue(all(abs(v) < 1e4 for row in rows for v in row))

    def test_token_out_of_range(self):
        p = moetest.moe("logits", "-m", self.model, "--tokens", "1,512", "-o", os.path.join(self.dir, "x"), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("outside the vocabulary", p.stderr)

    def test_logits_contract(self):
        out = os.path.join(self.dir, "l.f32")
        moetest.moe("logits", "-m", self.model, "--tokens", "501,498,220", "-o", out)
        self.assertEqual(os.path.getsize(out), 3 * 512 * 4)
        rows = moetest.logits(self.model, [501, 498, 220])
        with open(out, "rb") as f:
            first = struct.unpack("<512f", f.read(2048))
        self.assertEqual(list(first), rows[0])

    def test_context_limits(self):
        p = moetest.moe("logits", "-m", self.model, "--tokens", ",".join(["5"] * 257), "-o", "/dev/null", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("exceed the model's context of 256", p.stderr)
        p = moetest.moe("run", "-m", self.model, "-c", "1000", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("exceeds the model's maximum of 256", p.stderr)

    def test_prompt_longer_than_context(self):
        p = moetest.moe("run", "-m", self.model, "-c", "8", "-p", "Once upon a time there was a long prompt", check=False)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("context holds 8", p.stderr)

    def test_context_end_is_said(self):
        """Generation the context cuts short says so on stderr; one that -n ends does not."""
        p = moetest.moe("run", "-m", self.model, "-c", "16", "-n", "-1", "--temp", "0", "-p", "Once upon a time")
        self.assertIn("context full: stopped after", p.stderr)
        self.assertIn("context's 16 positions", p.stderr)
        p = moetest.moe("run", "-m", self.model, "-c", "16", "-n", "2", "--temp", "0", "-p", "Once upon a time")
        self.assertNotIn("context full", p.stderr)

    def test_run_greedy_is_deterministic_and_reports_speed(self):
        a = moetest.moe("run", "-m", self.model, "-p", "Once upon a time", "-n", "12", "--temp", "0")
        b = moetest.moe("run", "-m", self.model, "-p", "Once upon a time", "-n", "12", "--temp", "0", "-t", "1")
        self.assertEqual(a.stdout, b.stdout)
        self.assertTrue(a.stdout.startswith("Once upon a time"))
        self.assertIn("prefill:", a.stderr)
        self.assertIn("tok/s", a.stderr)

    def test_seeded_sampling_repeats(self):
        args = ["run", "-m", self.model, "-p", "Once", "-n", "16", "--temp", "1.0", "--top-k", "0", "--top-p", "1"]
        a = moetest.moe(*args, "-s", "7").stdout
        b = moetest.moe(*args, "-s", "7").stdout
        c = moetest.moe(*args, "-s", "8").stdout
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)

    def test_bench_json_contract(self):
        """The keys the issue names, consistent with each other: GB/s is bytes per token x tok/s,
        a deeper context reads more bytes per token (its KV cache), the probe measured something."""
        p = moetest.moe("bench", "-m", self.model, "-p", "8", "-n", "4", "-r", "2", "-t", "1", "-d", "0,8", "--json")
        r = json.loads(p.stdout)
        for key in ("model", "type", "threads", "pp", "tg", "active_bytes_per_token", "gbps", "bandwidth_gbps",
                    "roofline_pct", "weights_huge_pct"):
            self.assertIn(key, r)
        self.assertTrue(0 <= r["weights_huge_pct"] <= 100, r["weights_huge_pct"])
        self.assertEqual((r["threads"], r["pp"]["n"], r["tg"]["n"]), (1, 8, 4))
        self.assertGreater(r["pp"]["mean"], 0)
        self.assertGreater(r["tg"]["mean"], 0)
        self.assertGreater(r["bandwidth_gbps"], 0)
        self.assertGreater(r["roofline_pct"], 0)
        self.assertAlmostEqual(r["gbps"], r["active_bytes_per_token"] * r["tg"]["mean"] / 1e9, delta=r["gbps"] * 1e-3)
        d = r["depths"]
        self.assertEqual([x["depth"] for x in d], [0, 8])
        self.assertGreater(d[1]["bytes_per_token"], d[0]["bytes_per_token"])
        bw = json.loads(moetest.moe("bench", "--bandwidth", "-t", "1", "--json").stdout)
        self.assertGreater(bw["bandwidth_gbps"], 0)

    def test_no_default_model_says_how_to_get_one(self):
        env_free = dict(os.environ)
        env_free["MOE_MODEL"] = os.path.join(self.dir, "does-not-exist.moe")
        p = moetest.run([moetest.BIN, "info"], check=False)
        # either a default model exists (then info works) or the message explains -m / convert
        if p.returncode != 0:
            self.assertIn("convert", p.stderr)


if __name__ == "__main__":
    unittest.main()
