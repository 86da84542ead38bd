#!/usr/bin/env python3
"""Compare wgtrain's CPU engine with PyTorch on the CPU: the same network, hyperparameters and
data, trained in one invocation, whole runs alternating (wgtrain, PyTorch, PyTorch, wgtrain, ...
for --rounds N) so that both see the same machine load. Prints seconds per epoch and the final
test accuracy of both, the ratio (wgtrain s/epoch / PyTorch s/epoch), and a markdown table for
BENCHMARKS.md.

What is timed, on both sides: the training part of each epoch (every minibatch's forward,
backward and update, and the epoch's training loss and accuracy read back), without the shuffle
that precedes it and without the test-set evaluation after it. That is wgtrain's per-epoch
`seconds` (src/train/mod.rs `run`: the clock starts after `epoch_order` and stops after
`take_train_metrics`, before `evaluate(Which::Test)`), which this script reads from
`wgtrain train --json`.

Hyperparameters (as wgtrain's presets, src/train/mod.rs `TrainConfig::preset`; checked against
the `hyperparameters` block wgtrain reports): batch 100, l2 0, a shuffle per epoch, seed 1;
seed-small / seed-large: SGD lr 0.05 momentum 0.9, weights uniform in +-0.07 and biases 0;
lenet5 / cnn / fashion / resnet8: Adam lr 1e-3 with a cosine decay over every step of the run,
PyTorch's default init; fashion also `--augment crop:2,flip` and `--normalize auto`
(calibrate_fashion.py's augmentation and normalisation, drawn from PyTorch's own generator:
the same distribution, not the same draws). The networks (BatchNorm, dropout and residual
blocks included), MNIST-layout loading and optimisers come from torch_reference.py, the
test-set evaluation from calibrate_torch.py.

Data: MNIST (--data-dir) for the four MNIST presets, Fashion-MNIST (--fashion-dir) for
`fashion`, CIFAR-10 binary files for `resnet8`: --cifar-dir for the real set; without it (there
is no CIFAR-10 on the development machine) the script writes a synthetic set in CIFAR-10's
binary layout into a temporary folder (50,000 + 10,000 records of seeded random pixels and
labels, numpy default_rng(--seed)), read by both engines: the times are a real CIFAR-10
epoch's, the accuracies are meaningless (random labels: ~10 %), and the table says so.
--train-limit N trains on the first N training samples of each set (both engines), for a
quick look; the figures to quote are whole epochs.

Examples:
  P=/tmp/torchenv/bin/python
  $P scripts/compare_cpu_torch.py --preset seed-small --epochs 1          # smoke test
  $P scripts/compare_cpu_torch.py --preset seed-large lenet5 --epochs 10 --rounds 2
  $P scripts/compare_cpu_torch.py --preset cnn --threads 1 --wgtrain target/release/wgtrain
  $P scripts/compare_cpu_torch.py --preset fashion resnet8 --epochs 1 --train-limit 5000
  $P scripts/compare_cpu_torch.py --preset resnet8 --epochs 1 --cifar-dir ~/cifar-10-batches-bin
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # no __pycache__ in scripts/ from the imports below
sys.path.insert(0, HERE)
from calibrate_fashion import FASHION, augment, normalizer, parse_augment  # noqa: E402
from calibrate_torch import evaluate  # noqa: E402
from torch_reference import PRESETS, Net, load_mnist, make_optimizer  # noqa: E402


@dataclass(frozen=True)
class Hyper:
    optimizer: str
    lr: float
    momentum: float
    schedule: str  # "constant" | "cosine"
    init_uniform: float | None  # None: PyTorch's default init
    batch: int = 100
    l2: float = 0.0
    augment: str = "off"  # calibrate_fashion.parse_augment's form: "crop:2,flip", "off"
    normalize: str = "off"  # "auto" | "off"
    data: str = "mnist"  # "mnist" | "fashion" | "cifar10"


SGD_LECTURE = Hyper("sgd", 0.05, 0.9, "constant", 0.07)
ADAM_COSINE = Hyper("adam", 1e-3, 0.9, "cosine", None)
# calibrate_fashion.py's FASHION: the preset's settings, written once.
FASHION_HYPER = Hyper(FASHION["optimizer"], FASHION["lr"], 0.9, "cosine", None,
                      batch=FASHION["batch"], l2=FASHION["l2"], augment=FASHION["augment"],
                      normalize=FASHION["normalize"], data="fashion")
# wgtrain's TrainConfig::preset: the lecture's SGD for the MLPs, Adam + cosine for the conv nets.
HYPER = {"seed-small": SGD_LECTURE, "seed-large": SGD_LECTURE,
         "lenet5": ADAM_COSINE, "cnn": ADAM_COSINE, "fashion": FASHION_HYPER,
         "resnet8": replace(ADAM_COSINE, data="cifar10")}

# Synthetic CIFAR-10 (no CIFAR-10 here): its record layout and sizes.
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR_PER_FILE = 10_000


@dataclass
class Run:
    engine: str  # "wgtrain" | "torch"
    seconds: list[float]  # training seconds of each epoch
    test_acc: list[float]  # after each epoch, 0..1
    wall: float  # the whole run (wgtrain: the process, data loading and saving included)
    device: str = ""
    normalize: dict | None = None  # {"mean": [...], "std": [...]} where normalised


# ---------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               text=True, capture_output=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def loadavg() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "?"


# ---------------------------------------------------------------- wgtrain


def wgtrain_has_threads_flag(binary: str) -> bool:
    out = subprocess.run([binary, "train", "--help"], text=True, capture_output=True)
    return "--threads" in out.stdout


def reported_augment(reported: dict):
    """wgtrain's `augment` block -> (pad, flip), as calibrate_fashion.parse_augment."""
    a = reported.get("augment") or {}
    if not isinstance(a, dict):
        return (0, False) if a in ("off", None) else a
    return (int(a.get("crop", 0)), bool(a.get("flip", False)))


