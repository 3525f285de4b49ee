"""hf_reference - an independent float64 forward pass, in pure Python, written from the
semantics of the Hugging Face modeling code (modeling_llama/qwen2/qwen3/mixtral/qwen2_moe/
qwen3_moe/olmoe/granitemoe/glm4_moe/glm4_moe_lite/gpt_oss.py, integrations/mxfp4.py, DeepSeek's
modeling_deepseek.py, and modeling_qwen3_next.py / modeling_qwen3_5_moe.py for the hybrids), not
from the C engine.

    logits = forward(hf_dir, [tokens])     # list of rows, one per position, float64

It reads the checkpoint folder as published (config.json, model.safetensors or shards with
model.safetensors.index.json), decodes BF16/F16/F32 itself and evaluates the whole sequence
causally. It is meant for tiny models (dim <= ~128, a few layers, a few tokens): plain lists,
one function per block, each named after the HF module it mirrors.
"""

import json
import math
import os
import sys
from operator import mul

_TOOLS = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)
import safetensors_io as st  # noqa: E402

# ---------------------------------------------------------------- safetensors (tools/safetensors_io.py)


class Checkpoint:
    """Tensors of a HF folder, decoded on first use to nested lists of float."""

    def __init__(self, path):
        self.path = path
        with open(os.path.join(path, "config.json")) as f:
            self.cfg = json.load(f)
        self.where = st.read_folder(path)
        self.cache = {}

    def has(self, name):
        return name in self.where

    def get(self, name):
        """A 1-D tensor as a list, a 2-D one as a list of rows, a 3-D one as a list of those
        (U8 tensors, gpt-oss's MXFP4 blocks and scales, as ints)."""
        if name not in self.cache:
            t = self.where[name]
            self.cache[name] = _reshape(t.floats(), t.shape)
        return self.cache[name]


def _reshape(flat, shape):
    if len(shape) <= 1:
        return flat
    inner = 1
    for d in shape[1:]:
        inner *= d
    return [_reshape(flat[i * inner:(i + 1) * inner], shape[1:]) for i in range(shape[0])]


# ---------------------------------------------------------------- small ops


def linear(w, x, bias=None):
    """nn.Linear: w [out, in] (list of rows) times x [in]."""
    y = [sum(map(mul, row, x)) for row in w]
    if bias is not None:
        y = [a + b for a, b in zip(y, bias)]
    return y


def rms_norm(x, w, eps):
    """LlamaRMSNorm / DeepseekV2RMSNorm: x / sqrt(mean(x^2) + eps) * w."""
    r = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [v * r * g for v, g in zip(x, w)]


def silu(v):
    return v / (1.0 + math.exp(-v)) if v > -700 else 0.0


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0


def softmax(xs):
    m = max(xs)
    e = [math.exp(v - m) for v in xs]
    s = sum(e)
    return [v / s for v in e]


