"""The engine against the float64 HF reference (hf_reference.py, itself proven on the golden
cases by test_reference.py) on synthetic checkpoints that the golden cases do not cover.

Each variant: tools/make_synthetic.py writes an HF folder (dim 64, 2-3 layers, vocab 512, a
golden tokenizer.json), tools/convert.py converts it, `moe logits` evaluates 8 tokens, and the
result must be within BOUND x rms(reference logits) of the reference at every position and
vocab entry. A correct float32 engine sits at ~1e-6 relative; every mistake listed below moves
the logits by 1e-2 relative or more.

Each variant also names a counterfactual: the same checkpoint with the feature it exercises
switched off (a config edit, or a tensor zeroed), evaluated by the reference. The test requires
it to differ from the real reference by more than 10x the bound, so a variant that does not
actually exercise its feature on these tokens fails instead of passing vacuously. Finally, a
negative control flips routing knobs in the converted files and checks the bound catches it.
"""

import os
import unittest

import hf_reference
import moetest
import make_synthetic

moetest.require_shared()

BOUND = 1e-3  # relative to the rms of the reference logits
TOKENS = [1, 17, 99, 5, 200, 42, 7, 128]
TOKENIZER = os.path.join(moetest.SHARED, "golden", "mixtral", "tokenizer.json")

