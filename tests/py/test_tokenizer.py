"""Tests of tools/tokenizer_convert.py, and of the C tokenizer on what only Python can set up:

- the GGUF reader: every ground-truth file, truncated and corrupted files (TokenizerError, never
  another exception), absurd counts;
- pre-tokenizer detection from tokenizer.json (every family moe knows; unknown ones refused);
- the keys and token types written for real tokenizers;
- a SentencePiece-style tokenizer.json built from the Llama 2 vocabulary the way Hugging Face
  converts SentencePiece models (merges ordered by score): the converter must turn the merges
  order back into scores that reproduce the Llama 2 cases exactly;
- stories260K's tok512.bin against a Python re-implementation of llama2.c's encode();
- the golden checkpoints' tokenizers against their tokens.json.

The C side is reached through the helper mode of the unit-test binary (test_tokenizer encode /
detok), found next to $MOE_BIN. Standard library only.
"""

import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import unittest

ROOT = os.environ.get("MOE_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("MOE_SHARED") or os.path.join(ROOT, "..", "shared")
WORK = os.path.join(os.environ.get("MOE_WORK") or tempfile.gettempdir(), "tok_py")
sys.path.insert(0, os.path.join(ROOT, "tools"))

import moefile  # noqa: E402
import tokenizer_convert as tc  # noqa: E402

import moetest  # noqa: E402

moetest.require_shared()

CASES = os.path.join(SHARED, "tokenizer-cases")


HELPER = moetest.test_binary("test_tokenizer")


def write_moe(tok, name):
    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, name + ".moe")
    tc.write_tokenizer(tok, path)
    return path


def c_encode(moe_path, text, *flags):
    r = subprocess.run([HELPER, "encode", moe_path] + list(flags), input=text, capture_output=True)
    if r.returncode != 0:
        raise AssertionError("encode failed: %s" % r.stderr.decode(errors="replace"))
    out = r.stdout.decode().split()
    return [int(x) for x in out]


def c_encode_many(moe_path, texts, *flags):
    """Encode many texts with one process (the helper's batch mode)."""
    sep = b"\n__ggml_vocab_test__\n"
    data = b"".join(t + sep for t in texts)
    r = subprocess.run([HELPER, "batch", moe_path] + list(flags), input=data, capture_output=True)
    if r.returncode != 0:
        raise AssertionError("batch encode failed: %s" % r.stderr.decode(errors="replace"))
    lines = r.stdout.decode().split("\n")[:len(texts)]
    if len(lines) != len(texts) or any(line.startswith("error") for line in lines):
        raise AssertionError("batch encode: %r" % [line for line in lines if line.startswith("error")][:3])
    return [[int(x) for x in line.split()] for line in lines]


