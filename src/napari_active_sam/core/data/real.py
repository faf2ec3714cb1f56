"""Real images with instance labels, built from files that ship inside installed packages.

Nothing is downloaded: every image is a file that scikit-image, nibabel or pydicom installs,
and every label is made from it by a fixed, documented rule (a threshold in physical units,
colour deconvolution, morphology, watershed), so the set is the same on every machine. The
subsets, named at the start of each file name:

- ``photo-coins``: scikit-image's ``coins.png``, a photograph of 24 coins; each coin by the
  scikit-image gallery's elevation-map watershed (Sobel gradient, markers from dark
  background and bright coin pixels), holes filled.
- ``nuclei-ihc``: scikit-image's ``ihc.png``, immunohistochemistry (DAB, brown, on
  hematoxylin counterstain, blue); nuclei of the stroma by colour deconvolution
  (:func:`skimage.color.rgb2hed`): the hematoxylin channel thresholded outside the
  DAB-stained epithelium, touching nuclei split by a watershed from the hematoxylin maxima,
  then only compact nuclei of nucleus size (area, solidity) whose surroundings are unstained.
  The epithelial nuclei, packed edge to edge in brown, are left out: no rule splits them
  defensibly.
- ``mri-epi``: nibabel's ``example4d.nii.gz`` (first volume), a real T2*-weighted echo-planar
  brain MRI, 2 mm: the brain (Otsu threshold of the volume, opening, largest component, holes
  filled) on several axial slices, and the lateral ventricles (bright CSF: above 1.1 times
  the brain's median, 10 voxels (20 mm) inside the brain, the largest component crossing
  the midline) on slices where they are large. The real volume of the 3D protocol labels
  the ventricles as one 3D object: the bright CSF connected in 3D to the lateral ventricles
  of the slice where they are largest (frontal horns, bodies, third ventricle and, joined
  at 2 mm, the basal cisterns).
- ``ct-chest``: pydicom's ``CT_small.dcm``, a real 128 x 128 thoracic CT slice in Hounsfield
  units, shown in the bone window: the two lungs (air, <= -400 HU, vessels inside filled)
  and the vertebra (the largest region >= 200 HU, marrow spaces filled: its cancellous bone
  is 150-300 HU, so the 300 HU cortical threshold would keep only shells).
- ``ct-head``: pydicom's ``693_J2KI.dcm``, a real 512 x 512 head CT slice: the head
  (>= -500 HU, the largest region, holes filled; the head holder is a separate region and
  left out), the skull (largest region >= 300 HU) and the intracranial space it encloses,
  shown in the soft-tissue window.

nibabel's ``anatomical.nii`` (T1) is not used: a crop from inside the brain with no brain
outline, and ventricles 2-4 voxels wide. Structures that contain each other (a head and its
skull, a brain and its ventricles) are written as separate image files (*layers*).

Two splits draw on different pixels: ``validation`` and ``test`` take the two halves of each
photograph and micrograph (coins: top and bottom two rows; IHC: left and right halves, each
nucleus wholly inside its half), alternate slices of the MRI volume, and different CT
slices (``ct-chest`` in validation, ``ct-head`` in test). The MRI slices of both splits come
from one subject, so only the CT split is between patients.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from scipy import ndimage

from ..engine.preprocess import IntensityWindow
from ..errors import ActiveSamError

SPLITS = ("validation", "test")
"""Choose settings on ``validation``; report on ``test``."""

SUBSETS = ("photo-coins", "nuclei-ihc", "mri-epi", "ct-chest", "ct-head")
"""Subset names; every file name starts with its subset's."""

BONE_HU = 300.0
"""Cortical bone (the skull): at least this many Hounsfield units."""
VERTEBRA_HU = 200.0
"""Vertebral bone, cancellous included: at least this many Hounsfield units."""
MARROW_MAX_PIXELS = 200
"""Holes in the vertebra smaller than this are marrow spaces (filled); the spinal canal,
larger, stays open."""
LUNG_HU = -400.0
"""Lung air: at most this many Hounsfield units."""
BODY_HU = -500.0
"""Body (or head) versus the air around it."""

