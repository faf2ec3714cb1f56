"""Adapting the model with a few labels, the protocol of arXiv 2503.04639 on real images.

For each set (objects of real images that ship inside installed packages, see
``napari-active-sam make-real-dataset``; none was used to train the model), a share of the
validation split's objects (10 % and 20 %, at least two) is labelled and the rest is not.
Every method is scored with the RITM protocol (mIoU after 1 and 5 clicks, Dice after one) on
the unlabelled rest (``rest``; the objects DPO aligned on, as in a session that adapts to
the image being annotated; ranking by IoU reads their truth there) and on the test split's
objects of the same set (``test``; never seen by any stage).

Methods: zero-shot; fine-tuning the prompt encoder and mask decoder from cached embeddings
(``ft``); fine-tuning the image encoder too (``ft+enc``); then DPO on the unlabelled rest,
candidates ranked by IoU with the truth (``dpo-iou``), by the quality estimators with no
truth (``dpo-quality``), by a five-point rating of each candidate alone instead of a
ranking (``dpo-rating``), and by IoU with 10 % and 20 % of the rankings reversed
(``dpo-iou-flip10``, ``dpo-iou-flip20``). Every adapted model decodes small objects in
windows at the magnification the labelled objects' size asks for, as the annotator does
after adapting; zero-shot is scored at the model's own (``zero-shot``) and at that one
(``zero-shot, zoom of the labelled``). Means over ``--seeds`` draws of the labelled
objects. Prints one JSON object.

    python benchmarks/adapt_study.py                      # nuclei and the whole real set
    python benchmarks/adapt_study.py --sets nuclei-ihc --seeds 1 --fractions 0.1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np

from napari_active_sam.cli import options
from napari_active_sam.core.adapt.dpo import align, make_ranker, preferences, rank_by_iou
from napari_active_sam.core.adapt.finetune import AdaptConfig, finetune, ritm_ious
from napari_active_sam.core.adapt.objects import (
    labelled_objects,
    reencoded,
    sized_for,
    split_objects,
)
from napari_active_sam.core.data.real import real_images
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.zoom import magnify_of
from napari_active_sam.core.metrics import iou
from napari_active_sam.core.progress import drain
from napari_active_sam.core.quality.estimators import QualityModels

STAGE2 = AdaptConfig(steps=60, learning_rate=1e-4, refit=False)


def objects_of(model, split: str, subset: str) -> list:
    found = []
    for image in real_images(split):
        if subset in ("all", image.subset):
            source = SliceSource(image.image, image.window, rgb=image.image.ndim == 3)
            found += drain(labelled_objects(model, source, image.labels, image.subset))
    return found


def scores(ious: np.ndarray) -> dict:
    return {
        "miou@1": round(float(ious[:, 0].mean()), 4),
        "miou@5": round(float(ious[:, 4].mean()), 4),
        "dice@1": round(float(np.mean(2 * ious[:, 0] / (1 + ious[:, 0]))), 4),
    }


def flipped(ranker, share: float, rng: np.random.Generator):
    def rank(obj, masks):
        order = ranker(obj, masks)
        return order[::-1] if rng.random() < share else order

    return rank


def rated(obj, masks) -> list[int]:
    """Rating instead of ranking: each candidate scored alone on a five-point scale (its
    IoU with the truth, rounded to quarters), the order read from the scores, ties in the
    candidates' own order (what a rating loses against a ranking)."""
    scores = [round(4 * iou(obj.gt, mask)) for mask in masks]
    return sorted(range(len(masks)), key=lambda i: -scores[i])


