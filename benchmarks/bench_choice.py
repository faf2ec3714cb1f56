"""What letting the quality ensemble choose the mask shown for a lone click costs, and what
it buys, on the real validation images.

Each object's first click (the RITM click at its centre) is decoded as the annotator does
(zoomed in on a large image) and its shown mask chosen by SAM's IoU head and by the quality
ensemble (:mod:`napari_active_sam.core.quality.choice`), each with its own zooming decoder:
in a window at the zoom's default scales (the annotator's: the magnification only), and
in windows twice and four times enlarged, the answer rated best kept.
The IoU of the shown mask is that of the first decode; time per click is the median over
objects of the best of ``--repeats`` further decodes (the window then encoded).

Prints JSON.

    python benchmarks/bench_choice.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_active_sam.cli import options
from napari_active_sam.core.bench.strategies import STRATEGIES, first_click, parse_strategy
from napari_active_sam.core.data.real import real_images
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import Predictor, shown_head
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.engine.zoom import ZoomingPredictor
from napari_active_sam.core.metrics import iou
from napari_active_sam.core.quality.choice import JudgingPredictor, can_judge
from napari_active_sam.core.quality.estimators import QualityModels
from napari_active_sam.core.sim.episode import clicks_to_prompts


def best_time(decoder, embedding, prompts, repeats: int):
    """The prediction and the shortest of ``repeats`` decodes of ``prompts`` (seconds)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        prediction = decoder.predict(embedding, prompts)
        prediction.mask(shown_head(prediction, prompts))  # the shown mask, upscaled
        times.append(time.perf_counter() - started)
    return prediction, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.model_options(parser)
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = options.load_chosen_model(args, device="cpu")
    quality = QualityModels.for_model(model, args.checkpoint)
    if not can_judge(quality):
        parser.error(f"{model.name} has neither a Bayesian head nor a quality regressor")
    predictor = Predictor(model)
    spec = STRATEGIES[parse_strategy("ritm")]
    names = [f"{judge}{scale}" for scale in ("", " at two scales") for judge in ("sam", "quality")]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    ious: dict[str, dict[str, list[float]]] = {}
    for image in real_images(args.split):
        source = SliceSource(image.image, image.window, rgb=image.image.ndim == 3)
        limits = source.limits()
        embedding = embed_slice(model, source, EmbeddingStore(model.encoder_id))
        raw, rgb = source.raw_slice(()), source.sam_slice((), limits)
        decoders = {}
        for scale, scales in (("", None), (" at two scales", (1.0, 2.0))):
            decoders["sam" + scale] = ZoomingPredictor(predictor, raw, limits, scales=scales)
            decoders["quality" + scale] = JudgingPredictor(
                ZoomingPredictor(predictor, raw, limits, scales=scales), quality, rgb
            )
        for label in range(1, int(image.labels.max()) + 1):
            gt = image.labels == label
            prompts = clicks_to_prompts(first_click(spec, gt, np.random.default_rng(0)))
            for name, decoder in decoders.items():
                prediction = decoder.predict(embedding, prompts)  # as the annotator's answer
                _, spent = best_time(decoder, embedding, prompts, args.repeats)
                seconds[name].append(spent)
                mask = prediction.mask(shown_head(prediction, prompts))
                ious.setdefault(image.subset, {name: [] for name in names})[name].append(
                    iou(gt, mask)
                )
    median = {name: float(np.median(v)) for name, v in seconds.items()}
    every = {name: sum((v[name] for v in ious.values()), []) for name in seconds}
    print(json.dumps({
        "model": model.model_id,
        "split": args.split,
        "objects": len(seconds["sam"]),
        "ms_per_first_click": {name: round(1000 * t, 1) for name, t in median.items()},
        "ratio_to_sam": {name: round(t / median["sam"], 2) for name, t in median.items()},
        "miou@1": {name: round(float(np.mean(v)), 4) for name, v in every.items()},
        "miou@1_by_subset": {
            subset: {name: round(float(np.mean(v)), 4) for name, v in found.items()}
            for subset, found in ious.items()
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
