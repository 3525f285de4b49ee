#!/usr/bin/env python3
"""make_model.py - write a random-weight model of a real published shape straight into the
.moe format, for benchmarks (decode speed does not depend on the values). Standard library only.

    python3 tools/make_model.py --shape qwen3-30b-a3b --layers 12 --type q8_0 -o qwen3-30b-12l-q8.moe

Values are random but valid: BF16/F16 elements have exponents in a narrow band (|w| ~ 0.004-0.06),
quantized blocks have a fixed positive scale and random quants. Each type's values come from one
8 MB os.urandom template, made valid with C-speed byte operations (bytes.translate, strided
slice assignment) and read from a random block on for every 8 MB written, so it writes at disk
speed. The tokenizer is a 256-byte-token stub: enough to load and bench."""

import argparse
import math
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moefile  # noqa: E402

# Published configurations (config.json of each model), reduced to what the format needs.
SHAPES = {
    "granite-3.1-1b-a400m": dict(
        arch="granitemoe", dim=1024, n_layers=24, n_heads=16, n_kv=8, head_dim=64, vocab=49155, ff=0,
        experts=32, k=8, moe_ff=512, max_ctx=4096, theta=10000.0, eps=1e-6, tied=1, norm_topk=1,
        embd_scale=12.0, residual_scale=0.22, logit_scale=1 / 6.0, attn_scale=0.015625),
    "olmoe-1b-7b": dict(
        arch="olmoe", dim=2048, n_layers=16, n_heads=16, n_kv=16, head_dim=128, vocab=50304, ff=0,
        experts=64, k=8, moe_ff=1024, max_ctx=4096, theta=10000.0, eps=1e-5, qk_norm="full", norm_topk=0),
    "qwen3-30b-a3b": dict(
        arch="qwen3_moe", dim=2048, n_layers=48, n_heads=32, n_kv=4, head_dim=128, vocab=151936, ff=0,
        experts=128, k=8, moe_ff=768, max_ctx=40960, theta=1e6, eps=1e-6, qk_norm="head", norm_topk=1),
    "deepseek-v2-lite": dict(
        arch="deepseek_v2", dim=2048, n_layers=27, n_heads=16, n_kv=16, head_dim=192, vocab=102400, ff=10944,
        experts=64, k=6, moe_ff=1408, max_ctx=163840, theta=10000.0, eps=1e-6, norm_topk=0, moe_scale=1.0,
        first_dense=1, shared_ff=2 * 1408, mla=dict(q_lora=0, kv_lora=512, nope=128, rope=64, v=128),
        yarn=dict(factor=40.0, orig=4096, beta_fast=32.0, beta_slow=1.0, mscale=0.707, mscale_all_dim=0.707)),
    # zai-org/GLM-4.5-Air: q/k/v biases, no QK-norm, RoPE on half of each head, sigmoid router with
    # a selection bias (n_group 1), scale 1.0, one shared expert, one leading dense layer
    "glm-4.5-air": dict(
        arch="glm4_moe", dim=4096, n_layers=46, n_heads=96, n_kv=8, head_dim=128, vocab=151552, ff=10944,
        experts=128, k=8, moe_ff=1408, max_ctx=131072, theta=1e6, eps=1e-5, norm_topk=1, moe_scale=1.0,
        first_dense=1, shared_ff=1408, rope_dim=64, qkv_bias=1, sigmoid=1),
    # hybrid: every 4th layer gated attention (q_proj doubled, partial RoPE 64 of 256), the rest Gated
    # DeltaNet (16 q/k heads, 32 value heads of 128, conv 4); 256 experts top-8 + a gated shared expert
    "qwen3.5-35b-a3b": dict(
        arch="qwen3_5_moe", dim=2048, n_layers=40, n_heads=16, n_kv=2, head_dim=256, vocab=248320, ff=0,
        experts=256, k=8, moe_ff=512, max_ctx=262144, theta=1e7, eps=1e-6, qk_norm="head", norm_topk=1,
        shared_ff=512, shared_gate=1, out_gate=1, rope_dim=64, ssm=dict(interval=4, conv=4, nk=16, nv=32, dk=128,
                                                                         dv=128)),
    # openai/gpt-oss-20b: sinks, q/k/v/o biases, sliding window 128 on the even layers, YaRN (factor 32),
    # router with bias, 32 experts top-4 with biases and clamped SwiGLU; experts published in MXFP4
    "gpt-oss-20b": dict(
        arch="gpt_oss", dim=2880, n_layers=24, n_heads=64, n_kv=8, head_dim=64, vocab=201088, ff=0,
        experts=32, k=4, moe_ff=2880, max_ctx=131072, theta=150000.0, eps=1e-5, norm_topk=1, gpt_oss=1,
        window=128, experts_type="mxfp4",
        yarn=dict(factor=32.0, orig=4096, beta_fast=32.0, beta_slow=1.0, attn_factor=1.3465735902799727)),
}

