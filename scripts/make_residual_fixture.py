#!/usr/bin/env python3
"""Write tests/fixtures/torch_residual_steps.safetensors: a PyTorch reference for a few SGD
steps of a small residual net with batch normalisation, one identity block and one projected
block, written out as torchvision's BasicBlock (not parsed from the architecture string, so
the engine's reading of `r(...)` is checked against an independent model).

Network `1x6x6-c3k3p1-b-r(c3k3p1-b-c3k3p1-b)-r(c4k3s2p1-b-c4k3p1-b)-g-4`:
  stem     conv 1->3 k3 p1, BN, ReLU                                  layers.0, layers.1
  block 1  conv 3->3 k3 p1, BN, ReLU, conv 3->3 k3 p1, BN, + input, ReLU  layers.2 .. layers.5
  block 2  conv 3->4 k3 s2 p1, BN, ReLU, conv 4->4 k3 p1, BN,          layers.6 .. layers.9
           + (conv 3->4 k1 s2, BN)(input) (option B downsample), ReLU  layers.10, layers.11
  global average pooling, Linear(4, 4)                                 layers.12
Convolutions keep their biases (as wgtrain's do); BatchNorm momentum 0.1, eps 1e-5.
PyTorch default init after torch.manual_seed(INIT_SEED). Data: 20 samples of 36 integer pixel
values 0..255 (the engine feeds bytes / 255) and labels 0..3 from numpy's
default_rng(DATA_SEED). Batches of 8 in file order: steps 0, 1, 2 see samples 0..7, 8..15,
16..19 (the last partial: wgtrain's padding rows must count nowhere); the gradient is of the
batch's summed cross-entropy over 8, as wgtrain averages a partial minibatch over m.
SGD lr 0.1, momentum 0.9, no weight decay, in train mode.

Tensors (all f32): x_bytes [20,36], labels [20], init.layers.{i}.* (the starting state dict),
sgd.layers.{i}.* (after the 3 steps, running statistics and num_batches_tracked as f32),
sgd.loss [3] (each step's mean minibatch loss), eval.loss [] (mean loss over the 20 samples in
eval mode afterwards).

The same steps run in float64 from the same (f32) init and data; the largest |f32 - f64| over
every tensor is stored in the metadata (`f32_vs_f64_max_abs`): the rounding noise floor.

Usage: /work/venv/bin/python scripts/make_residual_fixture.py [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_batchnorm_fixture import save_file  # noqa: E402

ARCH = "1x6x6-c3k3p1-b-r(c3k3p1-b-c3k3p1-b)-r(c4k3s2p1-b-c4k3p1-b)-g-4"
N, P, BATCH, STEPS = 20, 36, 8, 3
DATA_SEED = 20261204
INIT_SEED = 11
LR, MOMENTUM = 0.1, 0.9


class ResNetTiny(nn.Module):
    """The network above; `self.layers` holds the parametrised modules in wgtrain's order
    (PyTorch BasicBlock order: conv1, bn1, conv2, bn2, downsample conv, downsample bn), so
    state_dict keys are wgtrain's `layers.{i}.*`."""

    def __init__(self):
        super().__init__()
        bn = lambda c: nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
        self.layers = nn.ModuleList(
            [
                nn.Conv2d(1, 3, 3, padding=1), bn(3),  # stem
                nn.Conv2d(3, 3, 3, padding=1), bn(3), nn.Conv2d(3, 3, 3, padding=1), bn(3),  # block 1
                nn.Conv2d(3, 4, 3, stride=2, padding=1), bn(4), nn.Conv2d(4, 4, 3, padding=1), bn(4),  # block 2
                nn.Conv2d(3, 4, 1, stride=2), bn(4),  # block 2's downsample
                nn.Linear(4, 4),
            ]
        )

    def forward(self, x):
        L = self.layers
        x = x.reshape(x.shape[0], 1, 6, 6)
        x = F.relu(L[1](L[0](x)))
        y = L[5](L[4](F.relu(L[3](L[2](x)))))
        x = F.relu(y + x)
        y = L[9](L[8](F.relu(L[7](L[6](x)))))
        x = F.relu(y + L[11](L[10](x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return L[12](x)


def make_data():
    rng = np.random.default_rng(DATA_SEED)
    x = rng.integers(0, 256, size=(N, P)).astype(np.float32)
    y = rng.integers(0, 4, size=N).astype(np.float32)
    return x, y


def run(init_sd, x_bytes, labels, dtype):
    model = ResNetTiny().to(dtype)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in init_sd.items()}, strict=True)
    model.train()
    x = torch.tensor(x_bytes, dtype=dtype) / 255.0
    y = torch.tensor(labels).long()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, dampening=0.0, weight_decay=0.0)
    losses = []
    for s in range(STEPS):
        xb, yb = x[s * BATCH : (s + 1) * BATCH], y[s * BATCH : (s + 1) * BATCH]
        opt.zero_grad(set_to_none=True)
        per_row = F.cross_entropy(model(xb), yb, reduction="none")
        (per_row.sum() / BATCH).backward()
        opt.step()
        losses.append(per_row.detach().mean())
    model.eval()
    with torch.no_grad():
        eval_loss = F.cross_entropy(model(x), y)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return sd, torch.stack(losses), eval_loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "torch_residual_steps.safetensors"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(INIT_SEED)
    init = {k: v.detach().clone() for k, v in ResNetTiny().state_dict().items()}
    x_bytes, labels = make_data()
    sd32, loss32, eval32 = run(init, x_bytes, labels, torch.float32)
    sd64, loss64, eval64 = run(init, x_bytes, labels, torch.float64)
    worst = 0.0
    for k in sd32:
        d = (sd32[k].double() - sd64[k].double()).abs().max().item()
        print(f"  {k:32s} max|f32-f64| = {d:.3e}   (max|value| {sd64[k].double().abs().max().item():.3e})")
        worst = max(worst, d)
    d_loss = (loss32.double() - loss64).abs().max().item()
    d_eval = abs(eval32.item() - eval64.item())
    print(f"arch {ARCH}, torch {torch.__version__}; losses {loss32.tolist()}, eval loss {eval32.item():.6f}")
    print(f"max |f32-f64|: state {worst:.3e}, step losses {d_loss:.3e}, eval loss {d_eval:.3e}")
    t = {
        "x_bytes": torch.tensor(x_bytes),
        "labels": torch.tensor(labels),
        "sgd.loss": loss32.float(),
        "eval.loss": eval32.float().reshape(()),
    }
    for prefix, sd in (("init", init), ("sgd", sd32)):
        for k, v in sd.items():
            t[f"{prefix}.{k}"] = v.float().contiguous()
    meta = {
        "arch": ARCH,
        "samples": str(N),
        "batch": str(BATCH),
        "steps": str(STEPS),
        "order": "file order, no shuffle; step s uses samples 8s..min(8s+7, 19)",
        "sgd": f"torch.optim.SGD lr {LR} momentum {MOMENTUM} dampening 0, no weight decay",
        "init_seed": str(INIT_SEED),
        "data_seed": f"numpy default_rng({DATA_SEED})",
        "torch_version": torch.__version__,
        "f32_vs_f64_max_abs": f"{worst:.3e}",
        "f32_vs_f64_max_abs_loss": f"{d_loss:.3e}",
        "f32_vs_f64_eval_loss": f"{d_eval:.3e}",
        "generator": "scripts/make_residual_fixture.py",
    }
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(t, out, metadata=meta)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {len(t)} tensors)")


if __name__ == "__main__":
    main()
