"""tools/safetensors_io.py, the one safetensors reader/writer of tools/ and tests/py: round trips
(every dtype, scalar and empty tensors, shards with an index), each malformed header refused with
its own one-line error, and seeded random mutations of a small checkpoint: the parser raises only
its own error, and convert.py turns every damaged file into exit 1 with one line (or a valid
conversion when the damage missed the header), never a traceback. Needs no ../shared."""

import contextlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import unittest

import moetest

import convert  # noqa: E402  (tools/, on sys.path through moetest)
import make_synthetic  # noqa: E402
import safetensors_io as st  # noqa: E402

CONVERT = os.path.join(moetest.TOOLS, "convert.py")


def raw_file(header, data=b"", pad=True):
    """A file from a header dict (or raw header bytes) and a data section, written as given."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


class RoundTrip(unittest.TestCase):
    def test_write_then_read(self):
        path = os.path.join(moetest.workdir("safetensors"), "round.safetensors")
        vals = [1.0, -2.5, 0.15625, 65280.0, -0.0, 3.0]
        tensors = [("w.f32", "F32", [2, 3], st.from_floats("F32", vals)),
                   ("w.f16", "F16", [6], st.from_floats("F16", vals)),
                   ("w.bf16", "BF16", [3, 2], lambda: st.from_floats("BF16", vals)),
                   ("scalar", "F32", [], st.from_floats("F32", [7.0])),
                   ("empty", "BF16", [0, 4], b""),
                   ("codes", "U8", [4], bytes([0, 1, 128, 255]))]
        self.assertEqual(st.write(path, tensors), 24 + 12 + 12 + 4 + 0 + 4)
        got = st.read_file(path)
        self.assertEqual(list(got), [t[0] for t in tensors])
        for name in ("w.f32", "w.f16", "w.bf16"):
            self.assertEqual(got[name].floats(), vals, name)  # all exact in each of the three dtypes
        self.assertEqual(got["w.bf16"].shape, [3, 2])
        self.assertEqual(got["scalar"].floats(), [7.0])
        self.assertEqual(got["empty"].read(), b"")
        self.assertEqual(got["codes"].floats(), [0, 1, 128, 255])
        self.assertEqual(b"".join(got["w.f32"].chunks(chunk=5)), got["w.f32"].read())
        self.assertEqual(st.to_f32("BF16", st.from_floats("BF16", [1.0])), struct.pack("<f", 1.0))
        # BF16 keeps the upper half of the f32: 1 + 2^-9 truncates to 1
        self.assertEqual(st.from_floats("BF16", [1.0 + 2 ** -9]), st.from_floats("BF16", [1.0]))
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
        self.assertEqual(n % 8, 0)  # the data section is 8-byte aligned

    def test_writer_refuses_wrong_sizes_and_leaves_nothing(self):
        path = os.path.join(moetest.workdir("safetensors"), "bad_write.safetensors")
        for tensors, word in (([("a", "F32", [2], b"\0" * 4)], "4 bytes"),
                              ([("a", "F64", [2], b"\0" * 16)], "F64"),
                              ([("a", "F32", [-1], b"")], "shape"),
                              ([("a", "F32", [1], b"\0" * 4), ("a", "F32", [1], b"\0" * 4)], "repeated")):
            with self.assertRaises(st.SafetensorsError) as e:
                st.write(path, tensors)
            self.assertIn(word, str(e.exception))
            self.assertFalse(os.path.exists(path))
            self.assertFalse(os.path.exists(path + ".part"))

    def test_sharded_folder(self):
        d = moetest.workdir("safetensors", "shards")
        for fn in os.listdir(d):
            os.remove(os.path.join(d, fn))
        st.write(os.path.join(d, "a.safetensors"), [("x", "F32", [1], st.from_floats("F32", [1.0]))])
        st.write(os.path.join(d, "b.safetensors"), [("y", "F16", [2], st.from_floats("F16", [2.0, 3.0]))])
        index = os.path.join(d, "model.safetensors.index.json")

        def write_index(wm):
            with open(index, "w") as f:
                json.dump({"metadata": {}, "weight_map": wm}, f)
        write_index({"x": "a.safetensors", "y": "b.safetensors"})
        got = st.read_folder(d)
        self.assertEqual(sorted(got), ["x", "y"])
        self.assertEqual(got["y"].floats(), [2.0, 3.0])
        for wm, words in (({"x": "a.safetensors", "y": "a.safetensors"}, ("lists y", "no shard holds it")),
                          ({"x": "a.safetensors", "y": "b.safetensors", "z": "b.safetensors"}, ("lists z",)),
                          ({"x": "a.safetensors", "y": "c.safetensors"}, ("c.safetensors", "missing")),
                          ({"x": "../a.safetensors", "y": "b.safetensors"}, ("outside the folder",)),
                          ({"x": ["a.safetensors"], "y": "b.safetensors"}, ("not a file name",)),
                          ({}, ("no weight_map",))):
            write_index(wm)
            self.refused(lambda: st.read_folder(d), *words)
        with open(index, "w") as f:
            f.write("[1, 2]")
        self.refused(lambda: st.read_folder(d), "no weight_map")
        os.remove(index)
        self.assertEqual(sorted(st.read_folder(d)), ["x", "y"])  # no index: every *.safetensors file
        st.write(os.path.join(d, "c.safetensors"), [("x", "F32", [1], st.from_floats("F32", [1.0]))])
        self.refused(lambda: st.read_folder(d), "x", "two shards")

    def refused(self, fn, *words):
        with self.assertRaises(st.SafetensorsError) as e:
            fn()
        msg = str(e.exception)
        self.assertEqual(len(msg.splitlines()), 1, msg)
        for w in words:
            self.assertIn(w, msg)
        return msg


class MalformedHeaders(unittest.TestCase):
    """Each way a header can be wrong gets its own message (checked by a word in it)."""

    GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [8, 16]}}

    def check(self, blob, *words):
        path = os.path.join(moetest.workdir("safetensors"), "bad.safetensors")
        with open(path, "wb") as f:
            f.write(blob)
        with self.assertRaises(st.SafetensorsError) as e:
            st.read_file(path)
        msg = str(e.exception)
        self.assertEqual(len(msg.splitlines()), 1, msg)
        self.assertTrue(msg.startswith(path + ": "), msg)
        for w in words:
            self.assertIn(w, msg)
        return msg

    def edited(self, name, **fields):
        h = json.loads(json.dumps(self.GOOD))
        h[name].update(fields)
        return raw_file(h, bytes(16))

    def test_the_good_file_reads(self):
        path = os.path.join(moetest.workdir("safetensors"), "good.safetensors")
        with open(path, "wb") as f:
            f.write(raw_file(self.GOOD, bytes(16)))
        self.assertEqual(sorted(st.read_file(path)), ["a", "b"])  # so every refusal below is the edit's

    def test_each_defect(self):
        G = self.GOOD
        cases = [
            (b"", ("shorter than 8 bytes",)),
            (b"\x01\x02\x03", ("shorter than 8 bytes",)),
            (struct.pack("<Q", 1 << 40) + b"{}", ("header length 1099511627776",)),
            (struct.pack("<Q", 0) + b"{}", ("header length 0",)),
            (struct.pack("<Q", 2 ** 64 - 1) + b"{}", ("header length 18446744073709551615",)),
            (raw_file(b"{nope"), ("bad safetensors header JSON",)),
            (raw_file(b"\xff\xfe{}"), ("bad safetensors header JSON",)),
            (raw_file(b"[" * 100000 + b"]" * 100000), ("bad safetensors header JSON",)),
            (raw_file(b"[1, 2]"), ("not a JSON object",)),
            (raw_file(b'{"a": 1, "a": 2}'), ("appears twice",)),
            (raw_file(dict(G, __metadata__={"format": 1}), bytes(16)), ("__metadata__",)),
            (raw_file(dict(G, c=[1, 2]), bytes(16)), ("tensor c", "bad entry")),
            (self.edited("a", dtype="F64"), ("tensor a", "dtype F64")),
            (self.edited("a", dtype=None), ("tensor a", "dtype None")),
            (self.edited("a", shape=[-2]), ("tensor a", "bad shape")),
            (self.edited("a", shape=[True, 2]), ("tensor a", "bad shape")),
            (self.edited("a", shape=[2.0]), ("tensor a", "bad shape")),
            (self.edited("a", shape="2"), ("tensor a", "bad shape")),
            (self.edited("a", data_offsets=[0]), ("tensor a", "data_offsets")),
            (self.edited("a", data_offsets=[0.0, 8]), ("tensor a", "data_offsets")),
            (self.edited("a", data_offsets=[0, 6]), ("tensor a", "do not fit")),  # size x shape != length
            (self.edited("a", data_offsets=[8, 0]), ("tensor a", "do not fit")),  # reversed
            (self.edited("a", data_offsets=[-8, 0]), ("tensor a", "do not fit")),
            (self.edited("b", data_offsets=[12, 20]), ("tensor b", "do not fit")),  # beyond the data
            (self.edited("b", data_offsets=[4, 12]), ("tensor b", "previous tensor ends at 8")),  # overlap
            (self.edited("a", shape=[1], data_offsets=[0, 4]), ("tensor b", "previous tensor ends at 4")),  # hole
            (self.edited("a", shape=[2 ** 62]), ("tensor a", "do not fit")),  # no wrap-around in the size
            (raw_file(G, bytes(20)), ("cover 16 of 20 data bytes",)),  # trailing bytes nobody owns
            (raw_file(G, bytes(12)), ("tensor b", "do not fit")),  # truncated
        ]
        seen = set()
        for blob, words in cases:
            with self.subTest(words=words):
                seen.add(self.check(blob, *words).split(": ", 1)[1])
        self.assertGreater(len(seen), 15)  # distinct messages, not one catch-all

    def test_parse_header_is_pure(self):
        blob = raw_file(self.GOOD, bytes(16))
        base, entries = st.parse_header(blob, len(blob))
        self.assertEqual(base, len(blob) - 16)
        self.assertEqual(entries["b"], ("BF16", [2, 2], 8, 16))
        with self.assertRaises(st.SafetensorsError):
            st.parse_header(blob[:20], len(blob))  # the header itself cut short


def small_checkpoint(name):
    """A one-layer dense Qwen3 in BF16, no tokenizer: small enough to convert hundreds of times."""
    d = moetest.workdir("safetensors", name)
    cfg, fam = make_synthetic.build_config("qwen3", layers=1, vocab=32, shrink=4)
    make_synthetic.write_checkpoint(d, cfg, fam, seed=9)
    return d


def convert_in_process(src, out):
    """convert.main as the command line runs it: (exit status, stderr); an exception that escapes
    main (a traceback on the command line) propagates to the caller."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = convert.main([src, "-o", out, "--quiet", "--no-tokenizer"])
    return code, err.getvalue()


