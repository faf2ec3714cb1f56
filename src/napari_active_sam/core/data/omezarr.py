"""OME-Zarr: images read lazily through ome-zarr-py, labels written next to them.

An OME-Zarr image is a folder (``.ome.zarr``/``.zarr``) whose metadata names its axes and,
per resolution level, its scale. The full-resolution level is read as a dask array, so a
volume larger than memory is read slice by slice as it is annotated; the scale comes from
the metadata. Labels go into the image's own ``labels/`` group, the OME-Zarr way, where
napari-ome-zarr and other viewers find them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ImageError
from .image import ImageData

SPATIAL = ("z", "y", "x")


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr group folder (an OME-Zarr image is one; others are
    refused by :func:`read_ome_zarr`, saying why)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zattrs"))


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
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    location = parse_url(str(path))
    try:
        nodes = list(Reader(location)()) if location is not None else []
    except (IndexError, KeyError, TypeError, ValueError) as error:  # malformed metadata
        raise ImageError(
            f"{Path(path).name} cannot be read as an OME-Zarr image ({error!r}): its "
            "metadata is damaged or of a kind this reader does not know."
        ) from error
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
    return ImageData(
        data=data,
        scale=tuple(scale[a] for a in keep),
        metadata={"ome_zarr": str(path), "axes": [names[a] for a in keep]},
    )


def write_ome_zarr_labels(image: Path, labels: np.ndarray, name: str = "napari-active-sam") -> Path:
    """Write ``labels`` (the image's full-resolution grid) as OME-Zarr labels ``name`` in
    the image's ``labels/`` group, with the image's scale; returns their folder.

    Raises
    ------
    ImageError
        ``image`` is not an OME-Zarr image, or the labels do not fit its grid.
    """
    import zarr
    from ome_zarr.writer import write_labels

    read = read_ome_zarr(Path(image))
    labels = np.asarray(labels)
    if labels.shape != tuple(read.data.shape):
        raise ImageError(
            f"The labels have shape {labels.shape}, the OME-Zarr image {read.data.shape}: "
            "write labels drawn on this image."
        )
    axes = read.metadata["axes"]
    group = zarr.open_group(str(image), mode="a")
    write_labels(labels.astype(np.int32, copy=False), group, name=name, axes="".join(axes),
                 scaler=None, scale_factors=(2,),
                 scale=dict(zip(axes, read.scale, strict=True)))  # fmt: skip
    return Path(image) / "labels" / name
