"""ggufio - read and write GGUF files (v2/v3) for the tests, standard library only.

    g = GGUF.read(path)           # g.kv: [(key, vtype, value)], g.tensors: [Tensor]
    g.set("qwen3moe.block_count", U32, 3); g.drop("some.key"); g.tensors = [...]
    g.write(path)                 # offsets recomputed, data aligned to general.alignment

Values: scalars as Python numbers, strings as bytes, arrays as (elem_vtype, [values])."""

import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}

# ggml type id -> (name, elements per block, bytes per block)
GGML = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
        7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
        12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 16: ("IQ2_XXS", 256, 66),
        20: ("IQ4_NL", 32, 18), 23: ("IQ4_XS", 256, 136), 30: ("BF16", 1, 2), 39: ("MXFP4", 32, 17)}
GGML_ID = {v[0]: k for k, v in GGML.items()}


def nbytes(gtype, ne):
    _, block, size = GGML[gtype]
    n = 1
    for d in ne:
        n *= d
    return n // block * size


class Tensor:
    def __init__(self, name, ne, gtype, data, offset=None):
        self.name, self.ne, self.type, self.data, self.offset = name, list(ne), gtype, data, offset


class _Reader:
    def __init__(self, b):
        self.b, self.pos = b, 0

    def take(self, fmt):
        v = struct.unpack_from("<" + fmt, self.b, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string(self):
        n = self.take("Q")
        s = self.b[self.pos:self.pos + n]
        self.pos += n
        return s

    def value(self, t):
        if t in SCALAR:
            return self.take(SCALAR[t])
        if t == STRING:
            return self.string()
        et, n = self.take("I"), self.take("Q")
        return (et, [self.value(et) for _ in range(n)])


def encode_value(t, v):
    if t in SCALAR:
        return struct.pack("<" + SCALAR[t], v)
    if t == STRING:
        return struct.pack("<Q", len(v)) + v
    et, items = v
    return struct.pack("<IQ", et, len(items)) + b"".join(encode_value(et, x) for x in items)


class GGUF:
    def __init__(self, version=3):
        self.version, self.kv, self.tensors = version, [], []

    @classmethod
    def read(cls, path):
        with open(path, "rb") as f:
            b = f.read()
        r = _Reader(b)
        assert r.take("4s") == b"GGUF"
        g = cls(r.take("I"))
        n_tensors, n_kv = r.take("Q"), r.take("Q")
        g.ends = [4, 8, 16, 24]  # byte offsets where a section or an entry ends
        for _ in range(n_kv):
            key = r.string().decode()
            t = r.take("I")
            g.kv.append((key, t, r.value(t)))
            g.ends.append(r.pos)
        infos = []
        for _ in range(n_tensors):
            name = r.string().decode()
            nd = r.take("I")
            ne = [r.take("Q") for _ in range(nd)]
            infos.append((name, ne, r.take("I"), r.take("Q")))
            g.ends.append(r.pos)
        align = g.get("general.alignment", 32)
        start = (r.pos + align - 1) // align * align
        for name, ne, t, off in infos:
            g.tensors.append(Tensor(name, ne, t, b[start + off:start + off + nbytes(t, ne)], off))
        g.header_end, g.data_offset = r.pos, start
        return g

    def get(self, key, default=None):
        for k, _, v in self.kv:
            if k == key:
                return v
        return default

    def set(self, key, t, v):
        for i, (k, _, _) in enumerate(self.kv):
            if k == key:
                self.kv[i] = (key, t, v)
                return
        self.kv.append((key, t, v))

    def drop(self, key):
        self.kv = [e for e in self.kv if e[0] != key]

    def tensor(self, name):
        return next(t for t in self.tensors if t.name == name)

    def header(self, offsets):
        out = [b"GGUF", struct.pack("<IQQ", self.version, len(self.tensors), len(self.kv))]
        for k, t, v in self.kv:
            kb = k.encode()
            out.append(struct.pack("<Q", len(kb)) + kb + struct.pack("<I", t) + encode_value(t, v))
        for tn, off in zip(self.tensors, offsets):
            nb = tn.name.encode()
            out.append(struct.pack("<Q", len(nb)) + nb + struct.pack("<I", len(tn.ne)) +
                       struct.pack("<%dQ" % len(tn.ne), *tn.ne) + struct.pack("<IQ", tn.type, off))
        return b"".join(out)

    def to_bytes(self, offsets=None):
        """The file; offsets (one per tensor) override the packed layout (for damaged files)."""
        align = self.get("general.alignment", 32)
        packed, pos = [], 0
        for t in self.tensors:
            packed.append(pos)
            pos = (pos + len(t.data) + align - 1) // align * align
        offsets = offsets or packed
        head = self.header(offsets)
        start = (len(head) + align - 1) // align * align
        size = max([o + len(t.data) for o, t in zip(offsets, self.tensors)] + [0])
        data = bytearray(size)
        for o, t in zip(offsets, self.tensors):
            data[o:o + len(t.data)] = t.data
        return head + b"\0" * (start - len(head)) + bytes(data)

    def write(self, path, offsets=None):
        b = self.to_bytes(offsets)
        with open(path, "wb") as f:
            f.write(b)
        return path
