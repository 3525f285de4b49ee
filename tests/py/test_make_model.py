"""tools/make_model.py: the bench models load and run, in every weight type it offers.

One layer of granite-3.1-1b-a400m (the smallest published shape: ~160 MB) per type: the
engine must accept the file, the requested type must be what the matrices hold (the _r16
types wherever the row count allows), and its logits must be finite and not constant."""
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
                            ("bf16", "BF16")):
            with self.subTest(qtype=qtype):
                self.check_type(qtype, want)


if __name__ == "__main__":
    unittest.main()
