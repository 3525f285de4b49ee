#!/usr/bin/env python3
"""make_synthetic.py - write a small random-weight Hugging Face checkpoint folder (config.json,
model.safetensors or shards + index, optionally tokenizer.json) in the genuine HF layout of one
family, for tests. Standard library only.

    python3 tools/make_synthetic.py --family deepseek_v3 -o /tmp/ds3 [--set n_group=4 --set topk_group=2]
    python3 tools/make_synthetic.py --config tests/data/configs/Qwen3-30B-A3B.json --layers 2 --experts 8 \\
        --vocab 1024 --shrink 4 -o /tmp/q3

Families: llama, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v2, deepseek_v3,
granitemoe, qwen3_next (Gated DeltaNet + gated attention hybrid, fused in_proj_qkvz/in_proj_ba,
per-expert tensors, as Qwen3-Next-80B-A3B publishes them), glm4_moe (GLM-4.5/4.6), glm4_moe_lite (GLM-4.7-Flash: DeepSeek-V3's layout and config
keys under Glm4MoeLiteForCausalLM, without scoring_func). With num_nextn_predict_layers > 0 (DeepSeek-V3,
GLM) the checkpoint also holds the multi-token-prediction layers after the last decoder layer, as
published (a decoder layer + enorm, hnorm, eh_proj, embed_tokens, shared_head), which HF never runs.
gpt_oss (GptOssForCausalLM) has its experts in MXFP4 as published: U8 blocks of random E2M1 codes
and U8 E8M0 scales 119..122 (|w| <= 6/2^5), BF16 biases, one sink logit per head ~N(0, 1). `--family` starts from small default dimensions; `--config` starts from a published
config.json (family from its `architectures`). Then, in this order: --layers, --experts (also
clamps num_experts_per_tok and, for DeepSeek, n_group/topk_group), --vocab, --shrink D (divides
hidden_size, every intermediate size, the head counts and the LoRA ranks by D, keeping head
dims), and --set KEY=JSON (any config field, e.g. --set 'rope_scaling={"type":"linear","factor":2}').

Weights are drawn from random.Random seeded by (seed, crc32(tensor name)): linear layers
~N(0, std), norms 1 +- 0.05, q/k/v biases ~N(0, 0.05), routers scaled so the router logits have
a std of ~3 (softmax) or ~1.5 (sigmoid), so float32 engines make the same expert choices as a
float64 reference; DeepSeek-V3's e_score_correction_bias ~N(0, 0.15) is stored F32. Tensors over
--fast elements (2^20) use fast random bytes instead (|w| in [2^-9, 2^-4), random sign): good for shape
and size tests, not meant for reference comparisons.
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402

ARCH_CLASS = {
    "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
    "mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
    "olmoe": "OlmoeForCausalLM", "deepseek_v2": "DeepseekV2ForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM",
    "granitemoe": "GraniteMoeForCausalLM", "glm4_moe": "Glm4MoeForCausalLM",
    "glm4_moe_lite": "Glm4MoeLiteForCausalLM", "gpt_oss": "GptOssForCausalLM",
    "qwen3_next": "Qwen3NextForCausalLM",
}
FAMILY_OF = {v: k for k, v in ARCH_CLASS.items()}
MLA = ("deepseek_v2", "deepseek_v3", "glm4_moe_lite")
V3_ROUTER = ("deepseek_v3", "glm4_moe", "glm4_moe_lite")  # sigmoid + e_score_correction_bias, 2-best groups
GROUPED = MLA + ("glm4_moe",)  # n_routed_experts, n_group, first_k_dense_replace, shared_experts
FAMILY_OF["MistralForCausalLM"] = "llama"

_COMMON = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": "bfloat16"}

DEFAULTS = {
    # window 4 on 8 test tokens; YaRN as published (factor 32, truncate false)
    "gpt_oss": dict(intermediate_size=64, num_local_experts=8, num_experts_per_tok=2, experts_per_token=2,
                    head_dim=32, attention_bias=True, sliding_window=4, swiglu_limit=7.0, rope_theta=150000.0,
                    layer_types=["sliding_attention", "full_attention"], initial_context_length=4096,
                    max_position_embeddings=131072,
                    rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                  "original_max_position_embeddings": 4096, "truncate": False},
                    quantization_config={"quant_method": "mxfp4", "modules_to_not_convert": [
                        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}),
    "llama": dict(intermediate_size=128, attention_bias=False, mlp_bias=False, rope_scaling=None),
    "qwen2": dict(intermediate_size=128, rope_theta=1e6, use_sliding_window=False, sliding_window=None),
    "qwen3": dict(intermediate_size=128, head_dim=32, rope_theta=1e6, attention_bias=False),
    "mixtral": dict(intermediate_size=64, num_local_experts=8, num_experts_per_tok=2, rope_theta=1e6,
                    sliding_window=None, router_jitter_noise=0.0),
    "qwen2_moe": dict(intermediate_size=128, moe_intermediate_size=32, shared_expert_intermediate_size=64,
                      num_experts=8, num_experts_per_tok=2, norm_topk_prob=False, decoder_sparse_step=1,
                      mlp_only_layers=[], rope_theta=1e6, use_sliding_window=False),
    "qwen3_moe": dict(intermediate_size=128, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                      norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], head_dim=32,
                      rope_theta=1e6, attention_bias=False, use_sliding_window=False),
    "olmoe": dict(intermediate_size=32, num_experts=8, num_experts_per_tok=2, norm_topk_prob=False,
                  clip_qkv=None, num_key_value_heads=4),
    "deepseek_v2": dict(intermediate_size=128, moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2,
                        n_shared_experts=1, first_k_dense_replace=1, moe_layer_freq=1, q_lora_rank=None,
                        kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                        num_key_value_heads=4, n_group=1, topk_group=1, topk_method="greedy",
                        scoring_func="softmax", norm_topk_prob=False, routed_scaling_factor=2.0, rope_scaling=None,
                        rms_norm_eps=1e-6),
    "deepseek_v3": dict(intermediate_size=128, moe_intermediate_size=32, n_routed_experts=16, num_experts_per_tok=4,
                        n_shared_experts=1, first_k_dense_replace=1, moe_layer_freq=1, q_lora_rank=32,
                        kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                        num_key_value_heads=4, n_group=4, topk_group=2, topk_method="noaux_tc",
                        scoring_func="sigmoid", norm_topk_prob=True, routed_scaling_factor=2.5, rope_scaling=None,
                        num_nextn_predict_layers=0, rms_norm_eps=1e-6),
    # GLM-4.5's published key set, small; n_group 2 / topk_group 1 so the group limit binds
    "glm4_moe": dict(intermediate_size=128, moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2,
                     n_shared_experts=1, first_k_dense_replace=1, n_group=2, topk_group=1, norm_topk_prob=True,
                     routed_scaling_factor=2.5, head_dim=32, partial_rotary_factor=0.5, attention_bias=True,
                     use_qk_norm=True, rope_theta=1e6, rope_scaling=None, num_nextn_predict_layers=1),
    # GLM-4.7-Flash's published key set (topk_method, no scoring_func), small
    "glm4_moe_lite": dict(intermediate_size=128, moe_intermediate_size=32, n_routed_experts=16,
                          num_experts_per_tok=4, n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=32,
                          kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                          num_key_value_heads=4, n_group=4, topk_group=2, topk_method="noaux_tc",
                          norm_topk_prob=True, routed_scaling_factor=1.8, partial_rotary_factor=1.0,
                          attention_bias=False, rope_scaling=None, num_nextn_predict_layers=1,
                          rms_norm_eps=1e-5),
    "granitemoe": dict(intermediate_size=32, num_local_experts=8, num_experts_per_tok=2, embedding_multiplier=12.0,
                       residual_multiplier=0.22, attention_multiplier=0.0625, logits_scaling=6.0,
                       tie_word_embeddings=True, rms_norm_eps=1e-6),
    # 4 layers: 3 Gated DeltaNet + 1 gated attention (full_attention_interval 4, layer_types derived by HF)
    "qwen3_next": dict(num_hidden_layers=4, intermediate_size=128, moe_intermediate_size=32,
                       shared_expert_intermediate_size=48, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
                       decoder_sparse_step=1, mlp_only_layers=[], head_dim=32, partial_rotary_factor=0.25,
                       rope_theta=1e6, rope_scaling=None, attention_bias=False, full_attention_interval=4,
                       linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16,
                       linear_num_key_heads=2, linear_num_value_heads=4, rms_norm_eps=1e-6),
}

STD = {"granitemoe": 0.15}


def family_config(family):
    cfg = dict(_COMMON)
    cfg.update(DEFAULTS[family])
    cfg["architectures"] = [ARCH_CLASS[family]]
    cfg["model_type"] = family
    return cfg


def n_experts_key(family):
    if family in GROUPED:
        return "n_routed_experts"
    return {"mixtral": "num_local_experts", "granitemoe": "num_local_experts"}.get(family, "num_experts")


def adjust(cfg, family, layers=None, experts=None, vocab=None, shrink=None):
    """The --layers/--experts/--vocab/--shrink edits of a (published) config."""
    if layers:
        cfg["num_hidden_layers"] = layers
        if cfg.get("layer_types"):
            cfg["layer_types"] = (cfg["layer_types"] * layers)[:layers]
        if "max_window_layers" in cfg:
            cfg["max_window_layers"] = layers
        if cfg.get("mlp_only_layers"):
            cfg["mlp_only_layers"] = [i for i in cfg["mlp_only_layers"] if i < layers]
        if family in GROUPED:
            cfg["first_k_dense_replace"] = min(cfg.get("first_k_dense_replace", 0), max(layers - 1, 0))
    if experts:
        cfg[n_experts_key(family)] = experts
        cfg["num_experts_per_tok"] = min(cfg["num_experts_per_tok"], experts)
        if family in GROUPED:
            g = cfg.get("n_group") or 1
            min_per_group = 2 if family in V3_ROUTER else 1
            while g > 1 and (experts % g or experts // g < min_per_group):
                g -= 1
            cfg["n_group"] = g
            cfg["topk_group"] = min(cfg.get("topk_group") or 1, g)
    if vocab:
        cfg["vocab_size"] = vocab
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if isinstance(cfg.get(k), int) and cfg[k] >= vocab:
                cfg[k] = vocab - 1
    if shrink and shrink > 1:
        def div(k):
            if cfg.get(k):
                cfg[k] = max(1, cfg[k] // shrink)
        hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        for k in ("hidden_size", "intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size",
                  "q_lora_rank", "kv_lora_rank", "num_attention_heads"):
            div(k)
        if cfg.get("num_key_value_heads"):
            cfg["num_key_value_heads"] = max(1, cfg["num_key_value_heads"] // shrink)
        if family not in MLA:
            cfg["head_dim"] = hd  # head size is kept: heads shrink instead
        if family == "granitemoe":
            cfg["attention_multiplier"] = cfg.get("attention_multiplier", hd ** -0.5)
    return cfg


def hybrid_layer_types(cfg):
    """Qwen3NextConfig's layer_types, or its default from full_attention_interval."""
    n = cfg.get("full_attention_interval") or 4
    return cfg.get("layer_types") or ["full_attention" if (i + 1) % n == 0 else "linear_attention"
                                      for i in range(cfg["num_hidden_layers"])]


