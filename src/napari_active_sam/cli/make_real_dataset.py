"""``napari-active-sam make-real-dataset``: real images with instance labels, offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.data.real import SPLITS

NAME = "make-real-dataset"
HELP = "build labelled real images from files installed packages ship (images/, masks/ TIFFs)"
DESCRIPTION = (
    "Writes real photographs, micrographs, MRI and CT slices that scikit-image, nibabel and "
    "pydicom install, with instance labels made by documented rules, to OUT/images and "
    "OUT/masks (what benchmark --data reads), with OUT/overlays/*.png to check them by eye "
    "and OUT/README.md. Choose settings on the validation split; report on test."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument(
        "--split", default="validation", choices=SPLITS, help="which split (default validation)"
    )


def run(args: argparse.Namespace) -> int:
    from ..core.data.real_dataset import write_real_dataset

    summary = write_real_dataset(args.out, args.split)
    for subset, counts in summary["subsets"].items():
        print(
            f"{subset:12} images {counts['images']:3d}  objects {counts['objects']:4d}",
            file=sys.stderr,
        )
    total = sum(c["objects"] for c in summary["subsets"].values())
    print(
        f"wrote {len(summary['images'])} images ({total} objects, {args.split} split) to "
        f"{args.out}; check them by eye in {args.out / 'overlays'}",
        file=sys.stderr,
    )
    return 0
