"""OME-Zarr: images read lazily through ome-zarr-py, labels written next to them.

An OME-Zarr image is a folder (``.ome.zarr``/``.zarr``) whose metadata names its axes and,
per resolution level, its scale. The full-resolution level is read as a dask array, so a
volume larger than memory is read slice by slice as it is annotated; the scale comes from
the metadata. Labels go into the image's own ``labels/`` group, the OME-Zarr way, where
napari-ome-zarr and other viewers find them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ActiveSamError, ImageError
from ..keeping import check_new_folder
from .image import ImageData, checked_spacing, stored_labels

SPATIAL = ("z", "y", "x")


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr group folder (an OME-Zarr image is one; others are
    refused by :func:`read_ome_zarr`, saying why)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zattrs"))


def is_ome_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr group whose metadata describes an OME-Zarr image (its
    ``multiscales``, in OME-Zarr 0.5's ``zarr.json`` or 0.4's ``.zattrs``)."""
    import json

    path = Path(path)
    for name, keys in (("zarr.json", ("attributes", "ome")), (".zattrs", ())):
        try:
            found = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        for key in keys:
            found = found.get(key, {}) if isinstance(found, dict) else {}
        if isinstance(found, dict) and "multiscales" in found:
            return True
    return False


def read_ome_zarr(path: Path) -> ImageData:
    """The full-resolution level of an OME-Zarr image, as a lazy (dask) array.

    Axes of length one other than space (time, channel) are dropped; the scale of the
    spatial axes comes from the level's ``coordinateTransformations``.

    Raises
    ------
    ImageError
        A folder without multiscales (not an OME-Zarr image), or an image with several
        channels or time points (open one of them).
    """
    try:
        data, names, scale = _full_resolution(path)
    except ImageError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
        raise ImageError(  # malformed metadata, which ome-zarr-py reads as it comes
            f"{Path(path).name} cannot be read as an OME-Zarr image ({error!r}): its "
            "metadata is damaged or of a kind this reader does not know."
        ) from error
    if any(int(n) <= 0 for n in data.shape):
        raise ImageError(f"{Path(path).name} holds an empty image {tuple(data.shape)}: the "
                         "image is damaged.")  # fmt: skip
    if not len(names) == len(scale) == data.ndim:
        raise ImageError(
            f"{Path(path).name}: its metadata names {len(names)} axes and {len(scale)} scale "
            f"values for an image of {data.ndim} axes {tuple(data.shape)}: the metadata is "
            "damaged; write the image again (napari-active-sam convert, or ome-zarr-py)."
        )
    keep = []
    for axis, (name, size) in enumerate(zip(names, data.shape, strict=True)):
        if name in SPATIAL:
            keep.append(axis)
        elif size != 1:
            raise ImageError(
                f"{Path(path).name} has {size} along its '{name}' axis: open an image of one "
                "channel and one time point (napari-ome-zarr shows the whole)."
            )
    data = data[tuple(slice(None) if a in keep else 0 for a in range(data.ndim))]
    spatial = tuple(scale[a] for a in keep)
    checked = checked_spacing(Path(path), spatial, "the voxel size")
    return ImageData(
        data=data,
        scale=checked,
        metadata={"ome_zarr": str(path), "axes": [names[a] for a in keep]},
        spacing_known=checked == spatial,
    )