def check_hyper(preset: str, hp: Hyper, reported: dict):
    """Stop if wgtrain trained with other settings than the PyTorch side uses."""
    init = reported.get("init")
    want_init = ({"uniform": {"scale": hp.init_uniform}} if hp.init_uniform is not None
                 else "pytorch")
    same_init = (init == want_init if isinstance(want_init, str) else
                 isinstance(init, dict) and "uniform" in init
                 and abs(init["uniform"]["scale"] - hp.init_uniform) < 1e-6)
    problems = [
        f"{k}: wgtrain {reported.get(k)!r}, torch {v!r}"
        for k, v, ok in [
            ("arch", PRESETS[preset], reported.get("arch") == PRESETS[preset]),
            ("optimizer", hp.optimizer, reported.get("optimizer") == hp.optimizer),
            ("lr", hp.lr, abs(reported.get("lr", -1) - hp.lr) <= 1e-6 * hp.lr),
            ("lr_schedule", hp.schedule, reported.get("lr_schedule", "constant") == hp.schedule),
            ("batch", hp.batch, reported.get("batch") == hp.batch),
            ("l2", hp.l2, reported.get("l2") == hp.l2),
            ("shuffle", True, reported.get("shuffle") is True),
            ("init", want_init, same_init),
            ("augment", hp.augment, reported_augment(reported) == parse_augment(hp.augment)),
            ("normalize", hp.normalize,
             ("values" in (reported.get("normalize") or {})) == (hp.normalize == "auto")),
            ("label_smoothing", 0.0, reported.get("label_smoothing", 0.0) == 0.0),
            ("weight_decay", 0.0, reported.get("weight_decay", 0.0) == 0.0),
            ("nesterov", False, reported.get("nesterov", False) is False),
            ("warmup", 0, reported.get("warmup", 0) == 0),
        ] + ([("momentum", hp.momentum, abs(reported.get("momentum", -1) - hp.momentum) < 1e-6)]
             if hp.optimizer == "sgd" else [])
        if not ok
    ]
    if problems:
        sys.exit(f"{preset}: wgtrain's hyperparameters differ from the PyTorch side's "
                 f"(update HYPER in {os.path.basename(__file__)}): " + "; ".join(problems))


