#!/usr/bin/env python3
"""convert.py - turn a published checkpoint into one flat .moe file (docs/FORMAT.md).

    python3 tools/convert.py SRC -o OUT [--dtype keep|f32] [--experts keep|bf16] [--type q8_0|q4_0|q4_k|q8_0_r16|q4_0_r16|q4_k_m|q5_k_m|q6_k|q3_k_m|q2_k [--calib TEXT]]
                             [--quiet]

SRC is one of
  - a Hugging Face model directory as published: config.json, model.safetensors or sharded
    model-0000X-of-0000N.safetensors (+ model.safetensors.index.json), tokenizer.json,
    tokenizer_config.json, generation_config.json;
  - a llama2.c checkpoint folder: a "version 0" .bin checkpoint and its tokenizer .bin;
  - a tokenizer alone (a folder with tokenizer.json but no weights, a tokenizer.json, a GGUF
    file or a llama2.c tokenizer .bin): the output is a tokenizer-only file.

Python standard library only. Weights are copied as stored (bf16/f16/f32), tensor by tensor,
straight from the safetensors files into the output: no per-element arithmetic except
widening 1-D tensors (norms, biases) to f32, which the format requires, and `--dtype f32`;
for Qwen3-Next / Qwen3.5 also storing zero-centred norm weights as 1 + w and A_log as -exp(A_log)
(small vectors, computed in float64; docs/FORMAT.md "ssm.*"). Rows may be reordered (Qwen3-Next's
fused DeltaNet projections).
Everything that is not understood is refused with one line and exit status 1: an unknown
architecture, an unknown routing or RoPE option, a missing, extra or mis-shaped tensor.
"""

import argparse
import collections
import glob
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import moefile  # noqa: E402
import safetensors_io as st  # noqa: E402
import tokenizer_convert  # noqa: E402


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------- safetensors (tools/safetensors_io.py)

# safetensors dtype -> the .moe dtype it is stored as (U8: gpt-oss's MXFP4 expert blocks and scales,
# read by plan_gpt_oss_moe only)
MOE_DTYPE = {"F32": moefile.F32, "F16": moefile.F16, "BF16": moefile.BF16, "U8": moefile.U8}
CHUNK = st.CHUNK


def load_weights(src):
    """All tensors of a HF directory: sharded (index.json) or single-file, every header checked."""
    try:
        return st.read_folder(src)
    except st.SafetensorsError as e:
        raise ConvertError(str(e))


def read_json(path):
    try:
        return st.read_json(path)
    except st.SafetensorsError as e:
        raise ConvertError(str(e))


def to_f32(dtype, b):
    """F32/F16/BF16 bytes widened to F32 (byte shuffles, exact)."""
    return st.to_f32(dtype, b)


# ---------------------------------------------------------------- the conversion plan