def one_draw(model, cut, fraction, seed, quality) -> dict:
    """One draw of the labelled objects. ``cut(model)`` gives the validation and test
    objects cut out for ``model``'s magnification; adaptation decodes at the one the
    labelled objects' size asks for (:func:`sized_for`), zero-shot at the model's own."""
    objects, test = cut(model)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(objects))
    count = max(2, round(fraction * len(objects)))

    def scored(adapted, reencode: bool) -> dict:
        return {"rest": scores(ritm_ious(adapted, rest, 5, reencode)),
                "test": scores(ritm_ious(adapted, test, 5, reencode))}  # fmt: skip

    rest = [objects[i] for i in order[count:]]
    out = {"labelled": count, "rest": len(rest), "test": len(test),
           "zero-shot": scored(model, False)}  # fmt: skip
    sized = sized_for(model, [objects[i].gt for i in order[:count]])
    out["magnify"] = magnify_of(sized)
    objects, test = cut(sized)
    labelled = [objects[i] for i in order[:count]]
    rest = [objects[i] for i in order[count:]]
    train, held = split_objects(labelled, 0.2, np.random.default_rng(seed))
    out["zero-shot, zoom of the labelled"] = scored(sized, False)
    model = sized
    timings = {}
    for name, encoder in (("ft", False), ("ft+enc", True)):
        started = time.perf_counter()
        stage = drain(finetune(model, train, held, AdaptConfig(train_encoder=encoder,
                                                               seed=seed)))  # fmt: skip
        timings[name] = round(time.perf_counter() - started, 1)
        out[name] = scored(stage.model, encoder)
        reference = stage.model  # the last: ft+enc
    others, checks = reencoded(reference, rest), reencoded(reference, held)
    rankers = {
        "dpo-iou": rank_by_iou,
        "dpo-quality": make_ranker("quality", quality),
        "dpo-rating": rated,
        "dpo-iou-flip10": flipped(rank_by_iou, 0.1, np.random.default_rng(seed)),
        "dpo-iou-flip20": flipped(rank_by_iou, 0.2, np.random.default_rng(seed)),
    }
    for name, ranker in rankers.items():
        started = time.perf_counter()
        prefs = drain(preferences(reference, others, ranker))
        aligned = drain(align(reference, prefs, checks, replace(STAGE2, seed=seed)))
        timings[name] = round(time.perf_counter() - started, 1)
        out[name] = scored(aligned.model, True)
    out["seconds"] = timings
    return out


def mean_of(draws: list[dict]) -> dict:
    first = draws[0]
    methods = [k for k in first if isinstance(first[k], dict) and k != "seconds"]
    table: dict = {
        m: {where: {s: round(float(np.mean([d[m][where][s] for d in draws])), 4)
                    for s in first[m][where]} for where in first[m]}
        for m in methods
    }  # fmt: skip
    table["seconds"] = {m: round(float(np.mean([d["seconds"][m] for d in draws])), 1)
                        for m in first["seconds"]}  # fmt: skip
    table.update({k: first[k] for k in ("labelled", "rest", "test")})
    table["magnify"] = [d["magnify"] for d in draws]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.model_options(parser)
    parser.add_argument("--sets", default="nuclei-ihc,all", help="real subsets, or all")
    parser.add_argument("--fractions", default="0.1,0.2")
    parser.add_argument("--seeds", type=options.positive_int, default=2)
    options.threads_option(parser)
    args = parser.parse_args()
    options.set_threads(args)

    model = options.load_chosen_model(args, device="cpu")
    quality = QualityModels.for_model(model, args.checkpoint)
    report: dict = {"model": model.model_id, "seeds": args.seeds, "sets": {}}
    for subset in args.sets.split(","):
        kept: dict[float, tuple[list, list]] = {}

        def cut(sized, subset=subset, kept=kept):
            magnify = magnify_of(sized)
            if magnify not in kept:
                kept[magnify] = (objects_of(sized, "validation", subset),
                                 objects_of(sized, "test", subset))  # fmt: skip
            return kept[magnify]

        for fraction in (float(f) for f in args.fractions.split(",")):
            draws = []
            for seed in range(args.seeds):
                draws.append(one_draw(model, cut, fraction, seed, quality))
                print(f"{subset} {fraction}: seed {seed} done", file=sys.stderr)
            report["sets"][f"{subset} {round(fraction * 100)}%"] = mean_of(draws)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
