"""hf_gguf - write a Hugging Face checkpoint as an F32 GGUF file the way llama.cpp's
convert_hf_to_gguf.py does (its tensor names, its {arch}.* keys, its Q/K row permutation for
the Llama-style models, its expert stacking), for the families the golden checkpoints cover.
A test helper, standard library only: it lets the GGUF path of every family be checked against
the golden logits. Its Mixtral output equals the tensors of ../shared/gguf/mixtral (written by
llama.cpp's own converter), which checks this writer itself.

DeepSeek's MLA is written in three forms to cover the readers: V2 with only the fused
attn_kv_b (older converters), V3 with only llama.cpp's 3-D attn_k_b/attn_v_b.

gpt-oss is written as llama.cpp's GptOssModel writes it: arch "gpt-oss", the experts kept in
MXFP4 (ggml type 39, HF's nibbles repacked, scales unchanged), gate/up split from HF's
interleaved rows, biases, sinks, post_attention_norm, attention.sliding_window, the YaRN keys.

GLM-4.5 (Glm4MoeModel, arch glm4moe), GLM-4.7-Flash (Glm4MoeLiteModel: deepseek2) and the hybrids
Qwen3-Next (Qwen3NextModel, qwen3next) and Qwen3.5-MoE (Qwen3_5MoeTextModel, qwen35moe) follow
llama.cpp's conversion/glm.py and conversion/qwen.py: block_count counts the MTP layers, whose
tensors are written (blk.L.*, blk.L.nextn.*); post_attention_layernorm is post_attention_norm;
the hybrids' zero-centred norms get + 1 and A_log becomes -exp(A_log), both computed in float32
(in f16 for an f16 weight: the converter widens every other dtype first); Qwen3-Next's in_proj_qkvz is
split into attn_qkv (all q | all k | all v) and attn_gate, in_proj_ba kept as ssm_ba; Qwen3.5's
value heads are reordered from grouped to tiled (_LinearAttentionVReorderBase)."""

import json
import math
import os
import struct
import sys

import ggufio
from ggufio import ARRAY, BOOL, F32, STRING, U32

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)
import safetensors_io as st  # noqa: E402


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


ARCH = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "granitemoe": "granitemoe",
        "deepseek_v2": "deepseek2", "deepseek_v3": "deepseek2", "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
        "olmoe": "olmoe", "gpt_oss": "gpt-oss", "glm4_moe": "glm4moe", "glm4_moe_lite": "deepseek2",
        "qwen3_next": "qwen3next", "qwen3_5_moe": "qwen35moe"}
GGML_MXFP4 = 39


