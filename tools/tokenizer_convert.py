"""tokenizer_convert - turn a published tokenizer into the tok.* keys and tensors of a
.moe file (docs/FORMAT.md, "tok.*"). Standard library only.

    tok = load_tokenizer(src_dir)         # a HF model directory (tokenizer.json, tokenizer_config.json)
    for key, value in tok.kv: writer.add_kv(key, value)
    for name, dtype, shape, data in tok.tensors: writer.add_tensor(name, dtype, shape, data)

Every token is stored as the bytes it decodes to, so the engine encodes and decodes raw
bytes without the GPT-2 byte-to-unicode table.
"""

import json
import os
import struct

import moefile

# Token types, GGUF numbering.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class TokenizerError(Exception):
    pass


def gpt2_unicode_to_byte():
    """Inverse of GPT-2's bytes_to_unicode(): printable stand-in character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class TokenizerData:
    def __init__(self):
        self.kv = []       # (key, value)
        self.tensors = []  # (name, dtype, shape, bytes)
        self.n_tokens = 0


def _pack_tokens(tok, texts, types):
    offsets = [0]
    for t in texts:
        offsets.append(offsets[-1] + len(t))
    blob = b"".join(texts) or b"\0"  # a tensor cannot be empty
    tok.tensors.append(("tok.text", moefile.U8, [len(blob)], blob))
    tok.tensors.append(("tok.offsets", moefile.I32, [len(offsets)], struct.pack("<%di" % len(offsets), *offsets)))
    tok.tensors.append(("tok.types", moefile.U8, [len(types)], bytes(types)))
    tok.n_tokens = len(texts)


def _read_json(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise TokenizerError("%s: %s" % (path, e))


def _token_id(cfg, key, vocab_lookup):
    """tokenizer_config.json names special tokens by text (or {"content": ...})."""
    v = cfg.get(key)
    if isinstance(v, dict):
        v = v.get("content")
    if v is None:
        return -1
    if v not in vocab_lookup:
        raise TokenizerError("tokenizer_config.json: %s %r is not in the vocabulary" % (key, v))
    return vocab_lookup[v]


def _byte_level_bpe(tj, cfg):
    model = tj["model"]
    vocab = model["vocab"]
    n = max(list(vocab.values()) + [a["id"] for a in tj.get("added_tokens", [])]) + 1
    u2b = gpt2_unicode_to_byte()
    texts, types = [None] * n, [UNUSED] * n
    for s, i in vocab.items():
        try:
            texts[i] = bytes(u2b[ch] for ch in s)
        except KeyError:
            texts[i] = s.encode("utf-8")  # not reachable by byte-level BPE; kept for decoding
        types[i] = NORMAL
    for a in tj.get("added_tokens", []):
        texts[a["id"]] = a["content"].encode("utf-8")
        types[a["id"]] = CONTROL if a.get("special") else USER_DEFINED
    for i in range(n):
        if texts[i] is None:
            texts[i] = b""
    merges = []
    for m in model.get("merges", []):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        try:
            merges.extend((vocab[left], vocab[right], vocab[left + right]))
        except KeyError:
            raise TokenizerError("tokenizer.json: merge %r %r names a token not in the vocabulary" % (left, right))
    return texts, types, merges


def load_tokenizer(src):
    """src: a directory holding tokenizer.json (+ tokenizer_config.json)."""
    path = os.path.join(src, "tokenizer.json") if os.path.isdir(src) else src
    tj = _read_json(path)
    cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    cfg = _read_json(cfg_path) if os.path.exists(cfg_path) else {}
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerError("%s: tokenizer model %r is not supported" % (path, model.get("type")))
    pre = json.dumps(tj.get("pre_tokenizer"))
    if "ByteLevel" not in pre:
        raise TokenizerError("%s: only byte-level BPE tokenizers are supported so far" % path)
    texts, types, merges = _byte_level_bpe(tj, cfg)
    tok = TokenizerData()
    _pack_tokens(tok, texts, types)
    if merges:
        tok.tensors.append(("tok.merges", moefile.I32, [len(merges) // 3, 3], struct.pack("<%di" % len(merges), *merges)))
    lookup = {t["content"]: t["id"] for t in tj.get("added_tokens", [])}
    lookup.update(model["vocab"])
    tok.kv += [("tok.model", "bpe"), ("tok.pre", "gpt2")]
    for key, name in (("bos_token", "tok.bos"), ("eos_token", "tok.eos"), ("unk_token", "tok.unk"), ("pad_token", "tok.pad")):
        tok.kv.append((name, _token_id(cfg, key, lookup)))
    tok.kv.append(("tok.add_bos", int(bool(cfg.get("add_bos_token", False)))))
    if isinstance(cfg.get("chat_template"), str):
        tok.kv.append(("tok.chat_template", cfg["chat_template"]))
    return tok
