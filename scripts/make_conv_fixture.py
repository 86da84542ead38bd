#!/usr/bin/env python3
"""Write tests/fixtures/torch_conv_steps.safetensors: a PyTorch reference for a few training
steps of a tiny conv net, for wgtrain's Rust tests to compare against.

Network `1x12x12-c4k3p1-m2-c6k3s2p1-16-10` (ReLU after every conv and every dense layer but
the last, MaxPool2d(2), flatten C,H,W before the first dense layer), PyTorch default init after
torch.manual_seed(INIT_SEED) (20: with seed 0, 3/4 of the first gradients are exactly zero
through dead ReLU units). Data: 40 samples of 144 integer pixel values 0..255 (the engine
feeds bytes / 255) and labels 0..9, from numpy's default_rng(DATA_SEED). Batches of 8 in file order
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
comparison tolerance can be argued from. Also in the metadata, from the float64 run: the smallest
|input| of any ReLU and the smallest top-2 gap of any max-pool window over the 5 steps (how far
f32 rounding is from flipping a branch), and how many parameters have an exactly zero first
gradient.

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
# torch.manual_seed for the init. 20 rather than 0: with seed 0, 990 of the 1312 parameters get an
# exactly zero first gradient (dead ReLU units on this all-positive input); with 20, 392.
INIT_SEED = 20
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


def margins(init_sd, x_bytes, labels, opt_name, hp):
    """In float64 along the 5 steps: the smallest |pre-activation| at any ReLU, the smallest gap
    between the largest and second-largest value of a max-pool window whose max is > 0, and the
    number of parameters whose step-1 gradient is exactly 0 (dead ReLU units). Small margins
    would let f32 rounding flip a ReLU or a pool choice; these say how far they are."""
    model = Net(ARCH).double()
    model.load_state_dict({k: v.double() for k, v in init_sd.items()}, strict=True)
    x = torch.tensor(x_bytes, dtype=torch.float64) / 255.0
    y = torch.tensor(labels).long()
    opt = make_optimizer(model, opt_name, hp["lr"], momentum=hp.get("momentum", 0.9), l2=hp["l2"])
    relu_min, pool_min, zero_grads = float("inf"), float("inf"), 0
    for s in range(STEPS):
        xb, yb = x[s * BATCH : (s + 1) * BATCH], y[s * BATCH : (s + 1) * BATCH]
        with torch.no_grad():
            h = xb.reshape(xb.shape[0], *model.input_shape)
            for step in model.plan:
                if step[0] == "conv" or (step[0] == "dense" and step[2]):
                    z = model.layers[step[1]](h)
                    relu_min = min(relu_min, z.abs().min().item())
                    h = F.relu(z)
                elif step[0] == "pool":
                    k = step[1]
                    b, c, hh, ww = h.shape
                    win = h[:, :, : hh // k * k, : ww // k * k].unfold(2, k, k).unfold(3, k, k)
                    top = win.reshape(b, c, hh // k, ww // k, k * k).sort(-1, descending=True).values
                    live = top[..., 0] > 0
                    if live.any():
                        pool_min = min(pool_min, (top[..., 0] - top[..., 1])[live].min().item())
                    h = F.max_pool2d(h, k)
                elif step[0] == "flatten":
                    h = h.flatten(1)
                else:
                    h = model.layers[step[1]](h)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        if s == 0:
            zero_grads = sum(int((p.grad == 0).sum()) for p in model.parameters())
        opt.step()
    return relu_min, pool_min, zero_grads


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
    ap.add_argument("--init-seed", type=int, default=INIT_SEED, help="torch.manual_seed before the init")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    torch.manual_seed(args.init_seed)
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
    m_sgd = margins(init, x_bytes, labels, "sgd", SGD)
    m_adam = margins(init, x_bytes, labels, "adam", ADAM)
    n_params = sum(v.numel() for v in init.values())
    print(f"float64 margins over the 5 steps: min |ReLU input| sgd {m_sgd[0]:.3e}, adam {m_adam[0]:.3e}; "
          f"min max-pool top-2 gap sgd {m_sgd[1]:.3e}, adam {m_adam[1]:.3e}")
    print(f"parameters with an exactly zero step-1 gradient (dead ReLU units): {m_sgd[2]} of {n_params}")
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
        "init": f"PyTorch default init after torch.manual_seed({args.init_seed})",
        "init_seed": str(args.init_seed),
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
        "min_relu_input_abs_sgd": f"{m_sgd[0]:.3e}",
        "min_relu_input_abs_adam": f"{m_adam[0]:.3e}",
        "min_pool_top2_gap_sgd": f"{m_sgd[1]:.3e}",
        "min_pool_top2_gap_adam": f"{m_adam[1]:.3e}",
        "zero_grad_params_step1": f"{m_sgd[2]} of {n_params}",
        "generator": "scripts/make_conv_fixture.py",
    }
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(t, out, metadata=meta)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {len(t)} tensors)")


if __name__ == "__main__":
    main()
