"""Image files: NIfTI, DICOM series, TIFF stacks, PNG/JPEG, NumPy; labels written back.

Arrays come back in napari's axis order, ``(z, y, x)`` for volumes, with the voxel spacing
in the same order, so a layer's ``scale`` shows anisotropic volumes correctly.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DICOM_SUFFIXES = (".dcm",)
"""A DICOM file opens the series it belongs to, from the files beside it."""
IMAGE_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + PLAIN_SUFFIXES + (".npy",)
"""Files a labelled data set may hold (a DICOM series is a folder, not a file there)."""


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

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of ``data`` without the colour axis: what a mask of it must have."""
        return self.data.shape[:-1] if self.rgb else self.data.shape


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
    # Extra axes (time in a 4D file) go first, so the image plane stays last.
    order = tuple(range(3, data.ndim)) + tuple(reversed(range(min(data.ndim, 3))))
    return ImageData(
        data=np.transpose(data, order),
        scale=tuple(zooms[i] if i < len(zooms) else 1.0 for i in order),
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


def _read_dicom_series(folder: Path, chosen: Path | None = None) -> ImageData:
    """A DICOM series folder as a (z, y, x) volume in Hounsfield units (or stored units).

    Slices are grouped by SeriesInstanceUID; the series of the ``chosen`` file is read, or,
    when a folder mixes series, the largest, and the others are named (by their
    SeriesDescription where they have one) in ``metadata["other_series"]`` and a warning. Slices are
    ordered along the slice normal by ImagePositionPatient; RescaleSlope/RescaleIntercept
    are applied; the scale is (slice spacing, row spacing, column spacing).
    """
    import pydicom

    series: dict[str, list] = {}
    wanted = None
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(file)
        except pydicom.errors.InvalidDicomError:
            continue  # not a DICOM file (a README, a thumbnail)
        if "PixelData" not in ds:
            continue
        uid = str(ds.get("SeriesInstanceUID", "unknown"))
        series.setdefault(uid, []).append(ds)
        if chosen is not None and file.resolve() == chosen.resolve():
            wanted = uid
    if not series:
        raise ImageError(f"{folder} contains no DICOM image: choose a DICOM series folder.")
    if chosen is not None and wanted is None:
        raise ImageError(f"{chosen.name} is not a DICOM image: choose a DICOM file or folder.")
    uid = wanted or max(series, key=lambda k: len(series[k]))
    slices = series[uid]
    others = {k: len(v) for k, v in series.items() if k != uid}
    if others and wanted is None:

        def name(key: str) -> str:
            described = str(series[key][0].get("SeriesDescription", "")).strip()
            return f'"{described}" ({len(series[key])} slices)' if described else (
                f"series {key} ({len(series[key])} slices)"
            )  # fmt: skip

        warnings.warn(
            f"{folder} holds {len(series)} DICOM series; reading the largest, {name(uid)}, "
            f"and leaving {', '.join(name(k) for k in others)}. Open a file of another "
            "series to read that one.",
            UserWarning,
            stacklevel=3,
        )
    orientation = np.array(slices[0].get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [np.array(ds.get("ImagePositionPatient", [0, 0, i]), float)
                 for i, ds in enumerate(slices)]  # fmt: skip
    depth = np.array([p @ normal for p in positions])
    order = np.argsort(depth)
    slices = [slices[i] for i in order]
    volume = np.stack(
        [
            ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1))
            + float(ds.get("RescaleIntercept", 0))
            for ds in slices
        ]
    )
    if np.all(volume == np.round(volume)) and volume.min() >= -32768 and volume.max() < 32768:
        volume = volume.astype(np.int16)
    row_spacing, col_spacing = (float(v) for v in slices[0].get("PixelSpacing", [1.0, 1.0]))
    gaps = np.diff(np.sort(depth))
    slice_spacing = (
        float(np.median(gaps))
        if gaps.size and np.median(gaps) > 0
        else float(slices[0].get("SliceThickness", 1.0))
    )
    return ImageData(
        data=volume,
        scale=(slice_spacing, row_spacing, col_spacing),
        metadata={
            "series_uid": uid,
            "other_series": others,
            "modality": str(slices[0].get("Modality", "")),
        },
    )


def read_image(path: Path | str) -> ImageData:
    """Read an image file (NIfTI, TIFF, PNG/JPEG/BMP, ``.npy``) or a DICOM series folder.

    Raises
    ------
    ImageError
        If the file does not exist, has an unknown suffix or cannot be read.
    """
    path = Path(path)
    if path.is_dir():
        return _read_dicom_series(path)
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
    if has_suffix(path, DICOM_SUFFIXES):
        return _read_dicom_series(path.parent, chosen=path)
    raise ImageError(
        f"{path.name}: unknown image type. Use one of {', '.join(IMAGE_SUFFIXES)}, a DICOM "
        "file (.dcm) or a DICOM series folder."
    )


def write_labels(
    path: Path | str, labels: np.ndarray, metadata: dict[str, Any] | None = None
) -> Path:
    """Write a label image to NIfTI (with the source affine, in its axis order) or TIFF.

    Parameters
    ----------
    path : Path
        ``.nii``, ``.nii.gz``, ``.tif`` or ``.tiff``.
    labels : np.ndarray
        Integer labels in napari's axis order (as :func:`read_image` returned the image).
    metadata : dict, optional
        ``metadata`` of the source :class:`ImageData`: a NIfTI source's affine and axis order
        put the labels back in the source's voxel grid.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ImageError(f"Labels must be integers, got {labels.dtype}.")
    labels = labels.astype(np.int32 if labels.max(initial=0) > 32767 else np.int16)
    metadata = metadata or {}
    if has_suffix(path, NIFTI_SUFFIXES):
        import nibabel

        order = metadata.get("axes_order", tuple(reversed(range(min(labels.ndim, 3)))))
        data = np.transpose(labels, np.argsort(order))
        affine = metadata.get("affine", np.eye(4))
        nibabel.save(nibabel.Nifti1Image(data, np.asarray(affine)), str(path))
    elif has_suffix(path, TIFF_SUFFIXES):
        import tifffile

        tifffile.imwrite(path, labels, photometric="minisblack", compression="zlib")
    else:
        raise ImageError(f"{path.name}: write labels as .nii, .nii.gz, .tif or .tiff.")
    return path