def c_detok(moe_path, ids):
    r = subprocess.run([HELPER, "detok", moe_path], input=" ".join(map(str, ids)).encode(), capture_output=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def read_cases(inp, out):
    with open(inp, "rb") as f:
        texts = f.read().split(b"\n__ggml_vocab_test__\n")[:-1]
    with open(out, encoding="utf-8") as f:
        ids = [[int(x) for x in line.split()] for line in f.read().split("\n")[:len(texts)]]
    return list(zip(texts, ids))


def kv_of(tok):
    return dict(tok.kv)


def tensor(tok, name):
    for n, dtype, shape, data in tok.tensors:
        if n == name:
            return dtype, shape, data
    return None


def token_texts(tok):
    _, _, text = tensor(tok, "tok.text")
    _, shape, offs = tensor(tok, "tok.offsets")
    off = struct.unpack("<%di" % shape[0], offs)
    return [text[off[i]:off[i + 1]] for i in range(shape[0] - 1)]


# ---------------------------------------------------------------- a minimal GGUF writer

def gguf_bytes(kv, version=3):
    def s(b):
        b = b.encode() if isinstance(b, str) else b
        return struct.pack("<Q", len(b)) + b

    def val(v):
        if isinstance(v, bool):
            return struct.pack("<I?", 7, v)
        if isinstance(v, int):
            return struct.pack("<Ii", 5, v)
        if isinstance(v, float):
            return struct.pack("<If", 6, v)
        if isinstance(v, (str, bytes)):
            return struct.pack("<I", 8) + s(v)
        if isinstance(v, list):
            if all(isinstance(x, (str, bytes)) for x in v):
                return struct.pack("<IIQ", 9, 8, len(v)) + b"".join(s(x) for x in v)
            if all(isinstance(x, float) for x in v):
                return struct.pack("<IIQ", 9, 6, len(v)) + struct.pack("<%df" % len(v), *v)
            return struct.pack("<IIQ", 9, 5, len(v)) + struct.pack("<%di" % len(v), *v)
        raise ValueError(v)

    out = b"GGUF" + struct.pack("<IQQ", version, 0, len(kv))
    for k, v in kv.items():
        out += s(k) + val(v)
    return out


def small_bpe_gguf():
    """A byte-level BPE vocabulary: the 256 byte tokens and a few merges."""
    b2u = {b: c for c, b in tc.U2B.items()}
    tokens = [b2u[b] for b in range(256)]
    merges = []
    for a, b in (("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("\u0120", "w")):
        merges.append(a + " " + b)
        tokens.append(a + b)
    tokens.append("<|endoftext|>")
    return {"general.architecture": "gpt2", "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": [1] * (len(tokens) - 1) + [3],
            "tokenizer.ggml.merges": merges, "tokenizer.ggml.bos_token_id": len(tokens) - 1,
            "tokenizer.ggml.eos_token_id": len(tokens) - 1}


class TestGGUFReader(unittest.TestCase):
    def test_ground_truth_files(self):
        for name in ("llama-spm", "gpt-2", "deepseek-llm", "baichuan"):
            kv = tc.read_gguf_kv(os.path.join(CASES, "ggml-vocab-%s.gguf" % name))
            self.assertIn("tokenizer.ggml.tokens", kv)
            self.assertEqual(len(kv["tokenizer.ggml.tokens"]), len(kv["tokenizer.ggml.token_type"]))

    def test_small_file_round_trip(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "v.gguf")
            with open(path, "wb") as f:
                f.write(gguf_bytes(small_bpe_gguf()))
            tok = tc.load_tokenizer(path)
            kv = kv_of(tok)
            self.assertEqual(kv["tok.model"], "bpe")
            self.assertEqual(kv["tok.pre"], "gpt2")
            self.assertEqual(token_texts(tok)[256:261], [b"he", b"ll", b"hell", b"hello", b" w"])
            if HELPER:
                moe = write_moe(tok, "small")
                self.assertEqual(c_encode(moe, b"hello world"), [259, 260, ord("o"), ord("r"), ord("l"), ord("d")])

    def test_truncated(self):
        data = gguf_bytes(small_bpe_gguf())
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "t.gguf")
            for cut in list(range(0, 64)) + list(range(64, len(data), 97)):
                with open(path, "wb") as f:
                    f.write(data[:cut])
                with self.assertRaises(tc.TokenizerError):
                    tc.load_tokenizer(path)

    def test_corrupted(self):
        """Random byte flips: the reader and converter raise TokenizerError or succeed."""
        data = gguf_bytes(small_bpe_gguf())
        rng = random.Random(7)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.gguf")
            for _ in range(300):
                b = bytearray(data)
                for _ in range(rng.randint(1, 4)):
                    b[rng.randrange(len(b))] = rng.randrange(256)
                with open(path, "wb") as f:
                    f.write(b)
                try:
                    tc.load_tokenizer(path)
                except tc.TokenizerError:
                    pass

    def test_absurd_counts(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "a.gguf")
            for blob in (b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40),
                         b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 60) + b"k",
                         b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" +
                         struct.pack("<IIQ", 9, 8, 1 << 50),
                         b"GGUF" + struct.pack("<IQQ", 1, 0, 1),
                         b"GGUF" + struct.pack(">IQQ", 3, 0, 1)):
                with open(path, "wb") as f:
                    f.write(blob)
                with self.assertRaises(tc.TokenizerError):
                    tc.load_tokenizer(path)

    def test_refusals(self):
        with self.assertRaisesRegex(tc.TokenizerError, "bert"):
            tc.load_tokenizer(os.path.join(CASES, "ggml-vocab-bert-bge.gguf"))
        with self.assertRaisesRegex(tc.TokenizerError, "unknown pre-tokenizer"):
            tc.load_tokenizer(os.path.join(CASES, "ggml-vocab-gpt-neox.gguf"))
        kv = small_bpe_gguf()
        kv["tokenizer.ggml.pre"] = "tekken"
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "p.gguf")
            with open(path, "wb") as f:
                f.write(gguf_bytes(kv))
            with self.assertRaisesRegex(tc.TokenizerError, "unknown pre-tokenizer 'tekken'"):
                tc.load_tokenizer(path)
            self.assertEqual(kv_of(tc.load_tokenizer(path, pre="gpt2"))["tok.pre"], "gpt2")


# ---------------------------------------------------------------- tokenizer.json

def hf_json(pre_tokenizer, normalizer=None, vocab=None, merges=None, added=None, model_extra=None):
    b2u = {b: c for c, b in tc.U2B.items()}
    if vocab is None:
        vocab = {b2u[b]: b for b in range(256)}
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
             "merges": merges or []}
    model.update(model_extra or {})
    return {"version": "1.0", "added_tokens": added or [], "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
            "post_processor": None, "decoder": {"type": "ByteLevel"}, "model": model}


def split(regex):
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def byte_level(use_regex, prefix=False):
    return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": use_regex}


