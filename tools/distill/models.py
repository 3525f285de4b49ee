"""models.py - the teacher (llama2.c stories260K) and the student (Mixtral-style MoE) in PyTorch.

Development-time only (train.py, export.py): converting, running and testing never import it.

Teacher: llama2.c "version 0" checkpoint; RMSNorm, GQA attention with llama2.c's adjacent-pair
RoPE, SwiGLU FFN w2(silu(w1 x) * w3 x), classifier tied to the embedding.
Student: Hugging Face MixtralForCausalLM semantics (modeling_mixtral.py): rotate-half RoPE,
GQA, a sparse MoE block whose router picks top-k of softmax(router logits) and renormalises
the k weights, experts w2(silu(w1 x) * w3 x). Parameter names are the HF names, so the state
dict is the checkpoint.
"""

import math
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


_MASKS = {}


def causal_attention(q, k, v, scale):
    """q [B, H, T, hd], k/v [B, KV, T, hd] -> [B, H, T, hd], causal, grouped-query: query head
    h reads kv head h // (H / KV), as HF repeat_kv and llama2.c do. The query heads of one
    group are stacked along T so that no key or value is copied."""
    B, H, T, hd = q.shape
    KV = k.shape[1]
    rep = H // KV
    mask = _MASKS.get(T)
    if mask is None:
        mask = _MASKS[T] = torch.full((T, T), float("-inf")).triu(1)
    qg = (q * scale).reshape(B, KV, rep * T, hd)
    att = (qg @ k.transpose(-1, -2)).view(B, KV, rep, T, T) + mask
    att = att.softmax(-1).view(B, KV, rep * T, T)
    return (att @ v).view(B, H, T, hd)


# ---------------------------------------------------------------- teacher

class Teacher(nn.Module):
    def __init__(self, path):
        super().__init__()
        with open(path, "rb") as f:
            data = f.read()
        dim, hidden, L, H, KV, vocab, seq = struct.unpack_from("<7i", data, 0)
        assert vocab > 0, "stories260K shares its classifier"
        self.dim, self.hidden, self.L, self.H, self.KV, self.vocab, self.seq = dim, hidden, L, H, KV, vocab, seq
        hd = dim // H
        self.hd = hd
        floats = torch.frombuffer(bytearray(data[28:]), dtype=torch.float32)
        pos = 0

        def take(*shape):
            nonlocal pos
            n = 1
            for d in shape:
                n *= d
            t = floats[pos:pos + n].reshape(shape).clone()
            pos += n
            return nn.Parameter(t, requires_grad=False)
        self.emb = take(vocab, dim)
        self.rms_att = take(L, dim)
        self.wq = take(L, dim, dim)
        self.wk = take(L, KV * hd, dim)
        self.wv = take(L, KV * hd, dim)
        self.wo = take(L, dim, dim)
        self.rms_ffn = take(L, dim)
        self.w1 = take(L, hidden, dim)
        self.w2 = take(L, dim, hidden)
        self.w3 = take(L, hidden, dim)
        self.rms_final = take(dim)
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        self.register_buffer("inv_freq", inv, persistent=False)

    def rope_pair(self, x, pos):
        """llama2.c: rotate adjacent pairs (2i, 2i+1). x [B, h, T, hd]."""
        ang = pos[:, None].float() * self.inv_freq[None, :]      # [T, hd/2]
        c, s = ang.cos(), ang.sin()
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
        return out.flatten(-2)

    @torch.no_grad()
    def forward(self, ids, ffn_inputs=None):
        """ids [B, T] -> logits [B, T, V]; ffn_inputs, a list, receives each layer's normalised
        FFN input [B*T, dim]."""
        B, T = ids.shape
        x = self.emb[ids]
        pos = torch.arange(T, device=ids.device)
        for l in range(self.L):
            h = rms_norm(x, self.rms_att[l], 1e-5)
            q = (h @ self.wq[l].T).view(B, T, self.H, self.hd).transpose(1, 2)
            k = (h @ self.wk[l].T).view(B, T, self.KV, self.hd).transpose(1, 2)
            v = (h @ self.wv[l].T).view(B, T, self.KV, self.hd).transpose(1, 2)
            q, k = self.rope_pair(q, pos), self.rope_pair(k, pos)
            a = causal_attention(q, k, v, self.hd ** -0.5).transpose(1, 2).reshape(B, T, self.dim)
            x = x + a @ self.wo[l].T
            h = rms_norm(x, self.rms_ffn[l], 1e-5)
            if ffn_inputs is not None:
                ffn_inputs.append(h.reshape(B * T, -1))
            x = x + (F.silu(h @ self.w1[l].T) * (h @ self.w3[l].T)) @ self.w2[l].T
        return rms_norm(x, self.rms_final, 1e-5) @ self.emb.T


# ---------------------------------------------------------------- student (HF Mixtral)

