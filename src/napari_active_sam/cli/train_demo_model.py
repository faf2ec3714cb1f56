"""``napari-active-sam train-demo-model``: train the bundled small model on generated data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.enums import SceneKind
from ..core.errors import ActiveSamError
from . import options

NAME = "train-demo-model"
HELP = "train the small demo model on generated data"
DESCRIPTION = (
    "Trains with SAM's interactive recipe on freshly generated scenes, a share of them "
    "domain-randomised. A resumable state is written every few minutes next to --out; "
    "--resume continues a killed run of the same settings."
)


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a share: give 0 to 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    parser.add_argument("--seed", type=options.seed, default=0)
    parser.add_argument(
        "--steps",
        type=options.positive_int,
        default=1400,
        help="optimiser steps (default 1400: about 45 min on 2 CPU cores)",
    )
    parser.add_argument("--batch-size", type=options.positive_int, default=8)
    parser.add_argument(
        "--learning-rate",
        type=options.positive_float,
        default=5e-4,
        help="peak learning rate of the cosine schedule (default 5e-4; a stage continuing "
        "from --init may want less)",
    )
    parser.add_argument(
        "--prompts",
        type=options.positive_int,
        default=8,
        help="prompts per simulated session (default 8)",
    )
    parser.add_argument(
        "--kind",
        default=SceneKind.MIXED,
        choices=[str(m) for m in SceneKind],
        help="scenes to train on (default mixed: the modality-like kinds and domain-randomised "
        "scenes, with real crops as --real-fraction asks)",
    )
    parser.add_argument(
        "--random-fraction",
        type=_share,
        default=0.5,
        help="share of domain-randomised scenes among the generated ones of the mixed kind "
        "(default 0.5)",
    )
    parser.add_argument(
        "--real-fraction",
        type=_share,
        default=0.0,
        help="share of crops of real training images (real-crops: images that ship inside "
        "scikit-image and pydicom, none of the real evaluation set's) in the mixed kind "
        "(default 0)",
    )
    parser.add_argument(
        "--large-targets",
        type=_share,
        default=0.0,
        help="share of sessions whose target is drawn in proportion to its area rather than "
        "uniformly among a scene's objects (default 0)",
    )
    parser.add_argument(
        "--click-loss",
        type=float,
        default=0.0,
        help="weight of a loss asking every head to take every click in, at the clicked "
        "pixels (default 0: the mask loss alone)",
    )
    parser.add_argument(
        "--data-workers",
        type=int,
        default=0,
        help="processes generating scenes while the network trains (default 0: none)",
    )
    parser.add_argument(
        "--click-threads",
        type=int,
        default=0,
        help="threads simulating a batch's corrective clicks (default 0: none; on a GPU, "
        "several keep the CPU from setting the pace)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=options.positive_float,
        default=300.0,
        help="seconds between resumable states (default 300)",
    )
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed or interrupted (Ctrl+C) run")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an --out that exists (default: refused)")  # fmt: skip
    parser.add_argument(
        "--init",
        type=options.existing_file,
        help="continue training from this demo-architecture checkpoint",
    )
    parser.add_argument(
        "--encoder-depth",
        type=options.positive_int,
        help="residual blocks of the image encoder (default: the demo architecture's 4); "
        "with --init of a shallower model, it is grown by blocks that start adding nothing",
    )
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="train the prompt encoder and mask decoder only")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    options.threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from ..core.engine.device import choose_device
    from ..core.sim.training import DemoTrainingConfig, train_demo_model

    if args.resume and args.init is not None:
        raise ActiveSamError("--resume continues the interrupted run from its own state: "
                             "leave --init out.")  # fmt: skip
    options.set_threads(args)
    config = DemoTrainingConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        click_iterations=args.prompts,
        random_fraction=args.random_fraction,
        real_fraction=args.real_fraction,
        large_targets=args.large_targets,
        click_weight=args.click_loss,
        data_workers=args.data_workers,
        click_threads=args.click_threads,
        checkpoint_every_s=args.checkpoint_every,
        encoder_depth=args.encoder_depth,
        freeze_encoder=args.freeze_encoder,
    )
    device = choose_device(args.device)
    steps = train_demo_model(
        args.out, args.seed, config, kind=args.kind, init=args.init, device=device,
        resume=args.resume, overwrite=args.overwrite,
    )  # fmt: skip
    options.drain_with_bar(steps, "train", unit="step")
    print(f"saved {args.out}", file=sys.stderr)
    return 0
