"""``napari-active-sam adapt``: adapt a model to labelled images of one's own."""

from __future__ import annotations

import argparse
import sys

from . import options

NAME = "adapt"
HELP = "adapt a model to your own labelled objects (fine-tuning, then preferences)"
DESCRIPTION = (
    "Stage 1 fine-tunes the prompt encoder and mask decoder (and, with --train-encoder, the "
    "image encoder) on the objects of --data, holding some out to decide when to stop. "
    "Stage 2, with --unlabelled, aligns the model on other objects with DPO: four candidate "
    "masks per object (thresholds 0.3-0.6) ranked by the quality estimators (--rank "
    "quality) or, in simulation, by IoU with the masks given (--rank iou). Writes an "
    "adapter file: use it with --adapter in benchmark, quality, train-head and train-quality."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.model_options(parser)
    parser.add_argument("--data", type=options.existing_folder, required=True,
                        help="labelled folder (images/, masks/) to learn from")  # fmt: skip
    parser.add_argument("--unlabelled", type=options.existing_folder,
                        help="images for stage 2: a folder of images (objects like those of "
                        "--data are found in them), or images/ with masks/ (one click per "
                        "object, masks read by --rank iou only)")  # fmt: skip
    parser.add_argument("--rank", default="quality", choices=["quality", "iou"],
                        help="stage 2's ranking (default quality: no truth)")  # fmt: skip
    parser.add_argument("--steps", type=options.positive_int, default=200,
                        help="most fine-tuning steps (default 200)")  # fmt: skip
    parser.add_argument("--dpo-steps", type=options.positive_int, default=60,
                        help="most preference steps (default 60)")  # fmt: skip
    parser.add_argument("--train-encoder", action="store_true",
                        help="train the image encoder too (small ones: demo)")  # fmt: skip
    parser.add_argument("--held-out", type=float, default=0.2,
                        help="share of labelled objects kept to decide when to stop")  # fmt: skip
    options.window_option(parser, None, "intensity window (default: per dataset)")
    parser.add_argument("--seed", type=options.seed, default=0)
    options.output_options(parser, "adapter file")
    options.threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from ..core.active.bayes_head import HEAD
    from ..core.adapt.dpo import make_ranker
    from ..core.adapt.exemplars import exemplar_prototypes
    from ..core.adapt.finetune import AdaptConfig
    from ..core.adapt.objects import (
        folder_exemplars,
        folder_images,
        folder_labels,
        folder_objects,
        found_objects,
        sized_for,
    )
    from ..core.adapt.pipeline import AdaptPlan, adapt, head_for
    from ..core.errors import ActiveSamError
    from ..core.quality.estimators import QualityModels

    if not 0 < args.held_out < 1:
        raise ActiveSamError(f"--held-out is a share between 0 and 1, got {args.held_out}.")
    options.check_output(args, (".pt",), (args.checkpoint, args.data, args.unlabelled))
    options.set_threads(args)
    # Small objects are decoded zoomed in as far as the labelled ones' size asks for.
    model = sized_for(options.load_chosen_model(args), folder_labels(args.data))
    labelled = options.drain_with_bar(folder_objects(model, args.data, args.window), "labelled")
    unlabelled, ranker = [], None
    if args.unlabelled and (args.unlabelled / "masks").is_dir():
        unlabelled = options.drain_with_bar(
            folder_objects(model, args.unlabelled, args.window), "unlabelled"
        )
    elif args.unlabelled:
        if args.rank == "iou":
            raise ActiveSamError(f"{args.unlabelled} has no masks/ to rank by IoU with: "
                                 "rank by quality, or add the masks.")  # fmt: skip
        found = exemplar_prototypes(model, folder_exemplars(args.data, args.window))
        for name, source in folder_images(args.unlabelled, args.window):
            unlabelled += options.drain_with_bar(found_objects(model, source, found, name),
                                                 f"searching {name}")  # fmt: skip
        print(f"found {len(unlabelled)} objects like yours in {args.unlabelled}", file=sys.stderr)
    if args.unlabelled:
        quality = None
        if args.rank == "quality":
            quality = QualityModels.for_model(model, args.checkpoint)
        ranker = make_ranker(args.rank, quality)
    plan = AdaptPlan(
        stage1=AdaptConfig(steps=args.steps, train_encoder=args.train_encoder, seed=args.seed),
        stage2=AdaptConfig(steps=args.dpo_steps, learning_rate=1e-4, refit=False, seed=args.seed),
        held_out=args.held_out,
        seed=args.seed,
    )
    result = options.drain_with_bar(adapt(model, labelled, unlabelled, ranker, plan), "adapt")
    report = result.adapter.report
    first = report["stage1"]
    if not result.improved:
        raise ActiveSamError(
            f"No training step raised the held-out objects' IoU (first 3 clicks "
            f"{first['held_out_iou_before']:.3f} before, {first['held_out_iou_after']:.3f} at "
            f"best), so the adapter would be the model as it was: nothing written to "
            f"{args.out}. Label more objects (or more like those you will annotate), or give "
            "more --steps."
        )
    out = result.adapter.save(args.out)
    print(
        f"fine-tuning: held-out IoU (first 3 clicks) {first['held_out_iou_before']:.3f} -> "
        f"{first['held_out_iou_after']:.3f} on {report['held_out']} objects, best step "
        f"{first['best_step']}",
        file=sys.stderr,
    )
    if report["stage2"]:
        second = report["stage2"]
        print(f"preferences: held-out IoU {second['held_out_iou_before']:.3f} -> "
              f"{second['held_out_iou_after']:.3f}", file=sys.stderr)  # fmt: skip
    print(f"saved {out} ({report['seconds']} s)", file=sys.stderr)
    missing = "Bayesian head or quality regressor"
    if not args.train_encoder:  # the head reads the base embeddings the objects carry
        head = options.drain_with_bar(head_for(result.model, labelled), "head", unit="step")
        saved = head.save(HEAD.users(result.model.model_id))
        print(f"Bayesian head for the adapted model: {saved}", file=sys.stderr)
        missing = "quality regressor"
    command = "train-quality" if missing == "quality regressor" else "train-head and train-quality"
    print(
        f"The adapted model has no {missing} of its own yet: fit it with {command} "
        "--adapter; until then the quality estimators that need it are left out of the "
        "ensemble.",
        file=sys.stderr,
    )
    return 0
