#!/usr/bin/env python3
"""Write tests/fixtures/torch_optim_steps.safetensors: a PyTorch reference for the optimisers,
schedules and label smoothing of wgtrain (issue 20), a few steps of a tiny conv net from fixed
weights.

Network `1x6x6-c3k3p1-m2-8-4`: Conv2d(1,3,3,padding=1) -> ReLU -> MaxPool2d(2) -> flatten ->
Linear(27,8) -> ReLU -> Linear(8,4) (scripts/torch_reference.py's Net), PyTorch default init
after torch.manual_seed(INIT_SEED). Data: 24 samples of 36 integer pixel values 0..255 (the
engine feeds bytes / 255) and labels 0..3 from numpy's default_rng(DATA_SEED). Batches of 8 in
file order (no shuffle), 2 epochs: 6 updates, over which every schedule spans (T = 6). The loss
is F.cross_entropy(..., label_smoothing=0.1) averaged over the batch.

Two runs from the same init:
  adamw: torch.optim.AdamW(lr 0.02, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1, one
         parameter group: decay on every parameter, wgtrain's --decay-all), learning rate of
         update t (1-based) = OneCycleLR(max_lr=0.02, total_steps=6, cycle_momentum=False)'s
         rate times the warm-up min(1, t/2) (wgtrain's --warmup 2).
  sgd:   torch.optim.SGD(lr 0.1, momentum 0.9, dampening 0, nesterov=True), weight_decay 0.01
         on the weights only (two parameter groups, wgtrain's default scope), learning rate
         CosineAnnealingLR(T_max=6) stepped after every update.
The schedules' rates come from PyTorch's own schedulers (run on a stand-in optimiser) and are
multiplied by the warm-up factor before each update (group['lr'] set), so the fixture checks
wgtrain's tables against PyTorch's schedulers, not against a copy of its formulas.

Tensors (all f32):
  x_bytes [24,36], labels [24]                the data
  init.layers.{i}.weight|bias                 the starting state dict
  {adamw,sgd}.layers.{i}.weight|bias          the state dict after the 6 updates
  {adamw,sgd}.loss [6]                        each update's smoothed mean batch loss
  {adamw,sgd}.lr [6]                          the learning rate of each update

The same steps run in float64 from the same (f32) init and data; the largest |f32 - f64| over
the weights is stored in the metadata (`{run}_f32_vs_f64_max_abs`): PyTorch's own rounding
noise, the floor a comparison tolerance is argued from.

A second file, tests/fixtures/torch_optim_residual_steps.safetensors, does the same for the
small residual net with BatchNorm of scripts/make_residual_fixture.py (its ResNetTiny, written
out as torchvision's BasicBlock; 20 samples, batches of 8, the last partial, averaged over 8 as
wgtrain does), 2 epochs = 6 updates, label smoothing 0.1, the other scopes and schedules:
  adamw: AdamW lr 0.01, weight_decay 0.05 on the weights only (conv weights and BatchNorm's γ;
         biases and β without), CosineAnnealingLR(T_max=6), warm-up 2.
  sgd:   SGD lr 0.05, momentum 0.9, Nesterov, weight_decay 1e-3 on every parameter (one group,
         wgtrain's --decay-all), OneCycleLR(max_lr=0.05, total_steps=6, cycle_momentum=False).
It stores the state dicts after the updates (running statistics and num_batches_tracked as f32
included) under `adamw.*` and `sgd.*`, with `init.*`, `x_bytes`, `labels`, `{run}.lr`.

Usage: /work/venv/bin/python scripts/make_optim_fixture.py [--out PATH] [--residual-out PATH]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_batchnorm_fixture import save_file  # noqa: E402
from torch_reference import Net, param_groups  # noqa: E402

ARCH = "1x6x6-c3k3p1-m2-8-4"
N, P, BATCH, EPOCHS = 24, 36, 8, 2
STEPS = EPOCHS * N // BATCH
DATA_SEED = 20261204
INIT_SEED = 11
SMOOTHING = 0.1
RUNS = {
    "adamw": dict(lr=0.02, weight_decay=0.1, schedule="one-cycle", warmup=2),
    "sgd": dict(lr=0.1, momentum=0.9, weight_decay=0.01, schedule="cosine", warmup=0),
}


def make_data():
    rng = np.random.default_rng(DATA_SEED)
    x = rng.integers(0, 256, size=(N, P)).astype(np.float32)
    y = rng.integers(0, 4, size=N).astype(np.float32)
    return x, y


def schedule_lrs(run: dict, steps: int = STEPS) -> list[float]:
    """The rate of every update: PyTorch's scheduler on a stand-in optimiser, times the
    warm-up ramp min(1, t/N) of update t (1-based)."""
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=run["lr"])
    if run["schedule"] == "one-cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            dummy, max_lr=run["lr"], total_steps=steps, cycle_momentum=False
        )
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(dummy, T_max=steps)
    lrs = []
    for t in range(1, steps + 1):
        lr = dummy.param_groups[0]["lr"]
        if run["warmup"] and t < run["warmup"]:
            lr = lr * t / run["warmup"]
        lrs.append(lr)
        dummy.step()
        sched.step()
    return lrs


def run(name, init_sd, x_bytes, labels, dtype):
    cfg = RUNS[name]
    model = Net(ARCH).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init_sd.items()}, strict=True)
    model.train()
    x = torch.tensor(x_bytes, dtype=dtype) / 255.0
    y = torch.tensor(labels).long()
    if name == "adamw":
        opt = torch.optim.AdamW(
            model.parameters(), lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8,
            weight_decay=cfg["weight_decay"], foreach=False,
        )
    else:
        opt = torch.optim.SGD(
            param_groups(model, cfg["weight_decay"]), lr=cfg["lr"], momentum=cfg["momentum"],
            dampening=0.0, nesterov=True, foreach=False,
        )
    lrs = schedule_lrs(cfg)
    losses = []
    for s in range(STEPS):
        b = s % (N // BATCH)
        xb, yb = x[b * BATCH : (b + 1) * BATCH], y[b * BATCH : (b + 1) * BATCH]
        for g in opt.param_groups:
            g["lr"] = lrs[s]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb, label_smoothing=SMOOTHING)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return sd, torch.stack(losses), lrs


RES_RUNS = {
    "adamw": dict(lr=0.01, weight_decay=0.05, schedule="cosine", warmup=2, scope="weights"),
    "sgd": dict(lr=0.05, momentum=0.9, weight_decay=1e-3, schedule="one-cycle", warmup=0, scope="all"),
}


def residual_run(name, init_sd, x_bytes, labels, dtype):
    """6 updates of the residual net (see the module documentation)."""
    import make_residual_fixture as res

    cfg = RES_RUNS[name]
    model = res.ResNetTiny().to(dtype)
    model.load_state_dict(
        {k: v.to(dtype) if v.is_floating_point() else v for k, v in init_sd.items()}, strict=True
    )
    model.train()
    x = torch.tensor(x_bytes, dtype=dtype) / 255.0
    y = torch.tensor(labels).long()
    groups = (
        param_groups(model, cfg["weight_decay"])
        if cfg["scope"] == "weights"
        else [{"params": list(model.parameters()), "weight_decay": cfg["weight_decay"]}]
    )
    if name == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8, foreach=False)
    else:
        opt = torch.optim.SGD(
            groups, lr=cfg["lr"], momentum=cfg["momentum"], dampening=0.0, nesterov=True,
            foreach=False,
        )
    per_epoch = -(-res.N // res.BATCH)
    steps = 2 * per_epoch
    lrs = schedule_lrs(cfg, steps)
    for s in range(steps):
        b = s % per_epoch
        xb, yb = x[b * res.BATCH : (b + 1) * res.BATCH], y[b * res.BATCH : (b + 1) * res.BATCH]
        for g in opt.param_groups:
            g["lr"] = lrs[s]
        opt.zero_grad(set_to_none=True)
        per_row = F.cross_entropy(model(xb), yb, reduction="none", label_smoothing=SMOOTHING)
        # wgtrain averages every minibatch over m = 8, the last partial one included.
        (per_row.sum() / res.BATCH).backward()
        opt.step()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return sd, lrs


def residual_fixture(out: str):
    import make_residual_fixture as res

    torch.manual_seed(res.INIT_SEED)
    init = {k: v.detach().clone() for k, v in res.ResNetTiny().state_dict().items()}
    x_bytes, labels = res.make_data()
    t = {"x_bytes": torch.tensor(x_bytes), "labels": torch.tensor(labels)}
    for k, v in init.items():
        t[f"init.{k}"] = v.float().contiguous()
    meta = {
        "arch": res.ARCH,
        "samples": str(res.N),
        "batch": str(res.BATCH),
        "epochs": "2",
        "label_smoothing": str(SMOOTHING),
        "order": "file order, no shuffle; the last batch of each epoch partial (4 of 8)",
        "init_seed": str(res.INIT_SEED),
        "data_seed": f"numpy default_rng({res.DATA_SEED})",
        "torch_version": torch.__version__,
        "generator": "scripts/make_optim_fixture.py",
    }
    for name in RES_RUNS:
        sd32, lrs = residual_run(name, init, x_bytes, labels, torch.float32)
        sd64, _ = residual_run(name, init, x_bytes, labels, torch.float64)
        worst = max((sd32[k].double() - sd64[k].double()).abs().max().item() for k in sd32)
        moved = max(
            (sd32[k].double() - init[k].double()).abs().max().item()
            for k in sd32
            if not k.endswith("num_batches_tracked")
        )
        print(f"residual {name}: lrs {['%.6g' % v for v in lrs]}; moved {moved:.3e}, max |f32-f64| {worst:.3e}")
        for k, v in sd32.items():
            t[f"{name}.{k}"] = v.float().contiguous()
        t[f"{name}.lr"] = torch.tensor(lrs, dtype=torch.float64).float()
        meta[f"{name}_f32_vs_f64_max_abs"] = f"{worst:.3e}"
        meta[name] = repr(RES_RUNS[name])
    out = os.path.normpath(out)
    save_file(t, out, metadata=meta)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {len(t)} tensors)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "torch_optim_steps.safetensors"))
    ap.add_argument("--residual-out", default=os.path.join(here, "..", "tests", "fixtures", "torch_optim_residual_steps.safetensors"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(INIT_SEED)
    init = {k: v.detach().clone() for k, v in Net(ARCH).state_dict().items()}
    x_bytes, labels = make_data()
    t = {"x_bytes": torch.tensor(x_bytes), "labels": torch.tensor(labels)}
    for k, v in init.items():
        t[f"init.{k}"] = v.float().contiguous()
    meta = {
        "arch": ARCH,
        "samples": str(N),
        "batch": str(BATCH),
        "epochs": str(EPOCHS),
        "label_smoothing": str(SMOOTHING),
        "order": "file order, no shuffle",
        "init_seed": str(INIT_SEED),
        "data_seed": f"numpy default_rng({DATA_SEED})",
        "torch_version": torch.__version__,
        "generator": "scripts/make_optim_fixture.py",
    }
    for name in RUNS:
        sd32, loss32, lrs = run(name, init, x_bytes, labels, torch.float32)
        sd64, loss64, _ = run(name, init, x_bytes, labels, torch.float64)
        worst = max((sd32[k].double() - sd64[k]).abs().max().item() for k in sd32)
        moved = max((sd32[k] - init[k]).abs().max().item() for k in sd32)
        print(f"{name}: lrs {['%.6g' % v for v in lrs]}, losses {[round(v, 6) for v in loss32.tolist()]}")
        print(f"{name}: state moved {moved:.3e}, max |f32-f64| {worst:.3e}")
        for k, v in sd32.items():
            t[f"{name}.{k}"] = v.float().contiguous()
        t[f"{name}.loss"] = loss32.float()
        t[f"{name}.lr"] = torch.tensor(lrs, dtype=torch.float64).float()
        meta[f"{name}_f32_vs_f64_max_abs"] = f"{worst:.3e}"
        meta[name] = repr(RUNS[name])
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(t, out, metadata=meta)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {len(t)} tensors)")
    residual_fixture(args.residual_out)


if __name__ == "__main__":
    main()
