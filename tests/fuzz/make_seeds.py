#!/usr/bin/env python3
"""make_seeds.py OUT [--tiny SEED_TINY_MODEL] [--moe MOE] - write the starting corpus of every fuzz
target into OUT/TARGET/ from real inputs: HTTP requests and JSON bodies built from the shared
chat conversations, the shared chat templates, text cases through tokenizers converted from the
shared vocabularies (into OUT/tok/), and models: the tiny model of tests/unit/tiny_model.h, small
generated GGUF files (make_gguf_seed.py), and the shared llama.cpp GGUF files shrunk to one or two
layers and two experts (same tensor types and metadata, a few hundred KB instead of megabytes, so
libFuzzer mutates them quickly). Standard library only; a missing ../shared gives fewer seeds."""
import argparse
import json
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.normpath(os.path.join(here, "..", ".."))
sys.path.insert(0, os.path.join(root, "tests", "py"))
sys.path.insert(0, here)
import ggufio  # noqa: E402
import make_gguf_seed  # noqa: E402

shared = os.environ.get("MOE_SHARED", os.path.join(root, "..", "shared"))


def put(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def conversations():
    try:
        with open(os.path.join(shared, "chat-templates", "conversations.json")) as f:
            return json.load(f)
    except OSError:
        return [{"messages": [{"role": "user", "content": "Hello! Who are you?"}]}]


def request(method, path, body=None, extra=""):
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: seed\r\n%s" % (method, path, extra)
    if body is None:
        return (head + "\r\n").encode()
    b = body.encode()
    return (head + "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(b)).encode() + b


def http_and_json(out):
    bodies = []
    for i, conv in enumerate(conversations()):
        req = {"model": "default", "messages": conv["messages"], "max_tokens": 8 + i, "temperature": 0}
        if i % 2:
            req.update(stream=True, stream_options={"include_usage": True}, stop=["\n", "</s>"], seed=i)
        bodies.append(json.dumps(req, ensure_ascii=i % 3 == 0))
    bodies += ['{"prompt": "Once upon a time", "max_tokens": 4, "logprobs": 2}', '{"content": "Hello world"}',
               '{"tokens": [1, 2, 3]}', '{"a": [1e308, -0.0, 1E-7, null, true, "\\u00e9\\ud83e\\udd99"]}']
    for i, b in enumerate(bodies):
        put(out, "fuzz_json", "body%02d.json" % i, b)
    for name in sorted(os.listdir(os.path.join(shared, "chat-templates"))) if os.path.isdir(
            os.path.join(shared, "chat-templates")) else []:
        if name.endswith(".tokens.json"):
            put(out, "fuzz_json", name, open(os.path.join(shared, "chat-templates", name), "rb").read())
    # the fuzz target's limits are 512 header bytes and 256 body bytes: the shorter bodies fit
    short = [b for b in bodies if len(b) < 256][:6]
    reqs = [request("GET", "/health"), request("GET", "/v1/models", extra="Authorization: Bearer sk-test\r\n"),
            request("GET", "/", extra="Connection: close\r\nAccept: text/html\r\n")]
    reqs += [request("POST", "/v1/chat/completions", b, "Connection: keep-alive\r\n") for b in short]
    reqs += [request("POST", "/v1/completions", bodies[-4]), request("POST", "/tokenize", bodies[-3]),
             request("POST", "/v1/chat/completions", bodies[0]),  # over the body limit: 413
             request("GET", "/health") + request("GET", "/v1/models")]  # pipelined
    for i, r in enumerate(reqs):
        put(out, "fuzz_http", "req%02d" % i, r)


def jinja(out):
    d = os.path.join(shared, "chat-templates")
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if name.endswith(".jinja"):
            put(out, "fuzz_jinja", name, open(os.path.join(d, name), "rb").read())
    put(out, "fuzz_jinja", "small.jinja", "{% for m in messages %}{{ m.role | upper }}: {{ m.content | trim }}\n"
        "{% endfor %}{% if add_generation_prompt %}A:{% endif %}")


# (converted file stem, source under ../shared, converter arguments)
TOKENIZERS = [("stories260k", "models/stories260K/tok512.bin", []),
              ("gpt-2", "tokenizer-cases/ggml-vocab-gpt-2.gguf", []),
              ("llama-spm", "tokenizer-cases/ggml-vocab-llama-spm.gguf", []),
              ("qwen3", "tokenizer-cases-hf/qwen3", [])]


def tokenizers(out):
    tok = os.path.join(out, "tok")
    os.makedirs(tok, exist_ok=True)
    made = []
    for stem, src, extra in TOKENIZERS:
        path = os.path.join(tok, stem + ".moe")
        if not os.path.exists(os.path.join(shared, src)):
            continue
        if not os.path.exists(path):
            subprocess.run([sys.executable, os.path.join(root, "tools", "tokenizer_convert.py"),
                            os.path.join(shared, src), path] + extra, check=True, stdout=subprocess.DEVNULL)
        made.append(path)
    # text cases; byte 0 picks the tokenizer (sorted file order in the fuzz target) and the flags
    n = 0
    for name in ("ggml-vocab-gpt-2.gguf.inp", "ggml-vocab-llama-spm.gguf.inp"):
        p = os.path.join(shared, "tokenizer-cases", name)
        if not os.path.exists(p):
            continue
        for case in open(p, "rb").read().split(b"\n__ggml_vocab_test__\n"):
            put(out, "fuzz_tokenizer", "case%03d" % n, bytes([n * 7 % 256]) + case)
            n += 1
    # whole tokenizer files for the loader, the small ones (mutating megabytes is slow)
    for path in made:
        if os.path.getsize(path) < 1 << 20:
            put(out, "fuzz_tokenizer_load", os.path.basename(path), open(path, "rb").read())


def shrink_gguf(src, dst, layers, experts):
    """src with only the given layers (renumbered from 0) and its first experts: the same keys,
    tensor types and tokenizer."""
    g = ggufio.GGUF.read(src)
    arch = g.get("general.architecture").decode()
    n_exp = g.get(arch + ".expert_count")
    dense = g.get(arch + ".leading_dense_block_count")
    g.set(arch + ".block_count", ggufio.U32, len(layers))
    if dense is not None:
        g.set(arch + ".leading_dense_block_count", ggufio.U32, sum(1 for i in layers if i < dense))
    g.set(arch + ".expert_count", ggufio.U32, experts)
    g.set(arch + ".expert_used_count", ggufio.U32, min(experts, g.get(arch + ".expert_used_count")))
    keep = []
    for t in g.tensors:
        if t.name.startswith("blk."):
            parts = t.name.split(".")
            if int(parts[1]) not in layers:
                continue
            t.name = ".".join(["blk", str(layers.index(int(parts[1])))] + parts[2:])
        if n_exp and t.ne[-1] == n_exp and ("_exps" in t.name or "ffn_gate_inp" in t.name or "exp_probs_b" in t.name):
            t.data = t.data[:len(t.data) // n_exp * experts]  # experts (or router rows) are outermost
            t.ne = t.ne[:-1] + [experts]
        keep.append(t)
    g.tensors = keep
    g.write(dst)


def models(out, tiny, moe):
    d = os.path.join(out, "fuzz_gguf")
    os.makedirs(d, exist_ok=True)
    make_gguf_seed.qwen3moe(os.path.join(d, "seed-qwen3moe.gguf"))
    make_gguf_seed.deepseek2(os.path.join(d, "seed-deepseek2.gguf"))
    # one layer each (deepseek3's second: its first is dense)
    for folder, typ, layer in (("qwen3moe", "Q4_K_M", 0), ("qwen3moe", "Q3_K_M", 0), ("qwen3moe", "IQ4_XS", 0),
                               ("qwen3moe", "Q5_1", 0), ("qwen3moe", "Q8_0", 0), ("deepseek3", "Q6_K", 1)):
        src = os.path.join(shared, "gguf", folder, "model-%s.gguf" % typ)
        if os.path.exists(src):
            shrink_gguf(src, os.path.join(d, "%s-%s.gguf" % (folder, typ)), [layer], 2)
    m = os.path.join(out, "fuzz_model")
    os.makedirs(m, exist_ok=True)
    if tiny:
        subprocess.run([tiny, os.path.join(m, "tiny.moe")], check=True)
    if moe:  # a quantized .moe of the shrunk K-quant model: the .moe loader with SIMD types
        for typ in ("q4_k", "q4_0"):
            src = os.path.join(d, "qwen3moe-Q4_K_M.gguf")
            if os.path.exists(src):
                subprocess.run([moe, "quantize", src, os.path.join(m, "qwen3moe-%s.moe" % typ), "--type", typ],
                               check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--tiny", help="the seed_tiny_model program")
    ap.add_argument("--moe", help="the moe program (to write quantized .moe seeds)")
    a = ap.parse_args()
    http_and_json(a.out)
    jinja(a.out)
    tokenizers(a.out)
    models(a.out, a.tiny, a.moe)


if __name__ == "__main__":
    main()
