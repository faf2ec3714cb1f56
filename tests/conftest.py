"""Shared fixtures: tiny SAM configurations built from segment-anything's own modules."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.models import Architecture, random_model, save_checkpoint

TINY = Architecture(
    name="tiny",
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    img_size=128,
    window_size=4,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
"""A SAM small enough for tests: 128 px input, 8×8 embedding, 32×32 low-res grid."""


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
