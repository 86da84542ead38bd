"""The Python binding against the library and the CLI: the same weights as `wgtrain train`
bit for bit (CPU engine), every exception path, the GIL released while the engine works,
Ctrl-C, and the weights' round trip through PyTorch (skipped without torch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

import wgtrain

def same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == np.float32 and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), f"{k} differs"


# ------------------------------------------------------------------ the same run as the CLI


@pytest.mark.parametrize("preset", ["seed-small", "lenet5"])
def test_training_gives_the_cli_weights_bit_for_bit(cli, sample_dir, tmp_path, preset):
    out = tmp_path / "cli.safetensors"
    subprocess.run(
        [cli, "train", "--preset", preset, "--device", "cpu", "--data-dir", str(sample_dir),
         "--epochs", "2", "--batch-size", "50", "--max-steps", "60", "--seed", "7",
         "--out", str(out), "--quiet", "--checkpoint-every", "0"],
        check=True, capture_output=True,
    )
    t = wgtrain.Trainer(preset, device="cpu", epochs=2, batch_size=50, max_steps=60, seed=7)
    train = wgtrain.Dataset.load_dir(sample_dir, "train")
    history = t.fit(train, wgtrain.Dataset.load_dir(sample_dir, "test"))
    assert [h["epoch"] for h in history] == [1, 2]
    same_weights(t.state_dict(), wgtrain.Trainer.load(out).state_dict())

    # The same samples handed over as NumPy arrays train to the same weights.
    x, y = train.numpy()
    u = wgtrain.Trainer(preset, device="cpu", epochs=2, batch_size=50, max_steps=60, seed=7)
    u.fit(wgtrain.Dataset(x.reshape(len(x), -1), y.astype(np.int32)))
    same_weights(u.state_dict(), t.state_dict())


def test_augment_and_normalize_keywords_give_the_cli_weights_bit_for_bit(cli, sample_dir, tmp_path):
    out = tmp_path / "cli.safetensors"
    subprocess.run(
        [cli, "train", "--preset", "lenet5", "--device", "cpu", "--data-dir", str(sample_dir),
         "--epochs", "1", "--batch-size", "50", "--max-steps", "20", "--seed", "3",
         "--augment", "crop:2,flip", "--normalize", "auto",
         "--out", str(out), "--quiet", "--checkpoint-every", "0"],
        check=True, capture_output=True,
    )
    t = wgtrain.Trainer("lenet5", device="cpu", epochs=1, batch_size=50, max_steps=20, seed=3,
                        augment="crop:2,flip", normalize="auto")
    t.fit(wgtrain.Dataset.load_dir(sample_dir, "train"))
    same_weights(t.state_dict(), wgtrain.Trainer.load(out).state_dict())
    # Without them the run differs: the keywords reached the engine.
    u = wgtrain.Trainer("lenet5", device="cpu", epochs=1, batch_size=50, max_steps=20, seed=3)
    u.fit(wgtrain.Dataset.load_dir(sample_dir, "train"))
    first = sorted(t.state_dict())[0]
    assert not np.array_equal(u.state_dict()[first], t.state_dict()[first])


def test_fit_evaluate_predict_save_load(train_set, test_set, tmp_path):
    seen = []
    t = wgtrain.Trainer("784-32-10", device="cpu", epochs=2, batch_size=100)
    history = t.fit(train_set, test_set, on_epoch=seen.append)
    assert seen == history and len(history) == 2
    assert set(history[0]) == {"epoch", "train_loss", "train_accuracy", "test_loss",
                               "test_accuracy", "seconds", "images_per_second"}
    e = t.evaluate()
    assert e["n"] == len(test_set) == 1000
    assert e["accuracy"] == pytest.approx(history[-1]["test_accuracy"])
    assert e["accuracy"] > 0.7, e
    # A dataset the trainer does not hold is uploaded for the call.
    other = wgtrain.Dataset(*[a[:300] for a in test_set.numpy()])
    assert t.evaluate(other)["n"] == 300
    assert t.evaluate(train_set)["n"] == 2000

    x, y = test_set.numpy()
    p = t.predict(x[:7])
    assert p.dtype == np.float32 and p.shape == (7, 10)
    assert np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(p, t.predict((x[:7] / 255).astype(np.float32)))

    path = tmp_path / "m.safetensors"
    t.save(path)
    u = wgtrain.Trainer.load(path, device="cpu")
    assert u.arch == "784-32-10" and u.config["epochs"] == 2
    assert np.array_equal(u.predict(x[:7]), p)
    same_weights(u.state_dict(), t.state_dict())


def test_on_epoch_returning_false_stops_and_fit_goes_on(train_set):
    t = wgtrain.Trainer("seed-small", device="cpu", epochs=3)
    assert len(t.fit(train_set, on_epoch=lambda m: False)) == 1
    assert t.position == (1, 0)
    assert len(t.fit(train_set)) == 3
    assert t.position == (3, 0)


def test_presets_and_devices():
    assert wgtrain.presets() == ["seed-small", "seed-large", "lenet5", "cnn", "fashion", "resnet8"]
    for d in wgtrain.devices():
        assert {"index", "name", "backend", "device_type", "limits"} <= set(d)


def test_verify_on_the_cpu_engine_passes():
    r = wgtrain.verify("cpu", families=["softmax_xent"], seed=3)
    assert r["seed"] == 3 and r["failed"] == 0 and r["passed"] > 0, r
    assert {c["family"] for c in r["checks"]} == {"softmax_xent"}
    with pytest.raises(ValueError, match="unknown kernel family"):
        wgtrain.verify("cpu", families=["softmax"])
    with pytest.raises(ValueError, match="argument device"):
        wgtrain.verify("tpu")


# ------------------------------------------------------------------ errors


def test_dataset_errors_name_the_argument_and_both_shapes():
    x = np.zeros((4, 28, 28), np.uint8)
    with pytest.raises(ValueError, match=r"x has dtype float64 \(shape \(4, 28, 28\)\)"):
        wgtrain.Dataset(x.astype(np.float64), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"x holds NaN at flat index 0"):
        wgtrain.Dataset(np.full((4, 3), np.nan, np.float32), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"y has shape \(3,\) but x has shape \(4, 28, 28\)"):
        wgtrain.Dataset(x, np.zeros(3, int))
    with pytest.raises(ValueError, match=r"y has shape \(4, 1\) but x has shape"):
        wgtrain.Dataset(x, np.zeros((4, 1), int))
    with pytest.raises(ValueError, match=r"y has dtype float64"):
        wgtrain.Dataset(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"y\[2\] is -1"):
        wgtrain.Dataset(x, np.array([0, 1, -1, 2]))
    with pytest.raises(ValueError, match=r"y\[0\] is 4294967296"):
        wgtrain.Dataset(x, np.array([2**32, 1, 1, 2]))
    with pytest.raises(ValueError, match=r"x has shape \(4,\)"):
        wgtrain.Dataset(np.zeros(4, np.uint8), np.zeros(4, int))
    with pytest.raises(ValueError, match="split"):
        wgtrain.Dataset.mnist("validation")


def test_setting_errors_are_value_errors_worded_with_keywords():
    with pytest.raises(ValueError, match="argument arch"):
        wgtrain.Trainer("784-x-10")
    with pytest.raises(ValueError, match="keyword lr"):
        wgtrain.Trainer("seed-small", lr=-1.0)
    with pytest.raises(ValueError, match="keyword batch_size"):
        wgtrain.Trainer("seed-small", batch_size=0)
    with pytest.raises(ValueError, match="keyword optimizer"):
        wgtrain.Trainer("seed-small", optimizer="rmsprop")
    with pytest.raises(ValueError, match="keyword lr_schedule"):
        wgtrain.Trainer("seed-small", lr_schedule="sawtooth")
    with pytest.raises(ValueError, match="keyword nesterov"):
        wgtrain.Trainer("seed-small", optimizer="adam", nesterov=True)
    with pytest.raises(ValueError, match="keyword weight_decay"):
        wgtrain.Trainer("seed-small", weight_decay=0.1)  # SGD decays through l2
    with pytest.raises(ValueError, match="keyword label_smoothing"):
        wgtrain.Trainer("seed-small", label_smoothing=2.0)
    with pytest.raises(ValueError, match="keyword normalize"):
        wgtrain.Trainer("seed-small", normalize="sometimes")
    with pytest.raises(ValueError, match="keyword augment"):
        wgtrain.Trainer("seed-small", augment="rotate:90")
    with pytest.raises(ValueError, match="keyword device"):
        wgtrain.Trainer("seed-small", device="tpu")
    with pytest.raises(ValueError, match="keyword threads"):
        wgtrain.Trainer("seed-small", threads=0)
    with pytest.raises(TypeError, match="unexpected keyword batch"):
        wgtrain.Trainer("seed-small", batch=10)
    with pytest.raises(TypeError, match="keyword epochs must be"):
        wgtrain.Trainer("seed-small", epochs="two")


def test_data_that_does_not_fit_the_network_is_a_value_error(train_set):
    small = wgtrain.Dataset(np.zeros((10, 2, 2), np.uint8), np.zeros(10, int))
    with pytest.raises(ValueError, match="training"):
        wgtrain.Trainer("seed-small", device="cpu").fit(small)
    many = wgtrain.Dataset(np.zeros((10, 784), np.uint8), np.arange(10) + 5)
    with pytest.raises(ValueError, match="14"):
        wgtrain.Trainer("seed-small", device="cpu").fit(many)
    t = wgtrain.Trainer("seed-small", device="cpu")
    with pytest.raises(ValueError, match=r"x has shape \(3, 10\)"):
        t.predict(np.zeros((3, 10), np.uint8))
    with pytest.raises(ValueError, match="x has dtype int64"):
        t.predict(np.zeros((3, 784), np.int64))
    with pytest.raises(ValueError, match="needs a dataset"):
        t.evaluate()


def test_file_errors_are_os_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        wgtrain.Trainer.load(tmp_path / "nothing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(OSError, match="junk.safetensors"):
        wgtrain.Trainer.load(junk)
    with pytest.raises(OSError, match="lacks"):
        wgtrain.Dataset.load_dir(tmp_path)
    with pytest.raises(OSError):
        wgtrain.Trainer.resume(junk)


def test_divergence_raises_training_diverged(train_set):
    t = wgtrain.Trainer("seed-small", device="cpu", lr=1e9, epochs=1)
    with pytest.raises(wgtrain.TrainingDiverged, match="keyword lr") as e:
        t.fit(train_set)
    assert isinstance(e.value, RuntimeError)


def test_a_missing_adapter_is_a_device_error():
    t = wgtrain.Trainer("seed-small", device="gpu", adapter="no adapter has this name")
    with pytest.raises(wgtrain.DeviceError, match="no adapter has this name") as e:
        t.predict(np.zeros((1, 784), np.uint8))
    assert isinstance(e.value, RuntimeError)


def test_bad_state_dicts_are_value_errors():
    sd = wgtrain.Trainer("seed-small").state_dict()
    bad = dict(sd, **{"layers.0.weight": np.zeros((10, 783), np.float32)})
    with pytest.raises(ValueError, match=r"layers.0.weight.*\[10, 783\]"):
        wgtrain.Trainer.from_state_dict("seed-small", bad)
    missing = {k: v for k, v in sd.items() if k != "layers.2.bias"}
    with pytest.raises(ValueError, match="layers.2.bias"):
        wgtrain.Trainer.from_state_dict("seed-small", missing)
    extra = dict(sd, **{"head.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="head.weight"):
        wgtrain.Trainer.from_state_dict("seed-small", extra)
    nan = dict(sd, **{"layers.1.bias": np.full(10, np.nan, np.float32)})
    with pytest.raises(ValueError, match="layers.1.bias"):
        wgtrain.Trainer.from_state_dict("seed-small", nan)
    u = wgtrain.Trainer.from_state_dict("seed-small", sd)
    same_weights(u.state_dict(), sd)


# ------------------------------------------------------------------ threads and signals


class FakeTqdm:
    """Stands in for `tqdm.auto.tqdm`: `fit(progress=True)` calls `refresh` after every chunk,
    which lets a test act between chunks."""

    on_refresh = None

    def __init__(self, **kw):
        self.n, self.total, self.refreshes = 0, None, 0

    def refresh(self):
        self.refreshes += 1
        if FakeTqdm.on_refresh:
            FakeTqdm.on_refresh(self)

    def close(self):
        pass


@pytest.fixture
def fake_tqdm(monkeypatch):
    mod = types.ModuleType("tqdm")
    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = FakeTqdm
    mod.auto = auto
    monkeypatch.setitem(sys.modules, "tqdm", mod)
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    yield FakeTqdm
    FakeTqdm.on_refresh = None


def test_the_gil_is_released_while_a_chunk_trains(train_set, fake_tqdm):
    # With a 100 s switch interval no thread takes the GIL from another: the main thread runs
    # during the second chunk only if `fit` (in the other thread) lets go of it.
    old = sys.getswitchinterval()
    sys.setswitchinterval(100)
    first, second = threading.Event(), threading.Event()
    count = [0]
    seen_at_second = []

    def on_refresh(bar):
        if bar.refreshes == 1:
            first.set()
        elif bar.refreshes == 2:
            seen_at_second.append(count[0])
            second.set()

    fake_tqdm.on_refresh = on_refresh
    t = wgtrain.Trainer("seed-large", device="cpu", epochs=1, max_steps=2 * wgtrain.CHUNK,
                        batch_size=20)
    worker = threading.Thread(target=lambda: t.fit(train_set, progress=True))
    try:
        worker.start()
        first.wait()
        # Each wait lets go of the GIL, so the worker can take it back when its chunk ends.
        while not second.wait(0.001):
            count[0] += 1
        worker.join()
    finally:
        sys.setswitchinterval(old)
    assert seen_at_second and seen_at_second[0] > 0, seen_at_second


def test_ctrl_c_raises_keyboard_interrupt_within_a_chunk_and_resumes(train_set, tmp_path):
    kw = dict(device="cpu", epochs=1, batch_size=10, seed=3)
    whole = wgtrain.Trainer("seed-small", **kw)
    whole.fit(train_set)
    chunk = wgtrain.CHUNK
    assert len(train_set) // 10 == 4 * chunk

    # A SIGINT sent to the process by another thread, which (with a 100 s switch interval) runs
    # only once `fit` lets go of the GIL: while the engine is made or the first chunk trains.
    # No Python code runs between chunks here (no callback, no bar): only the binding's own
    # signal check can raise the interrupt before the run ends.
    old = sys.getswitchinterval()
    sys.setswitchinterval(100)
    started = threading.Event()
    killer = threading.Thread(
        target=lambda: (started.wait(), os.kill(os.getpid(), signal.SIGINT))
    )
    ckpt = tmp_path / "run.ckpt.safetensors"
    t = wgtrain.Trainer("seed-small", checkpoint=ckpt, **kw)
    try:
        killer.start()
        with pytest.raises(KeyboardInterrupt):
            started.set()
            t.fit(train_set)
    finally:
        sys.setswitchinterval(old)
        killer.join()
    epoch, step = t.position
    assert epoch == 0 and step in (0, chunk), t.position
    assert ckpt.exists()

    # The checkpoint resumes to the uninterrupted run's weights, and so does `fit` again.
    r = wgtrain.Trainer.resume(ckpt, device="cpu")
    assert r.position == (0, step)
    r.fit(train_set)
    same_weights(r.state_dict(), whole.state_dict())
    t.fit(train_set)
    same_weights(t.state_dict(), whole.state_dict())


# ------------------------------------------------------------------ PyTorch


@pytest.mark.parametrize(
    "arch",
    [
        "seed-small",
        "lenet5",
        "1x28x28-c4k3s2p1-a2-g-10",
        # Residual blocks: identity ones, and with BatchNorm an identity and a projected one
        # (torch's 0-d num_batches_tracked comes back through from_state_dict).
        "1x28x28-c4k3s2p1-r(c4k3p1-c4k3p1)-r(c4k1)-g-10",
        "1x28x28-c4k3s2p1-b-r(c4k3p1-b-c4k3p1-b)-r(c8k3s2p1-b-c8k3p1-b)-g-10",
    ],
)
def test_state_dict_round_trips_through_torch(arch, train_set, test_set):
    torch = pytest.importorskip("torch")  # not installed in CI (too large): skipped there
    t = wgtrain.Trainer(arch, device="cpu", epochs=1, max_steps=20)
    t.fit(train_set)
    m = wgtrain.torch_module(arch)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in t.state_dict().items()}, strict=True)
    m.eval()  # BatchNorm's running statistics, as predict uses them
    x, _ = test_set.numpy()
    x = x[:16]
    with torch.no_grad():
        theirs = torch.softmax(m(torch.from_numpy(x.astype(np.float32) / 255)), dim=1).numpy()
    assert np.allclose(t.predict(x), theirs, atol=2e-5), np.abs(t.predict(x) - theirs).max()
    u = wgtrain.Trainer.from_state_dict(arch, m.state_dict(), device="cpu")
    same_weights(u.state_dict(), t.state_dict())
