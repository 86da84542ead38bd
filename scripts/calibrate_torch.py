#!/usr/bin/env python3
"""Train an MNIST network in PyTorch exactly as wgtrain defines it, to calibrate
hyperparameters and the accuracy wgtrain should reach.

Conventions (see torch_reference.py): pixels / 255, ReLU after every conv and every dense layer
but the last, MaxPool2d, mean cross-entropy, SGD (dampening 0, no Nesterov) or Adam
(betas 0.9/0.999, eps 1e-8), weight decay on weights only. Each epoch shuffles the 60,000
training images (torch.Generator seeded with --seed) and then evaluates on the 10,000 test images.

Examples:
  python3 scripts/calibrate_torch.py --preset lenet5 --optimizer adam --lr 1e-3
  python3 scripts/calibrate_torch.py --preset cnn --optimizer sgd --lr 0.05 --momentum 0.9 --l2 5e-4
  python3 scripts/calibrate_torch.py --arch 784-10-10-10 --init-uniform 0.07 --json
  python3 scripts/calibrate_torch.py --preset lenet5 --init wgtrain-model.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import PRESETS, Net, load_mnist, make_optimizer  # noqa: E402


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out = model(x[i : i + batch])
            loss_sum += F.cross_entropy(out, y[i : i + batch], reduction="sum").item()
            correct += (out.argmax(1) == y[i : i + batch]).sum().item()
    model.train()
    n = x.shape[0]
    return correct / n, loss_sum / n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--arch", help="architecture string, e.g. 1x28x28-c6k5p2-m2-c16k5-m2-120-84-10")
    g.add_argument("--preset", choices=sorted(PRESETS), help="a wgtrain preset")
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--lr", type=float, default=None, help="default 0.05 for sgd, 1e-3 for adam")
    ap.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (ignored by adam)")
    ap.add_argument("--l2", type=float, default=0.0, help="weight decay on weights only")
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                    help="cosine: CosineAnnealingLR over every step of the run, stepped after "
                         "each update (wgtrain's --lr-schedule cosine)")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1, help="init (torch.manual_seed) and shuffle seed")
    ap.add_argument("--data-dir", default=os.environ.get("MNIST_DIR"),
                    help="folder with the MNIST IDX files (gzip or raw); default $MNIST_DIR")
    ap.add_argument("--init", metavar="MODEL.safetensors",
                    help="start from a wgtrain model file (layers.{i}.weight|bias, strict)")
    ap.add_argument("--init-uniform", type=float, metavar="SCALE",
                    help="weights uniform in [-SCALE, SCALE], biases 0 (the lecture's init) instead of PyTorch's")
    ap.add_argument("--no-shuffle", action="store_true", help="train in file order every epoch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true",
                    help="print one JSON object at the end (per-epoch lines go to stderr)")
    args = ap.parse_args()

    if not args.data_dir:
        ap.error("no MNIST folder: pass --data-dir or set MNIST_DIR")
    arch = PRESETS[args.preset] if args.preset else (args.arch or PRESETS["seed-large"])
    lr = args.lr if args.lr is not None else (0.05 if args.optimizer == "sgd" else 1e-3)
    torch.set_num_threads(args.threads)
    log = sys.stderr if args.json else sys.stdout

    tx, ty, vx, vy = load_mnist(args.data_dir)
    train_x = torch.from_numpy(tx.reshape(tx.shape[0], -1).astype(np.float32)) / 255.0
    test_x = torch.from_numpy(vx.reshape(vx.shape[0], -1).astype(np.float32)) / 255.0
    train_y, test_y = torch.from_numpy(ty), torch.from_numpy(vy)

    torch.manual_seed(args.seed)
    model = Net(arch)
    if args.init_uniform is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".weight"):
                    p.uniform_(-args.init_uniform, args.init_uniform)
                else:
                    p.zero_()
    if args.init:
        from safetensors.torch import load_file
        model.load_state_dict(load_file(args.init), strict=True)
    opt = make_optimizer(model, args.optimizer, lr, momentum=args.momentum, l2=args.l2)
    gen = torch.Generator().manual_seed(args.seed)
    total_steps = args.epochs * -(-train_x.shape[0] // args.batch_size)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
             if args.lr_schedule == "cosine" else None)

    n_params = sum(p.numel() for p in model.parameters())
    print(f"arch {arch} ({n_params} parameters), {args.optimizer} lr {lr} ({args.lr_schedule}) "
          f"momentum {args.momentum if args.optimizer == 'sgd' else '-'} l2 {args.l2}, "
          f"batch {args.batch_size}, {args.epochs} epochs, seed {args.seed}, "
          f"{args.threads} threads, torch {torch.__version__}", file=log, flush=True)

    n = train_x.shape[0]
    epochs = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        order = torch.arange(n) if args.no_shuffle else torch.randperm(n, generator=gen)
        loss_sum, steps = 0.0, 0
        for i in range(0, n, args.batch_size):
            idx = order[i : i + args.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.item()
            steps += 1
        train_s = time.perf_counter() - t0
        acc, test_loss = evaluate(model, test_x, test_y)
        secs = time.perf_counter() - t0
        rec = {"epoch": epoch, "train_loss": loss_sum / steps, "test_acc": acc,
               "test_loss": test_loss, "train_seconds": train_s, "seconds": secs}
        epochs.append(rec)
        print(f"epoch {epoch:3d}  train loss {rec['train_loss']:.4f}  test loss {test_loss:.4f}  "
              f"test acc {100 * acc:.2f}%  {train_s:.1f} s train, {secs:.1f} s total",
              file=log, flush=True)

    final = epochs[-1]["test_acc"] if epochs else evaluate(model, test_x, test_y)[0]
    print(f"final test accuracy {100 * final:.2f}%", file=log, flush=True)
    if args.json:
        print(json.dumps({
            "arch": arch, "optimizer": args.optimizer, "lr": lr,
            "momentum": args.momentum if args.optimizer == "sgd" else None,
            "l2": args.l2, "batch_size": args.batch_size, "epochs": args.epochs,
            "seed": args.seed, "threads": args.threads, "parameters": n_params,
            "torch": torch.__version__, "per_epoch": epochs, "final_test_acc": final,
        }))


if __name__ == "__main__":
    main()
