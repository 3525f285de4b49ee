#!/usr/bin/env python3
"""perplexity.py - per-token perplexity of .moe models on held-out stories, through `moe logits`.

    python3 tools/distill/perplexity.py heldout.jsonl stories260K.moe build/models/default.moe

For each story (gen_data.py JSON lines), the model reads BOS + ids and is scored on every
story token: perplexity = exp(mean negative log-likelihood). Standard library only; this is
the engine's own measurement, independent of the PyTorch numbers train.py reports.
"""

import json
import math
import os
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BOS = 1


def story_nll(moe, model, ids, out):
    toks = [BOS] + ids
    subprocess.run([moe, "logits", "-m", model, "--tokens", ",".join(map(str, toks)), "-o", out, "-t", "1"],
                   check=True, stdout=subprocess.DEVNULL)
    with open(out, "rb") as f:
        data = f.read()
    V = len(data) // 4 // len(toks)
    flat = struct.unpack("<%df" % (V * len(toks)), data)
    nll = 0.0
    for i, t in enumerate(ids):
        row = flat[i * V:(i + 1) * V]
        m = max(row)
        lse = m + math.log(sum(math.exp(x - m) for x in row))
        nll += lse - row[t]
    return nll, len(ids)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    moe = os.environ.get("MOE_BIN", os.path.join(ROOT, "build", "moe"))
    with open(argv[0]) as f:
        stories = [json.loads(line)["ids"] for line in f if line.strip()]
    out = os.path.join(tempfile.mkdtemp(), "logits.f32")
    for model in argv[1:]:
        nll = n = 0
        for ids in stories:
            a, b = story_nll(moe, model, ids, out)
            nll += a
            n += b
        print("%s: %d stories, %d tokens, perplexity %.4f (mean NLL %.4f nats)" % (
            model, len(stories), n, math.exp(nll / n), nll / n))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