def hybrid_specs(cfg, family):
    """Qwen3-Next: zero-centred norms (stored ~0, used as 1 + w), Gated DeltaNet with fused projections
    grouped per key head, gated attention with a doubled q_proj, MoE with a gated shared expert."""
    D, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    H, KV, HD = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    dk, dv, K = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"], cfg["linear_conv_kernel_dim"]
    ch = 2 * nk * dk + nv * dv
    out = [("model.embed_tokens.weight", [V, D], "embed")]
    types = hybrid_layer_types(cfg)
    for i in range(L):
        p = "model.layers.%d." % i
        out.append((p + "input_layernorm.weight", [D], "norm0"))
        if types[i] == "linear_attention":
            a = p + "linear_attn."
            out += [(a + "in_proj_qkvz.weight", [2 * nk * dk + 2 * nv * dv, D], "linear"),
                    (a + "in_proj_ba.weight", [2 * nv, D], "gate_logit"),
                    (a + "conv1d.weight", [ch, 1, K], "conv"), (a + "dt_bias", [nv], "dt"),
                    (a + "A_log", [nv], "a_log"), (a + "norm.weight", [dv], "norm"),
                    (a + "out_proj.weight", [D, nv * dv], "linear")]
        else:
            a = p + "self_attn."
            out += [(a + "q_proj.weight", [2 * H * HD, D], "linear"), (a + "k_proj.weight", [KV * HD, D], "linear"),
                    (a + "v_proj.weight", [KV * HD, D], "linear"), (a + "o_proj.weight", [D, H * HD], "linear"),
                    (a + "q_norm.weight", [HD], "norm0"), (a + "k_norm.weight", [HD], "norm0")]
        out.append((p + "post_attention_layernorm.weight", [D], "norm0"))
        out += ffn_specs(cfg, family, i, D)
    out.append(("model.norm.weight", [D], "norm0"))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", [V, D], "linear"))
    return out


