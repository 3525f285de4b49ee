#!/usr/bin/env python3
"""make_gguf.py - write a random-weight model of a published shape as a float GGUF file in
llama.cpp's layout (its tensor names, its {arch}.* keys), for benchmarks against llama.cpp-family
engines on the same weights. Standard library only.

    python3 tools/make_gguf.py --shape qwen3-30b-a3b --layers 4 -o q3-f16.gguf
    llama-quantize q3-f16.gguf q3-q4_k_m.gguf Q4_K_M      # the file users have

The values come from tools/make_model.py (same shapes, same valid random bytes): matrices in F16
(or --type bf16 / f32), norms 1.0, routers F32 as llama.cpp's converter keeps them. The tokenizer
is a stub llama.cpp accepts: the 256 byte tokens of GPT-2's byte-level BPE, no merges, the rest
of the vocabulary unused padding tokens. Shapes whose architecture has no GGUF mapping here are
refused with one line."""

import argparse
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_model  # noqa: E402
import moefile  # noqa: E402

U32, I32, F32V, STRING, ARRAY = 4, 5, 6, 8, 9
GGML = {moefile.F32: 0, moefile.F16: 1, moefile.BF16: 30}  # moefile dtype -> ggml type id
TYPES = {"f16": moefile.F16, "bf16": moefile.BF16, "f32": moefile.F32}
ARCH = {"qwen3_moe": "qwen3moe", "olmoe": "olmoe"}  # make_model arch -> GGUF general.architecture
ALIGN = 32


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
    return struct.pack({U32: "<I", I32: "<i", F32V: "<f"}[vtype], v)


def plan(shape, layers, wtype):
    """(keys, tensors) of the file: keys as (name, vtype, value), tensors as (name, ne, dtype, source)
    with ne in GGUF order (ne[0] the row length) and source a bytes object or a chunk generator."""
    s = dict(make_model.SHAPES[shape])
    if s["arch"] not in ARCH:
        sys.exit("make_gguf: shape %s (architecture %s) has no GGUF mapping here; known: %s" %
                 (shape, s["arch"], ", ".join(k for k, v in make_model.SHAPES.items() if v["arch"] in ARCH)))
    arch, L = ARCH[s["arch"]], layers or s["n_layers"]
    d, E, F, V = s["dim"], s["experts"], s["moe_ff"], s["vocab"]
    nh, nkv, hd = s["n_heads"], s["n_kv"], s["head_dim"]
    toks = byte_tokens() + [b"[PAD%d]" % i for i in range(256, V)]
    keys = [("general.architecture", STRING, arch.encode()),
            ("general.name", STRING, ("%s random (%d layers)" % (shape, L)).encode()),
            ("general.alignment", U32, ALIGN),
            (arch + ".block_count", U32, L),
            (arch + ".context_length", U32, s["max_ctx"]),
            (arch + ".embedding_length", U32, d),
            (arch + ".feed_forward_length", U32, s["ff"] or F),
            (arch + ".expert_feed_forward_length", U32, F),
            (arch + ".attention.head_count", U32, nh),
            (arch + ".attention.head_count_kv", U32, nkv),
            (arch + ".attention.key_length", U32, hd),
            (arch + ".attention.value_length", U32, hd),
            (arch + ".rope.freq_base", F32V, s["theta"]),
            (arch + ".attention.layer_norm_rms_epsilon", F32V, s["eps"]),
            (arch + ".expert_count", U32, E),
            (arch + ".expert_used_count", U32, s["k"]),
            ("tokenizer.ggml.model", STRING, b"gpt2"),
            ("tokenizer.ggml.pre", STRING, b"qwen2"),
            ("tokenizer.ggml.tokens", ARRAY, (STRING, toks)),
            ("tokenizer.ggml.token_type", ARRAY, (I32, [1] * 256 + [5] * (V - 256))),
            ("tokenizer.ggml.merges", ARRAY, (STRING, [])),
            ("tokenizer.ggml.eos_token_id", U32, 0)]

    def mat(name, ne, dtype=wtype):
        n = 1
        for x in ne:
            n *= x
        return (name, ne, dtype, lambda: make_model.random_bytes(dtype, n * moefile.DTYPE_BLOCK[dtype][1]))

    def ones(name, n):
        return (name, [n], moefile.F32, struct.pack("<%df" % n, *([1.0] * n)))

    qk_full = s.get("qk_norm") == "full"
    t = [mat("token_embd.weight", [d, V]), ones("output_norm.weight", d), mat("output.weight", [d, V])]
    for l in range(L):
        p = "blk.%d." % l
        t += [ones(p + "attn_norm.weight", d), mat(p + "attn_q.weight", [d, nh * hd]),
              mat(p + "attn_k.weight", [d, nkv * hd]), mat(p + "attn_v.weight", [d, nkv * hd]),
              mat(p + "attn_output.weight", [nh * hd, d])]
        if s.get("qk_norm"):
            t += [ones(p + "attn_q_norm.weight", nh * hd if qk_full else hd),
                  ones(p + "attn_k_norm.weight", nkv * hd if qk_full else hd)]
        t += [ones(p + "ffn_norm.weight", d), mat(p + "ffn_gate_inp.weight", [d, E], moefile.F32),
              mat(p + "ffn_gate_exps.weight", [d, F, E]), mat(p + "ffn_up_exps.weight", [d, F, E]),
              mat(p + "ffn_down_exps.weight", [F, d, E])]
    return keys, t


def nbytes(ne, dtype):
    n = 1
    for x in ne:
        n *= x
    return n * moefile.DTYPE_BLOCK[dtype][1]


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
            for chunk in ([src] if isinstance(src, bytes) else src()):
                f.write(chunk)
                n += len(chunk)
            if n != nbytes(ne, dtype):
                sys.exit("make_gguf: internal error: %s got %d bytes, expected %d" % (name, n, nbytes(ne, dtype)))
            f.write(b"\0" * (-n % ALIGN))
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", required=True, choices=sorted(make_model.SHAPES))
    ap.add_argument("--layers", type=int, default=0, help="use this many layers instead of the published count")
    ap.add_argument("--type", default="f16", choices=sorted(TYPES), help="type of the matrices (norms and routers F32)")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    keys, tensors = plan(args.shape, args.layers, TYPES[args.type])
    size = write(args.output, keys, tensors)
    print("wrote %s: %d tensors, %.2f GB of tensor data" % (args.output, len(tensors), size / 1e9))


if __name__ == "__main__":
    main()
