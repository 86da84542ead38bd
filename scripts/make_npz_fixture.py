"""Write tests/fixtures/tiny.npz: a NumPy-written .npz for tests/sources.rs.

A real file made by numpy (np.savez_compressed: deflated zip members, .npy headers as numpy
writes them) so the reader is checked against numpy's own output, not only against the test's
encoder. 3 classes of 3x4x4 uint8 images, channels first: in class k, channel k is bright
(200..255) and the others dark (0..55); labels int64. 48 training and 12 test samples.

Run: /work/venv/bin/python scripts/make_npz_fixture.py
"""

import numpy as np

rng = np.random.default_rng(20)


def split(n):
    y = np.arange(n, dtype=np.int64) % 3
    x = rng.integers(0, 56, size=(n, 3, 4, 4), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, k] += 200
    return x, y


x_train, y_train = split(48)
x_test, y_test = split(12)
np.savez_compressed(
    "tests/fixtures/tiny.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test
)
print("wrote tests/fixtures/tiny.npz", x_train.shape, y_train.dtype)
