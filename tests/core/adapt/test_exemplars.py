"""Exemplar prompts: objects like the committed ones, found by their look to the encoder."""

from __future__ import annotations

import numpy as np
import pytest

from napari_active_sam.core.adapt.exemplars import (
    exemplar_prototypes,
    find_similar,
    search_slice,
)
from napari_active_sam.core.adapt.objects import found_objects
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.embeddings import SliceEncoder
from napari_active_sam.core.engine.preprocess import SliceSource, to_sam_rgb
from napari_active_sam.core.errors import ActiveSamError
from napari_active_sam.core.progress import drain


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu")


CENTRES = [(40, 40), (40, 200), (120, 120), (200, 60), (210, 210), (120, 30), (60, 120)]


def test_objects_like_the_exemplars_are_found_and_the_exemplars_are_not(demo, discs):
    image, labels = discs(256, CENTRES, 13)
    limits = (float(image.min()), float(image.max()))
    exemplars = [labels == 1, labels == 2]
    found = exemplar_prototypes(demo, [(image, limits, exemplars)])
    assert found.exemplars == 2 and found.encoder_id == demo.encoder_id
    taken = labels <= 2
    taken &= labels > 0
    prompts = search_slice(demo, image, limits, found, count=10, exclude=taken)
    hits = [labels[int(round(p.clicks[0].y)), int(round(p.clicks[0].x))] for p, _ in prompts]
    others = set(range(3, len(CENTRES) + 1))
    assert not {1, 2} & set(hits)  # never on an exemplar
    assert len(others & set(hits)) >= 3  # most of the other discs are found
    scores = [score for _, score in prompts]
    assert scores == sorted(scores, reverse=True)


def test_a_blank_image_holds_nothing_like_the_exemplars(demo, discs):
    image, labels = discs(256, CENTRES, 13)
    limits = (float(image.min()), float(image.max()))
    found = exemplar_prototypes(demo, [(image, limits, [labels == 1, labels == 2])])
    blank = np.full(image.shape, image.mean(), image.dtype)
    assert search_slice(demo, blank, (float(blank.min()), float(blank.max())), found) == []
    assert search_slice(demo, blank, limits, found) == []  # a field of one value, any window


def test_small_objects_are_searched_at_a_zoom(demo, discs):
    centres = [(40 + 60 * i, 40 + 60 * j) for i in range(8) for j in range(8)]
    image, labels = discs(512, centres, 5, seed=1)
    limits = (float(image.min()), float(image.max()))
    found = exemplar_prototypes(demo, [(image, limits, [labels == 1, labels == 10])])
    assert found.side < 512  # nuclei-sized objects are seen through zoomed windows
    objects = drain(found_objects(demo, SliceSource(image), found, "small", count=30,
                                  exclude=np.isin(labels, [1, 10])))  # fmt: skip
    assert objects and all(obj.gt is None and obj.prompts is not None for obj in objects)
    for obj in objects:
        click = obj.prompts.clicks[0]
        height, width = obj.embedding.original_size
        assert 0 <= click.x < width and 0 <= click.y < height  # in its own window


def test_another_encoder_and_no_exemplar_are_refused(demo, tiny_model, discs):
    image, labels = discs(128, CENTRES[:3], 10)
    limits = (0.0, 1.0)
    with pytest.raises(ActiveSamError, match="Commit at least one object"):
        exemplar_prototypes(demo, [(image, limits, [np.zeros_like(labels, bool)])])
    found = exemplar_prototypes(demo, [(image, limits, [labels == 1])])
    (embedding,) = SliceEncoder(tiny_model).encode([to_sam_rgb(image, limits)], ["t"])
    with pytest.raises(ActiveSamError, match="find similar objects with the model"):
        find_similar(embedding, found, tiny_model.encoder_id)