class Plan:
    """The output tensors, each with its expected shape and how to produce its bytes.
    Every HF tensor that is taken is remembered, so leftovers can be refused."""

    def __init__(self, tensors, widen, experts_bf16=False):
        self.hf, self.widen = tensors, widen
        self.experts_bf16 = experts_bf16  # gpt-oss: MXFP4 experts dequantized to BF16 (--experts bf16)
        self.used = set()
        self.out = []  # (name, dtype, shape, source)

    def get(self, name, shape, raw=False):
        t = self.hf.get(name)
        if t is None:
            raise ConvertError("missing tensor %s" % name)
        if t.shape != list(shape):
            raise ConvertError("%s: shape %s, expected %s" % (name, t.shape, list(shape)))
        if t.dtype == "U8" and not raw:
            raise ConvertError("%s: dtype U8 where a float tensor is expected" % name)
        self.used.add(name)
        return t

    def has(self, name):
        return name in self.hf

    def _dtype(self, parts):
        kinds = {MOE_DTYPE[t.dtype] for t in parts}
        return kinds.pop() if len(kinds) == 1 and not self.widen else moefile.F32

    def _emit(self, name, dtype, shape, pieces):
        """pieces: list of (tensor, offset, size) byte ranges, written in order."""
        def source():
            for t, off, size in pieces:
                if MOE_DTYPE[t.dtype] == dtype:
                    done = 0
                    while done < size:
                        n = min(CHUNK, size - done)
                        yield t.read(off + done, n)
                        done += n
                else:
                    esz = 4 if t.dtype == "F32" else 2
                    step = CHUNK // 4 * esz
                    done = 0
                    while done < size:
                        n = min(step, size - done)
                        yield to_f32(t.dtype, t.read(off + done, n))
                        done += n
        self.out.append((name, dtype, list(shape), source))

    def copy(self, name, hf, shape):
        t = self.get(hf, shape)
        dtype = moefile.F32 if len(shape) == 1 else self._dtype([t])
        self._emit(name, dtype, shape, [(t, 0, t.nbytes)])

    def stack(self, name, hfs, shape):
        """Experts stored one tensor each, stacked into [n, out, in]."""
        ts = [self.get(h, shape) for h in hfs]
        self._emit(name, self._dtype(ts), [len(ts)] + list(shape), [(t, 0, t.nbytes) for t in ts])

    def slice_rows(self, name, hf, full, lo, hi):
        """Rows lo..hi-1 of every expert of a stacked [E, R, C] tensor (Granite input_linear)."""
        t = self.get(hf, full)
        e, _, c = full
        esz = t.nbytes // (full[0] * full[1] * full[2])
        rowb = c * esz
        pieces = [(t, (i * full[1] + lo) * rowb, (hi - lo) * rowb) for i in range(e)]
        self._emit(name, self._dtype([t]), [e, hi - lo, c], pieces)

    def mla_kv_b(self, layer, hf, n_heads, nope, v_dim, kv_lora):
        """kv_b_proj [n_heads*(nope+v), kv_lora] -> attn_k_b [n_heads, kv_lora, nope] (each head's
        key rows transposed, to be absorbed into the query) and attn_v_b [n_heads, v, kv_lora]."""
        t = self.get(hf, [n_heads * (nope + v_dim), kv_lora])
        dtype = self._dtype([t])
        esz = t.nbytes // (n_heads * (nope + v_dim) * kv_lora)
        head_rows = nope + v_dim

        def k_b():
            for h in range(n_heads):
                block = t.read(h * head_rows * kv_lora * esz, nope * kv_lora * esz)
                if MOE_DTYPE[t.dtype] != dtype:
                    block = to_f32(t.dtype, block)
                w = 4 if dtype == moefile.F32 else 2
                out = bytearray(len(block))
                # block is [nope, kv_lora]; out is [kv_lora, nope]: out[c, r] = block[r, c]
                for byte in range(w):
                    for c in range(kv_lora):
                        out[(c * nope) * w + byte:(c * nope + nope) * w + byte:w] = block[c * w + byte::kv_lora * w]
                yield bytes(out)

        self.out.append(("blk.%d.attn_k_b" % layer, dtype, [n_heads, kv_lora, nope], k_b))
        pieces = [(t, (h * head_rows + nope) * kv_lora * esz, v_dim * kv_lora * esz) for h in range(n_heads)]
        self._emit("blk.%d.attn_v_b" % layer, dtype, [n_heads, v_dim, kv_lora], pieces)

    def rows(self, name, hf, full, ranges):
        """Rows of a 2-D [R, C] tensor, as (first, count) ranges in output order (a row permutation)."""
        t = self.get(hf, full)
        rowb = t.nbytes // full[0]
        self._emit(name, self._dtype([t]), [sum(n for _, n in ranges), full[1]],
                   [(t, r * rowb, n * rowb) for r, n in ranges])

    def f32_map(self, name, hf, shape, out_shape, fn):
        """A small tensor widened to F32 with fn applied to each value in float64 (norm offsets, -exp(A_log))."""
        t = self.get(hf, shape)

        def source():
            raw = to_f32(t.dtype, t.read())
            vals = struct.unpack("<%df" % (len(raw) // 4), raw)
            yield struct.pack("<%df" % len(vals), *(fn(v) for v in vals))
        self.out.append((name, moefile.F32, list(out_shape), source))

    def leftovers(self, ignore=lambda n: False):
        extra = sorted(n for n in self.hf if n not in self.used and not ignore(n))
        if extra:
            more = " (and %d more)" % (len(extra) - 1) if len(extra) > 1 else ""
            raise ConvertError("unexpected tensor %s%s: the converter does not know what it is" % (extra[0], more))


# ---------------------------------------------------------------- config.json -> metadata

ARCHS = {
    "GptOssForCausalLM": "gpt_oss", "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "MixtralForCausalLM": "mixtral", "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe", "OlmoeForCausalLM": "olmoe", "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3", "GraniteMoeForCausalLM": "granitemoe",
    "Glm4MoeForCausalLM": "glm4_moe",
    # GLM-4.7-Flash: modeling_glm4_moe_lite.py is DeepSeek-V3's MLA attention with GLM-4.5's router
    # (= DeepSeek-V3's noaux_tc router), so it converts as deepseek_v3
    "Glm4MoeLiteForCausalLM": "deepseek_v3",
    "Qwen3_5MoeForConditionalGeneration": "qwen3_5_moe", "Qwen3NextForCausalLM": "qwen3_next",
}


class Config:
    """config.json with typed, checked access."""

    def __init__(self, d, path):
        self.d, self.path = d, path

    def has(self, key):
        return self.d.get(key) is not None

    def get(self, key, default=None, kind=None):
        v = self.d.get(key)
        if v is None:
            if default is None:
                raise ConvertError("%s: %s is missing" % (self.path, key))
            return default
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            raise ConvertError("%s: %s = %r is not an integer" % (self.path, key, v))
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConvertError("%s: %s = %r is not a number" % (self.path, key, v))
        if kind is float and not math.isfinite(v):  # Python's json reads NaN and Infinity
            raise ConvertError("%s: %s = %r is not a finite number" % (self.path, key, v))
        if kind is bool and not isinstance(v, bool):
            raise ConvertError("%s: %s = %r is not true/false" % (self.path, key, v))
        return float(v) if kind is float else v

    def int(self, key, default=None):
        v = self.get(key, default, int)
        if v < 0:
            raise ConvertError("%s: %s = %d is negative" % (self.path, key, v))
        return v

    def float(self, key, default=None):
        return self.get(key, default, float)

    def flag(self, key, default=False):
        return self.get(key, default, bool)

    def refuse(self, key, why):
        raise ConvertError("%s: %s = %s is not supported (%s)" % (self.path, key, json.dumps(self.d.get(key)), why))


def yarn_get_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_kv(cfg, kv, deepseek):
    """RoPE scaling per HF: `none`, `linear`, `yarn` (DeepSeek's or the generic one), `llama3`.
    Returns the YaRN mscale² factor DeepSeek applies to its softmax scale (1 otherwise)."""
    kv["rope.theta"] = cfg.float("rope_theta", 10000.0)
    rs = cfg.d.get("rope_scaling")
    if rs is None:
        return 1.0
    if not isinstance(rs, dict):
        cfg.refuse("rope_scaling", "not an object")
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return 1.0
    known = {"linear": {"factor"}, "llama3": {"factor", "low_freq_factor", "high_freq_factor",
                                              "original_max_position_embeddings"},
             "yarn": {"factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale",
                      "mscale_all_dim", "attention_factor", "truncate"}}
    if kind not in known:
        cfg.refuse("rope_scaling", "RoPE scaling %r; moe knows linear, yarn and llama3" % kind)
    unknown = set(rs) - known[kind] - {"type", "rope_type"}
    if unknown:
        cfg.refuse("rope_scaling", "unknown field %s" % sorted(unknown)[0])
    sub = Config(rs, cfg.path + " rope_scaling")
    factor = sub.float("factor")
    if factor <= 0:
        cfg.refuse("rope_scaling", "factor must be positive")
    kv["rope.scaling"], kv["rope.factor"] = kind, factor
    if kind == "linear":
        return 1.0
    kv["rope.orig_ctx"] = sub.int("original_max_position_embeddings", cfg.int("max_position_embeddings"))
    if kind == "llama3":
        kv["rope.low_freq_factor"] = sub.float("low_freq_factor")
        kv["rope.high_freq_factor"] = sub.float("high_freq_factor")
        return 1.0
    kv["rope.beta_fast"] = sub.float("beta_fast", 32.0)
    kv["rope.beta_slow"] = sub.float("beta_slow", 1.0)
    if not sub.flag("truncate", True):  # HF: ramp bounds kept fractional (gpt-oss); absent = floor/ceil
        kv["rope.yarn_truncate"] = 0
    mscale, mscale_all = sub.float("mscale", 1.0 if deepseek else 0.0), sub.float("mscale_all_dim", 0.0)
    if sub.has("attention_factor"):
        kv["rope.attn_factor"] = sub.float("attention_factor")
    elif deepseek or (mscale and mscale_all):
        kv["rope.attn_factor"] = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all)
    else:
        kv["rope.attn_factor"] = yarn_get_mscale(factor)
    if deepseek and mscale_all:
        m = yarn_get_mscale(factor, mscale_all)
        return m * m
    return 1.0


def common_kv(cfg, arch):
    dim, n_heads = cfg.int("hidden_size"), cfg.int("num_attention_heads")
    if n_heads == 0 or dim % n_heads and not cfg.has("head_dim"):
        cfg.refuse("num_attention_heads", "hidden_size is not a multiple of it")
    kv = {
        "general.arch": arch,
        "model.vocab_size": cfg.int("vocab_size"),
        "model.dim": dim,
        "model.n_layers": cfg.int("num_hidden_layers"),
        "model.n_heads": n_heads,
        "model.n_kv_heads": cfg.int("num_key_value_heads", n_heads),
        "model.head_dim": cfg.int("head_dim", dim // n_heads),
        "model.max_ctx": cfg.int("max_position_embeddings"),
        "model.norm_eps": cfg.float("rms_norm_eps", 1e-6),
        "model.tied_embd": int(cfg.flag("tie_word_embeddings", False)),
    }
    if cfg.get("hidden_act", "silu") != "silu":
        cfg.refuse("hidden_act", "moe's experts are SwiGLU")
    if cfg.flag("attention_bias", False) and not FAMILIES[arch].attn_bias:
        cfg.refuse("attention_bias", "no bias on the attention output projection")
    if cfg.flag("use_sliding_window", False):
        cfg.refuse("use_sliding_window", "per-layer sliding windows are not implemented")
    if cfg.flag("mlp_bias", False):
        cfg.refuse("mlp_bias", "experts have no biases")
    return kv


def qwen_moe_layers(cfg, n_layers):
    only = cfg.get("mlp_only_layers", [])
    step = cfg.int("decoder_sparse_step", 1)
    if not isinstance(only, list) or step < 1:
        cfg.refuse("decoder_sparse_step", "bad layer pattern")
    n_exp = cfg.int("num_experts", 0)
    return [int(i not in only and n_exp > 0 and (i + 1) % step == 0) for i in range(n_layers)]


def mixtral_experts(cfg, kv, L):
    """Mixtral, GraniteMoE: every FFN a mixture; top-k of the router logits then a softmax over
    those k == softmax, top-k, renormalise."""
    kv.update({"moe.n_experts": cfg.int("num_local_experts"), "moe.n_active": cfg.int("num_experts_per_tok"),
               "moe.ff_dim": kv["model.ff_dim"], "moe.norm_topk": 1, "moe.layers": [1] * L})
    kv["model.ff_dim"] = 0


def qwen_experts(cfg, kv, L):
    """Qwen2-MoE, Qwen3-MoE: softmax, top-k, norm_topk_prob; dense layers by decoder_sparse_step
    and mlp_only_layers."""
    kv.update({"moe.n_experts": cfg.int("num_experts"), "moe.n_active": cfg.int("num_experts_per_tok"),
               "moe.ff_dim": cfg.int("moe_intermediate_size"), "moe.norm_topk": int(cfg.flag("norm_topk_prob", False))})
    kv["moe.layers"] = qwen_moe_layers(cfg, L)


def qwen2_moe_experts(cfg, kv, L):
    """Qwen2-MoE: Qwen3-MoE's experts plus a shared expert behind a sigmoid gate."""
    qwen_experts(cfg, kv, L)
    kv["moe.shared_ff"] = cfg.int("shared_expert_intermediate_size", 0)
    kv["moe.shared_gate"] = int(kv["moe.shared_ff"] > 0)


def olmoe_experts(cfg, kv, L):
    """OLMoE: every FFN a mixture (softmax, top-k, norm_topk_prob); q and k normed over their
    full width, clip_qkv."""
    kv.update({"moe.n_experts": cfg.int("num_experts"), "moe.n_active": cfg.int("num_experts_per_tok"),
               "moe.ff_dim": cfg.int("moe_intermediate_size", kv["model.ff_dim"]),
               "moe.norm_topk": int(cfg.flag("norm_topk_prob", False)), "moe.layers": [1] * L})
    kv["model.ff_dim"] = 0
    kv["attn.qk_norm"] = "full"
    if cfg.has("clip_qkv"):
        kv["attn.clip_qkv"] = cfg.float("clip_qkv")


def granite_kv(cfg, kv, mscale2):
    kv["model.embd_scale"] = cfg.float("embedding_multiplier", 1.0)
    kv["model.residual_scale"] = cfg.float("residual_multiplier", 1.0)
    kv["attn.scale"] = cfg.float("attention_multiplier", 1.0)
    kv["model.logit_scale"] = 1.0 / cfg.float("logits_scaling", 1.0)


def one_plus(v):
    """A zero-centred RMSNorm weight (HF computes x * (1 + w)), stored as the weight used."""
    return 1.0 + v


# Where a family's HF checkpoint keeps its tensors (plan_hf walks this; docs in the field comments):
#   prefix      the decoder (embed_tokens, layers.N., norm) lives under it
#   norm        None: RMSNorm weights are copied; else a function of each value (zero-centred norms)
#   layer       a layer's parts in file order (LAYER_PARTS)
#   moe         the MoE block under each layer; router: its router weight under the block
#   each        per-expert (gate, up, down) names under experts.N. (stacked into [E, ...])
#   fused       (gate_up [E, 2F, D], down [E, D, F]) under the block: used when present, or always if no `each`
#   mxfp4       gpt-oss: experts as MXFP4 blocks and scales, router with a bias (plan_gpt_oss_moe)
#   shared      the shared expert under the block; shared_zero: a width-0 shared expert is stored (and dropped)
#   skip        tensor name prefixes that are not the text decoder (vision tower, MTP layers): left out
#   text_config the decoder's config is config.json's text_config (a vision-language wrapper)
HfNames = collections.namedtuple(
    "HfNames", "prefix norm layer moe router each fused mxfp4 shared shared_zero skip text_config",
    defaults=("model.", None, ("attn_norm", "attn", "ffn_norm", "ffn"), "mlp.", "gate.weight",
              ("gate_proj", "up_proj", "down_proj"), None, False, "shared_experts.", False, (), False))
HF = HfNames()
# Qwen3-Next / Qwen3.5: zero-centred norms, both norms of a layer before its mixer, experts fused
# (Qwen3.5) or one tensor each (Qwen3-Next), a sigmoid-gated shared expert; not run for text: the
# vision tower (Qwen3.5) and the MTP draft layer(s) under mtp.
HF_HYBRID = HF._replace(norm=one_plus, layer=("attn_norm", "ffn_norm", "attn", "ffn"),
                        fused=("experts.gate_up_proj", "experts.down_proj"), shared="shared_expert.", skip=("model.visual.", "mtp."))

# What each family adds to the common metadata, as its HF modeling code does (config.c's table is
# the engine's side): attention bias allowed on q/k/v(/o), q/k/v bias, per-head QK-norm, DeepSeek's
# RoPE (interleaved pairs, mscale), how its experts are set up, a function for the rest, and where
# its checkpoint keeps the tensors (HfNames).
Family = collections.namedtuple("Family", "attn_bias qkv_bias qk_norm deepseek_rope experts extra hf",
                                defaults=(False, False, None, False, None, None, HF))
FAMILIES = {
    "llama": Family(),
    "qwen2": Family(attn_bias=True, qkv_bias=True),
    "qwen3": Family(qk_norm="head"),
    "mixtral": Family(experts=mixtral_experts, hf=HF._replace(moe="block_sparse_moe.", each=("w1", "w3", "w2"))),
    "granitemoe": Family(experts=mixtral_experts, extra=granite_kv,
                         hf=HF._replace(moe="block_sparse_moe.", router="router.layer.weight", each=None,
                                        fused=("input_linear.weight", "output_linear.weight"))),
    "qwen2_moe": Family(attn_bias=True, qkv_bias=True, experts=qwen2_moe_experts,
                        hf=HF._replace(shared="shared_expert.", shared_zero=True)),
    "qwen3_moe": Family(qk_norm="head", experts=qwen_experts),
    "olmoe": Family(experts=olmoe_experts),
    "deepseek_v2": Family(deepseek_rope=True, extra=lambda cfg, kv, m2: deepseek_kv(cfg, kv, m2, deepseek_v2_router)),
    "deepseek_v3": Family(deepseek_rope=True, extra=lambda cfg, kv, m2: deepseek_kv(cfg, kv, m2, deepseek_v3_router)),
    "glm4_moe": Family(attn_bias=True, extra=lambda cfg, kv, m2: glm4_moe_kv(cfg, kv)),
    "gpt_oss": Family(attn_bias=True, extra=lambda cfg, kv, m2: gpt_oss_kv(cfg, kv),
                      hf=HF._replace(each=None, mxfp4=True)),
    # Qwen3.5-MoE always renormalises the top-k weights (its config has no norm_topk_prob)
    "qwen3_5_moe": Family(extra=lambda cfg, kv, m2: qwen3_next_kv(cfg, kv, always_renorm=True),
                          hf=HF_HYBRID._replace(prefix="model.language_model.", text_config=True)),
    "qwen3_next": Family(extra=lambda cfg, kv, m2: qwen3_next_kv(cfg, kv), hf=HF_HYBRID),
}


def family_kv(cfg, arch):
    """The model, attention, RoPE and routing metadata of one family, per its HF code."""
    fam = FAMILIES[arch]
    kv = common_kv(cfg, arch)
    L = kv["model.n_layers"]
    kv["attn.scale"] = kv["model.head_dim"] ** -0.5
    kv["model.ff_dim"] = cfg.int("intermediate_size", 0)
    kv["moe.n_experts"] = 0
    mscale2 = rope_kv(cfg, kv, fam.deepseek_rope)
    if fam.qkv_bias:
        kv["attn.qkv_bias"] = 1
    if fam.qk_norm:
        kv["attn.qk_norm"] = fam.qk_norm
    # Mistral and Mixtral attend within sliding_window; HF's Llama ignores the field if present
    if cfg.d.get("architectures") in (["MistralForCausalLM"], ["MixtralForCausalLM"]) and cfg.has("sliding_window"):
        kv["attn.window"] = cfg.int("sliding_window")
    if fam.experts:
        fam.experts(cfg, kv, L)
    if fam.extra:
        fam.extra(cfg, kv, mscale2)
    if kv["moe.n_experts"]:
        if not 0 < kv["moe.n_active"] <= kv["moe.n_experts"]:
            cfg.refuse("num_experts_per_tok", "must be between 1 and the number of experts")
        if not any(kv["moe.layers"]):
            kv["moe.n_experts"] = 0
    if kv["moe.n_experts"] == 0:
        for k in [k for k in kv if k.startswith("moe.")]:
            del kv[k]
        kv["moe.n_experts"] = 0
        kv["model.ff_dim"] = cfg.int("intermediate_size")
    elif all(kv["moe.layers"]):
        kv["model.ff_dim"] = 0  # no dense layer
    return kv


def gpt_oss_kv(cfg, kv):
    """modeling_gpt_oss.py: GptOssAttention (q/k/v/o biases, sinks, sliding_window on the layers
    layer_types names), GptOssTopKRouter (Linear with bias, top-k of the logits, softmax over
    those k), GptOssExperts (biases, clamped SwiGLU with alpha 1.702 and (up + 1))."""
    L = kv["model.n_layers"]
    if not cfg.flag("attention_bias", True):
        cfg.refuse("attention_bias", "gpt-oss attention has biases")
    types = cfg.get("layer_types", ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(L)])
    if (not isinstance(types, list) or len(types) != L
            or any(t not in ("sliding_attention", "full_attention") for t in types)):
        cfg.refuse("layer_types", "one of sliding_attention/full_attention per layer")
    k, E = cfg.int("num_experts_per_tok"), cfg.int("num_local_experts")
    if cfg.has("experts_per_token") and cfg.int("experts_per_token") != k:
        cfg.refuse("experts_per_token", "differs from num_experts_per_tok, which HF reads")
    qc = cfg.d.get("quantization_config")
    if not isinstance(qc, dict) or qc.get("quant_method") != "mxfp4":
        cfg.refuse("quantization_config", "moe reads gpt-oss with its experts in MXFP4, as published")
    kv.update({"attn.qkv_bias": 1, "attn.o_bias": 1, "attn.sinks": 1,
               "moe.n_experts": E, "moe.n_active": k, "moe.ff_dim": cfg.int("intermediate_size"),
               "moe.norm_topk": 1, "moe.layers": [1] * L, "moe.router_bias": 1, "moe.expert_bias": 1,
               "moe.act": "swiglu_oai", "moe.act_limit": cfg.float("swiglu_limit"), "moe.act_alpha": 1.702})
    if "sliding_attention" in types:
        kv["attn.window"] = cfg.int("sliding_window")
        kv["attn.window_layers"] = [int(t == "sliding_attention") for t in types]
    kv["model.ff_dim"] = 0


def qwen3_next_kv(cfg, kv, always_renorm=False):
    """Qwen3-Next / Qwen3.5-MoE (modeling_qwen3_next.py, modular_qwen3_5_moe.py): per layer a Gated DeltaNet
    or a gated attention (q_proj doubled, sigmoid output gate, per-head QK-norm, partial RoPE); MoE with a
    sigmoid-gated shared expert. Every RMSNorm but the DeltaNet's gated one is zero-centred, x·(1 + w):
    the converter stores 1 + w (HfNames.norm), so the engine's RMSNorm is the plain one."""
    L, HD = kv["model.n_layers"], kv["model.head_dim"]
    types = cfg.get("layer_types", [])
    if not types:  # Qwen3NextConfig's default: every interval-th layer is full attention
        n = cfg.int("full_attention_interval", 4)
        if n < 1:
            cfg.refuse("full_attention_interval", "must be at least 1")
        types = ["full_attention" if (i + 1) % n == 0 else "linear_attention" for i in range(L)]
    if not isinstance(types, list) or len(types) != L or not set(types) <= {"linear_attention", "full_attention"}:
        cfg.refuse("layer_types", "expected num_hidden_layers entries of linear_attention / full_attention")
    kv["ssm.layers"] = [int(t == "linear_attention") for t in types]
    kv.update({"ssm.conv_kernel": cfg.int("linear_conv_kernel_dim"), "ssm.n_k_heads": cfg.int("linear_num_key_heads"),
               "ssm.n_v_heads": cfg.int("linear_num_value_heads"), "ssm.k_dim": cfg.int("linear_key_head_dim"),
               "ssm.v_dim": cfg.int("linear_value_head_dim")})
    if not 1 <= kv["ssm.conv_kernel"] <= 64:
        cfg.refuse("linear_conv_kernel_dim", "must be in 1..64")
    if kv["ssm.n_k_heads"] < 1 or kv["ssm.n_v_heads"] % kv["ssm.n_k_heads"]:
        cfg.refuse("linear_num_value_heads", "must be a multiple of linear_num_key_heads")
    if cfg.d.get("mamba_ssm_dtype", "float32") != "float32":
        cfg.refuse("mamba_ssm_dtype", "the recurrent state is kept in float32")
    if not cfg.flag("attn_output_gate", True):
        cfg.refuse("attn_output_gate", "Qwen3-Next attention always has its output gate here")
    kv["attn.out_gate"] = 1
    kv["attn.qk_norm"] = "head"
    # RoPE: Qwen3.5 nests it in rope_parameters (with multimodal sections that reduce to plain RoPE for
    # text: all three position rows are equal); Qwen3-Next has rope_theta and partial_rotary_factor on top
    rp = cfg.d.get("rope_parameters")
    if rp is not None:
        if not isinstance(rp, dict):
            cfg.refuse("rope_parameters", "not an object")
        sub = Config(rp, cfg.path + " rope_parameters")
        if rp.get("rope_type", "default") != "default":
            cfg.refuse("rope_parameters", "only the default RoPE is implemented for this family")
        unknown = set(rp) - {"rope_type", "rope_theta", "partial_rotary_factor", "mrope_section", "mrope_interleaved"}
        if unknown:
            cfg.refuse("rope_parameters", "unknown field %s" % sorted(unknown)[0])
        kv["rope.theta"] = sub.float("rope_theta")
        prf = sub.float("partial_rotary_factor", cfg.float("partial_rotary_factor", 1.0))
    else:
        prf = cfg.float("partial_rotary_factor", 1.0)
    rot = int(HD * prf)
    if not 0 < rot <= HD or rot % 2:
        cfg.refuse("partial_rotary_factor", "head_dim x factor must be an even number of dims")
    kv["rope.dim"] = rot
    kv["moe.n_experts"] = cfg.int("num_experts", 0)
    if kv["moe.n_experts"]:
        kv.update({"moe.n_active": cfg.int("num_experts_per_tok"), "moe.ff_dim": cfg.int("moe_intermediate_size"),
                   "moe.norm_topk": 1 if always_renorm else int(cfg.flag("norm_topk_prob", True)),
                   "moe.layers": qwen_moe_layers(cfg, L),
                   "moe.shared_ff": cfg.int("shared_expert_intermediate_size", 0)})
        kv["moe.shared_gate"] = int(kv["moe.shared_ff"] > 0)


def deepseek_kv(cfg, kv, mscale2, router):
    """MLA and DeepSeekMoE (modeling_deepseek.py: DeepseekV2Attention, MoEGate); router: the
    family's gate (deepseek_v2_router, deepseek_v3_router)."""
    L = kv["model.n_layers"]
    nope, rope, v_dim = cfg.int("qk_nope_head_dim"), cfg.int("qk_rope_head_dim"), cfg.int("v_head_dim")
    kv.update({"attn.type": "mla", "model.n_kv_heads": kv["model.n_heads"], "model.head_dim": nope + rope,
               "mla.q_lora": cfg.int("q_lora_rank", 0), "mla.kv_lora": cfg.int("kv_lora_rank"),
               "mla.nope_dim": nope, "mla.rope_dim": rope, "mla.v_dim": v_dim, "rope.dim": rope,
               # the reference de-interleaves the rope dims before rotate_half: adjacent pairs rotate
               "rope.layout": "pair" if cfg.flag("rope_interleave", True) else "half"})
    kv["attn.scale"] = (nope + rope) ** -0.5 * mscale2
    n_exp = cfg.int("n_routed_experts", 0)
    first, freq = cfg.int("first_k_dense_replace", 0), cfg.int("moe_layer_freq", 1)
    if freq < 1:
        cfg.refuse("moe_layer_freq", "must be at least 1")
    layers = [int(n_exp > 0 and i >= first and i % freq == 0) for i in range(L)]
    lite = cfg.d.get("architectures") == ["Glm4MoeLiteForCausalLM"]
    if lite:
        glm4_lite_check(cfg, kv)
        layers = glm4_lite_layers(cfg, L, n_exp)
    k = cfg.int("num_experts_per_tok", 0) if n_exp else 0
    # GLM-4.7-Flash's config names no scoring_func: its router (Glm4MoeTopkRouter) is always sigmoid
    score = cfg.get("scoring_func", "sigmoid" if lite else "softmax")
    n_group, topk_group = cfg.int("n_group", 1), cfg.int("topk_group", 1)
    norm, rsf = cfg.flag("norm_topk_prob", False), cfg.float("routed_scaling_factor", 1.0)
    kv.update({"moe.n_experts": n_exp, "moe.n_active": k, "moe.ff_dim": cfg.int("moe_intermediate_size", 0),
               "moe.layers": layers, "moe.shared_ff": cfg.int("n_shared_experts", 0) * cfg.int("moe_intermediate_size", 0)})
    groups = router(cfg, kv, k, score, norm, rsf)
    if groups and n_exp:
        if n_group < 1 or n_exp % n_group or not 1 <= topk_group <= n_group:
            cfg.refuse("n_group", "n_routed_experts must split into n_group groups, 1 <= topk_group <= n_group")
        if kv["moe.group_score"] == "top2sum" and n_exp // n_group < 2 and n_group > 1:
            cfg.refuse("n_group", "noaux_tc scores a group by its two best experts")
        kv["moe.n_groups"], kv["moe.groups_active"] = n_group, topk_group
    if n_exp and not all(layers) and kv["model.ff_dim"] == 0:
        cfg.refuse("intermediate_size", "the dense layers need it")


def deepseek_v2_router(cfg, kv, k, score, norm, rsf):
    """DeepSeek-V2's MoEGate: softmax; greedy or group_limited_greedy (groups scored by their best
    expert); renormalise when k > 1 and norm_topk_prob, else scale by routed_scaling_factor.
    Returns whether experts are chosen in groups."""
    method = cfg.get("topk_method", "greedy")
    if score != "softmax":
        cfg.refuse("scoring_func", "DeepSeek-V2 scores with softmax")
    if method not in ("greedy", "group_limited_greedy"):
        cfg.refuse("topk_method", "DeepSeek-V2 knows greedy and group_limited_greedy")
    renorm = k > 1 and norm
    kv.update({"moe.score": "softmax", "moe.norm_topk": int(renorm), "moe.scale": 1.0 if renorm else rsf,
               "moe.group_score": "max"})
    return method == "group_limited_greedy"


def deepseek_v3_router(cfg, kv, k, score, norm, rsf):
    """DeepSeek-V3's noaux_tc: choose on sigmoid + e_score_correction_bias (groups scored by their
    two best), weigh with the plain sigmoid, norm_topk_prob, x routed_scaling_factor."""
    method = cfg.get("topk_method", "noaux_tc")
    if score != "sigmoid":
        cfg.refuse("scoring_func", "DeepSeek-V3 scores with sigmoid")
    if method != "noaux_tc":
        cfg.refuse("topk_method", "DeepSeek-V3 knows noaux_tc")
    kv.update({"moe.score": "sigmoid", "moe.norm_topk": int(norm), "moe.scale": rsf, "moe.bias": 1,
               "moe.group_score": "top2sum"})
    return True


def glm_rope_parameters(cfg, kv):
    """transformers 5 writes GLM configs with the RoPE settings nested in rope_parameters
    (rope_theta, rope_type, partial_rotary_factor) instead of top-level keys: read them rather
    than fall back to a default theta. Returns partial_rotary_factor."""
    rp = cfg.d.get("rope_parameters")
    if rp is None:
        return cfg.float("partial_rotary_factor", 1.0)
    if not isinstance(rp, dict):
        cfg.refuse("rope_parameters", "not an object")
    unknown = set(rp) - {"rope_type", "rope_theta", "partial_rotary_factor"}
    if unknown or rp.get("rope_type", "default") != "default" or cfg.d.get("rope_scaling"):
        cfg.refuse("rope_parameters", "only the default RoPE with rope_theta and partial_rotary_factor is read here")
    sub = Config(rp, cfg.path + " rope_parameters")
    kv["rope.theta"] = sub.float("rope_theta", cfg.float("rope_theta", 10000.0))
    return sub.float("partial_rotary_factor", cfg.float("partial_rotary_factor", 1.0))


def glm4_lite_check(cfg, kv):
    """GLM-4.7-Flash (modeling_glm4_moe_lite.py): its rotary embedding is GLM-4.5's, over
    qk_rope_head_dim x partial_rotary_factor dims; the published configs rotate all of them."""
    if glm_rope_parameters(cfg, kv) != 1.0:
        cfg.refuse("partial_rotary_factor", "MLA's rope key is rotated whole")
    if cfg.flag("attention_bias", False):
        cfg.refuse("attention_bias", "MLA projections have no biases")


def glm4_lite_layers(cfg, L, n_exp):
    """Which layers are MoE: mlp_layer_types ("dense"/"sparse") where given (the HF config's own
    field; its default is one dense layer, then sparse), else the published first_k_dense_replace."""
    types = cfg.d.get("mlp_layer_types")
    if types is None:
        first = cfg.int("first_k_dense_replace", 1)
        return [int(n_exp > 0 and i >= first) for i in range(L)]
    if not isinstance(types, list) or len(types) != L or any(t not in ("dense", "sparse") for t in types):
        cfg.refuse("mlp_layer_types", "expected one \"dense\" or \"sparse\" per layer")
    return [int(n_exp > 0 and t == "sparse") for t in types]


def glm4_moe_kv(cfg, kv):
    """GLM-4.5 / 4.6 (modeling_glm4_moe.py): GQA with q/k/v biases (attention_bias; o_proj has
    none), per-head QK-norm when use_qk_norm, NeoX rotate-half RoPE over the first
    head_dim x partial_rotary_factor dims (inv_freq over that width); the DeepSeek-V3 router
    (sigmoid, selection-only e_score_correction_bias, groups scored by their two best, renormalise,
    x routed_scaling_factor) and one shared expert, after first_k_dense_replace dense layers."""
    L, HD = kv["model.n_layers"], kv["model.head_dim"]
    kv["attn.qkv_bias"] = int(cfg.flag("attention_bias", False))
    if cfg.flag("use_qk_norm", False):
        kv["attn.qk_norm"] = "head"
    prf = glm_rope_parameters(cfg, kv)
    rd = int(HD * prf)
    if not 0 < prf <= 1 or rd < 2 or rd % 2:
        cfg.refuse("partial_rotary_factor", "head_dim x factor must be an even number of dims, at least 2")
    kv["rope.dim"] = rd
    n_exp = cfg.int("n_routed_experts", 0)
    first = cfg.int("first_k_dense_replace", 0)
    moe_ff = cfg.int("moe_intermediate_size", 0) if n_exp else 0
    kv.update({"moe.n_experts": n_exp, "moe.n_active": cfg.int("num_experts_per_tok", 0) if n_exp else 0,
               "moe.ff_dim": moe_ff, "moe.layers": [int(n_exp > 0 and i >= first) for i in range(L)],
               "moe.shared_ff": cfg.int("n_shared_experts", 0) * moe_ff, "moe.score": "sigmoid",
               "moe.norm_topk": int(cfg.flag("norm_topk_prob", True)),
               "moe.scale": cfg.float("routed_scaling_factor", 1.0), "moe.bias": 1, "moe.group_score": "top2sum"})
    n_group, topk_group = cfg.int("n_group", 1), cfg.int("topk_group", 1)
    if n_exp:
        if n_group < 1 or n_exp % n_group or not 1 <= topk_group <= n_group or (n_group > 1 and n_exp // n_group < 2):
            cfg.refuse("n_group", "n_routed_experts must split into n_group groups of at least 2, "
                       "1 <= topk_group <= n_group")
        kv["moe.n_groups"], kv["moe.groups_active"] = n_group, topk_group


# ---------------------------------------------------------------- HF tensors -> moe tensors
#
# One walk for every family, driven by its HfNames row (FAMILIES) and by the metadata: which
# attention a layer has (ssm.layers, attn.type), which extras (attn.o_bias, attn.sinks,
# attn.qkv_bias, attn.qk_norm, attn.out_gate), and which FFN (moe.layers, moe.bias, moe.shared_ff,
# moe.shared_gate) are the keys the engine reads too; the family row says where HF keeps them.

def plan_hf(kv, plan, names):
    """Every output tensor, in file order: embedding, final norm, output head, then each layer's
    parts in the order names.layer gives."""
    D, L, V = kv["model.dim"], kv["model.n_layers"], kv["model.vocab_size"]
    pre = names.prefix
    plan.copy("tok_embd", pre + "embed_tokens.weight", [V, D])
    plan_norm(plan, names, "output_norm", pre + "norm.weight", D)
    if not kv["model.tied_embd"]:
        plan.copy("output", "lm_head.weight", [V, D])
    elif plan.has("lm_head.weight"):
        plan.used.add("lm_head.weight")  # tied: HF overwrites it with the embedding
    for i in range(L):
        for part in names.layer:
            LAYER_PARTS[part](kv, plan, names, i, pre + "layers.%d." % i, "blk.%d." % i)


def plan_norm(plan, names, out, hf, n):
    """An RMSNorm weight [n]: widened to F32, or (zero-centred norms) mapped by names.norm."""
    if names.norm:
        plan.f32_map(out, hf, [n], [n], names.norm)
    else:
        plan.copy(out, hf, [n])


def plan_attn_norm(kv, plan, names, i, p, b):
    plan_norm(plan, names, b + "attn_norm", p + "input_layernorm.weight", kv["model.dim"])


def plan_ffn_norm(kv, plan, names, i, p, b):
    plan_norm(plan, names, b + "ffn_norm", p + "post_attention_layernorm.weight", kv["model.dim"])


def plan_attention(kv, plan, names, i, p, b):
    """The token mixer of layer i: a Gated DeltaNet (ssm.layers), MLA (attn.type), or attention
    with the extras the metadata names."""
    if kv.get("ssm.layers", [0] * kv["model.n_layers"])[i]:
        plan_deltanet(kv, plan, p + "linear_attn.", b)
        return
    if kv.get("attn.type") == "mla":
        plan_mla(kv, plan, i, p, b)
        return
    D, H, KV, HD = kv["model.dim"], kv["model.n_heads"], kv["model.n_kv_heads"], kv["model.head_dim"]
    a = p + "self_attn."
    if kv.get("attn.o_bias"):
        plan.copy(b + "attn_o_bias", a + "o_proj.bias", [D])
    if kv.get("attn.sinks"):
        plan.copy(b + "attn_sinks", a + "sinks", [H])
    gate = 2 if kv.get("attn.out_gate") else 1  # Qwen3-Next: per head, query rows then gate rows
    plan.copy(b + "attn_q", a + "q_proj.weight", [gate * H * HD, D])
    plan.copy(b + "attn_k", a + "k_proj.weight", [KV * HD, D])
    plan.copy(b + "attn_v", a + "v_proj.weight", [KV * HD, D])
    if kv.get("attn.qkv_bias"):
        plan.copy(b + "attn_q_bias", a + "q_proj.bias", [H * HD])
        plan.copy(b + "attn_k_bias", a + "k_proj.bias", [KV * HD])
        plan.copy(b + "attn_v_bias", a + "v_proj.bias", [KV * HD])
    qk = kv.get("attn.qk_norm")
    if qk:
        plan_norm(plan, names, b + "attn_q_norm", a + "q_norm.weight", HD if qk == "head" else H * HD)
        plan_norm(plan, names, b + "attn_k_norm", a + "k_norm.weight", HD if qk == "head" else KV * HD)
    plan.copy(b + "attn_o", a + "o_proj.weight", [D, H * HD])


def plan_ffn(kv, plan, names, i, p, b):
    """Layer i's FFN: the MoE block (moe.layers) or a dense SwiGLU MLP."""
    if kv.get("moe.layers", [0] * kv["model.n_layers"])[i]:
        plan_moe(kv, plan, names, p + names.moe, b)
        return
    D, F = kv["model.dim"], kv["model.ff_dim"]
    plan.copy(b + "ffn_gate", p + "mlp.gate_proj.weight", [F, D])
    plan.copy(b + "ffn_up", p + "mlp.up_proj.weight", [F, D])
    plan.copy(b + "ffn_down", p + "mlp.down_proj.weight", [D, F])


# a layer's parts, by the names HfNames.layer lists them in
LAYER_PARTS = {"attn_norm": plan_attn_norm, "attn": plan_attention, "ffn_norm": plan_ffn_norm, "ffn": plan_ffn}


def plan_deltanet(kv, plan, a, b):
    """Gated DeltaNet projections in the engine's layout: ssm_qkv rows = all q heads | all k heads | all
    v heads (the conv's channel order), ssm_z, ssm_beta, ssm_alpha per value head. Qwen3.5 stores them
    so; Qwen3-Next fuses in_proj_qkvz and in_proj_ba grouped per key head (fix_query_key_value_ordering:
    for key head j, q_j, k_j, then v and z of its n_v/n_k value heads; b then a), so rows are permuted."""
    D = kv["model.dim"]
    nk, nv, dk, dv, K = (kv["ssm.n_k_heads"], kv["ssm.n_v_heads"], kv["ssm.k_dim"], kv["ssm.v_dim"],
                         kv["ssm.conv_kernel"])
    kw, vw, r = nk * dk, nv * dv, nv // nk
    ch = 2 * kw + vw
    if plan.has(a + "in_proj_qkvz.weight"):
        g = 2 * dk + 2 * r * dv  # rows per key head
        qkvz, ba = a + "in_proj_qkvz.weight", a + "in_proj_ba.weight"
        plan.rows(b + "ssm_qkv", qkvz, [2 * kw + 2 * vw, D], [(j * g, dk) for j in range(nk)] +
                  [(j * g + dk, dk) for j in range(nk)] + [(j * g + 2 * dk, r * dv) for j in range(nk)])
        plan.rows(b + "ssm_z", qkvz, [2 * kw + 2 * vw, D], [(j * g + 2 * dk + r * dv, r * dv) for j in range(nk)])
        plan.rows(b + "ssm_beta", ba, [2 * nv, D], [(j * 2 * r, r) for j in range(nk)])
        plan.rows(b + "ssm_alpha", ba, [2 * nv, D], [(j * 2 * r + r, r) for j in range(nk)])
    else:
        plan.copy(b + "ssm_qkv", a + "in_proj_qkv.weight", [ch, D])
        plan.copy(b + "ssm_z", a + "in_proj_z.weight", [vw, D])
        plan.copy(b + "ssm_beta", a + "in_proj_b.weight", [nv, D])
        plan.copy(b + "ssm_alpha", a + "in_proj_a.weight", [nv, D])
    plan.f32_map(b + "ssm_conv", a + "conv1d.weight", [ch, 1, K], [ch, K], float)
    plan.f32_map(b + "ssm_a", a + "A_log", [nv], [nv], lambda v: -math.exp(v))  # HF: g = -exp(A_log)·softplus(..)
    plan.copy(b + "ssm_dt", a + "dt_bias", [nv])
    plan.copy(b + "ssm_norm", a + "norm.weight", [dv])  # the gated RMSNorm: weight used as is (not 1 + w)
    plan.copy(b + "ssm_out", a + "out_proj.weight", [D, vw])


def plan_mla(kv, plan, i, p, b):
    D, H = kv["model.dim"], kv["model.n_heads"]
    ql, kl = kv["mla.q_lora"], kv["mla.kv_lora"]
    nope, rope, v = kv["mla.nope_dim"], kv["mla.rope_dim"], kv["mla.v_dim"]
    if ql:
        plan.copy(b + "attn_q_a", p + "self_attn.q_a_proj.weight", [ql, D])
        plan.copy(b + "attn_q_a_norm", p + "self_attn.q_a_layernorm.weight", [ql])
        plan.copy(b + "attn_q_b", p + "self_attn.q_b_proj.weight", [H * (nope + rope), ql])
    else:
        plan.copy(b + "attn_q", p + "self_attn.q_proj.weight", [H * (nope + rope), D])
    plan.copy(b + "attn_kv_a", p + "self_attn.kv_a_proj_with_mqa.weight", [kl + rope, D])
    plan.copy(b + "attn_kv_a_norm", p + "self_attn.kv_a_layernorm.weight", [kl])
    plan.mla_kv_b(i, p + "self_attn.kv_b_proj.weight", H, nope, v, kl)
    plan.copy(b + "attn_o", p + "self_attn.o_proj.weight", [D, H * v])


def plan_moe(kv, plan, names, m, b):
    """Router (+ DeepSeek-V3's selection bias), the experts in the family's layout (one tensor per
    expert stacked, gate and up fused in one [E, 2F, D] tensor split, or gpt-oss's MXFP4), the
    shared expert and its sigmoid gate."""
    D, E, F = kv["model.dim"], kv["moe.n_experts"], kv["moe.ff_dim"]
    if names.mxfp4:
        plan_gpt_oss_moe(plan, E, F, D, m, b)
        return
    plan.copy(b + "ffn_router", m + names.router, [E, D])
    if kv.get("moe.bias"):
        plan.copy(b + "ffn_router_bias", m + "gate.e_score_correction_bias", [E])
    if names.fused and (not names.each or plan.has(m + names.fused[0])):
        gate_up, down = m + names.fused[0], m + names.fused[1]
        plan.slice_rows(b + "ffn_gate_exps", gate_up, [E, 2 * F, D], 0, F)  # gate rows, then up rows
        plan.slice_rows(b + "ffn_up_exps", gate_up, [E, 2 * F, D], F, 2 * F)
        plan.copy(b + "ffn_down_exps", down, [E, D, F])
    else:
        ex = m + "experts.%d."
        for out, name, shape in zip(("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"), names.each,
                                    ([F, D], [F, D], [D, F])):
            plan.stack(b + out, [ex % e + name + ".weight" for e in range(E)], shape)
    S = kv.get("moe.shared_ff", 0)
    if S:
        s = m + names.shared
        plan.copy(b + "ffn_gate_shexp", s + "gate_proj.weight", [S, D])
        plan.copy(b + "ffn_up_shexp", s + "up_proj.weight", [S, D])
        plan.copy(b + "ffn_down_shexp", s + "down_proj.weight", [D, S])
    if kv.get("moe.shared_gate"):
        plan.copy(b + "ffn_shexp_gate", m + "shared_expert_gate.weight", [1, D])
    elif names.shared_zero and plan.has(m + "shared_expert_gate.weight"):
        # shared_expert_intermediate_size 0: HF still builds the shared expert ([0, D] weights,
        # output 0) and its gate; they contribute nothing, so they are checked and dropped
        for name, shape in (("shared_expert.gate_proj.weight", [0, D]), ("shared_expert.up_proj.weight", [0, D]),
                            ("shared_expert.down_proj.weight", [D, 0]), ("shared_expert_gate.weight", [1, D])):
            plan.get(m + name, shape)


# ---------------------------------------------------------------- gpt-oss: MXFP4 experts

# E2M1 code -> value (OCP MX spec; HF integrations/mxfp4.py FP4_VALUES)
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def mxfp4_byte_table(scale):
    """byte -> the 4 bytes of its two bf16 values (low nibble first) under one E8M0 scale byte.
    Exact: an E2M1 value (2 significant bits) times 2^(scale - 127) is a bf16 value for every
    scale up to 252 (6 * 2^125); scales 0..2 give bf16 subnormals, still exact. Above 252 the
    largest codes overflow bf16, and 255 is E8M0's NaN: refused."""
    if scale > 252:
        raise ConvertError("MXFP4 scale byte %d: %s" % (scale, "NaN" if scale == 255 else "values beyond bf16's range"))
    half = [struct.pack("<f", math.ldexp(v, scale - 127))[2:4] for v in FP4_VALUES]
    for v, h in zip(FP4_VALUES, half):
        assert struct.unpack("<f", b"\0\0" + h)[0] == math.ldexp(v, scale - 127)
    return [half[b & 15] + half[b >> 4] for b in range(256)]


def mxfp4_rows_bf16(blocks, scales, E, R, C, rows):
    """bf16 bytes of rows `rows` (indices into R) of every expert of an MXFP4 tensor whose
    dequantized form is [E, R, C]: blocks U8 [E, R, C/32, 16], scales U8 [E, R, C/32]."""
    nb = C // 32
    tables = {}

    def source():
        for e in range(E):
            out = []
            for r in rows:
                row = e * R + r
                blk = blocks.read(row * nb * 16, nb * 16)
                sc = scales.read(row * nb, nb)
                for g in range(nb):
                    tab = tables.get(sc[g])
                    if tab is None:
                        tab = tables[sc[g]] = mxfp4_byte_table(sc[g])
                    out.append(b"".join(map(tab.__getitem__, blk[g * 16:(g + 1) * 16])))
            yield b"".join(out)
    return source


# nibble selectors for the repack: low nibble, high nibble, each in the low or the high half of a byte
_LO, _HI = bytes(b & 15 for b in range(256)), bytes(b >> 4 for b in range(256))
_LO_UP, _HI_UP = bytes((b & 15) << 4 for b in range(256)), bytes(b & 0xF0 for b in range(256))


def _or_bytes(a, b):
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(len(a), "little")


def mxfp4_to_ggml(qs, sc):
    """HF MXFP4 (16 code bytes per 32 values, element 2k in byte k's low nibble and 2k + 1 in its
    high nibble; scales apart) -> ggml block_mxfp4 (17 bytes: the E8M0 byte unchanged, then element
    j in byte j's low nibble and j + 16 in its high nibble). Only nibbles move: exact. Byte k of
    ggml's block pairs element k (HF byte k/2) with element k + 16 (HF byte 8 + k/2)."""
    n = len(sc)
    if len(qs) != 16 * n:
        raise ConvertError("MXFP4: %d code bytes for %d scales" % (len(qs), n))
    if n and max(sc) > 252:
        top = max(sc)
        raise ConvertError("MXFP4 scale byte %d: %s" % (top, "NaN" if top == 255 else "values beyond float's range"))
    lo, hi, lo_up, hi_up = (qs.translate(t) for t in (_LO, _HI, _LO_UP, _HI_UP))
    out = bytearray(17 * n)
    out[0::17] = sc
    for k in range(8):  # element 2k (and 2k + 16), then 2k + 1 (and 2k + 17)
        out[1 + 2 * k::17] = _or_bytes(lo[k::16], lo_up[8 + k::16])
        out[2 + 2 * k::17] = _or_bytes(hi[k::16], hi_up[8 + k::16])
    return bytes(out)


def mxfp4_rows_ggml(blocks, scales, E, R, C, rows):
    """block_mxfp4 bytes of rows `rows` (indices into R) of every expert, as mxfp4_rows_bf16."""
    nb = C // 32
    rb = 17 * nb  # bytes of one output row

    def source():
        for e in range(E):
            expert = mxfp4_to_ggml(blocks.read(e * R * nb * 16, R * nb * 16), scales.read(e * R * nb, R * nb))
            yield b"".join(expert[r * rb:(r + 1) * rb] for r in rows)
    return source


def plan_gpt_oss_moe(plan, E, F, D, m, b):
    """Router (weight + logit bias), and the experts: gate_up_proj's rows interleave gate (even)
    and up (odd), as does gate_up_proj_bias; both are split here. The experts stay MXFP4 (repacked
    into ggml's block order, exactly the published values; --experts bf16 dequantizes them to BF16
    instead, also exactly); biases widen to F32."""
    if D % 32 or F % 32:
        raise ConvertError("gpt-oss: hidden_size %d and intermediate_size %d must be multiples of 32 (MXFP4)" % (D, F))
    plan.copy(b + "ffn_router", m + "router.weight", [E, D])
    plan.copy(b + "ffn_router_logit_bias", m + "router.bias", [E])
    x = m + "experts."
    gu_b = plan.get(x + "gate_up_proj_blocks", [E, 2 * F, D // 32, 16], raw=True)
    gu_s = plan.get(x + "gate_up_proj_scales", [E, 2 * F, D // 32], raw=True)
    dn_b = plan.get(x + "down_proj_blocks", [E, D, F // 32, 16], raw=True)
    dn_s = plan.get(x + "down_proj_scales", [E, D, F // 32], raw=True)
    for t in (gu_b, gu_s, dn_b, dn_s):
        if t.dtype != "U8":
            raise ConvertError("%s: dtype must be U8 (MXFP4)" % t.name)

    def experts(name, blocks, scales, R, C, rows):
        if not plan.experts_bf16:
            plan.out.append((name, moefile.MXFP4, [E, len(rows), C], mxfp4_rows_ggml(blocks, scales, E, R, C, rows)))
            return
        source = mxfp4_rows_bf16(blocks, scales, E, R, C, rows)
        if plan.widen:  # --dtype f32
            plan.out.append((name, moefile.F32, [E, len(rows), C], lambda: (st.bf16_to_f32(c) for c in source())))
        else:
            plan.out.append((name, moefile.BF16, [E, len(rows), C], source))
    experts(b + "ffn_gate_exps", gu_b, gu_s, 2 * F, D, range(0, 2 * F, 2))
    experts(b + "ffn_up_exps", gu_b, gu_s, 2 * F, D, range(1, 2 * F, 2))
    experts(b + "ffn_down_exps", dn_b, dn_s, D, F, range(D))
    gu_bias = plan.get(x + "gate_up_proj_bias", [E, 2 * F])
    dn_bias = plan.get(x + "down_proj_bias", [E, D])

    def every_other(t, first):
        def source():
            f32 = to_f32(t.dtype, t.read())
            yield b"".join(f32[i * 4:i * 4 + 4] for i in range(first, len(f32) // 4, 2))
        return source
    plan.out.append((b + "ffn_gate_exps_bias", moefile.F32, [E, F], every_other(gu_bias, 0)))
    plan.out.append((b + "ffn_up_exps_bias", moefile.F32, [E, F], every_other(gu_bias, 1)))
    plan.out.append((b + "ffn_down_exps_bias", moefile.F32, [E, D], lambda: [to_f32(dn_bias.dtype, dn_bias.read())]))


def convert_hf(src, widen, tokenizer_required, experts_bf16=False):
    cfg_path = os.path.join(src, "config.json")
    cfg = Config(read_json(cfg_path), cfg_path)
    if not isinstance(cfg.d, dict):
        raise ConvertError("%s: not a JSON object" % cfg_path)
    archs = cfg.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or archs[0] not in ARCHS:
        raise ConvertError("%s: architecture %s is not supported (moe knows %s)" % (
            cfg_path, json.dumps(archs), ", ".join(sorted(ARCHS))))
    arch = ARCHS[archs[0]]
    names = FAMILIES[arch].hf
    if names.text_config:  # a vision-language wrapper: the decoder's config is text_config
        tc = cfg.d.get("text_config")
        if not isinstance(tc, dict):
            raise ConvertError("%s: text_config is missing" % cfg_path)
        d = dict(tc)
        if "tie_word_embeddings" not in d and "tie_word_embeddings" in cfg.d:
            d["tie_word_embeddings"] = cfg.d["tie_word_embeddings"]
        cfg = Config(d, cfg_path + " text_config")
    kv = family_kv(cfg, arch)
    kv["general.name"] = os.path.basename(os.path.abspath(src))
    kv["general.source"] = "%s (%s)" % (os.path.basename(os.path.abspath(src)), archs[0])
    plan = Plan(load_weights(src), widen, experts_bf16)
    plan_hf(kv, plan, names)
    L = kv["model.n_layers"]
    n_mtp = cfg.int("num_nextn_predict_layers", 0)
    # not run for text (names.skip): Qwen3.5's vision tower (general.skipped says so), and the MTP draft
    # layer(s) of Qwen3-Next / Qwen3.5, mtp.* (HF ignores them; counted in model.n_mtp_layers below)
    n_visual = sum(1 for n in plan.hf if n.startswith("model.visual.") and n not in plan.used)
    if "model.visual." in names.skip and n_visual:
        kv["general.skipped"] = "vision tower (model.visual.*, %d tensors)" % n_visual

    def skipped_part(name):
        return any(name.startswith(sp) for sp in names.skip)

    def ignorable(name):
        if name.endswith("rotary_emb.inv_freq"):
            return True  # older checkpoints store the RoPE table; it is recomputed
        parts = name.split(".")  # DeepSeek-V3's multi-token-prediction layers follow the last layer
        return n_mtp > 0 and len(parts) > 2 and parts[1] == "layers" and parts[2].isdigit() and \
            L <= int(parts[2]) < L + n_mtp
    plan.leftovers(lambda n: skipped_part(n) or ignorable(n))
    # DeepSeek-V3's and GLM's multi-token-prediction layers (a draft head for speculative decoding)
    # are never run by HF's forward pass either; the file says how many were left out
    mtp = {int(n.split(".")[2]) for n in plan.hf if ignorable(n) and not n.endswith("rotary_emb.inv_freq")}
    mtp |= {n.split(".")[2] for n in plan.hf if n.startswith("mtp.layers.") and "mtp." in names.skip}
    if mtp:
        kv["model.n_mtp_layers"] = len(mtp)
    tok = None
    if os.path.exists(os.path.join(src, "tokenizer.json")):
        tok = load_tok(src)
        tok_ids_from_config(cfg, tok)
        if tok.n_tokens > kv["model.vocab_size"]:
            raise ConvertError("the tokenizer has %d tokens but the model only %d embedding rows" % (
                tok.n_tokens, kv["model.vocab_size"]))
    elif tokenizer_required:
        raise ConvertError("%s: no tokenizer.json (pass --no-tokenizer to convert the weights alone)" % src)
    return kv, plan.out, tok


def tok_ids_from_config(cfg, tok):
    """config.json's bos/eos ids, where the tokenizer files name none."""
    kv = dict(tok.kv)
    for key, name in (("tok.bos", "bos_token_id"), ("tok.eos", "eos_token_id")):
        v = cfg.d.get(name)
        if kv.get(key, -1) < 0 and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < tok.n_tokens:
            kv[key] = v
            if key == "tok.eos" and not kv.get("tok.eos_ids"):
                kv["tok.eos_ids"] = [v]
    order = [k for k, _ in tok.kv] + [k for k in kv if k not in dict(tok.kv)]
    tok.kv = [(k, kv[k]) for k in order]


def load_tok(src, pre=None):
    try:
        return tokenizer_convert.load_tokenizer(src, pre)
    except tokenizer_convert.TokenizerError as e:
        raise ConvertError(str(e))


# ---------------------------------------------------------------- llama2.c checkpoints

def llama2c_header(path):
    """The config of a llama2.c "version 0" checkpoint, or None if the file is not one."""
    size = os.path.getsize(path)
    if size < 28:
        return None
    with open(path, "rb") as f:
        dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("<7i", f.read(28))
    if min(dim, hidden, layers, heads, kv_heads, seq) <= 0 or vocab == 0 or dim % heads or heads % kv_heads:
        return None
    shared = vocab > 0
    vocab = abs(vocab)
    hd = dim // heads
    kvd = kv_heads * hd
    n = (vocab * dim + layers * (dim + dim * dim + 2 * kvd * dim + dim * dim + dim + 3 * hidden * dim) + dim +
         seq * hd + (0 if shared else vocab * dim))
    if 28 + 4 * n != size:
        return None
    return dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, seq=seq,
                shared=shared)


def convert_llama2c(src, ckpt, tok_path, widen):
    h = llama2c_header(ckpt)
    D, F, L, V, hd = h["dim"], h["hidden"], h["layers"], h["vocab"], h["dim"] // h["heads"]
    kvd = h["kv_heads"] * hd
    kv = {"general.arch": "llama", "general.name": os.path.splitext(os.path.basename(ckpt))[0],
          "general.source": "llama2.c checkpoint %s" % os.path.basename(ckpt),
          "model.vocab_size": V, "model.dim": D, "model.n_layers": L, "model.n_heads": h["heads"],
          "model.n_kv_heads": h["kv_heads"], "model.head_dim": hd, "model.ff_dim": F, "model.max_ctx": h["seq"],
          "model.norm_eps": 1e-5, "model.tied_embd": int(h["shared"]), "attn.scale": hd ** -0.5,
          "rope.theta": 10000.0,
          # llama2.c rotates adjacent pairs (2i, 2i+1); storing that layout needs no row permutation
          "rope.layout": "pair", "moe.n_experts": 0}
    out, pos = [], 28

    def take(name, shape, per_layer=None):
        nonlocal pos
        n = 1
        for d in shape:
            n *= d
        t = st.Tensor(name, ckpt, "F32", shape, pos, 4 * n)
        pos += 4 * n
        return t

    def emit(name, t, off, shape):
        n = 1
        for d in shape:
            n *= d
        out.append((name, moefile.F32, list(shape), lambda t=t, off=off, n=n: t.read(off, 4 * n)))

    emb = take("tok_embd", [V, D])
    emit("tok_embd", emb, 0, [V, D])
    groups = [("attn_norm", [D]), ("attn_q", [D, D]), ("attn_k", [kvd, D]), ("attn_v", [kvd, D]),
              ("attn_o", [D, D]), ("ffn_norm", [D]), ("ffn_gate", [F, D]), ("ffn_down", [D, F]), ("ffn_up", [F, D])]
    for name, shape in groups:
        t = take(name, [L] + shape)
        per = t.nbytes // L
        for i in range(L):
            emit("blk.%d.%s" % (i, name), t, i * per, shape)
    norm = take("output_norm", [D])
    emit("output_norm", norm, 0, [D])
    take("rope_tables", [h["seq"], hd])
    if not h["shared"]:
        emit("output", take("output", [V, D]), 0, [V, D])
    tok = load_tok(tok_path)
    # llama2.c's generation ends at BOS: TinyStories stories are separated by it
    kvs = dict(tok.kv)
    ids = list(kvs.get("tok.eos_ids", [])) + [kvs["tok.bos"]]
    tok.kv = [(k, v) for k, v in tok.kv if k != "tok.eos_ids"] + [("tok.eos_ids", sorted(set(ids)))]
    if tok.n_tokens > V:
        raise ConvertError("%s: %d tokens, but the checkpoint has %d embedding rows" % (tok_path, tok.n_tokens, V))
    del widen
    return kv, out, tok


def find_llama2c(src):
    """(checkpoint, tokenizer) .bin files of a llama2.c folder, or None."""
    bins = sorted(glob.glob(os.path.join(src, "*.bin")))
    ckpts = [b for b in bins if llama2c_header(b)]
    toks = [b for b in bins if b not in ckpts]
    if not ckpts:
        return None
    if len(ckpts) > 1 or len(toks) != 1:
        raise ConvertError("%s: expected one llama2.c checkpoint and one tokenizer .bin, found %s" % (
            src, ", ".join(os.path.basename(b) for b in bins)))
    return ckpts[0], toks[0]


# ---------------------------------------------------------------- main

def write(path, kv, tensors, tok, progress):
    w = moefile.MoeWriter()
    for k, v in kv.items():
        w.add_kv(k, v)
    if tok is not None:
        for k, v in tok.kv:
            w.add_kv(k, v)
    for name, dtype, shape, source in tensors:
        w.add_tensor(name, dtype, shape, source)
    if tok is not None:
        for name, dtype, shape, data in tok.tensors:
            w.add_tensor(name, dtype, shape, data)
    return w.write(path, progress=progress)


def unquantized_path(out):
    """Where --type keeps the plain conversion while `moe quantize` reads it."""
    return out + ".unquantized.moe"


def quantize(plain, out, qtype, moe_bin, threads, calib=None):
    """moe quantize plain -> out (which moe writes as out.part and renames, so out is whole or
    absent). The plain conversion is removed on success and kept, named, on failure: never at out."""
    cmd = [moe_bin, "quantize", plain, out, "--type", qtype] + (["-t", str(threads)] if threads else [])
    cmd += ["--calib", calib] if calib else []
    try:
        p = subprocess.run(cmd)
    except OSError as e:
        raise ConvertError("cannot run %s: %s (build moe first, or pass --moe); the unquantized conversion is in %s"
                           % (moe_bin, e.strerror, plain))
    if p.returncode != 0:
        raise ConvertError("moe quantize failed (exit %d); the unquantized conversion is in %s" % (p.returncode, plain))
    os.remove(plain)


def convert(args):
    src = args.src
    widen = args.dtype == "f32"
    progress = not args.quiet
    if os.path.isdir(src):
        weights = sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))
        if os.path.exists(os.path.join(src, "config.json")):
            kv, tensors, tok = convert_hf(src, widen, not args.no_tokenizer, args.experts == "bf16")
        elif weights:  # weights without their config cannot be bound: never fall back to the tokenizer alone
            raise ConvertError("%s: %s but no config.json (a Hugging Face model needs its config)" % (src, weights[0]))
        else:
            found = find_llama2c(src)
            if found:
                kv, tensors, tok = convert_llama2c(src, found[0], found[1], widen)
            elif os.path.exists(os.path.join(src, "tokenizer.json")):
                kv, tensors, tok = {}, [], load_tok(src, args.pre)
            else:
                raise ConvertError("%s: no config.json, llama2.c checkpoint or tokenizer.json" % src)
    elif os.path.isfile(src):
        if llama2c_header(src):
            raise ConvertError("%s: a llama2.c checkpoint; pass its folder (with the tokenizer .bin)" % src)
        kv, tensors, tok = {}, [], load_tok(src, args.pre)
    else:
        raise ConvertError("%s: no such file or directory" % src)
    if args.pre and kv:
        raise ConvertError("--pre applies to tokenizer-only conversion")
    if args.calib and not args.type:
        raise ConvertError("--calib applies to --type (calibrated quantization)")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise ConvertError("%s: the output folder does not exist" % out_dir)
    if args.type and not kv:
        raise ConvertError("--type needs a model, not a tokenizer")
    plain = unquantized_path(args.out) if args.type else args.out
    size = write(plain, kv, tensors, tok, progress)
    if args.type:
        quantize(plain, args.out, args.type, args.moe, args.threads, args.calib)
        size = os.path.getsize(args.out)
    if not args.quiet:
        what = "%s, %d layers" % (kv["general.arch"], kv["model.n_layers"]) if kv else "tokenizer only"
        ntok = tok.n_tokens if tok is not None else 0
        sys.stderr.write("%s: %s, %d tensors, %d tokens, %.1f MB\n" % (args.out, what, len(tensors), ntok, size / 1e6))


def main(argv):
    ap = argparse.ArgumentParser(prog="convert.py", description=__doc__.split("\n")[0])
    ap.add_argument("src", help="HF model folder, llama2.c folder, or a tokenizer (folder, tokenizer.json, .gguf, .bin)")
    ap.add_argument("-o", "--out", required=True, help="output .moe file")
    ap.add_argument("--dtype", choices=("keep", "f32"), default="keep", help="keep weights as stored (default) or widen to f32")
    ap.add_argument("--experts", choices=("keep", "bf16"), default="keep",
                    help="gpt-oss: keep the MXFP4 experts as published (default) or dequantize them to BF16 (exact)")
    ap.add_argument("--type", choices=("q8_0", "q4_0", "q4_k", "q8_0_r16", "q4_0_r16", "q4_k_m", "q5_k_m", "q6_k", "q3_k_m",
                                       "q2_k"),
                    help="quantize the result with `moe quantize` (q4_k_m ... q2_k: llama.cpp's mixes)")
    ap.add_argument("--moe", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "moe"),
                    help="the moe binary used by --type (default: build/moe)")
    ap.add_argument("-t", "--threads", type=int, default=0, help="threads for --type")
    ap.add_argument("--calib", help="with --type: GPTQ rounding calibrated on this text (moe quantize --calib)")
    ap.add_argument("--pre", help="tokenizer-only: force the pre-tokenizer (%s)" % ", ".join(tokenizer_convert.PRE_NAMES))
    ap.add_argument("--no-tokenizer", action="store_true", help="convert weights without a tokenizer.json")
    ap.add_argument("--quiet", action="store_true", help="no progress or summary")
    args = ap.parse_args(argv)
    try:
        convert(args)
    except (ConvertError, moefile.FormatError, st.SafetensorsError) as e:
        sys.stderr.write("convert.py: error: %s\n" % e)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
