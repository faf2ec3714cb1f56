"""npe2 readers (and, later, writers) for the file types napari-active-sam knows."""

from __future__ import annotations

from collections.abc import Callable

from .core.files import NIFTI_SUFFIXES, TIFF_SUFFIXES, has_suffix, read_image, stem


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """npe2 reader contribution: NIfTI and TIFF files."""
    if isinstance(path, list):
        return None
    if not has_suffix(path, NIFTI_SUFFIXES + TIFF_SUFFIXES):
        return None
    return _napari_read


def _napari_read(path: str) -> list[tuple]:
    image = read_image(path)
    meta = {"name": stem(path), "scale": image.scale, "rgb": image.rgb, "metadata": image.metadata}
    return [(image.data, meta, "image")]
