"""Published configurations (tests/data/configs/*.json, the config.json files as their authors
published them) made synthetic, shrunk to 2 layers and a few experts, converted and loaded:
`moe info` must report the parameter counts and KV-cache bytes computed here, independently,
from the config, and `moe logits` must run and give finite values.

Shrinking: 2 layers (DeepSeek's first_k_dense_replace becomes 1: one dense and one MoE layer),
a few experts (num_experts_per_tok and n_group clamped to fit), a 1024-row vocabulary. Hidden
sizes stay as published for granite-3.1-1b-a400m (hidden 1024; 40 MB); the others are scaled
down consistently by SHRINK (hidden size, every intermediate size, head counts and LoRA ranks
divided; head dims, RoPE, routing and every other field kept) so each file stays under ~30 MB.
"""

import math
import os
import unittest

import moetest

import make_synthetic  # noqa: E402  (tools/, on sys.path through moetest)

moetest.require_shared()

CONFIGS = os.path.join(moetest.ROOT, "tests", "data", "configs")
TOKENIZER = os.path.join(moetest.SHARED, "golden", "mixtral", "tokenizer.json")
TOKENS = [1, 17, 99, 5, 200, 42]

# name: (experts, shrink)
SHRINK = {
    "DeepSeek-V2-Lite": (8, 4),
    "DeepSeek-V3": (16, 16),
    "Moonlight-16B-A3B": (8, 4),
    "granite-3.1-1b-a400m": (4, 1),
    "Qwen3-30B-A3B": (16, 4),
    "OLMoE-1B-7B-0924": (12, 4),
}


def expected_counts(c):
    """(total parameters, active parameters, KV bytes per position) from an HF config, as
    `moe info` defines them: every weight counted once, idle routed experts (E - k of E)
    subtracted for the active count, f32 KV cache (MLA: kv_lora + rope per layer)."""
    D, L, V = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    H = c["num_attention_heads"]
    KV = c.get("num_key_value_heads") or H
    HD = c.get("head_dim") or D // H
    arch = make_synthetic.FAMILY_OF[c["architectures"][0]]
    mla = arch in ("deepseek_v2", "deepseek_v3", "glm4_moe_lite")
    total = V * D + D + (0 if c.get("tie_word_embeddings") else V * D)
    idle = 0
    for i in range(L):
        total += 2 * D  # the two norms
        if mla:
            nope, rope, vd, ql, kl = (c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"],
                                      c.get("q_lora_rank"), c["kv_lora_rank"])
            q = ql * D + ql + H * (nope + rope) * ql if ql else H * (nope + rope) * D
            total += q + (kl + rope) * D + kl + H * (nope + vd) * kl + D * H * vd
        else:
            total += (H + 2 * KV) * HD * D + D * H * HD
            if arch in ("qwen2", "qwen2_moe"):
                total += (H + 2 * KV) * HD
            if arch in ("qwen3", "qwen3_moe"):
                total += 2 * HD
            if arch == "olmoe":
                total += (H + KV) * HD
            if arch == "glm4_moe":
                total += (H + 2 * KV) * HD if c.get("attention_bias") else 0
                total += 2 * HD if c.get("use_qk_norm") else 0
        if make_synthetic.is_moe_layer(c, arch, i):
            E = c[make_synthetic.n_experts_key(arch)]
            k = c["num_experts_per_tok"]
            F = c["intermediate_size"] if arch in ("mixtral", "granitemoe", "olmoe") else c["moe_intermediate_size"]
            total += E * D + E * 3 * F * D
            idle += (E - k) * 3 * F * D
            if arch in ("deepseek_v3", "glm4_moe", "glm4_moe_lite"):
                total += E  # e_score_correction_bias
            if arch in make_synthetic.GROUPED and c.get("n_shared_experts"):
                total += 3 * c["n_shared_experts"] * c["moe_intermediate_size"] * D
            if arch == "qwen2_moe" and c.get("shared_expert_intermediate_size"):
                total += 3 * c["shared_expert_intermediate_size"] * D + D
        else:
            total += 3 * c["intermediate_size"] * D
    kv = (c["kv_lora_rank"] + c["qk_rope_head_dim"]) if mla else 2 * KV * HD
    return total, total - idle, kv * 4 * L


def human(v):
    """cmd_info.c's formatting of a count."""
    pre = ["", "K", "M", "G", "T"]
    i = 0
    while v >= 1000 and i < 4:
        v /= 1000
        i += 1
    return "%.2f %s" % (v, pre[i])


