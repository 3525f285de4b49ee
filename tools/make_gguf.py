#!/usr/bin/env python3
"""make_gguf.py - write a random-weight model of a published shape as a GGUF file in llama.cpp's
layout (its tensor names, types and {arch}.* keys, as its convert_hf_to_gguf.py writes them), for
benchmarks against llama.cpp-family engines on the same weights. Standard library only.

    python3 tools/make_gguf.py --shape qwen3-30b-a3b --layers 4 -o q3-f16.gguf
    llama-quantize q3-f16.gguf q3-q4_k_m.gguf Q4_K_M      # the file users have
    python3 tools/make_gguf.py --shape gpt-oss-20b --layers 4 --type q8_0 -o goss.gguf

The tensors are tools/make_model.py's (same shapes, same valid random bytes; with --seed, the
very bytes make_model.py --seed writes), renamed and retyped as llama.cpp's converter stores them:
matrices in --type (F16, BF16, F32 or Q8_0, the converter's --outtype), gpt-oss's experts in
MXFP4 (ggml type 39, as the converter keeps the published ones), routers, the shared expert's
gate, vectors, norms, biases and the DeltaNet conv in F32. The tokenizer is a stub llama.cpp
accepts: the 256 byte tokens of GPT-2's byte-level BPE, no merges, the rest of the vocabulary
unused padding tokens. Shapes whose architecture has no GGUF mapping here are refused."""

import argparse
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model  # noqa: E402
import moefile  # noqa: E402

U32, I32, F32V, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
# moefile dtype -> ggml type id
GGML = {moefile.F32: 0, moefile.F16: 1, moefile.Q8_0: 8, moefile.BF16: 30, moefile.MXFP4: 39}
TYPES = ("f16", "bf16", "f32", "q8_0")
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}  # general.file_type: llama.cpp's LLAMA_FTYPE_* of --outtype
# make_model arch -> GGUF general.architecture (llama.cpp's names)
ARCH = {"qwen3_moe": "qwen3moe", "olmoe": "olmoe", "gpt_oss": "gpt-oss", "qwen3_5_moe": "qwen35moe",
        "glm4_moe": "glm4moe"}
ALIGN = 32

# make_model's tensor names (the engine's, after "blk.N.") -> llama.cpp's: the inverse of
# src/gguf_view.c's name table, for the tensors make_model writes.
GLOBAL_NAMES = {"tok_embd": "token_embd.weight", "output_norm": "output_norm.weight", "output": "output.weight"}
LAYER_NAMES = {
    "attn_norm": "attn_norm.weight", "ffn_norm": "ffn_norm.weight",
    "attn_q": "attn_q.weight", "attn_k": "attn_k.weight", "attn_v": "attn_v.weight", "attn_o": "attn_output.weight",
    "attn_q_bias": "attn_q.bias", "attn_k_bias": "attn_k.bias", "attn_v_bias": "attn_v.bias",
    "attn_q_norm": "attn_q_norm.weight", "attn_k_norm": "attn_k_norm.weight",
    "attn_o_bias": "attn_output.bias", "attn_sinks": "attn_sinks.weight",
    "ffn_gate": "ffn_gate.weight", "ffn_up": "ffn_up.weight", "ffn_down": "ffn_down.weight",
    "ffn_router": "ffn_gate_inp.weight", "ffn_router_bias": "exp_probs_b.bias",
    "ffn_router_logit_bias": "ffn_gate_inp.bias",
    "ffn_gate_exps": "ffn_gate_exps.weight", "ffn_up_exps": "ffn_up_exps.weight",
    "ffn_down_exps": "ffn_down_exps.weight", "ffn_gate_exps_bias": "ffn_gate_exps.bias",
    "ffn_up_exps_bias": "ffn_up_exps.bias", "ffn_down_exps_bias": "ffn_down_exps.bias",
    "ffn_gate_shexp": "ffn_gate_shexp.weight", "ffn_up_shexp": "ffn_up_shexp.weight",
    "ffn_down_shexp": "ffn_down_shexp.weight", "ffn_shexp_gate": "ffn_gate_inp_shexp.weight",
    "ssm_qkv": "attn_qkv.weight", "ssm_z": "attn_gate.weight", "ssm_beta": "ssm_beta.weight",
    "ssm_alpha": "ssm_alpha.weight", "ssm_conv": "ssm_conv1d.weight", "ssm_a": "ssm_a", "ssm_dt": "ssm_dt.bias",
    "ssm_norm": "ssm_norm.weight", "ssm_out": "ssm_out.weight",
}
# these architectures' converters name the norm before the FFN post_attention_norm
POST_ATTENTION_NORM = ("gpt-oss", "glm4moe", "qwen35moe")
# always F32 in the converter: FFN_GATE_INP, and the shared expert's gate (squeezed to 1-D)
WIDEN = ("ffn_router", "ffn_shexp_gate")