# name: (family, config edits, make options, counterfactual config edits or a callable on the checkpoint)
VARIANTS = {
    "llama": ("llama", {}, {}, {"num_hidden_layers": 0}),
    "llama_tied": ("llama", {"tie_word_embeddings": True}, {}, {"num_hidden_layers": 0}),
    "llama_f16": ("llama", {}, {"dtype": "f16"}, {"num_hidden_layers": 0}),
    "llama_f32": ("llama", {}, {"dtype": "f32"}, {"num_hidden_layers": 0}),
    "llama_linear_rope": ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, {},
                          {"rope_scaling": None}),
    "llama_llama3_rope": ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0,
                                                     "original_max_position_embeddings": 64}}, {},
                          {"rope_scaling": None}),
    "qwen2": ("qwen2", {}, {}, lambda m: zero(m, ".self_attn.q_proj.bias", ".self_attn.k_proj.bias",
                                               ".self_attn.v_proj.bias")),
    "qwen3": ("qwen3", {}, {}, lambda m: fill(m, ".self_attn.q_norm.weight", 1.0)),
    "olmoe": ("olmoe", {}, {}, {"norm_topk_prob": True}),
    "olmoe_norm_topk": ("olmoe", {"norm_topk_prob": True}, {}, {"norm_topk_prob": False}),
    "olmoe_clip_qkv": ("olmoe", {"clip_qkv": 0.3}, {}, {"clip_qkv": None}),
    "qwen3_moe_sparse_step2": ("qwen3_moe", {"num_hidden_layers": 3, "decoder_sparse_step": 2}, {},
                               lambda m: zero(m, ".mlp.down_proj.weight")),
    "qwen3_moe_mlp_only": ("qwen3_moe", {"num_hidden_layers": 3, "mlp_only_layers": [1]}, {},
                           lambda m: zero(m, ".mlp.down_proj.weight")),
    "qwen3_moe_yarn": ("qwen3_moe", {"max_position_embeddings": 256,
                                     "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                      "original_max_position_embeddings": 64}}, {},
                       {"rope_scaling": None}),
    "qwen3_moe_sharded": ("qwen3_moe", {}, {"shards": 2}, {"norm_topk_prob": False}),
    "qwen2_moe_no_shared": ("qwen2_moe", {"shared_expert_intermediate_size": 0}, {}, {"norm_topk_prob": True}),
    "qwen2_moe_shared_norm": ("qwen2_moe", {"norm_topk_prob": True}, {}, {"norm_topk_prob": False}),
    "mixtral_sliding_window": ("mixtral", {"sliding_window": 3}, {}, {"sliding_window": None}),
    "llama_sliding_window_ignored": ("llama", {"sliding_window": 3}, {}, {"architectures": ["MistralForCausalLM"]}),
    "mistral_sliding_window": ("llama", {"sliding_window": 3, "architectures": ["MistralForCausalLM"],
                                         "model_type": "mistral"}, {}, {"sliding_window": None}),
    "olmoe_gqa": ("olmoe", {"num_key_value_heads": 2}, {}, lambda m: fill(m, ".self_attn.k_norm.weight", 1.0)),
    "deepseek_v3_eps": ("deepseek_v3", {"rms_norm_eps": 0.05}, {}, {"rms_norm_eps": 1e-6}),
    "llama_odd_sizes": ("llama", {"hidden_size": 72, "num_attention_heads": 3, "num_key_value_heads": 1,
                                  "intermediate_size": 100, "vocab_size": 520}, {}, {"num_hidden_layers": 0}),
    "mixtral_mqa": ("mixtral", {"num_key_value_heads": 1}, {}, {"num_experts_per_tok": 1}),
    "deepseek_v2_v_dim": ("deepseek_v2", {"qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 24,
                                          "kv_lora_rank": 40}, {}, {"routed_scaling_factor": 1.0}),
    "deepseek_v3_no_interleave": ("deepseek_v3", {"rope_interleave": False}, {}, {"rope_interleave": True}),
    "granitemoe": ("granitemoe", {}, {}, {"residual_multiplier": 1.0}),
    "granitemoe_untied": ("granitemoe", {"tie_word_embeddings": False}, {}, {"embedding_multiplier": 1.0}),
    "deepseek_v2_greedy": ("deepseek_v2", {}, {}, {"routed_scaling_factor": 1.0}),
    "deepseek_v2_group_limited": ("deepseek_v2", {"n_group": 4, "topk_group": 1, "topk_method": "group_limited_greedy"},
                                  {}, {"topk_method": "greedy"}),
    "deepseek_v2_norm_topk_k2": ("deepseek_v2", {"norm_topk_prob": True}, {}, {"norm_topk_prob": False}),
    "deepseek_v2_norm_topk_k1": ("deepseek_v2", {"norm_topk_prob": True, "num_experts_per_tok": 1}, {},
                                 {"routed_scaling_factor": 1.0}),
    "deepseek_v2_q_lora_yarn": ("deepseek_v2", {"q_lora_rank": 24, "max_position_embeddings": 4096,
                                                "rope_scaling": {"type": "yarn", "factor": 40, "beta_fast": 32,
                                                                 "beta_slow": 1, "mscale": 0.707,
                                                                 "mscale_all_dim": 0.707,
                                                                 "original_max_position_embeddings": 64}}, {},
                                {"rope_scaling": None}),
    "deepseek_v2_layer_freq2": ("deepseek_v2", {"num_hidden_layers": 3, "first_k_dense_replace": 0,
                                                "moe_layer_freq": 2}, {}, lambda m: zero(m, ".mlp.down_proj.weight")),
    "deepseek_v3_groups": ("deepseek_v3", {}, {}, {"n_group": 1, "topk_group": 1}),
    "deepseek_v3_bias": ("deepseek_v3", {}, {}, lambda m: zero(m, ".mlp.gate.e_score_correction_bias")),
    "deepseek_v3_no_norm": ("deepseek_v3", {"norm_topk_prob": False}, {}, {"norm_topk_prob": True}),
    "glm4_moe_groups": ("glm4_moe", {}, {}, {"n_group": 1, "topk_group": 1}),
    "glm4_moe_partial_rope": ("glm4_moe", {}, {}, {"partial_rotary_factor": 1.0}),
    "glm4_moe_qk_norm": ("glm4_moe", {}, {}, lambda m: fill(m, ".self_attn.k_norm.weight", 1.0)),
    "glm4_moe_scale": ("glm4_moe", {}, {}, {"routed_scaling_factor": 1.0}),
    # GLM-4.5-Air's settings: no QK-norm, scale 1, groups off, 2 dense layers; yarn on the partial RoPE
    "glm4_moe_air": ("glm4_moe", {"use_qk_norm": False, "routed_scaling_factor": 1.0, "n_group": 1, "topk_group": 1,
                                  "num_hidden_layers": 3, "first_k_dense_replace": 2}, {},
                     lambda m: zero(m, ".self_attn.q_proj.bias", ".self_attn.k_proj.bias", ".self_attn.v_proj.bias")),
    "glm4_moe_yarn": ("glm4_moe", {"max_position_embeddings": 256,
                                   "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                    "original_max_position_embeddings": 16}}, {},
                      {"rope_scaling": None}),
    # transformers 5's nested form of the same settings
    "glm4_moe_rope_parameters": ("glm4_moe", {"rope_theta": None, "partial_rotary_factor": None,
                                              "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0,
                                                                  "partial_rotary_factor": 0.25}}, {},
                                 {"rope_parameters": None, "partial_rotary_factor": 0.5}),
    # GLM-4.7-Flash converts as DeepSeek-V3 (MLA, noaux_tc router, no scoring_func key)
    "glm4_moe_lite": ("glm4_moe_lite", {}, {}, {"n_group": 1, "topk_group": 1}),
    "glm4_moe_lite_layer_types": ("glm4_moe_lite", {"num_hidden_layers": 3,
                                                    "mlp_layer_types": ["dense", "sparse", "dense"]}, {},
                                  lambda m: zero(m, "layers.2.mlp.down_proj.weight")),
    # gpt-oss: MXFP4 experts, window 4 on the first of two layers, sinks, YaRN with truncate false
    "gpt_oss_window_even": ("gpt_oss", {}, {}, {"layer_types": ["full_attention", "full_attention"]}),
    "gpt_oss_window_odd": ("gpt_oss", {"layer_types": ["full_attention", "sliding_attention"]}, {},
                           {"layer_types": ["full_attention", "full_attention"]}),
    "gpt_oss_sinks": ("gpt_oss", {}, {}, lambda m: zero(m, ".self_attn.sinks")),
    "gpt_oss_biases": ("gpt_oss", {}, {}, lambda m: zero(m, ".mlp.router.bias", ".experts.gate_up_proj_bias",
                                                          ".experts.down_proj_bias", ".self_attn.o_proj.bias")),
    "gpt_oss_clamp": ("gpt_oss", {"swiglu_limit": 0.02}, {}, {"swiglu_limit": 1000.0}),
    "gpt_oss_yarn_truncate": ("gpt_oss", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0,
                                                           "beta_slow": 1.0, "original_max_position_embeddings": 64}},
                              {}, {"rope_scaling": None}),
    "deepseek_v3_yarn_interleave": ("deepseek_v3", {"max_position_embeddings": 4096,
                                                    "rope_scaling": {"type": "yarn", "factor": 40, "beta_fast": 32,
                                                                     "beta_slow": 1, "mscale": 1.0,
                                                                     "mscale_all_dim": 1.0,
                                                                     "original_max_position_embeddings": 64}}, {},
                                    {"rope_scaling": None}),
}