def seq(*stages):
    return {"type": "Sequence", "pretokenizers": list(stages)}


PRE_JSON = {
    "gpt2": byte_level(True),
    "qwen2": seq(split(tc.RE_QWEN2), byte_level(False)),
    "llama3": seq(split(tc.RE_LLAMA3), byte_level(False)),
    "qwen35": seq(split(tc.RE_QWEN35), byte_level(False)),
    "deepseek_v3": seq(split("\\p{N}{1,3}"), split("[一-龥぀-ゟ゠-ヿ]+"), split(tc.RE_DSV3), byte_level(False)),
    "deepseek_llm": seq(split("[\r\n]"), split(tc.RE_DS_LETTERS), split(tc.RE_DS_PUNCT), split("\\s+$"),
                        split(tc.RE_DS_CJK), split("\\p{N}+"), byte_level(False)),
    "deepseek_coder": seq(split("[\r\n]"), split("\\s?\\p{L}+"), split("\\s?\\p{P}+"), split(tc.RE_DS_CJK),
                          split("\\p{N}"), byte_level(False)),
    "falcon": seq({"type": "Punctuation", "behavior": "Contiguous"}, byte_level(True),
                  {"type": "Digits", "individual_digits": False}, split("[0-9][0-9][0-9]")),
    "starcoder": seq({"type": "Digits", "individual_digits": True}, byte_level(True)),
}


class TestHFDetection(unittest.TestCase):
    def convert(self, tj, cfg=None):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                json.dump(tj, f, ensure_ascii=False)
            if cfg is not None:
                with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                    json.dump(cfg, f)
            return tc.load_tokenizer(d)

    def test_every_family(self):
        for name, pt in PRE_JSON.items():
            self.assertEqual(kv_of(self.convert(hf_json(pt)))["tok.pre"], name, name)

    def test_regex_spelled_with_escapes_or_literal_newlines(self):
        pt = seq(split(tc.RE_QWEN2.replace("\\r", "\r").replace("\\n", "\n")), byte_level(False))
        self.assertEqual(kv_of(self.convert(hf_json(pt)))["tok.pre"], "qwen2")

    def test_unknown_refused(self):
        for pt in (seq(split(tc.RE_QWEN2 + "x"), byte_level(False)),
                   seq(split("\\p{N}{1,3}"), byte_level(False)),
                   seq(byte_level(False), split(tc.RE_QWEN2)),
                   seq({"type": "Whitespace"}, byte_level(False)),
                   seq(split(tc.RE_LLAMA3), byte_level(False, prefix=True))):
            with self.assertRaises(tc.TokenizerError):
                self.convert(hf_json(pt))
        bad = split(tc.RE_QWEN2)
        bad["behavior"] = "Removed"
        with self.assertRaises(tc.TokenizerError):
            self.convert(hf_json(seq(bad, byte_level(False))))
        with self.assertRaisesRegex(tc.TokenizerError, "not supported"):
            self.convert(hf_json(byte_level(True), normalizer={"type": "NFKC"}))
        tj = hf_json(byte_level(True))
        tj["model"]["type"] = "WordPiece"
        with self.assertRaisesRegex(tc.TokenizerError, "WordPiece"):
            self.convert(tj)

    def test_normalizer_and_prefix(self):
        kv = kv_of(self.convert(hf_json(byte_level(True, prefix=True), normalizer={"type": "NFC"})))
        self.assertEqual((kv["tok.normalize"], kv["tok.add_space_prefix"]), ("nfc", 1))
        kv = kv_of(self.convert(hf_json(PRE_JSON["qwen2"], normalizer={"type": "Sequence", "normalizers": []})))
        self.assertEqual(kv["tok.normalize"], "none")

    def test_added_tokens_and_config(self):
        added = [{"id": 256, "content": "<|im_start|>", "special": True},
                 {"id": 257, "content": "<think>", "special": False},
                 {"id": 258, "content": "<|endoftext|>", "special": True}]
        cfg = {"bos_token": None, "eos_token": {"content": "<|endoftext|>"}, "pad_token": "<|endoftext|>",
               "add_bos_token": False, "chat_template": "{{ messages }}"}
        tok = self.convert(hf_json(PRE_JSON["qwen2"], added=added), cfg)
        kv = kv_of(tok)
        self.assertEqual(tensor(tok, "tok.types")[2][256:], bytes([3, 4, 3]))
        self.assertEqual((kv["tok.bos"], kv["tok.eos"], kv["tok.pad"], kv["tok.add_bos"]), (-1, 258, 258, 0))
        self.assertEqual(kv["tok.eos_ids"], [258])
        self.assertEqual(kv["tok.chat_template"], "{{ messages }}")

    def test_bos_from_the_post_processor(self):
        added = [{"id": 256, "content": "<s>", "special": True}, {"id": 257, "content": "</s>", "special": True}]
        tj = hf_json(PRE_JSON["gpt2"], added=added)
        tj["post_processor"] = {"type": "TemplateProcessing", "single": [
            {"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]}
        kv = kv_of(self.convert(tj))
        self.assertEqual((kv["tok.bos"], kv["tok.add_bos"], kv["tok.add_eos"]), (256, 1, 0))
        kv = kv_of(self.convert(tj, {"bos_token": "</s>"}))  # the template's token is not BOS
        self.assertEqual((kv["tok.bos"], kv["tok.add_bos"]), (257, 0))
        kv = kv_of(self.convert(tj, {"bos_token": "<s>", "add_bos_token": False}))
        self.assertEqual((kv["tok.bos"], kv["tok.add_bos"]), (256, 0))

    def test_real_files(self):
        tok = tc.load_tokenizer(os.path.join(SHARED, "tokenizer-cases-hf", "qwen3"))
        kv = kv_of(tok)
        self.assertEqual((kv["tok.pre"], kv["tok.normalize"], kv["tok.eos"], kv["tok.pad"], kv["tok.bos"]),
                         ("qwen2", "nfc", 151645, 151643, -1))
        types = tensor(tok, "tok.types")[2]
        self.assertEqual((types[151643], types[151644], types[151667]), (3, 3, 4))
        self.assertTrue(kv["tok.chat_template"].startswith("{%- if tools %}"))
        tok = tc.load_tokenizer(os.path.join(SHARED, "tokenizer-cases-hf", "deepseek_v3", "tokenizer.json"))
        kv = kv_of(tok)
        self.assertEqual((kv["tok.pre"], kv["tok.bos"], kv["tok.eos"], kv["tok.add_bos"]), ("deepseek_v3", 0, 1, 1))


# ---------------------------------------------------------------- SentencePiece-style tokenizer.json

def llama_tokenizer_json(gguf_path, metaspace):
    """The Llama 2 vocabulary as a Hugging Face tokenizer.json, built the way transformers'
    LlamaConverter does (SentencePieceExtractor): every split of a piece into two pieces of
    the vocabulary is a merge, merges ordered by the piece's score."""
    kv = tc.read_gguf_kv(gguf_path)
    toks = [t.decode("utf-8") for t in kv["tokenizer.ggml.tokens"]]
    scores = kv["tokenizer.ggml.scores"]
    types = kv["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(toks)}
    merges = []
    for piece, i in vocab.items():
        if types[i] != 1:
            continue
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab
                 and types[vocab[piece[:k]]] == 1 and types[vocab[piece[k:]]] == 1]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges.extend((lr, scores[i]) for lr in local)
    merges.sort(key=lambda m: m[1], reverse=True)
    added = [{"id": 0, "content": "<unk>", "special": True}, {"id": 1, "content": "<s>", "special": True},
             {"id": 2, "content": "</s>", "special": True}]
    tj = {"version": "1.0", "added_tokens": added, "post_processor": None,
          "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": vocab,
                    "merges": ["%s %s" % lr for lr, _ in merges]}}
    if metaspace:
        tj["normalizer"] = None
        tj["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first",
                               "split": False}
    else:
        tj["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "},
                                                        "content": "\u2581"}]}
        tj["pre_tokenizer"] = None
    return tj