MRI_SLICES = {
    "validation": {"brain": (8, 12, 16, 18, 21), "ventricles": (12, 16, 18)},
    "test": {"brain": (9, 13, 17, 19, 22), "ventricles": (13, 17, 19)},
}
"""Axial slices of ``example4d.nii.gz`` (inferior to superior): brain on each, lateral
ventricles where they are large (frontal horns at 12-13, bodies at 16-19)."""


@dataclass(frozen=True)
class RealImage:
    """A real image with instance labels.

    Attributes
    ----------
    name : str
        File stem, starting with the subset's name (``photo-coins-top``).
    subset : str
        One of :data:`SUBSETS`.
    image : np.ndarray
        ``(H, W)`` grayscale (uint8, or int16 Hounsfield units / MR signal) or ``(H, W, 3)``
        uint8 RGB.
    labels : np.ndarray
        int32 ``(H, W)`` instance labels, 0 = background.
    window : IntensityWindow
        The window to show and encode the image with.
    source : str
        The package file it was made from.
    structures : dict of int to str
        What each label is.
    """

    name: str
    subset: str
    image: np.ndarray
    labels: np.ndarray
    window: IntensityWindow
    source: str
    structures: dict[int, str] = field(default_factory=dict)

    @property
    def spatial_shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2])


def subset_of(stem: str) -> str:
    """The subset a file stem belongs to (``mri-epi-z12-brain`` → ``mri-epi``)."""
    for subset in sorted(SUBSETS, key=len, reverse=True):
        if stem == subset or stem.startswith(subset + "-"):
            return subset
    raise ActiveSamError(f"{stem!r} starts with none of the real subsets {', '.join(SUBSETS)}.")


def package_file(package: str, *parts: str) -> Path:
    """The file ``parts`` inside the installed ``package``'s folder.

    Raises
    ------
    ActiveSamError
        The file is not there (a package installed without its data files).
    """
    module = importlib.import_module(package)
    path = Path(module.__file__).parent.joinpath(*parts)
    if not path.is_file():
        raise ActiveSamError(
            f"{path} is missing: the real images are read from files that {package} "
            "installs; reinstall it with its data files."
        )
    return path


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ActiveSamError(f"Unknown split {split!r}: use one of {', '.join(SPLITS)}.")
    return split


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def _largest(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Labels 1..n in raster order of each object's first pixel."""
    out = np.zeros(labels.shape, np.int32)
    values, first = np.unique(labels.ravel(), return_index=True)
    keep = values > 0
    for new, value in enumerate(values[keep][np.argsort(first[keep])], start=1):
        out[labels == value] = new
    return out


def _inside_crop(labels: np.ndarray, region: tuple[slice, slice]) -> np.ndarray:
    """The crop ``labels[region]`` keeping only objects wholly inside it, off its edge."""
    crop = labels[region]
    edge = np.unique(np.concatenate([crop[0], crop[-1], crop[:, 0], crop[:, -1]]))
    kept = np.where(np.isin(crop, edge), 0, crop)
    whole = [v for v in np.unique(kept[kept > 0]) if (labels == v).sum() == (kept == v).sum()]
    return _renumber(np.where(np.isin(kept, whole), kept, 0))


# -- photographs -----------------------------------------------------------------------


COIN_HALVES = {
    "validation": ("top", (slice(0, 150), slice(None))),
    "test": ("bottom", (slice(150, None), slice(None))),
}
"""The coins lie in four rows; image rows 0-149 hold the top two, 150- the bottom two."""


COIN_BACKGROUND = 30
"""Grey levels (uint8) under which ``coins.png`` is surely background."""
COIN_LEVEL = 150
"""Grey levels over which ``coins.png`` is surely a coin."""


def coin_labels(image: np.ndarray, background: float = COIN_BACKGROUND,
                coin: float = COIN_LEVEL) -> np.ndarray:  # fmt: skip
    """Coins of ``coins.png`` by elevation-map watershed (the scikit-image gallery's method).

    Markers: background below ``background``, coins above ``coin`` (uint8); the watershed of
    the Sobel gradient grows them; coin regions get their holes filled and are labelled;
    specks under 200 pixels are dropped.
    """
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    markers = np.zeros(image.shape, np.int32)
    markers[image < background] = 1
    markers[image > coin] = 2
    coins = ndimage.binary_fill_holes(watershed(sobel(image), markers) == 2)
    labels, _ = ndimage.label(coins)
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < 200] = 0
    return _renumber(labels)