def zero(m, *suffixes):
    return fill(m, suffixes, 0.0)


def fill(m, suffixes, value):
    if isinstance(suffixes, str):
        suffixes = (suffixes,)
    for name in m.where:
        if name.endswith(tuple(suffixes)):
            t = m.get(name)
            m.cache[name] = [[value] * len(r) for r in t] if isinstance(t[0], list) else [value] * len(t)
    return m


def rel_max(a, b):
    mx, _ = moetest.max_rms(a, b)
    n = sum(len(r) for r in b)
    rms = (sum(x * x for r in b for x in r) / n) ** 0.5
    return mx / rms, mx, rms


class EngineVsReference(unittest.TestCase):
    results = {}

    @classmethod
    def setUpClass(cls):
        moetest.require_bin()

    def make(self, name):
        family, edits, opts, _ = VARIANTS[name]
        out = moetest.workdir("synthetic", name)
        cfg, fam = make_synthetic.build_config(family, sets=edits)
        make_synthetic.write_checkpoint(out, cfg, fam, tokenizer=TOKENIZER, seed=7, **opts)
        model = os.path.join(moetest.workdir("synthetic"), name + ".moe")
        moetest.convert(out, model)
        return out, model

    def check(self, name):
        hf, model = self.make(name)
        ref = hf_reference.forward(hf, TOKENS)
        got = moetest.logits(model, TOKENS)
        rel, mx, rms = rel_max(got, ref)
        cf = VARIANTS[name][3]
        ck = hf_reference.Checkpoint(hf)
        if callable(cf):
            cf(ck)
        else:
            ck.cfg.update(cf)
        cf_rel, _, _ = rel_max(hf_reference.forward(hf, TOKENS, ck), ref)
        print("\n%-28s max %.2e (rel %.1e, logit rms %.3f); without the feature: rel %.2f" % (
            name, mx, rel, rms, cf_rel))
        self.assertLessEqual(rel, BOUND, "engine vs reference")
        self.assertGreater(cf_rel, 10 * BOUND, "the variant does not exercise its feature on these tokens")
        # MLA through the latent cache, and sliding windows through the KV cache, in smaller batches
        if VARIANTS[name][0].startswith("deepseek") or "window" in name:
            for b in ("3", "1") if "window" in name else ("3",):
                self.assertLess(moetest.max_rms(moetest.logits(model, TOKENS, "-b", b), got)[0], 1e-4 * rms, b)

    def test_negative_control_routing_knobs(self):
        """Flipping norm_topk, the group limit or the routing scale in the converted file breaks the bound."""
        for name, kv in (("olmoe", {"moe.norm_topk": 1}),
                         ("deepseek_v3_groups", {"moe.n_groups": 1, "moe.groups_active": 1}),
                         ("deepseek_v2_norm_topk_k2", {"moe.norm_topk": 0}),
                         ("deepseek_v2_greedy", {"moe.scale": 1.0})):
            hf, model = self.make(name)
            bad = moetest.rewrite(model, model.replace(".moe", ".bad.moe"), kv=dict(kv))
            rel, _, _ = rel_max(moetest.logits(bad, TOKENS), hf_reference.forward(hf, TOKENS))
            print("\nnegative control %s %s: rel %.2f" % (name, kv, rel))
            self.assertGreater(rel, 10 * BOUND)

    def test_negative_control_hf_config(self):
        """A wrong HF config (norm_topk_prob flipped) converts to a file that fails the bound."""
        hf, _ = self.make("qwen3_moe_sharded")
        ref = hf_reference.forward(hf, TOKENS)
        ck = make_synthetic.build_config("qwen3_moe", sets={"norm_topk_prob": False})[0]
        bad_dir = moetest.workdir("synthetic", "qwen3_moe_wrong_config")
        make_synthetic.write_checkpoint(bad_dir, ck, "qwen3_moe", tokenizer=TOKENIZER, seed=7, shards=2)
        bad = moetest.convert(bad_dir, os.path.join(moetest.workdir("synthetic"), "qwen3_moe_wrong_config.moe"))
        rel, _, _ = rel_max(moetest.logits(bad, TOKENS), ref)
        print("\nnegative control: qwen3_moe converted with norm_topk_prob false: rel %.2f" % rel)
        self.assertGreater(rel, 10 * BOUND)


def _add(name):
    setattr(EngineVsReference, "test_" + name, lambda self: self.check(name))


for _n in VARIANTS:
    _add(_n)

if __name__ == "__main__":
    unittest.main()
