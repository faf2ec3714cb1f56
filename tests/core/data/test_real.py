"""Real labelled images: the set builds offline, in the benchmark's layout, the same every
time, with object counts and label sanity checks per subset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.measure import regionprops

from napari_active_sam.core.data.datasets import dataset_window, discover_pairs, load_pair
from napari_active_sam.core.data.real import (
    BONE_HU,
    HEMATOXYLIN_MIN,
    LUNG_HU,
    MRI_SLICES,
    SPLITS,
    SUBSETS,
    VERTEBRA_HU,
    brain_masks,
    ct_chest_labels,
    epi_volume,
    ihc_nuclei_labels,
    mri_epi_volume,
    read_hounsfield,
    real_images,
    skimage_picture,
    subset_of,
    ventricle_mask,
    ventricular_csf,
)
from napari_active_sam.core.data.real_dataset import labels_digest, write_real_dataset
from napari_active_sam.core.engine.preprocess import IntensityWindow
from napari_active_sam.core.errors import ActiveSamError

OBJECTS = {  # (split, subset): (fewest, most) objects
    ("validation", "photo-coins"): (12, 12),
    ("test", "photo-coins"): (12, 12),
    ("validation", "nuclei-ihc"): (30, 75),
    ("test", "nuclei-ihc"): (30, 75),
    ("validation", "mri-epi"): (8, 8),
    ("test", "mri-epi"): (8, 8),
    ("validation", "ct-chest"): (3, 3),
    ("test", "ct-head"): (3, 3),
}


@pytest.fixture(scope="module", params=SPLITS)
def split_images(request):
    return request.param, real_images(request.param)


def by_subset(images, subset):
    return [image for image in images if image.subset == subset]


def test_masks_match_their_images_and_are_numbered(split_images):
    _, images = split_images
    for image in images:
        assert image.labels.shape == image.spatial_shape
        assert image.labels.dtype == np.int32
        values = np.unique(image.labels)
        assert values[0] == 0 and list(values[1:]) == list(range(1, values[-1] + 1))
        assert set(image.structures) == set(values[1:].tolist())
        assert image.name.startswith(image.subset + "-") and subset_of(image.name) == image.subset


def test_object_counts_per_subset(split_images):
    split, images = split_images
    counts = {}
    for image in images:
        counts[image.subset] = counts.get(image.subset, 0) + int(image.labels.max())
    assert set(counts) == {subset for s, subset in OBJECTS if s == split}
    for subset, count in counts.items():
        low, high = OBJECTS[(split, subset)]
        assert low <= count <= high, (subset, count)


def test_labels_are_deterministic():
    assert labels_digest(real_images("test")) == labels_digest(real_images("test"))


def test_splits_share_no_pixels_of_one_image():
    names = [{image.name for image in real_images(split)} for split in SPLITS]
    assert not names[0] & names[1]


def test_coins_are_round(split_images):
    _, images = split_images
    (coins,) = by_subset(images, "photo-coins")
    for region in regionprops(coins.labels):
        assert region.solidity > 0.9
        assert 800 < region.area < 4000
        assert region.axis_minor_length / region.axis_major_length > 0.75


def test_nuclei_are_compact_hematoxylin_stained_and_separate(split_images):
    from skimage.color import rgb2hed

    _, images = split_images
    (nuclei,) = by_subset(images, "nuclei-ihc")
    assert nuclei.image.ndim == 3 and nuclei.image.dtype == np.uint8
    hema = rgb2hed(nuclei.image)[..., 0]
    background = np.median(hema[nuclei.labels == 0])
    for region in regionprops(nuclei.labels, intensity_image=hema):
        assert region.solidity > 0.85 and 40 <= region.area <= 1000
        assert region.intensity_mean > background  # stained darker than what surrounds it


def test_mri_brain_contains_the_ventricles_and_they_are_bright(split_images):
    _, images = split_images
    mri = {image.name: image for image in by_subset(images, "mri-epi")}
    ventricles = [name for name in mri if name.endswith("-ventricles")]
    assert len(ventricles) == 3
    for name in ventricles:
        brain = mri[name.replace("-ventricles", "-brain")]
        inside, vent = brain.labels == 1, mri[name].labels == 1
        assert np.array_equal(brain.image, mri[name].image)
        assert (inside[vent]).all() and 40 <= vent.sum() < 0.1 * inside.sum()
        assert np.median(brain.image[vent]) > 1.1 * np.median(brain.image[inside & ~vent])
        assert np.median(brain.image[~inside]) < 0.1 * np.median(brain.image[inside])


def test_the_volume_s_ventricles_are_one_connected_bright_object():
    """The 3D protocol's ventricles: one 3D region of bright CSF inside the brain, grown from
    the lateral ventricles' bodies, holding the 2D set's ventricles, and not the sulci the
    slice rule picks beside them."""
    from scipy import ndimage

    volume, labels, spacing = mri_epi_volume()
    ventricles = labels == 2
    brains = brain_masks(volume)
    assert ndimage.label(ventricles)[1] == 1
    assert brains[ventricles].all() and spacing == pytest.approx((2.2, 2.0, 2.0), abs=1e-3)
    assert np.array_equal(labels > 0, brains)
    slices = np.flatnonzero(ventricles.any(axis=(1, 2)))
    assert np.array_equal(slices, np.arange(slices[0], slices[-1] + 1)) and len(slices) >= 20
    per_slice = [ventricle_mask(plane, b) for plane, b in zip(volume, brains, strict=True)]
    largest = int(np.argmax([mask.sum() for mask in per_slice]))
    assert 16 <= largest <= 19  # the bodies, where the slice rule finds nothing else
    for split in SPLITS:
        for z in MRI_SLICES[split]["ventricles"]:
            assert per_slice[z].any() and ventricles[z][per_slice[z]].all()
    # Elsewhere the slice rule's region is a sulcus, apart from the ventricles.
    dropped = [z for z, mask in enumerate(per_slice) if (mask & ~ventricles[z]).any()]
    assert len(dropped) >= 5
    for z in dropped:
        assert not (ndimage.binary_dilation(per_slice[z], iterations=2) & ventricles[z]).any()
    for z in slices:
        plane, rest = volume[z].astype(float), brains[z] & ~ventricles[z]
        assert np.median(plane[ventricles[z]]) > 1.1 * np.median(plane[rest])


def test_a_volume_without_ventricles_is_a_clear_error():
    volume = np.full((3, 40, 40), 100, np.int16)
    brains = np.zeros(volume.shape, bool)
    brains[:, 5:35, 5:35] = True
    with pytest.raises(ActiveSamError, match="No lateral ventricles"):
        ventricular_csf(volume, brains)


def test_ct_labels_follow_hounsfield_thresholds():
    (chest,) = by_subset(real_images("validation"), "ct-chest")
    hu, labels = chest.image.astype(float), chest.labels
    assert chest.window == IntensityWindow.ct("bone")
    lungs = [v for v, name in chest.structures.items() if name == "lung"]
    assert len(lungs) == 2
    for value in lungs:
        assert np.median(hu[labels == value]) < -700
        assert (hu[labels == value] <= LUNG_HU).mean() > 0.9
    (vertebra,) = [v for v, name in chest.structures.items() if name == "vertebra"]
    assert (hu[labels == vertebra] >= VERTEBRA_HU).mean() > 0.85
    assert (hu[labels == vertebra] >= BONE_HU).any()

    head = {image.name: image for image in by_subset(real_images("test"), "ct-head")}
    body, inner = head["ct-head-body"], head["ct-head-skull"]
    hu = body.image.astype(float)
    skull, brain = inner.labels == 1, inner.labels == 2
    assert (hu[skull] >= BONE_HU).all()  # bone pixels are all >= 300 HU
    assert 0 < np.median(hu[brain]) < 80  # brain tissue
    assert (body.labels[skull | brain] == 1).all()  # the head contains both
    assert np.median(hu[body.labels == 0]) < -900  # outside is air


def test_moved_thresholds_move_the_outlines_the_expected_way():
    """The thresholds ``benchmarks/label_stability.py`` moves: a higher hematoxylin
    threshold gives less nucleus, a lower CSF contrast more ventricle, a higher lung
    threshold (less negative) more lung."""
    ihc, _ = skimage_picture("ihc.png")
    chosen = ihc_nuclei_labels(ihc) > 0
    higher = ihc_nuclei_labels(ihc, HEMATOXYLIN_MIN * 1.1) > 0
    assert higher.sum() < chosen.sum() and (higher & ~chosen).sum() < 0.05 * higher.sum()
    volume = epi_volume()
    brains = brain_masks(volume)
    csf = ventricular_csf(volume, brains)
    assert ventricular_csf(volume, brains, 1.09).sum() > csf.sum()
    assert brain_masks(volume, 1.1).sum() < brains.sum()
    hu, _ = read_hounsfield("CT_small.dcm")
    lungs = ct_chest_labels(hu)[0]
    wider = ct_chest_labels(hu, lung_hu=LUNG_HU + 50)[0]
    assert np.isin(wider, [1, 2]).sum() > np.isin(lungs, [1, 2]).sum()


def test_write_real_dataset_is_what_the_benchmark_reads(tmp_path):
    summary = write_real_dataset(tmp_path, "validation")
    pairs, skipped = discover_pairs(tmp_path)
    assert not skipped and {p.stem for p in pairs} == set(summary["images"])
    index = json.loads((tmp_path / "objects.json").read_text())
    assert index["digest"] == summary["digest"] == labels_digest(real_images("validation"))
    for pair in pairs:
        window = dataset_window(tmp_path, pair.stem)
        assert window.to_dict() == index["images"][pair.stem]["window"]
        source, labels = load_pair(pair, window)
        assert labels.max() == index["images"][pair.stem]["objects"]
        assert source.rgb == pair.stem.startswith("nuclei-ihc")
        assert (tmp_path / "overlays" / f"{pair.stem}.png").is_file()
    readme = (tmp_path / "README.md").read_text()
    assert all(subset in readme for subset in SUBSETS)


def test_unknown_split_and_stem_are_refused():
    with pytest.raises(ActiveSamError, match="split"):
        real_images("train")
    with pytest.raises(ActiveSamError, match="subsets"):
        subset_of("coins_0001")