@unittest.skipUnless(HELPER, "the test_tokenizer helper binary is not built")
class TestSpmTokenizerJson(unittest.TestCase):
    def test_llama2_cases(self):
        cases = read_cases(os.path.join(CASES, "ggml-vocab-llama-spm.gguf.inp"),
                           os.path.join(CASES, "ggml-vocab-llama-spm.gguf.out"))
        for metaspace in (False, True):
            tj = llama_tokenizer_json(os.path.join(CASES, "ggml-vocab-llama-spm.gguf"), metaspace)
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
                    json.dump(tj, f, ensure_ascii=False)
                with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                    json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
                               "add_eos_token": False}, f)
                tok = tc.load_tokenizer(d)
            kv = kv_of(tok)
            self.assertEqual((kv["tok.model"], kv["tok.add_space_prefix"], kv["tok.bos"], kv["tok.unk"]),
                             ("spm", 1, 1, 0))
            types = tensor(tok, "tok.types")[2]
            self.assertEqual((types[0], types[1], types[3], types[3 + 255], types[300]), (2, 3, 6, 6, 1))
            moe = write_moe(tok, "llama-json-%d" % metaspace)
            got = c_encode_many(moe, [text for text, _ in cases])
            passed = sum(g == want for g, (_, want) in zip(got, cases))
            self.assertEqual(passed, len(cases), "metaspace=%s" % metaspace)
            self.assertEqual(c_encode(moe, b"Hello", "bos"), [1, 15043])

    def test_metaspace_split_refused(self):
        tj = llama_tokenizer_json(os.path.join(CASES, "ggml-vocab-llama-spm.gguf"), True)
        tj["pre_tokenizer"]["split"] = True
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "tokenizer.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(tj, f, ensure_ascii=False)
            with self.assertRaisesRegex(tc.TokenizerError, "split"):
                tc.load_tokenizer(path)