def tensor_specs(cfg, family):
    """[(HF name, shape, kind)] of the checkpoint; kind picks the initialisation."""
    if family == "qwen3_next":
        return hybrid_specs(cfg, family)
    D, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    out = [("model.embed_tokens.weight", [V, D], "embed")]
    for i in range(L):
        out += layer_specs(cfg, family, i)
    out.append(("model.norm.weight", [D], "norm"))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", [V, D], "linear"))
    # multi-token prediction (DeepSeek-V3, GLM): a MoE decoder layer plus its own embedding,
    # norms, projection and head, after the last layer; HF loads and runs none of it
    if family in V3_ROUTER:
        for i in range(L, L + (cfg.get("num_nextn_predict_layers") or 0)):
            p = "model.layers.%d." % i
            out += layer_specs(cfg, family, i)
            out += [(p + "enorm.weight", [D], "norm"), (p + "hnorm.weight", [D], "norm"),
                    (p + "eh_proj.weight", [D, 2 * D], "linear"), (p + "embed_tokens.weight", [V, D], "embed"),
                    (p + "shared_head.norm.weight", [D], "norm"), (p + "shared_head.head.weight", [V, D], "linear")]
    return out


def layer_specs(cfg, family, i):
    """The tensors of decoder layer i."""
    D = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg.get("num_key_value_heads") or H
    HD = cfg.get("head_dim") or D // H
    p = "model.layers.%d." % i
    out = [(p + "input_layernorm.weight", [D], "norm")]
    a = p + "self_attn."
    if family in MLA:
        nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        ql, kvl = cfg.get("q_lora_rank"), cfg["kv_lora_rank"]
        if ql:
            out += [(a + "q_a_proj.weight", [ql, D], "linear"), (a + "q_a_layernorm.weight", [ql], "norm"),
                    (a + "q_b_proj.weight", [H * (nope + rope), ql], "linear")]
        else:
            out.append((a + "q_proj.weight", [H * (nope + rope), D], "linear"))
        out += [(a + "kv_a_proj_with_mqa.weight", [kvl + rope, D], "linear"),
                (a + "kv_a_layernorm.weight", [kvl], "norm"),
                (a + "kv_b_proj.weight", [H * (nope + vd), kvl], "linear"),
                (a + "o_proj.weight", [D, H * vd], "linear")]
    else:
        bias = family in ("qwen2", "qwen2_moe", "gpt_oss") or (family == "glm4_moe" and cfg.get("attention_bias"))
        for n, rows in (("q", H * HD), ("k", KV * HD), ("v", KV * HD)):
            out.append((a + n + "_proj.weight", [rows, D], "linear"))
            if bias:
                out.append((a + n + "_proj.bias", [rows], "bias"))
        out.append((a + "o_proj.weight", [D, H * HD], "linear"))
        if family == "gpt_oss":
            out += [(a + "o_proj.bias", [D], "bias"), (a + "sinks", [H], "sink")]
        if family in ("qwen3", "qwen3_moe") or (family == "glm4_moe" and cfg.get("use_qk_norm")):
            out += [(a + "q_norm.weight", [HD], "norm"), (a + "k_norm.weight", [HD], "norm")]
        if family == "olmoe":
            out += [(a + "q_norm.weight", [H * HD], "norm"), (a + "k_norm.weight", [KV * HD], "norm")]
    out.append((p + "post_attention_layernorm.weight", [D], "norm"))
    out += ffn_specs(cfg, family, i, D)
    return out


