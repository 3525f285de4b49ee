#!/usr/bin/python3
"""train.py - distil stories260K (dense, 260K parameters) into a small Mixtral-style MoE.

    nice -n 10 /usr/bin/python3 tools/distill/train.py --data train.jsonl --heldout heldout.jsonl \
        --teacher ../shared/models/stories260K -o OUT --state STATE --steps 6000 --minutes 55
    ... the same command with --resume continues from STATE/checkpoint.pt

Development-time only (needs Debian's python3-torch; run with /usr/bin/python3).

Data: stories sampled from the teacher (gen_data.py), each BOS + ids, concatenated and cut
into windows of --seq tokens, as llama2.c trained the teacher. Loss per window:
    KL(teacher || student) over the whole 512-token distribution at every position (T = 1)
  + ce_weight * cross-entropy of the sampled next token
  + lb_weight * Switch-style load-balancing loss (E * sum_e f_e P_e, averaged over layers).
AdamW, linear warm-up then cosine decay to 0.1 x lr over --steps, fixed seeds, 2 threads.
--init teacher upcycles the teacher into the student (models.upcycle_from_teacher: same
attention and embedding, router from a clustering of the teacher's FFN inputs, experts cut from
its FFN); --init random starts from scratch. --local-steps first fits each MoE block to its
teacher FFN (models.local_distill), cheap per step but slow to converge on a loaded machine.

Sessions: the machine is shared and a session lasts at most about an hour, so training runs
in sessions. --minutes bounds one session: when it is used up (or on SIGTERM/SIGINT) the
session writes a checkpoint and exports the model as it stands. Every --ckpt-minutes the
state goes to STATE/checkpoint.pt (written to a temporary file, then renamed, so a kill never
leaves half a checkpoint): the student, AdamW's moments, the step (the learning rate is a
function of the step, so that is the whole schedule), the training seconds so far and the
RNG states. The batches are a function of the step alone (window order = a permutation per
epoch seeded by --seed + epoch), so the data position needs no state of its own. --resume
loads STATE/checkpoint.pt, drops log rows after its step (a killed session may have logged
steps it never saved) and appends to the same train_log.csv.

Writes to the output folder: config.json, generation_config.json, model.safetensors,
tokenizer.json, tokenizer_config.json (from the teacher's tok512.bin), train_log.csv,
train_summary.json (held-out perplexities, timing) and greedy.json (the student's greedy
continuation from BOS, computed here in PyTorch, which the tests compare with moe's).
"""

import argparse
import csv
import hashlib
import json
import math
import os
import random
import signal
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_hf  # noqa: E402
from models import Student, Teacher, load_balancing_loss, local_distill, upcycle_from_teacher  # noqa: E402

BOS = 1


def load_stories(path):
    with open(path) as f:
        return [json.loads(line)["ids"] for line in f if line.strip()]


def windows(stories, seq):
    stream = []
    for ids in stories:
        stream.append(BOS)
        stream.extend(ids)
    n = (len(stream) - 1) // seq
    x = torch.tensor(stream[:n * seq + 1])
    return torch.stack([x[i * seq:i * seq + seq + 1] for i in range(n)])


