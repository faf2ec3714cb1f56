"""What zoom-in costs per click, and what it buys, on the real validation images.

For every object of the real split (images that ship inside installed packages, see
``napari-active-sam make-real-dataset``), plays the RITM episode twice on the same cached
whole-image embedding: once decoding every click on the whole image, once through
:class:`~napari_active_sam.core.engine.zoom.ZoomingPredictor` (a window at the image's own
resolution around the prompts, encoded on first use; the encoder pass counts in the click
that needed it). The two runs alternate which goes first. Prints one JSON object: per
image subset and overall, seconds per click (median over objects of episode time / clicks),
the ratio zoomed / whole, windows encoded per object and mIoU@1 and @5 both ways.

    python benchmarks/bench_zoom.py                 # the bundled demo model, 5 clicks
    python benchmarks/bench_zoom.py --clicks 10 --split test
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from napari_active_sam.cli import options
from napari_active_sam.core.bench.episodes import run_episode
from napari_active_sam.core.data.real import real_images
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import Predictor
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.engine.zoom import ZoomingPredictor


def timed_episode(decoder, embedding, gt, clicks: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    result = run_episode(decoder, embedding, gt, "ritm", clicks)
    return (time.perf_counter() - started) / clicks, result.ious


def summary(rows: list[dict]) -> dict:
    whole = np.array([r["whole_s"] for r in rows])
    zoomed = np.array([r["zoom_s"] for r in rows])
    return {
        "objects": len(rows),
        "seconds_per_click": {
            "whole": round(float(np.median(whole)), 4),
            "zoom": round(float(np.median(zoomed)), 4),
            "ratio": round(float(np.median(zoomed / whole)), 2),
        },
        "windows_per_object": round(float(np.mean([r["windows"] for r in rows])), 2),
        "miou@1": {
            "whole": round(float(np.mean([r["whole_iou"][0] for r in rows])), 4),
            "zoom": round(float(np.mean([r["zoom_iou"][0] for r in rows])), 4),
        },
        "miou@5": {
            "whole": round(float(np.mean([r["whole_iou"][min(4, len(r["whole_iou"]) - 1)]
                                          for r in rows])), 4),  # fmt: skip
            "zoom": round(float(np.mean([r["zoom_iou"][min(4, len(r["zoom_iou"]) - 1)]
                                         for r in rows])), 4),  # fmt: skip
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.model_options(parser)
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--clicks", type=options.positive_int, default=5)
    options.threads_option(parser)
    args = parser.parse_args()
    options.set_threads(args)

    model = options.load_chosen_model(args, device="cpu")
    predictor = Predictor(model)
    rows: list[dict] = []
    for image in real_images(args.split):
        source = SliceSource(image.image, image.window, rgb=image.image.ndim == 3)
        embedding = embed_slice(model, source, EmbeddingStore(model.model_id))
        for label in range(1, int(image.labels.max()) + 1):
            gt = image.labels == label
            if not gt.any():
                continue
            zooming = ZoomingPredictor(predictor, source.raw_slice(()), source.limits())
            runs = [("whole", predictor), ("zoom", zooming)]
            if len(rows) % 2:
                runs.reverse()
            row: dict = {"subset": image.subset, "label": label}
            for name, decoder in runs:
                row[f"{name}_s"], row[f"{name}_iou"] = timed_episode(
                    decoder, embedding, gt, args.clicks
                )
            row["windows"] = zooming.windows_encoded
            rows.append(row)
            print(f"{len(rows)} objects", file=sys.stderr, end="\r")
    report = {
        "model": model.model_id,
        "split": args.split,
        "clicks": args.clicks,
        "threads": args.threads,
        "overall": summary(rows),
        "subsets": {
            subset: summary([r for r in rows if r["subset"] == subset])
            for subset in sorted({r["subset"] for r in rows})
        },
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