def is_moe_layer(cfg, family, i):
    if family in ("mixtral", "granitemoe", "olmoe", "gpt_oss"):
        return True
    if family in ("qwen2_moe", "qwen3_moe", "qwen3_next"):
        return (i not in (cfg.get("mlp_only_layers") or []) and cfg.get("num_experts", 0) > 0
                and (i + 1) % (cfg.get("decoder_sparse_step") or 1) == 0)
    if family in GROUPED and i >= cfg["num_hidden_layers"]:
        return True  # a multi-token-prediction layer
    if family == "glm4_moe_lite" and cfg.get("mlp_layer_types"):
        return cfg["mlp_layer_types"][i] == "sparse"
    if family in ("glm4_moe", "glm4_moe_lite"):
        return i >= (cfg.get("first_k_dense_replace") or 0)
    if family in ("deepseek_v2", "deepseek_v3"):
        return (cfg.get("n_routed_experts") is not None and i >= (cfg.get("first_k_dense_replace") or 0)
                and i % (cfg.get("moe_layer_freq") or 1) == 0)
    return False


def mlp(prefix, F, D, names=("gate_proj", "up_proj", "down_proj")):
    return [(prefix + names[0] + ".weight", [F, D], "linear"), (prefix + names[1] + ".weight", [F, D], "linear"),
            (prefix + names[2] + ".weight", [D, F], "linear")]


