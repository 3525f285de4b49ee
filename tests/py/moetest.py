"""moetest - shared helpers for the Python tests: where things are, running the CLI and the
converter, reading float32 outputs, rewriting .moe files with one thing changed.

Environment (set by ctest, see tests/tests.cmake): MOE_ROOT (repo), MOE_BIN (the moe CLI),
MOE_SHARED (../shared), MOE_WORK (scratch directory)."""

import json
import os
import struct
import subprocess
import sys

ROOT = os.environ.get("MOE_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("MOE_SHARED") or os.path.abspath(os.path.join(ROOT, "..", "shared"))
BIN = os.environ.get("MOE_BIN") or os.path.join(ROOT, "build", "moe")
WORK = os.environ.get("MOE_WORK") or os.path.join(ROOT, "build", "testwork")
TOOLS = os.path.join(ROOT, "tools")

if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import moefile  # noqa: E402


def workdir(*parts):
    path = os.path.join(WORK, *parts)
    os.makedirs(path, exist_ok=True)
    return path


SKIP = 77  # the exit code ctest reports as "skipped" (tests/tests.cmake SKIP_RETURN_CODE)


def require_shared():
    """A test module that needs the shared ground truth calls this first: without ../shared
    the whole module is skipped with one line saying why (exit 77, which ctest reports as
    skipped, never as passed)."""
    if not os.path.isdir(os.path.join(SHARED, "golden")):
        sys.stderr.write("SKIPPED: the shared ground truth is not at %s (put it next to the repository "
                         "or set MOE_SHARED)\n" % SHARED)
        sys.stderr.flush()
        os._exit(SKIP)


def require_bin():
    if not os.path.exists(BIN):
        raise AssertionError("the moe CLI is not built at %s (set MOE_BIN)" % BIN)


def test_binary(name):
    """The C unit test binary NAME beside the moe CLI (MOE_BIN's folder, else build/), or None."""
    candidates = [os.path.join(os.path.dirname(os.environ["MOE_BIN"]), name)] if os.environ.get("MOE_BIN") else []
    candidates.append(os.path.join(ROOT, "build", name))
    return next((c for c in candidates if os.path.exists(c)), None)


def run(args, check=True, timeout=600):
    """Run a command; returns CompletedProcess with text stdout/stderr."""
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(map(str, args)), p.returncode, err.strip()))
    return subprocess.CompletedProcess(args, p.returncode, out, err)


def moe(*args, check=True, timeout=600):
    require_bin()
    return run([BIN] + [str(a) for a in args], check=check, timeout=timeout)


def convert(src, out, *extra):
    run([sys.executable, os.path.join(TOOLS, "convert.py"), src, "-o", out, "--quiet"] + list(extra))
    return out


def read_f32(path):
    with open(path, "rb") as f:
        data = f.read()
    return list(struct.unpack("<%df" % (len(data) // 4), data))


def logits(model, tokens, *extra):
    """Logits rows (lists) for a token sequence, via `moe logits`."""
    out = os.path.join(workdir("logits"), "%d_%s.f32" % (os.getpid(), os.path.basename(model)))
    moe("logits", "-m", model, "--tokens", ",".join(map(str, tokens)), "-o", out, *extra)
    flat = read_f32(out)
    n = len(tokens)
    v = len(flat) // n
    return [flat[i * v:(i + 1) * v] for i in range(n)]


def argmax(row):
    best = 0
    for i, x in enumerate(row):
        if x > row[best]:
            best = i
    return best


def max_rms(a, b):
    """max and rms of |a - b| over two equally shaped lists of rows."""
    m, ss, n = 0.0, 0.0, 0
    for ra, rb in zip(a, b):
        for x, y in zip(ra, rb):
            d = abs(x - y)
            m = max(m, d)
            ss += d * d
            n += 1
    return m, (ss / max(n, 1)) ** 0.5


def rewrite(src, dst, kv=None, drop_kv=(), tensors=None, drop=(), add=None):
    """Copy a .moe file with changes: kv {key: value} set or added, drop_kv keys removed,
    tensors {name: (dtype, shape, bytes)} replaced, drop tensor names removed,
    add {name: (dtype, shape, bytes)} appended."""
    f = moefile.MoeFile(src)
    w = moefile.MoeWriter()
    kv = kv or {}
    for k, v in f.kv.items():
        if k in drop_kv:
            continue
        w.add_kv(k, kv.pop(k) if k in kv else v)
    for k, v in kv.items():
        w.add_kv(k, v)
    tensors = tensors or {}
    for name, (dtype, shape, off, nb) in f.tensors.items():
        if name in drop:
            continue
        if name in tensors:
            w.add_tensor(name, *tensors[name])
        else:
            w.add_tensor(name, dtype, shape, f.read_tensor(name))
    for name, spec in (add or {}).items():
        w.add_tensor(name, *spec)
    w.write(dst)
    return dst


def golden_cases():
    root = os.path.join(SHARED, "golden")
    return sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "golden.json")))


def golden(case):
    d = os.path.join(SHARED, "golden", case)
    with open(os.path.join(d, "golden.json")) as f:
        g = json.load(f)
    flat = read_f32(os.path.join(d, "logits.f32"))
    v = g["vocab"]
    g["rows"] = [flat[i * v:(i + 1) * v] for i in range(g["n_positions"])]
    g["dir"] = d
    return g
