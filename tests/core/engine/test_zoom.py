"""Zoom-in: small objects decoded in a window at the slice's own resolution."""

from __future__ import annotations

import numpy as np

from napari_active_sam.core.engine.embeddings import EmbeddingStore, embed_slice
from napari_active_sam.core.engine.predictor import Predictor
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.zoom import Window, ZoomingPredictor, window_around
from napari_active_sam.core.prompts import Click, PromptSet


def test_window_holds_the_prompts_inside_the_slice():
    prompts = PromptSet(clicks=(Click(10, 20), Click(30, 25, False)))
    window = window_around(prompts, (400, 600), 64)
    assert window == Window(0, 0, 64, 64)  # pushed inside at the corner
    far = PromptSet(clicks=(Click(300, 200),))
    assert window_around(far, (400, 600), 64) == Window(168, 268, 64, 64)
    spread = PromptSet(clicks=(Click(100, 100), Click(200, 190)))
    assert window_around(spread, (400, 600), 64).height >= 100 / 0.75
    assert window_around(PromptSet(clicks=(Click(5, 5), Click(590, 390))), (400, 600), 64) is None


def test_touching_counts_only_edges_inside_the_slice():
    window = Window(0, 10, 4, 4)
    mask = np.zeros((4, 4), bool)
    mask[0, 1] = True  # on the slice's own top edge
    assert not window.touches_inside(mask, (20, 20))
    mask[2, 0] = True  # on the window's left edge, inside the slice
    assert window.touches_inside(mask, (20, 20))


def test_small_objects_are_decoded_in_a_window_and_placed_back():
    from napari_active_sam.core.data.scenes import make_scene
    from napari_active_sam.core.engine.checkpoints import load_model

    model = load_model("demo", device="cpu")
    scene = make_scene("nuclei", np.random.default_rng(3), 256)
    image = np.full((1024, 1024), np.median(scene.image), scene.image.dtype)
    labels = np.zeros(image.shape, int)
    image[300:556, 400:656], labels[300:556, 400:656] = scene.image, scene.labels
    source = SliceSource(image, scene.window)
    limits = SliceSource(scene.image, scene.window).limits()  # the scene's own contrast
    embedding = embed_slice(model, source, EmbeddingStore(model.model_id), limits=limits)
    predictor = Predictor(model)
    zooming = ZoomingPredictor(predictor, image, limits)
    assert zooming.zooms
    gains = []
    for label in range(1, 6):
        gt = labels == label
        row, col = np.argwhere(gt).mean(axis=0)
        prompts = PromptSet(clicks=(Click(col, row),))
        plain, zoomed = predictor.predict(embedding, prompts), zooming.predict(embedding, prompts)
        assert zoomed.full_size == image.shape and zoomed.probabilities.shape[1:] == image.shape
        top, left = zoomed.origin
        height, width = zoomed.original_size
        outside = np.ones(image.shape, bool)
        outside[top : top + height, left : left + width] = False
        assert not zoomed.probabilities[:, outside].any()

        def iou(mask, gt=gt):
            return (mask & gt).sum() / (mask | gt).sum()

        gains.append(iou(zoomed.mask()) - iou(plain.mask()))
    # Nuclei of a dozen pixels shrunk four times are specks; at full resolution they are not.
    assert np.mean(gains) > 0.3
    before = zooming.windows_encoded
    zooming.predict(embedding, prompts)  # the same prompts: the window's embedding is kept
    assert zooming.windows_encoded == before


def test_slices_near_the_model_size_are_not_zoomed(tiny_model):
    size = tiny_model.architecture.img_size
    image = np.random.default_rng(0).random((size, size)).astype(np.float32)
    source = SliceSource(image)
    embedding = embed_slice(tiny_model, source, EmbeddingStore(tiny_model.model_id))
    zooming = ZoomingPredictor(Predictor(tiny_model), image, source.limits())
    prediction = zooming.predict(embedding, PromptSet(clicks=(Click(5, 5),)))
    assert not zooming.zooms and zooming.windows_encoded == 0 and prediction.full_size is None