def _full_resolution(path: Path) -> tuple[Any, list[str], list[float]]:
    """The full-resolution level of the OME-Zarr image at ``path`` (a dask array), its
    axes' names and its scale, as the metadata states them (unchecked)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    location = parse_url(str(path))
    nodes = list(Reader(location)()) if location is not None else []
    images = [n for n in nodes if any(isinstance(s, Multiscales) for s in n.specs)]
    if not images:
        raise ImageError(
            f"{Path(path).name} has no multiscales: it is a zarr folder but not an OME-Zarr "
            "image. Open an OME-Zarr image (its top folder), or convert it."
        )
    node = images[0]
    data = node.data[0]
    names = [axis["name"] if isinstance(axis, dict) else str(axis)
             for axis in node.metadata.get("axes", SPATIAL[-data.ndim:])]  # fmt: skip
    scale = [1.0] * data.ndim
    for transform in node.metadata.get("coordinateTransformations", [[]])[0]:
        if transform.get("type") == "scale":
            scale = [float(v) for v in transform["scale"]]
    return data, names, scale


def write_ome_zarr_labels(image: Path, labels: np.ndarray, name: str = "napari-active-sam",
                          overwrite: bool = False) -> Path:  # fmt: skip
    """Write ``labels`` (the image's full-resolution grid) as OME-Zarr labels ``name`` in
    the image's ``labels/`` group, with the image's scale; returns their folder. Labels of
    that name already there are replaced only with ``overwrite``.

    Raises
    ------
    ImageError
        ``image`` is not an OME-Zarr image, the labels do not fit its grid, or ``name`` is
        no plain name.
    ActiveSamError
        The image holds labels named ``name`` and ``overwrite`` is False.
    """
    import zarr
    from ome_zarr.writer import write_labels

    if not name or name.startswith(".") or name in RESERVED or not name.isprintable() or any(
        c in name for c in "/\\"
    ):
        raise ImageError(f"{name!r} cannot name labels in an OME-Zarr image: give a plain "
                         "name, such as organs.")  # fmt: skip
    if not Path(image).is_dir():
        raise ImageError(f"{image} does not exist: give the OME-Zarr image the labels were "
                         "drawn on.")  # fmt: skip
    read = read_ome_zarr(Path(image))
    labels = np.asarray(labels)
    if labels.shape != tuple(read.data.shape):
        raise ImageError(
            f"The labels have shape {labels.shape}, the OME-Zarr image {read.data.shape}: "
            "write labels drawn on this image."
        )
    labels = stored_labels(labels)
    existing = Path(image) / "labels" / name
    if existing.exists() and not overwrite:
        raise ActiveSamError(
            f"{Path(image).name} already holds labels named {name!r}: choose another "
            "name, or replace them with --overwrite."
        )
    # The labels there stay aside until the new ones are written whole, then go.
    aside = existing.with_name(f".replaced-{name}")
    if existing.exists():
        shutil.rmtree(aside, ignore_errors=True)
        existing.rename(aside)
    axes = read.metadata["axes"]
    try:
        group = zarr.open_group(str(image), mode="a")
        write_labels(labels, group, name=name, axes="".join(axes), scaler=None,
                     scale_factors=(2,), scale=dict(zip(axes, read.scale, strict=True)))
    except BaseException:
        shutil.rmtree(existing, ignore_errors=True)
        if aside.exists():
            aside.rename(existing)
        raise
    shutil.rmtree(aside, ignore_errors=True)
    _list_once(Path(image) / "labels")
    return existing


RESERVED = ("zarr.json", ".zattrs", ".zgroup", ".zarray")
"""Names a zarr group keeps for its own metadata."""


def _list_once(labels_group: Path) -> None:
    """Each name once in the ``labels`` list of an OME-Zarr image's labels group (ome-zarr
    appends the name again when labels of that name are written over)."""
    import zarr

    group = zarr.open_group(str(labels_group), mode="a")
    ome = dict(group.attrs.get("ome", {}))
    for holder, key in ((ome, "labels"), (group.attrs, "labels")):
        names = holder.get(key)
        if isinstance(names, list) and len(set(names)) != len(names):
            holder[key] = list(dict.fromkeys(names))
    if "ome" in group.attrs:
        group.attrs["ome"] = ome


def convert_to_ome_zarr(source: Path, out: Path) -> Path:
    """Write a TIFF or NIfTI image as an OME-Zarr image at ``out``, slice by slice: the
    image is never whole in memory (TIFF pages through tifffile's zarr view, NIfTI slices
    through nibabel's array proxy), so a volume too large to read can be converted and then
    opened lazily. Axes as :func:`~napari_active_sam.core.data.files.read_image` gives
    them (slices first), the voxel size kept.

    Raises
    ------
    ImageError
        Another kind of file, an RGB or multi-series TIFF, or a file that cannot be read.
    ActiveSamError
        An ``out`` that exists and is not an empty folder (nothing there is overwritten).
    """
    source, out = Path(source), Path(out)
    check_new_folder(out, "the OME-Zarr image")
    try:
        return _convert(source, out)
    except ImageError:
        raise
    except Exception as error:  # what tifffile, nibabel or zarr says of what they cannot do
        raise ImageError(
            f"{source.name} could not be converted to {out} ({type(error).__name__}: {error}): "
            f"check that it is an undamaged .tif, .nii or .nii.gz image and that {out.parent} "
            "can be written."
        ) from error


def _convert(source: Path, out: Path) -> Path:
    import dask.array as da
    import zarr
    from ome_zarr.writer import write_image

    name = source.name.lower()
    if name.endswith((".tif", ".tiff")):
        import tifffile

        from .files import spatial_scale, tiff_spacing

        with tifffile.TiffFile(source) as tiff:
            if len(tiff.series) != 1 or tiff.series[0].axes[-1:] in ("S",):
                raise ImageError(f"{source.name}: only single-series grayscale TIFFs convert.")
            sizes = tiff_spacing(tiff)
        array = zarr.open(tifffile.imread(source, aszarr=True), mode="r")
        data, scale = da.from_zarr(array), spatial_scale(sizes, array.ndim)
    elif name.endswith((".nii", ".nii.gz")):
        import nibabel

        image = nibabel.load(str(source))
        if len(image.shape) != 3:
            raise ImageError(f"{source.name}: only 3D NIfTI volumes convert, not {image.shape}.")
        proxy = image.dataobj
        chunks = (image.shape[0], image.shape[1], 1)  # one k slice per chunk
        data = da.from_array(proxy, chunks=chunks, asarray=True).transpose(2, 1, 0)
        zooms = [float(z) for z in image.header.get_zooms()[:3]]
        scale = (zooms[2], zooms[1], zooms[0])
    else:
        raise ImageError(f"{source.name}: convert a TIFF or NIfTI image (.tif, .nii, .nii.gz).")
    if data.ndim not in (2, 3):
        raise ImageError(f"{source.name}: a 2D image or a 3D volume converts, not {data.shape}.")
    axes = SPATIAL[-data.ndim:]
    data = data.rechunk((1, *data.shape[1:]) if data.ndim == 3 else data.shape)
    write_image(data, zarr.open_group(str(out), mode="w"), axes="".join(axes),
                scale_factors=(), scale=dict(zip(axes, scale, strict=True)))  # fmt: skip
    return out
