#!/usr/bin/env python3
"""tokenizer_convert - turn a published tokenizer into the tok.* keys and tensors of a
.moe file (docs/FORMAT.md, "tok.*"). Standard library only.

    tok = load_tokenizer(src)             # see below for what src may be
    for key, value in tok.kv: writer.add_kv(key, value)
    for name, dtype, shape, data in tok.tensors: writer.add_tensor(name, dtype, shape, data)

    python3 tools/tokenizer_convert.py SRC OUT.moe [--pre NAME]   # a tokenizer-only .moe file

src may be
  * a Hugging Face model directory (tokenizer.json, tokenizer_config.json, and optionally
    generation_config.json / chat_template.jinja), or a lone tokenizer.json:
      - byte-level BPE with any of the pre-tokenizers moe knows (recognised from the exact
        pre_tokenizer section: ByteLevel's own regex, the Split regexes of Qwen2, Llama 3,
        DeepSeek LLM / Coder / V3, Falcon's Punctuation+Digits, StarCoder's Digits),
      - SentencePiece-style BPE as Llama 2 / Mixtral publish it (byte_fallback, <0xXX>
        byte tokens, a Prepend+Replace normalizer or a Metaspace pre-tokenizer); the merge
        scores are derived from the merges order;
  * a GGUF file (v2/v3), from its tokenizer.ggml.* keys;
  * a llama2.c tokenizer file (tok512.bin: scores and byte tokens, SentencePiece-style).

Every token is stored as the bytes it decodes to (byte-level tokens after undoing GPT-2's
byte-to-unicode map, SentencePiece's U+2581 as a space, <0xXX> as the byte), so the engine
encodes and decodes raw bytes. Token types use GGUF's numbering: added tokens marked
special are control (3; the unknown token is 2), other added tokens user-defined (4),
<0xXX> tokens byte (6).

One key beyond docs/FORMAT.md: tok.ignore_merges = 1 (written only when set) for tokenizers
that take a pre-tokenized piece whole when it is a token (HF BPE ignore_merges; Llama 3).
"""

import json
import os
import re
import struct
import sys
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moefile  # noqa: E402

# Token types, GGUF numbering.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

PRE_NAMES = ("gpt2", "qwen2", "llama3", "deepseek_llm", "deepseek_coder", "deepseek_v3", "gpt_neox", "falcon", "mpt",
             "starcoder", "refact", "o200k", "qwen35", "default")


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


U2B = gpt2_unicode_to_byte()
BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>\Z")


class TokenizerData:
    def __init__(self):
        self.kv = []       # (key, value)
        self.tensors = []  # (name, dtype, shape, bytes)
        self.n_tokens = 0


def _byte_level_decode(s):
    """GPT-2 byte-level text -> bytes, or None if a character is not a byte stand-in."""
    try:
        return bytes(U2B[ch] for ch in s)
    except KeyError:
        return None


def _spm_text(s):
    return s.replace("\u2581", " ").encode("utf-8")


