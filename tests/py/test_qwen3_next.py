"""Qwen3-Next (Qwen3NextForCausalLM), which has no shared golden case: a random-weight checkpoint in
its published layout (tools/make_synthetic.py --family qwen3_next: flat config, fused
in_proj_qkvz / in_proj_ba grouped per key head, per-expert tensors, zero-centred norms) is
converted and run, and compared with hf_reference.py, a float64 plain-Python reading of
modeling_qwen3_next.py (its Gated DeltaNet in HF's chunked prefill form, chunk 8 here so the
20-token prompt spans three chunks). The reference itself is checked against the shared
qwen3_5_moe golden logits (the same decoder math) and against its own recurrent form.

Bound: a float32 evaluation sits ~1e-6 from the float64 reference on these logits (std ~0.4);
1e-4 leaves room for summation order and catches every convention the golden README lists.
"""

import os
import unittest

import hf_reference
import moetest

import make_synthetic  # noqa: E402  (tools/, on sys.path through moetest)

moetest.require_shared()

TOKENS = [1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 300, 400, 17, 90, 250, 3, 128]
N_DECODE = 6
TOL = 1e-4


class Qwen3NextTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.dir = moetest.workdir("qwen3_next")
        cls.src = os.path.join(cls.dir, "hf")
        cfg, family = make_synthetic.build_config("qwen3_next")
        make_synthetic.write_checkpoint(cls.src, cfg, family, seed=7,
                                        tokenizer=os.path.join(moetest.SHARED, "golden", "qwen3_moe", "tokenizer.json"))
        cls.model = moetest.convert(cls.src, os.path.join(cls.dir, "qwen3_next.moe"))
        cls.ckpt = hf_reference.Checkpoint(cls.src)
        cls.ref = hf_reference.forward(cls.src, TOKENS, cls.ckpt, chunk=8)

    def test_reference_forms_agree(self):
        """HF's chunked and recurrent Gated DeltaNet forms are the same function."""
        rec = hf_reference.forward(self.src, TOKENS, self.ckpt, chunk=0)
        self.assertLess(moetest.max_rms(rec, self.ref)[0], 1e-12)

    def test_reference_reproduces_the_qwen3_5_golden_case(self):
        g = moetest.golden("qwen3_5_moe")
        rows = hf_reference.forward(g["dir"], g["tokens"][:12], chunk=5)
        mx, _ = moetest.max_rms(rows, g["rows"][:12])
        self.assertLess(mx, 1e-5)  # the golden logits are float32-rounded float64

    def test_prompt_logits_match_the_reference(self):
        eng = moetest.logits(self.model, TOKENS)
        mx, rms = moetest.max_rms(eng, self.ref)
        print("\nqwen3_next prompt: max %.2e rms %.2e" % (mx, rms))
        self.assertLess(mx, TOL)
        self.assertEqual([moetest.argmax(r) for r in eng], [moetest.argmax(r) for r in self.ref])

    def test_greedy_decode_matches_one_batch_reference(self):
        """Greedy tokens decoded one at a time through the conv state, the delta-rule state and the
        KV cache; the reference evaluates prompt + continuation in one batch."""
        out, steps = os.path.join(self.dir, "p.f32"), os.path.join(self.dir, "steps.f32")
        p = moetest.moe("logits", "-m", self.model, "--tokens", ",".join(map(str, TOKENS)), "-o", out,
                        "--greedy", N_DECODE, "--greedy-logits", steps)
        cont = [int(x) for x in p.stdout.split()]
        self.assertEqual(len(cont), N_DECODE)
        ref = hf_reference.forward(self.src, TOKENS + cont[:-1], self.ckpt, chunk=8)
        want = [moetest.argmax(r) for r in ref[len(TOKENS) - 1:]]
        self.assertEqual(cont, want)
        flat = moetest.read_f32(steps)
        V = len(ref[0])
        got = [flat[j * V:(j + 1) * V] for j in range(len(flat) // V)]
        self.assertEqual(len(got), N_DECODE - 1)
        mx, _ = moetest.max_rms(got, ref[len(TOKENS):])
        print("qwen3_next decode steps: max %.2e" % mx)
        self.assertLess(mx, TOL)

    def test_fused_row_order_matters(self):
        """Negative controls: the comparison fails if the fused projections were not regrouped (q|k|v rows
        left in the file's per-key-head order in layer 0) or b and a were swapped."""
        f = moetest.moefile.MoeFile(self.model)
        cfg = self.ckpt.cfg
        nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
        dk, dv = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"]
        dtype, shape, _, nb = f.tensors["blk.0.ssm_qkv"]
        raw, rowb = f.read_tensor("blk.0.ssm_qkv"), nb // shape[0]
        rows = [raw[i * rowb:(i + 1) * rowb] for i in range(shape[0])]
        kw, r = nk * dk, nv // nk
        grouped = []
        for j in range(nk):  # the file's order: per key head q_j, k_j, its v heads
            grouped += rows[j * dk:(j + 1) * dk] + rows[kw + j * dk:kw + (j + 1) * dk]
            grouped += rows[2 * kw + j * r * dv:2 * kw + (j + 1) * r * dv]
        bad = moetest.rewrite(self.model, os.path.join(self.dir, "grouped.moe"),
                              tensors={"blk.0.ssm_qkv": (dtype, shape, b"".join(grouped))})
        self.assertGreater(moetest.max_rms(moetest.logits(bad, TOKENS), self.ref)[0], 100 * TOL)
        b, a = (f.tensors[n] for n in ("blk.0.ssm_beta", "blk.0.ssm_alpha"))
        bad = moetest.rewrite(self.model, os.path.join(self.dir, "ba.moe"), tensors={
            "blk.0.ssm_beta": (a[0], a[1], f.read_tensor("blk.0.ssm_alpha")),
            "blk.0.ssm_alpha": (b[0], b[1], f.read_tensor("blk.0.ssm_beta"))})
        self.assertGreater(moetest.max_rms(moetest.logits(bad, TOKENS), self.ref)[0], 100 * TOL)


if __name__ == "__main__":
    unittest.main()