DTYPES = {"bf16": moefile.BF16, "f16": moefile.F16, "f32": moefile.F32, "q8_0": moefile.Q8_0,
          "q4_0": moefile.Q4_0, "q4_k": moefile.Q4_K, "q8_0_r16": moefile.Q8_0_R16, "q4_0_r16": moefile.Q4_0_R16,
          "mxfp4": moefile.MXFP4}
R16_PLAIN = {i: t.plain for i, t in moefile.DTYPES.items() if t.row_group == 16}  # 16 rows interleaved -> plain

CHUNK = 8 << 20


def _translate_table(allowed):
    return bytes(allowed[b % len(allowed)] for b in range(256))


# High bytes of bf16 values with |w| in [2^-8, 2^-4): sign x exponents 119..122
_BF16_HI = _translate_table([0x3b, 0x3c, 0x3d, 0xbb, 0xbc, 0xbd])
# High bytes of f16 values with |w| in [2^-8, 2^-4): exponents 7..10 -> 0x1c..0x2b, low 2 bits = mantissa
_F16_HI = _translate_table([0x1c, 0x21, 0x26, 0x2b, 0x9c, 0xa1, 0xa6, 0xab])
_SCALE_F16 = struct.pack("<e", 0.002)
# Q8_0 quants in -127..127 as ggml's quantizer writes them: -128 (0x80) becomes -127, since
# ggml-family kernels that offset or negate the int8 codes (e.g. ik_llama.cpp's AVX-512 Q8_0) overflow on it
_Q8_NO_MIN = bytes(0x81 if b == 0x80 else b for b in range(256))