def wgtrain_data_flags(args, hp: Hyper) -> list[str]:
    if hp.data == "cifar10":
        return ["--data", f"cifar10:{args.cifar_dir}"]
    return ["--data-dir", args.fashion_dir if hp.data == "fashion" else args.data_dir]


def run_wgtrain(args, preset: str, hp: Hyper, threads_flag: bool) -> Run:
    with tempfile.TemporaryDirectory(prefix="compare_cpu_torch.") as tmp:
        cmd = [args.wgtrain, "train", "--device", "cpu", "--preset", preset,
               "--epochs", str(args.epochs), "--seed", str(args.seed),
               *wgtrain_data_flags(args, hp), "--out", os.path.join(tmp, "model.safetensors"),
               "--checkpoint-every", "0", "--json", "--quiet"]
        if args.train_limit:
            cmd += ["--train-limit", str(args.train_limit)]
        if threads_flag:
            cmd += ["--threads", str(args.threads)]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, text=True, capture_output=True)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"wgtrain failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()}")
    s = json.loads(p.stdout)
    check_hyper(preset, hp, s["hyperparameters"])
    if s.get("engine") != "cpu":
        sys.exit(f"wgtrain ran on engine {s.get('engine')!r}, not cpu")
    eps = s["epochs"]
    norm = (s["hyperparameters"].get("normalize") or {}).get("values")
    return Run("wgtrain", [e["seconds"] for e in eps], [e["test_acc"] for e in eps], wall,
               s.get("device", ""), norm)


# ---------------------------------------------------------------- PyTorch


def run_torch(args, preset: str, hp: Hyper, data) -> Run:
    """data: (train_x [N, ...] f32 pixels / 255 in the network's input shape or flat,
    train_y, test_x, test_y) as load_data gives them."""
    train_x, train_y, test_x, test_y = data
    t_run = time.perf_counter()
    torch.manual_seed(args.seed)
    model = Net(PRESETS[preset])
    if hp.init_uniform is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".weight"):
                    p.uniform_(-hp.init_uniform, hp.init_uniform)
                else:
                    p.zero_()
    opt = make_optimizer(model, hp.optimizer, hp.lr, momentum=hp.momentum, l2=hp.l2)
    n = train_x.shape[0]
    steps = -(-n // hp.batch)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs * steps)
             if hp.schedule == "cosine" else None)
    gen = torch.Generator().manual_seed(args.seed)
    aug_gen = torch.Generator().manual_seed(args.seed + 1)
    pad, flip = parse_augment(hp.augment)
    norm_info = None
    if hp.normalize != "off":
        mean, std, norm = normalizer(train_x, hp.normalize)
        norm_info = {"mean": mean.tolist(), "std": std.tolist()}
        test_x = norm(test_x)
    model.train()
    seconds, accs = [], []
    for _ in range(args.epochs):
        order = torch.randperm(n, generator=gen)  # before the clock, as wgtrain's epoch_order
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        for i in range(0, n, hp.batch):
            idx = order[i : i + hp.batch]
            y = train_y[idx]
            xb = train_x[idx]
            # wgtrain augments and normalises in its gather, inside the timed epoch
            if pad or flip:
                xb = augment(xb, pad, flip, aug_gen)
            if norm_info is not None:
                xb = norm(xb)
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            # wgtrain accumulates the training loss and accuracy as it goes, read once per epoch
            with torch.no_grad():
                loss_sum += loss.detach()
                correct += (out.detach().argmax(1) == y).sum()
        train_loss = loss_sum.item() / steps
        _ = correct.item()
        seconds.append(time.perf_counter() - t0)
        if not np.isfinite(train_loss):
            sys.exit(f"torch {preset}: training loss {train_loss}")
        accs.append(evaluate(model, test_x, test_y)[0])
    return Run("torch", seconds, accs, time.perf_counter() - t_run,
               f"PyTorch {torch.__version__}", norm_info)


# ---------------------------------------------------------------- data


