"""Upcycling oracle (tools/upcycle.py): stories260K with every dense FFN replaced by N copies of
itself behind a random router computes the dense model's function, because the top-k weights
are renormalised to sum to 1. So `moe logits` of the upcycled model must equal the dense
model's to float precision for any N and k, through the real routing code on real weights -
Mixtral-style (softmax, renormalised), sigmoid scores (DeepSeek-V3-style), and with a
DeepSeek-style shared expert (routed weights x moe.scale 0.5 + shared expert with its down
projection x 0.5). Negative control: without renormalisation (moe.norm_topk = 0) the output
is FFN(x) * sum of the k weights and the logits move far beyond the tolerance.
"""

import os
import subprocess
import sys
import unittest

import moetest

moetest.require_shared()

DIR = os.path.join(moetest.SHARED, "models", "stories260K")
# a prompt-free story prefix plus odd tokens, 40 positions
TOKENS = [1, 403, 407, 261, 378, 430, 271, 280, 491, 267, 349, 282, 303, 264, 326, 384, 45, 67, 89, 400,
          1, 300, 259, 260, 511, 3, 13, 46, 280, 301, 302, 303, 304, 305, 306, 307, 308, 309, 310, 311]
REL_TOL = 2e-5


def upcycle(dense, out, *args):
    moetest.run([sys.executable, os.path.join(moetest.TOOLS, "upcycle.py"), dense, "-o", out] + [str(a) for a in args])
    return out


class UpcycleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.dir = moetest.workdir("upcycle")
        cls.dense = moetest.convert(DIR, os.path.join(cls.dir, "dense.moe"))
        cls.ref = moetest.logits(cls.dense, TOKENS)
        cls.scale = max(abs(x) for row in cls.ref for x in row)

    def check(self, name, *args, equal=True):
        model = upcycle(self.dense, os.path.join(self.dir, name + ".moe"), *args)
        rows = moetest.logits(model, TOKENS)
        mx, rms = moetest.max_rms(rows, self.ref)
        rel = mx / self.scale
        print("\n%-22s max |delta| %.2e (relative %.2e) rms %.2e" % (name, mx, rel, rms))
        if equal:
            self.assertLessEqual(rel, REL_TOL, name)
            self.assertEqual([moetest.argmax(r) for r in rows], [moetest.argmax(r) for r in self.ref])
        else:
            self.assertGreater(rel, 100 * REL_TOL, name + " should differ from the dense model")
        return model

    def test_mixtral_style_all_n_k(self):
        for n in (2, 4, 8):
            for k in sorted({1, 2, n}):
                self.check("n%d_k%d" % (n, k), "--experts", n, "--k", k, "--seed", n * 10 + k)

    def test_sigmoid_scores(self):
        self.check("sigmoid_n8_k2", "--experts", 8, "--k", 2, "--score", "sigmoid")

    def test_shared_expert(self):
        for n, k in ((4, 1), (8, 2), (8, 8)):
            self.check("shared_n%d_k%d" % (n, k), "--experts", n, "--k", k, "--shared")
        self.check("shared_sigmoid_n8_k2", "--experts", 8, "--k", 2, "--shared", "--score", "sigmoid")

    def test_router_seed_does_not_matter(self):
        # other random routers (other experts chosen per token) give the same logits
        a = moetest.logits(upcycle(self.dense, os.path.join(self.dir, "seed1.moe"), "--experts", 8, "--k", 2,
                                   "--seed", 1), TOKENS)
        b = moetest.logits(upcycle(self.dense, os.path.join(self.dir, "seed2.moe"), "--experts", 8, "--k", 2,
                                   "--seed", 2), TOKENS)
        self.assertLessEqual(moetest.max_rms(a, b)[0] / self.scale, REL_TOL)

    def test_structure(self):
        model = upcycle(self.dense, os.path.join(self.dir, "struct.moe"), "--experts", 4, "--k", 2, "--shared")
        f = moetest.moefile.MoeFile(model)
        self.assertEqual(f.kv["moe.n_experts"], 4)
        self.assertEqual(f.kv["moe.n_active"], 2)
        self.assertEqual(f.kv["moe.norm_topk"], 1)
        self.assertEqual(f.kv["moe.shared_ff"], 172)
        self.assertEqual(f.tensors["blk.0.ffn_gate_exps"][1], [4, 172, 64])
        self.assertEqual(f.tensors["blk.4.ffn_down_exps"][1], [4, 64, 172])
        self.assertNotIn("blk.0.ffn_gate", f.tensors)
        info = moetest.moe("info", "-m", model).stdout
        self.assertIn("4 total, 2 active", info)

    def test_negative_control_without_renormalisation(self):
        self.check("nonorm_n4_k2", "--experts", 4, "--k", 2, "--no-norm", equal=False)
        self.check("nonorm_shared_n8_k2", "--experts", 8, "--k", 2, "--no-norm", "--shared", equal=False)

    def test_refuses_bad_k(self):
        p = subprocess.run([sys.executable, os.path.join(moetest.TOOLS, "upcycle.py"), self.dense, "-o",
                            os.path.join(self.dir, "bad.moe"), "--experts", "4", "--k", "5"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--k must be between", p.stderr.decode())


if __name__ == "__main__":
    unittest.main()