# ---------------------------------------------------------------- llama2.c

def read_llama2c(path):
    with open(path, "rb") as f:
        data = f.read()
    pos, vocab, scores = 4, [], []
    while pos < len(data):
        score, n = struct.unpack_from("<fi", data, pos)
        vocab.append(data[pos + 8:pos + 8 + n])
        scores.append(score)
        pos += 8 + n
    return vocab, scores


def llama2c_encode(vocab, scores, text, bos=True, eos=False):
    """llama2.c run.c encode(), statement by statement: BOS, the dummy-prefix " " token for a
    non-empty text, one token per UTF-8 character (or its bytes as ids byte + 3), then merge
    the best-scoring adjacent pair (the first on ties) until none is in the vocabulary."""
    lookup = {}
    for i, t in enumerate(vocab):
        lookup.setdefault(t, i)
    tokens = [1] if bos else []
    if text:
        tokens.append(lookup[b" "])
    buf = b""
    for i, c in enumerate(text):
        if c & 0xC0 != 0x80:
            buf = b""
        buf += bytes([c])
        nxt = text[i + 1] if i + 1 < len(text) else 0
        if nxt & 0xC0 == 0x80 and len(buf) < 4:
            continue
        if buf in lookup:
            tokens.append(lookup[buf])
        else:
            tokens.extend(b + 3 for b in buf)
        buf = b""
    while True:
        best, best_id, best_i = -1e10, -1, -1
        for i in range(len(tokens) - 1):
            j = lookup.get(vocab[tokens[i]] + vocab[tokens[i + 1]])
            if j is not None and scores[j] > best:
                best, best_id, best_i = scores[j], j, i
        if best_i < 0:
            break
        tokens[best_i:best_i + 2] = [best_id]
    if eos:
        tokens.append(2)
    return tokens


@unittest.skipUnless(HELPER, "the test_tokenizer helper binary is not built")
class TestLlama2c(unittest.TestCase):
    TEXTS = ["Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
             'Lily\'s mom said, "Lily, let\'s go to the park." Lily was sad and didn\'t know what to do.',
             "", "a", " ", "  two  spaces  ", "tab\tand\nnew\nlines\n\n", "café, ñ, über, naïve",
             "\U0001F999 emoji and \u4e2d\u6587", "Hello<s>there</s>", "\x01\x02 control", "The end.\n"]

    def test_encode_matches_llama2c(self):
        path = os.path.join(SHARED, "models", "stories260K", "tok512.bin")
        vocab, scores = read_llama2c(path)
        self.assertEqual(len(set(vocab)), len(vocab))  # so lookups are unambiguous
        moe = write_moe(tc.load_tokenizer(path), "tok512")
        for text in self.TEXTS:
            b = text.encode("utf-8")
            self.assertEqual(c_encode(moe, b, "bos"), llama2c_encode(vocab, scores, b), repr(text))

    def test_decode_strips_the_prefix_after_bos(self):
        path = os.path.join(SHARED, "models", "stories260K", "tok512.bin")
        vocab, scores = read_llama2c(path)
        moe = write_moe(tc.load_tokenizer(path), "tok512")
        for text in self.TEXTS:
            b = text.encode("utf-8")
            self.assertEqual(c_detok(moe, llama2c_encode(vocab, scores, b)), b, repr(text))


# ---------------------------------------------------------------- pre-tokenizers, differentially

# Texts drawn from this alphabet are split by Python's re, with each \p{..} class and \s spelled
# out as the alphabet's members of that class (from unicodedata), exactly as Oniguruma splits
# them: an independent oracle for the hand-written matchers in C.
ALPHABET = (list("abcxyzABCXYZsStTdDmMlLrReEvV0123456789 \t\n\r'\"!?.,;:-_()[]{}<>@#$%^&*+=|~`/\\") +
            ["'s", "'S", "'ll", "'LL", "'re", "'Ve", "'d", "'M", "'t", "\u017f", "\u00e9", "\u00df", "\u2126",
             "\u212a", "\u00fc", "\u0416", "\u044f", "\u1f00", "\u1f7d", "\u1fbe", "\u00b5", "\u01c5", "\u00aa",
             "\u4e2d", "\u56fd", "\u9fa5", "\u9fa6", "\u3041", "\u30a2", "\u30fc", "\uac00", "\u3131", "\u0e01",
             "\u1780", "\u17b6", "\u0301", "\u0663", "\u00bd", "\u216b", "\u00b2", "\u201c", "\u201d", "\u2018",
             "\u2014", "\u2026", "\u3002", "\u3001", "\uff01", "\uff08", "\u20ac", "\u00b1", "\u00a9", "\U0001F600",
             "\U0001F999", "\u00a0", "\u3000", "\u2009", "\x0b", "\x0c", "\x1c", "\u200d", "\ufe0f", "\x00",
             "\u0085", "\u2028", "  ", "   ", "\n\n", " \n", "123", "4567"])
