#!/usr/bin/env python3
"""Time to the first step of `wgtrain train` on the GPU, cold and warm, binaries side by side.

Seconds from process start to the 'training ...' line (printed when the engine is ready for
its first step), cold (a fresh cache folder: no autotune choices) and warm (the same folder
again, after the cold run finished), for each binary, alternating. Prints medians.

Usage: scripts/cold_start.py RUNS PRESET BIN [BIN ...]
Environment: MNIST_DIR (default ../shared/datasets/mnist), XDG_RUNTIME_DIR as for any run.
"""
import os, subprocess, sys, tempfile, time, statistics
runs, preset, bins = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
res = {(b, m): [] for b in bins for m in ("cold", "warm")}
for r in range(runs):
    for b in bins:
        d = tempfile.mkdtemp()
        for mode in ("cold", "warm"):
            env = dict(os.environ, WGTRAIN_CACHE_DIR=d)
            t0 = time.monotonic()
            p = subprocess.Popen([b, "train", "--device", "gpu", "--backend", "vulkan", "--preset", preset,
                                  "--max-steps", "60", "--data-dir", os.environ.get("MNIST_DIR", "../shared/datasets/mnist"),
                                  "--out", d + "/m.safetensors"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
            for line in p.stderr:
                if line.startswith("training "):
                    res[(b, mode)].append(time.monotonic() - t0)
                    break
            if mode == "cold":
                p.wait()  # the cold run tunes (blocking or in the background) and caches
            else:
                p.kill(); p.wait()
for (b, m), v in res.items():
    print(f"{preset} {m:4s} {b}: median {statistics.median(v):.2f} s  runs {[round(x,2) for x in v]}")
