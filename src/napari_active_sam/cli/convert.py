"""``napari-active-sam convert``: a TIFF or NIfTI image to OME-Zarr, to open it lazily."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import options

NAME = "convert"
HELP = "write a TIFF or NIfTI image as OME-Zarr, slice by slice, to open it lazily"
DESCRIPTION = (
    "Converts without reading the image whole, so a volume too large for memory can then be "
    "annotated from the OME-Zarr copy, which is read slice by slice."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=options.existing_file, help="a .tif, .nii or .nii.gz")
    parser.add_argument("--out", type=Path, required=True, help="the OME-Zarr folder to write")


def run(args: argparse.Namespace) -> int:
    from ..core.data.omezarr import convert_to_ome_zarr

    written = convert_to_ome_zarr(args.image, args.out)
    print(f"{args.image} -> {written}", file=sys.stderr)
    return 0
