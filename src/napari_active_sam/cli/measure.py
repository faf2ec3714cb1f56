"""``napari-active-sam measure``: each object's volume with a credible interval, as CSV."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import ActiveSamError
from . import options

NAME = "measure"
HELP = "each object's volume (mm³) with a 95 % credible interval and its predicted Dice"
DESCRIPTION = (
    "Measures every object of --labels (instance labels on --image's grid) and writes "
    "label,volume_mm3,volume_low_mm3,volume_high_mm3,predicted_dice,first_slice,last_slice "
    "rows. Voxel sizes come from the image file (NIfTI, DICOM, OME-Zarr, a TIFF's ImageJ or "
    "OME sizes) or --spacing; the interval from the Bayesian head's posterior (a 2D image "
    "gives areas in mm²)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image", type=Path, required=True, help="image or volume file, or a DICOM series folder"
    )
    parser.add_argument(
        "--labels", type=options.existing_file, required=True, help="labels on the image's grid"
    )
    options.output_options(parser, "CSV file")
    parser.add_argument(
        "--spacing", type=options.positive_float, nargs="+", metavar="MM",
        help="voxel size in mm, Z Y X (Y X for a 2D image), in place of the file's: for a "
        "file that states none (a plain TIFF, PNG or .npy), whose volumes are otherwise in "
        "voxels",
    )  # fmt: skip
    options.model_options(parser)
    options.adapter_option(parser)
    parser.add_argument(
        "--head", type=options.existing_file, help="Bayesian head file (default: the model's)"
    )
    parser.add_argument(
        "--samples", type=options.positive_int, default=64, help="posterior draws per object"
    )
    parser.add_argument(
        "--level", type=float, default=0.95, help="credible interval probability (default 0.95)"
    )
    options.window_option(parser, "percentile", "intensity window (default percentile)")
    options.store_option(parser, "for --image")
    options.threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from ..core.active.bayes_head import BayesHead
    from ..core.data.datasets import check_labels
    from ..core.data.files import read_image
    from ..core.engine.preprocess import IntensityWindow, SliceSource
    from ..core.keeping import save_or_keep
    from ..core.quality.measure import check_draws, measure_objects, write_measurements

    options.check_output(args, (".csv",), (args.image, args.labels))
    options.check_labels_apart(args.image, args.labels)
    check_draws(args.samples, args.level)  # before the model is loaded
    options.set_threads(args)
    if not Path(args.image).exists():
        raise ActiveSamError(f"{args.image} does not exist: give an image, volume or series.")
    image = read_image(Path(args.image))
    labels = check_labels(read_image(args.labels).data, image.spatial_shape,
                          Path(args.labels).name, f"the image {Path(args.image).name}")  # fmt: skip
    spacing = tuple(image.scale)
    if args.spacing:
        if len(args.spacing) != len(spacing):
            raise ActiveSamError(
                f"--spacing takes {len(spacing)} sizes for this image of "
                f"{len(spacing)} axes {image.spatial_shape}, got {len(args.spacing)}."
            )
        spacing = tuple(args.spacing)
    in_voxels = not args.spacing and not image.spacing_known
    if in_voxels:
        print(f"warning: {Path(args.image).name} states no voxel size: volumes are in voxels "
              "(the table's columns say so); give --spacing (mm) for volumes in mm³",
              file=sys.stderr)  # fmt: skip
    model = options.load_chosen_model(args)
    head = BayesHead.load(args.head, model) if args.head else BayesHead.for_model(model)
    if head is None:
        raise ActiveSamError(
            f"Measuring with error bars needs a Bayesian head for {model.name}: fit one with "
            "`napari-active-sam train-head` and pass it with --head."
        )
    source = SliceSource(image.data, IntensityWindow.from_name(args.window), rgb=image.rgb)
    store = options.embedding_store(args, model)
    steps = measure_objects(model, head, source, labels, spacing, store, samples=args.samples,
                            level=args.level)  # fmt: skip
    found = options.drain_with_bar(steps, "measure", unit="object")
    if in_voxels:
        unit = column = "voxels" if len(spacing) == 3 else "pixels"
    else:
        unit = "mm³" if len(spacing) == 3 else "mm²"  # a 2D image's "volume" is an area
        column = "mm3"
    save_or_keep(lambda path: write_measurements(found, path, column), args.out,
                 "the measurements")  # fmt: skip
    for m in found:
        print(
            f"object {m.label}: {m.volume_mm3:.1f} {unit} ({m.volume_low_mm3:.1f}–"
            f"{m.volume_high_mm3:.1f}), predicted Dice {m.predicted_dice:.2f}, slices "
            f"{m.first_slice}–{m.last_slice}",
            file=sys.stderr,
        )
    print(f"{len(found)} object{'s' if len(found) != 1 else ''} measured in {args.out}",
          file=sys.stderr)  # fmt: skip
    return 0
