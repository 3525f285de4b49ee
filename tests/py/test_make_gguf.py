"""tools/make_gguf.py: its files are llama.cpp's layout, and the engine runs them.

- Every architecture it writes (qwen3moe, olmoe, gpt-oss, qwen35moe, glm4moe), narrowed to a few
  layers and small widths, loads (`moe info`) and generates (`moe run -n 4`) with finite logits.
- Same values, same model: a qwen3moe GGUF and make_model.py's .moe of the same seed give the
  same logits, so every GGUF name, shape and key maps back to what the .moe says; the same file
  with gate and up swapped (a negative control) does not.
- test_make_gguf_layout.py: the same layout as tests/py/hf_gguf.py's for the golden checkpoints."""

import argparse
import math
import os
import sys
import unittest

import moetest
import ggufio

sys.path.insert(0, moetest.TOOLS)
import make_gguf  # noqa: E402
import make_model  # noqa: E402

# The published shapes narrowed: a few MB per file, the structure (sinks, windows, DeltaNet,
# gated attention, shared experts, leading dense layer) unchanged.
NARROW = {
    "qwen3-30b-a3b": dict(dim=256, n_heads=4, n_kv=2, head_dim=64, vocab=512, experts=16, moe_ff=128),
    "olmoe-1b-7b": dict(dim=256, n_heads=4, n_kv=4, head_dim=64, vocab=512, experts=16, moe_ff=128),
    "gpt-oss-20b": dict(dim=256, n_heads=4, n_kv=2, head_dim=64, vocab=512, experts=8, moe_ff=256, window=8),
    "qwen3.5-35b-a3b": dict(dim=256, n_heads=4, n_kv=2, head_dim=64, vocab=512, experts=16, moe_ff=128,
                            shared_ff=128, rope_dim=16, ssm=dict(interval=4, conv=4, nk=2, nv=4, dk=32, dv=32)),
    "glm-4.5-air": dict(dim=256, n_heads=6, n_kv=2, vocab=512, ff=512, experts=16, moe_ff=128, shared_ff=128),
}
PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]


def narrowed():
    shapes = dict(make_model.SHAPES)
    for name, change in NARROW.items():
        shapes[name] = dict(shapes[name], **change)
    return shapes


def finite(rows):
    return all(math.isfinite(x) for row in rows for x in row)


class MakeGGUFTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.dir = moetest.workdir("make_gguf")
        cls.shapes = narrowed()

    def gguf(self, shape, wtype="f16", seed=1, layers=4, tweak=None):
        keys, tensors = make_gguf.plan(shape, layers, wtype, seed, self.shapes)
        if tweak:
            tensors = tweak(tensors)
        out = os.path.join(self.dir, "%s-%s.gguf" % (shape, wtype))
        make_gguf.write(out, keys, tensors)
        return out

    def test_every_architecture_runs(self):
        want = {"qwen3-30b-a3b": "qwen3_moe", "olmoe-1b-7b": "olmoe", "gpt-oss-20b": "gpt_oss",
                "qwen3.5-35b-a3b": "qwen3_5_moe", "glm-4.5-air": "glm4_moe"}
        for shape, arch in want.items():
            for wtype in ("f16", "q8_0"):
                with self.subTest(shape=shape, type=wtype):
                    path = self.gguf(shape, wtype)
                    info = moetest.moe("info", "-m", path).stdout
                    self.assertIn("architecture      %s" % arch, info)
                    self.assertIn("layers            4", info)
                    run = moetest.moe("run", "-m", path, "-n", "4", "-p", "hello", "-t", "1", "--temp", "0")
                    self.assertIn("decode: 4 tokens", run.stdout + run.stderr)
                    self.assertTrue(finite(moetest.logits(path, PROMPT)), shape)

    def test_gpt_oss_experts_stay_mxfp4(self):
        path = self.gguf("gpt-oss-20b", "q8_0")
        g = ggufio.GGUF.read(path)
        types = {t.name: t.type for t in g.tensors}
        self.assertEqual(types["blk.0.ffn_gate_exps.weight"], make_gguf.GGML[make_model.moefile.MXFP4])
        self.assertEqual(types["blk.0.ffn_down_exps.weight"], 39)
        self.assertEqual(types["blk.0.attn_q.weight"], 8)  # Q8_0, the converter's --outtype q8_0
        for name in ("blk.0.ffn_gate_inp.weight", "blk.0.attn_sinks.weight", "blk.0.ffn_up_exps.bias",
                     "blk.0.post_attention_norm.weight"):
            self.assertEqual(types[name], 0, name)

    def test_same_logits_as_make_model(self):
        """bf16 on both sides: make_model keeps routers in BF16 and make_gguf widens them to F32
        (exactly), so both files hold the same values."""
        moe_path = os.path.join(self.dir, "qwen3-seed.moe")
        saved = make_model.SHAPES
        make_model.SHAPES = self.shapes
        try:
            make_model.build("qwen3-30b-a3b", argparse.Namespace(layers=4, type="bf16", seed=5)).write(moe_path)
        finally:
            make_model.SHAPES = saved
        want = moetest.logits(moe_path, PROMPT)
        got = moetest.logits(self.gguf("qwen3-30b-a3b", "bf16", seed=5), PROMPT)
        self.assertTrue(finite(want))
        sd = (sum(x * x for row in want for x in row) / sum(len(row) for row in want)) ** 0.5
        m, rms = moetest.max_rms(want, got)
        self.assertLessEqual(m, 1e-4 * sd + 1e-6, "GGUF and .moe of one seed differ: max %g rms %g (sd %g)" % (m, rms, sd))

        def swap_gate_up(tensors):
            names = {"blk.1.ffn_gate_exps.weight": "blk.1.ffn_up_exps.weight",
                     "blk.1.ffn_up_exps.weight": "blk.1.ffn_gate_exps.weight"}
            return [(names.get(n, n), ne, dt, src) for n, ne, dt, src in tensors]

        bad = moetest.logits(self.gguf("qwen3-30b-a3b", "bf16", seed=5, tweak=swap_gate_up), PROMPT)
        m, _ = moetest.max_rms(want, bad)
        self.assertGreater(m, 1e-3 * sd, "the negative control (gate/up swapped) did not change the logits")


if __name__ == "__main__":
    unittest.main()