def topk(scores, k):
    """torch.topk indices, largest first; ties go to the lower index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def swiglu_mlp(x, gate, up, down):
    """LlamaMLP / expert: down(silu(gate(x)) * up(x))."""
    g, u = linear(gate, x), linear(up, x)
    return linear(down, [silu(a) * b for a, b in zip(g, u)])


# ---------------------------------------------------------------- RoPE


def yarn_get_mscale(scale, mscale=1.0):
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_inv_freq(cfg, dim, deepseek):
    """Frequencies and the cos/sin multiplier of modeling_rope_utils (or DeepSeek's classes)."""
    # transformers 5 nests rope_theta in rope_parameters (GLM)
    base = float((cfg.get("rope_parameters") or {}).get("rope_theta") or cfg.get("rope_theta") or 10000.0)
    inv = [1.0 / base ** (2 * i / dim) for i in range(dim // 2)]
    rs = cfg.get("rope_scaling")
    kind = None if not rs else rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return inv, 1.0
    factor = float(rs["factor"])
    if kind == "linear":
        return [f / factor for f in inv], 1.0
    if kind == "llama3":
        old = rs["original_max_position_embeddings"]
        lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
        lo_wl, hi_wl = old / lo, old / hi
        out = []
        for f in inv:
            wl = 2 * math.pi / f
            if wl < hi_wl:
                out.append(f)
            elif wl > lo_wl:
                out.append(f / factor)
            else:
                s = (old / wl - lo) / (hi - lo)
                out.append((1 - s) * f / factor + s * f)
        return out, 1.0
    if kind == "yarn":
        orig = rs.get("original_max_position_embeddings", cfg.get("max_position_embeddings"))
        beta_fast, beta_slow = rs.get("beta_fast", 32), rs.get("beta_slow", 1)

        def corr(rot):
            return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))
        low, high = corr(beta_fast), corr(beta_slow)
        if rs.get("truncate", True):  # _compute_yarn_parameters: gpt-oss publishes truncate false
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        out = []
        for i, f in enumerate(inv):
            ramp = min(max((i - low) / (high - low), 0.0), 1.0)
            extra = 1.0 - ramp  # weight of the unscaled frequency
            out.append(f / factor * (1 - extra) + f * extra)
        if deepseek:
            mult = yarn_get_mscale(factor, rs.get("mscale", 1)) / yarn_get_mscale(factor, rs.get("mscale_all_dim", 0))
        elif rs.get("attention_factor") is not None:
            mult = rs["attention_factor"]
        elif rs.get("mscale") and rs.get("mscale_all_dim"):
            mult = yarn_get_mscale(factor, rs["mscale"]) / yarn_get_mscale(factor, rs["mscale_all_dim"])
        else:
            mult = yarn_get_mscale(factor)
        return out, mult
    raise ValueError("rope_scaling %r not known to the reference" % kind)


def rotate_half_rope(x, pos, inv, mult):
    """apply_rotary_pos_emb with rotate_half: dimension i pairs with i + d/2."""
    h = len(x) // 2
    out = list(x)
    for i in range(h):
        a = pos * inv[i]
        c, s = math.cos(a) * mult, math.sin(a) * mult
        out[i] = x[i] * c - x[i + h] * s
        out[i + h] = x[i + h] * c + x[i] * s
    return out


def deepseek_rope(x, pos, inv, mult):
    """DeepSeek: view(d/2, 2).transpose -> de-interleave, then rotate_half (output stays de-interleaved;
    q and k are permuted alike, so q.k is what the model computes)."""
    return rotate_half_rope(x[0::2] + x[1::2], pos, inv, mult)


# ---------------------------------------------------------------- attention


def attend(qs, ks, vs, scale, window, sink=None):
    """Causal softmax(q.k * scale) v for one head over all positions; qs/ks/vs: per position.
    A sink (gpt-oss) is one more logit in the softmax whose probability is dropped."""
    out = []
    for i, q in enumerate(qs):
        lo = max(0, i - window + 1) if window else 0
        sc = [scale * sum(map(mul, q, ks[j])) for j in range(lo, i + 1)]
        p = softmax(sc + [sink])[:-1] if sink is not None else softmax(sc)
        o = [0.0] * len(vs[0])
        for pj, j in zip(p, range(lo, i + 1)):
            vj = vs[j]
            for d in range(len(o)):
                o[d] += pj * vj[d]
        out.append(o)
    return out


def partial_rope(x, pos, inv, mult):
    """GPT-NeoX apply_rotary_pos_emb (GLM-4.5): rotate_half over the first len(inv)*2 dims only,
    the rest pass through."""
    rd = 2 * len(inv)
    return rotate_half_rope(x[:rd], pos, inv, mult) + x[rd:]


def gqa_attention(m, cfg, arch, i, xs):
    """LlamaAttention and relatives: q/k/v projections (+bias Qwen2, GLM attention_bias), QK-norm
    (Qwen3 and GLM use_qk_norm per head, OLMoE full width), OLMoE clip, RoPE rotate_half (GLM: over
    head_dim x partial_rotary_factor dims, inv_freq over that width), GQA, o_proj."""
    p = "model.layers.%d.self_attn." % i
    H, D = cfg["num_attention_heads"], cfg["hidden_size"]
    KV = cfg.get("num_key_value_heads") or H
    HD = cfg.get("head_dim") or D // H
    eps = cfg.get("rms_norm_eps", 1e-6)
    prf = (cfg.get("rope_parameters") or {}).get("partial_rotary_factor") or cfg.get("partial_rotary_factor", 1.0)
    rd = int(HD * prf) if arch == "glm4_moe" else HD
    inv, mult = rope_inv_freq(cfg, rd, False)
    bias = arch in ("qwen2", "qwen2_moe", "gpt_oss") or (arch == "glm4_moe" and cfg.get("attention_bias", False))
    clip = cfg.get("clip_qkv") if arch == "olmoe" else None
    Q, K, V = [], [], []
    for pos, x in enumerate(xs):
        q = linear(m.get(p + "q_proj.weight"), x, m.get(p + "q_proj.bias") if bias else None)
        k = linear(m.get(p + "k_proj.weight"), x, m.get(p + "k_proj.bias") if bias else None)
        v = linear(m.get(p + "v_proj.weight"), x, m.get(p + "v_proj.bias") if bias else None)
        if arch == "olmoe":
            q, k = rms_norm(q, m.get(p + "q_norm.weight"), eps), rms_norm(k, m.get(p + "k_norm.weight"), eps)
            if clip is not None:
                q, k, v = [[min(max(t, -clip), clip) for t in z] for z in (q, k, v)]
        qh = [q[h * HD:(h + 1) * HD] for h in range(H)]
        kh = [k[h * HD:(h + 1) * HD] for h in range(KV)]
        if arch in ("qwen3", "qwen3_moe") or (arch == "glm4_moe" and cfg.get("use_qk_norm", False)):
            qh = [rms_norm(t, m.get(p + "q_norm.weight"), eps) for t in qh]
            kh = [rms_norm(t, m.get(p + "k_norm.weight"), eps) for t in kh]
        Q.append([partial_rope(t, pos, inv, mult) for t in qh])
        K.append([partial_rope(t, pos, inv, mult) for t in kh])
        V.append([v[h * HD:(h + 1) * HD] for h in range(KV)])
    scale = cfg["attention_multiplier"] if arch == "granitemoe" else HD ** -0.5
    window = 0
    if arch in ("mixtral",) or (arch == "llama" and cfg.get("architectures") == ["MistralForCausalLM"]):
        window = cfg.get("sliding_window") or 0
    sinks = [None] * H
    if arch == "gpt_oss":  # GptOssAttention: sinks, window on the layers layer_types names
        sinks = m.get(p + "sinks")
        types = cfg.get("layer_types") or ["sliding_attention" if j % 2 == 0 else "full_attention"
                                           for j in range(cfg["num_hidden_layers"])]
        window = cfg["sliding_window"] if types[i] == "sliding_attention" else 0
    heads = []
    for h in range(H):
        g = h // (H // KV)  # repeat_kv: query head h reads kv head h // n_rep
        heads.append(attend([t[h] for t in Q], [t[g] for t in K], [t[g] for t in V], scale, window, sinks[h]))
    o_w = m.get(p + "o_proj.weight")
    o_b = m.get(p + "o_proj.bias") if arch == "gpt_oss" else None
    return [linear(o_w, sum((heads[h][t] for h in range(H)), []), o_b) for t in range(len(xs))]


def mla_attention(m, cfg, i, xs):
    """DeepseekV2Attention (plain, non-absorbed): q (or q_a -> q_a_layernorm -> q_b), split
    nope|rope; kv_a_proj_with_mqa -> [c_kv | k_pe]; kv_b_proj(kv_a_layernorm(c_kv)) -> k_nope | v
    per head; RoPE on q_pe and the shared k_pe; softmax scale 1/sqrt(q_head_dim) x mscale^2."""
    p = "model.layers.%d.self_attn." % i
    H = cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kvl, ql = cfg["kv_lora_rank"], cfg.get("q_lora_rank")
    qhd = nope + rope
    inv, mult = rope_inv_freq(cfg, rope, True)
    # transformers' DeepseekV3 config may set rope_interleave false: plain rotate_half then
    rope_fn = deepseek_rope if cfg.get("rope_interleave", True) else rotate_half_rope
    scale = qhd ** -0.5
    rs = cfg.get("rope_scaling")
    if rs and rs.get("mscale_all_dim"):
        ms = yarn_get_mscale(rs["factor"], rs["mscale_all_dim"])
        scale = scale * ms * ms
    Q, K, V = [], [], []
    for pos, x in enumerate(xs):
        if ql:
            # q_a_layernorm = DeepseekV2RMSNorm(q_lora_rank): default eps 1e-6
            q = linear(m.get(p + "q_b_proj.weight"), rms_norm(linear(m.get(p + "q_a_proj.weight"), x),
                                                             m.get(p + "q_a_layernorm.weight"), 1e-6))
        else:
            q = linear(m.get(p + "q_proj.weight"), x)
        ckv = linear(m.get(p + "kv_a_proj_with_mqa.weight"), x)
        c, k_pe = ckv[:kvl], ckv[kvl:]
        kv = linear(m.get(p + "kv_b_proj.weight"), rms_norm(c, m.get(p + "kv_a_layernorm.weight"), 1e-6))
        k_pe = rope_fn(k_pe, pos, inv, mult)
        qs, ks, vs = [], [], []
        for h in range(H):
            qh = q[h * qhd:(h + 1) * qhd]
            qs.append(qh[:nope] + rope_fn(qh[nope:], pos, inv, mult))
            kvh = kv[h * (nope + vd):(h + 1) * (nope + vd)]
            ks.append(kvh[:nope] + k_pe)
            vs.append(kvh[nope:])
        Q.append(qs)
        K.append(ks)
        V.append(vs)
    heads = [attend([t[h] for t in Q], [t[h] for t in K], [t[h] for t in V], scale, 0) for h in range(H)]
    o_w = m.get(p + "o_proj.weight")
    return [linear(o_w, sum((heads[h][t] for h in range(H)), [])) for t in range(len(xs))]


# ---------------------------------------------------------------- routers and MoE blocks


def route_softmax_topk(logits, k, norm):
    """Mixtral/Qwen2-MoE/Qwen3-MoE/OLMoE: softmax over all, top-k, renormalise if asked."""
    s = softmax(logits)
    idx = topk(s, k)
    w = [s[e] for e in idx]
    if norm:
        t = sum(w)
        w = [v / t for v in w]
    return idx, w


def route_granite(logits, k):
    """GraniteMoeTopKGating: top-k of the logits, softmax over those k."""
    idx = topk(logits, k)
    return idx, softmax([logits[e] for e in idx])


def route_deepseek_v2(logits, cfg):
    """MoEGate (V2): softmax; greedy or group_limited_greedy (group score = max, masked scores
    set to 0.0); renormalise if top_k > 1 and norm_topk_prob, else x routed_scaling_factor."""
    k = cfg["num_experts_per_tok"]
    s = softmax(logits)
    method = cfg.get("topk_method", "greedy")
    if method == "greedy":
        choice = s
    elif method == "group_limited_greedy":
        choice = group_mask(s, cfg["n_group"], cfg["topk_group"], lambda g: max(g))
    else:
        raise ValueError("topk_method %s" % method)
    idx = topk(choice, k)
    w = [s[e] for e in idx]
    if k > 1 and cfg.get("norm_topk_prob", False):
        t = sum(w) + 1e-20
        w = [v / t for v in w]
    else:
        w = [v * cfg.get("routed_scaling_factor", 1.0) for v in w]
    return idx, w


def route_deepseek_v3(logits, bias, cfg):
    """MoEGate (V3, noaux_tc): sigmoid; choose on sigmoid + e_score_correction_bias with groups
    scored by the sum of their two best biased scores; weights = unbiased sigmoid, renormalised
    if norm_topk_prob (and top_k > 1), then x routed_scaling_factor."""
    k = cfg["num_experts_per_tok"]
    s = [sigmoid(v) for v in logits]
    biased = [a + b for a, b in zip(s, bias)]
    choice = group_mask(biased, cfg.get("n_group", 1), cfg.get("topk_group", 1),
                        lambda g: sum(sorted(g, reverse=True)[:2]))
    idx = topk(choice, k)
    w = [s[e] for e in idx]
    if k > 1 and cfg.get("norm_topk_prob", False):
        t = sum(w) + 1e-20
        w = [v / t for v in w]
    return idx, [v * cfg.get("routed_scaling_factor", 1.0) for v in w]


def group_mask(scores, n_group, topk_group, group_score):
    """Keep the experts of the best topk_group groups; the others' scores become 0.0 (HF masked_fill)."""
    n = len(scores) // n_group
    gs = [group_score(scores[g * n:(g + 1) * n]) for g in range(n_group)]
    keep = set(topk(gs, topk_group))
    return [v if e // n in keep else 0.0 for e, v in enumerate(scores)]


FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def mxfp4_matrix(blocks, scales):
    """integrations/mxfp4.py convert_moe_packed_tensors for one expert: blocks [R][C/32][16] bytes,
    scales [R][C/32] E8M0 -> rows [R][C]: element 32g+2k = low nibble of byte k, 32g+2k+1 = high
    nibble, each FP4_VALUES[code] * 2^(scale - 127)."""
    out = []
    for brow, srow in zip(blocks, scales):
        row = []
        for blk, sc in zip(brow, srow):
            f = 2.0 ** (sc - 127)
            for b in blk:
                row += [FP4_VALUES[b & 15] * f, FP4_VALUES[b >> 4] * f]
        out.append(row)
    return out


def gpt_oss_moe(m, cfg, i, x):
    """GptOssMLP: GptOssTopKRouter (Linear with bias, top-k of the logits, softmax over the k),
    GptOssExperts (gate_up rows interleaved gate/up, biases, gate clamped above and up on both
    sides at swiglu_limit, (up + 1) * gate * sigmoid(1.702 gate), down + its bias, times the
    routing weight)."""
    p = "model.layers.%d.mlp." % i
    logits = linear(m.get(p + "router.weight"), x, m.get(p + "router.bias"))
    idx = topk(logits, cfg["num_experts_per_tok"])
    w = softmax([logits[e] for e in idx])
    lim, ex = cfg["swiglu_limit"], p + "experts."
    out = [0.0] * len(x)
    for e, we in zip(idx, w):
        gu = linear(mxfp4_matrix(m.get(ex + "gate_up_proj_blocks")[e], m.get(ex + "gate_up_proj_scales")[e]), x,
                    m.get(ex + "gate_up_proj_bias")[e])
        gate, up = [min(v, lim) for v in gu[0::2]], [min(max(v, -lim), lim) for v in gu[1::2]]
        act = [(u + 1.0) * g * sigmoid(1.702 * g) for g, u in zip(gate, up)]
        y = linear(mxfp4_matrix(m.get(ex + "down_proj_blocks")[e], m.get(ex + "down_proj_scales")[e]), act,
                   m.get(ex + "down_proj_bias")[e])
        out = [a + we * b for a, b in zip(out, y)]
    return out


def moe_block(m, cfg, arch, i, x):
    """The sparse MLP of layer i for one token."""
    D = len(x)
    if arch == "gpt_oss":
        return gpt_oss_moe(m, cfg, i, x)
    if arch == "granitemoe":
        p = "model.layers.%d.block_sparse_moe." % i
        idx, w = route_granite(linear(m.get(p + "router.layer.weight"), x), cfg["num_experts_per_tok"])
        F = cfg["intermediate_size"]
        out = [0.0] * D
        for e, we in zip(idx, w):
            inp = m.get(p + "input_linear.weight")[e]
            y = swiglu_mlp(x, inp[:F], inp[F:], m.get(p + "output_linear.weight")[e])
            out = [a + we * b for a, b in zip(out, y)]
        return out
    if arch == "mixtral":
        p = "model.layers.%d.block_sparse_moe." % i
        idx, w = route_softmax_topk(linear(m.get(p + "gate.weight"), x), cfg["num_experts_per_tok"], True)
        names = ("w1", "w3", "w2")
    else:
        p = "model.layers.%d.mlp." % i
        names = ("gate_proj", "up_proj", "down_proj")
        logits = linear(m.get(p + "gate.weight"), x)
        if arch == "deepseek_v2":
            idx, w = route_deepseek_v2(logits, cfg)
        elif arch in ("deepseek_v3", "glm4_moe"):  # Glm4MoeTopkRouter is DeepseekV3TopkRouter
            idx, w = route_deepseek_v3(logits, m.get(p + "gate.e_score_correction_bias"), cfg)
        else:
            idx, w = route_softmax_topk(logits, cfg["num_experts_per_tok"], cfg.get("norm_topk_prob", False))
    out = [0.0] * D
    for e, we in zip(idx, w):
        q = p + "experts.%d." % e
        y = swiglu_mlp(x, m.get(q + names[0] + ".weight"), m.get(q + names[1] + ".weight"),
                       m.get(q + names[2] + ".weight"))
        out = [a + we * b for a, b in zip(out, y)]
    if arch == "qwen2_moe" and cfg.get("shared_expert_intermediate_size"):
        s = p + "shared_expert."
        y = swiglu_mlp(x, m.get(s + "gate_proj.weight"), m.get(s + "up_proj.weight"), m.get(s + "down_proj.weight"))
        g = sigmoid(linear(m.get(p + "shared_expert_gate.weight"), x)[0])
        out = [a + g * b for a, b in zip(out, y)]
    if arch in ("deepseek_v2", "deepseek_v3", "glm4_moe") and cfg.get("n_shared_experts"):
        s = p + "shared_experts."
        y = swiglu_mlp(x, m.get(s + "gate_proj.weight"), m.get(s + "up_proj.weight"), m.get(s + "down_proj.weight"))
        out = [a + b for a, b in zip(out, y)]
    return out


def is_moe_layer(cfg, arch, i):
    if arch in ("mixtral", "granitemoe", "olmoe", "gpt_oss"):
        return True
    if arch in ("qwen2_moe", "qwen3_moe"):
        return (i not in cfg.get("mlp_only_layers", []) and cfg.get("num_experts", 0) > 0
                and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0)
    if cfg.get("architectures") == ["Glm4MoeLiteForCausalLM"]:
        types = cfg.get("mlp_layer_types") or ["dense"] * cfg.get("first_k_dense_replace", 1) + ["sparse"] * 9999
        return types[i] == "sparse"
    if arch == "glm4_moe":  # Glm4MoeDecoderLayer: MoE from first_k_dense_replace on, no layer frequency
        return i >= cfg.get("first_k_dense_replace", 0)
    if arch in ("deepseek_v2", "deepseek_v3"):
        return (cfg.get("n_routed_experts") is not None and i >= cfg.get("first_k_dense_replace", 0)
                and i % cfg.get("moe_layer_freq", 1) == 0)
    return False


# ---------------------------------------------------------------- the model

ARCHS = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "MixtralForCausalLM": "mixtral", "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe", "OlmoeForCausalLM": "olmoe", "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3", "GraniteMoeForCausalLM": "granitemoe",
    "Glm4MoeForCausalLM": "glm4_moe", "GptOssForCausalLM": "gpt_oss",
    # Glm4MoeLiteForCausalLM: DeepseekV3Attention + Glm4MoeTopkRouter (= DeepseekV3TopkRouter)
    "Glm4MoeLiteForCausalLM": "deepseek_v3",
    "Qwen3NextForCausalLM": "qwen3_next", "Qwen3_5MoeForConditionalGeneration": "qwen3_5_moe",
}


def forward(path, tokens, ckpt=None, chunk=64):
    """Logits [len(tokens)][vocab] of the HF checkpoint at `path` for one causal sequence.
    chunk: the hybrids' Gated DeltaNet chunk size (HF's prefill; 0 = the recurrent form)."""
    m = ckpt or Checkpoint(path)
    cfg = m.cfg
    arch = ARCHS[cfg["architectures"][0]]
    if arch in ("qwen3_next", "qwen3_5_moe"):
        return hybrid_forward(m, arch, tokens, chunk)
    eps = cfg.get("rms_norm_eps", 1e-6)
    emb = m.get("model.embed_tokens.weight")
    xs = [list(emb[t]) for t in tokens]
    res = 1.0
    if arch == "granitemoe":
        xs = [[v * cfg["embedding_multiplier"] for v in x] for x in xs]
        res = cfg["residual_multiplier"]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        hs = [rms_norm(x, m.get(p + "input_layernorm.weight"), eps) for x in xs]
        if arch in ("deepseek_v2", "deepseek_v3"):
            att = mla_attention(m, cfg, i, hs)
        else:
            att = gqa_attention(m, cfg, arch, i, hs)
        xs = [[a + res * b for a, b in zip(x, y)] for x, y in zip(xs, att)]
        hs = [rms_norm(x, m.get(p + "post_attention_layernorm.weight"), eps) for x in xs]
        if is_moe_layer(cfg, arch, i):
            ff = [moe_block(m, cfg, arch, i, h) for h in hs]
        else:
            ff = [swiglu_mlp(h, m.get(p + "mlp.gate_proj.weight"), m.get(p + "mlp.up_proj.weight"),
                             m.get(p + "mlp.down_proj.weight")) for h in hs]
        xs = [[a + res * b for a, b in zip(x, y)] for x, y in zip(xs, ff)]
    head = emb if cfg.get("tie_word_embeddings", False) else m.get("lm_head.weight")
    out = []
    for x in xs:
        logits = linear(head, rms_norm(x, m.get("model.norm.weight"), eps))
        if arch == "granitemoe":
            logits = [v / cfg["logits_scaling"] for v in logits]
        out.append(logits)
    return out


# ---------------------------------------------------------------- Qwen3-Next / Qwen3.5-MoE (hybrid)


def zc_rms_norm(x, w, eps):
    """Qwen3NextRMSNorm: zero-centred weight, x / sqrt(mean(x^2) + eps) * (1 + w)."""
    r = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + eps)
    return [v * r * (1.0 + g) for v, g in zip(x, w)]


