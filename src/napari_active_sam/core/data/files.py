"""Image files: NIfTI, DICOM series, TIFF stacks, PNG/JPEG, NumPy; labels written back.

Arrays come back in napari's axis order, ``(z, y, x)`` for volumes, with the voxel spacing
in the same order, so a layer's ``scale`` shows anisotropic volumes correctly.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError
from ..keeping import written_whole
from .dicom import is_dicom, read_series
from .image import (
    COMPRESSED_RATIO,
    DEFLATE_RATIO,
    ImageData,
    check_claimed_size,
    checked_spacing,
    stored_labels,
)
from .omezarr import is_zarr, read_ome_zarr

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DICOM_SUFFIXES = (".dcm",)
"""A DICOM file opens the series it belongs to, from the files beside it."""
IMAGE_SUFFIXES = NIFTI_SUFFIXES + TIFF_SUFFIXES + PLAIN_SUFFIXES + (".npy",)
"""Files a labelled data set may hold (a DICOM series is a folder, not a file there)."""


def has_suffix(path: Path | str, suffixes: tuple[str, ...]) -> bool:
    return str(path).lower().endswith(suffixes)


def stem(path: Path | str) -> str:
    """File name without its image suffix (``ct.nii.gz`` → ``ct``)."""
    name = Path(path).name
    for suffix in sorted((*IMAGE_SUFFIXES, ".ome.zarr", ".zarr"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _read_nifti(path: Path) -> ImageData:
    import nibabel

    image = nibabel.load(str(path))
    header = image.header
    gzipped = has_suffix(path, (".gz",))
    stored = path.stat().st_size - (0 if gzipped else int(header.get_data_offset()))
    slope, inter = getattr(image.dataobj, "slope", 1.0), getattr(image.dataobj, "inter", 0.0)
    scaled = (slope, inter) != (1.0, 0.0)  # nibabel then reads the voxels as float64
    itemsize = max(header.get_data_dtype().itemsize, 8 if scaled else 0)
    check_claimed_size(path, image.shape, itemsize, stored=stored,
                       ratio=(DEFLATE_RATIO if gzipped else 1) * itemsize
                       / header.get_data_dtype().itemsize)  # fmt: skip
    data = np.asanyarray(image.dataobj)
    steps = [float(z) for z in _stated_zooms(path, header)[: data.ndim]]
    stated = tuple(steps[:3])  # i, j, k: a 4D file's time step (0 if unset) is no size
    zooms = checked_spacing(path, stated, "the voxel size")
    zooms += tuple(t if np.isfinite(t) and t > 0 else 1.0 for t in steps[3:])
    # NIfTI stores (i, j, k); napari shows the last two axes, so put k (slices) first.
    # Extra axes (time in a 4D file) go first, so the image plane stays last.
    order = tuple(range(3, data.ndim)) + tuple(reversed(range(min(data.ndim, 3))))
    data = np.transpose(data, order)
    return ImageData(
        data=data,
        scale=tuple(zooms[i] if i < len(zooms) else 1.0 for i in order),
        metadata={"affine": np.asarray(image.affine), "axes_order": order, "shape": data.shape},
        spacing_known=zooms[:3] == stated,
    )


def _stated_zooms(path: Path, header) -> tuple[float, ...]:
    """The voxel size a NIfTI file's header states: nibabel's reader sets a size of 0 to 1
    as it loads (and a negative one to its magnitude, which is kept), and a 1 it made up
    would pass for a size the file gives."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as handle:
        stored = type(header).from_fileobj(handle, check=False)
    return tuple(abs(float(z)) for z in stored["pixdim"][1 : 1 + len(header.get_zooms())])


def _read_tiff(path: Path) -> ImageData:
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        if not tiff.series or not tiff.pages:
            raise ImageError(f"{path.name} holds no image: choose a TIFF with pages.")
        series = tiff.series[0]
        compressed = any(getattr(page, "compression", 1) != 1 for page in series.pages[:1])
        # A bilevel (1-bit) page is stored at an eighth of the byte per pixel it reads as.
        bits = getattr(series.pages[0], "bitspersample", 8 * series.dtype.itemsize) or 1
        packing = series.dtype.itemsize * 8 / min(bits, 8 * series.dtype.itemsize)
        check_claimed_size(path, series.shape, series.dtype.itemsize,
                           stored=path.stat().st_size,
                           ratio=(COMPRESSED_RATIO if compressed else 1) * packing)  # fmt: skip
        if len(tiff.series) > 1:
            warnings.warn(f"{path.name} holds {len(tiff.series)} images; the first "
                          f"{tuple(series.shape)} is read: save each image as its own file "
                          "to open the others.", UserWarning, stacklevel=3)  # fmt: skip
        _check_complete(path, tiff, series)
        data, rgb = _by_axes(path, series.asarray(), series.axes)
        spatial = data.ndim - (1 if rgb else 0)
        sizes = tiff_spacing(tiff)
    scale = spatial_scale(sizes, spatial)
    checked = checked_spacing(path, scale, "the pixel size")
    # A stack whose file states the pixel size but not the slice spacing is not known in 3D.
    known = sizes is not None and (spatial < 3 or sizes[0] is not None) and checked == scale
    return ImageData(data=data, scale=checked, rgb=rgb, spacing_known=known)


