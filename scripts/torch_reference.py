"""PyTorch reference for wgtrain: architectures, MNIST IDX loading, optimisers.

Shared by calibrate_torch.py and make_conv_fixture.py. It follows wgtrain's conventions:

* input pixels are bytes / 255 as f32, images NCHW [B, C, H, W];
* every convolution and every dense layer but the last is followed by ReLU;
  `m{k}` is MaxPool2d(k) and `a{k}` AvgPool2d(k) (stride k, floor), `g` is global average
  pooling (AdaptiveAvgPool2d(1) then a flatten: C values); a flatten (C, H, W order) comes
  before the first dense layer;
* `r(...)` is a residual block (torchvision's BasicBlock): the layers inside are the main
  path, whose output is added to the block's input before the block's ReLU; the main path's
  last layer has no ReLU of its own; when the main path changes the shape, the input is
  projected by a 1x1 convolution with the block's stride (the product of its convolutions'
  strides) and a BatchNorm2d (ResNet's option B); blocks do not nest;
* `b` is BatchNorm2d after a convolution, BatchNorm1d after a dense layer (momentum 0.1,
  eps 1e-5), and takes over the ReLU of the layer before it (conv -> BN -> ReLU); `d{p}` is
  Dropout(p);
* loss is the mean cross-entropy over the minibatch;
* weight decay (L2, lambda) applies to weights only, never to biases;
* SGD is torch.optim.SGD(momentum, dampening 0, nesterov False);
  Adam is torch.optim.Adam(betas (0.9, 0.999), eps 1e-8, foreach=False);
* parameters are named `layers.{i}.weight|bias`, i counting only the layers with parameters,
  exactly like wgtrain's safetensors model files.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "seed-small": "784-10-10-10",
    "seed-large": "784-512-512-512-10",
    "lenet5": "1x28x28-c6k5p2-m2-c16k5-m2-120-84-10",
    "cnn": "1x28x28-c32k5p2-m2-c64k5p2-m2-1024-10",
    "fashion": "1x28x28-c32k3p1-b-c32k3p1-b-m2-c64k3p1-b-c64k3p1-b-m2-d0.25-256-b-d0.5-10",
    "resnet8": "3x32x32-c16k3p1-b-r(c16k3p1-b-c16k3p1-b)-r(c32k3s2p1-b-c32k3p1-b)"
    "-r(c64k3s2p1-b-c64k3p1-b)-g-10",
}


@dataclass
class Dense:
    out: int


@dataclass
class Conv:
    out: int
    k: int
    stride: int = 1
    pad: int = 0


@dataclass
class Pool:
    k: int
    avg: bool = False


@dataclass
class GlobalPool:
    pass


@dataclass
class BatchNorm:
    pass


@dataclass
class Dropout:
    p: float


@dataclass
class Residual:
    main: list  # the main path's layer specs


def _split_top(s: str) -> list[str]:
    """Split on `-` and `,` outside parentheses."""
    toks, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{s}: `)` without `(`")
        if ch in "-," and depth == 0:
            toks.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if depth:
        raise ValueError(f"{s}: `(` without `)`")
    toks.append(cur.strip())
    return toks


_CONV = re.compile(r"^c(\d+)k(\d+)((?:[sp]\d+)*)$")


def _parse_layer(tok: str):
    if tok.startswith("r(") and tok.endswith(")"):
        inner = [_parse_layer(t) for t in _split_top(tok[2:-1])]
        if not inner or any(isinstance(t, Residual) for t in inner):
            raise ValueError(f"`{tok}`: a block holds one or more layers and no block")
        return Residual(inner)
    if tok.isdigit():
        return Dense(int(tok))
    m = re.fullmatch(r"([ma])(\d+)", tok)
    if m:
        return Pool(int(m.group(2)), avg=m.group(1) == "a")
    if tok == "g":
        return GlobalPool()
    if tok == "b":
        return BatchNorm()
    m = re.fullmatch(r"d(\d*\.?\d*)", tok)
    if m and m.group(1) not in ("", "."):
        return Dropout(float(m.group(1)))
    m = _CONV.match(tok)
    if m:
        opts = {}
        for tag, v in re.findall(r"([sp])(\d+)", m.group(3)):
            if tag in opts:
                raise ValueError(f"`{tok}`: `{tag}` given twice")
            opts[tag] = int(v)
        return Conv(int(m.group(1)), int(m.group(2)), opts.get("s", 1), opts.get("p", 0))
    raise ValueError(f"`{tok}` is not a layer (like 512, c32k5p2, m2, a2, g)")


def parse_arch(s: str):
    """Parse an architecture string -> (input shape tuple, list of layer specs).

    The input is `784` (flat, shape (784,)) or `1x28x28` (C, H, W).
    """
    s = PRESETS.get(s, s)
    toks = _split_top(s)
    if len(toks) > 1 and toks[0].count("x") == 2:
        c, h, w = (int(d) for d in toks[0].split("x"))
        inp = (c, h, w)
        rest = toks[1:]
    else:
        toks = [t.strip() for t in re.split(r"[-,x]", s)]
        inp = (int(toks[0]),)
        rest = toks[1:]
    layers = [_parse_layer(t) for t in rest]
    if not layers or not isinstance(layers[-1], Dense):
        raise ValueError(f"{s}: the last layer must be dense")
    return inp, layers


class Net(nn.Module):
    """A network from an architecture string; parameters live in `self.layers` (only the
    layers with parameters), so state_dict keys are `layers.{i}.weight|bias` (and a
    BatchNorm's `layers.{i}.running_mean|running_var|num_batches_tracked`)."""

    def __init__(self, arch: str):
        super().__init__()
        self.arch = PRESETS.get(arch, arch)
        self.input_shape, self.specs = parse_arch(self.arch)
        self._mods = []
        # ("conv", idx, relu) | ("bn", idx, relu) | ("dropout", p) | ("pool", k) |
        # ("avgpool", k) | ("gap",) | ("flatten",) | ("dense", idx, relu) |
        # ("block", main plan, projection (conv idx, bn idx) or None)
        self.plan, _ = self._build(self.specs, self.input_shape, last_relu=False)
        self.layers = nn.ModuleList(self._mods)
        del self._mods

    @staticmethod
    def _relu_flags(specs, last_relu: bool):
        """Whether a ReLU follows each layer: after every conv and dense layer, moved after a
        BatchNorm that follows one; the last layer's is `last_relu`."""
        relu = []
        for i, spec in enumerate(specs):
            nxt = specs[i + 1] if i + 1 < len(specs) else None
            if isinstance(spec, BatchNorm):
                own = i > 0 and isinstance(specs[i - 1], (Conv, Dense))
            else:
                own = isinstance(spec, (Conv, Dense)) and not isinstance(nxt, BatchNorm)
            relu.append(own and (nxt is not None or last_relu))
        return relu

    def _add(self, mod) -> int:
        self._mods.append(mod)
        return len(self._mods) - 1

    def _build(self, specs, shape, last_relu: bool):
        relu = self._relu_flags(specs, last_relu)
        plan = []
        for i, spec in enumerate(specs):
            if isinstance(spec, Conv):
                if len(shape) != 3:
                    raise ValueError(f"{self.arch}: convolution on a flat input")
                c, h, w = shape
                idx = self._add(nn.Conv2d(c, spec.out, spec.k, stride=spec.stride, padding=spec.pad))
                plan.append(("conv", idx, relu[i]))
                side = lambda n: (n + 2 * spec.pad - spec.k) // spec.stride + 1  # noqa: E731
                shape = (spec.out, side(h), side(w))
            elif isinstance(spec, Pool):
                if len(shape) != 3:
                    raise ValueError(f"{self.arch}: pooling on a flat input")
                c, h, w = shape
                plan.append(("avgpool" if spec.avg else "pool", spec.k))
                shape = (c, h // spec.k, w // spec.k)
            elif isinstance(spec, GlobalPool):
                if len(shape) != 3:
                    raise ValueError(f"{self.arch}: global pooling on a flat input")
                plan.append(("gap",))
                shape = (shape[0],)
            elif isinstance(spec, BatchNorm):
                bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
                plan.append(("bn", self._add(bn(shape[0], eps=1e-5, momentum=0.1)), relu[i]))
            elif isinstance(spec, Dropout):
                plan.append(("dropout", spec.p))
            elif isinstance(spec, Residual):
                if len(shape) != 3:
                    raise ValueError(f"{self.arch}: a residual block on a flat input")
                main, out = self._build(spec.main, shape, last_relu=False)
                stride = 1
                for t in spec.main:
                    if isinstance(t, Conv):
                        stride *= t.stride
                proj = None
                if out != shape:
                    conv = self._add(nn.Conv2d(shape[0], out[0], 1, stride=stride))
                    bn = self._add(nn.BatchNorm2d(out[0], eps=1e-5, momentum=0.1))
                    proj = (conv, bn)
                    c, h, w = shape
                    if (out[1], out[2]) != ((h - 1) // stride + 1, (w - 1) // stride + 1):
                        raise ValueError(f"{self.arch}: the projection does not match the block")
                plan.append(("block", main, proj))
                shape = out
            else:
                if len(shape) == 3:
                    plan.append(("flatten",))
                    shape = (shape[0] * shape[1] * shape[2],)
                plan.append(("dense", self._add(nn.Linear(shape[0], spec.out)), relu[i]))
                shape = (spec.out,)
        return plan, shape

    def _run(self, plan, x: torch.Tensor) -> torch.Tensor:
        for step in plan:
            kind = step[0]
            if kind in ("conv", "bn", "dense"):
                x = self.layers[step[1]](x)
                if step[2]:
                    x = F.relu(x)
            elif kind == "dropout":
                x = F.dropout(x, step[1], self.training)
            elif kind == "pool":
                x = F.max_pool2d(x, step[1])
            elif kind == "avgpool":
                x = F.avg_pool2d(x, step[1])
            elif kind == "gap":
                x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            elif kind == "flatten":
                x = x.flatten(1)
            else:  # a residual block
                y = self._run(step[1], x)
                skip = x if step[2] is None else self.layers[step[2][1]](self.layers[step[2][0]](x))
                x = F.relu(y + skip)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.plan, x.reshape(x.shape[0], *self.input_shape))


def param_groups(model: nn.Module, l2: float):
    """Weights get weight decay `l2`, biases none."""
    weights = [p for n, p in model.named_parameters() if n.endswith(".weight")]
    biases = [p for n, p in model.named_parameters() if not n.endswith(".weight")]
    return [
        {"params": weights, "weight_decay": l2},
        {"params": biases, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, name: str, lr: float, momentum: float = 0.9, l2: float = 0.0):
    groups = param_groups(model, l2)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=0.0, nesterov=False)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    raise ValueError(f"unknown optimizer {name!r} (sgd or adam)")


# ---------------------------------------------------------------- MNIST IDX files


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a numpy array of its stored type."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    dt = np.dtype(dtypes[data[2]])
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    n = int(np.prod(dims))
    arr = np.frombuffer(data, dtype=dt, count=n, offset=off)
    return arr.reshape(dims)


def _find(data_dir: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        p = os.path.join(data_dir, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"no {stem}[.gz] in {data_dir}")


def load_mnist(data_dir: str):
    """-> (train_x u8 [60000,28,28], train_y int64, test_x u8, test_y int64)."""
    tx = read_idx(_find(data_dir, "train-images-idx3-ubyte"))
    ty = read_idx(_find(data_dir, "train-labels-idx1-ubyte"))
    vx = read_idx(_find(data_dir, "t10k-images-idx3-ubyte"))
    vy = read_idx(_find(data_dir, "t10k-labels-idx1-ubyte"))
    return tx, ty.astype(np.int64), vx, vy.astype(np.int64)


def to_input(x_bytes) -> torch.Tensor:
    """Bytes (any integer or float array of 0..255) -> f32 tensor of pixels / 255, flat per sample."""
    t = torch.as_tensor(np.asarray(x_bytes), dtype=torch.float32)
    return (t / 255.0).reshape(t.shape[0], -1)