WHITE_SPACE = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F,
               0x3000} | set(range(0x2000, 0x200B))


def char_classes(extra=""):
    import re
    import unicodedata
    chars = sorted(set("".join(ALPHABET) + extra))
    cls = {k: "" for k in ("L", "N", "P", "S", "M", "WS", "U", "W")}
    for c in chars:
        full = unicodedata.category(c)
        cat = full[0]
        if cat in cls:
            cls[cat] += re.escape(c)
        # o200k's word classes: U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], W = [\p{Ll}\p{Lm}\p{Lo}\p{M}]
        if full in ("Lu", "Lt", "Lm", "Lo") or cat == "M":
            cls["U"] += re.escape(c)
        if full in ("Ll", "Lm", "Lo") or cat == "M":
            cls["W"] += re.escape(c)
        if ord(c) in WHITE_SPACE:
            cls["WS"] += re.escape(c)
    cls["APUNCT"] = re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    return cls


def oracle_patterns(extra=""):
    c = char_classes(extra)
    f = lambda t: t.format(**c)  # noqa: E731
    gpt2 = f(r"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{WS}{L}{N}]+|[{WS}]+(?![^{WS}])|[{WS}]+")
    qwen2 = f(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n{L}{N}]?[{L}]+|[{N}]| ?[^{WS}{L}{N}]+[\r\n]*|[{WS}]*[\r\n]+|"
              r"[{WS}]+(?![^{WS}])|[{WS}]+")
    llama3 = qwen2.replace("|[%s]|" % c["N"], "|[%s]{1,3}|" % c["N"])
    qwen35 = f(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n{L}{N}]?[{L}{M}]+|[{N}]| ?[^{WS}{L}{M}{N}]+[\r\n]*|"
               r"[{WS}]*[\r\n]+|[{WS}]+(?![^{WS}])|[{WS}]+")
    dsv3 = f(r"[{APUNCT}][A-Za-z]+|[^\r\n{L}{P}{S}]?[{L}{M}]+| ?[{P}{S}]+[\r\n]*|[{WS}]*[\r\n]+|"
             r"[{WS}]+(?![^{WS}])|[{WS}]+")
    ws = "[%s]" % c["WS"]
    contr = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    o200k = f(r"[^\r\n{L}{N}]?[{U}]*[{W}]+" + contr + r"|[^\r\n{L}{N}]?[{U}]+[{W}]*" + contr +
              r"|[{N}]{{1,3}}| ?[^{WS}{L}{N}]+[\r\n/]*|[{WS}]*[\r\n]+|[{WS}]+(?![^{WS}])|[{WS}]+")
    return {
        "o200k": [o200k],
        "gpt2": [gpt2],
        "qwen2": [qwen2],
        "llama3": [llama3],
        "qwen35": [qwen35],
        "deepseek_v3": [f(r"[{N}]{{1,3}}"), "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+", dsv3],
        "deepseek_llm": ["[\r\n]", ws + "?" + tc.RE_DS_LETTERS[3:], ws + "?" + tc.RE_DS_PUNCT[3:], ws + "+$",
                         tc.RE_DS_CJK, f(r"[{N}]+")],
        "deepseek_coder": ["[\r\n]", f(r"[{WS}]?[{L}]+"), f(r"[{WS}]?[{P}]+"), tc.RE_DS_CJK, f(r"[{N}]")],
        "starcoder": [f(r"[{N}]"), gpt2],
        "falcon": [f(r"[{APUNCT}{P}]+"), gpt2],  # then the byte-level stages below
    }


def oracle_split(text, patterns):
    import re
    pieces = [text]
    for pat in patterns:
        rx = re.compile(pat)
        out = []
        for piece in pieces:
            last = 0
            for m in rx.finditer(piece):
                if m.start() > last:
                    out.append(piece[last:m.start()])
                out.append(m.group())
                last = m.end()
            if last < len(piece):
                out.append(piece[last:])
        pieces = out
    return pieces


def oracle_falcon_bytes(piece):
    """HF Digits(individual_digits=false) then Split([0-9]{3}) on the byte-level characters."""
    import re
    import unicodedata
    b2u = {b: ch for ch, b in tc.U2B.items()}
    s = "".join(b2u[b] for b in piece.encode("utf-8"))
    runs = re.findall(r"(?:%s)+|(?:%s)+" % ("|".join(re.escape(ch) for ch in b2u.values()
                                                      if unicodedata.category(ch)[0] == "N"),
                                            "|".join(re.escape(ch) for ch in b2u.values()
                                                     if unicodedata.category(ch)[0] != "N")), s)
    out = []
    for r in oracle_split_list(runs, "[0-9][0-9][0-9]"):
        out.append(bytes(tc.U2B[ch] for ch in r))
    return out


