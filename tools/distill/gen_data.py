#!/usr/bin/env python3
"""gen_data.py - sample stories from the teacher with `moe run` and store their token ids.

    python3 tools/distill/gen_data.py -m stories260K.moe -o data/train.jsonl --seeds 1:2501
    python3 tools/distill/gen_data.py -m stories260K.moe -o data/heldout.jsonl --seeds 100001:100201

Each story is pure ancestral sampling from the teacher (temperature 1, no top-k/top-p/min-p
truncation) from BOS, up to 256 tokens, stopping where the teacher emits BOS (the end of a
TinyStories story). The text is re-encoded with `moe tokenize` and written as one JSON line
{"seed": S, "text": ..., "ids": [...]} (ids without the leading BOS).

Standard library only; the teacher runs in moe itself. -j runs several moe processes at once.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def one(moe, model, seed, n):
    p = subprocess.run([moe, "run", "-m", model, "-p", "", "-n", str(n), "--temp", "1", "--top-k", "0",
                        "--top-p", "1", "--min-p", "0", "--seed", str(seed), "-t", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    text = p.stdout.decode("utf-8", "replace")
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        t = subprocess.run([moe, "tokenize", "-m", model, "-f", path], stdout=subprocess.PIPE, check=True)
    finally:
        os.remove(path)
    ids = [int(x) for x in t.stdout.split()]
    return {"seed": seed, "text": text, "ids": ids}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True, help="teacher .moe (converted stories260K)")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--seeds", default="1:2501", help="seed range A:B (B excluded)")
    ap.add_argument("-n", type=int, default=256, help="max tokens per story")
    ap.add_argument("-j", type=int, default=2, help="parallel moe processes")
    ap.add_argument("--moe", default=os.path.join(ROOT, "build", "moe"))
    a = ap.parse_args(argv)
    lo, hi = (int(x) for x in a.seeds.split(":"))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    done = 0
    with open(a.out, "w") as f, concurrent.futures.ThreadPoolExecutor(a.j) as ex:
        for rec in ex.map(lambda s: one(a.moe, a.model, s, a.n), range(lo, hi)):
            f.write(json.dumps(rec) + "\n")
            done += 1
            if done % 100 == 0:
                sys.stderr.write("\r%d/%d stories" % (done, hi - lo))
                sys.stderr.flush()
    sys.stderr.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
