"""export_hf.py - write a Hugging Face checkpoint folder with the standard library only:
model.safetensors (F32), config.json, generation_config.json, and a SentencePiece-style
tokenizer.json + tokenizer_config.json made from a llama2.c tokenizer (tok512.bin).

The tokenizer.json is what HF's LlamaConverter produces for a SentencePiece BPE model:
a BPE model with byte_fallback, <0xXX> byte tokens, a Prepend("▁") + Replace(" ", "▁")
normalizer, and merges listed in order of the merged token's score (SentencePiece merges the
pair whose result has the highest score, HF BPE the pair with the lowest merge rank, so that
order makes the two agree).
"""

import json
import os
import re
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import safetensors_io as st  # noqa: E402

SPACE = "\u2581"


def write_safetensors(path, tensors):
    """tensors: list of (name, shape, list-of-floats or bytes of f32)."""
    st.write(path, [(name, "F32", shape, data if isinstance(data, (bytes, bytearray)) else st.from_floats("F32", data))
                    for name, shape, data in tensors])


def read_llama2c_tokenizer(path):
    with open(path, "rb") as f:
        data = f.read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    pos, pieces, scores = 4, [], []
    while pos < len(data):
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        pieces.append(data[pos:pos + n])
        scores.append(score)
        pos += n
    return pieces, scores


def tokenizer_json(tok_bin):
    pieces, scores = read_llama2c_tokenizer(tok_bin)
    vocab, specials = {}, {0: "<unk>", 1: "<s>", 2: "</s>"}
    for i, p in enumerate(pieces):
        if i in specials:
            s = specials[i]
        else:
            s = p.decode("utf-8")
            if not re.fullmatch(r"<0x[0-9A-F]{2}>", s):
                s = s.replace(" ", SPACE)
        vocab[s] = i
    # every split of every multi-character token into two tokens, best merged score first
    merges = []
    order = sorted((i for i, s in enumerate(pieces) if i >= 259), key=lambda i: (-scores[i], i))
    inv = {i: s for s, i in vocab.items()}
    for i in order:
        s = inv[i]
        for cut in range(1, len(s)):
            a, b = s[:cut], s[cut:]
            if a in vocab and b in vocab and vocab[a] >= 259 and vocab[b] >= 259:
                merges.append(a + " " + b)
    added = [{"id": i, "content": specials[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in (0, 1, 2)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": vocab,
                  "merges": merges},
    }


def write_tokenizer(folder, tok_bin):
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(tok_bin), f, ensure_ascii=False, indent=1)
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", "pad_token": None, "clean_up_tokenization_spaces": False,
           "legacy": True, "model_max_length": 512, "tokenizer_class": "LlamaTokenizer",
           "sp_model_kwargs": {}}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def mixtral_config(c):
    return {
        "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
        "vocab_size": c["vocab_size"], "hidden_size": c["hidden_size"],
        "intermediate_size": c["intermediate_size"], "num_hidden_layers": c["num_hidden_layers"],
        "num_attention_heads": c["num_attention_heads"], "num_key_value_heads": c["num_key_value_heads"],
        "head_dim": c["hidden_size"] // c["num_attention_heads"],
        "num_local_experts": c["num_local_experts"], "num_experts_per_tok": c["num_experts_per_tok"],
        "hidden_act": "silu", "max_position_embeddings": c["max_position_embeddings"],
        "rms_norm_eps": c["rms_norm_eps"], "rope_theta": c["rope_theta"], "sliding_window": None,
        "tie_word_embeddings": True, "attention_dropout": 0.0, "output_router_logits": False,
        "router_aux_loss_coef": c.get("router_aux_loss_coef", 0.01), "router_jitter_noise": 0.0,
        "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02, "use_cache": True,
        "torch_dtype": "float32", "transformers_version": "4.46.0",
    }