def skimage_picture(name: str) -> tuple[np.ndarray, Path]:
    """A picture scikit-image installs (``coins.png``, ``ihc.png``) as uint8 pixels, RGB
    without alpha where it has colour, and its path."""
    path = package_file("skimage.data", name)
    pixels = np.asarray(iio.imread(path), np.uint8)
    return (pixels[..., :3] if pixels.ndim == 3 else pixels), path


def photo_coins(split: str = "validation") -> list[RealImage]:
    """The coins photograph's half for ``split``: top two rows (validation) or bottom two."""
    image, path = skimage_picture("coins.png")
    return _half(image, coin_labels(image), COIN_HALVES, split, "photo-coins", path, "coin")


def _half(image: np.ndarray, labels: np.ndarray, halves: dict, split: str, subset: str,
          path: Path, what: str) -> list[RealImage]:  # fmt: skip
    """The part of a scikit-image picture (and of its labels) that ``halves`` gives
    ``split``, as one :class:`RealImage` whose objects are each a ``what``."""
    half, region = halves[_check_split(split)]
    labels = _inside_crop(labels, region)
    return [
        RealImage(
            name=f"{subset}-{half}",
            subset=subset,
            image=np.ascontiguousarray(image[region]),
            labels=labels,
            window=IntensityWindow.percentile(),
            source=f"skimage/data/{path.name}",
            structures={int(v): what for v in np.unique(labels[labels > 0])},
        )
    ]


# -- microscopy ------------------------------------------------------------------------

HEMATOXYLIN_MIN = 0.02
"""Hematoxylin optical density (rgb2hed, smoothed with sigma 1) of stromal nuclei."""
IHC_HALVES = {
    "validation": ("left", (slice(None), slice(0, 256))),
    "test": ("right", (slice(None), slice(256, None))),
}
"""Left and right halves: the stroma, where the labelled nuclei are, spans both equally."""


def ihc_nuclei_labels(rgb: np.ndarray, hematoxylin_min: float = HEMATOXYLIN_MIN) -> np.ndarray:
    """Stromal nuclei of ``ihc.png`` by colour deconvolution, threshold and watershed.

    1. Epithelium: the DAB channel smoothed (sigma 6) above its Otsu threshold, closed
       (radius 8), holes filled, regions under 2000 pixels dropped, grown by 4 pixels.
    2. Nuclei: hematoxylin (sigma 1) above ``hematoxylin_min`` outside the epithelium,
       opened (radius 1), holes filled.
    3. Touching nuclei: watershed of the hematoxylin (sigma 2) from its maxima at least
       0.005 above their surroundings.
    4. Kept: 40-1000 pixels, solidity above 0.85, not touching the image edge, and a 4-pixel
       ring around the nucleus whose mean DAB (sigma 3) is under 0.7 times the epithelium
       threshold (a nucleus in the stroma, not at the edge of a gland).
    """
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu
    from skimage.measure import regionprops
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    hed = rgb2hed(rgb)
    hema, dab = hed[..., 0], hed[..., 2]
    dab_smooth = ndimage.gaussian_filter(dab, 6)
    dab_threshold = float(threshold_otsu(dab_smooth))
    pad = 20  # close and fill away from the image edge, so glands cut by it stay whole
    epithelium = np.pad(dab_smooth > dab_threshold, pad, mode="edge")
    epithelium = ndimage.binary_closing(epithelium, _disk(8))
    epithelium = ndimage.binary_fill_holes(epithelium)[pad:-pad, pad:-pad]
    regions, _ = ndimage.label(epithelium)
    epithelium = (np.bincount(regions.ravel())[regions] >= 2000) & (regions > 0)
    epithelium = ndimage.binary_dilation(epithelium, _disk(4))

    nuclei = (ndimage.gaussian_filter(hema, 1) > hematoxylin_min) & ~epithelium
    nuclei = ndimage.binary_fill_holes(ndimage.binary_opening(nuclei, _disk(1)))
    hema2 = ndimage.gaussian_filter(hema, 2)
    markers, _ = ndimage.label(h_maxima(hema2, 0.005).astype(bool) & nuclei)
    split = watershed(-hema2, markers, mask=nuclei)

    dab3 = ndimage.gaussian_filter(dab, 3)
    height, width = split.shape
    kept = np.zeros(split.shape, np.int32)
    for region in regionprops(split):
        top, left, bottom, right = region.bbox
        if not (40 <= region.area <= 1000 and region.solidity > 0.85):
            continue
        if top == 0 or left == 0 or bottom == height or right == width:
            continue
        mask = split == region.label
        ring = ndimage.binary_dilation(mask, _disk(4)) & ~mask
        if dab3[ring].mean() > 0.7 * dab_threshold:
            continue
        kept[mask] = region.label
    return _renumber(kept)


