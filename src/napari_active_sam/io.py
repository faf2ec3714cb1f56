"""npe2 readers and writers: NIfTI, DICOM series folders and SEG files, TIFF stacks, OME-Zarr."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .core.data.dicom import is_dicom
from .core.data.dicom_seg import is_seg, read_seg, write_seg
from .core.data.files import (
    DICOM_SUFFIXES,
    NIFTI_SUFFIXES,
    TIFF_SUFFIXES,
    has_suffix,
    read_image,
    stem,
    write_labels,
)
from .core.data.omezarr import is_ome_zarr, is_zarr
from .core.errors import ImageError
from .core.keeping import save_or_keep

READER_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + DICOM_SUFFIXES + (".zarr",)
"""What the reader takes besides DICOM series folders (the manifest's filename patterns)."""
PLUGIN = "napari-active-sam"


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """npe2 reader contribution: NIfTI and TIFF files, DICOM files (their series), DICOM
    series folders and OME-Zarr images (read lazily)."""
    if isinstance(path, list):
        return None
    if has_suffix(path, (".zarr",)) or is_zarr(Path(path)):
        # A zarr group that is no OME-Zarr image is left to readers that know it.
        return _napari_read if is_ome_zarr(Path(path)) else None
    if has_suffix(path, TIFF_SUFFIXES) and _channels(Path(path)) > 1:
        return None  # napari's own reader shows the channels; the annotator takes one
    if has_suffix(path, READER_SUFFIXES) or _holds_dicom(Path(path)):
        return _napari_read
    return None


def _holds_dicom(folder: Path, sample: int = 20) -> bool:
    """Whether a folder holds DICOM files (among the first ``sample`` files not hidden, so
    that a copy from macOS, with a ``._`` file beside each, is still claimed); False for a
    folder that cannot be listed."""
    try:
        if not folder.is_dir():
            return False
        shown = (p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
        files = sorted(shown)[:sample]
    except OSError:  # no permission to list it: not this reader's to claim
        return False
    return any(is_dicom(p) for p in files)


def _channels(path: Path) -> int:
    """How many channels a TIFF's first image states (1 when it states none or cannot be
    read: the reader then says what is wrong)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            axis = series.axes.find("C")
            return int(series.shape[axis]) if axis >= 0 else 1
    except Exception:  # a damaged file: read_image explains it
        return 1


def napari_write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer contribution: a Labels layer to NIfTI (the source's grid kept when the
    layer came from a NIfTI image), TIFF, or, for labels on a DICOM series, a DICOM SEG
    that refers to that series (``.dcm``). A multiscale layer is written at its full
    resolution. A file that cannot be written is kept in the fallback folder, and the
    error says where; one written before at ``path`` is left whole."""
    source = meta.get("metadata", {}) or {}
    labels = np.asarray(data[0] if meta.get("multiscale") else data)
    if has_suffix(path, DICOM_SUFFIXES):
        files = source.get("files")
        if not files:
            raise ImageError(
                "A DICOM SEG refers to the DICOM series the labels were drawn on, and these "
                "labels come from no series: save them as NIfTI or TIFF."
            )

        def write(target: Path) -> Path:
            return write_seg(Path(files[0]).parent, labels, target,
                             series_uid=source.get("series_uid"))  # fmt: skip
    else:
        scale = meta.get("scale")
        scale = tuple(scale) if scale is not None else None

        def write(target: Path) -> Path:
            return write_labels(target, labels, source, scale)

    return [str(save_or_keep(write, Path(path), "the labels"))]


def _napari_read(path: str) -> list[tuple]:
    if has_suffix(path, DICOM_SUFFIXES) and is_seg(Path(path)):
        return _read_segmentation(Path(path))
    image = read_image(path)
    name = image.metadata.get("series_description") or stem(path)  # a DICOM series' own name
    meta = {"name": name, "scale": image.scale, "rgb": image.rgb, "metadata": image.metadata}
    return [(image.data, meta, "image")]


def _read_segmentation(path: Path) -> list[tuple]:
    """A DICOM SEG as a Labels layer on its series' grid (the series in the same folder);
    each object's segment description in the layer's features."""
    labels, descriptions, scale = read_seg(path)
    objects = sorted(descriptions)
    features = {"index": [0, *objects], "description": ["", *(descriptions[k] for k in objects)]}
    meta = {"name": f"{stem(path)} (DICOM SEG)", "scale": scale, "features": features}
    return [(labels, meta, "labels")]
