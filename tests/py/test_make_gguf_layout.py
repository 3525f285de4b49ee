"""tools/make_gguf.py writes llama.cpp's layout: the same as tests/py/hf_gguf.py (the writer checked
against llama.cpp's own converter, see its docstring). For the golden gpt_oss, qwen3_5_moe and
glm4_moe checkpoints, make_gguf given their config writes the same tensor names, shapes and ggml
types, and the same {arch}.* keys and values, as hf_gguf writes from the checkpoint."""

import json
import os
import struct
import sys
import unittest

import moetest
import ggufio

moetest.require_shared()

sys.path.insert(0, moetest.TOOLS)
import make_gguf  # noqa: E402
import make_model  # noqa: E402


class MakeGGUFLayoutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = moetest.workdir("make_gguf_layout")

    def check_layout_like_hf_gguf(self, case, shape, change):
        """make_gguf with the golden checkpoint's config against hf_gguf's file of that checkpoint."""
        src = os.path.join(moetest.SHARED, "golden", case)
        import hf_gguf

        ref_path = os.path.join(self.dir, "%s-hf.gguf" % case)
        hf_gguf.write(src, ref_path)
        ref = ggufio.GGUF.read(ref_path)
        with open(os.path.join(src, "config.json")) as f:
            c = json.load(f)
        c = dict(c, **c.get("text_config", {}))
        shapes = {"golden": None}
        shapes["golden"] = dict(make_model.SHAPES[shape], **change(c))
        L = c["num_hidden_layers"]
        keys, tensors = make_gguf.plan("golden", L, "f32", 1, shapes)
        arch = make_gguf.ARCH[shapes["golden"]["arch"]]
        self.assertEqual(ref.get("general.architecture"), arch.encode())

        def squeeze(ne):  # hf_gguf keeps the shared expert gate [1, dim]; llama.cpp's converter squeezes it
            ne = list(ne)
            while len(ne) > 1 and ne[-1] == 1:
                ne.pop()
            return ne

        mtp = ["blk.%d." % i for i in range(L, L + 4)]  # the MTP block hf_gguf writes, never run
        want = {t.name: (squeeze(t.ne), t.type) for t in ref.tensors if not any(t.name.startswith(p) for p in mtp)}
        got = {n: (squeeze(ne), make_gguf.GGML[dt]) for n, ne, dt, _ in tensors}
        self.assertEqual(sorted(got), sorted(want))
        for name in want:
            self.assertEqual(got[name], want[name], name)
        skip = (arch + ".block_count", arch + ".nextn_predict_layers")
        want_kv = {k: v for k, _, v in ref.kv if k.startswith(arch + ".") and k not in skip}
        got_kv = {k: v for k, _, v in keys if k.startswith(arch + ".") and k not in skip}
        self.assertEqual(sorted(got_kv), sorted(want_kv))
        for k, v in want_kv.items():
            if isinstance(v, float):
                self.assertAlmostEqual(struct.unpack("<f", struct.pack("<f", got_kv[k]))[0], v, places=6, msg=k)
            else:
                self.assertEqual(got_kv[k], v, k)

    @staticmethod
    def common(c):
        return dict(dim=c["hidden_size"], n_heads=c["num_attention_heads"], n_kv=c["num_key_value_heads"],
                    head_dim=c["head_dim"], vocab=c["vocab_size"], k=c["num_experts_per_tok"],
                    max_ctx=c["max_position_embeddings"], eps=c["rms_norm_eps"],
                    theta=float(c.get("rope_theta") or c.get("rope_parameters", {}).get("rope_theta")))

    def test_gpt_oss_layout(self):
        def change(c):
            rs = c["rope_scaling"]
            return dict(self.common(c), experts=c["num_local_experts"], moe_ff=c["intermediate_size"],
                        window=c["sliding_window"],
                        yarn=dict(factor=rs["factor"], orig=rs["original_max_position_embeddings"],
                                  beta_fast=rs["beta_fast"], beta_slow=rs["beta_slow"], attn_factor=1.0))
        self.check_layout_like_hf_gguf("gpt_oss", "gpt-oss-20b", change)

    def test_qwen3_5_moe_layout(self):
        def change(c):
            return dict(self.common(c), experts=c["num_experts"], moe_ff=c["moe_intermediate_size"],
                        shared_ff=c["shared_expert_intermediate_size"],
                        rope_dim=int(c["head_dim"] * c["partial_rotary_factor"]),
                        ssm=dict(interval=c["full_attention_interval"], conv=c["linear_conv_kernel_dim"],
                                 nk=c["linear_num_key_heads"], nv=c["linear_num_value_heads"],
                                 dk=c["linear_key_head_dim"], dv=c["linear_value_head_dim"]))
        self.check_layout_like_hf_gguf("qwen3_5_moe", "qwen3.5-35b-a3b", change)

    def test_glm4_moe_layout(self):
        def change(c):
            return dict(self.common(c), experts=c["n_routed_experts"], moe_ff=c["moe_intermediate_size"],
                        ff=c["intermediate_size"], shared_ff=c["n_shared_experts"] * c["moe_intermediate_size"],
                        rope_dim=int(c["head_dim"] * c["partial_rotary_factor"]), first_dense=c["first_k_dense_replace"],
                        moe_scale=c["routed_scaling_factor"], n_group=c["n_group"], topk_group=c["topk_group"],
                        norm_topk=int(c["norm_topk_prob"]), **({"qk_norm": "head"} if c.get("use_qk_norm") else {}))
        self.check_layout_like_hf_gguf("glm4_moe", "glm-4.5-air", change)


if __name__ == "__main__":
    unittest.main()
