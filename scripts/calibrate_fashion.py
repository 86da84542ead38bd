#!/usr/bin/env python3
"""Calibrate wgtrain's `fashion` preset against PyTorch on Fashion-MNIST: the same network,
optimiser, schedule, batch, epochs, normalisation and augmentation, trained in PyTorch; then
wgtrain's accuracy beside it (run here with --wgtrain BINARY, or read from the JSON report of a
run made before with --wgtrain-json FILE, `wgtrain train --json > FILE`).

The PyTorch side follows torch_reference.py's conventions (pixels / 255, BatchNorm takes the
ReLU of the layer before it, Adam betas 0.9/0.999 eps 1e-8 with weight decay on weights only,
CosineAnnealingLR stepped after every update, a shuffle per epoch seeded by --seed), and:

* normalisation (`--normalize auto`, wgtrain's): (x - mean) / std with the mean and standard
  deviation (population, ddof 0) of every training pixel after the / 255 scaling, applied
  after the augmentation, so that the zero padding of a crop is black (0) before it;
* augmentation `crop:P,flip` (wgtrain's `--augment`): each training sample shifted by
  (dy, dx), each uniform in [-P, P], zeros where it leaves the image, then flipped
  horizontally with probability 1/2. wgtrain draws these from a hash of (seed, step, sample),
  PyTorch here from its own generator: the same distribution, not the same draws.

Examples (P=/work/venv/bin/python; the data: Debian's dataset-fashion-mnist):
  $P scripts/calibrate_fashion.py --threads 1                            # the preset, PyTorch only
  $P scripts/calibrate_fashion.py --wgtrain target/release/wgtrain       # and wgtrain's CPU engine
  $P scripts/calibrate_fashion.py --wgtrain-json fashion-cpu.json        # beside a run made before
  $P scripts/calibrate_fashion.py --arch 1x28x28-c16k3p1-b-m2-64-10 --epochs 2 --train-limit 6000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
from calibrate_torch import evaluate  # noqa: E402
from torch_reference import PRESETS, Net, load_mnist, make_optimizer  # noqa: E402

# wgtrain's `fashion` preset (src/model/preset.rs, src/train/mod.rs TrainConfig::preset).
FASHION = {
    "arch": PRESETS["fashion"],
    "optimizer": "adam",
    "lr": 1e-3,
    "l2": 0.0,
    "batch": 100,
    "epochs": 15,
    "augment": "crop:2,flip",
    "normalize": "auto",
}


def parse_augment(s: str):
    """'crop:2,flip' -> (pad, flip)."""
    pad, flip = 0, False
    if s in ("", "off", "none"):
        return pad, flip
    for part in s.split(","):
        if part == "flip":
            flip = True
        elif part.startswith("crop:"):
            pad = int(part[5:])
        else:
            raise ValueError(f"augment: {part!r} (crop:P, flip or off)")
    return pad, flip


def augment(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """x [B, C, H, W] -> the shifted (zero-filled) and flipped batch, as wgtrain's gather."""
    b, c, h, w = x.shape
    rows = torch.arange(h).expand(b, h)
    cols = torch.arange(w).expand(b, w)
    if flip:
        f = torch.randint(0, 2, (b, 1), generator=gen).bool()
        cols = torch.where(f, w - 1 - cols, cols)
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(-pad, pad + 1, (b, 1), generator=gen)
        dx = torch.randint(-pad, pad + 1, (b, 1), generator=gen)
        rows = rows + dy + pad
        cols = cols + dx + pad
    else:
        xp = x
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def normalizer(train_x: torch.Tensor, how: str):
    """`--normalize` on train_x [N, C, H, W] (pixels / 255): 'auto' -> (mean C, std C, the
    function (x - mean) / std on a batch), each channel's population statistics over every
    training pixel computed in float64; 'off' -> (0, 1, the identity's values)."""
    c = train_x.shape[1]
    mean, std = torch.zeros(c), torch.ones(c)
    if how == "auto":
        x64 = train_x.double()
        mean = x64.mean(dim=(0, 2, 3)).float()
        std = x64.std(dim=(0, 2, 3), unbiased=False).float()
    elif how != "off":
        raise ValueError(f"normalize: {how!r} (auto or off)")
    norm = lambda t: (t - mean[None, :, None, None]) / std[None, :, None, None]  # noqa: E731
    return mean, std, norm