def _check_complete(path: Path, tiff, series) -> None:
    """Refuse a stack whose ImageJ or tifffile description counts more images than the file
    holds: tifffile then falls back to the pages it finds, and a truncated stack would be
    read as its first slice without a word."""
    stated = None
    if tiff.is_imagej and tiff.imagej_metadata:
        stated = tiff.imagej_metadata.get("images")
    elif tiff.is_shaped and tiff.shaped_metadata:
        shape = tiff.shaped_metadata[0].get("shape")
        plane = sum(axis in "YXS" for axis in series.axes)  # rows, columns (and samples)
        if shape is not None and len(shape) > plane:
            stated = int(np.prod(shape[:-plane]))
    planes = int(np.prod([n for n, axis in zip(series.shape, series.axes, strict=True)
                          if axis not in "YXS"]))  # fmt: skip
    if stated is not None and int(stated) > planes:
        raise ImageError(
            f"{path.name} states {int(stated)} images but holds {planes}: the file is "
            "truncated or damaged. Copy it again from where it came from."
        )


def _by_axes(path: Path, data: np.ndarray, axes: str) -> tuple[np.ndarray, bool]:
    """A TIFF's pixels as the annotator takes them, read by the axes the file states
    (tifffile's letters): one channel (``C`` of more than one is refused), colour samples
    (``S``: 3 or 4, brought to 8 bits) last, and whether they are RGB(A) (grey with alpha
    keeps its grey); other axes as they come, slices before the image plane."""
    channel = axes.find("C")
    if channel >= 0:
        if data.shape[channel] > 1:
            raise ImageError(
                f"{path.name} has {data.shape[channel]} channels (axes {axes}): the annotator "
                "takes one. Save each channel as its own TIFF (Fiji: Image > Color > Split "
                "Channels) and open the one to annotate."
            )
        data, axes = np.take(data, 0, axis=channel), axes.replace("C", "")
    sample = axes.find("S")
    if sample < 0:
        return data, False
    samples = data.shape[sample]
    if samples in (1, 2):  # grey, or grey and alpha: the grey
        return np.take(data, 0, axis=sample), False
    if samples > 4:
        raise ImageError(f"{path.name} has {samples} samples per pixel (axes {axes}): the "
                         "annotator takes grey or RGB(A). Save it as one of those.")  # fmt: skip
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer):
            raise ImageError(f"{path.name} is colour of {data.dtype} samples: save it as 8-bit "
                             "RGB (Fiji: Image > Type > RGB Color).")  # fmt: skip
        top = max(int(np.iinfo(data.dtype).max), 1)
        data = (np.clip(data, 0, None) * (255 / top)).round().astype(np.uint8)
    # planar RGB: the samples last, as napari shows them
    return np.moveaxis(data, sample, -1) if sample != len(axes) - 1 else data, True


def spatial_scale(sizes: tuple[float | None, float, float] | None,
                  spatial: int) -> tuple[float, ...]:  # fmt: skip
    """One size per spatial axis from a TIFF's stated ``(z, y, x)`` in mm
    (:func:`tiff_spacing`): y and x on the last two, z on the one before where the image
    has slices and the file states it; 1.0 where nothing is stated."""
    scale = [1.0] * spatial
    if sizes is not None:
        z, y, x = sizes
        scale[-2:] = [y, x]
        if spatial >= 3 and z is not None:
            scale[-3] = z
    return tuple(scale)


TO_MM = {"mm": 1.0, "millimeter": 1.0, "cm": 10.0, "centimeter": 10.0, "m": 1000.0,
         "meter": 1000.0, "um": 1e-3, "\u00b5m": 1e-3, "\u03bcm": 1e-3, "\\u00b5m": 1e-3,
         "micron": 1e-3, "micrometer": 1e-3, "nm": 1e-6, "nanometer": 1e-6,
         "inch": 25.4}  # fmt: skip
