"""Benchmark one active-prompting click against one plain ``SamPredictor.predict`` call.

Measures, side by side in one process, on the same embedded image and the same click:

``bald``
    ``Predictor.predict`` (all four heads) + the Bayesian head on each of SAM's three
    multimask heads and its K posterior maps + the BALD map upscaled to the image + the
    top-5 suggestions (:func:`napari_active_sam.core.active.acquisition.uncertainty`) + the mask
    the user sees (SAM's shown head, upscaled), against
    ``SamPredictor.predict(..., multimask_output=True)``. Goal: ratio <= 1.5.
``eig``
    The same with the EIG map over SAM's three multimask heads. Goal: ratio <= 1.2.

Both on segment-anything's ViT-B with random weights at 1024 x 1024 (timing does not
depend on the weights; the head has random weights of the shipped head's shape), and on the
bundled demo model with its shipped head at its 256 x 256 input. Runs alternate in order
after one warm-up each; medians and ratios are printed as one JSON object on stdout. For
scale, each model's ``encoder_ceiling`` is its image encoder alone on a ready batch (8 on a
GPU, in bf16 autocast with TF32; 1 on a CPU, in fp32), per image.

Examples
--------
Smoke run (the demo model only, a few repeats)::

    python benchmarks/bench_active.py --quick

Full run (ViT-B at 1024 and the demo model, 20 repeats; a few minutes on two CPU cores)::

    python benchmarks/bench_active.py > bench_active.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor

from bench_engine import comparison, encoder_ceiling, log, paired_times
from napari_active_sam.core.active.acquisition import uncertainty
from napari_active_sam.core.active.bayes_head import (
    DEFAULT_SAMPLES,
    BayesHead,
    BayesHeadNet,
)
from napari_active_sam.core.data.scenes import make_scene
from napari_active_sam.core.engine.architectures import ARCHITECTURES
from napari_active_sam.core.engine.checkpoints import load_model, random_model
from napari_active_sam.core.engine.device import choose_device
from napari_active_sam.core.engine.embeddings import SliceEncoder
from napari_active_sam.core.engine.geometry import acquisition_grid
from napari_active_sam.core.engine.predictor import Predictor, shown_head
from napari_active_sam.core.engine.preprocess import to_sam_rgb
from napari_active_sam.core.prompts import Click, PromptSet

GOALS = {"bald": 1.5, "eig": 1.2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time one active click; print one JSON object.")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="K")
    parser.add_argument("--device", help="auto, cpu, cuda or mps")
    parser.add_argument("--quick", action="store_true", help="demo model only, 5 repeats")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def random_head(model, seed: int) -> BayesHead:
    """A head of the shipped shape with random weights, for timing a model without one."""
    torch.manual_seed(seed)
    net = BayesHeadNet()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    mean = torch.cat([net.out.weight.reshape(-1), net.out.bias]).detach()
    covariance = torch.eye(len(mean)) * 1e-3
    return BayesHead(net, mean, covariance, model.model_id, acquisition_grid(model))


def bench_model(model, head: BayesHead, size: int, repeats: int, samples: int, seed: int):
    rng = np.random.default_rng(seed)
    scene = make_scene("ct", rng, size)
    rgb = to_sam_rgb(scene.image, scene.window.limits(scene.image))
    (embedding,) = SliceEncoder(model).encode([rgb], ["bench"])
    rows, cols = np.nonzero(scene.labels == 1)
    row, col = int(np.median(rows)), int(np.median(cols))
    prompts = PromptSet((Click(float(col), float(row), True),))
    predictor = Predictor(model)
    baseline = SamPredictor(model.sam)
    baseline.set_image(rgb)
    coords, labels = prompts.point_arrays()

    def plain() -> Any:
        return baseline.predict(coords, labels, multimask_output=True)

    def active(name: str):
        def run() -> Any:
            prediction = predictor.predict(embedding, prompts)
            shown = shown_head(prediction, prompts)
            found = uncertainty(name, prediction, prompts, model, head, samples, 5, shown=shown)
            return found, prediction.mask(shown)

        return run

    found, _ = active("bald")()
    result: dict[str, Any] = {
        "model": model.name,
        "image": [size, size],
        "grid": model.architecture.low_res_size,
        "acquisition_grid": acquisition_grid(model),
        "samples": samples,
        "suggestions": len(found.suggestions),
    }
    for name in ("bald", "eig"):
        log(f"{model.name} {name}: {repeats} runs each")
        ours_s, baseline_s = paired_times(active(name), plain, repeats, model.device, name)
        result[name] = comparison(ours_s, baseline_s, GOALS[name])
        log(f"  {name} ratio {result[name]['ratio']:.2f} (goal <= {GOALS[name]})")
    batch = 8 if model.device.type == "cuda" else 1
    result["encoder_ceiling"] = encoder_ceiling(model, batch, min(repeats, 5))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    device = choose_device(args.device)
    repeats = 5 if args.quick else args.repeats
    results: dict[str, Any] = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
    }
    demo = load_model("demo", device=device)
    head = BayesHead.for_model(demo)
    results["demo"] = bench_model(demo, head, 256, repeats, args.samples, args.seed)
    if not args.quick:
        log("building vit_b with random weights")
        vit_b = random_model(ARCHITECTURES["vit_b"], seed=args.seed).to(device)
        results["vit_b"] = bench_model(
            vit_b, random_head(vit_b, args.seed), 1024, repeats, args.samples, args.seed
        )
    results["wall_s"] = time.perf_counter() - wall
    json.dump(results, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