def softplus(v):
    """F.softplus (beta 1, threshold 20)."""
    return v if v > 20 else math.log1p(math.exp(v))


def l2norm(x):
    """FLA's l2norm: x / sqrt(sum(x^2) + 1e-6)."""
    r = 1.0 / math.sqrt(sum(v * v for v in x) + 1e-6)
    return [v * r for v in x]


def matvec_t(S, q):
    """S^T q for S [dk][dv]."""
    out = [0.0] * len(S[0])
    for i, row in enumerate(S):
        qi = q[i]
        for j in range(len(out)):
            out[j] += qi * row[j]
    return out


def delta_rule_recurrent(q, k, v, g, beta):
    """torch_recurrent_gated_delta_rule for one head; q (scaled), k, v per token. Returns (out, S)."""
    dk, dv = len(k[0]), len(v[0])
    S = [[0.0] * dv for _ in range(dk)]
    out = []
    for t in range(len(q)):
        d = math.exp(g[t])
        S = [[x * d for x in row] for row in S]
        kv = matvec_t(S, k[t])
        delta = [(v[t][j] - kv[j]) * beta[t] for j in range(dv)]
        S = [[S[i][j] + k[t][i] * delta[j] for j in range(dv)] for i in range(dk)]
        out.append(matvec_t(S, q[t]))
    return out, S


