"""Labelled data sets: images paired with instance masks, label checks, the objects in them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.preprocess import IntensityWindow, SliceSource
from ..errors import ActiveSamError, ImageError
from .files import IMAGE_SUFFIXES, has_suffix, read_image, stem
from .image import ImageData
from .omezarr import is_zarr


@dataclass(frozen=True)
class ImagePair:
    """An image file and its instance-label mask file."""

    stem: str
    image: Path
    mask: Path


def pair_folders(images: Path, masks: Path) -> tuple[list[ImagePair], list[dict[str, str]]]:
    """Match ``images/*`` with ``masks/*`` by file stem (OME-Zarr images are folders
    named ``NAME.ome.zarr`` or ``NAME.zarr``).

    Returns
    -------
    pairs, skipped
        Matched pairs (sorted by stem; paths built from the folders as given), and
        ``{"file", "reason"}`` for files without a partner.

    Raises
    ------
    ActiveSamError
        A folder that does not exist.
    """
    for folder in (images, masks):
        if not Path(folder).is_dir():
            raise ActiveSamError(f"{folder} is not a folder: give a folder of image files.")

    twins: list[dict[str, str]] = []

    def by_stem(folder: Path) -> dict[str, Path]:
        files = sorted(p for p in Path(folder).iterdir()
                       if has_suffix(p, IMAGE_SUFFIXES) or is_zarr(p))  # fmt: skip
        named: dict[str, list[Path]] = {}
        for path in files:
            named.setdefault(stem(path), []).append(path)
        for same in (paths for paths in named.values() if len(paths) > 1):
            # case1.tif and case1.nii.gz: which one a mask (or image) belongs to is unclear
            names = " and ".join(p.name for p in same)
            twins.extend({"file": str(p), "reason": f"{names} share a name: rename all but "
                          "one, so that it is clear which one the mask is of"} for p in same)
        return {name: paths[0] for name, paths in named.items() if len(paths) == 1}

    found_images, found_masks = by_stem(images), by_stem(masks)
    for name in sorted({stem(Path(t["file"])) for t in twins}):  # nothing pairs with them
        for found, other in ((found_images, "masks"), (found_masks, "images")):
            if name in found:
                twins.append({"file": str(found.pop(name)), "reason": f"more than one of the "
                              f"{other} is named {name}: rename all but one"})  # fmt: skip
    common = sorted(found_images.keys() & found_masks.keys())
    pairs = [ImagePair(s, found_images[s], found_masks[s]) for s in common]
    skipped = [
        {"file": str(found_masks[s]), "reason": "mask with no image of the same name"}
        for s in sorted(found_masks.keys() - found_images.keys())
    ] + [
        {"file": str(found_images[s]), "reason": "image with no mask of the same name"}
        for s in sorted(found_images.keys() - found_masks.keys())
    ] + twins
    return pairs, skipped


def discover_pairs(data: Path) -> tuple[list[ImagePair], list[dict[str, str]]]:
    """:func:`pair_folders` of a labelled data set: ``data/images`` and ``data/masks``.

    Raises
    ------
    ActiveSamError
        ``data`` without both folders.
    """
    images, masks = Path(data) / "images", Path(data) / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise ActiveSamError(
            f"{data} must hold an images/ and a masks/ folder with matching file names."
        )
    return pair_folders(images, masks)


def check_labels(
    labels: np.ndarray, shape: tuple[int, ...], mask: str = "The mask", image: str = "the image"
) -> np.ndarray:
    """Instance labels checked against their image: int64, same shape, whole numbers.

    Parameters
    ----------
    labels : np.ndarray
        The mask: 0 = background, 1, 2, ... = objects.
    shape : tuple of int
        The image's spatial shape.
    mask, image : str
        How messages name the two (file names, when they come from files).

    Raises
    ------
    ImageError
        Another shape, a dtype that is not numeric, or values that are not whole numbers
        or are negative.
    """
    labels = np.asarray(labels)
    if labels.shape != tuple(shape):
        raise ImageError(
            f"{mask} has shape {labels.shape} but {image} has {tuple(shape)}: masks must "
            "match their image pixel for pixel."
        )
    if labels.dtype.kind not in "biuf":
        raise ImageError(f"{mask} has dtype {labels.dtype}: give integer instance labels.")
    if labels.dtype.kind == "f" and not (
        np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    ):
        raise ImageError(
            f"{mask} holds non-integer values: give instance labels as integers "
            "(0 = background, 1, 2, ... = objects)."
        )
    if labels.size and labels.min() < 0:
        raise ImageError(
            f"{mask} holds negative values (down to {labels.min():g}): give instance labels "
            "as 0 = background, 1, 2, ... = objects."
        )
    return labels.astype(np.int64, copy=False)


def load_pair(pair: ImagePair, window: IntensityWindow) -> tuple[SliceSource, np.ndarray]:
    """Read an image and its mask; check they fit; return the source and integer labels.

    Raises
    ------
    ImageError
        Shapes that differ, a mask with non-integer values, or a mask with no object.
    """
    source, labels, _, _ = load_scaled_pair(pair, window)
    return source, labels


def _read_as(path: Path, role: str) -> ImageData:
    """:func:`read_image`, its error saying which file of the pair (image or mask, in
    which folder) could not be read."""
    try:
        return read_image(path)
    except ImageError as error:
        raise ImageError(f"the {role} {path.parent.name}/{path.name}: {error}") from error


def load_scaled_pair(
    pair: ImagePair, window: IntensityWindow
) -> tuple[SliceSource, np.ndarray, tuple[float, ...], bool]:
    """:func:`load_pair`, the image's pixel or voxel size from its file (1 where the file
    records none), one per spatial axis, and whether the file records it."""
    image, mask = _read_as(pair.image, "image"), _read_as(pair.mask, "mask")
    labels = check_labels(
        mask.data, image.spatial_shape, pair.mask.name, f"its image {pair.image.name}"
    )
    if not (labels > 0).any():
        raise ImageError(
            f"{pair.mask.parent.name}/{pair.mask.name} contains no object (all pixels are 0): "
            "label its objects (1, 2, ...), or move the image and its mask out of the folder."
        )
    source = SliceSource(image.data, window, rgb=image.rgb)
    return source, labels, tuple(image.scale), image.spacing_known


@dataclass(frozen=True)
class ObjectTarget:
    """Where an object is evaluated: its label and the slice(s) of it to annotate.

    Attributes
    ----------
    label : int
    indices : tuple of tuple of int
        Leading indices of the slices: ``((),)`` for a 2D image, one slice (the largest)
        for a volume, or every slice the object is on in 3D mode.
    """

    label: int
    indices: tuple[tuple[int, ...], ...]


def object_targets(labels: np.ndarray, volume: bool = False) -> list[ObjectTarget]:
    """Every object of an instance-label image.

    In a volume an object is evaluated on its slice of largest area, or, with ``volume``,
    on every slice it appears on (each slice gets its own clicks; scores are pooled over
    the volume).
    """
    objects = []
    for label in np.unique(labels[labels > 0]):
        if labels.ndim == 2:
            objects.append(ObjectTarget(int(label), ((),)))
            continue
        mask = labels == label
        areas = mask.reshape(-1, *mask.shape[-2:]).sum(axis=(1, 2))
        flats = np.flatnonzero(areas) if volume else [int(np.argmax(areas))]
        indices = tuple(
            tuple(int(i) for i in np.unravel_index(flat, mask.shape[:-2])) for flat in flats
        )
        objects.append(ObjectTarget(int(label), indices))
    return objects


def dataset_window(data: Path, stem: str, override: str | None = None) -> IntensityWindow:
    """The intensity window of image ``stem`` of a labelled data set: ``override`` (a window
    name) when given, else the one ``make-dataset`` recorded in ``data/objects.json``, else
    percentiles."""
    if override:
        return IntensityWindow.from_name(override)
    index = Path(data) / "objects.json"
    if index.is_file():
        entry = json.loads(index.read_text()).get("images", {}).get(stem)
        if entry and "window" in entry:
            spec = entry["window"]
            if spec["kind"] == "fixed":
                return IntensityWindow.fixed(spec["low"], spec["high"], spec["name"])
            return IntensityWindow.percentile(spec["low"], spec["high"])
    return IntensityWindow.percentile()


