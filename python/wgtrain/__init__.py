"""wgtrain: train neural networks on any GPU (wgpu) or a fast CPU engine, from NumPy arrays.

The engine is Rust (the ``wgtrain`` crate); this package is a thin binding over its
embeddable API, so training here gives the same weights as ``wgtrain train`` with the same
seed. Quick start::

    import wgtrain
    t = wgtrain.Trainer("lenet5", epochs=2)              # a preset or an arch string
    history = t.fit(wgtrain.Dataset.mnist("train"), wgtrain.Dataset.mnist("test"))
    t.evaluate()                                        # {"loss": ..., "accuracy": ..., "n": ...}
    sd = t.state_dict()                                 # PyTorch names and layouts

Errors: ``ValueError`` for bad arguments, ``OSError`` for files, ``TrainingDiverged`` and
``DeviceError`` (both ``RuntimeError``) for the rest; Ctrl-C raises ``KeyboardInterrupt``
within one chunk of steps.
"""

from __future__ import annotations

from typing import Any

from ._wgtrain import (
    CHUNK,
    Dataset,
    DeviceError,
    Trainer,
    TrainingDiverged,
    _torch_plan,
    devices,
    presets,
    verify,
)

__all__ = [
    "CHUNK",
    "Dataset",
    "DeviceError",
    "Trainer",
    "TrainingDiverged",
    "devices",
    "presets",
    "torch_module",
    "verify",
]

__version__ = "0.1.0"


def torch_module(arch: str) -> Any:
    """The ``torch.nn.Module`` of ``arch`` (a preset or an architecture string) whose
    ``state_dict`` has wgtrain's names and layouts, so ``Trainer.state_dict()`` loads into it
    with ``load_state_dict(..., strict=True)`` and ``Trainer.from_state_dict(arch, m.state_dict())``
    starts from its weights. It computes what wgtrain's network computes: ReLU after every
    convolution and every dense layer but the last, which gives the class scores (logits; apply
    softmax for wgtrain's ``predict`` probabilities); inputs are pixels / 255, images
    ``(N, C, H, W)`` (flat inputs are reshaped). Residual blocks (``r(...)``) add their input
    (or its projection) before the block's ReLU, as torchvision's ``BasicBlock``; call
    ``.eval()`` before comparing with ``predict`` when the net has BatchNorm or dropout.
    Imports torch, which must be installed.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    input_shape, plan = _torch_plan(arch)

    class WgtrainNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.arch = arch
            self.input_shape = tuple(input_shape)
            self.plan = list(plan)
            mods = []
            for step in self.plan:
                if step[0] == "dense":
                    mods.append(nn.Linear(step[1], step[2]))
                elif step[0] == "conv":
                    _, cin, out, k, stride, pad, _relu = step
                    mods.append(nn.Conv2d(cin, out, k, stride=stride, padding=pad))
                elif step[0] == "batchnorm":
                    _, channels, image, eps, momentum, _relu = step
                    bn = nn.BatchNorm2d if image else nn.BatchNorm1d
                    mods.append(bn(channels, eps=eps, momentum=momentum))
            self.layers = nn.ModuleList(mods)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(x.shape[0], *self.input_shape)
            i = 0
            # A residual block's input, and its main path's output while a projection runs.
            skip = main = None
            for step in self.plan:
                kind = step[0]
                if kind == "block_in":
                    skip, main = x, None
                elif kind == "main_out":
                    main, x = x, skip
                elif kind == "join":
                    x = main + x if main is not None else x + skip
                    if step[1]:
                        x = F.relu(x)
                elif kind in ("dense", "conv", "batchnorm"):
                    x = self.layers[i](x)
                    i += 1
                    if step[-1]:
                        x = F.relu(x)
                elif kind == "maxpool":
                    x = F.max_pool2d(x, step[1])
                elif kind == "avgpool":
                    x = F.avg_pool2d(x, step[1])
                elif kind == "global":
                    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
                elif kind == "flatten":
                    x = x.flatten(1)
                elif kind == "dropout":
                    x = F.dropout(x, step[1], self.training)
            return x

    return WgtrainNet()