def byte_tokens():
    """GPT-2's byte-level alphabet: byte b as the printable character the BPE uses for it."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    extra, out = 0, []
    for b in range(256):
        if b in keep:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return [c.encode() for c in out]


def encode(vtype, v):
    if vtype == STRING:
        return struct.pack("<Q", len(v)) + v
    if vtype == ARRAY:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(encode(et, x) for x in items)
    return struct.pack({U32: "<I", I32: "<i", F32V: "<f", BOOL: "<?"}[vtype], v)


def arch_keys(s, arch, L):
    """The {arch}.* keys as (suffix, vtype, value), in the order and form of llama.cpp's converter
    for the architecture (tests/py/hf_gguf.py writes the same from a Hugging Face config)."""
    d, hd = s["dim"], s["head_dim"]
    keys = [("block_count", U32, L), ("context_length", U32, s["max_ctx"]), ("embedding_length", U32, d)]
    if arch != "qwen35moe":  # Qwen3.5's text config has no intermediate_size
        keys.append(("feed_forward_length", U32, s["ff"] or s["moe_ff"]))
    keys += [("attention.head_count", U32, s["n_heads"]), ("attention.head_count_kv", U32, s["n_kv"])]
    if arch == "qwen35moe":
        # multimodal RoPE sections: text positions rotate every section alike
        keys.append(("rope.dimension_sections", ARRAY, (I32, mrope(s["rope_dim"] // 2))))
    keys += [("rope.freq_base", F32V, s["theta"]), ("attention.layer_norm_rms_epsilon", F32V, s["eps"])]
    keys += [("expert_count", U32, s["experts"]), ("expert_used_count", U32, s["k"]),
             ("attention.key_length", U32, hd), ("attention.value_length", U32, hd),
             ("expert_feed_forward_length", U32, s["moe_ff"])]
    if arch in ("gpt-oss", "glm4moe", "qwen35moe"):
        keys.append(("rope.dimension_count", U32, s.get("rope_dim", hd)))
    if arch == "gpt-oss":
        y = s["yarn"]
        keys += [("attention.sliding_window", U32, s["window"]), ("rope.scaling.type", STRING, b"yarn"),
                 ("rope.scaling.factor", F32V, y["factor"]), ("rope.scaling.original_context_length", U32, y["orig"]),
                 ("rope.scaling.yarn_beta_fast", F32V, y["beta_fast"]),
                 ("rope.scaling.yarn_beta_slow", F32V, y["beta_slow"])]
    if arch == "glm4moe":  # GLM-4.5-Air: n_group 1, one group, all of it used
        keys += [("expert_group_count", U32, s.get("n_group", 1)), ("expert_group_used_count", U32, s.get("topk_group", 1)),
                 ("expert_shared_count", U32, 1), ("leading_dense_block_count", U32, s.get("first_dense", 0)),
                 ("expert_gating_func", U32, 2), ("expert_weights_scale", F32V, s.get("moe_scale", 1.0)),
                 ("expert_weights_norm", BOOL, bool(s["norm_topk"])), ("nextn_predict_layers", U32, 0)]
    if arch == "qwen35moe":
        ssm = s["ssm"]
        keys += [("expert_shared_feed_forward_length", U32, s["shared_ff"]), ("ssm.conv_kernel", U32, ssm["conv"]),
                 ("ssm.state_size", U32, ssm["dk"]), ("ssm.group_count", U32, ssm["nk"]),
                 ("ssm.time_step_rank", U32, ssm["nv"]), ("ssm.inner_size", U32, ssm["nv"] * ssm["dv"]),
                 ("full_attention_interval", U32, ssm["interval"])]
    if arch in ("gpt-oss", "glm4moe", "qwen35moe"):
        keys.append(("vocab_size", U32, s["vocab"]))
    return keys


def mrope(half):
    """Qwen3.5's mrope_section for `half` rotated pairs: [11, 11, 10] for 32 (the published
    config), in general the split a third each with the remainder on the first two."""
    t = half // 3
    rest = half - 3 * t
    return [t + (rest > 0), t + (rest > 1), t, 0]


def widened(dtype, nbytes, src):
    """A float tensor's values as F32 (exact from F16 and BF16), streamed chunk by chunk."""
    for chunk in src():
        b = bytes(chunk)
        if dtype == moefile.BF16:
            out = bytearray(2 * len(b))
            out[2::4], out[3::4] = b[0::2], b[1::2]
            yield bytes(out)
        elif dtype == moefile.F16:
            n = len(b) // 2
            yield struct.pack("<%df" % n, *struct.unpack("<%de" % n, b))
        else:
            yield b