class Writer:
    def __init__(self, src):
        with open(os.path.join(src, "config.json")) as f:
            self.cfg = json.load(f)
        mt = self.cfg["model_type"]
        if "text_config" in self.cfg:  # TextModel: the decoder's config moved to the top level
            self.cfg = dict(self.cfg, **self.cfg["text_config"])
        self.w = st.read_folder(src)
        self.g = ggufio.GGUF()
        self.arch = ARCH[mt]

    def f32(self, name):
        t = self.w[name]
        return list(t.shape), st.to_f32(t.dtype, t.read())

    def mapped(self, name, fn):
        """fn of every value as llama.cpp's converter computes it: its prepare_tensors widens
        everything but F16 to float32 before modify_tensors, so a bf16 or f32 weight is mapped in
        float32 and an f16 one in f16 (rounded to f16); stored as F32."""
        t = self.w[name]
        shape, data = self.f32(name)
        vals = [fn(x) for x in struct.unpack("<%df" % (len(data) // 4), data)]
        fmt = "<%de" if t.dtype == "F16" else "<%df"
        return shape, struct.pack("<%df" % len(vals), *struct.unpack(fmt % len(vals), struct.pack(fmt % len(vals), *vals)))

    def add(self, name, shape, data):
        self.g.tensors.append(ggufio.Tensor(name, list(reversed(shape)), 0, data))

    def add_typed(self, name, shape, gtype, data):
        self.g.tensors.append(ggufio.Tensor(name, list(reversed(shape)), gtype, data))

    def copy(self, gname, hname):
        self.add(gname, *self.f32(hname))

    def stack(self, gname, hnames):
        parts = [self.f32(h) for h in hnames]
        self.add(gname, [len(parts)] + parts[0][0], b"".join(p[1] for p in parts))

    def permuted(self, gname, hname, n_head):
        """llama.cpp's LlamaModel.permute: each head's rows from rotate-half order into
        interleaved pairs (row 2i+j of a head <- row j*hd/2+i)."""
        shape, data = self.f32(hname)
        rows, cols = shape
        hd = rows // n_head
        rb = cols * 4
        out = []
        for h in range(n_head):
            for i in range(hd // 2):
                for j in range(2):
                    r = h * hd + j * (hd // 2) + i
                    out.append(data[r * rb:(r + 1) * rb])
        self.add(gname, shape, b"".join(out))

    def key(self, suffix, vtype, value):
        self.g.set("%s.%s" % (self.arch, suffix), vtype, value)


def write(src, out, tile=True, fuse=None, qkvz=None):
    """tile=False (a negative control) leaves Qwen3.5's value heads in HF's grouped order;
    fuse="gate_up" writes the experts as llama.cpp's converter does with --fuse-gate-up-exps
    (fuse_gate_up; "up_gate", a negative control, puts the halves the wrong way round);
    qkvz="ssm_in" writes Qwen3-Next's in_proj_qkvz as the older mainline converter did (one
    ssm_in, HF's rows as they are; "flat", a negative control, in the all-q|all-k|all-v|all-z order)."""
    w = Writer(src)
    w.fuse = fuse
    if w.arch in ("qwen3next", "qwen35moe"):
        return write_hybrid(w, src, out, tile, qkvz)
    c, arch, g = w.cfg, w.arch, w.g
    mt = c["model_type"]
    L, D, H = c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"]
    KV = c.get("num_key_value_heads", H)
    HD = c.get("head_dim", D // H)
    g.set("general.architecture", STRING, arch.encode())
    g.set("general.name", STRING, os.path.basename(os.path.abspath(src)).encode())
    n_mtp = c.get("num_nextn_predict_layers") or 0
    glm = mt == "glm4_moe"
    lite = mt == "glm4_moe_lite"  # Glm4MoeLiteModel keeps its MTP layers; DeepseekV2Model drops them
    n_blocks = L + n_mtp if glm or lite else L
    w.key("block_count", U32, n_blocks)
    w.key("context_length", U32, c["max_position_embeddings"])
    w.key("embedding_length", U32, D)
    w.key("feed_forward_length", U32, c["intermediate_size"])
    ds = arch == "deepseek2"
    # mainline's DeepseekV2Model (since its MLA rewrite) stores MLA as MQA: one KV head of
    # kv_lora + rope key / kv_lora value dims, the per-head dims in *_length_mla; V2 stands for
    # the older converters (config's KV heads, per-head key/value lengths, fused attn_kv_b)
    mqa = ds and mt != "deepseek_v2"
    w.key("attention.head_count", U32, H)
    w.key("attention.head_count_kv", U32, 1 if mqa else KV)
    w.key("rope.freq_base", F32, float(c.get("rope_theta", 10000)))
    w.key("attention.layer_norm_rms_epsilon", F32, c["rms_norm_eps"])
    w.key("vocab_size", U32, c["vocab_size"])
    pair = mt in ("mixtral", "granitemoe", "llama")  # llama.cpp permutes Q/K of the Llama-derived models
    if glm:
        w.key("rope.dimension_count", U32, int(HD * c.get("partial_rotary_factor", 0.5)))
    elif not ds:
        w.key("rope.dimension_count", U32, HD)
    if mt in ("qwen3_moe", "qwen3", "gpt_oss") or glm:
        w.key("attention.key_length", U32, HD)
        w.key("attention.value_length", U32, HD)
    E = c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts") or 0
    if E:
        w.key("expert_count", U32, E)
        w.key("expert_used_count", U32, c["num_experts_per_tok"])
    if c.get("clip_qkv"):
        w.key("attention.clamp_kqv", F32, c["clip_qkv"])
    if mt in ("qwen2_moe", "qwen3_moe") or ds or glm:
        w.key("expert_feed_forward_length", U32, c["moe_intermediate_size"])
    if mt == "gpt_oss":
        gpt_oss_keys(w, c)
    if glm:  # TextModel's generic keys, then Glm4MoeModel's
        if c.get("n_group") is not None:
            w.key("expert_group_count", U32, c["n_group"])
            w.key("expert_group_used_count", U32, c["topk_group"])
        w.key("expert_shared_count", U32, c["n_shared_experts"])
        w.key("leading_dense_block_count", U32, c["first_k_dense_replace"])
        w.key("expert_gating_func", U32, 2)
        w.key("expert_weights_scale", F32, c["routed_scaling_factor"])
        w.key("expert_weights_norm", BOOL, bool(c["norm_topk_prob"]))
        w.key("nextn_predict_layers", U32, n_mtp)
    if lite and n_mtp:
        w.key("nextn_predict_layers", U32, n_mtp)
    if mt == "qwen2_moe":
        w.key("expert_shared_feed_forward_length", U32, c["shared_expert_intermediate_size"])
    if mt == "granitemoe":
        w.key("attention.scale", F32, c["attention_multiplier"])
        w.key("embedding_scale", F32, c["embedding_multiplier"])
        w.key("residual_scale", F32, c["residual_multiplier"])
        w.key("logit_scale", F32, c["logits_scaling"])
    if ds:
        nope, rope, vd = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        w.key("leading_dense_block_count", U32, c["first_k_dense_replace"])
        if c.get("q_lora_rank"):
            w.key("attention.q_lora_rank", U32, c["q_lora_rank"])
        w.key("attention.kv_lora_rank", U32, c["kv_lora_rank"])
        if mqa:
            w.key("attention.key_length", U32, c["kv_lora_rank"] + rope)
            w.key("attention.value_length", U32, c["kv_lora_rank"])
            w.key("attention.key_length_mla", U32, nope + rope)
            w.key("attention.value_length_mla", U32, vd)
        else:
            w.key("attention.key_length", U32, nope + rope)
            w.key("attention.value_length", U32, vd)
        w.key("rope.dimension_count", U32, rope)
        w.key("expert_shared_count", U32, c.get("n_shared_experts", 0))
        if c.get("routed_scaling_factor") is not None:
            w.key("expert_weights_scale", F32, c["routed_scaling_factor"])
        if c.get("norm_topk_prob"):  # written only when true
            w.key("expert_weights_norm", BOOL, True)
        # TextModel's generic keys: the gating function only from a scoring_func in the config;
        # GLM-4.7-Flash's names none (its router is always sigmoid), so its file has no key and the
        # loaders infer it (gguf_view.c default_gating)
        if "scoring_func" in c:
            w.key("expert_gating_func", U32, 2 if c["scoring_func"] == "sigmoid" else 1)
        if c.get("n_group") is not None:
            w.key("expert_group_count", U32, c["n_group"])
        if c.get("topk_group") is not None:
            w.key("expert_group_used_count", U32, c["topk_group"])
        rs = c.get("rope_scaling")
        if rs and rs.get("type", rs.get("rope_type")) == "yarn":
            w.key("rope.scaling.type", STRING, b"yarn")
            w.key("rope.scaling.factor", F32, rs["factor"])
            w.key("rope.scaling.original_context_length", U32, rs["original_max_position_embeddings"])
            for x in ("beta_fast", "beta_slow"):
                if x in rs:
                    w.key("rope.scaling.yarn_" + x, F32, rs[x])
            w.key("rope.scaling.yarn_log_multiplier", F32, 0.1 * rs["mscale_all_dim"])

    w.copy("token_embd.weight", "model.embed_tokens.weight")
    w.copy("output_norm.weight", "model.norm.weight")
    if not c.get("tie_word_embeddings") and "lm_head.weight" in w.w:
        w.copy("output.weight", "lm_head.weight")
    for i in range(n_blocks):
        p, b = "model.layers.%d." % i, "blk.%d." % i
        w.copy(b + "attn_norm.weight", p + "input_layernorm.weight")
        if mt == "gpt_oss":
            gpt_oss_layer(w, p, b, E)
            continue
        w.copy(b + ("post_attention_norm.weight" if glm else "ffn_norm.weight"), p + "post_attention_layernorm.weight")
        if i >= L:  # the MTP layer's own tensors (gguf-py's NEXTN_*)
            for h, x in (("eh_proj", "eh_proj"), ("embed_tokens", "embed_tokens"), ("enorm", "enorm"),
                         ("hnorm", "hnorm"), ("shared_head.head", "shared_head_head"),
                         ("shared_head.norm", "shared_head_norm")):
                w.copy(b + "nextn.%s.weight" % x, p + h + ".weight")
        a = p + "self_attn."
        if ds:
            if c.get("q_lora_rank"):
                w.copy(b + "attn_q_a.weight", a + "q_a_proj.weight")
                w.copy(b + "attn_q_a_norm.weight", a + "q_a_layernorm.weight")
                w.copy(b + "attn_q_b.weight", a + "q_b_proj.weight")
            else:
                w.copy(b + "attn_q.weight", a + "q_proj.weight")
            w.copy(b + "attn_kv_a_mqa.weight", a + "kv_a_proj_with_mqa.weight")
            w.copy(b + "attn_kv_a_norm.weight", a + "kv_a_layernorm.weight")
            shape, kvb = w.f32(a + "kv_b_proj.weight")
            kl = shape[1]
            if mt == "deepseek_v2":
                w.add(b + "attn_kv_b.weight", shape, kvb)
            else:  # llama.cpp's split: k_b [H, kv_lora, nope] (transposed), v_b [H, v, kv_lora]
                vals = struct.unpack("<%df" % (len(kvb) // 4), kvb)
                kb, vb = [], []
                for h in range(H):
                    base = h * (nope + vd)
                    for col in range(kl):
                        kb.extend(vals[(base + r) * kl + col] for r in range(nope))
                    vb.extend(vals[(base + nope) * kl:(base + nope + vd) * kl])
                w.add(b + "attn_k_b.weight", [H, kl, nope], struct.pack("<%df" % len(kb), *kb))
                w.add(b + "attn_v_b.weight", [H, vd, kl], struct.pack("<%df" % len(vb), *vb))
            w.copy(b + "attn_output.weight", a + "o_proj.weight")
        else:
            if pair:
                w.permuted(b + "attn_q.weight", a + "q_proj.weight", H)
                w.permuted(b + "attn_k.weight", a + "k_proj.weight", KV)
            else:
                w.copy(b + "attn_q.weight", a + "q_proj.weight")
                w.copy(b + "attn_k.weight", a + "k_proj.weight")
            w.copy(b + "attn_v.weight", a + "v_proj.weight")
            w.copy(b + "attn_output.weight", a + "o_proj.weight")
            for x in "qkv":
                if a + x + "_proj.bias" in w.w:
                    w.copy(b + "attn_%s.bias" % x, a + x + "_proj.bias")
            if a + "q_norm.weight" in w.w:
                w.copy(b + "attn_q_norm.weight", a + "q_norm.weight")
                w.copy(b + "attn_k_norm.weight", a + "k_norm.weight")
        dense = ((ds or glm) and i < c["first_k_dense_replace"]) or not E
        m = p + "mlp."
        if dense:
            for x in ("gate", "up", "down"):
                w.copy(b + "ffn_%s.weight" % x, m + x + "_proj.weight")
            continue
        if mt == "mixtral":
            s = p + "block_sparse_moe."
            w.copy(b + "ffn_gate_inp.weight", s + "gate.weight")
            for x, h in (("gate", "w1"), ("up", "w3"), ("down", "w2")):
                w.stack(b + "ffn_%s_exps.weight" % x, [s + "experts.%d.%s.weight" % (e, h) for e in range(E)])
        elif mt == "granitemoe":
            s = p + "block_sparse_moe."
            w.copy(b + "ffn_gate_inp.weight", s + "router.layer.weight")
            shape, data = w.f32(s + "input_linear.weight")  # [E, 2F, D]: gate rows then up rows
            F = shape[1] // 2
            per = 2 * F * D * 4
            w.add(b + "ffn_gate_exps.weight", [E, F, D], b"".join(data[e * per:e * per + F * D * 4] for e in range(E)))
            w.add(b + "ffn_up_exps.weight", [E, F, D], b"".join(data[e * per + F * D * 4:(e + 1) * per] for e in range(E)))
            w.copy(b + "ffn_down_exps.weight", s + "output_linear.weight")
        else:
            w.copy(b + "ffn_gate_inp.weight", m + "gate.weight")
            if m + "gate.e_score_correction_bias" in w.w:
                w.copy(b + "exp_probs_b.bias", m + "gate.e_score_correction_bias")
            for x in ("gate", "up", "down"):
                w.stack(b + "ffn_%s_exps.weight" % x, [m + "experts.%d.%s_proj.weight" % (e, x) for e in range(E)])
            sh = m + ("shared_expert." if mt == "qwen2_moe" else "shared_experts.")
            if sh + "gate_proj.weight" in w.w:
                for x in ("gate", "up", "down"):
                    w.copy(b + "ffn_%s_shexp.weight" % x, sh + x + "_proj.weight")
            if m + "shared_expert_gate.weight" in w.w:
                w.copy(b + "ffn_gate_inp_shexp.weight", m + "shared_expert_gate.weight")
    if os.path.exists(os.path.join(src, "tokenizer.json")):
        add_tokenizer(g, src)
    return finish(w, out)


def finish(w, out):
    if w.fuse:
        fuse_gate_up(w.g, w.fuse == "up_gate")
    return w.g.write(out)


def fuse_gate_up(g, swap=False):
    """llama.cpp's --fuse-gate-up-exps (ModelBase.modify_tensors; GptOssModel for its MXFP4
    experts and biases): each layer's ffn_gate_exps and ffn_up_exps become one ffn_gate_up_exps,
    torch.cat([gate, up], dim=1) of the stacked [E, F, D] tensors, so expert e holds its F gate
    rows then its F up rows (any type: whole rows move); the biases likewise, [E, 2F]. Their
    loader and graph read it so (create_tensor_gate_up_exps; build_moe_ffn's gate view at 0,
    up at n_ff), as ik_llama.cpp's fused kernel does (gate at the expert's start, up at half)."""
    by = {t.name: t for t in g.tensors}
    out = []
    for t in g.tensors:
        if ".ffn_up_exps." in t.name:
            continue
        if ".ffn_gate_exps." not in t.name:
            out.append(t)
            continue
        up = by[t.name.replace(".ffn_gate_exps.", ".ffn_up_exps.")]
        assert (up.ne, up.type) == (t.ne, t.type)
        E = t.ne[-1]
        per = len(t.data) // E
        halves = (up, t) if swap else (t, up)
        data = b"".join(h.data[e * per:(e + 1) * per] for e in range(E) for h in halves)
        ne = list(t.ne)
        ne[-2] *= 2  # rows of a weight [D, F, E], values of a bias [F, E]
        out.append(ggufio.Tensor(t.name.replace(".ffn_gate_exps.", ".ffn_gate_up_exps."), ne, t.type, data))
    g.tensors[:] = out


def gpt_oss_keys(w, c):
    """GptOssModel.set_gguf_parameters: the base keys plus sliding_window and
    expert_feed_forward_length; the rope_scaling dict gives the YaRN keys (truncate is not written)."""
    w.key("expert_feed_forward_length", U32, c["intermediate_size"])
    w.key("attention.sliding_window", U32, c["sliding_window"])
    rs = c["rope_scaling"]
    w.key("rope.scaling.type", STRING, b"yarn")
    w.key("rope.scaling.factor", F32, rs["factor"])
    w.key("rope.scaling.original_context_length", U32, rs["original_max_position_embeddings"])
    w.key("rope.scaling.yarn_beta_fast", F32, rs["beta_fast"])
    w.key("rope.scaling.yarn_beta_slow", F32, rs["beta_slow"])


def hf_mxfp4_to_ggml(blocks, scales):
    """One block at a time, as GptOssModel.transform_nibble_layout leaves it: HF's byte k holds
    element 2k (low nibble) and 2k + 1 (high); ggml's block is the scale byte, then byte j holding
    element j (low) and j + 16 (high)."""
    out = bytearray()
    for g, e in enumerate(scales):
        blk = blocks[16 * g:16 * g + 16]
        codes = []
        for byte in blk:
            codes += [byte & 15, byte >> 4]
        out.append(e)
        out += bytes(codes[j] | codes[j + 16] << 4 for j in range(16))
    return bytes(out)


def gpt_oss_layer(w, p, b, E):
    """One layer (attn_norm already written) in llama.cpp's gpt-oss names."""
    a, m = p + "self_attn.", p + "mlp."
    w.copy(b + "post_attention_norm.weight", p + "post_attention_layernorm.weight")
    for x in "qkv":
        w.copy(b + "attn_%s.weight" % x, a + x + "_proj.weight")
        w.copy(b + "attn_%s.bias" % x, a + x + "_proj.bias")
    w.copy(b + "attn_output.weight", a + "o_proj.weight")
    w.copy(b + "attn_output.bias", a + "o_proj.bias")
    w.copy(b + "attn_sinks.weight", a + "sinks")
    w.copy(b + "ffn_gate_inp.weight", m + "router.weight")
    w.copy(b + "ffn_gate_inp.bias", m + "router.bias")
    x = m + "experts."
    for proj, names in (("gate_up_proj", ("ffn_gate_exps", "ffn_up_exps")), ("down_proj", ("ffn_down_exps",))):
        blk, sc = w.w[x + proj + "_blocks"], w.w[x + proj + "_scales"]
        _, R, nb, _ = blk.shape
        bd, sd = blk.read(), sc.read()
        rows = [hf_mxfp4_to_ggml(bd[r * nb * 16:(r + 1) * nb * 16], sd[r * nb:(r + 1) * nb]) for r in range(E * R)]
        shape, bias = w.f32(x + proj + "_bias")
        for k, name in enumerate(names):  # gate_up: gate rows even, up rows odd
            step = len(names)
            pick = [rows[e * R + r] for e in range(E) for r in range(k, R, step)]
            w.add_typed(b + name + ".weight", [E, R // step, nb * 32], GGML_MXFP4, b"".join(pick))
            vals = [bias[i * 4:i * 4 + 4] for i in range(E * R)]
            w.add(b + name + ".bias", [E, R // step], b"".join(vals[e * R + r] for e in range(E) for r in range(k, R, step)))


def tiled(n_k, r, width):
    """Qwen3.5's value-head reorder (_LinearAttentionVReorderBase._reorder_v_heads): the block of
    `width` rows (or values) of value head j*r + i (grouped by key head j) moves to i*n_k + j."""
    order = [0] * (n_k * r)
    for j in range(n_k):
        for i in range(r):
            order[i * n_k + j] = j * r + i
    return [h * width + x for h in order for x in range(width)]


def pick_rows(data, ncols, rows):
    rb = ncols * 4
    return b"".join(data[r * rb:(r + 1) * rb] for r in rows)


def write_hybrid(w, src, out, tile_v=True, qkvz=None):
    """Qwen3-Next / Qwen3.5-MoE as Qwen3NextModel / Qwen3_5MoeTextModel write them. Qwen3-Next's
    in_proj_qkvz: today's converter splits it into attn_qkv (q | k | v over all key heads) and
    attn_gate (z); before that (llama.cpp's first Qwen3-Next support, still read by its loader and
    by ik_llama.cpp's, whose graph splits the product per key head) it went through unchanged as
    ssm_in (qkvz="ssm_in")."""
    c, g = w.cfg, w.g
    qwen35 = w.arch == "qwen35moe"
    pre = "model.language_model." if qwen35 else "model."
    L, D, H = c["num_hidden_layers"], c["hidden_size"], c["num_attention_heads"]
    KV, HD = c["num_key_value_heads"], c["head_dim"]
    nk, nv = c["linear_num_key_heads"], c["linear_num_value_heads"]
    dk, dv, K = c["linear_key_head_dim"], c["linear_value_head_dim"], c["linear_conv_kernel_dim"]
    r, kw, vw = nv // nk, nk * dk, nv * dv
    # Qwen3-Next's converter drops mtp.*; Qwen3.5's keeps them (this writer has none to write)
    n_mtp = c.get("mtp_num_hidden_layers", 0) if qwen35 and any(n.startswith("mtp.") for n in w.w) else 0
    if n_mtp:
        raise NotImplementedError("Qwen3.5 MTP layers")
    rp = c.get("rope_parameters") or {}
    g.set("general.architecture", STRING, w.arch.encode())
    g.set("general.name", STRING, os.path.basename(os.path.abspath(src)).encode())
    w.key("block_count", U32, L + n_mtp)
    w.key("context_length", U32, c["max_position_embeddings"])
    w.key("embedding_length", U32, D)
    if "intermediate_size" in c:
        w.key("feed_forward_length", U32, c["intermediate_size"])
    w.key("attention.head_count", U32, H)
    w.key("attention.head_count_kv", U32, KV)
    if "mrope_section" in rp:
        w.key("rope.dimension_sections", ARRAY, (ggufio.I32, (list(rp["mrope_section"]) + [0, 0, 0, 0])[:4]))
    elif qwen35:
        w.key("rope.dimension_sections", ARRAY, (ggufio.I32, [11, 11, 10, 0]))
    w.key("rope.freq_base", F32, float(rp.get("rope_theta", c.get("rope_theta", 10000))))
    w.key("attention.layer_norm_rms_epsilon", F32, c["rms_norm_eps"])
    w.key("expert_count", U32, c["num_experts"])
    w.key("expert_used_count", U32, c["num_experts_per_tok"])
    w.key("attention.key_length", U32, HD)
    w.key("attention.value_length", U32, HD)
    w.key("expert_feed_forward_length", U32, c["moe_intermediate_size"])
    w.key("expert_shared_feed_forward_length", U32, c["shared_expert_intermediate_size"])
    w.key("ssm.conv_kernel", U32, K)
    w.key("ssm.state_size", U32, dk)
    w.key("ssm.group_count", U32, nk)
    w.key("ssm.time_step_rank", U32, nv)
    w.key("ssm.inner_size", U32, vw)
    w.key("full_attention_interval", U32, c.get("full_attention_interval", 4))
    w.key("rope.dimension_count", U32, int(HD * c.get("partial_rotary_factor", 0.25)))
    if n_mtp:
        w.key("nextn_predict_layers", U32, n_mtp)
    w.key("vocab_size", U32, c["vocab_size"])

    one = lambda x: x + 1.0  # noqa: E731  the zero-centred norms, + 1 in the checkpoint's dtype
    tile = qwen35 and nk != nv and tile_v
    vrows = tiled(nk, r, dv) if tile else list(range(vw))
    hrows = tiled(nk, r, 1) if tile else list(range(nv))

    def add_rows(gname, shape, data, rows):
        w.add(gname, [len(rows)] + shape[1:], pick_rows(data, shape[-1] if len(shape) > 1 else 1, rows))

    w.copy("token_embd.weight", pre + "embed_tokens.weight")
    w.add("output_norm.weight", *w.mapped(pre + "norm.weight", one))
    if not c.get("tie_word_embeddings"):
        w.copy("output.weight", "lm_head.weight")
    for i in range(L):
        p, b = pre + "layers.%d." % i, "blk.%d." % i
        w.add(b + "attn_norm.weight", *w.mapped(p + "input_layernorm.weight", one))
        w.add(b + "post_attention_norm.weight", *w.mapped(p + "post_attention_layernorm.weight", one))
        a = p + "linear_attn."
        if a + "A_log" in w.w:
            if qwen35:
                shape, qkv = w.f32(a + "in_proj_qkv.weight")
                add_rows(b + "attn_qkv.weight", shape, qkv, list(range(2 * kw)) + [2 * kw + x for x in vrows])
                shape, z = w.f32(a + "in_proj_z.weight")
                add_rows(b + "attn_gate.weight", shape, z, vrows)
                for x, y in (("b", "beta"), ("a", "alpha")):
                    shape, t = w.f32(a + "in_proj_%s.weight" % x)
                    add_rows(b + "ssm_%s.weight" % y, shape, t, hrows)
            else:  # [q_j, k_j, v_j, z_j] per key head j -> q | k | v rows and z rows
                shape, qkvz_w = w.f32(a + "in_proj_qkvz.weight")
                gsz = 2 * dk + 2 * r * dv
                heads = range(nk)
                rows = ([j * gsz + x for j in heads for x in range(dk)] + [j * gsz + dk + x for j in heads for x in range(dk)]
                        + [j * gsz + 2 * dk + x for j in heads for x in range(r * dv)])
                zrows = [j * gsz + 2 * dk + r * dv + x for j in heads for x in range(r * dv)]
                if qkvz == "ssm_in":
                    w.add(b + "ssm_in.weight", shape, qkvz_w)
                elif qkvz == "flat":
                    add_rows(b + "ssm_in.weight", shape, qkvz_w, rows + zrows)
                else:
                    add_rows(b + "attn_qkv.weight", shape, qkvz_w, rows)
                    add_rows(b + "attn_gate.weight", shape, qkvz_w, zrows)
                w.copy(b + "ssm_ba.weight", a + "in_proj_ba.weight")
            shape, conv = w.f32(a + "conv1d.weight")  # [ch, 1, K], squeezed
            add_rows(b + "ssm_conv1d.weight", [shape[0], K], conv, list(range(2 * kw)) + [2 * kw + x for x in vrows])
            shape, alog = w.mapped(a + "A_log", lambda x: -math.exp(x))
            add_rows(b + "ssm_a", shape, alog, hrows)
            shape, dt = w.f32(a + "dt_bias")
            add_rows(b + "ssm_dt.bias", shape, dt, hrows)
            w.copy(b + "ssm_norm.weight", a + "norm.weight")
            shape, o = w.f32(a + "out_proj.weight")  # columns in the tiled order
            cols = vrows
            w.add(b + "ssm_out.weight", shape, b"".join(
                struct.pack("<%df" % vw, *[struct.unpack_from("<f", o, (row * vw + col) * 4)[0] for col in cols])
                for row in range(shape[0])))
        else:
            s = p + "self_attn."
            for x, y in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "output")):
                w.copy(b + "attn_%s.weight" % y, s + x + "_proj.weight")
            w.add(b + "attn_q_norm.weight", *w.mapped(s + "q_norm.weight", one))
            w.add(b + "attn_k_norm.weight", *w.mapped(s + "k_norm.weight", one))
        m = p + "mlp."
        w.copy(b + "ffn_gate_inp.weight", m + "gate.weight")
        E, F = c["num_experts"], c["moe_intermediate_size"]
        if m + "experts.gate_up_proj" in w.w:  # Qwen2MoeModel: gate = first F rows of each expert, up = the rest
            shape, gu = w.f32(m + "experts.gate_up_proj")
            per = 2 * F * D * 4
            w.add(b + "ffn_gate_exps.weight", [E, F, D], b"".join(gu[e * per:e * per + F * D * 4] for e in range(E)))
            w.add(b + "ffn_up_exps.weight", [E, F, D], b"".join(gu[e * per + F * D * 4:(e + 1) * per] for e in range(E)))
            w.copy(b + "ffn_down_exps.weight", m + "experts.down_proj")
        else:
            for x in ("gate", "up", "down"):
                w.stack(b + "ffn_%s_exps.weight" % x, [m + "experts.%d.%s_proj.weight" % (e, x) for e in range(E)])
        for x in ("gate", "up", "down"):
            w.copy(b + "ffn_%s_shexp.weight" % x, m + "shared_expert.%s_proj.weight" % x)
        w.copy(b + "ffn_gate_inp_shexp.weight", m + "shared_expert_gate.weight")
    if os.path.exists(os.path.join(src, "tokenizer.json")):
        add_tokenizer(g, src)
    return finish(w, out)


def add_tokenizer(g, src, pre=b"gpt-2"):
    """tokenizer.ggml.* from tokenizer.json: byte-level BPE (the golden checkpoints' kind), with the
    pre-tokenizer name llama.cpp's converter picks (gpt-4o for gpt-oss's o200k_harmony)."""
    with open(os.path.join(src, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    vocab = tj["model"]["vocab"]
    n = max(list(vocab.values()) + [a["id"] for a in tj.get("added_tokens", [])]) + 1
    toks, types = [b"[PAD%d]" % i for i in range(n)], [5] * n
    for s, i in vocab.items():
        toks[i], types[i] = s.encode(), 1
    for a in tj.get("added_tokens", []):
        toks[a["id"]], types[a["id"]] = a["content"].encode(), 3 if a.get("special") else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"].get("merges", [])]
    g.set("tokenizer.ggml.model", STRING, b"gpt2")
    g.set("tokenizer.ggml.pre", STRING, pre)
    g.set("tokenizer.ggml.tokens", ARRAY, (STRING, toks))
    g.set("tokenizer.ggml.token_type", ARRAY, (ggufio.I32, types))
    g.set("tokenizer.ggml.merges", ARRAY, (STRING, [m.encode() for m in merges]))
    add_special(g, src, {t.decode(): i for i, t in enumerate(toks)})


def add_special(g, src, ids):
    """From tokenizer_config.json, as llama.cpp's SpecialVocab: the BOS / EOS ids and the chat
    template (a string, or the named-list form's "default" as tokenizer.chat_template and the
    others as tokenizer.chat_template.NAME)."""
    path = os.path.join(src, "tokenizer_config.json")
    if not os.path.exists(path):
        return
    tc = read_json(path)
    for kind in ("bos", "eos"):
        tok = tc.get(kind + "_token")
        if isinstance(tok, dict):  # the AddedToken form
            tok = tok.get("content")
        if tok in ids:
            g.set("tokenizer.ggml.%s_token_id" % kind, U32, ids[tok])
    tmpl = tc.get("chat_template")
    if isinstance(tmpl, str):
        g.set("tokenizer.chat_template", STRING, tmpl.encode())
    elif isinstance(tmpl, list):
        for t in tmpl:
            key = "tokenizer.chat_template" + ("" if t["name"] == "default" else "." + t["name"])
            g.set(key, STRING, t["template"].encode())


if __name__ == "__main__":
    write(sys.argv[1], sys.argv[2])
