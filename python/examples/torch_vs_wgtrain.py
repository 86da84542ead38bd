"""The same network trained with PyTorch and with wgtrain's CPU engine, in one process, from
the same starting weights, on the same MNIST epoch: both times and accuracies.

    python python/examples/torch_vs_wgtrain.py [--arch seed-large] [--epochs 1] [--threads N]

Both use every core (or --threads). The network is a preset or an arch string; the settings
are the preset's (seed-large: SGD lr 0.05, momentum 0.9, batch 100). Needs torch.
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import wgtrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="seed-large")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    train, test = wgtrain.Dataset.mnist("train"), wgtrain.Dataset.mnist("test")
    x, y = train.numpy()
    xt, yt = test.numpy()
    w = wgtrain.Trainer(a.arch, device="cpu", epochs=a.epochs, seed=a.seed, threads=a.threads)
    cfg = w.config
    if cfg["lr_schedule"] != "constant":
        print(f"note: {a.arch} uses a {cfg['lr_schedule']} schedule; torch runs a constant lr here")

    # PyTorch: the same network and starting weights (torch_module takes wgtrain's state_dict).
    m = wgtrain.torch_module(a.arch)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in w.state_dict().items()}, strict=True)
    weights = [p for n, p in m.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in m.named_parameters() if n.endswith("bias")]
    groups = [{"params": weights, "weight_decay": cfg["l2"]}, {"params": biases, "weight_decay": 0.0}]
    if cfg["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"])
    else:
        opt = torch.optim.Adam(groups, lr=cfg["lr"])
    xs = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255)
    ys = torch.from_numpy(y)
    b = cfg["batch_size"]
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        order = torch.randperm(len(xs), generator=g)
        for i in range(0, len(xs), b):
            idx = order[i : i + b]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(xs[idx]), ys[idx]).backward()
            opt.step()
    torch_s = time.perf_counter() - t0
    with torch.no_grad():
        pred = m(torch.from_numpy(xt.reshape(len(xt), -1).astype(np.float32) / 255)).argmax(1)
    torch_acc = (pred.numpy() == yt).mean()

    t0 = time.perf_counter()
    w.fit(train)
    wg_s = time.perf_counter() - t0
    wg_acc = w.evaluate(test)["accuracy"]

    print(f"{a.arch}, {a.epochs} epoch(s) of 60,000 images, batch {b}, {torch.get_num_threads()} threads")
    print(f"  torch {torch.__version__:<14} {torch_s:7.2f} s   test accuracy {100 * torch_acc:.2f}%")
    print(f"  wgtrain ({w.device}) {wg_s:7.2f} s   test accuracy {100 * wg_acc:.2f}%")
    print(f"  wgtrain / torch time: {wg_s / torch_s:.2f}x")


if __name__ == "__main__":
    main()
