"""``napari-active-sam train-demo-model``: train the bundled small model on generated data."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from . import options

NAME = "train-demo-model"
HELP = "train the small demo model on generated data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--steps",
        type=options.positive_int,
        help="optimiser steps (default 1400: ~45 min on 2 CPU cores)",
    )
    parser.add_argument("--batch-size", type=options.positive_int, default=8)
    parser.add_argument(
        "--pool-size", type=options.positive_int, default=2000, help="generated training scenes"
    )
    parser.add_argument(
        "--prompts",
        type=options.positive_int,
        default=8,
        help="prompts per simulated session (default 8)",
    )
    parser.add_argument(
        "--init",
        type=options.existing_file,
        help="continue training from this demo-architecture checkpoint",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    options.threads_option(parser)


def run(args: argparse.Namespace) -> int:
    from ..core.engine.checkpoints import choose_device
    from ..core.sim.training import DemoTrainingConfig, train_demo_model

    options.set_threads(args)
    config = DemoTrainingConfig(
        batch_size=args.batch_size, pool_size=args.pool_size, click_iterations=args.prompts
    )
    if args.steps:
        config = replace(config, steps=args.steps)
    device = choose_device(args.device)
    options.drain_with_bar(
        train_demo_model(args.out, args.seed, config, init=args.init, device=device),
        "train",
        unit="step",
    )
    print(f"saved {args.out}", file=sys.stderr)
    return 0