class Mutations(unittest.TestCase):
    """Seeded random damage: flipped bytes in the header, a rewritten length field, a cut file,
    and JSON-level edits (a field given another type or value). Fixed seeds, so a failure replays."""

    @classmethod
    def setUpClass(cls):
        cls.src = small_checkpoint("fuzz_src")
        with open(os.path.join(cls.src, "model.safetensors"), "rb") as f:
            cls.blob = f.read()
        cls.hlen = struct.unpack("<Q", cls.blob[:8])[0]
        cls.header = json.loads(cls.blob[8:8 + cls.hlen])
        cls.work = moetest.workdir("safetensors", "fuzz")
        cls.out = os.path.join(moetest.workdir("safetensors"), "fuzz.moe")

    def mutate(self, rng):
        b = bytearray(self.blob)
        kind = rng.randrange(5)
        if kind == 0:  # flip bits in the header
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(8 + self.hlen)] ^= 1 << rng.randrange(8)
        elif kind == 1:  # the length field
            b[:8] = struct.pack("<Q", rng.choice([0, 1, self.hlen - 1, self.hlen + 1, len(b), 2 ** 63,
                                                  rng.randrange(2 ** 64)]))
        elif kind == 2:  # cut the file short
            del b[rng.randrange(len(b)):]
        else:  # a JSON-level edit of one entry
            h = json.loads(json.dumps(self.header))
            name = rng.choice([n for n in h if n != "__metadata__"])
            field = rng.choice(["dtype", "shape", "data_offsets"])
            junk = [None, True, -1, 2 ** 70, 1.5, "F32", "U8", "I64", [], [1], [2 ** 40, 3], [-4, 4], {}, "x",
                    float("nan")]
            if rng.random() < 0.5 and isinstance(h[name][field], list) and h[name][field]:
                h[name][field][rng.randrange(len(h[name][field]))] = rng.choice(junk)
            elif rng.random() < 0.2:
                del h[name][field]
            else:
                h[name][field] = rng.choice(junk)
            b = bytearray(raw_file(h, self.blob[8 + self.hlen:]))
        return bytes(b), kind

    def test_parser_raises_only_its_own_error(self):
        rng = random.Random(1234)
        refused = 0
        for i in range(3000):
            blob, kind = self.mutate(rng)
            try:
                st.parse_header(blob, len(blob), "mutant")
            except st.SafetensorsError as e:
                refused += 1
                self.assertEqual(len(str(e).splitlines()), 1, str(e))
            except Exception as e:  # noqa: BLE001  anything else is the defect this test looks for
                self.fail("mutation %d (kind %d): %s: %s" % (i, kind, type(e).__name__, e))
        self.assertGreater(refused, 1500)  # the mutations really damage the header

    def test_convert_never_shows_a_traceback(self):
        rng = random.Random(99)
        d = os.path.join(self.work, "ckpt")
        if os.path.exists(d):
            shutil.rmtree(d)
        shutil.copytree(self.src, d)
        self.assertEqual(convert_in_process(d, self.out)[0], 0)  # the undamaged file converts
        counts = {0: 0, 1: 0}
        for i in range(150):
            blob, kind = self.mutate(rng)
            with open(os.path.join(d, "model.safetensors"), "wb") as f:
                f.write(blob)
            try:
                code, err = convert_in_process(d, self.out)
            except Exception as e:  # noqa: BLE001
                self.fail("mutation %d (kind %d) escaped convert.main: %s: %s" % (i, kind, type(e).__name__, e))
            self.assertIn(code, (0, 1), err)
            counts[code] += 1
            if code == 1:
                lines = err.strip().splitlines()
                self.assertEqual(len(lines), 1, "mutation %d: %s" % (i, err))
                self.assertTrue(lines[0].startswith("convert.py: error: "), err)
        self.assertGreater(counts[1], 75, counts)
        # and once through the real command line: one line, exit 1, no traceback
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(self.blob[:len(self.blob) // 2])
        p = subprocess.run([sys.executable, CONVERT, d, "-o", self.out, "--quiet", "--no-tokenizer"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertNotIn("Traceback", err)


if __name__ == "__main__":
    unittest.main()
