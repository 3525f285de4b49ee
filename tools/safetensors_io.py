"""safetensors_io.py - read and write safetensors files and sharded checkpoint folders, standard
library only. Every reader and writer of the format in tools/ and tests/py goes through here.
(Not named safetensors.py: that would shadow the pip package of that name for anything run from tools/.)

    tensors = read_folder(src)      # {name: Tensor}: model.safetensors, or the shards an index names
    tensors = read_file(path)       # one file
    raw = tensors[name].read()      # the stored bytes; .floats() decodes F32/F16/BF16 to Python floats
    write(path, [(name, dtype, shape, data), ...])

The file (huggingface/safetensors): u64 little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the
data section, offsets relative to its start. A file is checked completely before any tensor is
handed out: header length against the file size, every entry's fields and types, dtype size x
shape == byte length, offsets inside the data section, and the tensors tiling the data section
with no overlap and no hole. Anything else is a SafetensorsError whose message is one line naming
the file, the tensor and the numbers.
"""

import json
import os
import struct

# bytes per element of the dtypes moe reads (U8: gpt-oss's MXFP4 expert blocks and scales)
DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "U8": 1}
MAX_HEADER = 100 << 20  # the reference implementation's own limit on the JSON header
CHUNK = 1 << 24  # bytes per read when a tensor is streamed


class SafetensorsError(Exception):
    pass


class Tensor:
    """One tensor of a safetensors file: where its bytes are (absolute file offset), and what they are."""

    def __init__(self, name, path, dtype, shape, start, nbytes):
        self.name, self.path, self.dtype, self.shape = name, path, dtype, list(shape)  # dtype: "BF16", ...
        self.start, self.nbytes = start, nbytes

    def read(self, offset=0, size=None):
        """size bytes of the tensor from offset (all of it by default), read from the file."""
        size = self.nbytes - offset if size is None else size
        if not 0 <= offset <= offset + size <= self.nbytes:
            raise SafetensorsError("%s: %s: bytes %d..%d asked of %d" % (self.path, self.name, offset, offset + size,
                                                                          self.nbytes))
        try:
            with open(self.path, "rb") as f:
                f.seek(self.start + offset)
                data = f.read(size)
        except OSError as e:
            raise SafetensorsError("%s: %s" % (self.path, e.strerror or e))
        if len(data) != size:
            raise SafetensorsError("%s: %s is truncated (the file changed since it was opened)" % (self.path, self.name))
        return data

    def chunks(self, offset=0, size=None, chunk=CHUNK):
        """The bytes offset..offset+size in pieces of at most chunk bytes (the tensor is never whole in memory)."""
        size = self.nbytes - offset if size is None else size
        done = 0
        while done < size:
            n = min(chunk, size - done)
            yield self.read(offset + done, n)
            done += n

    def floats(self):
        """The values as a flat list of Python floats (F32, F16, BF16)."""
        return to_floats(self.dtype, self.read())


# ---------------------------------------------------------------- reading

