"""``napari-active-sam precompute``: encode every slice into a zarr store on a dask cluster."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.enums import ModelName
from ..core.errors import ActiveSamError, ImageError
from . import options

NAME = "precompute"
HELP = "encode every slice of a volume or folder of images into a zarr store"
DESCRIPTION = (
    "Encode slices through dask.distributed; rerunning skips finished slices and re-encodes "
    "damaged ones."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image",
        type=Path,
        help="image or volume file, a DICOM series folder, an OME-Zarr image, or a folder of "
        "images",
    )
    options.model_options(parser, default=ModelName.VIT_B)
    parser.add_argument("--out", type=Path, required=True, help="zarr store to write (STORE.zarr)")
    options.window_option(parser, "percentile", "intensity window (default percentile)")
    options.cluster_options(parser)
    options.precision_option(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a store made with another model"
    )


def _image_files(path: Path) -> list[Path]:
    """The images to encode: ``path`` itself (a file or a DICOM series folder), or the image
    files of a folder."""
    from ..core.data.dicom import is_dicom
    from ..core.data.files import IMAGE_SUFFIXES, has_suffix
    from ..core.data.omezarr import is_zarr

    if not path.exists():
        raise ActiveSamError(f"{path} does not exist: give an image, a volume or a folder.")
    if is_zarr(path):
        return [path]
    if path.is_dir() and not any(is_dicom(p) for p in path.iterdir() if p.is_file()):
        files = sorted(p for p in path.iterdir() if p.is_file() and has_suffix(p, IMAGE_SUFFIXES))
        if not files:
            raise ActiveSamError(
                f"{path} holds no image file ({', '.join(IMAGE_SUFFIXES)}) and no DICOM "
                "series: nothing to encode."
            )
        return files
    return [path]


def run(args: argparse.Namespace) -> int:
    import torch

    from ..core.cluster import dask_client
    from ..core.data.files import read_image, stem
    from ..core.engine.device import resolve_precision
    from ..core.engine.embeddings import precompute
    from ..core.engine.preprocess import IntensityWindow, SliceSource
    from ..core.engine.store import EmbeddingStore

    ref = options.model_ref(args)
    identity = ref.encoder_id()
    window = IntensityWindow.from_name(args.window)
    inputs = Path(args.image)
    files = _image_files(inputs)
    out = Path(args.out)
    if out.exists() and any(out.samefile(f) for f in (inputs, *files)):
        raise ActiveSamError(f"--out {out} is the image to encode: give a new folder for the "
                             "embedding store.")  # fmt: skip
    if out.is_file():
        raise ActiveSamError(f"--out {out} is a file: give a folder for the embedding store.")
    named: dict[str, list[str]] = {}
    for file in files:
        named.setdefault(stem(file), []).append(file.name)
    shared = [" and ".join(names) for names in named.values() if len(names) > 1]
    if shared and len(files) > 1:  # each image's store is named after it
        raise ActiveSamError(f"{'; '.join(shared)} would share one store in {args.out}: "
                             "rename all but one of each, or precompute them apart.")  # fmt: skip
    resolve_precision(args.precision, torch.device("cpu"))  # a bad name: said before any work
    unread = []
    with dask_client(args.scheduler, args.workers) as (client, info):
        for file in files:
            try:
                image = read_image(file)
            except ImageError as exc:
                if file == inputs:
                    raise
                print(f"skipped {file.name}: {exc}", file=sys.stderr)
                unread.append(file.name)
                continue
            source = SliceSource(image.data, window=window, rgb=image.rgb)
            out = Path(args.out) / stem(file) if file != inputs else Path(args.out)
            store = EmbeddingStore(identity, max_bytes=0, path=out, overwrite=args.overwrite)
            if store.path is None:
                raise ActiveSamError(f"Cannot write the store {out}: choose a writable --out.")
            steps = precompute(ref, source, store, client, torch_threads=info.torch_threads,
                               precision=args.precision)  # fmt: skip
            repaired = options.drain_with_bar(steps, file.name)
            note = f" ({repaired} repaired)" if repaired else ""
            print(f"{file} -> {store.path}{note}", file=sys.stderr)
    if unread and len(unread) == len(files):
        raise ActiveSamError(f"No image in {inputs} could be read ({', '.join(unread)}): "
                             "nothing was encoded.")  # fmt: skip
    return 0
