"""ggml's block types against ggml's own values.

For every tensor ../shared/gguf/*/cases.json lists with reference dequantized values
(written by gguf-py, ggml's Python reference), the tensor's raw bytes are taken from the
GGUF file (tools/tokenizer_convert.py reads the directory) and dequantized by our C code
through the helper mode of the test_quant_types binary; the values must be equal
(<= 1e-6 relative). The same bytes with their nibbles swapped or a scale shifted must not
be. Where the folder keeps the F32 file the quantized files were made from (deepseek3),
our quantizers are compared with llama-quantize's output (see QuantizeLikeLlamaCpp).
Standard library only."""
import array
import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("MOE_ROOT") or os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.environ.get("MOE_SHARED") or os.path.join(ROOT, "..", "shared")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import tokenizer_convert as tc  # noqa: E402

import moetest  # noqa: E402

moetest.require_shared()

GGUF = os.path.join(SHARED, "gguf")

# ggml type id -> (moe dtype id, values per block, bytes per block, name)
GGML = {
    0: (0, 1, 4, "F32"), 8: (16, 32, 34, "Q8_0"), 2: (17, 32, 18, "Q4_0"), 12: (18, 256, 144, "Q4_K"),
    3: (21, 32, 20, "Q4_1"), 6: (22, 32, 22, "Q5_0"), 7: (23, 32, 24, "Q5_1"), 10: (24, 256, 84, "Q2_K"),
    11: (25, 256, 110, "Q3_K"), 13: (26, 256, 176, "Q5_K"), 14: (27, 256, 210, "Q6_K"),
    20: (28, 32, 18, "IQ4_NL"), 23: (29, 256, 136, "IQ4_XS"), 39: (30, 32, 17, "MXFP4"),
}
# the helper's quantizer for a type when it is not the dtype's own: Q4_K with ggml's
# reference algorithm (quant.c's Q4_K quantizer is ours)
QUANTIZER = {"Q4_K": 118}
# bytes of a block to damage: (a code byte, a scale byte), per type name
DAMAGE = {"Q8_0": (2, 1), "Q4_0": (2, 1), "Q4_K": (16, 4), "Q4_1": (4, 1), "Q5_0": (6, 1), "Q5_1": (8, 1),
          "Q2_K": (16, 0), "Q3_K": (32, 96), "Q5_K": (48, 4), "Q6_K": (0, 192), "IQ4_NL": (2, 1),
          "IQ4_XS": (8, 4)}


HELPER = moetest.test_binary("test_quant_types")


def run_helper(mode, moe_type, n, data):
    r = subprocess.run([HELPER, mode, str(moe_type), str(n)], input=data, capture_output=True)
    if r.returncode != 0:
        raise AssertionError("helper %s %d %d failed: %s" % (mode, moe_type, n, r.stderr.decode(errors="replace")))
    return r.stdout


def tensor_bytes(path, name):
    """(ggml type, element count, raw bytes) of one tensor of a GGUF file."""
    _, tensors = tc.read_gguf_tensors(path)
    t, ne, off = tensors[name]
    n = 1
    for d in ne:
        n *= d
    _, block, block_bytes, _ = GGML[t]
    nbytes = n // block * block_bytes
    assert n % block == 0 and off + nbytes <= os.path.getsize(path), name
    with open(path, "rb") as f:
        f.seek(off)
        data = f.read(nbytes)
    return t, n, data


def floats(b):
    a = array.array("f")
    a.frombytes(b)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def mismatches(got, want):
    return sum(1 for g, w in zip(got, want) if abs(g - w) > 1e-6 * abs(w))


def dequant_cases():
    """(folder, file, tensor, ggml type name, reference path) for every listed tensor."""
    out = []
    for folder in sorted(os.listdir(GGUF)) if os.path.isdir(GGUF) else []:
        cases = os.path.join(GGUF, folder, "cases.json")
        if not os.path.exists(cases):
            continue
        with open(cases) as f:
            for case in json.load(f)["cases"]:
                for d in case.get("dequant", []):
                    out.append((folder, case["file"], d["tensor"], d["type"], os.path.join(GGUF, folder, d["file"])))
    return out