def plan(shape, layers, wtype, seed=None, shapes=None):
    """(keys, tensors) of the file: keys as (name, vtype, value), tensors as (name, ne, dtype, source)
    with ne in GGUF order (ne[0] the row length) and source a bytes object or a chunk generator.
    `shapes` replaces make_model.SHAPES (tests narrow the published shapes)."""
    shapes = shapes or make_model.SHAPES
    s = dict(shapes[shape])
    if s["arch"] not in ARCH:
        sys.exit("make_gguf: shape %s (architecture %s) has no GGUF mapping here; known: %s" %
                 (shape, s["arch"], ", ".join(k for k, v in shapes.items() if v["arch"] in ARCH)))
    arch, L, V = ARCH[s["arch"]], layers or s["n_layers"], s["vocab"]
    saved = make_model.SHAPES
    make_model.SHAPES = shapes
    try:
        w = make_model.build(shape, argparse.Namespace(layers=L, type=wtype, keep=wtype, experts=None, seed=seed))
    finally:
        make_model.SHAPES = saved
    toks = byte_tokens() + [b"[PAD%d]" % i for i in range(256, V)]
    keys = [("general.architecture", STRING, arch.encode()),
            ("general.name", STRING, ("%s random (%d layers)" % (shape, L)).encode()),
            ("general.alignment", U32, ALIGN), ("general.file_type", U32, FILE_TYPE[wtype])]
    keys += [(arch + "." + k, vt, v) for k, vt, v in arch_keys(s, arch, L)]
    keys += [("tokenizer.ggml.model", STRING, b"gpt2"),
             ("tokenizer.ggml.pre", STRING, b"qwen2"),
             ("tokenizer.ggml.tokens", ARRAY, (STRING, toks)),
             ("tokenizer.ggml.token_type", ARRAY, (I32, [1] * 256 + [5] * (V - 256))),
             ("tokenizer.ggml.merges", ARRAY, (STRING, [])),
             ("tokenizer.ggml.eos_token_id", U32, 0)]
    tensors = []
    for name, dtype, dims, src in w.tensors:
        if name.startswith("tok."):
            continue  # the .moe tokenizer; the GGUF one is in the keys
        if name.startswith("blk."):
            prefix, base = name.rsplit(".", 1)[0] + ".", name.split(".", 2)[2]
        else:
            prefix, base = "", name
        gname = (GLOBAL_NAMES if not prefix else LAYER_NAMES).get(base)
        if gname is None:
            sys.exit("make_gguf: internal error: no GGUF name for %s" % name)
        if base == "ffn_norm" and arch in POST_ATTENTION_NORM:
            gname = "post_attention_norm.weight"
        ne = list(reversed(dims))
        if base == "ffn_shexp_gate":
            ne = ne[:1]  # [1, dim] squeezed to a vector
        gen = src if callable(src) else (lambda b=src: [b])
        if base in WIDEN and dtype != moefile.F32:
            n = 1
            for x in dims:
                n *= x
            if dtype in (moefile.F16, moefile.BF16):
                gen = (lambda dt=dtype, nb=n * moefile.DTYPE_BLOCK[dtype][1], g=gen: widened(dt, nb, g))
            else:  # a quantized --type: fresh F32 values (the converter keeps these in float)
                gen = (lambda n=n, nm=name: make_model.random_bytes(moefile.F32, 4 * n, seed, nm))
            dtype = moefile.F32
        if dtype not in GGML:
            sys.exit("make_gguf: internal error: %s has a type GGUF output does not map" % name)
        tensors.append((prefix + gname, ne, dtype, gen))
    return keys, tensors


def nbytes(ne, dtype):
    n = 1
    for x in ne:
        n *= x
    block, bb = moefile.DTYPE_BLOCK[dtype]
    return n // block * bb


def write(path, keys, tensors):
    head = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(keys))]
    for k, vt, v in keys:
        head.append(encode(STRING, k.encode()) + struct.pack("<I", vt) + encode(vt, v))
    off = 0
    for name, ne, dtype, _ in tensors:
        head.append(encode(STRING, name.encode()) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne) +
                    struct.pack("<IQ", GGML[dtype], off))
        off = (off + nbytes(ne, dtype) + ALIGN - 1) // ALIGN * ALIGN
    head = b"".join(head)
    with open(path, "wb") as f:
        f.write(head + b"\0" * (-len(head) % ALIGN))
        for name, ne, dtype, src in tensors:
            n = 0
            for chunk in src():
                f.write(chunk)
                n += len(chunk)
            if n != nbytes(ne, dtype):
                sys.exit("make_gguf: internal error: %s got %d bytes, expected %d" % (name, n, nbytes(ne, dtype)))
            f.write(b"\0" * (-n % ALIGN))
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    known = sorted(k for k, v in make_model.SHAPES.items() if v["arch"] in ARCH)
    ap.add_argument("--shape", required=True, choices=known)
    ap.add_argument("--layers", type=int, default=0, help="use this many layers instead of the published count")
    ap.add_argument("--type", default="f16", choices=TYPES,
                    help="type of the matrices (the converter's --outtype; vectors, routers F32, gpt-oss experts MXFP4)")
    ap.add_argument("--seed", type=int, help="reproducible values (the same as make_model.py --seed)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    if args.layers < 0:
        ap.error("--layers must be positive")
    keys, tensors = plan(args.shape, args.layers, args.type, args.seed)
    size = write(args.output, keys, tensors)
    print("wrote %s: %d tensors, %.2f GB of tensor data" % (args.output, len(tensors), size / 1e9))


if __name__ == "__main__":
    main()
