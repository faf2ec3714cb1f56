"""Real training images: none of the evaluation set's files, labels by their rules, and
training scenes cut from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_active_sam.core.data.real import real_images
from napari_active_sam.core.data.real_training import real_training_scene, training_images
from napari_active_sam.core.enums import SceneKind


def _file_name(source: str) -> str:
    return Path(source.split(" ")[0]).name


def test_no_training_image_comes_from_a_file_of_the_evaluation_set():
    evaluated = {_file_name(image.source) for split in ("validation", "test")
                 for image in real_images(split)}  # fmt: skip
    trained = {_file_name(image.source) for image in training_images()}
    assert evaluated >= {"coins.png", "ihc.png", "example4d.nii.gz"}
    assert len(trained) == len(training_images()) and not trained & evaluated


@pytest.mark.parametrize("name, fewest, most", [
    ("astro-sources", 300, 3000), ("handwriting", 15, 80), ("mri-abdomen", 2, 2),
])  # fmt: skip
def test_each_training_image_has_numbered_objects(name, fewest, most):
    image = {t.name: t for t in training_images()}[name]
    assert image.image.dtype == np.uint8 and image.labels.shape == image.image.shape[:2]
    labels = np.unique(image.labels)
    assert labels[0] == 0 and list(labels[1:]) == list(range(1, labels[-1] + 1))
    assert fewest <= labels[-1] <= most


def test_the_abdominal_lesion_lies_inside_the_body():
    mri = {t.name: t for t in training_images()}["mri-abdomen"]
    child, parent = next(iter(mri.parents.items()))
    lesion, body = mri.labels == child, mri.labels == parent
    assert 100 < lesion.sum() < 0.05 * body.sum()
    assert ndimage.binary_fill_holes(body)[lesion].all()  # the body surrounds the lesion
    rng = np.random.default_rng(3)
    nested = [s for s in (real_training_scene(rng, 128) for _ in range(60)) if s.parents]
    assert nested  # some cuts keep the lesion inside its piece of the body
    for scene in nested:
        for child, parent in scene.parents.items():
            touching = ndimage.binary_dilation(scene.labels == child) & (scene.labels == parent)
            assert touching.any()


def test_real_crops_are_scenes_with_objects_of_a_few_pixels_or_more():
    rng = np.random.default_rng(0)
    scenes = [real_training_scene(rng, 128) for _ in range(24)]
    for scene in scenes:
        assert scene.kind is SceneKind.REAL_CROPS
        assert scene.image.dtype == np.uint8 and scene.image.shape[:2] == (128, 128)
        areas = np.bincount(scene.labels.ravel())[1:]
        assert len(areas) and areas.min() >= 8 and areas.max() <= 0.9 * 128 * 128
        for label in range(1, len(areas) + 1):  # each object one connected piece
            assert ndimage.label(scene.labels == label)[1] == 1
        for child, parent in scene.parents.items():
            assert child != parent and {child, parent} <= set(range(1, len(areas) + 1))
    assert {s.image.ndim for s in scenes} == {2, 3}
    means = [s.image.mean() for s in scenes]
    assert min(means) < 80 and max(means) > 150  # both polarities
    again = real_training_scene(np.random.default_rng(0), 128)
    assert np.array_equal(again.image, scenes[0].image)
    assert np.array_equal(again.labels, scenes[0].labels)
