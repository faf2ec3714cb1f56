"""``napari-active-sam make-dataset``: generated images with instance ground truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.enums import SceneKind
from ..core.progress import Progress
from . import options

NAME = "make-dataset"
HELP = "generate images with instance ground truth (images/ and masks/ TIFFs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument(
        "--n", type=options.positive_int, default=100, help="number of images (default 100)"
    )
    parser.add_argument("--seed", type=options.seed, default=0)
    parser.add_argument(
        "--kind",
        default=SceneKind.MIXED,
        choices=[str(m) for m in SceneKind],
        help="scene kind (default mixed: any modality-like kind; random: domain "
        "randomisation, random label maps with random appearance; real-crops: crops of real "
        "training images that ship inside scikit-image and pydicom)",
    )
    parser.add_argument(
        "--size", type=options.positive_int, default=256, help="image side in pixels"
    )


def run(args: argparse.Namespace) -> int:
    from ..core.data.scenes import write_dataset

    progress = (
        Progress(done, args.n, "scenes written")
        for done in write_dataset(args.out, args.n, args.seed, args.kind, args.size)
    )
    options.drain_with_bar(progress, "make-dataset", unit="scene")
    print(f"wrote {args.n} scenes to {args.out}", file=sys.stderr)
    return 0
