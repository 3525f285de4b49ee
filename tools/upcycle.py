#!/usr/bin/env python3
"""upcycle.py - turn a dense .moe model into a mixture-of-experts one that computes the same
function: an exact oracle for routing on real weights.

    python3 tools/upcycle.py dense.moe -o moe.moe --experts 8 --k 2 [--shared] [--score sigmoid]
                                                  [--no-norm] [--seed 0]

Every dense FFN layer `down(silu(gate x) * up x)` becomes an MoE layer (docs/FORMAT.md):
  - N routed experts, each an exact copy of the dense FFN (`ffn_{gate,up,down}_exps` [N, ...]);
  - a router `ffn_router` [N, dim] of seeded random float32 weights (so the choice of experts
    varies with the token and the layer, and the routing code is really exercised);
  - top-k selection with the k weights renormalised to sum to 1 (`moe.norm_topk` = 1), as
    Mixtral does (softmax scores) or DeepSeek-V3 with norm_topk_prob (sigmoid scores).
The MoE output is sum_k w_k FFN(x) = FFN(x) * sum_k w_k = FFN(x): the upcycled model's logits
equal the dense model's up to float rounding, whatever the router picks.

--shared (DeepSeek-style): one shared expert, also a copy of the FFN, runs on every token, and
both halves are scaled by 1/2 so that they sum to the dense output: the routed weights through
`moe.scale` = 0.5 (DeepSeek's routed_scaling_factor), the shared expert through its down
projection multiplied by 0.5 (exact in binary floating point).

--no-norm leaves the k weights unnormalised (moe.norm_topk = 0): a negative control whose
output is FFN(x) * sum_k w_k, which differs from the dense model unless k = N with softmax.

Standard library only. The dense FFN weights are copied byte for byte (any dtype); only the
shared expert's down projection is rescaled, which needs F32, F16 or BF16.
"""

import argparse
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moefile  # noqa: E402


class UpcycleError(Exception):
    pass


def halve(dtype, data):
    """Multiply every element by 0.5: exact for F32/F16/BF16 (barring subnormals)."""
    if dtype == moefile.F32:
        n = len(data) // 4
        return struct.pack("<%df" % n, *(x * 0.5 for x in struct.unpack("<%df" % n, data)))
    if dtype == moefile.F16:
        n = len(data) // 2
        return struct.pack("<%de" % n, *(x * 0.5 for x in struct.unpack("<%de" % n, data)))
    if dtype == moefile.BF16:
        n = len(data) // 2
        out = []
        for (h,) in struct.iter_unpack("<H", data):
            (f,) = struct.unpack("<f", struct.pack("<I", h << 16))
            (u,) = struct.unpack("<I", struct.pack("<f", f * 0.5))
            out.append(u >> 16)  # exact: halving keeps the mantissa
        return struct.pack("<%dH" % n, *out)
    raise UpcycleError("--shared needs F32, F16 or BF16 down projections, not %s" % moefile.DTYPE_NAMES[dtype])


def upcycle(src, dst, n_experts, k, shared=False, score="softmax", norm=True, seed=0):
    f = moefile.MoeFile(src)
    kv = dict(f.kv)
    if "general.arch" not in kv:
        raise UpcycleError("%s: a tokenizer-only file" % src)
    if kv.get("moe.n_experts", 0):
        raise UpcycleError("%s: already a mixture-of-experts model" % src)
    if not 1 <= k <= n_experts:
        raise UpcycleError("--k must be between 1 and --experts (%d)" % n_experts)
    L, D, FF = kv["model.n_layers"], kv["model.dim"], kv["model.ff_dim"]
    for key in [key for key in kv if key.startswith("moe.")]:
        del kv[key]
    kv["general.arch"] = "deepseek_v3" if shared and score == "sigmoid" else "mixtral"
    kv["general.source"] = "upcycled from %s: %d copies of the dense FFN, top-%d%s%s" % (
        kv.get("general.name") or os.path.basename(src), n_experts, k, ", shared expert" if shared else "",
        ", %s scores" % score)
    kv["model.ff_dim"] = 0
    kv.update({"moe.n_experts": n_experts, "moe.n_active": k, "moe.ff_dim": FF, "moe.layers": [1] * L,
               "moe.score": score, "moe.norm_topk": int(norm), "moe.scale": 0.5 if shared else 1.0})
    if shared:
        kv["moe.shared_ff"] = FF
    w = moefile.MoeWriter()
    for key, value in kv.items():
        w.add_kv(key, value)
    rng = random.Random(seed)
    dense = {"ffn_gate", "ffn_up", "ffn_down"}
    for name, (dtype, shape, _off, _nb) in f.tensors.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "blk" and parts[2] in dense:
            if parts[2] != "ffn_gate":
                continue  # written with the gate, in one group per layer
            b = "blk.%s." % parts[1]
            for which in ("ffn_gate", "ffn_up", "ffn_down"):
                dt, sh, _, _ = f.tensors[b + which]
                w.add_tensor(b + which + "_exps", dt, [n_experts] + sh,
                             lambda n=b + which: [f.read_tensor(n)] * n_experts)
            router = [rng.gauss(0.0, 1.0) for _ in range(n_experts * D)]
            w.add_tensor(b + "ffn_router", moefile.F32, [n_experts, D], struct.pack("<%df" % len(router), *router))
            if shared:
                for which in ("ffn_gate", "ffn_up"):
                    dt, sh, _, _ = f.tensors[b + which]
                    w.add_tensor(b + which + "_shexp", dt, sh, lambda n=b + which: f.read_tensor(n))
                dt, sh, _, _ = f.tensors[b + "ffn_down"]
                w.add_tensor(b + "ffn_down_shexp", dt, sh, lambda n=b + "ffn_down", dt=dt: halve(dt, f.read_tensor(n)))
        else:
            w.add_tensor(name, dtype, shape, lambda n=name: f.read_tensor(n))
    return w.write(dst)


def main(argv):
    ap = argparse.ArgumentParser(prog="upcycle.py", description=__doc__.split("\n")[0])
    ap.add_argument("src", help="dense .moe model")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--experts", type=int, default=8, help="routed experts per layer (default 8)")
    ap.add_argument("--k", type=int, default=2, help="experts per token (default 2)")
    ap.add_argument("--shared", action="store_true", help="add a DeepSeek-style shared expert")
    ap.add_argument("--score", choices=("softmax", "sigmoid"), default="softmax")
    ap.add_argument("--no-norm", action="store_true", help="do not renormalise the k weights (negative control)")
    ap.add_argument("--seed", type=int, default=0, help="router weights seed")
    a = ap.parse_args(argv)
    try:
        upcycle(a.src, a.out, a.experts, a.k, a.shared, a.score, not a.no_norm, a.seed)
    except (UpcycleError, moefile.FormatError, KeyError, OSError) as e:
        sys.stderr.write("upcycle.py: error: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