def run_torch(args, arch, tx, ty, vx, vy, log):
    torch.manual_seed(args.seed)
    model = Net(arch)
    c, h, w = model.input_shape
    train_x = torch.from_numpy(tx.astype(np.float32) / 255.0).reshape(-1, c, h, w)
    test_x = torch.from_numpy(vx.astype(np.float32) / 255.0).reshape(-1, c, h, w)
    train_y, test_y = torch.from_numpy(ty), torch.from_numpy(vy)
    mean, std, norm = normalizer(train_x, args.normalize)
    test_n = norm(test_x)
    opt = make_optimizer(model, args.optimizer, args.lr, momentum=args.momentum, l2=args.l2)
    n = train_x.shape[0]
    steps = -(-n // args.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps)
    gen = torch.Generator().manual_seed(args.seed)
    aug_gen = torch.Generator().manual_seed(args.seed + 1)
    pad, flip = parse_augment(args.augment)
    print(f"torch: arch {arch} ({sum(p.numel() for p in model.parameters())} parameters), "
          f"{args.optimizer} lr {args.lr} cosine, l2 {args.l2}, batch {args.batch_size}, "
          f"{args.epochs} epochs, augment {args.augment}, normalize {args.normalize} "
          f"(mean {mean.tolist()}, std {std.tolist()}), {n} training samples, seed {args.seed}, "
          f"{args.threads} threads, torch {torch.__version__}", file=log, flush=True)
    accs, secs = [], []
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        order = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for i in range(0, n, args.batch_size):
            idx = order[i : i + args.batch_size]
            xb = train_x[idx]
            if pad or flip:
                xb = augment(xb, pad, flip, aug_gen)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(norm(xb)), train_y[idx])
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item()
        secs.append(time.perf_counter() - t0)
        acc, test_loss = evaluate(model, test_n, test_y)
        accs.append(acc)
        print(f"torch epoch {epoch:3d}  train loss {loss_sum / steps:.4f}  test loss "
              f"{test_loss:.4f}  test acc {100 * acc:.2f}%  {secs[-1]:.1f} s", file=log,
              flush=True)
    return accs, secs


def run_wgtrain(args, log):
    with tempfile.TemporaryDirectory(prefix="calibrate_fashion.") as tmp:
        cmd = [args.wgtrain, "train", "--device", "cpu", "--preset", "fashion",
               "--data-dir", args.data_dir, "--seed", str(args.seed),
               "--out", os.path.join(tmp, "model.safetensors"), "--checkpoint-every", "0",
               "--json", "--quiet"]
        print("wgtrain: " + " ".join(cmd), file=log, flush=True)
        p = subprocess.run(cmd, text=True, capture_output=True)
    if p.returncode != 0:
        sys.exit(f"wgtrain failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--arch", default=FASHION["arch"])
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default=FASHION["optimizer"])
    ap.add_argument("--lr", type=float, default=FASHION["lr"])
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--l2", type=float, default=FASHION["l2"])
    ap.add_argument("--batch-size", type=int, default=FASHION["batch"])
    ap.add_argument("--epochs", type=int, default=FASHION["epochs"])
    ap.add_argument("--augment", default=FASHION["augment"], help="crop:P,flip | crop:P | flip | off")
    ap.add_argument("--normalize", choices=["auto", "off"], default=FASHION["normalize"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train-limit", type=int, help="train on the first N training samples")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                    help="the four Fashion-MNIST IDX files (default Debian's location)")
    ap.add_argument("--threads", type=int, default=1)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--wgtrain", metavar="BINARY", help="also train wgtrain's preset (CPU engine)")
    g.add_argument("--wgtrain-json", metavar="FILE", help="wgtrain's `train --json` report")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    log = sys.stdout

    tx, ty, vx, vy = load_mnist(args.data_dir)
    if args.train_limit:
        tx, ty = tx[: args.train_limit], ty[: args.train_limit]

    wg = None
    if args.wgtrain_json:
        with open(args.wgtrain_json) as f:
            wg = json.load(f)
    elif args.wgtrain:
        wg = run_wgtrain(args, log)
    if wg is not None:
        for e in wg["epochs"]:
            print(f"wgtrain epoch {e['epoch']:3d}  test acc {100 * e['test_acc']:.2f}%  "
                  f"{e['seconds']:.1f} s", file=log, flush=True)
        print(f"wgtrain hyperparameters: {json.dumps(wg.get('hyperparameters'))}", file=log)

    accs = None
    if not args.no_torch:
        t0 = time.perf_counter()
        accs, secs = run_torch(args, args.arch, tx, ty, vx, vy, log)
        print(f"torch: {time.perf_counter() - t0:.0f} s in all", file=log)

    print()
    if accs is not None:
        print(f"PyTorch {torch.__version__} final test accuracy: {100 * accs[-1]:.2f}% "
              f"(best epoch {100 * max(accs):.2f}%), median {np.median(secs):.1f} s/epoch")
    if wg is not None:
        eps = wg["epochs"]
        print(f"wgtrain ({wg.get('device', wg.get('engine'))}) final test accuracy: "
              f"{100 * eps[-1]['test_acc']:.2f}% (best epoch "
              f"{100 * max(e['test_acc'] for e in eps):.2f}%), median "
              f"{np.median([e['seconds'] for e in eps]):.1f} s/epoch")


if __name__ == "__main__":
    main()