class PublishedConfigs(unittest.TestCase):
    def check(self, name):
        experts, shrink = SHRINK[name]
        cfg, fam = make_synthetic.build_config(config=os.path.join(CONFIGS, name + ".json"), layers=2,
                                               experts=experts, vocab=1024, shrink=shrink)
        hf = moetest.workdir("published", name)
        make_synthetic.write_checkpoint(hf, cfg, fam, tokenizer=TOKENIZER, seed=3, fast=1 << 14)
        model = moetest.convert(hf, os.path.join(moetest.workdir("published"), name + ".moe"))
        size = os.path.getsize(model)
        total, active, kv = expected_counts(cfg)
        info = moetest.moe("info", "-m", model).stdout
        print("\n%-22s hidden %d, %d experts: %s params (%s active), KV %d B/position, %.1f MB" % (
            name, cfg["hidden_size"], experts, human(total), human(active), kv, size / 1e6))
        self.assertIn("parameters        %s total, %s active per token" % (human(total), human(active)), info)
        self.assertIn("KV cache %d bytes per position (f32)" % kv, info)
        self.assertIn("layers            2 (1 MoE)" if fam in ("deepseek_v2", "deepseek_v3") else
                      "layers            2 (2 MoE)", info)
        self.assertLess(size, 60e6)
        rows = moetest.logits(model, TOKENS)
        self.assertTrue(all(math.isfinite(x) for r in rows for x in r))
        self.assertGreater(max(abs(x) for x in rows[-1]), 0.0)

    def test_glm_families(self):
        """GLM-4.5-Air's settings (q/k/v biases, no QK-norm, partial RoPE, 1 dense + MoE layers with a
        shared expert and a selection bias) and GLM-4.7-Flash's (converted as DeepSeek-V3), small
        synthetic checkpoints that also hold an MTP layer: `moe info` counts what the formula above
        counts, without the MTP layer, and says it was skipped."""
        for fam, edits in (("glm4_moe", {"use_qk_norm": False, "routed_scaling_factor": 1.0, "n_group": 1,
                                         "topk_group": 1}),
                           ("glm4_moe", {}), ("glm4_moe_lite", {})):
            cfg, fam = make_synthetic.build_config(fam, sets=edits)
            hf = moetest.workdir("published", "synthetic_" + fam)
            make_synthetic.write_checkpoint(hf, cfg, fam, tokenizer=TOKENIZER, seed=3)
            model = moetest.convert(hf, os.path.join(moetest.workdir("published"), "synthetic_%s.moe" % fam))
            total, active, kv = expected_counts(cfg)
            info = moetest.moe("info", "-m", model).stdout
            print("\n%-22s %s params (%s active), KV %d B/position" % (fam, human(total), human(active), kv))
            self.assertIn("parameters        %s total, %s active per token" % (human(total), human(active)), info)
            self.assertIn("KV cache %d bytes per position (f32)" % kv, info)
            self.assertIn("layers            2 (1 MoE)", info)
            self.assertIn("mtp layers        1 multi-token-prediction layer of the checkpoint skipped", info)

    def test_expected_counts_of_full_glm_4_5_air(self):
        """The formula on GLM-4.5-Air's published shape (46 layers, hidden 4096, 96 heads / 8 kv of
        128, q/k/v biases, 1 dense layer of 10944, 128 experts of 1408 with k = 8 and 1 shared,
        vocab 151552, untied) gives the 106B total its model card states."""
        c = make_synthetic.build_config("glm4_moe", sets=dict(
            hidden_size=4096, num_hidden_layers=46, num_attention_heads=96, num_key_value_heads=8, head_dim=128,
            intermediate_size=10944, moe_intermediate_size=1408, n_routed_experts=128, num_experts_per_tok=8,
            n_shared_experts=1, first_k_dense_replace=1, vocab_size=151552, use_qk_norm=False,
            attention_bias=True))[0]
        total, active, kv = expected_counts(c)
        self.assertAlmostEqual(total / 1e9, 106.8, delta=1.0)
        self.assertAlmostEqual(active / 1e9, 12.0 + 151552 * 4096 * 2 / 1e9, delta=0.8)  # 12B + both vocab tables
        self.assertEqual(kv, 2 * 8 * 128 * 4 * 46)

    def test_expected_counts_of_full_deepseek_v2_lite(self):
        """The formula above gives DeepSeek-V2-Lite's published 15.7B parameters and the MLA cache
        of (512 + 64) x 4 bytes x 27 layers."""
        c = make_synthetic.build_config(config=os.path.join(CONFIGS, "DeepSeek-V2-Lite.json"))[0]
        total, active, kv = expected_counts(c)
        self.assertAlmostEqual(total / 1e9, 15.7, delta=0.1)
        self.assertAlmostEqual(active / 1e9, 2.66, delta=0.1)  # 2.4B active + the 0.2B embedding table
        self.assertEqual(kv, (512 + 64) * 4 * 27)


def _add(name):
    setattr(PublishedConfigs, "test_" + name.replace("-", "_").replace(".", "_"), lambda self: self.check(name))


for _n in SHRINK:
    _add(_n)

if __name__ == "__main__":
    unittest.main()
