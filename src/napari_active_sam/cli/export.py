"""``napari-active-sam export``: labels to DICOM SEG (on their series) or NIfTI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.errors import ActiveSamError
from . import options

NAME = "export"
HELP = "write labels as a DICOM SEG referencing their series, OME-Zarr labels, or NIfTI"
DESCRIPTION = (
    "Exports the objects of --labels, drawn on --image (a DICOM series folder or file for "
    "dicom-seg; any image for nifti). With a Bayesian head (the model's own by default) each "
    "DICOM segment's description gives the object's volume, its 95 % interval and its "
    "predicted Dice; --no-measure leaves them out. With ome-zarr the labels go into the "
    "OME-Zarr image's labels/ group, named after --out."
)
FORMATS = ("dicom-seg", "ome-zarr", "nifti")
SUFFIXES = {"dicom-seg": (".dcm",), "nifti": (".nii", ".nii.gz")}
"""What a file of each format is named."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, required=True,
                        help="the image the labels were drawn on (a DICOM series for dicom-seg)")
    parser.add_argument("--labels", type=options.existing_file, required=True,
                        help="labels on the image's grid (NIfTI, TIFF)")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, default="dicom-seg")
    options.output_options(parser, "file (.dcm, .nii or .nii.gz; for ome-zarr the labels' "
                           "name)")  # fmt: skip
    parser.add_argument("--no-measure", dest="measure", action="store_false",
                        help="leave volumes and predicted Dice out of the segment descriptions")
    options.model_options(parser)
    options.window_option(parser, "percentile", "intensity window for measuring")
    options.threads_option(parser)


def _descriptions(args: argparse.Namespace, image, labels) -> dict[int, str]:
    """Per object: its volume with the interval and its predicted Dice (needs a head)."""
    from ..core.active.bayes_head import BayesHead
    from ..core.engine.preprocess import IntensityWindow, SliceSource
    from ..core.quality.measure import measure_objects

    model = options.load_chosen_model(args)
    head = BayesHead.for_model(model, args.checkpoint)
    if head is None:
        print(f"note: {model.name} has no Bayesian head: segments go without measurements",
              file=sys.stderr)  # fmt: skip
        return {}
    source = SliceSource(image.data, IntensityWindow.from_name(args.window), rgb=image.rgb)
    steps = measure_objects(model, head, source, labels, image.scale)
    found = options.drain_with_bar(steps, "measure", unit="object")
    unit = "mm3" if labels.ndim == 3 else "mm2"
    return {
        m.label: f"{m.volume_mm3:.0f} {unit} ({m.volume_low_mm3:.0f}-{m.volume_high_mm3:.0f}), "
        f"predicted Dice {m.predicted_dice:.2f}"
        for m in found
    }


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.data.datasets import check_labels
    from ..core.data.dicom import is_dicom
    from ..core.data.dicom_seg import write_seg
    from ..core.data.files import read_image, stem, write_labels
    from ..core.data.omezarr import is_zarr, write_ome_zarr_labels
    from ..core.keeping import save_or_keep

    options.set_threads(args)
    image_path = Path(args.image)
    if not image_path.exists():
        raise ActiveSamError(f"{image_path} does not exist: give the image the labels are on.")
    options.check_labels_apart(image_path, args.labels)
    if args.format != "ome-zarr":  # ome-zarr's --out names labels inside the image
        options.check_output(args, SUFFIXES[args.format], (image_path, args.labels))
    image = read_image(image_path)
    drawn = read_image(args.labels)
    labels = check_labels(drawn.data, image.spatial_shape,
                          Path(args.labels).name, f"the image {image_path.name}")  # fmt: skip
    placed, on = drawn.metadata.get("affine"), image.metadata.get("affine")
    if placed is not None and on is not None and not np.allclose(placed, on, atol=1e-3):
        raise ActiveSamError(
            f"{Path(args.labels).name} places its voxels elsewhere in space than "
            f"{image_path.name} (their NIfTI affines differ): written on the image's grid they "
            "would be mirrored or shifted. Export labels drawn on this image."
        )
    if args.format == "dicom-seg":
        series = image_path if image_path.is_dir() else image_path.parent
        if not (image_path.is_dir() or is_dicom(image_path)):
            raise ActiveSamError(
                f"{image_path.name} is not DICOM: a DICOM SEG refers to a DICOM series; give "
                "its folder, or export with --format nifti."
            )
        described = _descriptions(args, image, labels) if args.measure else {}
        uid = image.metadata.get("series_uid")  # the series of the file given, of those there
        written = save_or_keep(lambda path: write_seg(series, labels, path, described, uid),
                               args.out, "the DICOM SEG")  # fmt: skip
    elif args.format == "ome-zarr":
        if not is_zarr(image_path):
            raise ActiveSamError(
                f"{image_path.name} is not an OME-Zarr image: OME-Zarr labels go next to one; "
                "export with --format nifti instead."
            )
        written = write_ome_zarr_labels(image_path, labels, name=stem(Path(args.out).name),
                                        overwrite=args.overwrite)  # fmt: skip
    else:
        written = save_or_keep(
            lambda path: write_labels(path, labels, image.metadata, image.scale), args.out,
            "the labels",
        )
    count = len(np.unique(labels)) - 1
    print(f"{count} object{'s' * (count != 1)} written to {written}", file=sys.stderr)
    return 0
