"""``napari-active-sam quality``: rank every object's mask by predicted Dice, no ground truth."""

from __future__ import annotations

import argparse
import sys

from ..core.enums import Estimator
from ..core.errors import ActiveSamError, EmbeddingStoreError, ImageError
from . import options

NAME = "quality"
HELP = "predict each object's Dice without ground truth, to rank masks for review"
DESCRIPTION = (
    "Judges every object of every mask in --masks (instance labels, 0 = "
    "background; 3D masks slice by slice) against its image of the same name in --images, "
    "with no ground truth, and writes file,label,slice,predicted_dice,estimator rows, "
    "worst first (file: the mask file)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images", type=options.existing_folder, required=True, help="folder of images"
    )
    parser.add_argument(
        "--masks",
        type=options.existing_folder,
        required=True,
        help="folder of masks named like their images",
    )
    options.output_options(parser, "CSV file")
    options.adapter_option(parser)
    parser.add_argument(
        "--estimator",
        default=Estimator.ENSEMBLE,
        choices=[str(m) for m in Estimator],
        help="ensemble (default; the mean of the other four), regressor (EvanySeg crop CNN), "
        "embedding (MLP on SAM's embedding), iou_head or posterior (Bayesian head); without "
        "its network an estimator falls back to iou_head, and the estimator column says "
        "which answered",
    )
    options.model_options(parser)
    parser.add_argument(
        "--head", type=options.existing_file, help="Bayesian head file (default: the model's)"
    )
    parser.add_argument(
        "--regressor",
        type=options.existing_file,
        help="quality regressor file (default: the model's)",
    )
    options.window_option(parser, "percentile", "intensity window (default percentile)")
    options.store_option(parser, "for --images (one store per image, named after it)")
    options.threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from ..core.data.datasets import load_pair, pair_folders
    from ..core.engine.preprocess import IntensityWindow
    from ..core.keeping import save_or_keep
    from ..core.quality.assess import assess_labels, quality_rows, write_quality_csv
    from ..core.quality.estimators import QualityModels, resolve_estimator

    options.check_output(args, (".csv",), (args.images, args.masks))
    options.check_labels_apart(args.images, args.masks, "--masks")
    options.set_threads(args)
    pairs, skipped = pair_folders(args.images, args.masks)
    if not pairs:
        raise ActiveSamError(
            f"No image in {args.images} has a mask of the same name in {args.masks}."
        )
    window = IntensityWindow.from_name(args.window)
    model = options.load_chosen_model(args)
    models = QualityModels.for_model(model, args.checkpoint, args.head, args.regressor)
    _, note = resolve_estimator(args.estimator, models)
    if note:
        print(f"note: {note}", file=sys.stderr)
    rows = []
    for pair in pairs:
        try:
            source, labels = load_pair(pair, window)
            store = options.embedding_store(args, model, pair.stem)
            steps = assess_labels(args.estimator, source, labels, models, store)
            results = options.drain_with_bar(steps, pair.mask.name, unit="object")
        except (ImageError, EmbeddingStoreError) as exc:  # one bad file does not stop it
            skipped.append({"file": str(pair.mask), "reason": str(exc)})
            continue
        rows += quality_rows(str(pair.mask), results)
    for entry in skipped:
        print(f"skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
    if not rows:
        raise ActiveSamError("No object could be judged: see the skipped files above.")
    save_or_keep(lambda path: write_quality_csv(rows, path), args.out, "the ranking")
    print(f"{len(rows)} objects ranked, worst first, in {args.out}", file=sys.stderr)
    return 0
