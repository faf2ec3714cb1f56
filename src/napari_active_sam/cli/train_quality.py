"""``napari-active-sam train-quality``: train a model's learned quality estimators."""

from __future__ import annotations

import argparse
import sys

from ..core.enums import SceneKind
from . import options

NAME = "train-quality"
HELP = "train the learned quality estimators (crop CNN and embedding MLP) for a model"
DESCRIPTION = (
    "Simulates prompting on generated scenes (or on the objects of a labelled --data "
    "folder), collects every head's masks and perturbed ground truth with their true Dice, "
    "and trains both regressors with MSE."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.fitting_options(parser, "regressor", images=200, clicks=3)
    parser.add_argument("--kind", default="all", choices=["all", *(str(m) for m in SceneKind)])
    parser.add_argument("--crop-steps", type=options.positive_int, default=2000)
    parser.add_argument("--feature-steps", type=options.positive_int, default=2000)


def run(args: argparse.Namespace) -> int:
    from ..core.keeping import save_or_keep
    from ..core.quality.networks import QUALITY
    from ..core.quality.training import (
        QualityConfig,
        examples_from_objects,
        fit_quality,
        generated_examples,
    )
    from ..core.sim.sources import labelled_objects

    options.check_fitted_output(args)
    options.set_threads(args)
    model = options.load_chosen_model(args)
    examples = options.simulate(
        args,
        lambda: examples_from_objects(
            model, labelled_objects(args.data, model, args.window), args.seed, args.clicks
        ),
        lambda: generated_examples(model, args.images, args.seed, args.kind, args.clicks),
    )
    config = QualityConfig(
        crop_steps=args.crop_steps, feature_steps=args.feature_steps, seed=args.seed
    )
    regressor = options.drain_with_bar(fit_quality(examples, model, config), "fit", unit="step")
    out = save_or_keep(regressor.save, args.out or QUALITY.users(model.model_id),
                       "the quality estimators")  # fmt: skip
    info = regressor.info
    print(
        f"saved {out}: {info['examples']} masks (mean Dice {info['dice_mean']:.3f}); "
        f"held-out Pearson {info['crop_validation'].get('pearson', float('nan')):.3f} (crop), "
        f"{info['feature_validation'].get('pearson', float('nan')):.3f} (embedding); "
        f"{info['wall_time_s']:.0f} s training",
        file=sys.stderr,
    )
    return 0