def oracle_split_list(pieces, pat):
    out = []
    for p in pieces:
        out.extend(oracle_split(p, [pat]))
    return out


@unittest.skipUnless(HELPER, "the test_tokenizer helper binary is not built")
class TestPreTokenizers(unittest.TestCase):
    def test_against_python_re(self):
        rng = random.Random(2024)
        texts = []
        for _ in range(2000):
            texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40))))
        texts += ["Hello world", "  leading", "trailing  ", "a\n\n\tb", "it's 'S 'LL", "12345678", "x 1 22 333",
                  "\u4e2d\u56fd\u8a9e\u30ab\u30bf\u30ab\u30ca", "F\u00fchrer", "\u00bd\u00b2\u00b3 4\u00bd",
                  # o200k's case rules: capitals then lowercase, titlecase, modifier letters, marks, '/'
                  "HelloWorld iPhone's HTTPServer ABC'S \u00c9COLE's", "\u01c5emal \u02b0a\u02b0 \u3005\u3005a",
                  " \u0301Ab x\u0301Y\u0301z", "a/b//\n c/\r\n", "!!\u0301a .\u0301'LL",
                  # qwen35's marks inside words: Devanagari vowel signs and viramas
                  "\u0939\u093f\u0928\u094d\u0926\u0940 \u0935\u093f\u0915\u093f", "\u0301\u0301x 9\u0301 \u0301\n"]
        for name, patterns in oracle_patterns("".join(texts)).items():
            expected = []
            for text in texts:
                pieces = oracle_split(text, patterns)
                if name == "falcon":
                    expected.append([b for p in pieces for b in oracle_falcon_bytes(p)])
                else:
                    expected.append([p.encode("utf-8") for p in pieces])
            # a vocabulary with every byte and every expected piece, taken whole (ignore_merges)
            texts_b = [bytes([b]) for b in range(256)]
            index = {t: i for i, t in enumerate(texts_b)}
            for pieces in expected:
                for p in pieces:
                    if p not in index:
                        index[p] = len(texts_b)
                        texts_b.append(p)
            tok = tc._finish(texts_b, [1] * len(texts_b), model="bpe", pre=name, ignore_merges=1)
            moe = write_moe(tok, "pre-" + name)
            wrong = []
            got_all = c_encode_many(moe, [t.encode("utf-8") for t in texts])
            for text, pieces, got in zip(texts, expected, got_all):
                want = [index[p] for p in pieces]
                if got != want:
                    wrong.append((text, pieces, [texts_b[i] for i in got]))
            self.assertEqual(wrong[:3], [], "%s: %d of %d texts split differently" % (name, len(wrong), len(texts)))


    def test_qwen35_marks_by_hand(self):
        """Splits derived by hand from the two regexes, where Qwen3.5 ([\\p{L}\\p{M}]+ words,
        [^\\s\\p{L}\\p{M}\\p{N}]+ symbols) and Qwen2 (\\p{L}+, [^\\s\\p{L}\\p{N}]+) differ:
        in Qwen2 a mark after a letter starts the next piece, as the one-character prefix of the
        letters after it, or joins a symbol run; in Qwen3.5 it stays in the word."""
        hindi = "\u0939\u093f\u0928\u094d\u0926\u0940"  # ha, vowel sign i, na, virama, da, vowel sign ii
        cases = [
            (hindi, {"qwen2": ["\u0939", "\u093f\u0928", "\u094d\u0926", "\u0940"], "qwen35": [hindi]}),
            ("!!\u0301a", {"qwen2": ["!!\u0301", "a"], "qwen35": ["!!", "\u0301a"]}),
            (" \u0301x", {"qwen2": [" \u0301", "x"], "qwen35": [" \u0301x"]}),
            ("x\u0301 12", {"qwen2": ["x", "\u0301", " ", "1", "2"], "qwen35": ["x\u0301", " ", "1", "2"]}),
        ]
        for name in ("qwen2", "qwen35"):
            texts_b = [bytes([b]) for b in range(256)]
            for _, want in cases:
                texts_b += [p.encode() for p in want[name] if p.encode() not in texts_b]
            tok = tc._finish(texts_b, [1] * len(texts_b), model="bpe", pre=name, ignore_merges=1)
            got = c_encode_many(write_moe(tok, "hand-" + name), [t.encode() for t, _ in cases])
            self.assertEqual([[texts_b[i].decode() for i in ids] for ids in got], [w[name] for _, w in cases], name)


    def test_every_name_the_converter_writes_loads(self):
        """The pre-tokenizer names are kept in three tables: the converter's (PRE_NAMES, and GGUF_PRE
        for tokenizer.ggml.pre), src/pretok.c's and src/gguf_tok.c's. The regex tests above cover
        one name per regex; here every name and alias the converter can write (gpt_neox, mpt,
        refact, ...) must load in the engine, which refuses a name pretok.c does not know. A
        byte-only vocabulary encodes any text to its bytes, whatever the splits."""
        texts = [b"hello 12345 it's", b"a\n\n b"]
        byte_tok = [bytes([b]) for b in range(256)]
        for name in tc.PRE_NAMES:
            if name == "default":  # spm's: no pre-tokenizer, refused with bpe by both sides
                continue
            with self.subTest(pre=name):
                tok = tc._finish(byte_tok, [1] * 256, model="bpe", pre=name)
                self.assertEqual(c_encode_many(write_moe(tok, "name-" + name), texts), [list(t) for t in texts])

    def test_every_gguf_pre_loads_as_the_converter_maps_it(self):
        """tokenizer.ggml.pre read by the engine (gguf_tok.c's table) and by the converter
        (GGUF_PRE): each key loads on both sides or on neither, and gives the same ids. Digit merges
        make the digit splits show in the ids: "1234" is 12 34 as one run (gpt2), 123 4 in groups
        of 3 (llama3), 1 2 3 4 one by one (starcoder)."""
        texts = ["hello world 1234 123456", "it's 1 22 333\n\n x"]
        for key in sorted(tc.GGUF_PRE) + ["tekken"]:
            with self.subTest(pre=key):
                kv = small_bpe_gguf()
                kv["tokenizer.ggml.pre"] = key
                for a, b in (("3", "4"), ("1", "2"), ("12", "3"), ("4", "5"), ("45", "6")):
                    kv["tokenizer.ggml.merges"].append(a + " " + b)
                    kv["tokenizer.ggml.tokens"].insert(-1, a + b)  # before <|endoftext|>
                kv["tokenizer.ggml.token_type"] = [1] * (len(kv["tokenizer.ggml.tokens"]) - 1) + [3]
                kv["tokenizer.ggml.bos_token_id"] = kv["tokenizer.ggml.eos_token_id"] = len(kv["tokenizer.ggml.tokens"]) - 1
                path = os.path.join(WORK, "pre-%s.gguf" % key)
                os.makedirs(WORK, exist_ok=True)
                with open(path, "wb") as f:
                    f.write(gguf_bytes(kv))
                try:
                    moe_path = write_moe(tc.load_tokenizer(path), "gguf-pre-" + key)
                except tc.TokenizerError:
                    moe_path = None
                got = [moetest.moe("tokenize", "-m", path, t, check=False) for t in texts]
                if moe_path is None:
                    self.assertTrue(all(r.returncode == 1 for r in got), "%s: the converter refuses it, the engine not" % key)
                    continue
                self.assertEqual([r.returncode for r in got], [0] * len(texts), "%s: %s" % (key, got[0].stderr))
                want = [" ".join(map(str, ids)) for ids in c_encode_many(moe_path, [t.encode() for t in texts])]
                self.assertEqual([r.stdout.strip() for r in got], want, key)