def write_synthetic_cifar10(folder: str, seed: int):
    """CIFAR-10's binary layout, seeded random content: data_batch_1..5.bin and test_batch.bin,
    10,000 records each (a label byte 0..9, then 3072 pixel bytes), and batches.meta.txt."""
    rng = np.random.default_rng(seed)
    for name in CIFAR_TRAIN_FILES + ["test_batch.bin"]:
        rec = rng.integers(0, 256, size=(CIFAR_PER_FILE, CIFAR_RECORD), dtype=np.uint8)
        rec[:, 0] = rng.integers(0, 10, size=CIFAR_PER_FILE, dtype=np.uint8)
        rec.tofile(os.path.join(folder, name))
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
        f.write("\n".join(f"class{i}" for i in range(10)) + "\n")


def load_cifar10(folder: str):
    """-> (train_x u8 [N,3,32,32], train_y int64, test_x, test_y) from the binary files."""
    def read(names):
        recs = [np.fromfile(os.path.join(folder, n), dtype=np.uint8).reshape(-1, CIFAR_RECORD)
                for n in names]
        r = np.concatenate(recs)
        return r[:, 1:].reshape(-1, 3, 32, 32), r[:, 0].astype(np.int64)
    for sub in ("", "cifar-10-batches-bin"):
        if os.path.isfile(os.path.join(folder, sub, "test_batch.bin")):
            folder = os.path.join(folder, sub)
            break
    tx, ty = read(CIFAR_TRAIN_FILES)
    vx, vy = read(["test_batch.bin"])
    return tx, ty, vx, vy


def load_data(args, hp: Hyper, cache: dict):
    """The preset's data set as tensors (pixels / 255; images [N, C, H, W] where the preset
    augments or normalises, else flat), each set read once per run of the script."""
    key = hp.data
    if key not in cache:
        if hp.data == "cifar10":
            tx, ty, vx, vy = load_cifar10(args.cifar_dir)
        else:
            tx, ty, vx, vy = load_mnist(args.fashion_dir if hp.data == "fashion" else args.data_dir)
        if args.train_limit:
            tx, ty = tx[: args.train_limit], ty[: args.train_limit]
        to_f = lambda a: torch.from_numpy(a.astype(np.float32)) / 255.0  # noqa: E731
        cache[key] = (to_f(tx), torch.from_numpy(ty), to_f(vx), torch.from_numpy(vy))
    tx, ty, vx, vy = cache[key]
    if tx.dim() == 3:  # [N, H, W] IDX images: one channel
        tx, vx = tx.unsqueeze(1), vx.unsqueeze(1)
    if not (hp.augment != "off" or hp.normalize != "off"):
        tx, vx = tx.reshape(tx.shape[0], -1), vx.reshape(vx.shape[0], -1)
    return tx, ty, vx, vy


# ---------------------------------------------------------------- report


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(runs: list[Run]):
    """-> (median s/epoch over every epoch of every run, median first-epoch s, median of the
    later epochs (nan with one epoch), final test accuracies)."""
    every = [s for r in runs for s in r.seconds]
    first = [r.seconds[0] for r in runs if r.seconds]
    later = [s for r in runs for s in r.seconds[1:]]
    return median(every), median(first), median(later), [r.test_acc[-1] for r in runs]