def delta_rule_chunked(q, k, v, g, beta, C):
    """torch_chunk_gated_delta_rule for one head (HF's prefill form: per chunk of C tokens the WY/UT
    transform by forward substitution, then one state update per chunk). Returns (out, S)."""
    T, dk, dv = len(q), len(k[0]), len(v[0])
    pad = (C - T % C) % C
    q = q + [[0.0] * dk] * pad
    k = k + [[0.0] * dk] * pad
    v = v + [[0.0] * dv] * pad
    g = list(g) + [0.0] * pad
    beta = list(beta) + [0.0] * pad
    S = [[0.0] * dv for _ in range(dk)]
    out = []
    dot = lambda a, b: sum(map(mul, a, b))  # noqa: E731
    for c0 in range(0, T + pad, C):
        qc, kc, vc = q[c0:c0 + C], k[c0:c0 + C], v[c0:c0 + C]
        gc, acc = [], 0.0
        for x in g[c0:c0 + C]:
            acc += x
            gc.append(acc)
        bc = beta[c0:c0 + C]
        kb = [[x * bc[i] for x in kc[i]] for i in range(C)]
        vb = [[x * bc[i] for x in vc[i]] for i in range(C)]
        decay = [[math.exp(gc[i] - gc[j]) if j <= i else 0.0 for j in range(C)] for i in range(C)]
        A = [[-dot(kb[i], kc[j]) * decay[i][j] if j < i else 0.0 for j in range(C)] for i in range(C)]
        for i in range(1, C):
            row = A[i][:i]
            for j in range(i):
                A[i][j] = row[j] + sum(row[m] * A[m][j] for m in range(i))
        for i in range(C):
            A[i][i] += 1.0
        value = [[sum(A[i][m] * vb[m][j] for m in range(C)) for j in range(dv)] for i in range(C)]
        kcum = [[sum(A[i][m] * kb[m][j] * math.exp(gc[m]) for m in range(C)) for j in range(dk)] for i in range(C)]
        vprime = [matvec_t(S, kcum[i]) for i in range(C)]  # k_cumdecay @ S
        vnew = [[value[i][j] - vprime[i][j] for j in range(dv)] for i in range(C)]
        for i in range(C):
            inter = matvec_t(S, [x * math.exp(gc[i]) for x in qc[i]])
            intra = [0.0] * dv
            for j in range(i + 1):
                a = dot(qc[i], kc[j]) * decay[i][j]
                for d in range(dv):
                    intra[d] += a * vnew[j][d]
            out.append([x + y for x, y in zip(inter, intra)])
        last = gc[-1]
        S = [[S[a][b] * math.exp(last) + sum(kc[i][a] * math.exp(last - gc[i]) * vnew[i][b] for i in range(C))
              for b in range(dv)] for a in range(dk)]
    return out[:T], S


