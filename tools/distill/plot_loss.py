#!/usr/bin/env python3
"""plot_loss.py - draw train_log.csv (train.py) as an SVG line chart, standard library only.

    python3 tools/distill/plot_loss.py models/stories-moe/train_log.csv -o models/stories-moe/loss.svg

Curves: KD loss KL(teacher || student) per step (raw, and a 25-step moving average), the
cross-entropy of the sampled tokens, and the held-out KL at each evaluation; x = step.
"""

import argparse
import csv
import math
import sys

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 420, 60, 170, 30, 45


def moving(xs, n):
    out, s = [], 0.0
    for i, x in enumerate(xs):
        s += x
        if i >= n:
            s -= xs[i - n]
        out.append(s / min(i + 1, n))
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args(argv)
    with open(a.csv) as f:
        rows = list(csv.DictReader(f))
    ev = [(int(r["step"]), float(r["heldout_kl"])) for r in rows if r["heldout_kl"]]
    rows = [r for r in rows if r["kd"]]  # (a step-0 row holds only the evaluation of the start)
    steps = [int(r["step"]) for r in rows]
    kd = [float(r["kd"]) for r in rows]
    ce = [float(r["ce"]) for r in rows]
    series = [("KD loss KL(teacher||student)", "#c8d4ee", list(zip(steps, kd)), 1.0),
              ("KD loss, 25-step mean", "#1f4e9c", list(zip(steps, moving(kd, 25))), 2.0),
              ("CE of sampled token, 25-step mean", "#d1731b", list(zip(steps, moving(ce, 25))), 2.0),
              ("held-out KL", "#2a9d4b", ev, 2.5)]
    ymax = math.ceil(max(max(kd[5:] or kd), max(ce[5:] or ce)))
    xmax = max(steps + [s for s, _ in ev])
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def X(s):
        return PAD_L + pw * s / xmax

    def Y(v):
        return PAD_T + ph * (1 - min(v, ymax) / ymax)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>']
    for i in range(ymax + 1):
        y = Y(i)
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>' % (PAD_L, y, PAD_L + pw, y))
        out.append('<text x="%d" y="%.1f" text-anchor="end">%d</text>' % (PAD_L - 6, y + 4, i))
    for i in range(6):
        s = xmax * i / 5
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (X(s), PAD_T + ph + 16, s))
    out.append('<text x="%d" y="%d" text-anchor="middle">step</text>' % (PAD_L + pw / 2, H - 8))
    out.append('<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">nats per token</text>' % (
        PAD_T + ph / 2, PAD_T + ph / 2))
    out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>' % (PAD_L, PAD_T, pw, ph))
    for j, (name, color, pts, width) in enumerate(series):
        if pts:
            d = " ".join("%.1f,%.1f" % (X(s), Y(v)) for s, v in pts)
            out.append('<polyline fill="none" stroke="%s" stroke-width="%.1f" points="%s"/>' % (color, width, d))
        ly = PAD_T + 10 + 18 * j
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>' % (
            W - PAD_R + 10, ly, W - PAD_R + 30, ly, color))
        out.append('<text x="%d" y="%d" font-size="10">%s</text>' % (W - PAD_R + 34, ly + 4, name))
    out.append('<text x="%d" y="18" font-weight="bold">stories-moe distillation from stories260K</text>' % PAD_L)
    out.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
