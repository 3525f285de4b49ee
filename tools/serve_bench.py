"""Aggregate decode tokens/s of `moe serve --parallel 4 -t 2` with 1, 2 and 4 concurrent streaming
clients, each sending 4 greedy /v1/completions requests of MAX_TOKENS in turn; every binary and
client count three times, alternating; prints each run and the medians.

    python3 tools/serve_bench.py MOE[,MOE2...] MODEL MAX_TOKENS

The rate is all clients' completion tokens over the wall time from the first request to the
last reply (the short prompts' prefill included). docs/BENCHMARKS.md has the numbers."""
import http.client
import json
import re
import statistics
import subprocess
import sys
import threading
import time

PROMPTS = ["Once upon a time", "The dog ran", "Lily had a red ball", "One day, Tom went"]

def client(port, prompt, max_tokens, out, i, k=4):
    tot = 0
    for _ in range(k):
        stream(port, prompt, max_tokens, out, i)
        tot += out[i][0]
    out[i] = (tot, None, None)

def stream(port, prompt, max_tokens, out, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = {"prompt": prompt, "temperature": 0, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    c.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    n = 0
    first = None
    for line in r:
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        d = json.loads(line[6:])
        if first is None and d.get("choices"):
            first = time.time()
        if d.get("usage"):
            n = d["usage"]["completion_tokens"]
    c.close()
    out[i] = (n, first, time.time())

def run(binary, model, clients, max_tokens):
    p = subprocess.Popen([binary, "serve", "-m", model, "--port", "0", "-t", "2", "--parallel", "4"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = None
    for raw in p.stderr:
        m = re.search(rb"listening on http://127\.0\.0\.1:(\d+)", raw)
        if m:
            port = int(m.group(1)); break
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    # warm-up
    o = [None]; stream(port, PROMPTS[0], 16, o, 0)
    out = [None] * clients
    t0 = time.time()
    ts = [threading.Thread(target=client, args=(port, PROMPTS[i], max_tokens, out, i)) for i in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    t1 = time.time()
    p.kill(); p.wait()
    tokens = sum(o[0] for o in out)
    return tokens / (t1 - t0), [o[0] for o in out]

if __name__ == "__main__":
    bins = sys.argv[1].split(",")
    model = sys.argv[2]
    max_tokens = int(sys.argv[3])
    res = {}
    for rep in range(3):
        for clients in (1, 2, 4):
            for b in bins:
                r, toks = run(b, model, clients, max_tokens)
                res.setdefault((b, clients), []).append(r)
                print(rep, b, clients, "%.0f tok/s" % r, toks, flush=True)
    for (b, clients), v in res.items():
        print("%s clients=%d median %.0f tok/s  runs %s" % (b, clients, statistics.median(v), " ".join("%.0f" % x for x in v)))
