"""Quality of a model with the RITM clicker protocol, on real images and on generated
held-out scenes.

Prints JSON: mIoU after clicks 1..20, mIoU@1, mIoU@5, NoC@80/85/90 and NoF per subset and
overall, for the real set (``--real validation`` or ``test``: images that ship inside
installed packages, see ``napari-active-sam make-real-dataset``) and for generated scenes of
each kind; and how much SAM's three multimask heads disagree after one click on objects
inside other objects compared with isolated objects (generated scenes).

    python benchmarks/eval_demo_model.py                      # the bundled demo model
    python benchmarks/eval_demo_model.py --checkpoint m.pt --objects 400 --seed 1
    python benchmarks/eval_demo_model.py --real test --objects 0   # the real test split only
    python benchmarks/eval_demo_model.py --choose sam   # SAM's IoU head picks the first mask
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from napari_active_sam.cli import options
from napari_active_sam.core.bench.episodes import run_episode
from napari_active_sam.core.data.real import real_images
from napari_active_sam.core.data.scenes import make_scene
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import InsistingPredictor, Predictor
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.engine.zoom import SCALES, ZoomingPredictor
from napari_active_sam.core.enums import SceneKind
from napari_active_sam.core.metrics import number_of_clicks
from napari_active_sam.core.quality.choice import JudgingPredictor, can_judge
from napari_active_sam.core.quality.estimators import QualityModels


def head_variance(first, gt: np.ndarray) -> float:
    """Mean over the pixels any head or the ground truth covers of the variance across the
    three multimask heads' probabilities."""
    heads = first.probabilities[1:]
    region = (heads > 0.5).any(axis=0) | gt
    return float(heads.var(axis=0)[region].mean()) if region.any() else 0.0


def summarise(curves: list[list[float]]) -> dict:
    ious = np.array(curves)
    return {
        "objects": len(curves),
        "miou": [round(float(v), 4) for v in ious.mean(axis=0)],
        "miou@1": round(float(ious[:, 0].mean()), 4),
        "miou@5": round(float(ious[:, 4].mean()), 4),
        "noc": {
            str(t): round(float(np.mean([number_of_clicks(c, t / 100) for c in ious])), 3)
            for t in (80, 85, 90)
        },  # fmt: skip
        "nof": {str(t): int(sum((c < t / 100).all() for c in ious)) for t in (85, 90)},
    }


def judged(decoder, source: SliceSource, quality: QualityModels | None, insist: bool = True):
    """``decoder``, its answers to a lone click judged by the quality ensemble when
    ``quality`` is given (as the annotator chooses the mask it shows), asked again when the
    mask shown leaves clicks out with ``insist`` (as the annotator does)."""
    if quality is not None:
        decoder = JudgingPredictor(decoder, quality, source.sam_slice())
    return InsistingPredictor(decoder) if insist else decoder


