"""wgtrain from Python, notebook style: NumPy arrays in, a trained network out, its weights
into PyTorch. Run with `python python/examples/quickstart.py` after `pip install ./python`
(MNIST is found in MNIST_DIR or the cache, else downloaded and checked)."""

import numpy as np

import wgtrain

# %% The adapters wgpu sees (an empty list: training runs on the CPU engine).
for d in wgtrain.devices():
    print(f"[{d['index']}] {d['name']} ({d['backend']}, {d['device_type']})")

# %% Data: MNIST as NumPy arrays; any uint8 samples with integer labels would do.
x_train, y_train = wgtrain.Dataset.mnist("train").numpy()
x_test, y_test = wgtrain.Dataset.mnist("test").numpy()
print(x_train.shape, x_train.dtype, y_train[:10])
train = wgtrain.Dataset(x_train, y_train)
test = wgtrain.Dataset(x_test, y_test)

# %% A preset (or an arch string such as "784-128-10") and the CLI's options as keywords.
t = wgtrain.Trainer("lenet5", epochs=2, device="auto")
history = t.fit(
    train,
    test,
    on_epoch=lambda m: print(
        f"epoch {m['epoch']}: loss {m['train_loss']:.4f}, "
        f"test accuracy {100 * m['test_accuracy']:.2f}%, {m['seconds']:.1f} s"
    ),
)
print("trained on", t.device)
print("test:", t.evaluate(test))

# %% Predictions: class probabilities, float32 (N, 10).
probs = t.predict(x_test[:5])
print("predicted", probs.argmax(axis=1), "labels", y_test[:5])

# %% Files and PyTorch.
t.save("lenet5.safetensors")  # `wgtrain eval --model lenet5.safetensors` reads it too
again = wgtrain.Trainer.load("lenet5.safetensors")
assert np.array_equal(again.predict(x_test[:5]), probs)
sd = t.state_dict()  # {"layers.0.weight": (6, 1, 5, 5) float32, ...}
try:
    import torch

    m = wgtrain.torch_module("lenet5")
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        p = torch.softmax(m(torch.from_numpy(x_test[:5] / np.float32(255))), dim=1)
    print("torch agrees:", np.allclose(p.numpy(), probs, atol=1e-5))
except ImportError:
    print("(torch is not installed: skipping the PyTorch part)")