@unittest.skipUnless(HELPER, "the test_quant_types helper binary is not built")
@unittest.skipUnless(os.path.isdir(GGUF), "no ../shared/gguf")
class DequantizeAsGgml(unittest.TestCase):
    def test_every_reference_tensor(self):
        cases = dequant_cases()
        seen = set()
        for folder, file, tensor, tname, ref in cases:
            with self.subTest(file=folder + "/" + file, tensor=tensor, type=tname):
                t, n, data = tensor_bytes(os.path.join(GGUF, folder, file), tensor)
                moe_type, block, block_bytes, name = GGML[t]
                self.assertEqual(name, tname)
                with open(ref, "rb") as f:
                    want = floats(f.read())
                self.assertEqual(len(want), n)
                got = floats(run_helper("dequant", moe_type, n, data))
                bad = mismatches(got, want)
                self.assertEqual(bad, 0, "%s %s: %d of %d values differ from gguf-py's" % (file, tensor, bad, n))
                seen.add(name)
                # the check notices damage: nibbles of a code byte swapped in every
                # block, or a scale byte changed in every block
                code_at, scale_at = DAMAGE[name]
                for what, at in (("swapped nibbles", code_at), ("a shifted scale", scale_at)):
                    bad_data = bytearray(data)
                    for b in range(0, len(bad_data), block_bytes):
                        v = bad_data[b + at]
                        bad_data[b + at] = ((v << 4) | (v >> 4)) & 0xFF if what == "swapped nibbles" else (v + 8) & 0xFF
                    got = floats(run_helper("dequant", moe_type, n, bytes(bad_data)))
                    self.assertGreater(mismatches(got, want), n // 1000, "%s %s: %s went unnoticed" % (file, tensor, what))
        # every type issue 21 lists that the shared files hold is covered
        want_types = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"}
        self.assertEqual(want_types - seen, set(), "types without a reference tensor")


@unittest.skipUnless(HELPER, "the test_quant_types helper binary is not built")
@unittest.skipUnless(os.path.exists(os.path.join(GGUF, "deepseek3", "model-F32.gguf")), "no deepseek3 F32 GGUF")
class QuantizeLikeLlamaCpp(unittest.TestCase):
    """llama-quantize (no importance matrix) made deepseek3's files from its F32 file. Our
    quantizers follow mainline ggml's reference algorithms; the peer that wrote these files
    (ik_llama.cpp) searches Q6_K's scales differently (make_qx_quants also tries the other
    sign and refines codes one by one) and picks a different sub-block scale in about a
    third of Q5_K's blocks (its own reference code, compiled here, reproduces our bytes, not
    the file's). So: every Q8_0 block identical (ties rounded away from zero, as ggml's roundf: these bf16-valued
    weights hit exact halves), most Q4_K and Q5_K blocks (about 93 and 70 %), and on every tensor our error
    against the F32 values at most 2 % above the file's."""

    def check_file(self, qfile, types, min_identical):
        src = os.path.join(GGUF, "deepseek3", "model-F32.gguf")
        dst = os.path.join(GGUF, "deepseek3", qfile)
        _, qt = tc.read_gguf_tensors(dst)
        done = 0
        for name, (t, ne, off) in sorted(qt.items()):
            if t not in GGML or GGML[t][3] not in types:
                continue
            moe_type, _, block_bytes, tname = GGML[t]
            with self.subTest(file=qfile, tensor=name, type=tname):
                ft, n, fdata = tensor_bytes(src, name)
                self.assertEqual(ft, 0)
                _, _, want = tensor_bytes(dst, name)
                got = run_helper("quantize", QUANTIZER.get(tname, moe_type), n, fdata)
                nb = len(want) // block_bytes
                same = sum(1 for b in range(0, len(want), block_bytes) if got[b:b + block_bytes] == want[b:b + block_bytes])
                self.assertGreaterEqual(same, min_identical[tname] * nb, "%s: only %d of %d blocks as llama-quantize's" % (name, same, nb))
                x = floats(fdata)
                ours = floats(run_helper("dequant", moe_type, n, got))
                theirs = floats(run_helper("dequant", moe_type, n, want))
                e_ours = sum((a - b) ** 2 for a, b in zip(ours, x))
                e_theirs = sum((a - b) ** 2 for a, b in zip(theirs, x))
                self.assertLessEqual(e_ours, 1.02 ** 2 * e_theirs, "%s: rms error %.4g vs llama-quantize's %.4g" % (name, (e_ours / n) ** 0.5, (e_theirs / n) ** 0.5))
                done += 1
        self.assertGreater(done, 0)

    def test_q6_k_and_q8_0(self):
        self.check_file("model-Q6_K.gguf", {"Q6_K", "Q8_0"}, {"Q6_K": 0.0, "Q8_0": 1.0})

    def test_q4_k_m(self):
        self.check_file("model-Q4_K_M.gguf", {"Q4_K"}, {"Q4_K": 0.8})

    def test_q5_k_m(self):
        self.check_file("model-Q5_K_M.gguf", {"Q5_K", "Q6_K"}, {"Q5_K": 0.5, "Q6_K": 0.0})


if __name__ == "__main__":
    unittest.main()
