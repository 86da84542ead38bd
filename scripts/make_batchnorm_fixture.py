#!/usr/bin/env python3
"""Write tests/fixtures/torch_batchnorm_steps.safetensors: a PyTorch reference for a few SGD
steps of a small net with batch normalisation after a convolution and after a dense layer.

Network `1x6x6-c3k3p1-b-m2-6-b-4`: Conv2d(1,3,3,padding=1) -> BatchNorm2d(3) -> ReLU ->
MaxPool2d(2) -> flatten -> Linear(27,6) -> BatchNorm1d(6) -> ReLU -> Linear(6,4) (see
scripts/torch_reference.py; momentum 0.1, eps 1e-5, the conv and dense layers keep their
biases). PyTorch default init after torch.manual_seed(INIT_SEED). Data: 20 samples of 36
integer pixel values 0..255 (the engine feeds bytes / 255) and labels 0..3 from numpy's
default_rng(DATA_SEED). Batches of 8 in file order (no shuffle): steps 0, 1, 2 see samples
0..7, 8..15 and 16..19 — the last batch is partial (4 samples), which wgtrain pads to 8 rows
that must count nowhere in the statistics. The gradient is of the batch's summed
cross-entropy over 8 (as wgtrain averages a partial minibatch over m); `sgd.loss` records
each step's mean over the rows present.
SGD lr 0.1, momentum 0.9, no weight decay, in train mode.

Tensors (all f32):
  x_bytes [20,36]                       pixel values 0..255 (integers stored as f32)
  labels  [20]                          class 0..3 (integers stored as f32)
  init.layers.{i}.*                     the starting state dict (weights, BN buffers)
  sgd.layers.{i}.*                      the state dict after the 3 steps, running statistics
                                        and num_batches_tracked (as f32) included
  sgd.loss [3]                          each step's mean minibatch loss, before its update
  eval.loss []                          after the steps, the mean loss over all 20 samples in
                                        eval mode (running statistics)

The same steps run in float64 from the same (f32) init and data; the largest |f32 - f64| over
every tensor is printed and stored in the metadata (`f32_vs_f64_max_abs`): the rounding noise
floor a comparison tolerance can be argued from.

Usage: /work/venv/bin/python scripts/make_batchnorm_fixture.py [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import Net, make_optimizer  # noqa: E402

ARCH = "1x6x6-c3k3p1-b-m2-6-b-4"
N, P, BATCH, STEPS = 20, 36, 8, 3
DATA_SEED = 20261203
INIT_SEED = 7
LR, MOMENTUM = 0.1, 0.9


def save_file(tensors: dict, path: str, metadata: dict) -> None:
    """A safetensors file of F32 tensors (written here: the format is a length, a JSON header
    and little-endian data, and the venv need not have the `safetensors` package)."""
    import json
    import struct

    header, blobs, at = {"__metadata__": metadata}, [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().cpu().float().contiguous().numpy().astype("<f4")
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_data():
    rng = np.random.default_rng(DATA_SEED)
    x = rng.integers(0, 256, size=(N, P)).astype(np.float32)
    y = rng.integers(0, 4, size=N).astype(np.float32)
    return x, y


def run(init_sd, x_bytes, labels, dtype):
    model = Net(ARCH).to(dtype)
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in init_sd.items()}, strict=True)
    model.train()
    x = torch.tensor(x_bytes, dtype=dtype) / 255.0
    y = torch.tensor(labels).long()
    opt = make_optimizer(model, "sgd", LR, momentum=MOMENTUM, l2=0.0)
    losses = []
    for s in range(STEPS):
        xb, yb = x[s * BATCH : (s + 1) * BATCH], y[s * BATCH : (s + 1) * BATCH]
        opt.zero_grad(set_to_none=True)
        per_row = F.cross_entropy(model(xb), yb, reduction="none")
        # wgtrain averages every minibatch's loss over m = 8, the last partial one included
        # (README, "Known limits"); so does this reference.
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
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "torch_batchnorm_steps.safetensors"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(INIT_SEED)
    init = {k: v.detach().clone() for k, v in Net(ARCH).state_dict().items()}
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
        "generator": "scripts/make_batchnorm_fixture.py",
    }
    out = os.path.normpath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    save_file(t, out, metadata=meta)
    print(f"wrote {out} ({os.path.getsize(out)} bytes, {len(t)} tensors)")


if __name__ == "__main__":
    main()