"""Lengths of the units a TIFF's ImageJ or OME metadata may name, in mm."""


def tiff_spacing(tiff) -> tuple[float | None, float, float] | None:
    """The pixel size ``(z, y, x)`` in mm a TIFF's ImageJ or OME-XML metadata states (z None
    if it states none), or None if it states no size in a known unit: plain TIFF resolution
    tags describe printing (72 dots per inch), not the scanner or microscope."""
    if tiff.is_ome and tiff.ome_metadata:
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(tiff.ome_metadata)
        except ET.ParseError:
            return None
        pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels")), None)
        if pixels is None or "PhysicalSizeX" not in pixels.attrib:
            return None

        def size(axis: str) -> float | None:
            if f"PhysicalSize{axis}" not in pixels.attrib:
                return None
            unit = pixels.attrib.get(f"PhysicalSize{axis}Unit", "µm")  # OME's default unit
            factor = TO_MM.get(unit.lower())
            return None if factor is None else float(pixels.attrib[f"PhysicalSize{axis}"]) * factor

        x, y = size("X"), size("Y")
        return None if x is None or y is None else (size("Z"), y, x)
    meta = tiff.imagej_metadata
    if meta and str(meta.get("unit", "")).lower() in TO_MM:
        factor = TO_MM[str(meta["unit"]).lower()]
        tags = tiff.pages[0].tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
        if not (xn and yn):
            return None
        z = float(meta["spacing"]) * factor if "spacing" in meta else None
        return z, yd / yn * factor, xd / xn * factor
    return None


def _read_plain(path: Path) -> ImageData:
    import imageio.v3 as iio

    # From memory, not the file: a damaged chunk length then cannot make a read allocate
    # more than the file holds.
    encoded = path.read_bytes()
    props = iio.improps(io.BytesIO(encoded), extension=path.suffix.lower())
    check_claimed_size(path, props.shape, props.dtype.itemsize,
                       stored=len(encoded), ratio=DEFLATE_RATIO)  # fmt: skip
    data = iio.imread(io.BytesIO(encoded), extension=path.suffix.lower())
    if data.ndim >= 3 and data.shape[-1] == 2:  # grey and alpha: the grey
        data = data[..., 0]
    rgb = data.ndim >= 3 and data.shape[-1] in (3, 4)
    # an animated PNG: its frames as slices
    return ImageData(data=data, scale=(1.0,) * (data.ndim - rgb), rgb=rgb, spacing_known=False)


def _read_npy(path: Path) -> ImageData:
    fmt = np.lib.format
    size = path.stat().st_size
    with open(path, "rb") as handle:
        version = fmt.read_magic(handle)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ImageError(f"{path.name}: unknown .npy format version {version}.")
        start, length_bytes = handle.tell(), 2 if version == (1, 0) else 4
        length = int.from_bytes(handle.read(length_bytes), "little")
        if start + length_bytes + length > size:
            raise ImageError(f"{path.name}: its header runs past the end of the file: the file "
                             "is truncated or damaged.")  # fmt: skip
        handle.seek(start)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(handle)
        stored = size - handle.tell()
    if dtype.hasobject:
        raise ImageError(f"{path.name} holds Python objects, not an image array.")
    check_claimed_size(path, shape or (1,), dtype.itemsize, stored=stored)
    data = np.load(path, allow_pickle=False)
    return ImageData(data=data, scale=(1.0,) * data.ndim, spacing_known=False)


_READERS = (
    (NIFTI_SUFFIXES, _read_nifti, "NIfTI"),
    (TIFF_SUFFIXES, _read_tiff, "TIFF"),
    (PLAIN_SUFFIXES, _read_plain, "PNG, JPEG or BMP"),
    ((".npy",), _read_npy, "NumPy"),
)