def gated_deltanet(m, cfg, p, xs, chunk):
    """Qwen3NextGatedDeltaNet / Qwen3_5MoeGatedDeltaNet forward over a whole sequence (no cache)."""
    nk, nv = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    dk, dv, K = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"], cfg["linear_conv_kernel_dim"]
    eps, r = cfg.get("rms_norm_eps", 1e-6), nv // nk
    rows = []  # per token: (mixed_qkv, z, b, a); mixed_qkv = all q | all k | all v
    for x in xs:
        if m.has(p + "in_proj_qkvz.weight"):  # Qwen3-Next: fix_query_key_value_ordering
            qkvz, ba = linear(m.get(p + "in_proj_qkvz.weight"), x), linear(m.get(p + "in_proj_ba.weight"), x)
            w = 2 * dk + 2 * r * dv
            q, k, v, z, b, a = [], [], [], [], [], []
            for j in range(nk):
                grp = qkvz[j * w:(j + 1) * w]
                q += grp[:dk]
                k += grp[dk:2 * dk]
                v += grp[2 * dk:2 * dk + r * dv]
                z += grp[2 * dk + r * dv:]
                b += ba[j * 2 * r:j * 2 * r + r]
                a += ba[j * 2 * r + r:(j + 1) * 2 * r]
            mixed = q + k + v
        else:  # Qwen3.5: split projections
            mixed = linear(m.get(p + "in_proj_qkv.weight"), x)
            z, b, a = (linear(m.get(p + n), x) for n in ("in_proj_z.weight", "in_proj_b.weight", "in_proj_a.weight"))
        rows.append((mixed, z, b, a))
    # causal depthwise conv1d (padding K-1, first seq_len outputs) + SiLU
    cw = m.get(p + "conv1d.weight")  # [C][1][K]
    T, ch = len(xs), len(rows[0][0])
    conv = []
    for t in range(T):
        o = []
        for c in range(ch):
            acc = 0.0
            for j in range(K):
                s = t - (K - 1) + j
                if s >= 0:
                    acc += cw[c][0][j] * rows[s][0][c]
            o.append(silu(acc))
        conv.append(o)
    kd = nk * dk
    A_log, dt = m.get(p + "A_log"), m.get(p + "dt_bias")
    heads = []
    for h in range(nv):
        kh = h // r  # repeat_interleave
        qs = [[x * dk ** -0.5 for x in l2norm(conv[t][kh * dk:(kh + 1) * dk])] for t in range(T)]
        ks = [l2norm(conv[t][kd + kh * dk:kd + (kh + 1) * dk]) for t in range(T)]
        vs = [conv[t][2 * kd + h * dv:2 * kd + (h + 1) * dv] for t in range(T)]
        g = [-math.exp(A_log[h]) * softplus(rows[t][3][h] + dt[h]) for t in range(T)]
        beta = [sigmoid(rows[t][2][h]) for t in range(T)]
        o, _ = delta_rule_chunked(qs, ks, vs, g, beta, chunk) if chunk else delta_rule_recurrent(qs, ks, vs, g, beta)
        heads.append(o)
    nw, ow = m.get(p + "norm.weight"), m.get(p + "out_proj.weight")
    out = []
    for t in range(T):
        y = []
        for h in range(nv):  # Qwen3NextRMSNormGated: weight as is, times silu(z)
            o = rms_norm(heads[h][t], nw, eps)
            y += [a * silu(zz) for a, zz in zip(o, rows[t][1][h * dv:(h + 1) * dv])]
        out.append(linear(ow, y))
    return out


