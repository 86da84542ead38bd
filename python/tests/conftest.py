"""Shared fixtures: the repository's MNIST sample (2,000 training and 1,000 test images) and
the `wgtrain` command-line binary the bit-for-bit test compares against."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "mnist-sample"


def in_ci() -> bool:
    return os.environ.get("CI", "") not in ("", "0", "false")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    assert SAMPLE.is_dir(), f"{SAMPLE} is missing"
    return SAMPLE


@pytest.fixture(scope="session")
def train_set(sample_dir):
    import wgtrain

    return wgtrain.Dataset.load_dir(sample_dir, "train")


@pytest.fixture(scope="session")
def test_set(sample_dir):
    import wgtrain

    return wgtrain.Dataset.load_dir(sample_dir, "test")


@pytest.fixture(scope="session")
def cli() -> str:
    """The `wgtrain` binary: WGTRAIN_BIN, else the workspace's target/{debug,release}, else
    PATH. Missing: a failure in CI, a skip elsewhere."""
    candidates = [os.environ.get("WGTRAIN_BIN", "")]
    candidates += [str(ROOT / "target" / p / "wgtrain") for p in ("debug", "release")]
    candidates.append(shutil.which("wgtrain") or "")
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    why = "no wgtrain binary (cargo build, or set WGTRAIN_BIN)"
    if in_ci():
        pytest.fail(why)
    pytest.skip(why)
