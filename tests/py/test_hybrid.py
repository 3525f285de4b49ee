"""Hybrid models (Gated DeltaNet + gated attention + MoE: Qwen3.5-MoE, Qwen3-Next), beyond the golden
logits (test_golden.py):

  - the recurrent state carries the sequence: one batch, batches of 5 and token-by-token decode
    (-b 1: every token through the single-step path) give the same logits, also over 150 tokens,
    where one batch runs the chunked delta rule across chunk boundaries;
  - moe_ctx_reset clears it: `moe perplexity` (one context, reset between chunks) scores exactly what
    fresh contexts score chunk by chunk;
  - routing traces cover the MoE layer of every block (DeltaNet and attention layers alike);
  - `moe info` states the recurrent state per sequence and what the converter did not keep;
  - `moe bench --phases` splits the time by phase, the delta rule apart.
"""

import math
import os
import re
import unittest
import unittest.mock

import moetest

moetest.require_shared()

TEXT = ("In the beginning God created the heaven and the earth.\n"
        "And the earth was without form, and void; and darkness was upon the face of the deep.\n")


def log_softmax(row):
    m = max(row)
    lz = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lz for x in row]


class HybridTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.dir = moetest.workdir("hybrid")
        cls.src = os.path.join(moetest.SHARED, "golden", "qwen3_5_moe")
        cls.model = moetest.convert(cls.src, os.path.join(cls.dir, "qwen3_5_moe.moe"))
        cls.g = moetest.golden("qwen3_5_moe")
        cls.text = os.path.join(cls.dir, "text.txt")
        with open(cls.text, "w") as f:
            f.write(TEXT * 3)

    def test_batches_and_single_steps_equal_one_batch(self):
        toks = self.g["tokens"]
        one = moetest.logits(self.model, toks)
        for b in ("5", "1"):
            other = moetest.logits(self.model, toks, "-b", b)
            mx, _ = moetest.max_rms(one, other)
            self.assertLess(mx, 1e-5, "batch %s vs one batch" % b)

    def test_chunked_prefill_equals_token_by_token(self):
        """150 tokens in one pass go through the chunked delta rule (chunks of 64, 64, 22: runs of
        DELTA_CHUNK_MIN = 8 tokens or more, delta_rule.h); -b 1 sends every token through the recurrence,
        -b 100 cuts a chunk boundary elsewhere (64 + 36, then 50), -b 5 runs token by token in passes of
        5. Same logits to float rounding (measured: 4e-6)."""
        ids = [int(x) for x in moetest.moe("tokenize", "-m", self.model, "--no-special", "-f", self.text).stdout.split()]
        ids = (ids * 4)[:150]
        self.assertEqual(len(ids), 150)
        one = moetest.logits(self.model, ids, "-b", "512")
        for b in ("1", "100", "5"):
            mx, _ = moetest.max_rms(one, moetest.logits(self.model, ids, "-b", b))
            self.assertLess(mx, 1e-4, "batch %s vs one batch" % b)
        # the chunked form did run: with the scalar kernels batching is exact (test_batch), so one
        # pass equals passes of 5 bit for bit when every run goes token by token (measured with
        # DELTA_CHUNK_MIN raised past 150: identical); the chunked sums round differently
        with unittest.mock.patch.dict(os.environ, {"MOE_KERNELS": "scalar"}):
            one, five = moetest.logits(self.model, ids, "-b", "512"), moetest.logits(self.model, ids, "-b", "5")
        self.assertTrue(one != five, "one pass of 150 tokens rounded as token by token: no chunked delta rule")
        self.assertLess(moetest.max_rms(one, five)[0], 1e-4)

    def test_reset_clears_the_recurrent_state(self):
        ids = [int(x) for x in moetest.moe("tokenize", "-m", self.model, "--no-special", "-f", self.text).stdout.split()]
        ctx, chunks = 16, 3
        self.assertGreaterEqual(len(ids), ctx * chunks)
        nll = []
        for c in range(chunks):
            chunk = ids[c * ctx:(c + 1) * ctx]  # Qwen adds no BOS: chunks are scored as they are
            rows = moetest.logits(self.model, chunk)
            for j in range(ctx // 2, ctx - 1):
                nll.append(-log_softmax(rows[j])[chunk[j + 1]])
        out = moetest.moe("perplexity", "-m", self.model, "-f", self.text, "-c", str(ctx), "--chunks",
                          str(chunks)).stdout
        m = re.search(r"mean NLL = ([0-9.]+) \+/- ([0-9.]+) over (\d+) positions", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(int(m.group(3)), len(nll))
        self.assertAlmostEqual(float(m.group(1)), sum(nll) / len(nll), places=5)

    def test_trace_covers_every_moe_layer(self):
        toks = self.g["tokens"][:7]
        out = os.path.join(self.dir, "trace.csv")
        moetest.moe("logits", "-m", self.model, "--tokens", ",".join(map(str, toks)), "-o",
                    os.path.join(self.dir, "l.f32"), "--trace-routing", out)
        with open(out) as f:
            rows = f.read().splitlines()[1:]
        self.assertEqual(len(rows), len(toks) * 4 * 2)  # 4 layers (3 DeltaNet, 1 attention), all MoE, k = 2
        layers = sorted({int(r.split(",")[3]) for r in rows})
        self.assertEqual(layers, [0, 1, 2, 3])

    def test_bench_phases(self):
        """moe bench --phases splits prefill and decode by phase: on the hybrid every phase has time and
        the phases add up to the total; without --phases no split is printed."""
        out = moetest.moe("bench", "-m", self.model, "-p", "16", "-n", "8", "-r", "3", "-t", "1", "--phases").stdout
        self.assertRegex(out, r"\| pp16 +\| +[0-9.]+ ±")
        self.assertRegex(out, r"\| tg8 +\| +[0-9.]+ ±")
        for test in ("pp16", "tg8"):
            block = out.split("\n%s phases" % test)[1].split("\n\n")[0]
            ms = {m.group(1).strip(): float(m.group(2)) for m in re.finditer(r"^  (\S.*?) +([0-9.]+) ms", block, re.M)}
            for phase in ("attention", "deltanet (proj, conv, norm)", "delta rule", "routing", "experts (ffn)",
                          "output (lm_head)"):
                self.assertGreater(ms.get(phase, 0), 0, "%s: %s" % (test, phase))
            total = ms.pop("total")
            self.assertAlmostEqual(sum(ms.values()), total, delta=0.01 * total + 1e-4)
        plain = moetest.moe("bench", "-m", self.model, "-p", "16", "-n", "8", "-r", "1", "-t", "1").stdout
        self.assertNotIn("phases", plain)

    def test_info_states_the_recurrent_state_and_skipped_parts(self):
        out = moetest.moe("info", "-m", self.model).stdout
        # per DeltaNet layer: conv state (K-1) x (2*2*32 + 4*32) + S 4 x 32 x 32, f32; 3 such layers
        per_layer = (4 - 1) * (2 * 2 * 32 + 4 * 32) + 4 * 32 * 32
        self.assertIn("recurrent state   %d bytes per sequence" % (3 * per_layer * 4), out)
        self.assertIn("3 Gated DeltaNet, 1 attention", out)
        self.assertIn("KV cache %d bytes per position" % (2 * 2 * 64 * 4), out)  # the one attention layer
        self.assertRegex(out, r"not run +vision tower \(model\.visual\.\*, \d+ tensors\)")


if __name__ == "__main__":
    unittest.main()
