"""The demo model, its quality networks and a held-out generated CT scene, shared by the
quality tests."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.data.scenes import make_scene
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.embeddings import SliceEncoder
from napari_active_sam.core.engine.preprocess import to_sam_rgb
from napari_active_sam.core.quality.estimators import QualityModels


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def full_models(demo):
    """The demo model with its shipped Bayesian head and quality regressor."""
    models = QualityModels.for_model(demo)
    assert models.bayes_head is not None and models.regressor is not None
    return models


@pytest.fixture(scope="module")
def ct_scene(demo):
    """A held-out CT scene (not a training seed), its SAM input and embedding."""
    scene = make_scene("ct", np.random.default_rng(7), demo.architecture.img_size)
    rgb = to_sam_rgb(scene.image, scene.window.limits(scene.image))
    (embedding,) = SliceEncoder(demo).encode([rgb], ["test-ct"])
    return scene, rgb, embedding
