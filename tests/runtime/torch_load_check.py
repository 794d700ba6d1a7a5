"""Checks geopipe's checkpoint files with Python PyTorch (run by runtime_torch_load_test).

usage: torch_load_check.py REFERENCE_JSON

REFERENCE_JSON (written by the C++ test) names the checkpoint folders, the exported files and
the model config, and holds a fixed batch with the loss the C++ model computes on it. This
script torch.load()s every per-stage file and every exported file, checks that the exported
state dicts have exactly nanoGPT's parameter names and shapes, finite values equal to the
per-stage files', and that a plain-PyTorch nanoGPT forward pass built from the export gives the
C++ loss within 1e-4 relative. Exit code 0 when all holds, 1 otherwise (with the reasons).
"""

import json
import math
import os
import sys

import torch
import torch.nn.functional as F

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def load(path):
    # Refuse arbitrary pickled objects where this PyTorch can: a checkpoint is dicts, tensors, ints.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # PyTorch without weights_only
        return torch.load(path, map_location="cpu")


def expected_shapes(cfg):
    L, C, T, V = cfg["n_layer"], cfg["n_embd"], cfg["block_size"], cfg["vocab_size"]
    shapes = {"transformer.wte.weight": (V, C), "transformer.wpe.weight": (T, C)}
    for i in range(L):
        h = f"transformer.h.{i}."
        shapes.update({
            h + "ln_1.weight": (C,), h + "ln_1.bias": (C,),
            h + "attn.c_attn.weight": (3 * C, C), h + "attn.c_attn.bias": (3 * C,),
            h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
            h + "ln_2.weight": (C,), h + "ln_2.bias": (C,),
            h + "mlp.c_fc.weight": (4 * C, C), h + "mlp.c_fc.bias": (4 * C,),
            h + "mlp.c_proj.weight": (C, 4 * C), h + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"transformer.ln_f.weight": (C,), "transformer.ln_f.bias": (C,), "lm_head.weight": (V, C)})
    return shapes


def gpt_loss(sd, cfg, idx, targets, causal_mask=True, tied_head=False):
    """nanoGPT's GPT.forward (pre-LN, causal attention, tanh-GELU), lm_head untied, in float64.
    causal_mask=False and tied_head=True give wrong models, to show the comparison tells them apart."""
    sd = {k: v.double() for k, v in sd.items()}
    B, T = idx.shape
    C, nh = cfg["n_embd"], cfg["n_head"]
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][torch.arange(T)]
    causal = torch.ones(T, T, dtype=torch.bool)
    if causal_mask:
        causal = torch.tril(causal)
    for i in range(cfg["n_layer"]):
        p = lambda n: sd[f"transformer.h.{i}.{n}"]  # noqa: E731
        a = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), 1e-5)
        q, k, v = F.linear(a, p("attn.c_attn.weight"), p("attn.c_attn.bias")).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // nh)
        att = F.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        x = x + F.linear(y, p("attn.c_proj.weight"), p("attn.c_proj.bias"))
        m = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), 1e-5)
        m = F.gelu(F.linear(m, p("mlp.c_fc.weight"), p("mlp.c_fc.bias")), approximate="tanh")
        x = x + F.linear(m, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))
    x = F.layer_norm(x, (C,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"], 1e-5)
    logits = F.linear(x, sd["transformer.wte.weight" if tied_head else "lm_head.weight"])
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1)).item()


def check_stage_files(ckpt_dir):
    """Loads every stage file the manifest names; returns their model tensors merged by name."""
    with open(os.path.join(ckpt_dir, "manifest.json")) as f:
        manifest = json.load(f)
    merged = {}
    for stage, rel in enumerate(manifest["files"]):
        path = os.path.join(ckpt_dir, rel)
        ck = load(path)
        if not check(isinstance(ck, dict) and {"model", "optimizer", "meta"} <= set(ck), f"{path}: keys"):
            continue
        meta = ck["meta"]
        check(meta["step"] == manifest["step"] and meta["stage"] == stage, f"{path}: meta {meta}")
        check(len(ck["model"]) > 0, f"{path}: empty model")
        for name, t in list(ck["model"].items()) + list(ck["optimizer"].items()):
            check(isinstance(t, torch.Tensor) and torch.isfinite(t).all().item(), f"{path}: {name} not finite")
        for name, t in ck["model"].items():
            check(name not in merged, f"{path}: {name} also on another stage")
            merged[name] = t
    return manifest, merged


def main():
    with open(sys.argv[1]) as f:
        ref = json.load(f)
    cfg = ref["config"]
    shapes = expected_shapes(cfg)
    idx = torch.tensor(ref["tokens"], dtype=torch.long)
    targets = torch.tensor(ref["targets"], dtype=torch.long)
    for case in ref["cases"]:
        manifest, stage_tensors = check_stage_files(case["checkpoint_dir"])
        check(len(manifest["files"]) == case["num_stages"], f"{case['checkpoint_dir']}: stage count")
        ck = load(case["export"])
        if not check(isinstance(ck, dict) and {"model", "model_args", "iter_num"} <= set(ck), "export: keys"):
            continue
        sd = ck["model"]
        check(ck["iter_num"] == manifest["step"], f"{case['export']}: iter_num {ck['iter_num']}")
        for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            check(ck["model_args"][key] == cfg[key], f"{case['export']}: model_args.{key}")
        check(set(sd) == set(shapes), f"{case['export']}: names differ: missing {sorted(set(shapes) - set(sd))}, "
                                      f"extra {sorted(set(sd) - set(shapes))}")
        check(set(stage_tensors) == set(sd), f"{case['checkpoint_dir']}: stage files hold other names")
        for name, t in sd.items():
            check(tuple(t.shape) == shapes.get(name), f"{case['export']}: {name} shape {tuple(t.shape)}")
            check(t.dtype == torch.float32 and torch.isfinite(t).all().item(), f"{case['export']}: {name} not finite")
            if name in stage_tensors:
                check(torch.equal(t, stage_tensors[name]), f"{case['export']}: {name} differs from the stage file")
        if failures:
            continue
        loss = gpt_loss(sd, cfg, idx, targets)
        rel = abs(loss - ref["loss"]) / abs(ref["loss"])
        print(f"{case['export']}: PyTorch loss {loss:.8f}, C++ loss {ref['loss']:.8f}, relative difference {rel:.2e}")
        check(rel <= 1e-4, f"{case['export']}: loss {loss} != C++ loss {ref['loss']}")
        for wrong in ({"causal_mask": False}, {"tied_head": True}):
            other = gpt_loss(sd, cfg, idx, targets, **wrong)
            check(abs(other - ref["loss"]) / abs(ref["loss"]) > 2e-4,
                  f"a model with {wrong} also matches the C++ loss: the comparison is too weak")
    for f in failures:
        print("FAIL:", f)
    print(f"torch {torch.__version__}: {'ok' if not failures else 'failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
