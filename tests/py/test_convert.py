"""tools/convert.py on damaged or unsupported inputs (each refused with exit status 1 and one
line "convert.py: error: ...", no traceback) and on equivalent inputs (sharded vs single file,
bf16 vs --dtype f32, tokenizer-only conversion)."""

import json
import os
import shutil
import struct
import subprocess
import sys
import unittest

import moetest

import make_synthetic  # noqa: E402  (tools/, on sys.path through moetest)
import safetensors_io as st  # noqa: E402

moetest.require_shared()

CONVERT = os.path.join(moetest.TOOLS, "convert.py")
TOKENIZER = os.path.join(moetest.SHARED, "golden", "mixtral", "tokenizer.json")
TOKENS = [1, 17, 99, 5, 200, 42]


def run_convert(src, out, *extra):
    p = subprocess.run([sys.executable, CONVERT, src, "-o", out, "--quiet"] + list(extra),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return p.returncode, p.stderr.decode("utf-8", "replace")


def make(name, family="qwen3_moe", sets=None, **opts):
    d = moetest.workdir("convert", name)
    cfg, fam = make_synthetic.build_config(family, sets=sets or {})
    opts.setdefault("tokenizer", TOKENIZER)
    make_synthetic.write_checkpoint(d, cfg, fam, seed=5, **opts)
    return d


def edit_config(d, **changes):
    p = os.path.join(d, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(p, "w") as f:
        json.dump(cfg, f)


def rewrite_safetensors(path, edit_header=None, drop=(), extra=None, truncate=None):
    """Rewrite a safetensors file: header edited by a callback (after the offsets are laid out, so
    it can make them lie), tensors dropped or added, the end cut off."""
    tensors = [(name, t.dtype, t.shape, t.read()) for name, t in st.read_file(path).items() if name not in drop]
    for name, (dtype, shape, raw) in (extra or {}).items():
        tensors.append((name, dtype, shape, raw))
    new, blob = {}, b""
    for name, dtype, shape, raw in tensors:
        new[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if edit_header:
        edit_header(new)
    out = st.encode_header(new) + blob
    if truncate:
        out = out[:len(out) - truncate]
    with open(path, "wb") as f:
        f.write(out)


class FamilyTable(unittest.TestCase):
    def test_every_architecture_has_a_family_row(self):
        import convert
        self.assertEqual(set(convert.ARCHS.values()), set(convert.FAMILIES))

    def test_every_tensor_plan_is_complete(self):
        """Each family's HfNames row names a layer part plan_hf knows, every part once, and one
        expert layout."""
        import convert
        for arch, fam in convert.FAMILIES.items():
            names = fam.hf
            self.assertEqual(sorted(names.layer), sorted(convert.LAYER_PARTS), arch)
            self.assertTrue(names.each or names.fused or names.mxfp4, arch)
            self.assertTrue(names.prefix.endswith(".") and names.moe.endswith("."), arch)


class Refusals(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.good = make("good")
        cls.out = os.path.join(moetest.workdir("convert"), "refused.moe")

    def damaged(self, name, **opts):
        d = os.path.join(moetest.WORK, "convert", name)
        if os.path.exists(d):
            shutil.rmtree(d)
        shutil.copytree(self.good, d)
        return d

    def refused(self, src, *words, extra=()):
        code, err = run_convert(src, self.out, *extra)
        lines = err.strip().splitlines()
        self.assertEqual(code, 1, err)
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("convert.py: error: "), err)
        self.assertNotIn("Traceback", err)
        for w in words:
            self.assertIn(w, lines[0])
        return lines[0]

    def test_good_converts(self):
        self.assertEqual(run_convert(self.good, self.out)[0], 0)

    def test_unknown_architecture(self):
        d = self.damaged("arch")
        edit_config(d, architectures=["GPT2LMHeadModel"])
        self.refused(d, "GPT2LMHeadModel", "not supported")

    def test_unknown_rope_scaling(self):
        d = self.damaged("rope")
        edit_config(d, rope_scaling={"rope_type": "longrope", "factor": 2.0})
        self.refused(d, "rope_scaling", "longrope")

    def test_non_finite_numbers(self):
        """rope_theta: NaN (Python's json reads it) is refused at conversion, naming the key."""
        d = self.damaged("nan")
        for v in (float("nan"), float("inf")):
            edit_config(d, rope_theta=v)
            self.refused(d, "rope_theta", "finite")

    def test_unknown_rope_scaling_field(self):
        d = self.damaged("rope_field")
        edit_config(d, rope_scaling={"rope_type": "linear", "factor": 2.0, "warp": 3})
        self.refused(d, "rope_scaling", "warp")

    def test_unknown_scoring_func_and_topk_method(self):
        for fam, key, value in (("deepseek_v3", "scoring_func", "softmax_plus"),
                                ("deepseek_v3", "topk_method", "greedy"),
                                ("deepseek_v2", "topk_method", "noaux_tc"),
                                ("deepseek_v2", "scoring_func", "sigmoid")):
            d = make("route_" + fam + key, fam)
            edit_config(d, **{key: value})
            self.refused(d, key, value)

    def test_glm_config_checks(self):
        """GLM's RoPE width, groups and GLM-4.7-Flash's layer pattern are checked, not guessed."""
        for fam, changes, words in (("glm4_moe", {"partial_rotary_factor": 0.3}, ("partial_rotary_factor",)),
                                    ("glm4_moe", {"n_group": 3}, ("n_group",)),
                                    ("glm4_moe", {"rope_parameters": {"rope_type": "yarn", "factor": 2.0}},
                                     ("rope_parameters",)),
                                    ("glm4_moe_lite", {"partial_rotary_factor": 0.5}, ("partial_rotary_factor",)),
                                    ("glm4_moe_lite", {"mlp_layer_types": ["dense"]}, ("mlp_layer_types",))):
            d = make("glm_" + fam + "_" + list(changes)[0], fam)
            edit_config(d, **changes)
            self.refused(d, *words)

    def test_mtp_layers_skipped_and_counted(self):
        """The multi-token-prediction layer after the last decoder layer is left out (and counted in
        model.n_mtp_layers); a tensor of a layer beyond it is still refused. GLM-4.7-Flash converts
        as deepseek_v3."""
        for fam, arch in (("glm4_moe", "glm4_moe"), ("glm4_moe_lite", "deepseek_v3")):
            d = make("mtp_" + fam, fam)
            out = os.path.join(moetest.workdir("convert"), "mtp_%s.moe" % fam)
            self.assertEqual(run_convert(d, out)[0], 0)
            dump = moetest.moe("info", "-m", out, "--dump").stdout
            self.assertIn("general.arch             \"%s\"" % arch, dump)
            self.assertIn("model.n_mtp_layers       1", dump)
            self.assertIn("blk.1.", dump)
            self.assertNotIn("blk.2.", dump)
            rewrite_safetensors(os.path.join(d, "model.safetensors"),
                                extra={"model.layers.3.enorm.weight": ("F32", [2], b"\0" * 8)})
            self.refused(d, "unexpected tensor", "model.layers.3.enorm")

    def test_missing_tensor(self):
        d = self.damaged("missing")
        rewrite_safetensors(os.path.join(d, "model.safetensors"), drop=("model.layers.1.mlp.experts.3.up_proj.weight",))
        self.refused(d, "missing tensor", "experts.3.up_proj")

    def test_extra_tensor(self):
        d = self.damaged("extra")
        rewrite_safetensors(os.path.join(d, "model.safetensors"),
                            extra={"model.layers.0.mlp.mystery.weight": ("F32", [2], b"\0" * 8)})
        self.refused(d, "unexpected tensor", "mystery")

    def test_misshaped_tensor(self):
        d = self.damaged("shape")

        def edit(h):
            h["model.layers.0.self_attn.o_proj.weight"]["shape"] = [128, 64]  # same bytes, wrong shape
        rewrite_safetensors(os.path.join(d, "model.safetensors"), edit_header=edit)
        self.refused(d, "o_proj", "shape")

    def test_bad_json(self):
        d = self.damaged("json")
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write('{"architectures": ["Qwen3MoeForCausalLM"], ')
        self.refused(d, "config.json", "JSON")

    def test_bad_safetensors_header_json(self):
        d = self.damaged("st_json")
        p = os.path.join(d, "model.safetensors")
        with open(p, "r+b") as f:
            f.seek(8)
            f.write(b"[[[[")
        self.refused(d, "safetensors")

    def test_truncated_safetensors(self):
        d = self.damaged("trunc")
        rewrite_safetensors(os.path.join(d, "model.safetensors"), truncate=100)
        self.refused(d, "data_offsets")

    def test_safetensors_offsets_lie(self):
        d = self.damaged("offsets")

        def edit(h):
            a, b = h["model.norm.weight"]["data_offsets"]
            h["model.norm.weight"]["data_offsets"] = [a + 2, b + 2]  # beyond the data, or overlapping
        rewrite_safetensors(os.path.join(d, "model.safetensors"), edit_header=edit)
        self.refused(d, "model.norm.weight")

    def test_safetensors_size_mismatch(self):
        d = self.damaged("size")

        def edit(h):
            a, b = h["model.embed_tokens.weight"]["data_offsets"]
            h["model.embed_tokens.weight"]["data_offsets"] = [a, b - 2]
        rewrite_safetensors(os.path.join(d, "model.safetensors"), edit_header=edit)
        self.refused(d, "model.embed_tokens.weight", "data_offsets")

    def test_header_length_beyond_file(self):
        d = self.damaged("hlen")
        p = os.path.join(d, "model.safetensors")
        with open(p, "r+b") as f:
            f.write(struct.pack("<Q", 1 << 40))
        self.refused(d, "header length")

    def test_missing_shard(self):
        d = make("shards_missing", shards=2)
        os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
        self.refused(d, "model-00002-of-00002.safetensors", "missing")

    def test_index_names_a_tensor_no_shard_holds(self):
        d = make("shards_lying", shards=2)
        p = os.path.join(d, "model.safetensors.index.json")
        with open(p) as f:
            idx = json.load(f)
        idx["weight_map"]["model.layers.9.ghost.weight"] = "model-00001-of-00002.safetensors"
        with open(p, "w") as f:
            json.dump(idx, f)
        self.refused(d, "ghost")

    def test_missing_tokenizer(self):
        d = make("no_tok", tokenizer=None)
        self.refused(d, "tokenizer.json", "--no-tokenizer")
        code, err = run_convert(d, self.out, "--no-tokenizer")
        self.assertEqual(code, 0, err)
        self.assertEqual(moetest.moefile.MoeFile(self.out).kv["general.arch"], "qwen3_moe")
        # such a file runs on token ids; asking it to tokenize is one clear error
        rows = moetest.logits(self.out, [1, 2, 3])
        self.assertEqual(len(rows), 3)
        p = moetest.moe("tokenize", "-m", self.out, "hello", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("no tokenizer", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1)

    def test_weights_without_config(self):
        """model.safetensors and tokenizer.json but no config.json: refused, not a tokenizer-only file."""
        d = self.damaged("no_config")
        os.remove(os.path.join(d, "config.json"))
        if os.path.exists(self.out):
            os.remove(self.out)
        self.refused(d, "config.json", "model.safetensors")
        self.assertFalse(os.path.exists(self.out))

    def test_failed_quantize_leaves_nothing_at_out(self):
        """--type with a moe that fails or cannot run: exit 1, one line naming where the unquantized
        conversion is, and nothing (not even the unquantized model) at OUT."""
        side = self.out + ".unquantized.moe"
        for moe_bin in ("/bin/false", os.path.join(moetest.WORK, "convert", "no-such-moe")):
            for f in (self.out, self.out + ".part", side):
                if os.path.exists(f):
                    os.remove(f)
            code, err = run_convert(self.good, self.out, "--type", "q8_0", "--moe", moe_bin)
            self.assertFalse(os.path.exists(self.out), err)  # first: whatever the message says
            self.assertFalse(os.path.exists(self.out + ".part"), err)
            line = self.refused(self.good, "unquantized conversion", side, extra=("--type", "q8_0", "--moe", moe_bin))
            self.assertEqual(moetest.moefile.MoeFile(side).kv["general.arch"], "qwen3_moe")
            os.remove(side)

    def test_failure_while_writing_leaves_nothing(self):
        """A defect found only while the tensors are streamed (an MXFP4 scale byte 255, E8M0's NaN, in
        the last layer's experts): one line, and neither OUT nor OUT.part is left behind."""
        d = make("mxfp4_nan", "gpt_oss", tokenizer=None)
        path = os.path.join(d, "model.safetensors")
        tensors = st.read_file(path)
        last = max(int(n.split(".")[2]) for n in tensors if n.startswith("model.layers."))
        t = tensors["model.layers.%d.mlp.experts.down_proj_scales" % last]
        with open(path, "r+b") as f:
            f.seek(t.start + t.nbytes - 1)
            f.write(b"\xff")
        for f in (self.out, self.out + ".part"):
            if os.path.exists(f):
                os.remove(f)
        self.refused(d, "MXFP4 scale byte 255", "NaN", extra=("--no-tokenizer",))
        self.assertFalse(os.path.exists(self.out))
        self.assertFalse(os.path.exists(self.out + ".part"))

    def test_no_such_source(self):
        self.refused(os.path.join(moetest.WORK, "convert", "nowhere"), "no such file")

    def test_calib_without_type(self):
        self.refused(self.good, "--calib", extra=("--calib", CONVERT))


class Equivalences(unittest.TestCase):
    def test_sharded_equals_single_file(self):
        one = make("single")
        two = make("sharded", shards=3)
        a = moetest.convert(one, os.path.join(moetest.workdir("convert"), "single.moe"))
        b = moetest.convert(two, os.path.join(moetest.workdir("convert"), "sharded.moe"))
        fa, fb = moetest.moefile.MoeFile(a), moetest.moefile.MoeFile(b)
        self.assertEqual(list(fa.tensors), list(fb.tensors))
        for name in fa.tensors:
            self.assertEqual(fa.tensors[name][:2], fb.tensors[name][:2], name)
            self.assertEqual(fa.read_tensor(name), fb.read_tensor(name), name)
        strip = ("general.name", "general.source")
        self.assertEqual({k: v for k, v in fa.kv.items() if k not in strip},
                         {k: v for k, v in fb.kv.items() if k not in strip})

    def test_dtype_f32_widening_gives_identical_logits(self):
        for fam in ("qwen3_moe", "deepseek_v3", "granitemoe"):
            src = make("widen_" + fam, fam)
            keep = moetest.convert(src, os.path.join(moetest.workdir("convert"), "keep_%s.moe" % fam))
            wide = moetest.convert(src, os.path.join(moetest.workdir("convert"), "f32_%s.moe" % fam), "--dtype", "f32")
            fw = moetest.moefile.MoeFile(wide)
            self.assertTrue(all(t[0] == moetest.moefile.F32 for n, t in fw.tensors.items() if not n.startswith("tok.")))
            a, b = moetest.logits(keep, TOKENS), moetest.logits(wide, TOKENS)
            self.assertLess(moetest.max_rms(a, b)[0], 1e-5, fam)

    def test_type_and_calib_are_moe_quantize(self):
        """--type T [--calib TEXT] gives the bytes moe quantize gives on the plain conversion, and
        --calib changes them (Q4_0 here; Q4_K on 256-wide rows, its smallest block)."""
        d = moetest.workdir("convert")
        text = os.path.join(d, "calib.txt")
        with open(text, "w") as f:
            f.write("The cat sat on the mat, and then it went to sleep in the sun. " * 10)
        wide = {"hidden_size": 256, "moe_intermediate_size": 256, "head_dim": 64}
        for qtype, src in (("q4_0", make("quant")), ("q4_k", make("quant_k", sets=wide))):
            base = moetest.convert(src, os.path.join(d, "quant_f.moe"))
            files = []
            for extra in ((), ("--calib", text)):
                want = os.path.join(d, "quant_want%d.moe" % len(extra))
                moetest.moe("quantize", base, want, "--type", qtype, *extra)
                got = moetest.convert(src, os.path.join(d, "quant_got.moe"), "--type", qtype, "--moe", moetest.BIN,
                                      *extra)
                fw, fg = moetest.moefile.MoeFile(want), moetest.moefile.MoeFile(got)
                for name in fw.tensors:
                    self.assertEqual(fw.read_tensor(name), fg.read_tensor(name), "%s %s" % (extra, name))
                files.append(fw)
            want_type = {"q4_0": moetest.moefile.Q4_0, "q4_k": moetest.moefile.Q4_K}[qtype]
            for f in files:
                self.assertEqual(f.tensors["blk.0.ffn_down_exps"][0], want_type, qtype)
            for name in ("blk.0.attn_q", "blk.0.ffn_gate_exps", "blk.0.ffn_down_exps"):
                self.assertNotEqual(files[0].read_tensor(name), files[1].read_tensor(name), "%s %s" % (qtype, name))

    def test_gpt_oss_mxfp4_kept_exactly(self):
        """gpt-oss's experts stay MXFP4, repacked into ggml's block_mxfp4; decoded here from that layout
        (element j low nibble / j + 16 high nibble of byte j after the E8M0 byte, E2M1 times
        2^(e - 127)) they equal, value for value, the --experts bf16 conversion (which decodes HF's
        layout through a bf16 table). The repack moves nibbles only, so any slip shows up."""
        src = os.path.join(moetest.SHARED, "golden", "gpt_oss")
        d = moetest.workdir("convert")
        native = moetest.moefile.MoeFile(moetest.convert(src, os.path.join(d, "gpt_oss_mxfp4.moe")))
        bf16 = moetest.moefile.MoeFile(moetest.convert(src, os.path.join(d, "gpt_oss_bf16.moe"), "--experts", "bf16"))
        e2m1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
        for name in ("blk.0.ffn_gate_exps", "blk.1.ffn_up_exps", "blk.3.ffn_down_exps"):
            self.assertEqual(native.tensors[name][0], moetest.moefile.MXFP4, name)
            self.assertEqual(bf16.tensors[name][0], moetest.moefile.BF16, name)
            self.assertEqual(native.tensors[name][1], bf16.tensors[name][1], name)
            raw = native.read_tensor(name)
            got = []
            for o in range(0, len(raw), 17):
                scale = 2.0 ** (raw[o] - 127)
                qs = raw[o + 1:o + 17]
                got += [e2m1[q & 15] * scale for q in qs] + [e2m1[q >> 4] * scale for q in qs]
            b = bf16.read_tensor(name)
            want = [struct.unpack("<f", b"\0\0" + b[i:i + 2])[0] for i in range(0, len(b), 2)]
            self.assertEqual(len(got), len(want), name)
            self.assertTrue(got == want, "%s: %d values differ" % (name, sum(x != y for x, y in zip(got, want))))

    def test_tokenizer_only(self):
        out = os.path.join(moetest.workdir("convert"), "tok_only.moe")
        code, err = run_convert(TOKENIZER, out)
        self.assertEqual(code, 0, err)
        f = moetest.moefile.MoeFile(out)
        self.assertNotIn("general.arch", f.kv)
        p = moetest.moe("tokenize", "-m", out, "Hello world")
        self.assertTrue(p.stdout.split())
        self.assertTrue(all(t.isdigit() for t in p.stdout.split()))


if __name__ == "__main__":
    unittest.main()
