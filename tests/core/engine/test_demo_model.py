"""The bundled demo model: shipped, loaded securely, and it really segments."""

from __future__ import annotations

import numpy as np
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam

from napari_active_sam.core.bench.episodes import run_episode
from napari_active_sam.core.data.scenes import make_scene
from napari_active_sam.core.engine.checkpoints import load_model, random_model
from napari_active_sam.core.engine.downloads import bundled_path
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import Predictor
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.registry import get_spec
from napari_active_sam.core.engine.store import EmbeddingStore


def test_demo_model_ships_small_and_is_a_segment_anything_model():
    path = bundled_path(get_spec("demo").bundled)
    assert path.is_file() and path.stat().st_size <= 25 * 2**20
    model = load_model("demo", device="cpu")
    assert isinstance(model.sam, Sam)
    assert isinstance(model.sam.prompt_encoder, PromptEncoder)
    decoder = model.sam.mask_decoder
    assert isinstance(decoder, MaskDecoder) and decoder.num_multimask_outputs == 3
    assert model.architecture.img_size >= 256
    # The checkpoint records how it was trained (the model card's figures).
    extra = model.extra
    assert isinstance(extra["seed"], int) and extra["config"]["steps"] == extra["steps"] > 0
    assert extra.get("total_steps", extra["steps"]) >= extra["steps"]


def _one_click_ious(model, scenes):
    predictor = Predictor(model)
    ious = []
    for scene in scenes:
        source = SliceSource(scene.image, scene.window)
        embedding = embed_slice(model, source, EmbeddingStore(model.encoder_id))
        for label in range(1, scene.labels.max() + 1):
            result = run_episode(predictor, embedding, scene.labels == label, "ritm", 1)
            ious.append(result.ious[0])
    return np.array(ious)


def test_demo_model_segments_from_one_click_far_better_than_random_weights():
    model = load_model("demo", device="cpu")
    rng = np.random.default_rng(2024)  # not the training seed
    scenes = [make_scene(kind, rng, model.architecture.img_size)
              for kind in ("ct", "ultrasound", "nuclei", "ct", "ultrasound", "nuclei")]  # fmt: skip
    trained = _one_click_ious(model, scenes)
    untrained = _one_click_ious(random_model(model.architecture, seed=0), scenes)
    assert len(trained) >= 15
    assert trained.mean() > 0.6
    assert trained.mean() > untrained.mean() + 0.4
