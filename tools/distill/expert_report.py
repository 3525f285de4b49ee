#!/usr/bin/python3
"""expert_report.py - what the experts of the distilled student learned: per layer, each
expert's share of the routed (token, slot) assignments on held-out teacher stories, and for
chosen layers the tokens each expert receives far more often than the average expert does.

    /usr/bin/python3 tools/distill/expert_report.py models/stories-moe --heldout heldout.jsonl --layers 0,3

Loads the committed HF checkpoint (config.json + model.safetensors) into models.Student and
prints Markdown. Development-time only (PyTorch).
"""

import argparse
import collections
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import Student  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import safetensors_io as st  # noqa: E402

BOS = 1


def load_hf(folder):
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    sd = {}
    for name, t in st.read_file(os.path.join(folder, "model.safetensors")).items():
        sd[name] = torch.frombuffer(bytearray(t.read()), dtype=torch.float32).reshape(t.shape)
    m = Student(c)
    m.load_state_dict(sd)
    m.eval()
    return m, c


def read_pieces(folder):
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    return {i: s.replace("\u2581", "\u00b7") for s, i in vocab.items()}


@torch.no_grad()
def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--layers", default="0")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--min-count", type=int, default=30)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    m, c = load_hf(a.folder)
    pieces = read_pieces(a.folder)
    E, L = c["num_local_experts"], c["num_hidden_layers"]
    with open(a.heldout) as f:
        stories = [json.loads(line)["ids"] for line in f if line.strip()]
    load = [[0] * E for _ in range(L)]
    per = [[collections.Counter() for _ in range(E)] for _ in range(L)]
    total = collections.Counter()
    for s in stories:
        ids = torch.tensor([[BOS] + s])
        _, routing = m(ids, collect=True)
        toks = ids[0].tolist()
        total.update(toks)
        for l, (probs, idx) in enumerate(routing):
            for t, row in zip(toks, idx.tolist()):
                for e in row:
                    load[l][e] += 1
                    per[l][e][t] += 1
    k = c["num_experts_per_tok"]
    print("Expert load (share of the %d routed slots per token, %d held-out tokens; uniform = %.1f%%):\n" % (
        k, sum(total.values()), 100.0 / E))
    print("| layer | " + " | ".join("e%d" % e for e in range(E)) + " |")
    print("|---|" + "---|" * E)
    for l in range(L):
        n = sum(load[l])
        print("| %d | " % l + " | ".join("%.1f%%" % (100.0 * x / n) for x in load[l]) + " |")
    for l in (int(x) for x in a.layers.split(",")):
        print("\nLayer %d: for each expert, the tokens it receives most often relative to chance "
              "(token seen >= %d times, ties broken by frequency; lift = share of the token's %d slots that go to this expert x %d):\n" % (
                  l, a.min_count, k, E))
        print("| expert | load | most specific tokens (lift) |")
        print("|---|---|---|")
        n = sum(load[l])
        for e in range(E):
            lifts = []
            for t, cnt in per[l][e].items():
                if total[t] >= a.min_count:
                    lifts.append((round(cnt / (k * total[t]) * E, 1), cnt, t))
            lifts.sort(reverse=True)
            desc = ", ".join("`%s` (%.1f)" % (pieces[t].replace("|", "\\|").replace("\n", "\\n"), lift)
                             for lift, _, t in lifts[:a.top])
            print("| %d | %.1f%% | %s |" % (e, 100.0 * load[l][e] / n, desc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