class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, H, KV = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.H, self.KV, self.hd = H, KV, D // H
        self.q_proj = nn.Linear(D, H * self.hd, bias=False)
        self.k_proj = nn.Linear(D, KV * self.hd, bias=False)
        self.v_proj = nn.Linear(D, KV * self.hd, bias=False)
        self.o_proj = nn.Linear(H * self.hd, D, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.KV, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.KV, self.hd).transpose(1, 2)
        q, k = rope_half(q, cos, sin), rope_half(k, cos, sin)
        a = causal_attention(q, k, v, self.hd ** -0.5)
        return self.o_proj(a.transpose(1, 2).reshape(B, T, self.H * self.hd))


def rope_half(x, cos, sin):
    """HF rotate_half: dimension i pairs with i + hd/2."""
    h = x.shape[-1] // 2
    rot = torch.cat((-x[..., h:], x[..., :h]), dim=-1)
    return x * cos + rot * sin


class Expert(nn.Module):
    def __init__(self, D, Fd):
        super().__init__()
        self.w1 = nn.Linear(D, Fd, bias=False)
        self.w2 = nn.Linear(Fd, D, bias=False)
        self.w3 = nn.Linear(D, Fd, bias=False)


class SparseMoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, Fd, E = c["hidden_size"], c["intermediate_size"], c["num_local_experts"]
        self.E, self.k = E, c["num_experts_per_tok"]
        self.gate = nn.Linear(D, E, bias=False)
        self.experts = nn.ModuleList(Expert(D, Fd) for _ in range(E))

    def forward(self, x):
        """x [N, D] -> (out [N, D], router probs [N, E], chosen ids [N, k])."""
        probs = self.gate(x).softmax(-1)
        w, idx = probs.topk(self.k, dim=-1)
        w = w / w.sum(-1, keepdim=True)
        out = torch.zeros_like(x)
        for e, ex in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            h = x[tok]
            y = ex.w2(F.silu(ex.w1(h)) * ex.w3(h)) * w[tok, slot, None]
            out.index_add_(0, tok, y)
        return out, probs, idx


class RMSNorm(nn.Module):
    def __init__(self, D, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(D))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.block_sparse_moe = SparseMoE(c)


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Student(nn.Module):
    """MixtralForCausalLM with tied embeddings; state_dict() keys are the HF names."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Body(c)
        hd = c["hidden_size"] // c["num_attention_heads"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        self.register_buffer("inv_freq", inv, persistent=False)
        std = 0.02
        for n, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, std)
                if n.endswith("o_proj.weight") or n.endswith("w2.weight"):
                    p.data.mul_(1.0 / math.sqrt(2 * c["num_hidden_layers"]))

    def forward(self, ids, collect=False):
        """ids [B, T] -> logits [B, T, V]; with collect, also per layer (probs, chosen ids)."""
        B, T = ids.shape
        x = self.model.embed_tokens(ids)
        ang = torch.arange(T, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        ang = torch.cat((ang, ang), dim=-1)
        cos, sin = ang.cos(), ang.sin()
        routing = []
        for layer in self.model.layers:
            x = x + layer.self_attn(layer.input_layernorm(x), cos, sin)
            h = layer.post_attention_layernorm(x)
            y, probs, idx = layer.block_sparse_moe(h.reshape(B * T, -1))
            x = x + y.view(B, T, -1)
            routing.append((probs, idx))
        logits = self.model.norm(x) @ self.model.embed_tokens.weight.T
        return (logits, routing) if collect else logits


def load_balancing_loss(routing, E, k):
    """Switch Transformer / HF Mixtral load_balancing_loss_func: E * sum_e f_e * P_e, with f_e
    the fraction of (token, slot) assignments to expert e and P_e its mean router probability;
    averaged over layers. Equals 1 when routing is uniform."""
    total = 0.0
    for probs, idx in routing:
        f = F.one_hot(idx, E).float().mean(dim=(0, 1))      # [E], sums to 1
        P = probs.mean(0)
        total = total + E * (f * P).sum()
    return total / len(routing)


# ---------------------------------------------------------------- upcycling the teacher

def ffn_activations(teacher, l, h):
    """Teacher layer l's FFN hidden activations silu(w1 h) * (w3 h) for inputs h [N, dim]."""
    return F.silu(h @ teacher.w1[l].T) * (h @ teacher.w3[l].T)


def kmeans_directions(h, k, seed, iters=25):
    """k unit vectors clustering the directions of the rows of h (spherical k-means, seeded)."""
    hn = h / h.norm(dim=1, keepdim=True)
    cen = hn[torch.randperm(hn.shape[0], generator=torch.Generator().manual_seed(seed))[:k]].clone()
    for _ in range(iters):
        assign = (hn @ cen.T).argmax(1)
        for e in range(k):
            members = hn[assign == e]
            if len(members):
                cen[e] = members.mean(0) / members.mean(0).norm()
    return cen


