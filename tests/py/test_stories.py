"""Real weights end to end: Karpathy's stories260K (llama2.c, MIT) through tools/convert.py.

  - `moe run --temp 0` from BOS prints exactly the text that ../shared/models/stories260K/README.md
    quotes from llama2.c (`./run stories260K.bin -z tok512.bin -t 0.0`, 256 steps): the text is
    read from the README's fenced block, not copied here;
  - token for token: the greedy ids (`moe logits --greedy`) equal the ids of that text under an
    independent Python implementation of llama2.c's `encode`, and there are exactly 256 of them
    (llama2.c's 256 steps from BOS sample 256 tokens; the text is cut mid-story);
  - `moe tokenize` equals that Python `encode` on assorted strings (dummy prefix, merges by
    score, byte fallback id = byte + 3).
"""

import os
import re
import struct
import unittest

import moetest

moetest.require_shared()

DIR = os.path.join(moetest.SHARED, "models", "stories260K")
STEPS = 256


def readme_text():
    with open(os.path.join(DIR, "README.md"), encoding="utf-8") as f:
        doc = f.read()
    part = doc[doc.index("## Known output"):]
    m = re.search(r"```\n(.*?)```", part, re.S)
    return m.group(1)


def read_tok512(path):
    """llama2.c tokenizer: int32 max_token_length, then per token f32 score, i32 length, bytes."""
    with open(path, "rb") as f:
        data = f.read()
    pos, vocab, scores = 4, [], []
    while pos < len(data):
        score, n = struct.unpack_from("<fi", data, pos)
        pos += 8
        vocab.append(data[pos:pos + n])
        scores.append(score)
        pos += n
    return vocab, scores


class Llama2cEncoder:
    """llama2.c run.c `encode(t, text, bos=0, eos=0)`, written from its description."""

    def __init__(self, vocab, scores):
        self.scores = scores
        self.vocab = vocab
        self.lookup = {}
        for i, piece in enumerate(vocab):
            self.lookup.setdefault(piece, i)

    def encode(self, text):
        data = text.encode("utf-8")
        tokens = []
        if data:
            tokens.append(self.lookup[b" "])  # the dummy prefix
        i = 0
        while i < len(data):  # one UTF-8 character at a time (a lead byte and its continuation bytes)
            j = i + 1
            while j < len(data) and (data[j] & 0xC0) == 0x80 and j - i < 4:
                j += 1
            ch = data[i:j]
            if ch in self.lookup:
                tokens.append(self.lookup[ch])
            else:
                tokens.extend(b + 3 for b in ch)  # byte fallback: <0x00> is id 3
            i = j
        while True:  # merge the adjacent pair whose merged token scores best; first one on ties
            best, best_id, best_i = -1e10, -1, -1
            for k in range(len(tokens) - 1):
                merged = self.vocab[tokens[k]] + self.vocab[tokens[k + 1]]
                tid = self.lookup.get(merged)
                if tid is not None and self.scores[tid] > best:
                    best, best_id, best_i = self.scores[tid], tid, k
            if best_i < 0:
                return tokens
            tokens[best_i:best_i + 2] = [best_id]


class StoriesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.model = moetest.convert(DIR, os.path.join(moetest.workdir("stories"), "stories260K.moe"))
        vocab, scores = read_tok512(os.path.join(DIR, "tok512.bin"))
        cls.enc = Llama2cEncoder(vocab, scores)
        cls.expected = readme_text()

    def test_readme_text_exactly(self):
        out = moetest.moe("run", "-m", self.model, "--temp", "0", "-n", STEPS, "-p", "").stdout
        self.assertEqual(out.rstrip("\n"), self.expected.rstrip("\n"))

    def test_token_for_token(self):
        p = moetest.moe("logits", "-m", self.model, "--tokens", "1", "-o",
                        os.path.join(moetest.workdir("stories"), "greedy.f32"), "--greedy", STEPS + 8)
        ids = [int(x) for x in p.stdout.split()]
        want = self.enc.encode(self.expected.rstrip("\n"))
        self.assertEqual(len(want), STEPS, "llama2.c's 256 steps from BOS are 256 generated tokens")
        self.assertEqual(ids[:STEPS], want)
        # the README's text is cut by the step limit, not by an end of story: the model goes on
        self.assertGreater(len(ids), STEPS)

    def test_step_limit_is_exact(self):
        short = moetest.moe("run", "-m", self.model, "--temp", "0", "-n", STEPS - 1, "-p", "").stdout.rstrip("\n")
        self.assertTrue(self.expected.startswith(short))
        self.assertLess(len(short), len(self.expected.rstrip("\n")))

    def test_tokenize_matches_llama2c_encode(self):
        cases = ["Once upon a time", "Hello world", "a", " ", "  two leading spaces", "trailing  ",
                 "Lily's mom said, \"Don't worry.\"", "line one\nline two\n\n", "tab\tand\rcarriage",
                 "naïve café", "日本語", "emoji \U0001F600!", "12345 + 678 = 999", "ALL CAPS SHOUTING",
                 self.expected.rstrip("\n")]
        for text in cases:
            got = [int(x) for x in moetest.moe("tokenize", "-m", self.model, text).stdout.split()]
            self.assertEqual(got, self.enc.encode(text), repr(text))

    def test_byte_fallback_ids(self):
        # a character outside the 512-token vocabulary becomes its UTF-8 bytes, id = byte + 3
        self.assertNotIn("\u4e2d".encode("utf-8"), self.enc.lookup)
        got = [int(x) for x in moetest.moe("tokenize", "-m", self.model, "\u4e2d").stdout.split()]
        self.assertEqual(got[-3:], [b + 3 for b in "\u4e2d".encode("utf-8")])


if __name__ == "__main__":
    unittest.main()
