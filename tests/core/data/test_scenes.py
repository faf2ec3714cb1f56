"""Generated scenes: kinds, dtypes, hierarchy, determinism, and the dataset layout."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from napari_active_sam.core.data.files import read_image
from napari_active_sam.core.data.randomised import _colour, _interior, _Looks, _RegionPainter
from napari_active_sam.core.data.scenes import (
    MODALITY_KINDS,
    make_scene,
    scene_kinds,
    training_scene,
    write_dataset,
)
from napari_active_sam.core.enums import SceneKind

DTYPES = {"ct": np.int16, "ultrasound": np.uint8, "nuclei": np.uint16, "mixed": np.uint8,
          "random": np.uint8, "real-crops": np.uint8}  # fmt: skip

# SHA-256 of 12 scenes of each kind (128 px, seed 0; see _digest), measured before the
# ``random`` kind was added: the other kinds' scenes must not change.
DIGESTS = {
    "ct": "ef40d9d3fd9c2fab0610f0345ee8c6a38987e4dccae5ba82d259d80eb7266bdb",
    "ultrasound": "4814547a304cfdc368d472f10729459e9fdfbf8db520fba0f5c7dbc3b430bece",
    "nuclei": "e4cb282aa3fa9545cdd3acc4bc3591527707643081c9a2dadc17b91d8e497dc4",
    "mixed": "b6eb25b7643b045cd22c8ff48366bd1f59ba5e57b1542cacf4b82cba4e1ea114",
}


@pytest.mark.parametrize("kind", list(SceneKind))
def test_each_kind_has_objects_and_its_dtype(kind):
    scene = make_scene(kind, np.random.default_rng(5), 128)
    assert scene.kind == kind or kind == SceneKind.MIXED  # mixed draws any kind
    assert scene.image.dtype == DTYPES[scene.kind]
    assert scene.image.shape[:2] == scene.labels.shape == (128, 128)
    in_colour = (SceneKind.RANDOM, SceneKind.REAL_CROPS)
    assert scene.image.ndim == 2 or (scene.kind in in_colour and scene.image.shape[2] == 3)
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


def test_mixed_covers_every_modality_kind_and_is_deterministic():
    kinds = {make_scene("mixed", np.random.default_rng(s), 96).kind for s in range(30)}
    assert kinds == set(MODALITY_KINDS) and SceneKind.RANDOM not in kinds
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


def _digest(kind: str, size: int = 128, seed: int = 0, count: int = 12) -> str:
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()
    for _ in range(count):
        scene = make_scene(kind, rng, size)
        digest.update(str(scene.kind).encode())
        digest.update(str(scene.image.dtype).encode())
        digest.update(scene.image.tobytes())
        digest.update(scene.labels.tobytes())
        digest.update(json.dumps(sorted(scene.parents.items())).encode())
        digest.update(json.dumps(scene.window.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


@pytest.mark.parametrize("kind", sorted(DIGESTS))
def test_existing_kinds_are_unchanged_for_a_seed(kind):
    assert _digest(kind) == DIGESTS[kind]


def test_all_cycles_through_the_modality_kinds_and_random_is_asked_for_by_name():
    assert scene_kinds("all") == list(MODALITY_KINDS)
    assert scene_kinds("random") == [SceneKind.RANDOM]
    with pytest.raises(ValueError):
        scene_kinds("mri")


@pytest.fixture(scope="module")
def random_scenes():
    return [make_scene("random", np.random.default_rng(seed), 128) for seed in range(24)]


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different objects (labels) that share a 4-connected boundary."""
    pairs = set()
    for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs |= {(int(min(x, y)), int(max(x, y))) for x, y in zip(a[touch], b[touch], strict=True)}
    return pairs


def test_random_scenes_are_valid(random_scenes):
    eight = np.ones((3, 3), bool)
    for scene in random_scenes:
        assert scene.kind is SceneKind.RANDOM
        assert scene.image.dtype == np.uint8 and scene.labels.dtype == np.int32
        assert scene.image.shape[:2] == scene.labels.shape == (128, 128)
        n = int(scene.labels.max())
        assert n >= 1
        sizes = np.bincount(scene.labels.ravel())
        assert (sizes[1:] >= 12).all()  # labels are 1..n, none empty
        for label, where in enumerate(ndimage.find_objects(scene.labels), 1):
            _, pieces = ndimage.label(scene.labels[where] == label, eight)
            assert pieces == 1, f"object {label} is in {pieces} pieces"
        for child, parent in scene.parents.items():
            assert 1 <= child <= n and 1 <= parent <= n and child != parent
            assert parent not in scene.parents  # one level of nesting
            grown = ndimage.binary_dilation(scene.labels == child)
            assert (scene.labels[grown] == parent).any()
            whole = scene.object_mask(parent)
            assert whole.sum() == sizes[parent] + sum(
                sizes[c] for c, p in scene.parents.items() if p == parent
            )


def test_random_scenes_are_deterministic_for_a_seed():
    a, b = (make_scene("random", np.random.default_rng(11), 96) for _ in range(2))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.parents == b.parents
    c = make_scene("random", np.random.default_rng(12), 96)
    assert not np.array_equal(a.image, c.image)