def fmt_acc(accs):
    if min(accs) == max(accs):  # one run, or the same seed giving the same result
        return f"{100 * accs[0]:.2f}%"
    return f"{100 * statistics.mean(accs):.2f}% ({100 * min(accs):.2f}–{100 * max(accs):.2f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--preset", nargs="+", choices=list(HYPER), default=["seed-large"],
                    help="one or more wgtrain presets (default seed-large)")
    ap.add_argument("--epochs", type=int, default=2,
                    help="epochs per run (default 2 for a quick comparison; 10 is a full run)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of each engine, alternating: round 1 wgtrain then PyTorch, "
                         "round 2 PyTorch then wgtrain, ... (default 1)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for both: torch.set_num_threads and wgtrain's --threads "
                         "(default: os.cpu_count())")
    ap.add_argument("--seed", type=int, default=1,
                    help="init and shuffle seed for both (default 1)")
    ap.add_argument("--data-dir", default=os.path.join(REPO, "..", "shared", "datasets", "mnist"),
                    help="folder with the four MNIST IDX files (default ../shared/datasets/mnist "
                         "from the repository root)")
    ap.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist",
                    help="folder with the four Fashion-MNIST IDX files, for `fashion` (default "
                         "Debian's dataset-fashion-mnist location)")
    ap.add_argument("--cifar-dir",
                    help="folder with CIFAR-10's binary files (data_batch_1..5.bin, "
                         "test_batch.bin), for `resnet8`; default: a synthetic set in that "
                         "layout written to a temporary folder (times real, accuracy meaningless)")
    ap.add_argument("--train-limit", type=int, metavar="N",
                    help="train both engines on the first N training samples only (a part of "
                         "an epoch, for smoke tests; quote whole epochs)")
    ap.add_argument("--wgtrain", default=os.path.join(REPO, "target", "release", "wgtrain"),
                    help="the wgtrain binary (default target/release/wgtrain)")
    ap.add_argument("--json", metavar="FILE", help="also write every run's figures here")
    args = ap.parse_args()
    if args.epochs < 1 or args.rounds < 1 or args.threads < 1:
        ap.error("--epochs, --rounds and --threads must be at least 1")
    if args.train_limit is not None and args.train_limit < 1:
        ap.error("--train-limit must be at least 1")
    with tempfile.TemporaryDirectory(prefix="compare_cpu_torch.cifar.") as tmp:
        synthetic = False
        if args.cifar_dir is None and any(HYPER[p].data == "cifar10" for p in args.preset):
            print(f"writing a synthetic CIFAR-10 set (seeded random pixels and labels) to {tmp}",
                  flush=True)
            write_synthetic_cifar10(tmp, args.seed)
            args.cifar_dir, synthetic = tmp, True
        elif args.cifar_dir is not None:
            args.cifar_dir = os.path.abspath(args.cifar_dir)
        compare(ap, args, synthetic)


