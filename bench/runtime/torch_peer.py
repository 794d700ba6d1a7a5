#!/usr/bin/env python3
"""Peer benchmark: geopipe's one-stage training step against the same model trained by plain PyTorch.

Both sides train the job's GPT (nanoGPT architecture, fp32, CPU) from the same initial weights on
the same batches with the same optimizer for --steps steps, with the same number of threads:

  1. `geopipe plan --stages 1` and `geopipe-train --iters 0 --checkpoint-at-start` write geopipe's
     initial weights (step 0);
  2. `geopipe-train --iters N --threads T` trains them; its JSON log gives each step's time and loss;
  3. this script loads the same step-0 weights into a plain PyTorch module (nn.Linear, nn.LayerNorm,
     nn.Embedding, nanoGPT's manual causal attention; torch.optim.AdamW with nanoGPT's parameter
     groups; clip_grad_norm_; the same warm-up + cosine learning rate), draws the same batches
     (geopipe's counter-based sampler, runtime/data.h, re-implemented here) and accumulates the
     gradients of M micro-batches per step as geopipe does.

It prints a table (median step time of each side after --warmup steps, the ratio geopipe/PyTorch,
the largest relative loss difference over the run, which shows the two computed the same thing) and
writes --json. Both sides run with LibTorch from the same Debian package (python3-torch and
libtorch-dev 1.13) and the same BLAS.

  bench/runtime/torch_peer.py --bin build/bin --steps 20 --threads 1 --json peer.json

Run it with a python3 that imports torch (Debian: the system python3 with python3-torch); if the
first python3 on PATH has no torch, the script re-runs itself with the system's.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, where python3-torch installs

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON) and os.path.exists(SYSTEM_PYTHON):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)
    sys.exit("torch_peer.py: no torch in this python3 (Debian: apt-get install python3-torch)")

MASK64 = (1 << 64) - 1


def mix64(x):
    """SplitMix64 finaliser, as runtime/src/data.cpp."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def sample_batch(tokens, seed, step, micro_batch, batch, seq_len):
    """geopipe's sample_batch for the train split: rows at offsets hashed from (seed, step, mb, row)."""
    span = len(tokens) - seq_len
    h = mix64(seed ^ mix64(1))
    h = mix64(h ^ step)
    h = mix64(h ^ micro_batch)
    starts = [mix64(h ^ r) % span for r in range(batch)]
    rows = torch.stack([tokens[s:s + seq_len + 1] for s in starts]).long()
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


class Block(nn.Module):
    def __init__(self, C, nh):
        super().__init__()
        self.nh = nh
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.attn_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // self.nh))
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, C, nh, T, V):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, nh) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def load_nanogpt(self, sd):
        """geopipe's checkpoint tensors use nanoGPT's names."""
        ours = {"wte.weight": "transformer.wte.weight", "wpe.weight": "transformer.wpe.weight",
                "ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias",
                "lm_head.weight": "lm_head.weight"}
        for i in range(len(self.h)):
            for mine, theirs in [("ln_1", "ln_1"), ("ln_2", "ln_2"), ("c_attn", "attn.c_attn"),
                                 ("attn_proj", "attn.c_proj"), ("c_fc", "mlp.c_fc"), ("mlp_proj", "mlp.c_proj")]:
                for p in ("weight", "bias"):
                    ours[f"h.{i}.{mine}.{p}"] = f"transformer.h.{i}.{theirs}.{p}"
        state = {k: sd[v] for k, v in ours.items()}
        self.load_state_dict(state, strict=True)


