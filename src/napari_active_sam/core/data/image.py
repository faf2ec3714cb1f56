"""An image read from disk, and the checks every reader makes before it allocates."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError

MAX_IMAGE_BYTES = int(float(os.environ.get("NAPARI_ACTIVE_SAM_MAX_IMAGE_GB", "16")) * 2**30)
"""The most memory one image may take once read (``NAPARI_ACTIVE_SAM_MAX_IMAGE_GB`` sets it;
16 GB by default): a header claiming more is refused before anything is allocated."""
DEFLATE_RATIO = 1032
"""deflate (gzip, zlib) expands a byte to at most this many, so a compressed file of n bytes
cannot hold more than ``n * DEFLATE_RATIO`` bytes of image."""
COMPRESSED_RATIO = 4096
"""The most any image codec a reader meets here (deflate, LZW, PackBits, RLE, JPEG-LS,
JPEG 2000) is allowed to expand, so a tiny file cannot make a decoder allocate gigabytes."""


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
    spacing_known : bool
        Whether the file states its pixel size (False: ``scale`` is 1.0 per axis, and
        distances, areas and volumes are in pixels).
    """

    data: np.ndarray
    scale: tuple[float, ...]
    rgb: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    spacing_known: bool = True

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of ``data`` without the colour axis: what a mask of it must have."""
        return self.data.shape[:-1] if self.rgb else self.data.shape


def check_claimed_size(
    path: Path,
    shape: tuple[int, ...],
    itemsize: float,
    *,
    stored: int | None = None,
    ratio: float = 1,
    limit: int | None = None,
) -> int:
    """Refuse a header whose image could not be in the file or would not fit in memory.

    Parameters
    ----------
    path : Path
        The file, named in the message.
    shape, itemsize
        What the header claims.
    stored : int, optional
        Bytes the file has for the image (its size less the header); None when unknown.
    ratio : float
        How much the stored bytes may expand (1 uncompressed, :data:`DEFLATE_RATIO` for
        deflate).
    limit : int, optional
        The most bytes allowed; :data:`MAX_IMAGE_BYTES` by default.

    Returns
    -------
    int
        The image's size in bytes.

    Raises
    ------
    ImageError
        If a dimension is not positive, or the image is larger than the file can hold or
        than the limit.
    """
    limit = MAX_IMAGE_BYTES if limit is None else limit
    if any(int(n) <= 0 for n in shape):
        raise ImageError(f"{path.name}: its header gives the image shape {tuple(shape)}; the "
                         "file is damaged or holds no image.")  # fmt: skip
    size = math.ceil(math.prod(int(n) for n in shape) * itemsize)
    if stored is not None and size > stored * ratio:
        raise ImageError(
            f"{path.name}: its header claims {_gb(size)} of image {tuple(shape)} but the file "
            f"holds {stored:,} bytes for it: the file is truncated or damaged."
        )
    free = _free_memory()
    if size > limit or (free is not None and size > free):
        room = f"the {_gb(limit)} allowed" if size > limit else f"the {_gb(free)} of free memory"
        lazily = (
            "Open it lazily instead: convert it to OME-Zarr (`napari-active-sam convert "
            f"{path.name} --out {path.name.split('.')[0]}.ome.zarr`, slice by slice) and open "
            "the .ome.zarr folder, which is read slice by slice as you annotate; or crop it, "
        ) if path.name.lower().endswith(CONVERTIBLE) else "Crop it or open fewer slices, "
        raise ImageError(
            f"{path.name}: the image {tuple(shape)} would take {_gb(size)}, more than {room}: "
            f"it does not fit read whole. {lazily}or set NAPARI_ACTIVE_SAM_MAX_IMAGE_GB higher."
        )
    return size


CONVERTIBLE = (".tif", ".tiff", ".nii", ".nii.gz")
"""Files ``napari-active-sam convert`` writes as OME-Zarr."""


def _free_memory() -> int | None:
    """Bytes of memory available now (None where the system does not say)."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def checked_spacing(path: Path, spacing: tuple[float, ...], what: str) -> tuple[float, ...]:
    """``spacing`` if every value is finite and positive, else 1.0 each, with a warning that
    names what was assumed."""
    values = tuple(float(s) for s in spacing)
    if all(math.isfinite(s) and s > 0 for s in values):
        return values
    warnings.warn(
        f"{path.name}: {what} {values} is not a positive size; 1.0 is assumed per axis, so "
        "distances on screen are in voxels.",
        UserWarning,
        stacklevel=3,
    )
    return (1.0,) * len(values)


def _gb(size: int) -> str:
    return f"{size / 2**30:.2f} GB" if size >= 2**26 else f"{size:,} bytes"


def stored_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` in the smallest signed type that holds every label, unsigned 32 bits past
    the signed ones' reach (a type that wrapped a label round would merge or lose objects).

    Raises
    ------
    ImageError
        Labels that are not whole numbers, or that do not fit 64 bits.
    """
    if not np.issubdtype(labels.dtype, np.integer):
        raise ImageError(f"Labels must be whole numbers, got {labels.dtype}: give a labels "
                         "layer or an integer array.")  # fmt: skip
    top, bottom = int(labels.max(initial=0)), int(labels.min(initial=0))
    for kind in (np.int16, np.int32, np.uint32, np.int64):
        info = np.iinfo(kind)
        if info.min <= bottom and top <= info.max:
            return labels.astype(kind, copy=False)
    raise ImageError(f"Labels up to {top} do not fit 64 bits: number the objects again.")
