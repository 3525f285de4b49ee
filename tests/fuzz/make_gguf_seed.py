#!/usr/bin/env python3
"""make_gguf_seed.py DIR [--mla] - write small GGUF model files for the fuzz_gguf corpus: a
qwen3moe model with a tiny byte-level tokenizer and random F32 weights; with --mla also a
deepseek2 one (MLA, fused attn_kv_b). Standard library only. tests/fuzz/make_seeds.py writes
both, beside shrunk copies of the shared llama.cpp files."""
import os
import random
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py"))
import ggufio  # noqa: E402
from ggufio import ARRAY, I32, STRING, U32, F32  # noqa: E402

rng = random.Random(1)


def rand(*shape):
    n = 1
    for d in shape:
        n *= d
    return ggufio.Tensor("", list(reversed(shape)), 0, struct.pack("<%df" % n, *(rng.gauss(0, 0.2) for _ in range(n))))


def add(g, name, *shape):
    t = rand(*shape)
    t.name = name
    g.tensors.append(t)


def tokenizer(g):
    toks = [bytes([c]) for c in range(33, 127)] + [b"\xc4\xa0t", b"he", b"\xc4\xa0the"]
    g.set("tokenizer.ggml.model", STRING, b"gpt2")
    g.set("tokenizer.ggml.pre", STRING, b"qwen2")
    g.set("tokenizer.ggml.tokens", ARRAY, (STRING, toks))
    g.set("tokenizer.ggml.token_type", ARRAY, (I32, [1] * len(toks)))
    g.set("tokenizer.ggml.merges", ARRAY, (STRING, [b"h e"]))
    g.set("tokenizer.ggml.bos_token_id", U32, 0)
    return len(toks)


def common(g, arch, V, D, L, H):
    g.set("general.architecture", STRING, arch.encode())
    for k, v in (("block_count", L), ("context_length", 64), ("embedding_length", D), ("feed_forward_length", 64),
                 ("attention.head_count", H), ("attention.head_count_kv", H), ("vocab_size", V)):
        g.set("%s.%s" % (arch, k), U32, v)
    g.set(arch + ".attention.layer_norm_rms_epsilon", F32, 1e-6)
    add(g, "token_embd.weight", V, D)
    add(g, "output_norm.weight", D)
    add(g, "output.weight", V, D)


def qwen3moe(path):
    g = ggufio.GGUF()
    V, D, H, HD, E, F = 97, 32, 2, 16, 4, 32
    tokenizer(g)
    common(g, "qwen3moe", V, D, 1, H)
    for k, v in (("attention.key_length", HD), ("expert_count", E), ("expert_used_count", 2),
                 ("expert_feed_forward_length", F)):
        g.set("qwen3moe." + k, U32, v)
    for n, shape in (("attn_norm", [D]), ("ffn_norm", [D]), ("attn_q", [H * HD, D]), ("attn_k", [H * HD, D]),
                     ("attn_v", [H * HD, D]), ("attn_output", [D, H * HD]), ("attn_q_norm", [HD]), ("attn_k_norm", [HD]),
                     ("ffn_gate_inp", [E, D]), ("ffn_gate_exps", [E, F, D]), ("ffn_up_exps", [E, F, D]),
                     ("ffn_down_exps", [E, D, F])):
        add(g, "blk.0.%s.weight" % n, *shape)
    g.write(path)


def deepseek2(path):
    g = ggufio.GGUF(version=2)
    V, D, H, NOPE, ROPE, VD, KL, E, F = 97, 32, 2, 16, 16, 16, 32, 4, 16
    tokenizer(g)
    common(g, "deepseek2", V, D, 2, H)
    for k, v in (("attention.key_length", NOPE + ROPE), ("attention.value_length", VD), ("rope.dimension_count", ROPE),
                 ("attention.kv_lora_rank", KL), ("leading_dense_block_count", 1), ("expert_count", E),
                 ("expert_used_count", 2), ("expert_feed_forward_length", F), ("expert_shared_count", 1),
                 ("expert_gating_func", 2)):
        g.set("deepseek2." + k, U32, v)
    g.set("deepseek2.expert_weights_scale", F32, 2.5)
    for layer in range(2):
        b = "blk.%d." % layer
        for n, shape in (("attn_norm", [D]), ("ffn_norm", [D]), ("attn_q", [H * (NOPE + ROPE), D]),
                         ("attn_kv_a_mqa", [KL + ROPE, D]), ("attn_kv_a_norm", [KL]), ("attn_kv_b", [H * (NOPE + VD), KL]),
                         ("attn_output", [D, H * VD])):
            add(g, b + n + ".weight", *shape)
        if layer == 0:
            for n, shape in (("ffn_gate", [64, D]), ("ffn_up", [64, D]), ("ffn_down", [D, 64])):
                add(g, b + n + ".weight", *shape)
        else:
            for n, shape in (("ffn_gate_inp", [E, D]), ("ffn_gate_exps", [E, F, D]), ("ffn_up_exps", [E, F, D]),
                             ("ffn_down_exps", [E, D, F]), ("ffn_gate_shexp", [F, D]), ("ffn_up_shexp", [F, D]),
                             ("ffn_down_shexp", [D, F])):
                add(g, b + n + ".weight", *shape)
            add(g, b + "exp_probs_b.bias", E)
    g.write(path)


if __name__ == "__main__":
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    qwen3moe(os.path.join(out, "seed-qwen3moe.gguf"))
    if "--mla" in sys.argv[2:]:
        deepseek2(os.path.join(out, "seed-deepseek2.gguf"))