def learning_rate(step, lr, min_lr, warmup, decay):
    """runtime/src/optim.cpp learning_rate."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if step >= decay:
        return min_lr
    ratio = (step - warmup) / max(decay - warmup, 1)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"torch_peer.py: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}")
    return r.stdout


def geopipe_side(a, work):
    plan, ckpt, log = (os.path.join(work, n) for n in ("plan.json", "ckpt", "train.jsonl"))
    run([os.path.join(a.bin, "geopipe"), "plan", "--topology", a.topology, "--job", a.job, "--stages", "1", "-o", plan])
    common = ["--plan", plan, "--data", a.data, "--seed", str(a.seed), "--threads", str(a.threads), "--no-progress"]
    train = os.path.join(a.bin, "geopipe-train")
    run([train] + common + ["--iters", "0", "--checkpoint-at-start", "--checkpoint-dir", ckpt])
    out = run([train] + common + ["--iters", str(a.steps), "--lr", str(a.lr), "--min-lr", str(a.min_lr),
                                  "--warmup", str(a.lr_warmup), "--json-log", log])
    steps = [json.loads(line) for line in open(log)]
    compute = next((l.split("compute: ", 1)[1] for l in out.splitlines() if "compute: " in l), "?")
    return ckpt, [s["step_s"] for s in steps], [s["loss"] for s in steps], compute


def torch_side(a, ckpt, job):
    torch.set_num_threads(a.threads)
    m = job["model"]
    model = GPT(m["layers"], m["d_model"], m["heads"], m["seq_len"], m["vocab"])
    manifest = json.load(open(os.path.join(ckpt, "manifest.json")))
    sd = torch.load(os.path.join(ckpt, manifest["files"][0]), map_location="cpu")["model"]
    model.load_nanogpt(sd)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    with open(a.data, "rb") as f:
        data = f.read()
    train = torch.frombuffer(bytearray(data[:len(data) - int(len(data) * 0.1)]), dtype=torch.uint8)
    M, B, T = job["micro_batches"], job["micro_batch"], m["seq_len"]
    times, losses = [], []
    for step in range(a.steps):
        t0 = time.perf_counter()
        lr = learning_rate(step, a.lr, a.min_lr, a.lr_warmup, a.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=False)
        total = 0.0
        for mb in range(M):
            x, y = sample_batch(train, a.seed, step, mb, B, T)
            loss = model(x, y) / M
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(total)
    return times, losses


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="folder with geopipe and geopipe-train")
    p.add_argument("--job", default=os.path.join(ROOT, "examples/jobs/gpt-tiny.json"))
    p.add_argument("--topology", default=os.path.join(ROOT, "examples/topologies/local4.json"))
    p.add_argument("--data", default=os.path.join(ROOT, "examples/gpt/data/kjv-pentateuch.txt"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the medians")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--lr-warmup", type=int, default=5)
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    if a.steps <= a.warmup:
        sys.exit("torch_peer.py: --steps must exceed --warmup")
    job = json.load(open(a.job))
    with tempfile.TemporaryDirectory(prefix="geopipe-peer-") as work:
        ckpt, g_times, g_losses, compute = geopipe_side(a, work)
        t_times, t_losses = torch_side(a, ckpt, job)
    g_med, t_med = statistics.median(g_times[a.warmup:]), statistics.median(t_times[a.warmup:])
    rel = max(abs(g - t) / abs(t) for g, t in zip(g_losses, t_losses))
    print(f"# {job['name']}: one stage, {a.threads} thread(s), {a.steps} steps (median of the last "
          f"{a.steps - a.warmup}); torch {torch.__version__}; geopipe compute: {compute}")
    print(f"{'trainer':<10} {'s/step':>8} {'first loss':>11} {'last loss':>10}")
    print(f"{'geopipe':<10} {g_med:8.3f} {g_losses[0]:11.5f} {g_losses[-1]:10.5f}")
    print(f"{'pytorch':<10} {t_med:8.3f} {t_losses[0]:11.5f} {t_losses[-1]:10.5f}")
    print(f"ratio geopipe/pytorch: {g_med / t_med:.3f}   largest relative loss difference: {rel:.2e}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"job": job["name"], "threads": a.threads, "steps": a.steps, "warmup": a.warmup,
                       "torch": torch.__version__, "geopipe_compute": compute,
                       "geopipe_s_per_step": g_med, "pytorch_s_per_step": t_med, "ratio": g_med / t_med,
                       "max_rel_loss_diff": rel, "geopipe_step_s": g_times, "pytorch_step_s": t_times,
                       "geopipe_loss": g_losses, "pytorch_loss": t_losses}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
