#!/usr/bin/env python3
"""PyTorch reference of the bets FractalMoE engine, used ONLY for speed comparison.

Same model as src/engine/model.rs: byte embeddings + learned positions,
pre-norm RMSNorm (gain only), causal multi-head attention (q, k, v, o without
bias), a top-1 mixture-of-experts feed-forward (router softmax, argmax expert,
output scaled by its probability, tanh-GELU experts), final RMSNorm, LM head;
AdamW (betas 0.9/0.95, decay on matrices), global-norm clipping at 1.0.

Usage (the engine's `bets bench engine` calls it):
    python3 benches/torch_reference.py '{"model": {...}, "batch": 16, "seq": 128,
        "steps": 20, "warmup_steps": 2, "threads": 2, "lr": 0.002, "eval_windows": 512,
        "eval_warmup_windows": 16}'
Prints one JSON line: train_tokens_per_s, eval_tokens_per_s, peak_rss_mib.
Set BETS_TORCH_ATTN=manual to use matmul + masked softmax instead of
scaled_dot_product_attention.
"""

import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def peak_rss_mib():
    """This process's own peak RSS: `VmHWM` of the address space exec made.

    Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries the parent's peak
    over fork and exec into it, so a child of a 3 GiB `bets bench` process
    reported 3 GiB whatever it used itself.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.manual = os.environ.get("BETS_TORCH_ATTN") == "manual"

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = (m(x).view(b, t, self.heads, hd).transpose(1, 2) for m in (self.q, self.k, self.v))
        if self.manual:
            att = (q @ k.transpose(-2, -1)) / hd**0.5
            mask = torch.ones(t, t, dtype=torch.bool).triu(1)
            att = att.masked_fill(mask, float("-inf")).softmax(-1)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class Expert(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.up = nn.Linear(d, f, bias=False)
        self.down = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class MoE(nn.Module):
    def __init__(self, d, f, e):
        super().__init__()
        self.e = e
        self.router = nn.Linear(d, e, bias=False) if e > 1 else None
        self.experts = nn.ModuleList(Expert(d, f) for _ in range(e))

    def forward(self, x):
        if self.e == 1:
            return self.experts[0](x), None
        logits = self.router(x)
        probs = logits.softmax(-1)
        route = logits.argmax(-1)
        out = torch.zeros_like(x)
        counts = torch.zeros(self.e)
        for i, ex in enumerate(self.experts):
            idx = (route == i).nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                continue
            counts[i] = idx.numel() / x.shape[0]
            y = ex(x.index_select(0, idx)) * probs.index_select(0, idx)[:, i : i + 1]
            out = out.index_add(0, idx, y)
        aux = self.e * (probs.mean(0) * counts).sum()
        return out, aux


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.norm1 = RMSNorm(d)
        self.norm2 = RMSNorm(d)
        self.attn = Attention(d, c["heads"])
        self.moe = MoE(d, c["expert_width"], c["experts"])

    def forward(self, x):
        b, t, d = x.shape
        x = x + self.attn(self.norm1(x))
        y, aux = self.moe(self.norm2(x).reshape(b * t, d))
        return x + y.view(b, t, d), aux


class FractalMoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.wte = nn.Embedding(c["vocab"], d)
        self.wpe = nn.Parameter(torch.randn(c["context"], d) * 0.1)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm_f = RMSNorm(d)
        self.lm_head = nn.Linear(d, c["vocab"], bias=False)

    def forward(self, idx):
        b, t = idx.shape
        x = self.wte(idx) + self.wpe[:t]
        aux = None
        for blk in self.blocks:
            x, a = blk(x)
            if a is not None:
                aux = a if aux is None else aux + a
        return self.lm_head(self.norm_f(x)).view(b * t, -1), aux


def main():
    spec = json.loads(sys.argv[1])
    torch.manual_seed(0)
    torch.set_num_threads(spec["threads"])
    c = spec["model"]
    model = FractalMoE(c)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec["lr"],
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    b, t = spec["batch"], spec["seq"]
    gen = torch.Generator().manual_seed(1)
    data = torch.randint(0, 256, (1 << 20,), generator=gen)

    def batch():
        starts = torch.randint(0, data.numel() - t - 1, (b,), generator=gen)
        x = torch.stack([data[s : s + t] for s in starts])
        y = torch.stack([data[s + 1 : s + t + 1] for s in starts])
        return x, y

    marks = []
    for _ in range(spec["warmup_steps"] + spec["steps"]):
        x, y = batch()
        logits, aux = model(x)
        loss = F.cross_entropy(logits, y.reshape(-1))
        if aux is not None:
            loss = loss + 0.01 * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        marks.append(time.perf_counter())
    span = marks[-1] - marks[spec["warmup_steps"] - 1]
    train_tps = spec["steps"] * b * t / span

    model.eval()
    ctx = c["context"]

    def evaluate(windows):
        ev = torch.randint(0, 256, (windows * ctx + 1,), generator=gen)
        total = 0
        with torch.no_grad():
            for i in range(0, windows, b):
                n = min(b, windows - i)
                xs = torch.stack([ev[(i + j) * ctx : (i + j + 1) * ctx] for j in range(n)])
                ys = torch.stack([ev[(i + j) * ctx + 1 : (i + j + 1) * ctx + 1] for j in range(n)])
                logits, _ = model(xs)
                F.cross_entropy(logits, ys.reshape(-1), reduction="sum")
                total += n * ctx
        return total

    evaluate(spec["eval_warmup_windows"])
    t0 = time.perf_counter()
    total = evaluate(spec["eval_windows"])
    eval_tps = total / (time.perf_counter() - t0)
    rss = peak_rss_mib()
    print(json.dumps({"train_tokens_per_s": train_tps, "eval_tokens_per_s": eval_tps, "peak_rss_mib": rss}))


if __name__ == "__main__":
    main()
