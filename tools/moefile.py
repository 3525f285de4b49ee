"""moefile - write and read the .moe weight file (docs/FORMAT.md), standard library only.

Writing streams: the directory is computed first from (name, dtype, shape), then each
tensor's bytes are produced one at a time by a callback and written in order, so a
multi-GB checkpoint never has to sit in memory.

    w = MoeWriter()
    w.add_kv("general.arch", "mixtral")
    w.add_tensor("tok_embd", BF16, [vocab, dim], source)   # source: bytes, or a callable
    w.write("out.moe", progress=True)                      # returning bytes / an iterable of chunks

Reading (for tests and tools) maps nothing: it parses the header and returns the metadata
and directory; tensor bytes are read on demand.
"""

import os
import struct
import sys
import time

MAGIC = b"MOEF"
VERSION = 1
ALIGN = 64
HEADER_BYTES = 40

# The data types (docs/FORMAT.md), as src/dtype.h and src/dtype.c: an id, then one row of the
# table. Adding a type here is those two lines.
F32, F16, BF16, I32, U8 = 0, 1, 2, 3, 4
Q8_0, Q4_0, Q4_K, Q8_0_R16, Q4_0_R16 = 16, 17, 18, 19, 20
Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4 = 21, 22, 23, 24, 25, 26, 27, 28, 29, 30


class DType:
    def __init__(self, name, block, block_bytes, row_group=1, plain=None):
        self.name = name
        self.block, self.block_bytes = block, block_bytes  # elements and bytes per block
        self.row_group = row_group                         # rows stored together (interleaved _R16)
        self.plain = plain                                 # an interleaved type's plain twin, else None


DTYPES = {
    F32: DType("F32", 1, 4),
    F16: DType("F16", 1, 2),
    BF16: DType("BF16", 1, 2),
    I32: DType("I32", 1, 4),
    U8: DType("U8", 1, 1),
    Q8_0: DType("Q8_0", 32, 34),
    Q4_0: DType("Q4_0", 32, 18),
    Q4_K: DType("Q4_K", 256, 144),
    Q8_0_R16: DType("Q8_0_R16", 32, 34, row_group=16, plain=Q8_0),
    Q4_0_R16: DType("Q4_0_R16", 32, 18, row_group=16, plain=Q4_0),
    Q4_1: DType("Q4_1", 32, 20),
    Q5_0: DType("Q5_0", 32, 22),
    Q5_1: DType("Q5_1", 32, 24),
    Q2_K: DType("Q2_K", 256, 84),
    Q3_K: DType("Q3_K", 256, 110),
    Q5_K: DType("Q5_K", 256, 176),
    Q6_K: DType("Q6_K", 256, 210),
    IQ4_NL: DType("IQ4_NL", 32, 18),
    IQ4_XS: DType("IQ4_XS", 256, 136),
    MXFP4: DType("MXFP4", 32, 17),
}
DTYPE_NAMES = {i: t.name for i, t in DTYPES.items()}
DTYPE_BLOCK = {i: (t.block, t.block_bytes) for i, t in DTYPES.items()}  # (elements per block, bytes per block)

KV_INT, KV_FLOAT, KV_STR, KV_INTS = 0, 1, 2, 3

# The FLOAT keys of docs/FORMAT.md (src/config.c's K_FLOAT rows): the loader refuses an INT there,
# so a whole number given for one (rope_theta: 10000 in a config.json) is written as a FLOAT.
FLOAT_KEYS = frozenset((
    "model.norm_eps", "model.embd_scale", "model.residual_scale", "model.logit_scale", "attn.scale",
    "attn.clip_qkv", "rope.theta", "rope.factor", "rope.beta_fast", "rope.beta_slow", "rope.attn_factor",
    "rope.low_freq_factor", "rope.high_freq_factor", "moe.scale", "moe.act_limit", "moe.act_alpha"))


class FormatError(Exception):
    """A file that does not follow docs/FORMAT.md."""


def tensor_nbytes(dtype, shape):
    block, block_bytes = DTYPE_BLOCK[dtype]
    n = 1
    for d in shape:
        n *= d
    if shape[-1] % block:
        raise FormatError("last dimension %d is not a multiple of the %s block %d" % (shape[-1], DTYPE_NAMES[dtype], block))
    return n // block * block_bytes


def _align(n, a=ALIGN):
    return (n + a - 1) // a * a


def _encode_kv(key, value):
    k = key.encode("ascii")
    if not 1 <= len(k) <= 255 or any(not (c.isdigit() or c.islower() or c in "_.") for c in key):
        raise FormatError("bad metadata key %r" % key)
    head = struct.pack("<H", len(k)) + k
    if isinstance(value, bool):
        value = int(value)
    if key in FLOAT_KEYS and isinstance(value, int):
        value = float(value)
    if isinstance(value, int):
        return head + struct.pack("<Bq", KV_INT, value)
    if isinstance(value, float):
        return head + struct.pack("<Bd", KV_FLOAT, value)
    if isinstance(value, str):
        b = value.encode("utf-8")
        return head + struct.pack("<BI", KV_STR, len(b)) + b
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return head + struct.pack("<BI", KV_INTS, len(value)) + struct.pack("<%dq" % len(value), *value)
    raise FormatError("metadata %s: unsupported value %r" % (key, value))


