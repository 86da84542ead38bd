"""Write tests/fixtures/tiny_normalize.json: numpy's per-channel mean and standard deviation of
tests/fixtures/tiny.npz's training images, for tests/normalize.rs (`--normalize auto` must
compute the same).

As wgtrain defines `auto`: the bytes scaled to [0, 1] as float32 (x / 255), then per channel
(axis 1 of the channels-first N x C x H x W array) the mean and the population standard
deviation (ddof 0), in float64.

Run: /work/venv/bin/python scripts/make_normalize_fixture.py
"""

import json

import numpy as np

with np.load("tests/fixtures/tiny.npz") as f:
    x = f["x_train"]
v = (x.astype(np.float32) / np.float32(255)).astype(np.float64)
mean = v.mean(axis=(0, 2, 3))
std = v.std(axis=(0, 2, 3), ddof=0)
out = {"source": "tests/fixtures/tiny.npz x_train", "shape": list(x.shape),
       "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
with open("tests/fixtures/tiny_normalize.json", "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote tests/fixtures/tiny_normalize.json", out)