# ---------------------------------------------------------------- golden checkpoints

@unittest.skipUnless(HELPER, "the test_tokenizer helper binary is not built")
class TestGolden(unittest.TestCase):
    def test_tokens_json(self):
        root = os.path.join(SHARED, "golden")
        for fam in sorted(os.listdir(root)):
            d = os.path.join(root, fam)
            if not os.path.isdir(d):
                continue
            with open(os.path.join(d, "golden.json"), encoding="utf-8") as f:
                golden = json.load(f)
            with open(os.path.join(d, "tokens.json")) as f:
                tokens = json.load(f)
            with open(os.path.join(d, "config.json")) as f:
                config = json.load(f)
            tok = tc.load_tokenizer(d)
            moe = write_moe(tok, "golden-" + fam)
            text_config = config.get("text_config", config)  # Qwen3.5: the decoder's config is nested
            bos = config.get("bos_token_id")
            self.assertEqual(tokens[0], text_config["bos_token_id"] if bos is None else bos, fam)
            self.assertEqual(c_encode(moe, golden["prompt_text"].encode("utf-8")), tokens[1:], fam)
            self.assertEqual(c_detok(moe, tokens[1:]), golden["prompt_text"].encode("utf-8"), fam)
            kv = kv_of(tok)
            self.assertLessEqual(tok.n_tokens, text_config["vocab_size"], fam)
            self.assertIn(kv["tok.eos"], (config.get("eos_token_id"), kv["tok.eos"]), fam)


if __name__ == "__main__":
    unittest.main()