def parse_header(buf, file_size, path="<bytes>"):
    """The entries of a header: buf is the file's first bytes (at least 8 + header length),
    file_size the whole file's size. Returns (data_start, {name: (dtype, shape, begin, end)})
    with offsets relative to the data section, checked against it. A pure function over bytes,
    so tests and fuzzing call it directly."""
    if file_size < 8 or len(buf) < 8:
        raise SafetensorsError("%s: not a safetensors file (shorter than 8 bytes)" % path)
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n < 2 or n > min(file_size - 8, MAX_HEADER):
        raise SafetensorsError("%s: not a safetensors file (header length %d, file size %d)" % (path, n, file_size))
    if len(buf) < 8 + n:
        raise SafetensorsError("%s: the header is truncated (%d of %d bytes)" % (path, len(buf) - 8, n))
    try:
        header = json.loads(bytes(buf[8:8 + n]).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SafetensorsError("%s: bad safetensors header JSON (%s)" % (path, str(e).splitlines()[0] if str(e) else
                                                                        type(e).__name__))
    if not isinstance(header, dict):
        raise SafetensorsError("%s: safetensors header is not a JSON object" % path)
    data_size = file_size - 8 - n
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise SafetensorsError("%s: __metadata__ must map strings to strings" % path)
            continue
        entries[name] = _entry(path, name, info, data_size)
    _check_tiling(path, entries, data_size)
    return 8 + n, entries


def _no_duplicates(pairs):
    """json object hook: a name given twice would silently keep the last entry."""
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("%s appears twice" % json.dumps(k))
        d[k] = v
    return d


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _entry(path, name, info, data_size):
    """One header entry, checked: (dtype, shape, begin, end)."""
    if not isinstance(info, dict):
        raise SafetensorsError("%s: tensor %s: bad entry" % (path, name))
    dt, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dt, str) or dt not in DTYPE_SIZE:
        raise SafetensorsError("%s: tensor %s has dtype %s; only F32, F16, BF16 (and U8 MXFP4 blocks) are supported"
                               % (path, name, dt))
    if (not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape)
            or not isinstance(offs, list) or len(offs) != 2 or not all(_is_int(o) for o in offs)):
        raise SafetensorsError("%s: tensor %s: bad shape or data_offsets" % (path, name))
    count = 1
    for d in shape:
        count *= d
    nbytes = count * DTYPE_SIZE[dt]
    if not 0 <= offs[0] <= offs[1] <= data_size or offs[1] - offs[0] != nbytes:
        raise SafetensorsError("%s: tensor %s: data_offsets %s do not fit shape %s %s in %d data bytes" % (
            path, name, offs, shape, dt, data_size))
    return dt, shape, offs[0], offs[1]


def _check_tiling(path, entries, data_size):
    """The format: the tensors tile the data section exactly, no overlap and no hole."""
    end = 0
    for name, (_, _, a, b) in sorted(entries.items(), key=lambda e: (e[1][2], e[1][3])):
        if a != end:
            raise SafetensorsError("%s: tensor %s: data_offsets start at %d, but the previous tensor ends at %d" % (
                path, name, a, end))
        end = b
    if end != data_size:
        raise SafetensorsError("%s: the tensors cover %d of %d data bytes" % (path, end, data_size))