def read_image(path: Path | str) -> ImageData:
    """Read an image file (NIfTI, TIFF, PNG/JPEG/BMP, ``.npy``), a DICOM file (its series),
    a DICOM series folder or an OME-Zarr image folder (read lazily: a dask array).

    Headers are checked before pixels are read: an image larger than its file can hold or
    than :data:`~napari_active_sam.core.data.image.MAX_IMAGE_BYTES` is refused unread.

    Raises
    ------
    ImageError
        If the file does not exist, has an unknown suffix, is damaged or claims too much.
    """
    path = Path(path)
    if path.is_dir():
        return _displayable(path, read_ome_zarr(path) if is_zarr(path) else read_series(path))
    if not path.is_file():
        raise ImageError(f"{path} does not exist.")
    if has_suffix(path, DICOM_SUFFIXES) or is_dicom(path):  # scanners often write no suffix
        return read_series(path.parent, chosen=path)
    for suffixes, reader, kind in _READERS:
        if has_suffix(path, suffixes):
            try:
                image = reader(path)
            except ImageError:
                raise
            except Exception as exc:  # each format's library raises its own kinds
                raise ImageError(f"{path.name} is not a readable {kind} file ({exc}).") from exc
            if image.data.size == 0:
                raise ImageError(f"{path.name} holds an empty image {image.data.shape}: the "
                                 "file is damaged.")  # fmt: skip
            return _displayable(path, image)
    raise ImageError(
        f"{path.name}: unknown image type. Use one of {', '.join(IMAGE_SUFFIXES)}, a DICOM "
        "file (.dcm) or a DICOM series folder."
    )


def _displayable(path: Path, image: ImageData) -> ImageData:
    """``image`` as napari and the annotator can show it: NIfTI's packed RGB as colour;
    complex values, other records and a single row refused, saying what to save instead."""
    data = image.data
    if data.dtype.names == ("R", "G", "B"):  # NIfTI RGB24
        rgb = np.stack([data[name] for name in data.dtype.names], axis=-1).astype(np.uint8)
        return replace(image, data=rgb, rgb=True)
    numeric = np.issubdtype(data.dtype, np.number) or data.dtype == np.bool_
    if data.dtype.names is not None or not numeric:
        raise ImageError(f"{path.name} holds records of {data.dtype}, not pixel values: save "
                         "the image as numbers (grey or RGB).")  # fmt: skip
    if np.issubdtype(data.dtype, np.complexfloating):
        raise ImageError(f"{path.name} holds complex values: save their magnitude "
                         "(numpy.abs) as the image to annotate.")  # fmt: skip
    if len(image.spatial_shape) < 2:
        raise ImageError(f"{path.name} holds a single row of {data.size} values "
                         f"{data.shape}: an image needs rows and columns.")  # fmt: skip
    return image


def write_labels(
    path: Path | str, labels: np.ndarray, metadata: dict[str, Any] | None = None,
    scale: tuple[float, ...] | None = None,
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
    scale : tuple of float, optional
        The image's pixel or voxel size in napari's axis order: a NIfTI file of labels whose
        source has no affine (a DICOM series, a TIFF) keeps it.
    """
    path = Path(path)
    labels = np.asarray(labels)
    metadata = metadata or {}
    expected = metadata.get("shape")
    if expected is not None and labels.shape != tuple(expected):
        raise ImageError(f"The labels have shape {labels.shape}, not the image's "
                         f"{tuple(expected)}: they would not lie on its grid. Save the labels "
                         "drawn on that image.")  # fmt: skip
    if not has_suffix(path, NIFTI_SUFFIXES + TIFF_SUFFIXES):
        raise ImageError(f"{path.name}: write labels as .nii, .nii.gz, .tif or .tiff.")
    labels = stored_labels(labels)
    sizes = [float(v) if np.isfinite(v) and v > 0 else 1.0 for v in (scale or ())]
    if has_suffix(path, NIFTI_SUFFIXES):
        import nibabel

        order = metadata.get("axes_order", tuple(reversed(range(min(labels.ndim, 3)))))
        if len(order) != labels.ndim:
            raise ImageError(f"The labels have {labels.ndim} axes and the image {len(order)}: "
                             "save the labels drawn on that image.")  # fmt: skip
        data = np.transpose(labels, np.argsort(order))
        affine = metadata.get("affine")
        if affine is None:  # place the voxels at the image's spacing
            zooms = [*reversed(sizes)][:3]
            affine = np.diag([*zooms, *[1.0] * (4 - len(zooms))])
        image = nibabel.Nifti1Image(data, np.asarray(affine), dtype=data.dtype)

        def write(target: Path) -> None:
            nibabel.save(image, str(target))
    else:
        import tifffile

        axes = "ZYX"[-labels.ndim:] if labels.ndim <= 3 else None
        physical = {f"PhysicalSize{a}": v for a, v in zip(axes or "", sizes, strict=False)}
        units = {f"{key}Unit": "mm" for key in physical}

        def write(target: Path) -> None:  # OME-TIFF: the voxel size goes with the labels
            tifffile.imwrite(target, labels, photometric="minisblack", compression="zlib",
                             ome=axes is not None,
                             metadata={"axes": axes, **physical, **units} if axes else None)

    path.parent.mkdir(parents=True, exist_ok=True)
    return written_whole(write, path)
