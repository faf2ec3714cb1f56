"""Shared fixtures: tiny SAM configurations built from segment-anything's own modules."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.engine.architectures import SMOKE_ARCHITECTURE, Architecture
from napari_active_sam.core.engine.checkpoints import random_model, save_checkpoint
from napari_active_sam.core.progress import drain

TINY = SMOKE_ARCHITECTURE


@pytest.fixture
def tiny_arch() -> Architecture:
    return TINY


@pytest.fixture
def tiny_model():
    return random_model(TINY, seed=0)


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_model):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny_model.sam, TINY)
    return path


@pytest.fixture
def ct_volume() -> np.ndarray:
    """(6, 40, 50) int16 volume in Hounsfield-like units: a bright disc on soft tissue."""
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[:6, :40, :50]
    volume = np.full((6, 40, 50), 40, np.int16)
    volume[(y - 20) ** 2 + (x - 25) ** 2 < (8 + z) ** 2] = 700
    return (volume + rng.normal(0, 10, volume.shape)).astype(np.int16)




@pytest.fixture(scope="session")
def tiny_examples():
    """Click sets simulated with the tiny random model on two generated scenes."""
    from napari_active_sam.core.active.head_training import generated_examples

    return drain(generated_examples(random_model(TINY, seed=0), 2, seed=5, clicks=3))


@pytest.fixture(scope="session")
def tiny_head(tiny_examples):
    """A Bayesian head fitted (briefly) for the tiny random model."""
    from napari_active_sam.core.active.head_training import HeadConfig, fit_head

    config = HeadConfig(steps=30, fit_pixels=3000)
    return drain(fit_head(tiny_examples, random_model(TINY, seed=0), config))
