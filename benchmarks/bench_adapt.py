"""How long stage 1 of adaptation takes: fine-tuning on 10 labelled objects.

The prompt encoder and mask decoder train from cached embeddings (the encoder's one pass
per image is counted apart), for the bundled demo model and segment-anything's ViT-B with
random weights (timing does not depend on the weights). Each run is the full default stage
with early stopping off (its longest case: every step and every check on the held-out
objects). Prints one JSON object; goal: the stage within 120 s on a 2-core CPU.

    python benchmarks/bench_adapt.py
    python benchmarks/bench_adapt.py --models demo --steps 50
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_active_sam.core.adapt.finetune import AdaptConfig, finetune
from napari_active_sam.core.adapt.objects import labelled_objects, split_objects
from napari_active_sam.core.data.scenes import make_scene
from napari_active_sam.core.engine.architectures import ARCHITECTURES
from napari_active_sam.core.engine.checkpoints import load_model, random_model
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.progress import drain

GOAL_SECONDS = 120


def ten_objects(model, seed: int = 0) -> tuple[list, float]:
    """Ten objects of generated nuclei scenes, and the seconds their encoding took."""
    rng = np.random.default_rng(seed)
    found, started = [], time.perf_counter()
    while len(found) < 10:
        scene = make_scene("nuclei", rng, 256)
        source = SliceSource(scene.image, scene.window)
        found += drain(labelled_objects(model, source, scene.labels, "scene"))
    return found[:10], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,vit_b")
    parser.add_argument("--steps", type=int, default=AdaptConfig().steps)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict = {"threads": args.threads, "steps": args.steps, "goal_s": GOAL_SECONDS}
    for name in args.models.split(","):
        model = load_model("demo", device="cpu") if name == "demo" else random_model(
            ARCHITECTURES[name], seed=0)  # fmt: skip
        objects, encoding = ten_objects(model)
        train, held = split_objects(objects, 0.2, np.random.default_rng(0))
        config = AdaptConfig(steps=args.steps, patience=args.steps, refit=False)
        started = time.perf_counter()
        result = drain(finetune(model, train, held, config))
        seconds = time.perf_counter() - started
        report[name] = {
            "objects": len(objects),
            "encoding_s": round(encoding, 1),
            "stage1_s": round(seconds, 1),
            "seconds_per_step": round(seconds / max(result.steps, 1), 3),
            "checks": len(result.history),
            "within_goal": seconds <= GOAL_SECONDS,
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
