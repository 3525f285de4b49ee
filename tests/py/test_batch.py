"""Several sequences stepped together (moe_eval_batch, through `moe logits` with several --tokens)
give the logits each gets alone, on the default model and on the golden families with special
paths: gpt-oss (sliding-window ring caches), qwen3_5_moe (Gated DeltaNet recurrent state),
deepseek_v3 (MLA latent cache), converted as test_golden.py does.

Three sequences of different lengths (the longest wraps gpt-oss's 15-slot rings) are prefilled in
one call, in passes of 5 rows (-b 5: a pass holds the end of one sequence's prompt and the start
of the next), then decoded 8 steps together, one token each per call.

  - scalar kernels (MOE_KERNELS=scalar, one reference dot product per row and token): batched
    equals alone bit for bit, prompt rows, decode-step logits and continuations;
  - the machine's SIMD kernels: their tiles sum a dot product in an order that depends on how
    many tokens share the tile (4-token blocks vs one row at a time), so batching reassociates
    float sums; logits agree within 1e-3 (measured: a few 1e-6) and the continuations are the
    same unless alone's top-2 gap at the first difference is below 2e-3 (a near-tie, reported).
qwen3_5_moe runs again in passes of 16 rows, where a sequence's run of 8 tokens or more takes the
chunked delta rule (src/delta_rule.h), whose float sums depend on where a run starts and ends: batched
and alone cut sequences 1 and 2 differently, so they are held to the SIMD tolerance with scalar
kernels too; sequence 0 starts both pass lists at row 0, is cut the same way, and stays bit for bit.
A last test proves the comparison can fail: other prompts give different logits.
"""

import os
import subprocess
import unittest

import moetest

moetest.require_shared()

TOL = 1e-3
G = 8  # decode steps
CASES = ("gpt_oss", "qwen3_5_moe", "deepseek_v3")
CUT_SENSITIVE = ("qwen3_5_moe",)  # chunked prefill: rounding depends on how passes cut a prompt
DELTA_CHUNK_MIN = 8  # src/delta_rule.h: runs this long or longer take the chunked delta rule


def run(model, seqs, kernels, ctx, *extra, batch=5):
    """Logits rows per sequence, decode-step rows per sequence, continuations per sequence."""
    tag = "%d_%s_%s_%d_%d" % (os.getpid(), os.path.basename(model), kernels or "simd", len(seqs), batch)
    out = os.path.join(moetest.workdir("batch"), tag + ".f32")
    steps = os.path.join(moetest.workdir("batch"), tag + ".steps.f32")
    args = [moetest.BIN, "logits", "-m", model, "-o", out, "--greedy", str(G), "--greedy-logits", steps,
            "-c", str(ctx), "-b", str(batch), "-t", "2"] + list(extra)
    for s in seqs:
        args += ["--tokens", ",".join(map(str, s))]
    env = dict(os.environ)
    env.pop("MOE_KERNELS", None)
    if kernels:
        env["MOE_KERNELS"] = kernels
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=600)
    if p.returncode:
        raise AssertionError("%s failed: %s" % (" ".join(args), p.stderr.decode()))
    flat, sflat = moetest.read_f32(out), moetest.read_f32(steps)
    V = len(flat) // sum(map(len, seqs))
    rows, srows, at = [], [], 0
    for i, s in enumerate(seqs):
        rows.append([flat[(at + t) * V:(at + t + 1) * V] for t in range(len(s))])
        srows.append([sflat[(i * (G - 1) + j) * V:(i * (G - 1) + j + 1) * V] for j in range(G - 1)])
        at += len(s)
    conts = [[int(x) for x in line.split()] for line in p.stdout.decode().strip().split("\n")]
    return rows, srows, conts


def top2_gap(row):
    a, b = sorted(row, reverse=True)[:2]
    return a - b