@torch.no_grad()
def upcycle_from_teacher(student, teacher, calib, router_scale=10.0, seed=0):
    """Initialise the student from the teacher: same embedding, norms and attention
    (llama2.c's adjacent-pair RoPE becomes HF rotate-half by reordering each q/k head's rows,
    even dimensions first), and experts cut from the teacher's FFN by clustering its inputs
    (as MoEfication does):
      - the router's rows are router_scale x the unit centroids of a spherical k-means of the
        teacher's FFN inputs on calib [B, T] tokens, so each expert owns a region of input space;
      - expert e keeps the `width` FFN neurons that matter most on the tokens routed to it (mean
        |activation| x |down column|) and its down projection is refitted by least squares so
        that the expert alone reproduces the whole FFN on those tokens; the top-k weights sum
        to 1, so the mixture reproduces it too.
    With expert width = the teacher's FFN width the student computes exactly the teacher's
    function (every expert is the whole FFN)."""
    c = student.c
    D, L, H, KV = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"]
    if (D, L, H, KV) != (teacher.dim, teacher.L, teacher.H, teacher.KV) or c["vocab_size"] != teacher.vocab:
        raise ValueError("upcycling needs the teacher's shape: dim %d, %d layers, %d heads, %d kv heads" % (
            teacher.dim, teacher.L, teacher.H, teacher.KV))
    if c["intermediate_size"] > teacher.hidden:
        raise ValueError("upcycling needs experts at most the teacher's FFN width %d" % teacher.hidden)
    hd = D // H
    within = list(range(0, hd, 2)) + list(range(1, hd, 2))

    def rope_rows(n_heads):
        return torch.tensor([h * hd + i for h in range(n_heads) for i in within])
    inputs = []
    for i in range(0, calib.shape[0], 8):
        part = []
        teacher(calib[i:i + 8], ffn_inputs=part)
        inputs.append(part)
    inputs = [torch.cat([part[l] for part in inputs]) for l in range(L)]
    m = student.model
    m.embed_tokens.weight.copy_(teacher.emb)
    m.norm.weight.copy_(teacher.rms_final)
    for l, layer in enumerate(m.layers):
        layer.input_layernorm.weight.copy_(teacher.rms_att[l])
        layer.post_attention_layernorm.weight.copy_(teacher.rms_ffn[l])
        at = layer.self_attn
        at.q_proj.weight.copy_(teacher.wq[l][rope_rows(H)])
        at.k_proj.weight.copy_(teacher.wk[l][rope_rows(KV)])
        at.v_proj.weight.copy_(teacher.wv[l])
        at.o_proj.weight.copy_(teacher.wo[l])
        moe = layer.block_sparse_moe
        h = inputs[l]
        act = ffn_activations(teacher, l, h)                           # [N, hidden]
        target = act @ teacher.w2[l].T                                 # [N, dim]
        moe.gate.weight.copy_(kmeans_directions(h, moe.E, seed + l) * router_scale)
        chosen = moe.gate(h).topk(moe.k, dim=-1).indices
        width = moe.experts[0].w1.weight.shape[0]
        for e, ex in enumerate(moe.experts):
            mine = (chosen == e).any(1)
            a_e = act[mine] if mine.sum() >= width else act            # an expert nobody picks: fit all
            t_e = target[mine] if mine.sum() >= width else target
            idx = (a_e.abs().mean(0) * teacher.w2[l].norm(dim=0)).argsort(descending=True)[:width]
            ex.w1.weight.copy_(teacher.w1[l][idx])
            ex.w3.weight.copy_(teacher.w3[l][idx])
            if width == teacher.hidden:
                ex.w2.weight.copy_(teacher.w2[l][:, idx])
            else:
                ex.w2.weight.copy_(torch.linalg.lstsq(a_e[:, idx].double(), t_e.double()).solution.T.float())


def local_distill(moe, teacher, l, h, steps, batch, lr, lb_weight, seed, report=None):
    """Layer-wise distillation of one MoE block: make it reproduce teacher layer l's FFN output
    on the teacher's own FFN inputs h [N, dim] (relative mean squared error + lb_weight x the
    load-balancing loss; Adam, cosine decay to 0.1 x lr). No attention and no vocabulary
    softmax are involved, so a step costs a small fraction of an end-to-end step: on a slow
    machine this is where the experts and the router learn most of their job. The last 1/16 of
    h is kept out of the updates and reported as held-out error. Returns that final error."""
    with torch.no_grad():
        y = ffn_activations(teacher, l, h) @ teacher.w2[l].T
    n_fit = h.shape[0] - h.shape[0] // 16
    var = y[:n_fit].pow(2).mean()
    opt = torch.optim.Adam(moe.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + l)

    def held_err():
        with torch.no_grad():
            return ((moe(h[n_fit:])[0] - y[n_fit:]).pow(2).mean() / var).item()
    for it in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * it / steps)))
        idx = torch.randint(0, n_fit, (batch,), generator=gen)
        out, probs, chosen = moe(h[idx])
        mse = (out - y[idx]).pow(2).mean() / var
        lb = load_balancing_loss([(probs, chosen)], moe.E, moe.k)
        opt.zero_grad(set_to_none=True)
        (mse + lb_weight * lb).backward()
        opt.step()
        if report and ((it + 1) % 50 == 0 or it == 0 or it + 1 == steps):
            report(l, it + 1, mse.item(), held_err() if (it + 1) % 50 == 0 or it + 1 == steps else None, lb.item())
    return held_err()