def hybrid_rope(cfg, HD):
    """inv_freq over the rotary part (head_dim x partial_rotary_factor), rope_theta from rope_parameters
    (Qwen3.5) or the top level (Qwen3-Next)."""
    rp = cfg.get("rope_parameters") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    prf = rp.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))
    rot = int(HD * prf)
    return [theta ** (-2.0 * i / rot) for i in range(rot // 2)], rot


def gated_attention(m, cfg, p, xs):
    """Qwen3NextAttention: q_proj doubled (per head query | gate), zero-centred q/k norms, partial RoPE,
    GQA, output * sigmoid(gate), o_proj."""
    H, KV, HD = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    eps = cfg.get("rms_norm_eps", 1e-6)
    inv, rot = hybrid_rope(cfg, HD)
    Q, K, V, G = [], [], [], []
    for pos, x in enumerate(xs):
        qg = linear(m.get(p + "q_proj.weight"), x)
        k, v = linear(m.get(p + "k_proj.weight"), x), linear(m.get(p + "v_proj.weight"), x)
        qh = [zc_rms_norm(qg[2 * h * HD:(2 * h + 1) * HD], m.get(p + "q_norm.weight"), eps) for h in range(H)]
        G.append(sum((qg[(2 * h + 1) * HD:(2 * h + 2) * HD] for h in range(H)), []))
        kh = [zc_rms_norm(k[h * HD:(h + 1) * HD], m.get(p + "k_norm.weight"), eps) for h in range(KV)]
        Q.append([rotate_half_rope(t[:rot], pos, inv, 1.0) + t[rot:] for t in qh])
        K.append([rotate_half_rope(t[:rot], pos, inv, 1.0) + t[rot:] for t in kh])
        V.append([v[h * HD:(h + 1) * HD] for h in range(KV)])
    heads = [attend([t[h] for t in Q], [t[h // (H // KV)] for t in K], [t[h // (H // KV)] for t in V],
                    HD ** -0.5, 0) for h in range(H)]
    o_w = m.get(p + "o_proj.weight")
    out = []
    for t in range(len(xs)):
        att = sum((heads[h][t] for h in range(H)), [])
        out.append(linear(o_w, [a * sigmoid(gg) for a, gg in zip(att, G[t])]))
    return out


def hybrid_moe(m, cfg, arch, p, x):
    """Qwen3NextSparseMoeBlock: softmax top-k (renormalised: always for Qwen3.5, norm_topk_prob for
    Qwen3-Next), experts per-expert or fused gate_up_proj, shared expert * sigmoid(shared_expert_gate)."""
    norm = True if arch == "qwen3_5_moe" else cfg.get("norm_topk_prob", True)
    idx, w = route_softmax_topk(linear(m.get(p + "gate.weight"), x), cfg["num_experts_per_tok"], norm)
    F = cfg["moe_intermediate_size"]
    out = [0.0] * len(x)
    for e, we in zip(idx, w):
        if m.has(p + "experts.gate_up_proj"):
            gu = m.get(p + "experts.gate_up_proj")[e]
            y = swiglu_mlp(x, gu[:F], gu[F:], m.get(p + "experts.down_proj")[e])
        else:
            q = p + "experts.%d." % e
            y = swiglu_mlp(x, m.get(q + "gate_proj.weight"), m.get(q + "up_proj.weight"), m.get(q + "down_proj.weight"))
        out = [a + we * b for a, b in zip(out, y)]
    s = p + "shared_expert."
    y = swiglu_mlp(x, m.get(s + "gate_proj.weight"), m.get(s + "up_proj.weight"), m.get(s + "down_proj.weight"))
    gsh = sigmoid(linear(m.get(p + "shared_expert_gate.weight"), x)[0])
    return [a + gsh * b for a, b in zip(out, y)]


def hybrid_forward(m, arch, tokens, chunk):
    cfg = m.cfg["text_config"] if arch == "qwen3_5_moe" else m.cfg
    pre = "model.language_model." if arch == "qwen3_5_moe" else "model."
    L, eps = cfg["num_hidden_layers"], cfg.get("rms_norm_eps", 1e-6)
    types = cfg.get("layer_types") or [
        "full_attention" if (i + 1) % cfg.get("full_attention_interval", 4) == 0 else "linear_attention"
        for i in range(L)]
    emb = m.get(pre + "embed_tokens.weight")
    xs = [list(emb[t]) for t in tokens]
    for i in range(L):
        p = pre + "layers.%d." % i
        hs = [zc_rms_norm(x, m.get(p + "input_layernorm.weight"), eps) for x in xs]
        if types[i] == "linear_attention":
            mix = gated_deltanet(m, cfg, p + "linear_attn.", hs, chunk)
        else:
            mix = gated_attention(m, cfg, p + "self_attn.", hs)
        xs = [[a + b for a, b in zip(x, y)] for x, y in zip(xs, mix)]
        hs = [zc_rms_norm(x, m.get(p + "post_attention_layernorm.weight"), eps) for x in xs]
        moe = (cfg.get("num_experts", 0) > 0 and i not in cfg.get("mlp_only_layers", [])
               and (i + 1) % cfg.get("decoder_sparse_step", 1) == 0)
        if moe:
            ff = [hybrid_moe(m, cfg, arch, p + "mlp.", h) for h in hs]
        else:
            ff = [swiglu_mlp(h, m.get(p + "mlp.gate_proj.weight"), m.get(p + "mlp.up_proj.weight"),
                             m.get(p + "mlp.down_proj.weight")) for h in hs]
        xs = [[a + b for a, b in zip(x, y)] for x, y in zip(xs, ff)]
    tied = cfg.get("tie_word_embeddings", m.cfg.get("tie_word_embeddings", False))
    head = emb if tied else m.get("lm_head.weight")
    return [linear(head, zc_rms_norm(x, m.get(pre + "norm.weight"), eps)) for x in xs]
