"""tools/make_model.py: the bench models load and run, in every weight type it offers.

One layer of granite-3.1-1b-a400m (the smallest published shape: ~160 MB) per type: the
engine must accept the file, the requested type must be what the matrices hold (the _r16
types wherever the row count allows), and its logits must be finite and not constant. And the
random data itself: sizes, valid blocks."""
import math
import os
import sys
import unittest

import moetest

TOOL = os.path.join(moetest.ROOT, "tools", "make_model.py")


class MakeModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.dir = moetest.workdir("make_model")

    def check_type(self, qtype, want):
        out = os.path.join(self.dir, "granite-1l-%s.moe" % qtype)
        moetest.run([sys.executable, TOOL, "--shape", "granite-3.1-1b-a400m", "--layers", "1", "--type", qtype,
                     "-o", out])
        try:
            dump = moetest.moe("info", "-m", out, "--dump").stdout
            types = {line.split()[0]: line.split()[1] for line in dump.splitlines() if line.startswith("  blk.0.")}
            for name in ("blk.0.attn_q", "blk.0.ffn_gate_exps", "blk.0.ffn_down_exps"):
                self.assertEqual(types.get(name), want, "%s %s" % (qtype, name))
            rows = moetest.logits(out, [1, 2, 3])
            for row in rows:
                self.assertTrue(all(math.isfinite(v) for v in row), qtype)
                self.assertGreater(max(row) - min(row), 0.0, qtype)
        finally:
            os.remove(out)

    def test_types(self):
        for qtype, want in (("q8_0", "Q8_0"), ("q4_0", "Q4_0"), ("q8_0_r16", "Q8_0_R16"), ("q4_0_r16", "Q4_0_R16"),
                            ("bf16", "BF16"), ("q4_k", "Q4_K")):
            with self.subTest(qtype=qtype):
                self.check_type(qtype, want)


    def test_glm_4_5_air_shape(self):
        """GLM-4.5-Air's shape (narrowed: the real one is ~1.3 GB per layer) writes a file the engine
        loads as glm4_moe with q/k/v biases, a selection bias per router, partial RoPE and finite logits."""
        sys.path.insert(0, os.path.join(moetest.ROOT, "tools"))
        import argparse
        import make_model

        s = dict(make_model.SHAPES["glm-4.5-air"])
        s.update(dim=256, n_heads=6, n_kv=2, vocab=1024, ff=512, experts=16, moe_ff=128, shared_ff=128)
        make_model.SHAPES["glm-narrow"] = s
        out = os.path.join(self.dir, "glm-narrow.moe")
        try:
            make_model.build("glm-narrow", argparse.Namespace(layers=2, type="q8_0")).write(out, progress=False)
        finally:
            del make_model.SHAPES["glm-narrow"]
        try:
            dump = moetest.moe("info", "-m", out, "--dump").stdout
            for needle in ('general.arch             "glm4_moe"', "rope.dim                 64", "blk.0.attn_q_bias",
                           "blk.1.ffn_router_bias", "blk.1.ffn_gate_shexp", "blk.0.ffn_gate ", 'moe.score                "sigmoid"'):
                self.assertIn(needle, dump)
            for row in moetest.logits(out, [1, 2, 3]):
                self.assertTrue(all(math.isfinite(v) for v in row))
        finally:
            os.remove(out)

    def test_qwen3_5_35b_a3b_shape(self):
        """Qwen3.5-35B-A3B's shape (narrowed) writes a hybrid the engine loads: DeltaNet layers with their
        ssm_* tensors and recurrent state, a gated-attention layer with its doubled q, finite logits."""
        sys.path.insert(0, os.path.join(moetest.ROOT, "tools"))
        import argparse
        import make_model

        s = dict(make_model.SHAPES["qwen3.5-35b-a3b"])
        s.update(dim=256, vocab=1024, experts=16, moe_ff=128, shared_ff=128, head_dim=64, rope_dim=16,
                 ssm=dict(s["ssm"], nk=2, nv=4, dk=32, dv=32))
        make_model.SHAPES["q35-narrow"] = s
        out = os.path.join(self.dir, "q35-narrow.moe")
        try:
            make_model.build("q35-narrow", argparse.Namespace(layers=4, type="q8_0")).write(out, progress=False)
        finally:
            del make_model.SHAPES["q35-narrow"]
        try:
            info = moetest.moe("info", "-m", out, "--dump").stdout
            per_layer = 3 * (2 * 2 * 32 + 4 * 32) + 4 * 32 * 32  # conv state + delta-rule state, floats
            for needle in ("3 Gated DeltaNet, 1 attention", "recurrent state   %d bytes" % (3 * 4 * per_layer),
                           "blk.0.ssm_qkv", "blk.2.ssm_out", "blk.3.attn_q ", "blk.3.ffn_shexp_gate"):
                self.assertIn(needle, info)
            self.assertRegex(info, r"blk\.3\.attn_q +Q8_0 +\[2048, 256\]")  # 16 heads x (64 query + 64 gate)
            for row in moetest.logits(out, [1, 2, 3]):
                self.assertTrue(all(math.isfinite(v) for v in row))
        finally:
            os.remove(out)

    def test_gpt_oss_20b_shape(self):
        """gpt-oss-20b's shape (narrowed) writes a model the engine loads: MXFP4 experts (valid E8M0
        exponents), sinks, biases, the window on the even layers, YaRN; --experts changes the
        experts' type only; finite logits."""
        sys.path.insert(0, os.path.join(moetest.ROOT, "tools"))
        import argparse
        import make_model

        s = dict(make_model.SHAPES["gpt-oss-20b"])
        s.update(dim=256, vocab=1024, experts=8, moe_ff=256, n_heads=8, n_kv=2)
        make_model.SHAPES["goss-narrow"] = s
        out = os.path.join(self.dir, "goss-narrow.moe")
        try:
            for experts, want in ((None, "MXFP4"), ("q8_0", "Q8_0")):
                args = argparse.Namespace(layers=2, type="q8_0", experts=experts)
                make_model.build("goss-narrow", args).write(out, progress=False)
                dump = moetest.moe("info", "-m", out, "--dump").stdout
                for needle in ('general.arch             "gpt_oss"', "attn.window_layers       [1,0]", "blk.1.attn_sinks",
                               "blk.0.ffn_down_exps_bias", 'moe.act                  "swiglu_oai"', "rope.yarn_truncate       0"):
                    self.assertIn(needle, dump)
                self.assertRegex(dump, r"blk\.0\.ffn_gate_exps +%s +\[8, 256, 256\]" % want)
                self.assertRegex(dump, r"blk\.0\.attn_q +Q8_0")
                for row in moetest.logits(out, [1, 2, 3]):
                    self.assertTrue(all(math.isfinite(v) for v in row))
        finally:
            del make_model.SHAPES["goss-narrow"]
            if os.path.exists(out):
                os.remove(out)

    def test_random_bytes(self):
        """The chunks add up to the size asked, every block keeps its fixed scale (the template is
        read from whole-block offsets, wrapping around), no code is -128, and two tensors do not
        share data."""
        sys.path.insert(0, os.path.join(moetest.ROOT, "tools"))
        import make_model
        import moefile

        _, bb = moefile.DTYPE_BLOCK[moefile.Q8_0]
        nbytes = (5 * make_model.CHUNK // 2) // bb * bb
        datas = [b"".join(bytes(c) for c in make_model.random_bytes(moefile.Q8_0, nbytes)) for _ in range(2)]
        for data in datas:
            self.assertEqual(len(data), nbytes)
            self.assertEqual(data[0::bb], make_model._SCALE_F16[:1] * (nbytes // bb))
            self.assertEqual(data[1::bb], make_model._SCALE_F16[1:] * (nbytes // bb))
            self.assertGreater(len(set(data[2::bb])), 200)
            # codes in -127..127 as ggml's quantizer writes them (ik_llama.cpp's Q8_0 kernels misread -128)
            self.assertFalse(any(0x80 in data[k::bb] for k in range(2, bb)), "a Q8_0 code of -128")
        self.assertNotEqual(datas[0][:4096], datas[1][:4096])


if __name__ == "__main__":
    unittest.main()
