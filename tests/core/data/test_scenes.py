"""Generated scenes: kinds, dtypes, hierarchy, determinism, and the dataset layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_active_sam.core.data.scenes import make_scene, write_dataset
from napari_active_sam.core.enums import SceneKind

DTYPES = {"ct": np.int16, "ultrasound": np.uint8, "nuclei": np.uint16, "mixed": np.uint8}


@pytest.mark.parametrize("kind", list(SceneKind))
def test_each_kind_has_objects_and_its_dtype(kind):
    scene = make_scene(kind, np.random.default_rng(5), 128)
    assert scene.kind == kind or kind == SceneKind.MIXED  # mixed draws any kind
    assert scene.image.dtype == DTYPES[scene.kind]
    assert scene.image.shape == scene.labels.shape == (128, 128)
    labels = np.unique(scene.labels)
    assert labels[0] == 0 and list(labels[1:]) == list(range(1, labels[-1] + 1))
    for child, parent in scene.parents.items():
        assert child in labels and parent in labels and child != parent


def test_ct_scenes_are_in_hounsfield_units_with_nested_lesions():
    rng = np.random.default_rng(0)
    scenes = [make_scene("ct", rng, 128) for _ in range(6)]
    assert all(s.image.min() < -800 for s in scenes)  # air
    assert all(s.window.name == "soft_tissue" for s in scenes)
    nested = [s for s in scenes if s.parents]
    assert nested
    scene = nested[0]
    child, parent = next(iter(scene.parents.items()))
    with_child = scene.object_mask(parent)
    assert with_child.sum() == (scene.labels == parent).sum() + (scene.labels == child).sum()


def test_mixed_covers_every_kind_and_is_deterministic():
    kinds = {make_scene("mixed", np.random.default_rng(s), 96).kind for s in range(30)}
    assert kinds == set(SceneKind)
    a = make_scene("mixed", np.random.default_rng(3), 96)
    b = make_scene("mixed", np.random.default_rng(3), 96)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)


def test_write_dataset_layout(tmp_path):
    assert list(write_dataset(tmp_path, 3, seed=2, kind="nuclei", size=96)) == [1, 2, 3]
    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    masks = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert images == masks == ["nuclei_0000.tif", "nuclei_0001.tif", "nuclei_0002.tif"]
    labels = tifffile.imread(tmp_path / "masks" / masks[0])
    assert labels.dtype == np.int32 and labels.max() >= 1
    index = json.loads((tmp_path / "objects.json").read_text())
    assert index["seed"] == 2 and set(index["images"]) == {m[:-4] for m in masks}