def _finish(texts, types, *, model, pre, normalize="none", bos=-1, eos=-1, unk=-1, pad=-1, eos_ids=(),
            add_bos=0, add_eos=0, add_space_prefix=None, ignore_merges=0, chat_template=None, merges=None,
            scores=None):
    """Pack everything into a TokenizerData, checking what the C loader will check."""
    n = len(texts)
    if n == 0:
        raise TokenizerError("the tokenizer has no tokens")
    if len(types) != n or any(t not in (1, 2, 3, 4, 5, 6) for t in types):
        raise TokenizerError("bad token types")
    for i, (t, ty) in enumerate(zip(texts, types)):
        if ty == BYTE and len(t) != 1:
            raise TokenizerError("token %d is a byte token but holds %d bytes" % (i, len(t)))
    if pre not in PRE_NAMES:
        raise TokenizerError("unknown pre-tokenizer %r" % pre)
    for name, v in (("bos", bos), ("eos", eos), ("unk", unk), ("pad", pad)):
        if not -1 <= v < n:
            raise TokenizerError("%s token id %d is outside the vocabulary (%d tokens)" % (name, v, n))
    tok = TokenizerData()
    offsets = [0]
    for t in texts:
        offsets.append(offsets[-1] + len(t))
    if offsets[-1] >= 2 ** 31:
        raise TokenizerError("token texts too long")
    blob = b"".join(texts) or b"\0"  # a tensor cannot be empty
    tok.tensors.append(("tok.text", moefile.U8, [len(blob)], blob))
    tok.tensors.append(("tok.offsets", moefile.I32, [n + 1], struct.pack("<%di" % (n + 1), *offsets)))
    tok.tensors.append(("tok.types", moefile.U8, [n], bytes(types)))
    if scores is not None:
        tok.tensors.append(("tok.scores", moefile.F32, [n], struct.pack("<%df" % n, *scores)))
    if merges:
        tok.tensors.append(("tok.merges", moefile.I32, [len(merges) // 3, 3], struct.pack("<%di" % len(merges), *merges)))
    tok.n_tokens = n
    kv = [("tok.model", model), ("tok.pre", pre), ("tok.normalize", normalize), ("tok.bos", bos), ("tok.eos", eos),
          ("tok.unk", unk), ("tok.pad", pad)]
    ids = []
    for e in ([eos] if eos >= 0 else []) + list(eos_ids):
        if not 0 <= e < n:
            raise TokenizerError("end-of-sequence id %d is outside the vocabulary" % e)
        if e not in ids:
            ids.append(e)
    if ids:
        kv.append(("tok.eos_ids", ids))
    kv += [("tok.add_bos", int(bool(add_bos))), ("tok.add_eos", int(bool(add_eos)))]
    if add_space_prefix is not None:
        kv.append(("tok.add_space_prefix", int(bool(add_space_prefix))))
    if ignore_merges:
        kv.append(("tok.ignore_merges", 1))
    if chat_template:
        kv.append(("tok.chat_template", chat_template))
    tok.kv = kv
    return tok


# ---------------------------------------------------------------- Hugging Face tokenizer.json

# The pre_tokenizer regexes of the families moe knows, as the tokenizer.json files spell them.
RE_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
RE_QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
RE_LLAMA3 = RE_QWEN2.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
# Qwen3.5: combining marks belong to words ([\p{L}\p{M}]+) and not to symbol runs
RE_QWEN35 = RE_QWEN2.replace(r"?\p{L}+|", r"?[\p{L}\p{M}]+|").replace(r"[^\s\p{L}\p{N}]", r"[^\s\p{L}\p{M}\p{N}]")
# GPT-4o's o200k (gpt-oss's o200k_harmony): words are a run of capitals then of lowercase
_CONTR = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
RE_O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+" + _CONTR +
            r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTR +
            r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_DSV3 = (r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|"""
           r" ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
RE_DS_LETTERS = ("\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝ"
                 "Ὗ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ"
                 "𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+")
RE_DS_PUNCT = "\\s?[!-/:-~！-／：-～‘-‟　-。]+"
RE_DS_CJK = "[一-龥ࠀ-一가-퟿]+"

_S = "Split"
KNOWN_PRE = [  # (name, stages); ("ByteLevel", use_regex), ("Split", regex), ("Digits", individual), ("Punctuation", behavior)
    ("gpt2", [("ByteLevel", True)]),
    ("qwen2", [(_S, RE_QWEN2), ("ByteLevel", False)]),
    ("llama3", [(_S, RE_LLAMA3), ("ByteLevel", False)]),
    ("qwen35", [(_S, RE_QWEN35), ("ByteLevel", False)]),
    ("o200k", [(_S, RE_O200K), ("ByteLevel", False)]),
    ("deepseek_v3", [(_S, r"\p{N}{1,3}"), (_S, "[一-龥぀-ゟ゠-ヿ]+"), (_S, RE_DSV3), ("ByteLevel", False)]),
    ("deepseek_llm", [(_S, "[\\r\\n]"), (_S, RE_DS_LETTERS), (_S, RE_DS_PUNCT), (_S, r"\s+$"), (_S, RE_DS_CJK),
                      (_S, r"\p{N}+"), ("ByteLevel", False)]),
    ("deepseek_coder", [(_S, "[\\r\\n]"), (_S, r"\s?\p{L}+"), (_S, r"\s?\p{P}+"), (_S, RE_DS_CJK), (_S, r"\p{N}"),
                        ("ByteLevel", False)]),
    ("falcon", [("Punctuation", "Contiguous"), ("ByteLevel", True), ("Digits", False), (_S, "[0-9][0-9][0-9]")]),
    ("starcoder", [("Digits", True), ("ByteLevel", True)]),
]


def _canon_regex(r):
    """Compare regexes modulo how a file spells CR/LF (a literal character or an escape)
    and modulo Unicode normalization (some copies carry NFC-folded characters)."""
    return unicodedata.normalize("NFC", r.replace("\r", "\\r").replace("\n", "\\n"))


def _hf_pre_tokenizer(pt, where):
    """(pre name, ByteLevel add_prefix_space) from a byte-level tokenizer.json pre_tokenizer."""
    if not isinstance(pt, dict):
        raise TokenizerError("%s: no pre_tokenizer: not a byte-level BPE tokenizer moe knows" % where)
    stages = pt.get("pretokenizers") if pt.get("type") == "Sequence" else [pt]
    if not isinstance(stages, list):
        raise TokenizerError("%s: bad pre_tokenizer" % where)
    sig, prefix = [], False
    for i, st in enumerate(stages):
        ty = st.get("type") if isinstance(st, dict) else None
        if ty == "ByteLevel":
            sig.append(("ByteLevel", bool(st.get("use_regex", True))))
            if st.get("add_prefix_space"):
                if i != 0:
                    raise TokenizerError("%s: ByteLevel add_prefix_space after other pre-tokenizers is not supported"
                                         % where)
                prefix = True
        elif ty == "Split":
            pat = st.get("pattern") or {}
            if "Regex" in pat:
                regex = pat["Regex"]
            elif "String" in pat:
                regex = re.escape(pat["String"])
            else:
                raise TokenizerError("%s: Split without a pattern" % where)
            if st.get("behavior") != "Isolated" or st.get("invert"):
                raise TokenizerError("%s: Split with behavior %r invert %r is not supported" % (
                    where, st.get("behavior"), st.get("invert")))
            sig.append(("Split", _canon_regex(regex)))
        elif ty == "Digits":
            sig.append(("Digits", bool(st.get("individual_digits", False))))
        elif ty == "Punctuation":
            sig.append(("Punctuation", st.get("behavior", "Isolated")))
        else:
            raise TokenizerError("%s: unknown pre-tokenizer stage %r" % (where, ty))
    for name, stages_known in KNOWN_PRE:
        known = [(k, _canon_regex(v) if k == "Split" else v) for k, v in stages_known]
        if sig == known:
            return name, prefix
    raise TokenizerError("%s: unknown pre-tokenizer %s; moe knows %s" % (
        where, json.dumps(pt, ensure_ascii=False)[:300], ", ".join(n for n, _ in KNOWN_PRE)))


def _hf_normalizer_bpe(norm, where):
    if norm is None:
        return "none"
    parts = norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]
    kinds = [p.get("type") for p in parts]
    if kinds == []:
        return "none"
    if kinds == ["NFC"]:
        return "nfc"
    raise TokenizerError("%s: normalizer %s is not supported" % (where, json.dumps(norm)[:200]))


def _read_json(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise TokenizerError("%s: %s" % (path, e))


def _content(v):
    """tokenizer_config.json names special tokens by text, or {"content": ...}."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def _merge_pair(m, where):
    if isinstance(m, str):
        parts = m.split(" ")
        if len(parts) != 2:
            raise TokenizerError("%s: bad merge %r" % (where, m))
        return parts
    if isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m):
        return m
    raise TokenizerError("%s: bad merge %r" % (where, m))


def _hf_tokenizer(path, pre_override=None):
    tj = _read_json(path)
    where = path
    folder = os.path.dirname(os.path.abspath(path))
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    cfg = _read_json(cfg_path) if os.path.exists(cfg_path) else {}
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerError("%s: tokenizer model %r is not supported (only BPE)" % (where, model.get("type")))
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokenizerError("%s: BPE with continuing_subword_prefix/end_of_word_suffix is not supported" % where)
    if model.get("dropout"):
        raise TokenizerError("%s: BPE dropout is not supported" % where)
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError("%s: no vocabulary" % where)
    added = tj.get("added_tokens") or []
    pt, norm = tj.get("pre_tokenizer"), tj.get("normalizer")
    byte_level = "ByteLevel" in json.dumps(pt)
    n = max(list(vocab.values()) + [a["id"] for a in added]) + 1
    if n > 2 ** 24:
        raise TokenizerError("%s: %d tokens is too many" % (where, n))
    texts, types = [b""] * n, [UNUSED] * n
    unk_content = model.get("unk_token")

    if byte_level:
        spm = False
        pre, prefix = _hf_pre_tokenizer(pt, where)
        if pre_override:
            pre = pre_override
        normalize = _hf_normalizer_bpe(norm, where)
        for s, i in vocab.items():
            b = _byte_level_decode(s)
            texts[i] = b if b is not None else s.encode("utf-8")  # unreachable by BPE; kept for decoding
            types[i] = NORMAL
    else:
        spm = True
        pre, normalize = "default", "none"
        prefix = _hf_spm_prefix(pt, norm, where)
        for s, i in vocab.items():
            m = BYTE_TOKEN.match(s)
            if m and model.get("byte_fallback"):
                texts[i], types[i] = bytes([int(m.group(1), 16)]), BYTE
            else:
                texts[i], types[i] = _spm_text(s), NORMAL
    for a in added:
        i, content = a["id"], a["content"]
        texts[i] = content.encode("utf-8")
        if content == unk_content:
            types[i] = UNKNOWN
        elif spm and types[i] == BYTE:
            continue
        else:
            types[i] = CONTROL if a.get("special") else USER_DEFINED

    merges, ranks = [], {}
    for r, m in enumerate(model.get("merges") or []):
        left, right = _merge_pair(m, where)
        try:
            a, b, c = vocab[left], vocab[right], vocab[left + right]
        except KeyError:
            raise TokenizerError("%s: merge %r %r names a token not in the vocabulary" % (where, left, right))
        merges.extend((a, b, c))
        ranks.setdefault(c, r)

    lookup = dict(vocab)
    lookup.update({a["content"]: a["id"] for a in added})

    def token_id(key):
        v = _content(cfg.get(key))
        if v is None:
            return -1
        if v not in lookup:
            raise TokenizerError("tokenizer_config.json: %s %r is not in the vocabulary" % (key, v))
        return lookup[v]

    bos, eos, pad = token_id("bos_token"), token_id("eos_token"), token_id("pad_token")
    unk = token_id("unk_token")
    if unk < 0 and unk_content is not None:
        unk = lookup.get(unk_content, -1)
    if unk >= 0:
        types[unk] = UNKNOWN
    bos, eos, add_bos, add_eos = _hf_add_special(tj, cfg, bos, eos, lookup)
    kwargs = dict(bos=bos, eos=eos, unk=unk, pad=pad, add_bos=add_bos, add_eos=add_eos,
                  eos_ids=_generation_eos(folder, n), chat_template=_chat_template(folder, cfg))
    if spm:
        # SentencePiece merges by the score of the merged token. HF lists the merges of a
        # converted SentencePiece model by that score, so a token's score is minus the rank
        # of the first merge that makes it. Tokens no merge makes cannot come out of HF's
        # BPE: they get the lowest score (single characters are never merge results).
        scores = [0.0] * n
        for i in range(n):
            if i in ranks:
                scores[i] = -float(ranks[i])
            elif types[i] == NORMAL and len(texts[i].decode("utf-8", "replace")) > 1:
                scores[i] = -1e30
        return _finish(texts, types, model="spm", pre="default", add_space_prefix=prefix, scores=scores, **kwargs)
    return _finish(texts, types, model="bpe", pre=pre, normalize=normalize, merges=merges,
                   add_space_prefix=prefix if prefix else None, ignore_merges=int(bool(model.get("ignore_merges"))),
                   **kwargs)


def _hf_spm_prefix(pt, norm, where):
    """SentencePiece-style tokenizer.json: whether a space is prepended (the dummy prefix)."""
    prefix = None
    if norm is not None:
        parts = norm.get("normalizers") if norm.get("type") == "Sequence" else [norm]
        prefix = False
        for p in parts:
            ty = p.get("type")
            if ty == "Prepend" and p.get("prepend") == "\u2581":
                prefix = True
            elif ty == "Replace" and (p.get("pattern") or {}).get("String") == " " and p.get("content") == "\u2581":
                pass
            else:
                raise TokenizerError("%s: SentencePiece-style normalizer %s is not supported" % (where, json.dumps(p)))
    if pt is not None:
        if pt.get("type") != "Metaspace" or pt.get("replacement", "\u2581") != "\u2581":
            raise TokenizerError("%s: pre_tokenizer %s is not supported for a SentencePiece-style BPE" % (
                where, json.dumps(pt, ensure_ascii=False)[:200]))
        if pt.get("split", True) and "prepend_scheme" not in pt:
            raise TokenizerError("%s: Metaspace that splits words is not supported" % where)
        if pt.get("split", False):
            raise TokenizerError("%s: Metaspace with split: true is not supported" % where)
        scheme = pt.get("prepend_scheme", "always" if pt.get("add_prefix_space", True) else "never")
        prefix = scheme in ("always", "first")
    if prefix is None:
        raise TokenizerError("%s: neither a ByteLevel nor a SentencePiece-style (Metaspace / Prepend+Replace) "
                             "tokenizer" % where)
    return prefix


def _hf_add_special(tj, cfg, bos, eos, lookup):
    """(bos, eos, add_bos, add_eos): the add flags of tokenizer_config.json, else what the
    TemplateProcessing post-processor puts around a single sequence (which also names BOS/EOS
    when tokenizer_config.json does not)."""
    single = None
    pp = tj.get("post_processor")
    procs = (pp.get("processors") or []) if isinstance(pp, dict) and pp.get("type") == "Sequence" else [pp]
    for p in procs:
        if isinstance(p, dict) and p.get("type") == "TemplateProcessing":
            single = p.get("single")
    first = last = None
    if isinstance(single, list) and single:
        if isinstance(single[0], dict) and "SpecialToken" in single[0]:
            first = lookup.get(single[0]["SpecialToken"].get("id"))
        if len(single) > 1 and isinstance(single[-1], dict) and "SpecialToken" in single[-1]:
            last = lookup.get(single[-1]["SpecialToken"].get("id"))
    if bos < 0 and first is not None:
        bos = first
    if eos < 0 and last is not None:
        eos = last
    add_bos = cfg.get("add_bos_token")
    add_eos = cfg.get("add_eos_token")
    if add_bos is None:
        add_bos = first is not None and first == bos
    if add_eos is None:
        add_eos = last is not None and last == eos
    return bos, eos, int(bool(add_bos) and bos >= 0), int(bool(add_eos) and eos >= 0)


def _generation_eos(folder, n):
    path = os.path.join(folder, "generation_config.json")
    if not os.path.exists(path):
        return []
    v = _read_json(path).get("eos_token_id")
    ids = v if isinstance(v, list) else [v] if isinstance(v, int) else []
    return [i for i in ids if isinstance(i, int) and 0 <= i < n]


def _chat_template(folder, cfg):
    path = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    t = cfg.get("chat_template")
    if isinstance(t, list):  # [{"name": ..., "template": ...}]
        named = {x.get("name"): x.get("template") for x in t if isinstance(x, dict)}
        t = named.get("default") or next(iter(named.values()), None)
    return t if isinstance(t, str) else None


# ---------------------------------------------------------------- GGUF

GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_STRING, GGUF_ARRAY = 8, 9


class _GGUFReader:
    """Bounds-checked sequential reader over a file (the key/value section of a GGUF can be
    tens of MB, the file many GB: it is read in chunks, never whole)."""

    CHUNK = 1 << 20

    def __init__(self, f, size, where):
        self.f, self.size, self.where = f, size, where
        self.buf, self.pos, self.base = b"", 0, 0  # buf covers file bytes [base, base + len(buf))

    def _fill(self, n):
        if self.pos + n <= len(self.buf):
            return
        if self.base + self.pos + n > self.size:
            raise TokenizerError("%s: truncated GGUF (an entry runs past the end of the file)" % self.where)
        rest = self.buf[self.pos:]
        self.base += self.pos
        self.pos = 0
        self.f.seek(self.base + len(rest))
        more = self.f.read(max(n - len(rest), self.CHUNK))
        self.buf = rest + more
        if len(self.buf) < n:
            raise TokenizerError("%s: truncated GGUF" % self.where)

    def remaining(self):
        return self.size - self.base - self.pos

    def take(self, fmt):
        n = struct.calcsize("<" + fmt)
        self._fill(n)
        v = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return v

    def raw(self, n):
        self._fill(n)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def string(self):
        (n,) = self.take("Q")
        if n > self.remaining():
            raise TokenizerError("%s: GGUF string of %d bytes runs past the end of the file" % (self.where, n))
        return self.raw(n)

    def value(self, t, depth=0):
        if t in GGUF_SCALARS:
            return self.take(GGUF_SCALARS[t])[0]
        if t == GGUF_STRING:
            return self.string()
        if t == GGUF_ARRAY:
            if depth > 2:
                raise TokenizerError("%s: GGUF arrays nested too deep" % self.where)
            at, n = self.take("IQ")
            if at in GGUF_SCALARS:
                size = struct.calcsize("<" + GGUF_SCALARS[at])
                if n * size > self.remaining():
                    raise TokenizerError("%s: GGUF array of %d items runs past the end of the file" % (self.where, n))
                # read in slices so a huge array never needs one giant buffer
                out = []
                step = max(1, self.CHUNK // size)
                for i in range(0, n, step):
                    k = min(step, n - i)
                    out.extend(struct.unpack("<%d%s" % (k, GGUF_SCALARS[at]), self.raw(k * size)))
                return out
            if at not in (GGUF_STRING, GGUF_ARRAY):
                raise TokenizerError("%s: GGUF array of unknown type %d" % (self.where, at))
            if n * 8 > self.remaining():
                raise TokenizerError("%s: GGUF array of %d items runs past the end of the file" % (self.where, n))
            return [self.value(at, depth + 1) for _ in range(n)]
        raise TokenizerError("%s: GGUF value of unknown type %d" % (self.where, t))


def read_gguf_kv(path):
    """The metadata of a GGUF v2/v3 file: {key: value}; strings stay bytes."""
    return _read_gguf(path, False)[0]


def read_gguf_tensors(path):
    """The metadata and tensor directory of a GGUF v2/v3 file: (kv, tensors), tensors
    {name: (ggml_type, ne, absolute_offset)} with ne the dims, fastest first. Offsets are
    not checked against the file here: readers check each tensor they read."""
    return _read_gguf(path, True)


def _read_gguf(path, with_tensors):
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            r = _GGUFReader(f, size, path)
            magic = r.raw(4)
            if magic != b"GGUF":
                raise TokenizerError("%s: not a GGUF file" % path)
            (version,) = r.take("I")
            if version not in (2, 3):
                raise TokenizerError("%s: GGUF version %d is not supported (2 or 3; a byte-swapped file?)" % (path, version))
            n_tensors, n_kv = r.take("QQ")
            if n_kv > 1 << 20 or n_tensors > 1 << 24:
                raise TokenizerError("%s: implausible GGUF header (%d keys, %d tensors)" % (path, n_kv, n_tensors))
            kv = {}
            for _ in range(n_kv):
                try:
                    key = r.string().decode("utf-8")
                except UnicodeDecodeError:
                    raise TokenizerError("%s: a GGUF key is not UTF-8" % path)
                (t,) = r.take("I")
                kv[key] = r.value(t)
            if not with_tensors:
                return kv, None
            infos = []
            for _ in range(n_tensors):
                name = r.string().decode("utf-8", "replace")
                (nd,) = r.take("I")
                if nd > 8:
                    raise TokenizerError("%s: tensor %s has %d dimensions" % (path, name, nd))
                ne = list(r.take("%dQ" % nd)) if nd else []
                ggml_type, off = r.take("IQ")
                infos.append((name, ggml_type, ne, off))
            align = kv.get("general.alignment", 32)
            if not isinstance(align, int) or align <= 0 or align & (align - 1):
                raise TokenizerError("%s: general.alignment %r is not a power of two" % (path, align))
            pos = r.base + r.pos
            data = (pos + align - 1) // align * align
            return kv, {name: (t, ne, data + off) for name, t, ne, off in infos}
    except OSError as e:
        raise TokenizerError("%s: %s" % (path, e))
    except (struct.error, MemoryError, OverflowError) as e:
        raise TokenizerError("%s: malformed GGUF (%s)" % (path, e))


GGUF_PRE = {
    "gpt-2": "gpt2", "gpt2": "gpt2", "mpt": "mpt", "falcon": "falcon", "starcoder": "starcoder", "refact": "refact",
    "deepseek-llm": "deepseek_llm", "deepseek-coder": "deepseek_coder", "deepseek-v3": "deepseek_v3",
    "qwen2": "qwen2", "gpt-4o": "o200k", "llama-bpe": "llama3", "llama3": "llama3", "llama-v3": "llama3", "olmo": "gpt_neox", "default": "default",
    "glm4": "llama3",  # GLM-4.5/4.6/4.7(-Flash): llama.cpp's CHATGLM4 pre-tokenizer is the llama3 regex
    "qwen35": "qwen35",
}
NFC_PRE = ("qwen2", "qwen35", "mpt", "gpt_neox")  # their tokenizer.json files carry an NFC normalizer


def _gguf_tokenizer(path, pre_override=None):
    kv = read_gguf_kv(path)

    def get(key, default=None, kind=None):
        v = kv.get("tokenizer.ggml." + key, default)
        if kind is not None and v is not default and not isinstance(v, kind):
            raise TokenizerError("%s: tokenizer.ggml.%s has the wrong type" % (path, key))
        return v

    def text(v):
        try:
            return v.decode("utf-8")
        except (AttributeError, UnicodeDecodeError):
            raise TokenizerError("%s: a tokenizer string is not UTF-8" % path)

    model = text(get("model", b""))
    if model not in ("llama", "gpt2"):
        raise TokenizerError("%s: tokenizer.ggml.model %r is not supported (llama or gpt2)" % (path, model))
    tokens = get("tokens", None, list)
    if not tokens or not all(isinstance(t, bytes) for t in tokens):
        raise TokenizerError("%s: no tokenizer.ggml.tokens" % path)
    n = len(tokens)
    types = get("token_type", [NORMAL] * n, list)
    if len(types) != n or any(not isinstance(t, int) or not 1 <= t <= 6 for t in types):
        raise TokenizerError("%s: tokenizer.ggml.token_type does not match the tokens" % path)
    types = list(types)
    strs = [text(t) for t in tokens]
    texts = []
    spm = model == "llama"
    for i, (s, ty) in enumerate(zip(strs, types)):
        if ty == BYTE:
            m = BYTE_TOKEN.match(s)
            if not m:
                raise TokenizerError("%s: byte token %d is %r" % (path, i, s))
            texts.append(bytes([int(m.group(1), 16)]))
        elif ty in (CONTROL, USER_DEFINED):
            texts.append(s.encode("utf-8"))
        elif spm:
            texts.append(_spm_text(s))
        else:
            b = _byte_level_decode(s)
            texts.append(b if b is not None else s.encode("utf-8"))

    def tid(key):
        v = get(key, -1)
        if not isinstance(v, int) or isinstance(v, bool):
            raise TokenizerError("%s: tokenizer.ggml.%s is not an integer" % (path, key))
        if v >= n:
            raise TokenizerError("%s: tokenizer.ggml.%s = %d is outside the vocabulary" % (path, key, v))
        return v

    bos, eos, unk, pad = tid("bos_token_id"), tid("eos_token_id"), tid("unknown_token_id"), tid("padding_token_id")
    eos_ids = [v for v in (tid("eot_token_id"), tid("eom_token_id")) if v >= 0]
    pre_raw = get("pre")
    pre = GGUF_PRE.get(text(pre_raw)) if pre_raw is not None else None
    if pre_override:
        pre = pre_override
    template = kv.get("tokenizer.chat_template")
    kwargs = dict(bos=bos, eos=eos, unk=unk, pad=pad, eos_ids=eos_ids,
                  add_bos=bool(get("add_bos_token", spm)), add_eos=bool(get("add_eos_token", False)),
                  chat_template=text(template) if template is not None else None)
    if spm:
        if pre not in (None, "default"):
            raise TokenizerError("%s: a SentencePiece vocabulary with pre-tokenizer %r" % (path, text(pre_raw)))
        scores = get("scores", [0.0] * n, list)
        if len(scores) != n:
            raise TokenizerError("%s: tokenizer.ggml.scores does not match the tokens" % path)
        return _finish(texts, types, model="spm", pre="default", scores=[float(s) for s in scores],
                       add_space_prefix=bool(get("add_space_prefix", True)), **kwargs)
    if pre is None:
        raise TokenizerError("%s: unknown pre-tokenizer %r (tokenizer.ggml.pre); moe knows %s" % (
            path, text(pre_raw) if pre_raw is not None else None, ", ".join(sorted(GGUF_PRE))))
    if pre == "default":
        raise TokenizerError("%s: a byte-level BPE vocabulary needs a pre-tokenizer, not 'default'" % path)
    index = {}
    for i, s in enumerate(strs):
        index.setdefault(s, i)
    merges = []
    for r, m in enumerate(get("merges", [], list)):
        parts = text(m).split(" ")
        if len(parts) != 2:
            raise TokenizerError("%s: merge %d is %r" % (path, r, m))
        try:
            merges.extend((index[parts[0]], index[parts[1]], index[parts[0] + parts[1]]))
        except KeyError:
            raise TokenizerError("%s: merge %d (%r) names a token not in the vocabulary" % (path, r, m))
    return _finish(texts, types, model="bpe", pre=pre, normalize="nfc" if pre in NFC_PRE else "none",
                   merges=merges, ignore_merges=int(pre == "llama3" and text(pre_raw or b"") != "glm4"), **kwargs)


# ---------------------------------------------------------------- llama2.c

def _llama2c_tokenizer(path):
    """tok512.bin: int32 max_token_length, then per token float32 score, int32 length, bytes.
    SentencePiece-style: 0 <unk>, 1 <s>, 2 </s>, then <0x00>..<0xFF>; spaces already real."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TokenizerError("%s: %s" % (path, e))
    if len(data) < 4:
        raise TokenizerError("%s: not a llama2.c tokenizer" % path)
    (max_len,) = struct.unpack_from("<i", data, 0)
    pos, texts, scores = 4, [], []
    while pos < len(data):
        if pos + 8 > len(data):
            raise TokenizerError("%s: truncated llama2.c tokenizer" % path)
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        if n < 0 or n > max_len or pos + n > len(data) or score != score:
            raise TokenizerError("%s: not a llama2.c tokenizer (token %d)" % (path, len(texts)))
        texts.append(data[pos:pos + n])
        scores.append(score)
        pos += n
    if len(texts) < 3:
        raise TokenizerError("%s: not a llama2.c tokenizer" % path)
    types = [NORMAL] * len(texts)
    for i, t in enumerate(texts):
        m = BYTE_TOKEN.match(t.decode("latin-1"))
        if m:
            texts[i], types[i] = bytes([int(m.group(1), 16)]), BYTE
    types[0] = UNKNOWN
    types[1] = types[2] = CONTROL
    texts[1], texts[2] = texts[1].strip(), texts[2].strip()  # llama2.c exports "\n<s>\n"
    return _finish(texts, types, model="spm", pre="default", bos=1, eos=2, unk=0, add_bos=1, add_eos=0,
                   add_space_prefix=1, scores=scores)


# ---------------------------------------------------------------- entry points

def load_tokenizer(src, pre=None):
    """src: a HF directory, a tokenizer.json, a .gguf file or a llama2.c tokenizer .bin.
    pre: force the pre-tokenizer name (for a GGUF that does not name it, e.g. GPT-NeoX)."""
    if pre is not None and pre not in PRE_NAMES:
        raise TokenizerError("unknown pre-tokenizer %r; expected one of %s" % (pre, ", ".join(PRE_NAMES)))
    if os.path.isdir(src):
        path = os.path.join(src, "tokenizer.json")
        if not os.path.exists(path):
            raise TokenizerError("%s: no tokenizer.json (a SentencePiece tokenizer.model alone is not supported)" % src)
        return _hf_tokenizer(path, pre)
    try:
        with open(src, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise TokenizerError("%s: %s" % (src, e))
    if head == b"GGUF":
        return _gguf_tokenizer(src, pre)
    if src.endswith(".json") or head[:1] == b"{":
        return _hf_tokenizer(src, pre)
    return _llama2c_tokenizer(src)


def write_tokenizer(tok, path):
    """Write a tokenizer-only .moe file."""
    w = moefile.MoeWriter()
    for k, v in tok.kv:
        w.add_kv(k, v)
    for name, dtype, shape, data in tok.tensors:
        w.add_tensor(name, dtype, shape, data)
    return w.write(path)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="Convert a tokenizer into a tokenizer-only .moe file.")
    ap.add_argument("src", help="HF directory, tokenizer.json, .gguf, or llama2.c tokenizer .bin")
    ap.add_argument("out", help="output .moe file")
    ap.add_argument("--pre", help="force the pre-tokenizer (%s)" % ", ".join(PRE_NAMES))
    args = ap.parse_args(argv)
    try:
        tok = load_tokenizer(args.src, args.pre)
        write_tokenizer(tok, args.out)
    except (TokenizerError, moefile.FormatError) as e:
        sys.stderr.write("tokenizer_convert: %s\n" % e)
        return 1
    kv = dict(tok.kv)
    sys.stderr.write("%s: %d tokens, %s, pre %s\n" % (args.out, tok.n_tokens, kv["tok.model"], kv["tok.pre"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