def nuclei_ihc(split: str = "validation") -> list[RealImage]:
    """The IHC micrograph's half for ``split`` (left or right 256 columns), RGB."""
    rgb, path = skimage_picture("ihc.png")
    return _half(rgb, ihc_nuclei_labels(rgb), IHC_HALVES, split, "nuclei-ihc", path, "nucleus")


# -- MRI -------------------------------------------------------------------------------


def epi_volume() -> np.ndarray:
    """``example4d.nii.gz``, first volume, as int16 ``(z, y, x)`` axial slices shown with
    anterior up (nibabel's LAS voxel axes rotated)."""
    import nibabel

    path = package_file("nibabel", "tests", "data", "example4d.nii.gz")
    data = np.asarray(nibabel.load(str(path)).dataobj)[..., 0]
    return np.ascontiguousarray(np.rot90(np.moveaxis(data, 2, 0), axes=(1, 2)), np.int16)


def brain_masks(volume: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Brain of each slice: above the volume's Otsu threshold (times ``scale``), opened
    (radius 2), the largest region, holes filled. Boolean ``(z, y, x)``."""
    from skimage.filters import threshold_otsu

    threshold = scale * threshold_otsu(volume.astype(np.float64))
    return np.stack([
        ndimage.binary_fill_holes(
            _largest(ndimage.binary_opening(plane > threshold, _disk(2)))
        )
        for plane in volume
    ])  # fmt: skip


CSF_FACTOR = 1.1
"""CSF is brighter than this many times the brain's median signal (:func:`bright_csf`)."""


def bright_csf(plane: np.ndarray, brain: np.ndarray, factor: float = CSF_FACTOR) -> np.ndarray:
    """CSF of an EPI slice, bright in T2*: signal (sigma 1) above ``factor`` times the
    brain's median, at least 10 voxels inside the brain (cortical grey matter is bright
    too)."""
    smooth = ndimage.gaussian_filter(plane.astype(np.float64), 1)
    inside = ndimage.binary_erosion(brain, _disk(10))
    return (smooth > factor * np.median(plane[brain])) & inside


def ventricle_mask(plane: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Lateral ventricles of an EPI slice: of its :func:`bright_csf`, the largest region
    that crosses the brain's midline and covers 40 voxels; empty if none does."""
    return _midline_region(bright_csf(plane, brain), brain)


def _midline_region(csf: np.ndarray, brain: np.ndarray) -> np.ndarray:
    regions, _ = ndimage.label(csf)
    columns = np.flatnonzero(brain.any(axis=0))
    midline = (columns[0] + columns[-1]) / 2
    best, best_area = 0, 0
    for value, found in enumerate(ndimage.find_objects(regions), start=1):
        area = int((regions[found] == value).sum())
        if found[1].start <= midline < found[1].stop and area >= 40 and area > best_area:
            best, best_area = value, area
    return regions == best if best else np.zeros(csf.shape, bool)


def ventricular_csf(volume: np.ndarray, brains: np.ndarray,
                    factor: float = CSF_FACTOR) -> np.ndarray:  # fmt: skip
    """The ventricles as one 3D object: the bright CSF connected in 3D to the lateral
    ventricles of the slice where :func:`ventricle_mask` finds them largest.

    Slice by slice, the largest midline region is another CSF space on some slices (a frontal
    or parieto-occipital sulcus) while the frontal horns and the third ventricle lie beside
    it; connectivity keeps the ventricular spaces and drops the rest. At 2 mm the basal
    cisterns below the third ventricle join it and are kept.
    """
    csf = np.stack([bright_csf(plane, brain, factor)
                    for plane, brain in zip(volume, brains, strict=True)])  # fmt: skip
    per_slice = np.stack([_midline_region(c, brain) for c, brain in zip(csf, brains,
                                                                         strict=True)])
    if not per_slice.any():
        raise ActiveSamError("No lateral ventricles found on any slice of the volume.")
    seed = int(np.argmax(per_slice.sum(axis=(1, 2))))
    regions, _ = ndimage.label(csf)
    keep = np.unique(regions[seed][per_slice[seed]])
    return np.isin(regions, keep)


def epi_spacing() -> tuple[float, float, float]:
    """Voxel size ``(z, y, x)`` in mm of :func:`epi_volume` (the rotation swaps y and x)."""
    import nibabel

    path = package_file("nibabel", "tests", "data", "example4d.nii.gz")
    x, y, z = (float(v) for v in nibabel.load(str(path)).header.get_zooms()[:3])
    return z, x, y


def mri_epi_volume() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A real volume with 3D objects: the EPI volume, its labels (1 brain without the
    ventricles, 2 ventricles) and its spacing.

    The ventricles are :func:`ventricular_csf`: connected in 3D, unlike the slices' own
    :func:`ventricle_mask` regions, which on slices above and below the lateral ventricles'
    bodies pick other CSF.
    """
    volume = epi_volume()
    brains = brain_masks(volume)
    ventricles = ventricular_csf(volume, brains)
    labels = np.where(brains, 1, 0).astype(np.int32)
    labels[ventricles] = 2
    return volume, labels, epi_spacing()


def mri_epi(split: str = "validation") -> list[RealImage]:
    """Axial EPI slices of ``split``: one image per slice with the brain, and one per
    ventricle slice with the lateral ventricles."""
    slices = MRI_SLICES[_check_split(split)]
    volume = epi_volume()
    brains = brain_masks(volume)
    source = "nibabel/tests/data/example4d.nii.gz (volume 0)"
    images = []
    for z in sorted(set(slices["brain"]) | set(slices["ventricles"])):
        layers = []
        if z in slices["brain"]:
            layers.append(("brain", brains[z], "brain"))
        if z in slices["ventricles"]:
            mask = ventricle_mask(volume[z], brains[z])
            if not mask.any():
                raise ActiveSamError(f"No ventricles found on slice {z} of {source}.")
            layers.append(("ventricles", mask, "lateral ventricles"))
        for layer, mask, what in layers:
            images.append(
                RealImage(
                    name=f"mri-epi-z{z:02d}-{layer}",
                    subset="mri-epi",
                    image=volume[z],
                    labels=mask.astype(np.int32),
                    window=IntensityWindow.percentile(),
                    source=f"{source}, axial slice {z}",
                    structures={1: what},
                )
            )
    return images


# -- CT --------------------------------------------------------------------------------


def read_hounsfield(name: str) -> tuple[np.ndarray, str]:
    """A pydicom test file's pixels in Hounsfield units (RescaleSlope/Intercept applied),
    as int16, and where it came from."""
    import pydicom

    path = package_file("pydicom.data", "test_files", name)
    dataset = pydicom.dcmread(path)
    slope = float(getattr(dataset, "RescaleSlope", 1.0))
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0))
    hu = dataset.pixel_array.astype(np.float64) * slope + intercept
    return np.round(hu).astype(np.int16), f"pydicom/data/test_files/{name}"


def ct_chest_labels(
    hu: np.ndarray, lung_hu: float = LUNG_HU, vertebra_hu: float = VERTEBRA_HU
) -> tuple[np.ndarray, dict[int, str]]:
    """Lungs and vertebra of ``CT_small.dcm``.

    Lungs: regions of at most ``lung_hu`` covering 200 pixels, vessels inside filled.
    Vertebra: the largest region of at least ``vertebra_hu``, its marrow spaces (holes
    under :data:`MARROW_MAX_PIXELS`) filled. The vertebral body's cancellous bone is 150-300
    HU here, so :data:`BONE_HU` would keep only the cortex of the arch and thin shells of
    the body; 200 HU takes the whole vertebra and stays above the contrast-filled aorta
    beside it (140-190 HU).
    """
    labels = np.zeros(hu.shape, np.int32)
    air, count = ndimage.label(hu <= lung_hu)
    sizes = np.bincount(air.ravel())
    lungs = [v for v in range(1, count + 1) if sizes[v] >= 200]
    for value in lungs:
        labels[ndimage.binary_fill_holes(air == value)] = value
    labels = _renumber(labels)
    structures = {int(v): "lung" for v in np.unique(labels[labels > 0])}
    bone = _largest(hu >= vertebra_hu)
    holes, _ = ndimage.label(ndimage.binary_fill_holes(bone) & ~bone)
    marrow = (holes > 0) & (np.bincount(holes.ravel())[holes] < MARROW_MAX_PIXELS)
    value = len(structures) + 1
    labels[(bone | marrow) & (labels == 0)] = value
    structures[value] = "vertebra"
    return labels, structures


def ct_head_layers(
    hu: np.ndarray, body_hu: float = BODY_HU, bone_hu: float = BONE_HU
) -> dict[str, tuple[np.ndarray, dict[int, str]]]:
    """Head outline, skull and intracranial space of ``693_J2KI.dcm``, in two layers.

    ``body``: the largest region of at least ``body_hu``, holes filled. ``skull``: the
    skull (largest region of at least ``bone_hu``) as label 1 and the intracranial space
    it encloses (holes of the skull, largest region) as label 2.
    """
    head = ndimage.binary_fill_holes(_largest(hu >= body_hu))
    skull = _largest(hu >= bone_hu)
    inside = _largest(ndimage.binary_fill_holes(skull) & ~skull)
    inner = np.zeros(hu.shape, np.int32)
    inner[skull] = 1
    inner[inside] = 2
    return {
        "body": (head.astype(np.int32), {1: "head"}),
        "skull": (inner, {1: "skull (bone)", 2: "intracranial space"}),
    }


def ct_chest(split: str = "validation") -> list[RealImage]:
    """``CT_small.dcm`` (validation only)."""
    if _check_split(split) != "validation":
        return []
    hu, source = read_hounsfield("CT_small.dcm")
    labels, structures = ct_chest_labels(hu)
    window = IntensityWindow.ct("bone")  # in soft tissue the vertebra and aorta both saturate
    return [RealImage("ct-chest-small", "ct-chest", hu, labels, window, source, structures)]


def ct_head(split: str = "validation") -> list[RealImage]:
    """``693_J2KI.dcm`` (test only), one image per layer."""
    if _check_split(split) != "test":
        return []
    hu, source = read_hounsfield("693_J2KI.dcm")
    window = IntensityWindow.ct("soft_tissue")
    return [
        RealImage(f"ct-head-{layer}", "ct-head", hu, labels, window, source, structures)
        for layer, (labels, structures) in ct_head_layers(hu).items()
    ]


BUILDERS: dict[str, Callable[[str], list[RealImage]]] = {
    "photo-coins": photo_coins,
    "nuclei-ihc": nuclei_ihc,
    "mri-epi": mri_epi,
    "ct-chest": ct_chest,
    "ct-head": ct_head,
}
"""Each subset's builder, by subset name."""


def real_images(split: str = "validation") -> list[RealImage]:
    """Every labelled real image of ``split``, subset by subset."""
    _check_split(split)
    return [image for build in BUILDERS.values() for image in build(split)]