def test_random_scenes_vary(random_scenes):
    polarity = set()
    touching = nested = crowded = 0
    for scene in random_scenes:
        objects = scene.image[scene.labels > 0].mean()
        background = scene.image[scene.labels == 0]
        if background.size > 100:
            polarity.add(bool(objects > background.mean()))
        pairs = _touching_pairs(scene.labels)
        nesting = {(min(c, p), max(c, p)) for c, p in scene.parents.items()}
        touching += bool(pairs - nesting)  # side by side, not one inside the other
        nested += bool(scene.parents)
        crowded += scene.labels.max() >= 30
    assert polarity == {True, False}  # objects brighter than background in some, darker in others
    assert touching >= 4 and nested >= 4 and crowded >= 2
    means = [scene.image.mean() for scene in random_scenes]
    assert np.ptp(means) > 60


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_training_scene_mixes_random_with_the_modality_kinds(fraction):
    rng = np.random.default_rng(4)
    kinds = {training_scene(rng, 64, random_fraction=fraction).kind for _ in range(16)}
    assert kinds == {SceneKind.RANDOM} if fraction else kinds <= set(MODALITY_KINDS)
    assert len(kinds) == 1 or not fraction


def test_training_scene_draws_both_and_is_deterministic():
    kinds = [training_scene(np.random.default_rng(s), 64).kind for s in range(20)]
    assert SceneKind.RANDOM in kinds and set(kinds) - {SceneKind.RANDOM}
    a, b = (training_scene(np.random.default_rng(9), 64, 0.5) for _ in range(2))
    assert a.kind == b.kind and np.array_equal(a.image, b.image)
    with pytest.raises(ValueError, match="random_fraction"):
        training_scene(np.random.default_rng(0), 64, random_fraction=1.5)


# SHA-256 of training_scene(seed, 64, 0.5) for seeds 0-11, measured before real crops
# joined the mix: without them asked for, a seed gives the scenes it always gave.
TRAINING_MIX_DIGEST = "6ee5beeeef3cb712021efe44886656675335ec42607f23e06f74507d9eb2982c"


def test_real_crops_join_the_training_mix_only_when_asked():
    digest = hashlib.sha256()
    for seed in range(12):
        scene = training_scene(np.random.default_rng(seed), 64, 0.5)
        digest.update(np.ascontiguousarray(scene.image).tobytes())
        digest.update(np.ascontiguousarray(scene.labels).tobytes())
    assert digest.hexdigest() == TRAINING_MIX_DIGEST
    kinds = [training_scene(np.random.default_rng(s), 64, 0.5, 0.5).kind for s in range(20)]
    assert SceneKind.REAL_CROPS in kinds and set(kinds) - {SceneKind.REAL_CROPS}
    only = {training_scene(np.random.default_rng(s), 64, 0.5, 1.0).kind for s in range(6)}
    assert only == {SceneKind.REAL_CROPS}
    with pytest.raises(ValueError, match="real_fraction"):
        training_scene(np.random.default_rng(0), 64, real_fraction=-0.1)


def test_some_random_scenes_are_in_colour(random_scenes):
    colour = [scene for scene in random_scenes if scene.image.ndim == 3]
    assert 3 <= len(colour) <= len(random_scenes) - 8  # COLOUR_CHANCE of them, not all
    for scene in colour:
        channels = scene.image.reshape(-1, 3).astype(float)
        assert np.abs(channels - channels.mean(axis=1, keepdims=True)).mean() > 2  # not grey


def test_structures_inside_an_organ_are_part_of_it():
    """Patches and folds painted inside an organ change its look, not its label: the organ
    stays one object, its outline the answer, and nothing outside it changes."""
    shown = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        painter = _RegionPainter((96, 96), _Looks(rng))
        rows, cols = np.ogrid[:96, :96]
        organ = (rows - 48) ** 2 + (cols - 48) ** 2 < 35**2
        label = painter.paint((slice(0, 96), slice(0, 96)), organ, painter.looks.add())
        before = painter.labels.copy(), painter.regions.copy()
        _interior(painter, rng, label, 35.0)
        np.testing.assert_array_equal(painter.labels, before[0])
        np.testing.assert_array_equal(painter.regions[~organ], before[1][~organ])
        inside = np.unique(painter.regions[organ])
        assert all(painter.region_looks[r] > 0 for r in inside)  # none takes the background's
        shown += len(inside) > 1
    assert shown >= 5  # most organs got structures (each kind in 70 % and 60 % of draws)


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    mean = rgb.reshape(-1, 3).mean(axis=0)
    return mean / mean.sum()


def test_colour_tells_apart_looks_that_are_equally_dark():
    grey = np.full((64, 64), 0.4, np.float32)
    looks = np.zeros((64, 64), np.int64)
    looks[:, 32:] = 1
    apart = 0
    for seed in range(12):
        rgb = _colour(grey, looks, np.random.default_rng(seed))
        assert rgb.shape == (64, 64, 3) and rgb.min() >= 0 and rgb.max() <= 1
        left, right = _chromaticity(rgb[:, 4:28]), _chromaticity(rgb[:, 36:60])
        apart += np.abs(left - right).sum() > 0.05
    assert apart >= 9


def test_write_dataset_writes_random_scenes(tmp_path):
    assert list(write_dataset(tmp_path, 8, seed=1, kind="random", size=96)) == list(range(1, 9))
    shapes = set()
    for path in sorted((tmp_path / "images").glob("*.tif")):
        image = read_image(path)
        labels = tifffile.imread(tmp_path / "masks" / path.name)
        assert image.data.dtype == np.uint8 and labels.max() >= 1
        assert labels.shape == image.data.shape[:2] and image.rgb == (image.data.ndim == 3)
        shapes.add(image.data.ndim)
    assert shapes == {2, 3}  # colour scenes are written, and read back, as RGB
    index = json.loads((tmp_path / "objects.json").read_text())
    assert {entry["kind"] for entry in index["images"].values()} == {"random"}
