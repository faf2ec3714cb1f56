"""``napari-active-sam train-head``: fit a model's Bayesian head (MAP and Laplace posterior)."""

from __future__ import annotations

import argparse
import sys

from ..core.enums import HessianStructure, PriorMethod
from . import options

NAME = "train-head"
HELP = "fit the Bayesian head (MAP + Laplace posterior) for a model"
DESCRIPTION = (
    "Simulates click sets on generated scenes (or on the objects of a labelled --data "
    "folder), trains the head to its MAP and fits a Laplace posterior over its last layer "
    "with laplace-torch."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.fitting_options(parser, "head", images=150, clicks=6)
    parser.add_argument(
        "--steps", type=options.positive_int, default=600, help="MAP optimiser steps"
    )
    parser.add_argument(
        "--structure", default=HessianStructure.DIAG, choices=[str(m) for m in HessianStructure]
    )
    parser.add_argument(
        "--prior", default=PriorMethod.MARGLIK, choices=[str(m) for m in PriorMethod]
    )
    parser.add_argument(
        "--fit-pixels", type=options.positive_int, default=20_000, help="pixels for the posterior"
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.active.bayes_head import HEAD
    from ..core.active.head_training import (
        HeadConfig,
        examples_from_objects,
        fit_head,
        generated_examples,
    )
    from ..core.engine.predictor import Predictor
    from ..core.keeping import save_or_keep
    from ..core.sim.sources import labelled_objects

    options.check_fitted_output(args)
    options.set_threads(args)
    model = options.load_chosen_model(args)

    def from_objects():
        objects = ((e, m) for _, e, m in labelled_objects(args.data, model, args.window))
        rng = np.random.default_rng(args.seed)
        return examples_from_objects(Predictor(model), objects, rng, args.clicks)

    examples = options.simulate(
        args,
        from_objects,
        lambda: generated_examples(model, args.images, args.seed, clicks=args.clicks),
    )
    config = HeadConfig(
        steps=args.steps,
        structure=args.structure,
        prior=args.prior,
        fit_pixels=args.fit_pixels,
        seed=args.seed,
    )
    head = options.drain_with_bar(fit_head(examples, model, config), "fit", unit="step")
    out = save_or_keep(head.save, args.out or HEAD.users(model.model_id), "the Bayesian head")
    info = head.info
    print(
        f"saved {out}: {info['examples']} click sets, BCE {info['sam_loss']:.4f} (SAM) -> "
        f"{info['map_loss']:.4f} (head), prior precision {info['prior_precision'][0]:.3g}",
        file=sys.stderr,
    )
    return 0