def read_file(path):
    """{name: Tensor} of one safetensors file, checked completely (parse_header)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            if 2 <= n <= min(size - 8, MAX_HEADER):
                head += f.read(n)
    except OSError as e:
        raise SafetensorsError("%s: %s" % (path, e.strerror or e))
    base, entries = parse_header(head, size, path)
    return {name: Tensor(name, path, dt, shape, base + a, b - a) for name, (dt, shape, a, b) in entries.items()}


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise SafetensorsError("%s: %s" % (path, e.strerror or e))
    except (ValueError, RecursionError) as e:
        raise SafetensorsError("%s: bad JSON (%s)" % (path, e))


def shard_files(src):
    """(files, weight_map) of a checkpoint folder: the shards model.safetensors.index.json names
    (weight_map: tensor -> file), or every *.safetensors file (weight_map None)."""
    index = os.path.join(src, "model.safetensors.index.json")
    if not os.path.exists(index):
        files = sorted(n for n in os.listdir(src) if n.endswith(".safetensors"))
        if not files:
            raise SafetensorsError("%s: no *.safetensors weights" % src)
        return files, None
    idx = read_json(index)
    wm = idx.get("weight_map") if isinstance(idx, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise SafetensorsError("%s: no weight_map" % index)
    for name, fn in wm.items():
        if not isinstance(fn, str):
            raise SafetensorsError("%s: weight_map[%s] is not a file name" % (index, json.dumps(name)))
        if os.path.basename(fn) != fn or fn in ("", ".", ".."):
            raise SafetensorsError("%s: weight_map names a file outside the folder: %s" % (index, fn))
    return sorted(set(wm.values())), wm


def read_folder(src):
    """All tensors of a Hugging Face checkpoint folder, sharded (index.json) or single-file; every
    shard checked, each tensor in exactly one shard, and the index and the shards agreeing."""
    files, wm = shard_files(src)
    tensors = {}
    for fn in files:
        path = os.path.join(src, fn)
        if not os.path.exists(path):
            raise SafetensorsError("%s: shard %s is missing" % (src, fn))
        for name, t in read_file(path).items():
            if name in tensors:
                raise SafetensorsError("%s: tensor %s appears in two shards" % (src, name))
            if wm is not None and wm.get(name) != fn:
                raise SafetensorsError("%s: tensor %s is in %s but the index says %s" % (src, name, fn, wm.get(name)))
            tensors[name] = t
    if wm is not None:
        for name in wm:
            if name not in tensors:
                raise SafetensorsError("%s: the index lists %s but no shard holds it" % (src, name))
    return tensors


# ---------------------------------------------------------------- dtype conversions

def bf16_to_f32(b):
    """BF16 bytes -> F32 bytes: a bf16 is the upper half of an f32 (a byte shuffle, exact)."""
    out = bytearray(2 * len(b))
    out[2::4] = b[0::2]
    out[3::4] = b[1::2]
    return bytes(out)


def f16_to_f32(b):
    n = len(b) // 2
    return struct.pack("<%df" % n, *struct.unpack("<%de" % n, b))


def to_f32(dtype, b):
    """F32, F16 or BF16 bytes -> F32 bytes (exact)."""
    if dtype == "F32":
        return bytes(b)
    if dtype == "BF16":
        return bf16_to_f32(b)
    if dtype == "F16":
        return f16_to_f32(b)
    raise SafetensorsError("dtype %s is not a float type" % dtype)


def to_floats(dtype, b):
    """F32, F16 or BF16 bytes -> a list of Python floats; U8 -> a list of ints."""
    if dtype == "U8":
        return list(b)
    raw = to_f32(dtype, b)
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


def from_floats(dtype, vals):
    """Python floats -> F32, F16 or BF16 bytes; BF16 keeps the upper half of each f32 (truncation)."""
    n = len(vals)
    if dtype == "F16":
        return struct.pack("<%de" % n, *vals)
    raw = struct.pack("<%df" % n, *vals)
    if dtype == "F32":
        return raw
    if dtype != "BF16":
        raise SafetensorsError("dtype %s is not a float type" % dtype)
    out = bytearray(2 * n)
    out[0::2] = raw[2::4]
    out[1::2] = raw[3::4]
    return bytes(out)


# ---------------------------------------------------------------- writing

def encode_header(header):
    """u64 length + the JSON header, padded with spaces to a multiple of 8 (as the reference writer
    does, so the data section is aligned)."""
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h


def nbytes_of(dtype, shape):
    if dtype not in DTYPE_SIZE:
        raise SafetensorsError("dtype %s is not supported" % dtype)
    n = DTYPE_SIZE[dtype]
    for d in shape:
        if not _is_int(d) or d < 0:
            raise SafetensorsError("bad shape %s" % (shape,))
        n *= d
    return n


def write(path, tensors, metadata=None):
    """Write tensors [(name, dtype, shape, data)] in that order; data is bytes, or a function that
    returns them (called once, in order, so a writer never holds every tensor at once). The file
    appears whole or not at all: it is written to path.part and renamed. Returns the data size."""
    header, off = {"__metadata__": dict(metadata or {"format": "pt"})}, 0
    for name, dtype, shape, _ in tensors:
        if not isinstance(name, str) or name == "__metadata__" or name in header:
            raise SafetensorsError("%s: bad or repeated tensor name %r" % (path, name))
        nb = nbytes_of(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    tmp = path + ".part"
    try:
        with open(tmp, "wb") as f:
            f.write(encode_header(header))
            for name, dtype, shape, data in tensors:
                b = data() if callable(data) else data
                a, e = header[name]["data_offsets"]
                if len(b) != e - a:
                    raise SafetensorsError("%s: tensor %s: %d bytes for shape %s %s (%d expected)" % (
                        path, name, len(b), list(shape), dtype, e - a))
                f.write(b)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return off