def _template(dtype, n, bb, seed=None):
    """n bytes (whole blocks of bb bytes) of valid random values of dtype (from os.urandom, or
    from random.Random(seed) for a reproducible file)."""
    buf = bytearray(os.urandom(n) if seed is None else random.Random("%s:%d" % (seed, dtype)).randbytes(n))
    if dtype == moefile.BF16:
        buf[1::2] = bytes(buf[1::2]).translate(_BF16_HI)
    elif dtype == moefile.F16:
        buf[1::2] = bytes(buf[1::2]).translate(_F16_HI)
    elif dtype == moefile.F32:
        buf[3::4] = bytes(buf[3::4]).translate(_translate_table([0x3c, 0xbc]))
        buf[2::4] = bytes(buf[2::4]).translate(_translate_table(list(range(0x00, 0x80))))
    elif dtype in (moefile.Q8_0, moefile.Q4_0):
        if dtype == moefile.Q8_0:
            buf = bytearray(bytes(buf).translate(_Q8_NO_MIN))
        buf[0::bb] = _SCALE_F16[:1] * (n // bb)
        buf[1::bb] = _SCALE_F16[1:] * (n // bb)
    elif dtype in R16_PLAIN:
        if R16_PLAIN[dtype] == moefile.Q8_0:
            buf = bytearray(bytes(buf).translate(_Q8_NO_MIN))
        for i in range(16):
            buf[2 * i::bb] = _SCALE_F16[:1] * (n // bb)
            buf[2 * i + 1::bb] = _SCALE_F16[1:] * (n // bb)
    elif dtype == moefile.MXFP4:  # E8M0 exponents 118..121: |w| up to 6 * 2^-6
        buf[0::bb] = bytes(buf[0::bb]).translate(_translate_table([118, 119, 120, 121]))
    elif dtype == moefile.Q4_K:
        for off in (0, 2):  # d and dmin
            buf[off::bb] = _SCALE_F16[:1] * (n // bb)
            buf[off + 1::bb] = _SCALE_F16[1:] * (n // bb)
    return memoryview(bytes(buf))


_TEMPLATES = {}


def random_bytes(dtype, nbytes, seed=None, name=""):
    """Yield chunks of valid random data of the given dtype, nbytes in total. Each dtype gets one
    CHUNK-sized template of random blocks per run; the data is that template read from a random
    whole block on, wrapping around (zero-copy slices). Making every chunk afresh (os.urandom and
    the per-byte fixes) ran at ~300 MB/s and held the writer to 120-200 MB/s. With a seed, the
    template and the read positions come from it and the tensor's name, so a tensor's bytes do
    not depend on the order tensors are written in (tools/make_gguf.py writes another order)."""
    block, bb = moefile.DTYPE_BLOCK[dtype]
    if dtype in R16_PLAIN:
        bb *= 16  # one block column of a 16-row group: 16 scales, then the rows' quants
    step = CHUNK // bb * bb
    if (dtype, seed) not in _TEMPLATES:
        _TEMPLATES[dtype, seed] = _template(dtype, step, bb, seed)
    tpl = _TEMPLATES[dtype, seed]
    rng = None if seed is None else random.Random("%s:%s" % (seed, name))
    left = nbytes
    while left:
        r = int.from_bytes(os.urandom(4), "little") if rng is None else rng.getrandbits(32)
        pos = r % (step // bb) * bb
        n = min(step, left)
        yield tpl[pos:pos + n]
        if pos + n > step:
            yield tpl[:pos + n - step]
        left -= n


def f32_bytes(values):
    return struct.pack("<%df" % len(values), *values)


def build(shape, args):
    s = dict(SHAPES[shape])
    if args.layers:
        s["n_layers"] = args.layers
    wt = DTYPES[args.type]
    # the routed experts: --experts, else the shape's published type (gpt-oss: MXFP4), else --type
    xt = DTYPES[getattr(args, "experts", None) or s.get("experts_type", args.type)]
    # routers, embeddings and MLA absorbed matrices stay in higher precision (make_gguf: --type, as llama.cpp's converter)
    keep = DTYPES[getattr(args, "keep", None) or "bf16"]
    seed = getattr(args, "seed", None)
    out_t = {moefile.Q4_0: moefile.Q8_0, moefile.Q4_K: moefile.Q8_0, moefile.Q4_0_R16: moefile.Q8_0_R16}.get(wt, wt)
    L, d, E = s["n_layers"], s["dim"], s["experts"]
    w = moefile.MoeWriter()
    kv = w.add_kv
    kv("general.arch", s["arch"])
    kv("general.name", "%s random (%d layers, %s)" % (shape, L, args.type))
    kv("general.source", "tools/make_model.py --shape %s" % shape)
    kv("model.vocab_size", s["vocab"])
    kv("model.dim", d)
    kv("model.n_layers", L)
    kv("model.n_heads", s["n_heads"])
    kv("model.n_kv_heads", s["n_kv"])
    kv("model.head_dim", s["head_dim"])
    first_dense = s.get("first_dense", 0)
    kv("model.ff_dim", s["ff"] if first_dense else 0)
    kv("model.max_ctx", s["max_ctx"])
    kv("model.norm_eps", s["eps"])
    kv("model.tied_embd", s.get("tied", 0))
    for key in ("embd_scale", "residual_scale", "logit_scale"):
        if key in s:
            kv("model." + key, float(s[key]))
    mla, ssm = s.get("mla"), s.get("ssm")
    rope_dim = mla["rope"] if mla else s.get("rope_dim", s["head_dim"])
    is_ssm = [bool(ssm) and (l + 1) % ssm["interval"] != 0 for l in range(L)]
    if ssm:
        kv("ssm.layers", [int(x) for x in is_ssm])
        kv("ssm.conv_kernel", ssm["conv"])
        kv("ssm.n_k_heads", ssm["nk"])
        kv("ssm.n_v_heads", ssm["nv"])
        kv("ssm.k_dim", ssm["dk"])
        kv("ssm.v_dim", ssm["dv"])
    if s.get("out_gate"):
        kv("attn.out_gate", 1)
    if mla:
        kv("attn.type", "mla")
        y = s["yarn"]
        ms = 0.1 * y["mscale_all_dim"] * math.log(y["factor"]) + 1.0
        kv("attn.scale", (mla["nope"] + mla["rope"]) ** -0.5 * ms * ms)
        kv("rope.layout", "pair")
        kv("rope.scaling", "yarn")
        kv("rope.factor", y["factor"])
        kv("rope.orig_ctx", y["orig"])
        kv("rope.beta_fast", y["beta_fast"])
        kv("rope.beta_slow", y["beta_slow"])
        kv("mla.q_lora", mla["q_lora"])
        kv("mla.kv_lora", mla["kv_lora"])
        kv("mla.nope_dim", mla["nope"])
        kv("mla.rope_dim", mla["rope"])
        kv("mla.v_dim", mla["v"])
    else:
        kv("attn.scale", float(s.get("attn_scale", s["head_dim"] ** -0.5)))
        if "qk_norm" in s:
            kv("attn.qk_norm", s["qk_norm"])
        if s.get("qkv_bias"):
            kv("attn.qkv_bias", 1)
    if s.get("gpt_oss"):
        y = s["yarn"]
        kv("rope.scaling", "yarn")
        kv("rope.factor", y["factor"])
        kv("rope.orig_ctx", y["orig"])
        kv("rope.beta_fast", y["beta_fast"])
        kv("rope.beta_slow", y["beta_slow"])
        kv("rope.yarn_truncate", 0)
        kv("rope.attn_factor", y["attn_factor"])
        kv("attn.qkv_bias", 1)
        kv("attn.o_bias", 1)
        kv("attn.sinks", 1)
        kv("attn.window", s["window"])
        kv("attn.window_layers", [int(l % 2 == 0) for l in range(L)])
        kv("moe.router_bias", 1)
        kv("moe.expert_bias", 1)
        kv("moe.act", "swiglu_oai")
        kv("moe.act_limit", 7.0)
        kv("moe.act_alpha", 1.702)
    kv("rope.theta", s["theta"])
    kv("rope.dim", rope_dim)
    kv("moe.n_experts", E)
    kv("moe.n_active", s["k"])
    kv("moe.ff_dim", s["moe_ff"])
    kv("moe.layers", [0 if l < first_dense else 1 for l in range(L)])
    kv("moe.norm_topk", s["norm_topk"])
    if "moe_scale" in s:
        kv("moe.scale", s["moe_scale"])
    if s.get("sigmoid"):  # DeepSeek-V3 / GLM: sigmoid scores, selection-only bias
        kv("moe.score", "sigmoid")
        kv("moe.bias", 1)
        kv("moe.group_score", "top2sum")
    if s.get("shared_ff"):
        kv("moe.shared_ff", s["shared_ff"])
    if s.get("shared_gate"):
        kv("moe.shared_gate", 1)
    kv("tok.model", "bpe")
    kv("tok.pre", "gpt2")
    kv("tok.bos", -1)
    kv("tok.eos", -1)

    def mat(name, dtype, shape_):
        if dtype in R16_PLAIN and math.prod(shape_[:-1]) % 16:
            dtype = R16_PLAIN[dtype]  # interleaving needs whole 16-row groups (as moe quantize)
        w.add_tensor(name, dtype, shape_,
                     lambda dt=dtype, sh=shape_: random_bytes(dt, moefile.tensor_nbytes(dt, sh), seed, name))

    def ones(name, n, value=1.0):
        w.add_tensor(name, moefile.F32, [n], f32_bytes([value] * n))

    mat("tok_embd", keep, [s["vocab"], d])
    ones("output_norm", d)
    if not s.get("tied"):
        mat("output", out_t, [s["vocab"], d])
    nh, nkv, hd = s["n_heads"], s["n_kv"], s["head_dim"]
    for l in range(L):
        p = "blk.%d." % l
        ones(p + "attn_norm", d)
        ones(p + "ffn_norm", d)
        if is_ssm[l]:
            ch, vw, nv = 2 * ssm["nk"] * ssm["dk"] + ssm["nv"] * ssm["dv"], ssm["nv"] * ssm["dv"], ssm["nv"]
            mat(p + "ssm_qkv", wt, [ch, d])
            mat(p + "ssm_z", wt, [vw, d])
            mat(p + "ssm_beta", keep, [nv, d])
            mat(p + "ssm_alpha", keep, [nv, d])
            w.add_tensor(p + "ssm_conv", moefile.F32, [ch, ssm["conv"]], f32_bytes([0.25] * (ch * ssm["conv"])))
            w.add_tensor(p + "ssm_a", moefile.F32, [nv], f32_bytes([-1.0] * nv))
            ones(p + "ssm_dt", nv)
            ones(p + "ssm_norm", ssm["dv"])
            mat(p + "ssm_out", wt, [d, vw])
        elif mla:
            qk = mla["nope"] + mla["rope"]
            mat(p + "attn_q", wt, [nh * qk, d])
            mat(p + "attn_kv_a", wt, [mla["kv_lora"] + mla["rope"], d])
            ones(p + "attn_kv_a_norm", mla["kv_lora"])
            mat(p + "attn_k_b", keep, [nh, mla["kv_lora"], mla["nope"]])
            mat(p + "attn_v_b", keep, [nh, mla["v"], mla["kv_lora"]])
            mat(p + "attn_o", wt, [d, nh * mla["v"]])
        else:
            mat(p + "attn_q", wt, [(2 if s.get("out_gate") else 1) * nh * hd, d])
            mat(p + "attn_k", wt, [nkv * hd, d])
            mat(p + "attn_v", wt, [nkv * hd, d])
            mat(p + "attn_o", wt, [d, nh * hd])
            if s.get("qkv_bias") or s.get("gpt_oss"):
                ones(p + "attn_q_bias", nh * hd, 0.0)
                ones(p + "attn_k_bias", nkv * hd, 0.0)
                ones(p + "attn_v_bias", nkv * hd, 0.0)
            if s.get("qk_norm") == "head":
                ones(p + "attn_q_norm", hd)
                ones(p + "attn_k_norm", hd)
            elif s.get("qk_norm") == "full":
                ones(p + "attn_q_norm", nh * hd)
                ones(p + "attn_k_norm", nkv * hd)
            if s.get("gpt_oss"):
                ones(p + "attn_o_bias", d, 0.0)
                ones(p + "attn_sinks", nh, 0.0)
        if l < first_dense:
            mat(p + "ffn_gate", wt, [s["ff"], d])
            mat(p + "ffn_up", wt, [s["ff"], d])
            mat(p + "ffn_down", wt, [d, s["ff"]])
            continue
        F = s["moe_ff"]
        ft = xt if F % moefile.DTYPE_BLOCK[xt][0] == 0 else moefile.Q4_0 if xt == moefile.Q4_K else xt
        mat(p + "ffn_router", keep, [E, d])
        if s.get("sigmoid"):
            ones(p + "ffn_router_bias", E, 0.0)
        mat(p + "ffn_gate_exps", xt, [E, F, d])
        mat(p + "ffn_up_exps", xt, [E, F, d])
        mat(p + "ffn_down_exps", ft, [E, d, F])
        if s.get("gpt_oss"):
            ones(p + "ffn_router_logit_bias", E, 0.0)
            w.add_tensor(p + "ffn_gate_exps_bias", moefile.F32, [E, F], f32_bytes([0.0] * (E * F)))
            w.add_tensor(p + "ffn_up_exps_bias", moefile.F32, [E, F], f32_bytes([0.0] * (E * F)))
            w.add_tensor(p + "ffn_down_exps_bias", moefile.F32, [E, d], f32_bytes([0.0] * (E * d)))
        if s.get("shared_ff"):
            S = s["shared_ff"]
            st = wt if S % moefile.DTYPE_BLOCK[wt][0] == 0 else moefile.Q4_0 if wt == moefile.Q4_K else wt
            mat(p + "ffn_gate_shexp", wt, [S, d])
            mat(p + "ffn_up_shexp", wt, [S, d])
            mat(p + "ffn_down_shexp", st, [d, S])
        if s.get("shared_gate"):
            mat(p + "ffn_shexp_gate", keep, [1, d])
    texts = [bytes([i]) for i in range(256)]
    offs = [0]
    for t in texts:
        offs.append(offs[-1] + len(t))
    w.add_tensor("tok.text", moefile.U8, [256], b"".join(texts))
    w.add_tensor("tok.offsets", moefile.I32, [257], struct.pack("<257i", *offs))
    w.add_tensor("tok.types", moefile.U8, [256], bytes([1] * 256))
    return w


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=0, help="use this many layers instead of the published count")
    ap.add_argument("--type", default="q8_0", choices=sorted(DTYPES))
    ap.add_argument("--experts", choices=sorted(DTYPES),
                    help="type of the routed experts (default: the published one, MXFP4 for gpt-oss; else --type)")
    ap.add_argument("--seed", type=int, help="reproducible values (tools/make_gguf.py --seed S writes the same ones)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    if a.layers < 0:
        ap.error("--layers must be positive")
    import time
    t0 = time.time()
    size = build(a.shape, a).write(a.output, progress=not a.quiet)
    dt = time.time() - t0
    print("wrote %s: %.2f GB in %.1f s (%.0f MB/s)" % (a.output, size / 1e9, dt, size / dt / 1e6), file=sys.stderr)


if __name__ == "__main__":
    main()
