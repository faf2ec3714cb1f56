"""The real-image set written to a folder: images, masks, overlays to check the labels by
eye, an index and a README (``napari-active-sam make-real-dataset``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..keeping import check_new_folder
from . import real
from .real import SUBSETS, RealImage, real_images


def labels_digest(images: list[RealImage]) -> str:
    """SHA-256 over every image's name, pixels and labels: equal digests, equal sets."""
    digest = hashlib.sha256()
    for image in images:
        digest.update(image.name.encode())
        digest.update(np.ascontiguousarray(image.image).tobytes())
        digest.update(np.ascontiguousarray(image.labels).tobytes())
    return digest.hexdigest()


def write_overlay(image: RealImage, path: Path) -> None:
    """A PNG of the image (in its window) with each object's outline in colour, enlarged to
    at least 1024 pixels on its longer side, for checking the labels by eye."""
    import imageio.v3 as iio
    from skimage.segmentation import find_boundaries

    from ..engine.preprocess import to_sam_rgb

    if image.image.ndim == 3:
        rgb = image.image[..., :3].astype(np.uint8)
    else:
        rgb = to_sam_rgb(image.image, image.window.limits(image.image))
    labels = image.labels
    scale = max(1, int(np.ceil(1024 / max(labels.shape))))
    if scale > 1:
        rgb = np.repeat(np.repeat(rgb, scale, 0), scale, 1)
        labels = np.repeat(np.repeat(labels, scale, 0), scale, 1)
    outline = find_boundaries(labels, mode="inner")
    if scale >= 3:
        outline = ndimage.binary_dilation(outline) & (labels > 0)
    palette = np.array(
        [[255, 255, 0], [0, 255, 0], [0, 255, 255], [255, 0, 255], [255, 128, 0], [255, 0, 0]],
        np.uint8,
    )
    rgb = rgb.copy()
    rgb[outline] = palette[labels[outline] % len(palette)]
    iio.imwrite(path, rgb)


README = """# Real labelled images: {split} split

Built by `napari-active-sam make-real-dataset --split {split}` from files that ship inside
installed packages (nothing downloaded). `images/NAME.tif` and `masks/NAME.tif` (int32
instance labels, 0 = background); `objects.json` holds each image's intensity window,
source and structures; `overlays/NAME.png` shows each mask's outlines over its image.
File names start with the subset: {subsets}.

## Sources and labels
{doc}

## This split

| image | subset | objects | source |
|---|---|---|---|
{rows}
"""


def write_real_dataset(out: Path, split: str = "validation") -> dict:
    """Write the real set of ``split`` as ``out/images``, ``out/masks``, ``out/overlays``,
    ``out/objects.json`` and ``out/README.md``.

    Returns
    -------
    dict
        ``{"split", "digest", "images": {name: {...}}, "subsets": {subset: {"images",
        "objects"}}}``, also written (less the per-image part) into ``objects.json``.
    """
    import tifffile

    out = Path(out)
    check_new_folder(out, "the real data set")
    images = real_images(split)
    for folder in ("images", "masks", "overlays"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    index, subsets = {}, {}
    for image in images:
        rgb = image.image.ndim == 3
        tifffile.imwrite(
            out / "images" / f"{image.name}.tif",
            image.image,
            photometric="rgb" if rgb else "minisblack",
            compression="zlib",
        )
        tifffile.imwrite(
            out / "masks" / f"{image.name}.tif",
            image.labels.astype(np.int32),
            photometric="minisblack",
            compression="zlib",
        )
        write_overlay(image, out / "overlays" / f"{image.name}.png")
        objects = int(len(np.unique(image.labels[image.labels > 0])))
        index[image.name] = {
            "kind": image.subset,
            "subset": image.subset,
            "window": image.window.to_dict(),
            "parents": {},
            "source": image.source,
            "objects": objects,
            "structures": {str(k): v for k, v in image.structures.items()},
        }
        counts = subsets.setdefault(image.subset, {"images": 0, "objects": 0})
        counts["images"] += 1
        counts["objects"] += objects
    summary = {"split": split, "digest": labels_digest(images), "subsets": subsets}
    (out / "objects.json").write_text(json.dumps({**summary, "images": index}, indent=1))
    rows = "\n".join(
        f"| {name} | {entry['subset']} | {entry['objects']} | {entry['source']} |"
        for name, entry in index.items()
    )
    doc = real.__doc__.split("\n\n", 1)[1]
    (out / "README.md").write_text(
        README.format(split=split, subsets=", ".join(SUBSETS), doc=doc, rows=rows)
    )
    return {**summary, "images": index}
