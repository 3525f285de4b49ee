#!/usr/bin/env python3
"""gen_data.py - sample stories from the teacher with `moe run` and store their token ids.

    python3 tools/distill/gen_data.py -m stories260K.moe -o data/train.jsonl --seeds 1:2501
    python3 tools/distill/gen_data.py -m stories260K.moe -o data/heldout.jsonl --seeds 100001:100201

Each story is pure ancestral sampling from the teacher (temperature 1, no top-k/top-p/min-p
truncation) from BOS, up to -n tokens (default 256), stopping where the teacher emits BOS (the
end of a TinyStories story). The text is re-encoded with `moe tokenize` and written as one JSON
line {"seed": S, "text": ..., "ids": [...], "ended": true|false} (ids without the leading BOS;
"ended": the teacher emitted BOS before -n tokens, i.e. the story is complete).

--ended-only keeps only complete stories, so that a student trained on them sees every story's
end (the teacher rarely ends within 256 tokens; within 480 most stories do). -n must stay below
the model's context (512 for stories260K): a full context also stops early. Which seeds are
kept depends only on the seeds and -n, so the output is deterministic.

    python3 tools/distill/gen_data.py -m stories260K.moe -o train.jsonl --seeds 1:12001 -n 480 --ended-only

Standard library only; the teacher runs in moe itself. -j runs several moe processes at once.
"""

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def one(moe, model, seed, n):
    p = subprocess.run([moe, "run", "-m", model, "-p", "", "-n", str(n), "--temp", "1", "--top-k", "0",
                        "--top-p", "1", "--min-p", "0", "--seed", str(seed), "-t", "1"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    text = p.stdout.decode("utf-8", "replace")
    # moe run reports "decode: N tokens"; fewer than n means it stopped at the end of the story
    m = re.search(rb"decode: (\d+) tokens", p.stderr)
    if not m:
        raise RuntimeError("seed %d: no decode count on moe run's stderr" % seed)
    # a full context (-n at or above the model's positions) also stops early: keep -n below it
    ended = int(m.group(1)) < n
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write(text.encode("utf-8"))
        path = f.name
    try:
        t = subprocess.run([moe, "tokenize", "-m", model, "-f", path], stdout=subprocess.PIPE, check=True)
    finally:
        os.remove(path)
    ids = [int(x) for x in t.stdout.split()]
    return {"seed": seed, "text": text, "ids": ids, "ended": ended}


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True, help="teacher .moe (converted stories260K)")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--seeds", default="1:2501", help="seed range A:B (B excluded)")
    ap.add_argument("-n", type=int, default=256, help="max tokens per story")
    ap.add_argument("--ended-only", action="store_true", help="keep only stories that end before -n tokens")
    ap.add_argument("-j", type=int, default=2, help="parallel moe processes")
    ap.add_argument("--moe", default=os.path.join(ROOT, "build", "moe"))
    a = ap.parse_args(argv)
    lo, hi = (int(x) for x in a.seeds.split(":"))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    done = kept = 0
    with open(a.out, "w") as f, concurrent.futures.ThreadPoolExecutor(a.j) as ex:
        for rec in ex.map(lambda s: one(a.moe, a.model, s, a.n), range(lo, hi)):
            done += 1
            if rec["ended"] or not a.ended_only:
                f.write(json.dumps(rec) + "\n")
                kept += 1
            if done % 100 == 0:
                sys.stderr.write("\r%d/%d stories, %d kept" % (done, hi - lo, kept))
                sys.stderr.flush()
    sys.stderr.write("\r%d/%d stories, %d kept\n" % (done, hi - lo, kept))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