class MoeWriter:
    def __init__(self):
        self.kv = []        # (key, value)
        self.tensors = []   # (name, dtype, shape, source)

    def add_kv(self, key, value):
        if any(k == key for k, _ in self.kv):
            raise FormatError("metadata key %s added twice" % key)
        self.kv.append((key, value))

    def add_tensor(self, name, dtype, shape, source):
        """source: bytes-like of exactly the tensor's size, or a zero-argument callable
        returning bytes-like or an iterable of bytes-like chunks (called once, in file order)."""
        if any(t[0] == name for t in self.tensors):
            raise FormatError("tensor %s added twice" % name)
        shape = [int(d) for d in shape]
        if not 1 <= len(shape) <= 4 or any(d <= 0 for d in shape):
            raise FormatError("tensor %s: bad shape %r" % (name, shape))
        tensor_nbytes(dtype, shape)
        self.tensors.append((name, dtype, shape, source))

    def _directory(self):
        meta = b"".join(_encode_kv(k, v) for k, v in self.kv)
        entries, offset, layout = [], 0, []
        for name, dtype, shape, _ in self.tensors:
            nb = tensor_nbytes(dtype, shape)
            n = name.encode("ascii")
            entries.append(struct.pack("<H", len(n)) + n + struct.pack("<BB", dtype, len(shape)) +
                           struct.pack("<%dQ" % len(shape), *shape) + struct.pack("<QQ", offset, nb))
            layout.append((offset, nb))
            offset = _align(offset + nb)
        data_size = layout[-1][0] + layout[-1][1] if layout else 0
        body = meta + b"".join(entries)
        data_offset = _align(HEADER_BYTES + len(body))
        header = MAGIC + struct.pack("<IIIIIQQ", VERSION, ALIGN, len(self.kv), len(self.tensors), 0, data_offset,
                                     data_size)
        return header + body, data_offset, layout, data_size

    def write(self, path, progress=False):
        head, data_offset, layout, data_size = self._directory()
        tmp = path + ".part"
        start, done, last = time.time(), 0, 0.0
        try:  # a failure part-way (a source that raises) leaves neither path nor path.part
            with open(tmp, "wb", buffering=0) as raw:
                f = _PieceWriter(raw)
                f.write(head)
                f.write(b"\0" * (data_offset - len(head)))
                for (name, dtype, shape, source), (offset, nb) in zip(self.tensors, layout):
                    pad = data_offset + offset - f.pos
                    if pad:
                        f.write(b"\0" * pad)
                    data = source() if callable(source) else source
                    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
                    written = 0
                    for chunk in chunks:
                        mv = memoryview(chunk).cast("B")
                        f.write(mv)
                        written += len(mv)
                    if written != nb:
                        raise FormatError("tensor %s: source gave %d bytes, expected %d" % (name, written, nb))
                    done += nb
                    now = time.time()
                    if progress and (now - last > 0.5 or done == data_size):
                        last = now
                        rate = done / max(now - start, 1e-9) / 1e6
                        sys.stderr.write("\r  writing %5.1f%%  %8.1f MB  %6.0f MB/s  %-40s" % (
                            100.0 * done / max(data_size, 1), done / 1e6, rate, name[:40]))
                        sys.stderr.flush()
                f.flush()
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        if progress:
            sys.stderr.write("\n")
        os.replace(tmp, path)
        return data_offset + data_size


class _PieceWriter:
    """Writes a file in whole 2 MiB pieces at 2 MiB offsets (the last one excepted), so Linux
    caches the new file in 2 MiB folios, which the engine maps as huge pages (src/file.c)."""

    PIECE = 2 << 20

    def __init__(self, raw):
        self.raw, self.buf, self.pos = raw, bytearray(), 0

    def write(self, data):
        self.buf += data
        self.pos += len(data)
        if len(self.buf) >= self.PIECE:
            self._out(len(self.buf) // self.PIECE * self.PIECE)

    def flush(self):
        self._out(len(self.buf))

    def _out(self, n):
        with memoryview(self.buf) as mv:
            done = 0
            while done < n:
                done += self.raw.write(mv[done:n])
        del self.buf[:n]


class MoeFile:
    """Parsed header of a .moe file: .kv (dict), .tensors (dict name -> (dtype, shape, abs_offset, nbytes))."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES or head[:4] != MAGIC:
                raise FormatError("%s: not a moe file" % path)
            version, align, n_kv, n_t, _res, data_offset, data_size = struct.unpack("<IIIIIQQ", head[4:])
            if version != VERSION:
                raise FormatError("%s: version %d" % (path, version))
            body = f.read(data_offset - HEADER_BYTES)
        self.version, self.alignment, self.data_offset, self.data_size = version, align, data_offset, data_size
        pos = 0

        def take(fmt):
            nonlocal pos
            vals = struct.unpack_from("<" + fmt, body, pos)
            pos += struct.calcsize("<" + fmt)
            return vals

        self.kv, self.tensors = {}, {}
        for _ in range(n_kv):
            (klen,) = take("H")
            key = body[pos:pos + klen].decode("ascii")
            pos += klen
            (typ,) = take("B")
            if typ == KV_INT:
                (val,) = take("q")
            elif typ == KV_FLOAT:
                (val,) = take("d")
            elif typ == KV_STR:
                (n,) = take("I")
                val = body[pos:pos + n].decode("utf-8")
                pos += n
            elif typ == KV_INTS:
                (n,) = take("I")
                val = list(take("%dq" % n))
            else:
                raise FormatError("%s: metadata %s has type %d" % (path, key, typ))
            self.kv[key] = val
        for _ in range(n_t):
            (nlen,) = take("H")
            name = body[pos:pos + nlen].decode("ascii")
            pos += nlen
            dtype, nd = take("BB")
            shape = list(take("%dQ" % nd))
            off, nb = take("QQ")
            self.tensors[name] = (dtype, shape, data_offset + off, nb)

    def read_tensor(self, name):
        dtype, shape, off, nb = self.tensors[name]
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(nb)