class BatchTest(unittest.TestCase):
    models = {}

    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.models["default"] = os.path.join(os.path.dirname(moetest.BIN), "models", "default.moe")
        for case in CASES:
            out = os.path.join(moetest.workdir("batch"), case + ".moe")
            cls.models[case] = moetest.convert(os.path.join(moetest.SHARED, "golden", case), out)

    def sequences(self, case):
        if case == "default":
            toks = [1] + [(37 * i + 11) % 500 + 3 for i in range(40)]
        else:
            g = moetest.golden(case)
            toks = g["tokens"] + g["greedy_continuation"]
        # lengths 23, 5 and 33: different, one short, one past a gpt-oss ring (15 slots)
        return [toks[1:24], toks[7:12], (toks[3:] + toks)[:33]]

    def check(self, case, batch=5):
        model, seqs = self.models[case], self.sequences(case)
        cut_sensitive = case in CUT_SENSITIVE and batch >= DELTA_CHUNK_MIN
        ctx = max(map(len, seqs)) + G
        for kernels in ("scalar", None):
            rows, srows, conts = run(model, seqs, kernels, ctx, batch=batch)
            worst = 0.0
            for i, s in enumerate(seqs):
                a_rows, a_srows, a_conts = run(model, [s], kernels, ctx, batch=batch)
                if kernels and (not cut_sensitive or i == 0):  # exact
                    self.assertEqual(rows[i], a_rows[0], "%s seq %d prompt rows" % (case, i))
                    self.assertEqual(srows[i], a_srows[0], "%s seq %d decode rows" % (case, i))
                    self.assertEqual(conts[i], a_conts[0], "%s seq %d continuation" % (case, i))
                    continue
                worst = max(worst, moetest.max_rms(rows[i], a_rows[0])[0])
                same = 0
                while same < G and conts[i][same] == a_conts[0][same]:
                    same += 1
                if same < G:  # only a near-tie may flip a greedy choice
                    row = a_srows[0][same - 1] if same else a_rows[0][-1]
                    self.assertLess(top2_gap(row), 2 * TOL, "%s seq %d continuation differs at %d" % (case, i, same))
                    print("\n%s seq %d: near-tie at step %d, continuation compared up to it" % (case, i, same))
                if same > 1:
                    worst = max(worst, moetest.max_rms(srows[i][:same - 1], a_srows[0][:same - 1])[0])
            if not kernels or cut_sensitive:
                print("\n%-12s batched vs alone, %s kernels: max |delta logit| %.2e" % (case, kernels or "SIMD", worst))
                self.assertLessEqual(worst, TOL)

    def test_default_model(self):
        self.check("default")

    def test_gpt_oss_rings(self):
        self.check("gpt_oss")

    def test_qwen3_5_moe_deltanet(self):
        self.check("qwen3_5_moe")

    def test_qwen3_5_moe_deltanet_chunked(self):
        self.check("qwen3_5_moe", batch=16)

    def test_deepseek_v3_mla(self):
        self.check("deepseek_v3")

    def test_comparison_can_fail(self):
        """Negative control: another prompt's rows are far outside TOL (the comparison can fail)."""
        model, seqs = self.models["qwen3_5_moe"], self.sequences("qwen3_5_moe")
        ctx = max(map(len, seqs)) + G
        rows, _, _ = run(model, seqs, "scalar", ctx)
        alone, _, _ = run(model, [seqs[0][:5]], "scalar", ctx)
        self.assertGreater(moetest.max_rms(rows[1], alone[0])[0], 100 * TOL)

    def test_refusals(self):
        """A bad token in one sequence refuses the whole call, naming the sequence."""
        p = moetest.moe("logits", "-m", self.models["default"], "-o", os.path.join(moetest.workdir("batch"), "x.f32"),
                        "--tokens", "1,2", "--tokens", "1,99999", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("sequence 1: token id 99999", p.stderr)


if __name__ == "__main__":
    unittest.main()
