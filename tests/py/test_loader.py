"""Loader tests: a damaged or inconsistent .moe file is refused by `moe info` / `moe logits`
with exit code 1 and one line naming the problem, never a crash or a hang. Each kind of damage
expects its own message. (tests/unit/test_file.c covers the container parser byte by byte.)"""

import os
import re
import struct
import unittest

import moetest  # first: puts tools/ on the path
import moefile  # noqa: E402

moetest.require_shared()


class LoaderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        moetest.require_bin()
        cls.dir = moetest.workdir("loader")
        cls.base = moetest.convert(os.path.join(moetest.SHARED, "golden", "mixtral"), os.path.join(cls.dir, "base.moe"))
        with open(cls.base, "rb") as f:
            cls.bytes = f.read()
        cls.meta = moefile.MoeFile(cls.base)

    def refuse(self, path, *needles, cmd="info"):
        """The file must be refused with exit 1 and one stderr line containing every needle."""
        if cmd == "info":
            p = moetest.moe("info", "-m", path, check=False, timeout=60)
        else:
            p = moetest.moe("logits", "-m", path, "--tokens", "1,2,3", "-o", os.path.join(self.dir, "x.f32"),
                            check=False, timeout=60)
        self.assertEqual(p.returncode, 1, "exit code %d (a negative code is a crash): %s" % (p.returncode, p.stderr))
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, "one line expected: %r" % p.stderr)
        for n in needles:
            self.assertIn(n, lines[0])
        return lines[0]

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def variant(self, name, **changes):
        return moetest.rewrite(self.base, os.path.join(self.dir, name), **changes)

    def test_base_loads(self):
        p = moetest.moe("info", "-m", self.base)
        self.assertIn("mixtral", p.stdout)

    def test_truncated_at_many_offsets(self):
        size = len(self.bytes)
        data_offset = self.meta.data_offset
        cuts = sorted(set([0, 1, 4, 8, 39, 40, 41, data_offset - 1, data_offset, data_offset + 1, size - 1] +
                          [size * i // 37 for i in range(1, 37)]))
        for cut in cuts:
            msg = self.refuse(self.write("cut.moe", self.bytes[:cut]))
            self.assertTrue("truncated" in msg or "shorter than" in msg or "is empty" in msg or "file size" in msg,
                            "cut at %d: %s" % (cut, msg))

    def test_wrong_magic(self):
        self.refuse(self.write("magic.moe", b"GGUG" + self.bytes[4:]), "bad magic")
        # GGUF's magic makes it a GGUF file (read directly since issue 21): its version field is checked
        self.refuse(self.write("magic.moe", b"GGUF" + self.bytes[4:]), "GGUF version 1 is not supported")

    def test_wrong_version(self):
        self.refuse(self.write("version.moe", self.bytes[:4] + struct.pack("<I", 7) + self.bytes[8:]), "version 7")

    def test_offset_past_the_end(self):
        # the last directory entry's offset field sits 16 bytes before the end of the directory
        name = list(self.meta.tensors)[-1].encode()
        at = self.bytes.index(struct.pack("<H", len(name)) + name)
        dtype, nd = self.bytes[at + 2 + len(name)], self.bytes[at + 3 + len(name)]
        off_at = at + 4 + len(name) + 8 * nd
        bad = bytearray(self.bytes)
        bad[off_at:off_at + 8] = struct.pack("<Q", len(self.bytes) * 2 // 64 * 64)
        self.refuse(self.write("past.moe", bytes(bad)), "past the end", name.decode())

    def test_orphaned_directory_entry(self):
        # one tensor fewer in the header: the last directory entry is left in the padding before
        # the data, which must be zero bytes, so the file is refused rather than run without it
        n_t = struct.unpack_from("<I", self.bytes, 16)[0]
        cut = self.bytes[:16] + struct.pack("<I", n_t - 1) + self.bytes[20:]
        last = list(self.meta.tensors)[-1]
        self.refuse(self.write("orphan.moe", cut), "padding", "not zero")
        # a stray byte in the padding, the directory otherwise intact
        end = self.meta.data_offset - 1
        self.assertEqual(self.bytes[end], 0, "the test needs padding before the data (%s)" % last)
        self.refuse(self.write("pad.moe", self.bytes[:end] + b"\x01" + self.bytes[end + 1:]), "padding", "not zero")

    def test_bpe_without_merges(self):
        # a byte-level BPE tokenizer whose merges are gone would split every word into bytes
        tok = moetest.convert(os.path.join(moetest.SHARED, "golden", "qwen3_moe", "tokenizer.json"),
                              os.path.join(self.dir, "bpe.moe"))
        self.assertEqual(moefile.MoeFile(tok).kv["tok.model"], "bpe")
        path = moetest.rewrite(tok, os.path.join(self.dir, "nomerges.moe"), drop=("tok.merges",))
        p = moetest.moe("tokenize", "-m", path, "hello world", check=False, timeout=60)
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("tok.merges", p.stderr)

    def poisoned(self, name, tensor, value, at=(5,)):
        """The base file with the elements `at` of tensor set to value (NaN or Inf), in its own dtype."""
        dtype, shape, _, _ = self.meta.tensors[tensor]
        data = bytearray(self.meta.read_tensor(tensor))
        for i in at:
            if dtype == moefile.F32:
                struct.pack_into("<f", data, 4 * i, value)
            else:
                self.assertEqual(dtype, moefile.BF16)
                struct.pack_into("<H", data, 2 * i, struct.unpack("<I", struct.pack("<f", value))[0] >> 16)
        return self.variant(name, tensors={tensor: (dtype, shape, bytes(data))})

    def test_nonfinite_small_weights_refused_at_load(self):
        # norms, biases and routers are read whole at load (cheap); a NaN or Inf there names the tensor
        self.refuse(self.poisoned("nan_norm.moe", "blk.1.attn_norm", float("nan")), "blk.1.attn_norm",
                    "element 5", "not finite")
        self.refuse(self.poisoned("inf_router.moe", "blk.2.ffn_router", float("inf"), at=(130,)), "blk.2.ffn_router",
                    "element 130", "not finite")

    def test_nonfinite_weights_stop_the_run(self):
        # an expert matrix is too large to scan at load: the pass stops at the first layer whose
        # output is not finite, with one line naming it, instead of printing NaN logits with exit 0
        _, (n_exp, rows, cols), _, _ = self.meta.tensors["blk.1.ffn_down_exps"]
        path = self.poisoned("inf_expert.moe", "blk.1.ffn_down_exps", float("inf"),
                             at=[e * rows * cols + 7 * cols for e in range(n_exp)])  # row 7 of every expert
        moetest.moe("info", "-m", path)
        ids = ",".join(str(i) for i in range(1, 40))
        p = moetest.moe("logits", "-m", path, "--tokens", ids, "-o", os.path.join(self.dir, "x.f32"), check=False,
                        timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn("blk.1", lines[0])
        self.assertIn("not finite", lines[0])

    def test_header_error_names_the_file(self):
        bad = self.bytes[:8] + struct.pack("<I", 3) + self.bytes[12:]
        path = self.write("align.moe", bad)
        self.refuse(path, path + ": header: alignment 3")

    def test_offset_range_is_not_wrapped(self):
        # an offset near 2^64: the message shows the offset and size, not a wrapped end
        name = list(self.meta.tensors)[-1].encode()
        at = self.bytes.index(struct.pack("<H", len(name)) + name)
        nd = self.bytes[at + 3 + len(name)]
        off_at = at + 4 + len(name) + 8 * nd
        off = (1 << 64) - 64
        nbytes = struct.unpack_from("<Q", self.bytes, off_at + 8)[0]
        bad = bytearray(self.bytes)
        bad[off_at:off_at + 8] = struct.pack("<Q", off)
        msg = self.refuse(self.write("wrap.moe", bytes(bad)), name.decode(), str(off), str(nbytes))
        self.assertNotIn(str((off + nbytes) % (1 << 64)), msg)

    def test_wrong_shape(self):
        t = "blk.1.ffn_up_exps"
        dtype, shape, _, _ = self.meta.tensors[t]
        shape2 = [shape[0], shape[1] - 32, shape[2]]
        nbytes = moefile.tensor_nbytes(dtype, shape2)
        path = self.variant("shape.moe", tensors={t: (dtype, shape2, b"\0" * nbytes)})
        self.refuse(path, t, "shape [%d, %d, %d], expected [%d, %d, %d]" % tuple(shape2 + shape))

    def test_missing_tensor(self):
        self.refuse(self.variant("missing.moe", drop=("blk.2.attn_k",)), "blk.2.attn_k", "missing")

    def test_extra_tensor(self):
        path = self.variant("extra.moe", add={"blk.0.attn_q_bias": (moefile.F32, [128], b"\0" * 512)})
        self.refuse(path, "blk.0.attn_q_bias", "not used")

    def test_norm_must_be_f32(self):
        path = self.variant("norm.moe", tensors={"blk.0.attn_norm": (moefile.BF16, [128], b"\0" * 256)})
        self.refuse(path, "blk.0.attn_norm", "expected F32")

    def test_unknown_key(self):
        self.refuse(self.variant("key.moe", kv={"moe.jitter": 1}), "unknown metadata key moe.jitter")

    def test_key_of_wrong_type(self):
        self.refuse(self.variant("ktype.moe", kv={"model.n_layers": "three"}), "model.n_layers", "expected INT")

    def test_float_key_stored_as_int(self):
        # one flipped type byte (FLOAT 1 -> INT 0) reads norm_eps's f64 bits as an i64 (~4.5e18):
        # a FLOAT key holds a FLOAT, whole-numbered or not (docs/FORMAT.md)
        key = b"model.norm_eps"
        at = self.bytes.index(struct.pack("<H", len(key)) + key) + 2 + len(key)
        self.assertEqual(self.bytes[at], moefile.KV_FLOAT)
        flipped = self.bytes[:at] + bytes([moefile.KV_INT]) + self.bytes[at + 1:]
        self.refuse(self.write("ftype.moe", flipped), "model.norm_eps", "type INT, expected FLOAT")

    def test_unknown_routing_choice(self):
        self.refuse(self.variant("score.moe", kv={"moe.score": "sparsemax"}), "moe.score", "sparsemax")

    def test_missing_required_key(self):
        self.refuse(self.variant("req.moe", drop_kv=("rope.theta",)), "rope.theta", "required")

    def test_inconsistent_config(self):
        self.refuse(self.variant("k.moe", kv={"moe.n_active": 9}), "moe.n_active 9")
        self.refuse(self.variant("heads.moe", kv={"model.n_kv_heads": 3}), "n_kv_heads 3")
        self.refuse(self.variant("layers.moe", kv={"moe.layers": [1, 1]}), "moe.layers has 2 entries")
        self.refuse(self.variant("groups.moe", kv={"moe.n_groups": 3}), "moe.n_groups 3")

    def test_tokenizer_only_file_cannot_run(self):
        path = self.variant("toks.moe", drop_kv=[k for k in self.meta.kv if not k.startswith("tok.")],
                            drop=[t for t in self.meta.tensors if not t.startswith("tok.")])
        p = moetest.moe("info", "-m", path)
        self.assertIn("tokenizer-only", p.stdout)
        self.refuse(path, "tokenizer-only", cmd="logits")

    def test_missing_file_and_directory(self):
        self.refuse(os.path.join(self.dir, "nope.moe"), "cannot open")
        self.refuse(self.dir, "not a regular file")


class FloatKeyTest(unittest.TestCase):
    """Every producer (convert.py, make_model.py, upcycle.py, tests) writes through moefile's
    writer, which stores a FLOAT key as FLOAT even when handed a whole number."""

    def test_float_keys_are_the_loaders(self):
        with open(os.path.join(moetest.ROOT, "src", "config.c")) as f:
            loader = set(re.findall(r'\{"([a-z_.]+)", K_FLOAT,', f.read()))
        self.assertTrue(loader)
        self.assertEqual(set(moefile.FLOAT_KEYS), loader)

    def test_whole_number_written_as_float(self):
        moetest.require_bin()
        d = moetest.workdir("loader")
        base = moetest.convert(os.path.join(moetest.SHARED, "golden", "mixtral"), os.path.join(d, "fbase.moe"))
        path = moetest.rewrite(base, os.path.join(d, "theta_int.moe"), kv={"rope.theta": 10000, "moe.scale": 1})
        kv = moefile.MoeFile(path).kv
        self.assertIsInstance(kv["rope.theta"], float)
        self.assertIsInstance(kv["moe.scale"], float)
        moetest.moe("info", "-m", path)


class PieceWriterTest(unittest.TestCase):
    """moefile's writer hands the OS whole 2 MiB pieces (the last one excepted), whatever the
    sizes it is given, and the bytes arrive unchanged and in order, also when the OS takes
    fewer bytes than offered."""

    class Raw:
        def __init__(self, cap):
            self.cap, self.sizes, self.data = cap, [], bytearray()

        def write(self, b):
            n = min(len(b), self.cap)
            self.sizes.append(n)
            self.data += bytes(b[:n])
            return n

    def write_all(self, cap):
        raw, want = self.Raw(cap), bytearray()
        w = moefile._PieceWriter(raw)
        for i, n in enumerate((40, 5 << 20, 1, 123457, 9 << 20, 7)):
            chunk = (bytes((i * 31 + j) & 255 for j in range(4096)) * (n // 4096 + 1))[:n]
            want += chunk
            w.write(chunk)
            self.assertEqual(w.pos, len(want))
        w.flush()
        self.assertEqual(raw.data, want)
        return raw.sizes

    def test_pieces(self):
        piece = moefile._PieceWriter.PIECE
        sizes = self.write_all(1 << 40)
        for n in sizes[:-1]:
            self.assertEqual(n % piece, 0, sizes)
        self.assertNotEqual(sizes[-1] % piece, 0)

    def test_short_writes(self):
        self.assertGreater(len(self.write_all(3 << 20)), len(self.write_all(1 << 40)))


if __name__ == "__main__":
    unittest.main()
