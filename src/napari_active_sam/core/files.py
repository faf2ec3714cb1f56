"""Image files: NIfTI, TIFF stacks, PNG/JPEG, NumPy, read into napari's axis order.

Arrays come back in napari's axis order, ``(z, y, x)`` for volumes, with the voxel spacing
in the same order, so a layer's ``scale`` shows anisotropic volumes correctly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + PLAIN_SUFFIXES + (".npy",)


@dataclass
class ImageData:
    """An image read from disk.

    Attributes
    ----------
    data : np.ndarray
        ``(y, x)``, ``(z, y, x)`` or ``(y, x, 3)`` array.
    scale : tuple of float
        Spacing per axis of ``data`` (1.0 where unknown; colour axes excluded).
    rgb : bool
        Whether the last axis is colour.
    metadata : dict
        Format-specific extras (the NIfTI affine, for writing labels back).
    """

    data: np.ndarray
    scale: tuple[float, ...]
    rgb: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


def has_suffix(path: Path | str, suffixes: tuple[str, ...]) -> bool:
    return str(path).lower().endswith(suffixes)


def stem(path: Path | str) -> str:
    """File name without its image suffix (``ct.nii.gz`` → ``ct``)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _read_nifti(path: Path) -> ImageData:
    import nibabel

    try:
        image = nibabel.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for a damaged file
        raise ImageError(f"{path} is not a readable NIfTI file ({exc}).") from exc
    zooms = tuple(float(z) for z in image.header.get_zooms()[: data.ndim])
    # NIfTI stores (i, j, k); napari shows the last two axes, so put k (slices) first.
    order = tuple(reversed(range(min(data.ndim, 3)))) + tuple(range(3, data.ndim))
    return ImageData(
        data=np.transpose(data, order),
        scale=tuple(zooms[i] for i in order[: len(zooms)]),
        metadata={"affine": np.asarray(image.affine), "axes_order": order},
    )


def _read_tiff(path: Path) -> ImageData:
    import tifffile

    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for a damaged file
        raise ImageError(f"{path} is not a readable TIFF file ({exc}).") from exc
    rgb = data.ndim >= 3 and data.shape[-1] in (3, 4) and data.dtype == np.uint8
    spatial = data.ndim - (1 if rgb else 0)
    return ImageData(data=data, scale=(1.0,) * spatial, rgb=rgb)


def _read_plain(path: Path) -> ImageData:
    import imageio.v3 as iio

    data = iio.imread(path)
    rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    return ImageData(data=data, scale=(1.0, 1.0), rgb=rgb)


def read_image(path: Path | str) -> ImageData:
    """Read an image file (NIfTI, TIFF, PNG/JPEG/BMP, ``.npy``).

    Raises
    ------
    ImageError
        If the file does not exist, has an unknown suffix or cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} does not exist.")
    if has_suffix(path, NIFTI_SUFFIXES):
        return _read_nifti(path)
    if has_suffix(path, TIFF_SUFFIXES):
        return _read_tiff(path)
    if has_suffix(path, PLAIN_SUFFIXES):
        return _read_plain(path)
    if has_suffix(path, (".npy",)):
        data = np.load(path, allow_pickle=False)
        return ImageData(data=data, scale=(1.0,) * data.ndim)
    raise ImageError(f"{path.name}: unknown image type. Use one of {', '.join(IMAGE_SUFFIXES)}.")
