"""Ground-truth-free quality estimators against true Dice on held-out generated scenes.

Prints JSON: for each estimator, Pearson and Spearman correlation (and mean absolute error)
between predicted and true Dice, for SAM's own masks with their prompts known
(``sam_outputs``) and for masks judged alone (``masks_only``, as the ``quality`` command
does for another tool's masks, including perturbed ground truth); and the mean true Dice
when the best of SAM's three multimask masks is chosen by each estimator instead of by
SAM's IoU head. Saves a scatter plot of predicted against true Dice.

    python benchmarks/eval_quality.py                         # the demo model, seed 1
    python benchmarks/eval_quality.py --images 60 --plot quality.png --threads 1
    python benchmarks/eval_quality.py --real validation --objects 20   # real images
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from napari_active_sam.cli import options
from napari_active_sam.core.enums import Estimator
from napari_active_sam.core.progress import drain
from napari_active_sam.core.quality.estimators import QualityModels
from napari_active_sam.core.quality.evaluation import evaluate_estimators, plot_quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.model_options(parser)
    parser.add_argument("--images", type=int, default=40, help="held-out generated scenes")
    parser.add_argument("--seed", type=int, default=1, help="scene seed (training used 0)")
    parser.add_argument("--kind", default="all", help="ct, ultrasound, nuclei, mixed or all")
    parser.add_argument("--real", choices=["validation", "test"],
                        help="judge masks on this real split, not generated scenes")  # fmt: skip
    parser.add_argument("--clicks", type=int, default=3, help="clicks per simulated session")
    parser.add_argument("--objects", type=int, default=6, help="objects per scene")
    parser.add_argument(
        "--estimators", default=",".join(e.value for e in Estimator), help="comma-separated"
    )
    parser.add_argument("--plot", default="quality_scatter.png", help="scatter plot PNG")
    parser.add_argument("--no-zoom", dest="zoom", action="store_false",
                        help="ask SAM about every object on the whole image")  # fmt: skip
    options.threads_option(parser)
    args = parser.parse_args()
    options.set_threads(args)

    started = time.perf_counter()
    model = options.load_chosen_model(args, device="cpu")
    models = QualityModels.for_model(model, args.checkpoint)
    models.zoom = args.zoom
    steps = evaluate_estimators(
        models,
        images=args.images,
        seed=args.seed,
        kind=args.kind,
        clicks=args.clicks,
        objects_per_image=args.objects,
        estimators=[e.strip() for e in args.estimators.split(",") if e.strip()],
        real=args.real,
    )
    result = drain(steps, lambda progress: print(progress.message, file=sys.stderr))
    summary = result["summary"]
    summary["plot"] = str(plot_quality(result["records"], args.plot))
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
