"""Type stubs for wgtrain (the Rust extension wgtrain._wgtrain and the Python helpers)."""

from os import PathLike
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
CHUNK: int
"""Steps per chunk: training releases the GIL for one chunk at a time, and Ctrl-C, the
progress bar and `on_epoch` are handled between chunks."""

_Path = Union[str, "PathLike[str]"]
Metrics = Dict[str, float]
"""One epoch: epoch, train_loss, train_accuracy, test_loss, test_accuracy, seconds,
images_per_second."""

class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (a smaller `lr` usually helps)."""

class DeviceError(RuntimeError):
    """The GPU or the engine failed: no adapter, an adapter limit, a kernel or device error."""

class Dataset:
    """Labelled samples held in memory: uint8 or float32 samples on the first axis (images
    channels first), integer labels."""

    def __init__(self, x: npt.ArrayLike, y: npt.ArrayLike) -> None: ...
    @staticmethod
    def mnist(split: str = "train") -> "Dataset":
        """MNIST's "train" or "test" split (MNIST_DIR, the cache, else a checked download)."""
    @staticmethod
    def load_dir(path: _Path, split: str = "train") -> "Dataset":
        """One split of a folder holding the four MNIST-format IDX files."""
    def __len__(self) -> int: ...
    @property
    def sample_shape(self) -> List[int]: ...
    @property
    def classes(self) -> int: ...
    def numpy(self) -> Tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]: ...

class Trainer:
    """A network and its training settings on one device."""

    def __init__(
        self,
        arch: str = "seed-large",
        *,
        epochs: Optional[int] = None,
        device: str = "auto",
        optimizer: Optional[str] = None,
        lr: Optional[float] = None,
        momentum: Optional[float] = None,
        l2: Optional[float] = None,
        batch_size: Optional[int] = None,
        max_steps: Optional[int] = None,
        seed: Optional[int] = None,
        lr_schedule: Optional[str] = None,
        shuffle: Optional[bool] = None,
        threads: Optional[int] = None,
        adapter: Optional[str] = None,
        backend: Optional[str] = None,
        checkpoint: Optional[_Path] = None,
        weight_decay: Optional[float] = None,
        nesterov: Optional[bool] = None,
        decay_all: Optional[bool] = None,
        warmup: Optional[int] = None,
        label_smoothing: Optional[float] = None,
        augment: Optional[str] = None,
        normalize: Optional[str] = None,
    ) -> None: ...
    @staticmethod
    def load(path: _Path, **kwargs: Any) -> "Trainer":
        """A model file's weights, with the settings it was trained with (keywords override)."""
    @staticmethod
    def resume(path: _Path, **kwargs: Any) -> "Trainer":
        """Continue the run saved in a checkpoint."""
    @staticmethod
    def from_state_dict(arch: str, state_dict: Mapping[str, Any], **kwargs: Any) -> "Trainer":
        """Start from PyTorch weights (`layers.{i}.weight|bias`, NumPy arrays or tensors)."""
    def fit(
        self,
        train: Dataset,
        test: Optional[Dataset] = None,
        *,
        on_epoch: Optional[Callable[[Metrics], Optional[bool]]] = None,
        progress: bool = False,
    ) -> List[Metrics]:
        """Train to the end of the run; one dict per epoch."""
    def evaluate(self, data: Optional[Dataset] = None) -> Dict[str, float]:
        """{"loss", "accuracy", "n"} over `data` (default: the last fit's test set)."""
    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Class probabilities (N, classes) for uint8 pixels or float32 inputs."""
    def save(self, path: _Path) -> None:
        """A safetensors model file (PyTorch layouts; `wgtrain eval --model` reads it)."""
    def state_dict(self) -> Dict[str, npt.NDArray[np.float32]]:
        """The weights with PyTorch's names and layouts."""
    @property
    def arch(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def config(self) -> Dict[str, Any]: ...
    @property
    def position(self) -> Tuple[int, int]: ...

def devices(backend: Optional[str] = None) -> List[Dict[str, Any]]:
    """The GPU adapters wgpu finds, best first (as `wgtrain devices --json`)."""

def presets() -> List[str]:
    """The presets, in order of size."""

def verify(
    device: str = "gpu", families: Optional[Sequence[str]] = None, seed: Optional[int] = None
) -> Dict[str, Any]:
    """Every kernel on `device` against its CPU twin (as `wgtrain verify`)."""

def torch_module(arch: str) -> Any:
    """The torch.nn.Module of `arch` whose state_dict has wgtrain's names and layouts."""