def compare(ap, args, synthetic_cifar: bool):
    args.data_dir = os.path.abspath(args.data_dir)
    if not os.path.isfile(args.wgtrain):
        ap.error(f"no wgtrain binary at {args.wgtrain} (cargo build --release)")

    torch.set_num_threads(args.threads)
    threads_flag = wgtrain_has_threads_flag(args.wgtrain)
    if not threads_flag:
        print(f"warning: `{args.wgtrain} train --help` shows no --threads; wgtrain runs with its "
              f"own default thread count, PyTorch with {args.threads}", file=sys.stderr)

    cache = {}

    cpu = cpu_model()
    commit = git_commit()
    load_start = loadavg()
    print(f"CPU {cpu}, {os.cpu_count()} logical CPUs, {args.threads} threads, "
          f"torch {torch.__version__}, wgtrain {commit}, load average {load_start}", flush=True)

    results = {}
    for preset in args.preset:
        hp = HYPER[preset]
        data = load_data(args, hp, cache)
        runs = {"wgtrain": [], "torch": []}
        for r in range(args.rounds):
            order = ["wgtrain", "torch"] if r % 2 == 0 else ["torch", "wgtrain"]
            for engine in order:
                run = (run_wgtrain(args, preset, hp, threads_flag) if engine == "wgtrain"
                       else run_torch(args, preset, hp, data))
                runs[engine].append(run)
                print(f"{preset} round {r + 1} {engine:7s}: s/epoch "
                      + " ".join(f"{s:.2f}" for s in run.seconds)
                      + "  test acc " + " ".join(f"{100 * a:.2f}" for a in run.test_acc)
                      + f"  ({run.wall:.1f} s wall)", flush=True)
                time.sleep(0.5)  # let the other side's idle threads park before the next run
        results[preset] = runs

    load_end = loadavg()
    # wgtrain's device string may say how many threads it ran ("cpu (2 threads)").
    devices = {r.device for runs in results.values() for r in runs["wgtrain"]}
    seen = {int(m.group(1)) for d in devices for m in [re.search(r"(\d+) threads?\b", d)] if m}
    if threads_flag:
        wg_threads = str(args.threads)
        if seen and seen != {args.threads}:
            print(f"warning: wgtrain was asked for {args.threads} threads but reports "
                  f"{', '.join(sorted(devices))}", file=sys.stderr)
    else:
        wg_threads = f"{seen.pop()} (its default)" if len(seen) == 1 else "its default"
    print()
    print("| preset | engine | threads | epochs × runs | s / epoch (median) | epoch 1 s | "
          "test acc (final) | wgtrain ÷ PyTorch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    notes = []
    for preset, runs in results.items():
        wg, th = summarize(runs["wgtrain"]), summarize(runs["torch"])
        ratio = wg[0] / th[0]
        dev = runs["wgtrain"][0].device
        for name, threads, s, ratio_cell in [
            (f"wgtrain ({dev})" if dev else "wgtrain", wg_threads, wg, f"**{ratio:.2f}×**"),
            (f"PyTorch {torch.__version__}", str(args.threads), th, ""),
        ]:
            acc = fmt_acc(s[3])
            if synthetic_cifar and HYPER[preset].data == "cifar10":
                acc += " (synthetic data: meaningless)"
            print(f"| {preset} | {name} | {threads} | {args.epochs} × {args.rounds} | "
                  f"{s[0]:.2f} | {s[1]:.2f} | {acc} | {ratio_cell} |")
            if args.epochs > 1 and abs(s[1] / s[2] - 1) > 0.2:
                notes.append(f"{preset}, {name.split(' ')[0]}: epoch 1 took {s[1]:.2f} s against "
                             f"{s[2]:.2f} s (median) for the later epochs")
    print()
    plural = "s" if args.threads != 1 else ""
    print(f"CPU: {cpu} ({os.cpu_count()} logical CPUs); {args.threads} thread{plural}; "
          f"PyTorch {torch.__version__}; wgtrain {commit}; load average {load_start} at the start, "
          f"{load_end} at the end. Seconds: the training part of each epoch (no test pass), "
          f"median over every epoch of every run; runs alternated.")
    if args.train_limit:
        print(f"Note: both engines trained on the first {args.train_limit} training samples of "
              f"each set only: part of an epoch.")
    for preset, runs in results.items():
        wn = runs["wgtrain"][0].normalize
        tn = runs["torch"][0].normalize
        if wn and tn and max(abs(a - b) for a, b in zip(wn["mean"] + wn["std"],
                                                        tn["mean"] + tn["std"])) > 1e-5:
            notes.append(f"{preset}: the normalisation differs: wgtrain {wn}, PyTorch {tn}")
        if synthetic_cifar and HYPER[preset].data == "cifar10":
            notes.append(f"{preset}: trained on a synthetic CIFAR-10 set (seeded random pixels "
                         f"and labels in CIFAR-10's binary layout and sizes): the times are a "
                         f"CIFAR-10 epoch's, the accuracies meaningless (chance is 10%)")
    for n in notes:
        print(f"Note: {n}.")
    idle_cpus = (os.cpu_count() or 1) - args.threads
    busy = args.threads > 1 and load_start != "?" and float(load_start) > idle_cpus + 0.5
    if busy:
        print(f"Note: the machine was busy (load average {load_start} with {args.threads} of "
              f"{os.cpu_count()} CPUs asked for): PyTorch's OpenMP threads spin-wait for each "
              f"other and can be many times slower than with fewer threads; compare --threads 1 "
              f"too.")
    if not threads_flag:
        print("Note: this wgtrain has no --threads flag; it ran with its own default.")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "cpu": cpu, "logical_cpus": os.cpu_count(), "threads": args.threads,
                "wgtrain_threads_flag": threads_flag, "torch": torch.__version__,
                "wgtrain_commit": commit, "epochs": args.epochs, "rounds": args.rounds,
                "seed": args.seed, "loadavg": [load_start, load_end],
                "train_limit": args.train_limit, "synthetic_cifar10": synthetic_cifar,
                "presets": {p: {e: [vars(r) for r in rs] for e, rs in runs.items()}
                            for p, runs in results.items()},
            }, f, indent=2)


if __name__ == "__main__":
    main()
