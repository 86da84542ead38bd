#!/usr/bin/env python3
"""Write tests/fixtures/torch_conv_steps.safetensors: a PyTorch reference for a few training
steps of a tiny conv net, for wgtrain's Rust tests to compare against.

Network `1x12x12-c4k3p1-m2-c6k3s2p1-16-10` (ReLU after every conv and every dense layer but
the last, MaxPool2d(2), flatten C,H,W before the first dense layer), PyTorch default init after
torch.manual_seed(0). Data: 40 samples of 144 integer pixel values 0..255 (the engine feeds
bytes / 255) and labels 0..9, from numpy's default_rng(DATA_SEED). Batches of 8 in file order
(no shuffle): 5 steps cover the 40 samples once. Loss is the mean cross-entropy of the batch.

Tensors (all f32):
  x_bytes [40,144]                    pixel values 0..255 (integers stored as f32)
  labels  [40]                        class 0..9 (integers stored as f32)
  init.layers.{i}.weight|bias         the starting weights (conv [O,C,K,K], dense [O,I])
  grad.layers.{i}.weight|bias         d(mean loss of batch 0)/d(param) at init, no weight decay
  sgd.layers.{i}.weight|bias          after 5 SGD steps (lr 0.05, momentum 0.9, l2 1e-3 weights only)
  sgd.loss [5]                        each step's mean minibatch loss, before its update
  adam.layers.{i}.weight|bias         after 5 Adam steps (lr 1e-3, betas 0.9/0.999, eps 1e-8,
                                      l2 1e-3 weights only, added to the gradient: not AdamW)
  adam.loss [5]

The same steps are also run in float64 from the same (f32) init and data; the largest
|f32 - f64| over every parameter after the 5 steps is printed per tensor and stored in the
metadata (`f32_vs_f64_max_abs_sgd`, `_adam`, `_grad`, `_loss_*`): the rounding noise floor that a
comparison tolerance can be argued from.

Usage: python3 scripts/make_conv_fixture.py [--out tests/fixtures/torch_conv_steps.safetensors]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import Net, make_optimizer  # noqa: E402

ARCH = "1x12x12-c4k3p1-m2-c6k3s2p1-16-10"
N, P, BATCH, STEPS = 40, 144, 8, 5
DATA_SEED = 20240611
SGD = dict(lr=0.05, momentum=0.9, l2=1e-3)
ADAM = dict(lr=1e-3, l2=1e-3)


def make_data():
    rng = np.random.default_rng(DATA_SEED)
    x = rng.integers(0, 256, size=(N, P)).astype(np.float32)
    y = rng.integers(0, 10, size=N).astype(np.float32)
    return x, y


def run(init_sd, x_bytes, labels, opt_name, hp, dtype):
    """5 steps from init_sd in `dtype`; -> (final state dict, losses tensor)."""
    model = Net(ARCH).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init_sd.items()}, strict=True)
    x = torch.tensor(x_bytes, dtype=dtype) / 255.0
    y = torch.tensor(labels).long()
    if opt_name == "sgd":
        opt = make_optimizer(model, "sgd", hp["lr"], momentum=hp["momentum"], l2=hp["l2"])
    else:
        opt = make_optimizer(model, "adam", hp["lr"], l2=hp["l2"])
    losses = []
    for s in range(STEPS):
        xb, yb = x[s * BATCH : (s + 1) * BATCH], y[s * BATCH : (s + 1) * BATCH]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, torch.stack(losses)


def first_grad(init_sd, x_bytes, labels, dtype):
    model = Net(ARCH).to(dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in init_sd.items()}, strict=True)
    x = torch.tensor(x_bytes[:BATCH], dtype=dtype) / 255.0
    y = torch.tensor(labels[:BATCH]).long()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return {f"{n}": p.grad.detach().clone() for n, p in model.named_parameters()}


def max_diff(a: dict, b: dict, label: str) -> float:
    worst = 0.0
    for k in a:
        d = (a[k].double() - b[k].double()).abs().max().item()
        scale = b[k].double().abs().max().item()
        print(f"  {label:5s} {k:18s} max|f32-f64| = {d:.3e}   (max|value| {scale:.3e})")
        worst = max(worst, d)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "torch_conv_steps.safetensors"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    torch.manual_seed(0)
    init = {k: v.detach().clone() for k, v in Net(ARCH).state_dict().items()}
    x_bytes, labels = make_data()

    grad32 = first_grad(init, x_bytes, labels, torch.float32)
    grad64 = first_grad(init, x_bytes, labels, torch.float64)
    sgd32, sgd_loss32 = run(init, x_bytes, labels, "sgd", SGD, torch.float32)
    sgd64, sgd_loss64 = run(init, x_bytes, labels, "sgd", SGD, torch.float64)
    adam32, adam_loss32 = run(init, x_bytes, labels, "adam", ADAM, torch.float32)
    adam64, adam_loss64 = run(init, x_bytes, labels, "adam", ADAM, torch.float64)

    print(f"arch {ARCH}, {N} samples, batch {BATCH}, {STEPS} steps, torch {torch.__version__}")
    print("sgd  loss per step:", [f"{v:.6f}" for v in sgd_loss32.tolist()])
    print("adam loss per step:", [f"{v:.6f}" for v in adam_loss32.tolist()])
    print("f32 vs f64 (same init and data):")
    d_grad = max_diff(grad32, grad64, "grad")
    d_sgd = max_diff(sgd32, sgd64, "sgd")
    d_adam = max_diff(adam32, adam64, "adam")
    d_sgd_loss = (sgd_loss32.double() - sgd_loss64).abs().max().item()
    d_adam_loss = (adam_loss32.double() - adam_loss64).abs().max().item()
    # How far the weights moved, for scale.
    moved_sgd = max((sgd32[k] - init[k]).abs().max().item() for k in init)
    moved_adam = max((adam32[k] - init[k]).abs().max().item() for k in init)
    print(f"max |f32-f64|: grad {d_grad:.3e}, sgd {d_sgd:.3e}, adam {d_adam:.3e}, "
          f"sgd loss {d_sgd_loss:.3e}, adam loss {d_adam_loss:.3e}")
    print(f"max |weights moved|: sgd {moved_sgd:.3e}, adam {moved_adam:.3e}")

    t = {
        "x_bytes": torch.tensor(x_bytes),
        "labels": torch.tensor(labels),
        "sgd.loss": sgd_loss32.float(),
        "adam.loss": adam_loss32.float(),
    }
    for prefix, sd in (("init", init), ("grad", grad32), ("sgd", sgd32), ("adam", adam32)):
        for k, v in sd.items():
            t[f"{prefix}.{k}"] = v.float().contiguous()
    meta = {
        "arch": ARCH,
        "samples": str(N),
        "batch": str(BATCH),
        "steps": str(STEPS),
        "order": "file order, no shuffle; step s uses samples 8s..8s+7",
        "input": "x_bytes / 255 as f32, NCHW [B,1,12,12]",
        "loss": "mean cross-entropy over the minibatch; <opt>.loss[s] is step s's loss before its update",
        "grad": "gradient of batch 0's mean loss at init, without weight decay",
        "init": "PyTorch default init after torch.manual_seed(0)",
        "data_seed": f"numpy default_rng({DATA_SEED})",
        "sgd_lr": repr(SGD["lr"]),
        "sgd_momentum": repr(SGD["momentum"]),
        "sgd_l2": repr(SGD["l2"]),
        "sgd_rule": "torch.optim.SGD, dampening 0, nesterov False: g += l2*w (weights only); buf = g (step 1) else momentum*buf + g; w -= lr*buf",
        "adam_lr": repr(ADAM["lr"]),
        "adam_beta1": "0.9",
        "adam_beta2": "0.999",
        "adam_eps": "1e-08",
        "adam_l2": repr(ADAM["l2"]),
        "adam_rule": "torch.optim.Adam (not AdamW), foreach=False: g += l2*w (weights only); m,v bias-corrected; w -= lr*mhat/(sqrt(vhat)+eps)",
        "torch_version": torch.__version__,
        "f32_vs_f64_max_abs_sgd": f"{d_sgd:.3e}",
        "f32_vs_f64_max_abs_adam": f"{d_adam:.3e}",
        "f32_vs_f64_max_abs_grad": f"{d_grad:.3e}",
        "f32_vs_f64_max_abs_loss_sgd": f"{d_sgd_loss:.3e}",
        "f32_vs_f64_max_abs_loss_adam": f"{d_adam_loss:.3e}",
        "generator": "scripts/make_conv_fixture.py",
    }
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(t, out, metadata=meta)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {len(t)} tensors)")


if __name__ == "__main__":
    main()