class Batches:
    """Batch at step s = windows [s*B, s*B+B) of an endless sequence of epochs, each epoch a
    permutation of all windows seeded by seed + epoch: a pure function of the step."""

    def __init__(self, data, batch, seed):
        self.data, self.batch, self.seed, self.perms = data, batch, seed, {}

    def perm(self, epoch):
        if epoch not in self.perms:
            self.perms = {epoch: torch.randperm(self.data.shape[0],
                                                generator=torch.Generator().manual_seed(self.seed + epoch))}
        return self.perms[epoch]

    def at(self, step):
        n = self.data.shape[0]
        idx = [int(self.perm(p // n)[p % n]) for p in range(step * self.batch, (step + 1) * self.batch)]
        return self.data[idx]


def fingerprint(data):
    """Identifies the training windows, so that --resume refuses other data."""
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()[:16]


def save_checkpoint(path, student, opt, step, train_seconds, a, data_fp, local_done):
    state = {"student": student.state_dict(), "opt": opt.state_dict(), "step": step, "local_done": local_done,
             "train_seconds": train_seconds, "torch_rng": torch.get_rng_state(),
             "py_rng": random.getstate(), "args": vars(a), "data": data_fp}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


# arguments that must match between a checkpoint and the run resuming it
SAME_ON_RESUME = ["dim", "layers", "heads", "kv_heads", "experts", "topk", "ff", "batch", "seq", "lr",
                  "warmup", "steps", "wd", "ce_weight", "lb_weight", "seed", "init", "calib_windows",
                  "local_steps", "local_batch", "local_lr", "local_windows"]


def teacher_ffn_inputs(teacher, data, n_windows, seed):
    """The teacher's normalised FFN inputs per layer ([N, dim] each) on n_windows training
    windows picked by seed: what local_distill fits each MoE block on."""
    pick = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed + 1))[:n_windows]
    per_layer = [[] for _ in range(teacher.L)]
    for i in range(0, len(pick), 8):
        inputs = []
        teacher(data[pick[i:i + 8], :-1], ffn_inputs=inputs)
        for l, h in enumerate(inputs):
            per_layer[l].append(h)
    return [torch.cat(hs) for hs in per_layer]


def trim_log(path, step):
    """Keep the header and the rows up to `step` of an existing train_log.csv."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)
    return len(rows) - len(kept)


@torch.no_grad()
def heldout_eval(student, teacher, stories, batch=16):
    """Per-token NLL of the sampled tokens (BOS + story, predicting the story tokens and nothing
    after it) for student and teacher, and the mean KL(teacher || student)."""
    s_nll = t_nll = kl = 0.0
    n = 0
    for i in range(0, len(stories), batch):
        group = stories[i:i + batch]
        T = max(len(s) for s in group) + 1
        ids = torch.full((len(group), T), BOS, dtype=torch.long)
        mask = torch.zeros(len(group), T - 1)
        for j, s in enumerate(group):
            ids[j, 1:len(s) + 1] = torch.tensor(s)
            mask[j, :len(s)] = 1
        tl = teacher(ids)[:, :-1].log_softmax(-1)
        sl = student(ids)[:, :-1].float().log_softmax(-1)
        tgt = ids[:, 1:]
        t_nll += -(tl.gather(-1, tgt[..., None])[..., 0] * mask).sum().item()
        s_nll += -(sl.gather(-1, tgt[..., None])[..., 0] * mask).sum().item()
        kl += ((tl.exp() * (tl - sl)).sum(-1) * mask).sum().item()
        n += mask.sum().item()
    return {"student_ppl": math.exp(s_nll / n), "teacher_ppl": math.exp(t_nll / n), "kl": kl / n, "tokens": int(n)}


@torch.no_grad()
def greedy(student, n):
    ids = [BOS]
    margins = []
    for _ in range(n):
        logits = student(torch.tensor([ids]))[0, -1]
        top = logits.topk(2)
        margins.append(float(top.values[0] - top.values[1]))
        nxt = int(top.indices[0])
        if nxt in (1, 2):
            break
        ids.append(nxt)
    return ids[1:], margins


def export(student, c, out, tok_bin, extra):
    os.makedirs(out, exist_ok=True)
    tensors = []
    for name, p in student.state_dict().items():
        t = p.detach().float().contiguous()
        tensors.append((name, list(t.shape), t.flatten().tolist()))
    export_hf.write_safetensors(os.path.join(out, "model.safetensors"), tensors)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(export_hf.mixtral_config(c), f, indent=2)
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        # llama2.c's stories end at BOS; </s> never occurs in the training data
        json.dump({"bos_token_id": 1, "eos_token_id": [1, 2], "do_sample": False,
                   "transformers_version": "4.46.0"}, f, indent=2)
    export_hf.write_tokenizer(out, tok_bin)
    for name, obj in extra.items():
        with open(os.path.join(out, name), "w") as f:
            json.dump(obj, f, indent=2)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--teacher", required=True, help="folder with stories260K.bin and tok512.bin")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--state", help="folder for checkpoint.pt (keep it outside the repository)")
    ap.add_argument("--resume", action="store_true", help="continue from STATE/checkpoint.pt")
    ap.add_argument("--ckpt-minutes", type=float, default=3.0, help="checkpoint every this many minutes")
    ap.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N steps (0 = off)")
    ap.add_argument("--export-only", action="store_true",
                    help="export STATE/checkpoint.pt to -o (held-out score, greedy story) without training")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="end this session after N steps in all (checkpoint, no export): for testing --resume")
    ap.add_argument("--init", choices=["teacher", "random"], default="teacher",
                    help="teacher: upcycle the teacher's weights into the student (needs its shape)")
    ap.add_argument("--calib-windows", type=int, default=96,
                    help="training windows whose teacher FFN inputs cluster the router and refit the experts")
    ap.add_argument("--local-steps", type=int, default=0,
                    help="before end-to-end distillation, fit each MoE block to the teacher's FFN for N steps")
    ap.add_argument("--local-batch", type=int, default=4096, help="tokens per local step")
    ap.add_argument("--local-lr", type=float, default=3e-3)
    ap.add_argument("--local-windows", type=int, default=240, help="training windows whose FFN inputs local steps fit")
    ap.add_argument("--steps", type=int, default=1000, help="length of the whole schedule, over all sessions")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--ce-weight", type=float, default=0.1)
    ap.add_argument("--lb-weight", type=float, default=0.01)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--ff", type=int, default=112, help="width of one expert")
    ap.add_argument("--minutes", type=float, default=50.0,
                    help="wall-time budget of this session (from its start); then checkpoint and export")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-stories", type=int, default=32, help="held-out stories scored every --eval-every steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--greedy-tokens", type=int, default=200)
    a = ap.parse_args(argv)
    if (a.resume or a.stop_after or a.ckpt_every or a.export_only) and not a.state:
        ap.error("--resume, --stop-after, --ckpt-every and --export-only need --state")
    start = time.time()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)

    teacher = Teacher(os.path.join(a.teacher, "stories260K.bin"))
    data = windows(load_stories(a.data), a.seq)
    data_fp = fingerprint(data)
    held = load_stories(a.heldout)
    print("train windows %d x %d tokens, held-out stories %d" % (data.shape[0], a.seq, len(held)), flush=True)
    c = {"vocab_size": teacher.vocab, "hidden_size": a.dim, "intermediate_size": a.ff,
         "num_hidden_layers": a.layers, "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
         "num_local_experts": a.experts, "num_experts_per_tok": a.topk, "max_position_embeddings": 512,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "router_aux_loss_coef": a.lb_weight}
    student = Student(c)
    n_params = sum(p.numel() for p in student.parameters())
    print("student parameters %d" % n_params, flush=True)
    decay = [p for n, p in student.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in student.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        progress = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    os.makedirs(a.out, exist_ok=True)
    log_path = os.path.join(a.out, "train_log.csv")
    ckpt_path = os.path.join(a.state, "checkpoint.pt") if a.state else None
    first, done_seconds, local_done = 0, 0.0, 0
    if a.export_only:
        ck = torch.load(ckpt_path)
        student.load_state_dict(ck["student"])
        return finish(a, student, teacher, c, held, data, n_params, ck["step"], ck["train_seconds"], start)
    if a.resume:
        ck = torch.load(ckpt_path)
        for k in SAME_ON_RESUME:
            if ck["args"][k] != getattr(a, k):
                sys.exit("train.py: --%s is %r but the checkpoint was made with %r" % (
                    k.replace("_", "-"), getattr(a, k), ck["args"][k]))
        if ck["data"] != data_fp:
            sys.exit("train.py: --data is not the data the checkpoint was trained on")
        student.load_state_dict(ck["student"])
        opt.load_state_dict(ck["opt"])
        torch.set_rng_state(ck["torch_rng"])
        random.setstate(ck["py_rng"])
        first, done_seconds, local_done = ck["step"], ck["train_seconds"], ck["local_done"]
        dropped = trim_log(log_path, first)
        print("resumed at step %d (%.0f s trained; %d log rows after it dropped)" % (first, done_seconds, dropped),
              flush=True)
        log = open(log_path, "a", newline="")
        w = csv.writer(log)
    else:
        if a.init == "teacher":
            calib = data[torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(a.seed))
                         [:a.calib_windows], :-1]
            t_init = time.time()
            upcycle_from_teacher(student, teacher, calib, seed=a.seed)
            print("upcycled the teacher in %.0f s" % (time.time() - t_init), flush=True)
        log = open(log_path, "w", newline="")
        w = csv.writer(log)
        w.writerow(["step", "seconds", "lr", "kd", "ce", "lb", "heldout_kl", "heldout_student_ppl"])
        ev = heldout_eval(student, teacher, held[:a.eval_stories])
        w.writerow([0, "0.0", "", "", "", "", "%.4f" % ev["kl"], "%.3f" % ev["student_ppl"]])
        print("step 0  held-out kl %.4f ppl %.3f (teacher %.3f)" % (ev["kl"], ev["student_ppl"], ev["teacher_ppl"]),
              flush=True)
        if a.state:
            os.makedirs(a.state, exist_ok=True)
    if ckpt_path and not a.resume:
        save_checkpoint(ckpt_path, student, opt, 0, 0.0, a, data_fp, 0)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append("signal"))
    if a.local_steps and local_done < a.layers:
        t_local = time.time()
        H = teacher_ffn_inputs(teacher, data, a.local_windows, a.seed)
        print("local phase: %d teacher FFN inputs per layer (%.0f s)" % (H[0].shape[0], time.time() - t_local),
              flush=True)
        llog_path = os.path.join(a.out, "local_log.csv")
        if local_done == 0:
            with open(llog_path, "w", newline="") as f:
                csv.writer(f).writerow(["layer", "step", "rel_mse", "heldout_rel_mse", "lb"])
        else:
            with open(llog_path, newline="") as f:
                rows = [r for r in csv.reader(f)]
            with open(llog_path, "w", newline="") as f:
                csv.writer(f).writerows([rows[0]] + [r for r in rows[1:] if r and int(r[0]) < local_done])

        def report(l, it, mse, held_mse, lb):
            with open(llog_path, "a", newline="") as f:
                csv.writer(f).writerow([l, it, "%.5f" % mse, "" if held_mse is None else "%.5f" % held_mse,
                                        "%.4f" % lb])
            print("local layer %d step %d  rel mse %.4f%s  lb %.4f  %.0fs" % (
                l, it, mse, "" if held_mse is None else "  held-out %.4f" % held_mse, lb, time.time() - t_local),
                flush=True)
        for l in range(local_done, a.layers):
            local_distill(student.model.layers[l].block_sparse_moe, teacher, l, H[l], a.local_steps,
                          a.local_batch, a.local_lr, a.lb_weight, a.seed, report)
            local_done = l + 1
            if ckpt_path:
                save_checkpoint(ckpt_path, student, opt, 0, 0.0, a, data_fp, local_done)
            if stop:
                print("session ends after local layer %d (%s)%s" % (l, stop[0],
                      "; continue with --resume" if ckpt_path else ""), flush=True)
                return 0
        del H
        ev = heldout_eval(student, teacher, held[:a.eval_stories])
        print("after the local phase: held-out kl %.4f ppl %.3f (%.0f s)" % (
            ev["kl"], ev["student_ppl"], time.time() - t_local), flush=True)
        # a second step-0 row: the student after the local phase (the first is the upcycled start)
        w.writerow([0, "0.0", "", "", "", "", "%.4f" % ev["kl"], "%.3f" % ev["student_ppl"]])
        log.flush()
    batches = Batches(data, a.batch, a.seed)
    t_train = time.time()
    t_ckpt = t_train
    step = first

    def seconds():
        return done_seconds + time.time() - t_train
    while step < a.steps and not stop:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        chunk = batches.at(step)
        x, y = chunk[:, :-1], chunk[:, 1:]
        with torch.no_grad():
            tlogp = teacher(x).log_softmax(-1)
        logits, routing = student(x, collect=True)
        slogp = logits.log_softmax(-1)
        kd = (tlogp.exp() * (tlogp - slogp)).sum(-1).mean()
        ce = F.nll_loss(slogp.reshape(-1, slogp.shape[-1]), y.reshape(-1))
        lb = load_balancing_loss(routing, a.experts, a.topk)
        loss = kd + a.ce_weight * ce + a.lb_weight * lb
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        step += 1
        row = [step, "%.1f" % seconds(), "%.3g" % lr_at(step - 1), "%.4f" % kd.item(),
               "%.4f" % ce.item(), "%.4f" % lb.item(), "", ""]
        if step % a.eval_every == 0 or step == a.steps:
            ev = heldout_eval(student, teacher, held[:a.eval_stories])
            row[6], row[7] = "%.4f" % ev["kl"], "%.3f" % ev["student_ppl"]
            print("step %d  %.0fs  kd %.4f ce %.4f lb %.4f  held-out kl %.4f ppl %.3f (teacher %.3f)" % (
                step, seconds(), kd.item(), ce.item(), lb.item(), ev["kl"], ev["student_ppl"],
                ev["teacher_ppl"]), flush=True)
        elif step % 10 == 0:
            print("step %d  %.0fs  kd %.4f ce %.4f lb %.4f" % (step, seconds(), kd.item(), ce.item(), lb.item()),
                  flush=True)
        w.writerow(row)
        log.flush()
        if a.stop_after and step >= a.stop_after:
            stop.append("stop-after")
        if time.time() - start >= 60.0 * a.minutes:
            stop.append("session budget")
        if ckpt_path and (stop or time.time() - t_ckpt >= 60.0 * a.ckpt_minutes
                          or (a.ckpt_every and step % a.ckpt_every == 0)):
            save_checkpoint(ckpt_path, student, opt, step, seconds(), a, data_fp, local_done)
            t_ckpt = time.time()
    train_seconds = seconds()
    log.close()
    if ckpt_path and step == a.steps:
        save_checkpoint(ckpt_path, student, opt, step, train_seconds, a, data_fp, local_done)
    if stop:
        print("session ends at step %d of %d (%s)%s" % (step, a.steps, stop[0],
              "; continue with --resume" if ckpt_path else ""), flush=True)
    if "stop-after" in stop:
        return 0
    return finish(a, student, teacher, c, held, data, n_params, step, train_seconds, start)


def finish(a, student, teacher, c, held, data, n_params, step, train_seconds, start):
    """Score the whole held-out set, compute the greedy story and export the checkpoint."""
    student.eval()
    ev = heldout_eval(student, teacher, held)
    ids, margins = greedy(student, a.greedy_tokens)
    summary = {"steps": step, "steps_planned": a.steps, "batch": a.batch, "seq": a.seq,
               "train_seconds": round(train_seconds, 1), "session_seconds": round(time.time() - start, 1),
               "student_parameters": n_params, "train_windows": int(data.shape[0]), "heldout": ev, "args": vars(a)}
    export(student, c, a.out, os.path.join(a.teacher, "tok512.bin"),
           {"train_summary.json": summary,
            "greedy.json": {"note": "student greedy continuation from BOS, PyTorch float32, stops at BOS/EOS",
                            "ids": ids, "min_top2_margin": min(margins) if margins else None,
                            "margins": [round(m, 4) for m in margins]}})
    print(json.dumps(summary["heldout"]), "step %d, trained %.0fs" % (step, train_seconds), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