def ffn_specs(cfg, family, i, D):
    p = "model.layers.%d." % i
    if not is_moe_layer(cfg, family, i):
        return mlp(p + "mlp.", cfg["intermediate_size"], D)
    sig = "router_sigmoid" if family in V3_ROUTER else "router"
    if family == "granitemoe":
        E, F = cfg["num_local_experts"], cfg["intermediate_size"]
        m = p + "block_sparse_moe."
        return [(m + "router.layer.weight", [E, D], "router"), (m + "input_linear.weight", [E, 2 * F, D], "linear"),
                (m + "output_linear.weight", [E, D, F], "linear")]
    if family == "gpt_oss":  # MXFP4 experts as published: [E, rows, cols/32, 16] codes + [E, rows, cols/32] scales
        E, F, m = cfg["num_local_experts"], cfg["intermediate_size"], p + "mlp."
        x = m + "experts."
        return [(m + "router.weight", [E, D], "router"), (m + "router.bias", [E], "bias"),
                (x + "gate_up_proj_blocks", [E, 2 * F, D // 32, 16], "mxfp4_blocks"),
                (x + "gate_up_proj_scales", [E, 2 * F, D // 32], "mxfp4_scales"),
                (x + "gate_up_proj_bias", [E, 2 * F], "bias"),
                (x + "down_proj_blocks", [E, D, F // 32, 16], "mxfp4_blocks"),
                (x + "down_proj_scales", [E, D, F // 32], "mxfp4_scales"), (x + "down_proj_bias", [E, D], "bias")]
    if family == "mixtral":
        E, F = cfg["num_local_experts"], cfg["intermediate_size"]
        m = p + "block_sparse_moe."
        out = [(m + "gate.weight", [E, D], "router")]
        for e in range(E):
            out += mlp(m + "experts.%d." % e, F, D, ("w1", "w3", "w2"))
        return out
    m = p + "mlp."
    E = cfg[n_experts_key(family)]
    F = cfg["intermediate_size"] if family == "olmoe" else cfg["moe_intermediate_size"]
    out = [(m + "gate.weight", [E, D], sig)]
    if family in V3_ROUTER:
        out.append((m + "gate.e_score_correction_bias", [E], "ebias"))
    for e in range(E):
        out += mlp(m + "experts.%d." % e, F, D)
    if family in ("qwen2_moe", "qwen3_next"):
        S = cfg.get("shared_expert_intermediate_size") or 0
        out += mlp(m + "shared_expert.", S, D)  # HF builds it even when S is 0 (a [0, D] weight)
        out.append((m + "shared_expert_gate.weight", [1, D], "linear"))
    if family in GROUPED and cfg.get("n_shared_experts"):
        out += mlp(m + "shared_experts.", cfg["n_shared_experts"] * cfg["moe_intermediate_size"], D)
    return out


# ---------------------------------------------------------------- values and encodings

ST_NAME = {"bf16": "BF16", "f16": "F16", "f32": "F32"}
ESIZE = st.DTYPE_SIZE
BIG = 1 << 20


def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def values(name, shape, kind, seed, std):
    rng = random.Random((seed * 1000003) ^ zlib.crc32(name.encode()))
    n = count(shape)
    if kind == "norm":
        return [1.0 + rng.gauss(0, 0.05) for _ in range(n)]
    if kind == "norm0":  # zero-centred RMSNorm weight (used as 1 + w)
        return [rng.gauss(0, 0.05) for _ in range(n)]
    if kind == "conv":  # Gated DeltaNet conv taps: large enough that a wrong tap order shows
        return [rng.gauss(0, 0.5) for _ in range(n)]
    if kind == "dt":  # dt_bias: HF initialises ones
        return [1.0 + rng.gauss(0, 0.3) for _ in range(n)]
    if kind == "a_log":  # A_log = log(A), A in (0.5, 8): decays between ~0.9 and ~0.001 per token
        return [math.log(rng.uniform(0.5, 8.0)) for _ in range(n)]
    if kind == "gate_logit":  # beta / alpha logits of order 1
        return [rng.gauss(0, 1.0 / shape[-1] ** 0.5) for _ in range(n)]
    if kind == "bias":
        return [rng.gauss(0, 0.05) for _ in range(n)]
    if kind == "ebias":
        return [rng.gauss(0, 0.15) for _ in range(n)]
    if kind == "sink":
        return [rng.gauss(0, 1.0) for _ in range(n)]
    if kind in ("router", "router_sigmoid"):
        s = (3.0 if kind == "router" else 1.5) / shape[-1] ** 0.5
        return [rng.gauss(0, s) for _ in range(n)]
    return [rng.gauss(0, std) for _ in range(n)]


def encode(vals, dtype):
    return st.from_floats(dtype, vals)  # bf16: truncated, the upper half of each f32


def _table(entries):
    return bytes(entries[b % len(entries)] for b in range(256))


# bf16 high bytes: sign | exponent 118..123 (|w| in [2^-9, 2^-4)); f16: exponents 6..11 with 2 mantissa bits
_BF16_HI = _table([0x3b, 0x3c, 0x3d, 0xbb, 0xbc, 0xbd])
_F16_HI = _table([(s << 7) | (e << 2) | m for s in (0, 1) for e in range(6, 12) for m in range(4)])


def fast_bytes(name, n, dtype, seed):
    rng = random.Random((seed * 1000003) ^ zlib.crc32(name.encode()))
    raw = bytearray(rng.randbytes(2 * n))
    if dtype == "F16":
        raw[1::2] = bytes(raw[1::2]).translate(_F16_HI)
        return bytes(raw)
    raw[1::2] = bytes(raw[1::2]).translate(_BF16_HI)
    if dtype == "BF16":
        return bytes(raw)
    out = bytearray(4 * n)
    out[2::4] = raw[0::2]
    out[3::4] = raw[1::2]
    return bytes(out)


def tensor_bytes(name, shape, kind, dtype, seed, std, fast=BIG):
    if kind.startswith("mxfp4"):
        rng = random.Random((seed * 1000003) ^ zlib.crc32(name.encode()))
        if kind == "mxfp4_blocks":
            return rng.randbytes(count(shape))
        return bytes(rng.randint(119, 122) for _ in range(count(shape)))
    if kind in ("norm", "norm0", "bias", "ebias", "conv", "dt", "a_log") or count(shape) <= fast or kind.startswith("router"):
        return encode(values(name, shape, kind, seed, std), dtype)
    return fast_bytes(name, count(shape), dtype, seed)


# ---------------------------------------------------------------- safetensors writer


def write_safetensors(path, specs, seed, std, fast=BIG):
    """specs: [(name, shape, kind, dtype)]; the header lists them in order, data follows."""
    return st.write(path, [(name, dtype, shape, lambda name=name, shape=shape, kind=kind, dtype=dtype:
                            tensor_bytes(name, shape, kind, dtype, seed, std, fast))
                           for name, shape, kind, dtype in specs])


def write_checkpoint(out, cfg, family, dtype="bf16", seed=0, std=0.05, shards=1, tokenizer=None, fast=BIG):
    """Write the folder; linear weights over `fast` elements use fast random bytes."""
    os.makedirs(out, exist_ok=True)
    for fn in os.listdir(out):
        if fn.endswith(".safetensors") or fn in ("model.safetensors.index.json", "tokenizer.json", "config.json"):
            os.remove(os.path.join(out, fn))
    cfg = dict(cfg)
    cfg["torch_dtype"] = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[dtype]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    st = ST_NAME[dtype]
    specs = []
    for name, shape, kind in tensor_specs(cfg, family):
        specs.append((name, shape, kind, "F32" if kind == "ebias" else "U8" if kind.startswith("mxfp4") else st))
    if shards <= 1:
        write_safetensors(os.path.join(out, "model.safetensors"), specs, seed, std, fast)
    else:
        total = sum(count(s[1]) * ESIZE[s[3]] for s in specs)
        groups, cur, acc = [], [], 0
        for s in specs:
            cur.append(s)
            acc += count(s[1]) * ESIZE[s[3]]
            if acc >= total * (len(groups) + 1) / shards and len(groups) < shards - 1:
                groups.append(cur)
                cur = []
        groups.append(cur)
        while len(groups) < shards:
            groups.append([])
        wm = {}
        for j, g in enumerate(groups):
            fn = "model-%05d-of-%05d.safetensors" % (j + 1, shards)
            write_safetensors(os.path.join(out, fn), g, seed, std, fast)
            for s in g:
                wm[s[0]] = fn
        with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)
    if tokenizer:
        shutil.copyfile(tokenizer, os.path.join(out, "tokenizer.json"))
    return cfg


def parse_set(items):
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit("make_synthetic.py: error: --set wants KEY=JSON, got %r" % it)
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def build_config(family=None, config=None, layers=None, experts=None, vocab=None, shrink=None, sets=None):
    if config:
        with open(config) as f:
            cfg = json.load(f)
        family = FAMILY_OF[cfg["architectures"][0]]
    else:
        cfg = family_config(family)
    adjust(cfg, family, layers, experts, vocab, shrink)
    cfg.update(sets or {})
    return cfg, family


def main(argv):
    ap = argparse.ArgumentParser(prog="make_synthetic.py", description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=sorted(ARCH_CLASS))
    ap.add_argument("--config", help="a published config.json to start from")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--experts", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--shrink", type=int, help="divide widths and head counts by this")
    ap.add_argument("--set", action="append", metavar="KEY=JSON", help="set a config.json field")
    ap.add_argument("--dtype", choices=("bf16", "f16", "f32"), default="bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, help="std of the linear weights (default 0.05, granitemoe 0.15)")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--tokenizer", help="a tokenizer.json to copy into the folder")
    ap.add_argument("--no-tokenizer", action="store_true", help="write no tokenizer.json (the default)")
    ap.add_argument("--fast", type=int, default=BIG,
                    help="linear weights with more elements than this use fast random bytes (default 2^20)")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args(argv)
    if bool(a.family) == bool(a.config):
        ap.error("give exactly one of --family and --config")
    if a.tokenizer and a.no_tokenizer:
        ap.error("--tokenizer and --no-tokenizer exclude each other")
    cfg, family = build_config(a.family, a.config, a.layers, a.experts, a.vocab, a.shrink, parse_set(a.set))
    std = a.std if a.std is not None else STD.get(family, 0.05)
    write_checkpoint(a.out, cfg, family, a.dtype, a.seed, std, a.shards, a.tokenizer, a.fast)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
