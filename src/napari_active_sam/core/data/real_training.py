"""Real images for training, disjoint from the real evaluation set.

Generated scenes teach the look of the generator; these teach what objects look like in
photographs and scans nobody here generated. Every image is a file that scikit-image or
pydicom installs and that :mod:`.real` does not use (its validation and test splits take
``coins.png``, ``ihc.png``, nibabel's EPI volume and two pydicom CT slices), and every label
comes from a fixed rule:

- ``astro-sources``: scikit-image's ``hubble_deep_field.jpg``, galaxies and stars on the
  dark sky: pixels brighter than the sky's median by eight robust standard deviations (after
  a Gaussian of one pixel), holes filled, touching sources split by a watershed from the
  distance transform's maxima, sources of fewer than 12 pixels left out. Bright, roundish,
  crowded objects of many sizes: the nearest real thing to nuclei in fluorescence, and
  (inverted, tinted) to stained nuclei on a bright slide.
- ``handwriting``: scikit-image's ``text.png``, strokes of handwriting darker than the paper
  (a 31-pixel median) by 35 grey levels, of 30 pixels or more: thin objects.
- ``mri-abdomen``: pydicom's ``examples_overlay.dcm``, an axial abdominal MRI whose overlay
  plane outlines a liver lesion: the body (half of Otsu's threshold, opened, the largest
  region, holes filled) with the lesion (the outline closed and filled) as an object inside.

:func:`real_training_scene` cuts a training scene from one of them at a random scale,
orientation, polarity and tint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

from ..engine.preprocess import IntensityWindow
from ..enums import SceneKind
from .real import package_file
from .shapes import Scene

SCALES = (0.75, 3.0)
"""Range of the magnification a crop is drawn at (log-uniform): real objects at the sizes
a zoom window shows them."""

INVERTED = 0.5
"""Chance that a crop is shown in inverted polarity (dark objects on a bright field)."""


@dataclass(frozen=True)
class TrainingImage:
    """One real training image: uint8 ``(H, W)`` or ``(H, W, 3)`` pixels, int32 instance
    labels, the package file it was made from, and the child → parent label pairs of
    objects drawn inside another."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    source: str
    parents: dict[int, int] = field(default_factory=dict)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, (0.5, 99.5))
    return np.clip((values - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if not count:
        return mask
    return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)


def _numbered(labels: np.ndarray, min_area: int) -> np.ndarray:
    """``labels`` with regions under ``min_area`` pixels removed, numbered 1..N."""
    areas = np.bincount(labels.ravel())
    kept = np.flatnonzero(areas >= min_area)
    kept = kept[kept > 0]
    lookup = np.zeros(len(areas), np.int32)
    lookup[kept] = np.arange(1, len(kept) + 1)
    return lookup[labels]


def astro_sources() -> TrainingImage:
    """The Hubble deep field's galaxies and stars (module docstring: ``astro-sources``)."""
    from skimage import feature, filters, segmentation

    path = package_file("skimage.data", "hubble_deep_field.jpg")
    rgb = np.asarray(iio.imread(path), np.uint8)
    smooth = filters.gaussian(rgb.astype(float).mean(axis=-1), 1, preserve_range=True)
    sky = np.median(smooth)
    spread = 1.4826 * np.median(np.abs(smooth - sky))
    mask = ndimage.binary_fill_holes(smooth > sky + 8 * spread)
    distance = ndimage.distance_transform_edt(mask)
    regions, _ = ndimage.label(mask)
    peaks = feature.peak_local_max(distance, min_distance=4, labels=regions,
                                   exclude_border=False)  # fmt: skip
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    split = segmentation.watershed(-distance, markers, mask=mask)
    return TrainingImage("astro-sources", rgb, _numbered(split, 12), str(path))


def handwriting() -> TrainingImage:
    """The handwriting page's strokes (module docstring: ``handwriting``)."""
    path = package_file("skimage.data", "text.png")
    grey = np.asarray(iio.imread(path), np.uint8)
    paper = ndimage.median_filter(grey.astype(float), 31)
    regions, _ = ndimage.label(paper - grey > 35)
    return TrainingImage("handwriting", grey, _numbered(regions, 30), str(path))


def mri_abdomen() -> TrainingImage:
    """The abdominal MRI's body and overlay-outlined lesion (module docstring:
    ``mri-abdomen``)."""
    import pydicom
    from skimage import filters

    path = package_file("pydicom.data", "test_files", "examples_overlay.dcm")
    dataset = pydicom.dcmread(path)
    values = dataset.pixel_array.astype(float)
    body = ndimage.binary_opening(values > filters.threshold_otsu(values) / 2, iterations=2)
    body = ndimage.binary_fill_holes(_largest(body))
    outline = dataset.overlay_array(0x6000).astype(bool)
    lesion = ndimage.binary_fill_holes(ndimage.binary_closing(outline, iterations=2)) & body
    labels = body.astype(np.int32)
    labels[lesion] = 2
    return TrainingImage("mri-abdomen", _to_uint8(values), labels, str(path), {2: 1})


BUILDERS = (astro_sources, handwriting, mri_abdomen)
WEIGHTS = (0.6, 0.25, 0.15)
"""How often a crop comes from each image, in the order of :data:`BUILDERS`."""


@cache
def training_images() -> tuple[TrainingImage, ...]:
    """Every real training image, built once per process."""
    return tuple(build() for build in BUILDERS)


def _resized(image: np.ndarray, labels: np.ndarray, scale: float):
    zoom = (scale, scale) + (1,) * (image.ndim - 2)
    return (ndimage.zoom(image, zoom, order=1, mode="nearest"),
            ndimage.zoom(labels, scale, order=0, mode="nearest"))  # fmt: skip


def _crop(labels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """A ``size`` square window inside ``labels`` around a random labelled pixel."""
    rows, cols = np.nonzero(labels)
    pick = rng.integers(len(rows))
    corner = []
    for centre, extent in ((rows[pick], labels.shape[0]), (cols[pick], labels.shape[1])):
        jitter = int(rng.integers(-size // 3, size // 3 + 1))
        corner.append(int(np.clip(centre + jitter - size // 2, 0, max(extent - size, 0))))
    return slice(corner[0], corner[0] + size), slice(corner[1], corner[1] + size)


def _cut(chosen: TrainingImage, size: int, rng: np.random.Generator):
    """Image, labels and parents of a ``size`` square cut of ``chosen`` at a random scale
    (never below the one that fits the image's shorter side into ``size``), each connected
    piece of an object its own object, pieces under 8 pixels dropped; None where no object
    is left or one fills the cut."""
    low = max(SCALES[0], size / min(chosen.labels.shape))
    scale = float(np.exp(rng.uniform(np.log(low), np.log(max(low, SCALES[1])))))
    side = min(int(np.ceil(size / scale)), *chosen.labels.shape)
    window = _crop(chosen.labels, side, rng)
    image, labels = _resized(chosen.image[window], chosen.labels[window], size / side)
    image, labels = image[:size, :size], labels[:size, :size]
    if labels.shape != (size, size):
        return None
    from skimage.measure import label as connected

    # An object the cut splits is one object per piece: a click targets what it touches.
    numbered = _numbered(connected(labels, background=0, connectivity=1), 8)
    areas = np.bincount(numbered.ravel())[1:]
    if not len(areas) or areas.max() > 0.9 * numbered.size:
        return None
    parents = {}
    for child, parent in chosen.parents.items():
        for piece in np.unique(numbered[labels == child]):
            around = numbered[ndimage.binary_dilation(numbered == piece) & (labels == parent)]
            if piece and (around > 0).any():  # the piece of the parent it lies in
                parents[int(piece)] = int(np.bincount(around[around > 0]).argmax())
    return image, numbered, parents


def real_training_scene(rng: np.random.Generator, size: int = 256) -> Scene:
    """A ``size`` square training scene cut from a real training image.

    The image is drawn by :data:`WEIGHTS`, magnified log-uniformly within :data:`SCALES`,
    cut around a labelled pixel (drawn again where the cut leaves no object of 8 pixels, or
    one that fills nine tenths of it), turned by a multiple of 90 degrees and maybe
    mirrored, inverted with chance :data:`INVERTED`, and tinted (a grey image turned to
    colour with chance one half, each colour channel scaled by 0.6-1).
    """
    images = training_images()
    weights = np.asarray(WEIGHTS) / sum(WEIGHTS)
    cut = None
    while cut is None:
        cut = _cut(images[rng.choice(len(images), p=weights)], size, rng)
    image, labels, parents = cut
    turns = int(rng.integers(4))
    image, labels = np.rot90(image, turns), np.rot90(labels, turns)
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    if rng.random() < INVERTED:
        image = 255 - image
    if image.ndim == 2 and rng.random() < 0.5:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim == 3:
        image = (image * rng.uniform(0.6, 1.0, 3)).astype(np.uint8)
    return Scene(np.ascontiguousarray(image), np.ascontiguousarray(labels),
                 IntensityWindow.fixed(0, 255), SceneKind.REAL_CROPS, parents)  # fmt: skip