def real_curves(
    predictor: Predictor, split: str, clicks: int, zoom: bool, quality: QualityModels | None,
    insist: bool = True, scales: tuple[float, ...] | None = None,
) -> tuple[dict[str, list[list[float]]], int]:
    """IoU curves of every object of the real ``split`` by subset, and how many zoom windows
    were encoded."""
    model = predictor.model
    curves: dict[str, list[list[float]]] = {}
    windows = 0
    for image in real_images(split):
        source = SliceSource(image.image, image.window, rgb=image.image.ndim == 3)
        embedding = embed_slice(model, source, EmbeddingStore(model.encoder_id))
        zooming = ZoomingPredictor(predictor, source.raw_slice(()), source.limits(),
                                   scales=scales)  # fmt: skip
        used = judged(zooming if zoom else predictor, source, quality, insist)
        for label in range(1, int(image.labels.max()) + 1):
            gt = image.labels == label
            if gt.any():
                result = run_episode(used, embedding, gt, "ritm", clicks)
                curves.setdefault(image.subset, []).append(result.ious)
        windows += zooming.windows_encoded
    return curves, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.model_options(parser)
    parser.add_argument("--objects", type=int, default=240, help="at least this many objects")
    parser.add_argument("--seed", type=int, default=1, help="scene seed (training used 0)")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--kinds", default="ct,ultrasound,nuclei",
                        help="generated kinds, in turn (default ct,ultrasound,nuclei)")  # fmt: skip
    parser.add_argument("--real", default="validation", choices=["validation", "test", "none"],
                        help="real split to report too (default validation)")  # fmt: skip
    parser.add_argument("--no-zoom", dest="zoom", action="store_false",
                        help="decode every click on the whole real image (default: small "
                        "objects in a window at full resolution, as annotated)")  # fmt: skip
    parser.add_argument("--choose", choices=["quality", "sam"], default="quality",
                        help="who picks the mask shown for the first click among SAM's "
                        "three: the quality ensemble, as annotated (default), or SAM's "
                        "IoU head")  # fmt: skip
    parser.add_argument("--no-insist", dest="insist", action="store_false",
                        help="show SAM's answer even when it leaves clicks out (default: "
                        "asked again from the mask edited at them, as annotated)")  # fmt: skip
    parser.add_argument("--scales", type=options.scale_list,
                        help="multiples of the zoom's magnification a lone click is decoded "
                        "at, the answer rated best shown (default: "
                        + ",".join(f"{s:g}" for s in SCALES)
                        + "; 1,2: also at twice the magnification)")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = options.load_chosen_model(args, device="cpu")
    predictor = Predictor(model)
    quality = None
    if args.choose == "quality":
        quality = QualityModels.for_model(model, args.checkpoint)
        if not can_judge(quality):
            parser.error(f"{model.name} has neither a Bayesian head nor a quality regressor "
                         "to judge masks with: fit them, or pass --choose sam")  # fmt: skip
    rng = np.random.default_rng(args.seed)
    kinds = [SceneKind(k.strip()) for k in args.kinds.split(",")]
    curves: dict[str, list[list[float]]] = {k.value: [] for k in kinds}
    variance = {"inside_other": [], "isolated": []}
    started = time.perf_counter()
    count = scenes = 0
    while count < args.objects:
        kind = kinds[scenes % len(kinds)]
        scenes += 1
        scene = make_scene(kind, rng, model.architecture.img_size)
        source = SliceSource(scene.image, scene.window)
        embedding = embed_slice(model, source, EmbeddingStore(model.encoder_id))
        used = judged(predictor, source, quality, args.insist)
        nested = set(scene.parents) | set(scene.parents.values())
        for label in range(1, scene.labels.max() + 1):
            gt = scene.labels == label
            result = run_episode(used, embedding, gt, "ritm", args.clicks)
            curves[kind.value].append(result.ious)
            count += 1
            if label in scene.parents:
                variance["inside_other"].append(head_variance(result.first, gt))
            elif label not in nested:
                variance["isolated"].append(head_variance(result.first, gt))
        print(f"{count} objects", file=sys.stderr, end="\r")
    real, windows = ({}, 0) if args.real == "none" else real_curves(
        predictor, args.real, args.clicks, args.zoom, quality, args.insist, args.scales
    )
    report = {
        "model": model.model_id,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "protocol": "RITM clicker, previous logits fed back, first click multimask "
        "(the head shown chosen by " + ("the quality ensemble" if quality else "SAM's IoU head")
        + "), later clicks single-mask head"
        + (", asked again when it leaves clicks out" if args.insist else ""),
        "choose": args.choose,
        "insist": args.insist,
        "seed": args.seed,
        "scenes": scenes,
        "clicks": args.clicks,
        "real": {
            "split": args.real,
            "zoom": args.zoom,
            "scales": list(args.scales or SCALES) if args.zoom else None,
            "zoom_windows_encoded": windows,
            "overall": summarise(sum(real.values(), [])),
            "by_subset": {name: summarise(c) for name, c in real.items()},
        } if real else None,  # fmt: skip
        "overall": summarise(sum(curves.values(), [])) if count else None,
        "by_kind": {kind: summarise(c) for kind, c in curves.items() if c},
        "multimask_head_variance_after_one_click": {
            group: {"mean": round(float(np.mean(v)), 5), "objects": len(v)}
            for group, v in variance.items()
        },
        "wall_time_s": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
