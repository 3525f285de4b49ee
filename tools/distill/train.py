#!/usr/bin/python3
"""train.py - distil stories260K (dense, 260K parameters) into a small Mixtral-style MoE.

    nice -n 5 /usr/bin/python3 tools/distill/train.py --data train.jsonl --heldout heldout.jsonl \
        --teacher ../shared/models/stories260K -o models/stories-moe --steps 1500

Development-time only (needs Debian's python3-torch; run with /usr/bin/python3).

Data: stories sampled from the teacher (gen_data.py), each BOS + ids, concatenated and cut
into windows of --seq tokens, as llama2.c trained the teacher. Loss per window:
    KL(teacher || student) over the whole 512-token distribution at every position (T = 1)
  + ce_weight * cross-entropy of the sampled next token
  + lb_weight * Switch-style load-balancing loss (E * sum_e f_e P_e, averaged over layers).
AdamW, linear warm-up then cosine decay to 0.1 x lr over --steps or --minutes of wall time
(whichever ends first; the machine is shared, so the step count is what the budget allowed), fixed seeds, 2 threads. The teacher is evaluated
in PyTorch (models.Teacher), checked once against `moe logits` when --moe-check is given.

Writes to the output folder: config.json, generation_config.json, model.safetensors,
tokenizer.json, tokenizer_config.json (from the teacher's tok512.bin), train_log.csv,
train_summary.json (held-out perplexities, timing) and greedy.json (the student's greedy
continuation from BOS, computed here in PyTorch, which the tests compare with moe's).
"""

import argparse
import csv
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_hf  # noqa: E402
from models import Student, Teacher, load_balancing_loss  # noqa: E402

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
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--ce-weight", type=float, default=0.1)
    ap.add_argument("--lb-weight", type=float, default=0.01)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--topk", type=int, default=2)
    ap.add_argument("--ff", type=int, default=96, help="width of one expert")
    ap.add_argument("--minutes", type=float, default=40.0,
                    help="wall-time budget of the training loop: the cosine schedule ends at --steps or here")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--greedy-tokens", type=int, default=200)
    a = ap.parse_args(argv)
    start = time.time()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)

    teacher = Teacher(os.path.join(a.teacher, "stories260K.bin"))
    data = windows(load_stories(a.data), a.seq)
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

    def progress(step):
        """Fraction of the schedule done: by steps, or by wall time when the machine is slower
        than planned (so the learning rate always finishes its decay inside --minutes)."""
        by_steps = (step - a.warmup) / max(1, a.steps - a.warmup)
        by_time = (time.time() - t_train) / (60.0 * a.minutes)
        return min(1.0, max(by_steps, by_time))

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress(step))))

    os.makedirs(a.out, exist_ok=True)
    log_path = os.path.join(a.out, "train_log.csv")
    log = open(log_path, "w", newline="")
    w = csv.writer(log)
    w.writerow(["step", "seconds", "lr", "kd", "ce", "lb", "heldout_kl", "heldout_student_ppl"])
    gen = torch.Generator().manual_seed(a.seed)
    t_train = time.time()
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = torch.randint(0, data.shape[0], (a.batch,), generator=gen)
        chunk = data[idx]
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
        row = [step + 1, "%.1f" % (time.time() - t_train), "%.3g" % lr_at(step), "%.4f" % kd.item(),
               "%.4f" % ce.item(), "%.4f" % lb.item(), "", ""]
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            ev = heldout_eval(student, teacher, held[:64])
            row[6], row[7] = "%.4f" % ev["kl"], "%.3f" % ev["student_ppl"]
            print("step %d  %.0fs  kd %.4f ce %.4f lb %.4f  held-out kl %.4f ppl %.3f (teacher %.3f)" % (
                step + 1, time.time() - t_train, kd.item(), ce.item(), lb.item(), ev["kl"], ev["student_ppl"],
                ev["teacher_ppl"]), flush=True)
        elif (step + 1) % 10 == 0:
            print("step %d  %.0fs  kd %.4f ce %.4f lb %.4f" % (step + 1, time.time() - t_train, kd.item(),
                                                               ce.item(), lb.item()), flush=True)
        w.writerow(row)
        log.flush()
        if step + 1 > a.warmup and progress(step) >= 1.0:
            if step + 1 < a.steps:
                print("time budget reached: stopping after %d of %d steps" % (step + 1, a.steps), flush=True)
            break
    steps_done = step + 1
    train_seconds = time.time() - t_train
    log.close()
    student.eval()
    ev = heldout_eval(student, teacher, held)
    ids, margins = greedy(student, a.greedy_tokens)
    summary = {"steps": steps_done, "steps_planned": a.steps, "batch": a.batch, "seq": a.seq, "train_seconds": round(train_seconds, 1),
               "total_seconds": round(time.time() - start, 1), "student_parameters": n_params,
               "train_windows": int(data.shape[0]), "heldout": ev, "args": vars(a)}
    export(student, c, a.out, os.path.join(a.teacher, "tok512.bin"),
           {"train_summary.json": summary,
            "greedy.json": {"note": "student greedy continuation from BOS, PyTorch float32, stops at BOS/EOS",
                            "ids": ids, "min_top2_margin": min(margins) if margins else None,
                            "margins": [round(m, 4) for m in margins]}})
    print(json.dumps(summary["heldout"]), "train %.0fs" % train_seconds, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
