"""What zoom-in costs per click, and what it buys, on the real validation images.

For every object of the real split (images that ship inside installed packages, see
``napari-active-sam make-real-dataset``), plays the RITM episode on the same cached
whole-image embedding once decoding every click on the whole image and once per
magnification through :class:`~napari_active_sam.core.engine.zoom.ZoomingPredictor` (a
window around the prompts enlarged ``--magnify`` times to the model's input at first,
encoded on first use; the encoder pass counts in the click that needed it), and once as
the annotator decodes (its lone click tried at each of the zoom's scales, the answer SAM's
IoU head rates best kept). The runs take turns going first. Prints one JSON object: per
image subset and overall, seconds per click (median over objects of episode time / clicks)
and its ratio to the whole image, windows encoded per object, and mIoU@1 and @5 of each.

    python benchmarks/bench_zoom.py                 # the bundled demo model, 5 clicks
    python benchmarks/bench_zoom.py --magnify 1,2,3 --clicks 20
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
from napari_active_sam.core.engine.zoom import MAGNIFY, SCALES, ZoomingPredictor


def timed_episode(decoder, embedding, gt, clicks: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    result = run_episode(decoder, embedding, gt, "ritm", clicks)
    return (time.perf_counter() - started) / clicks, result.ious


def summary(rows: list[dict], names: list[str]) -> dict:
    whole = np.array([r["whole"]["seconds"] for r in rows])
    out: dict = {"objects": len(rows)}
    for name in names:
        seconds = np.array([r[name]["seconds"] for r in rows])
        ious = [r[name]["ious"] for r in rows]
        out[name] = {
            "seconds_per_click": round(float(np.median(seconds)), 4),
            "ratio_to_whole": round(float(np.median(seconds / whole)), 2),
            "windows_per_object": round(float(np.mean([r[name]["windows"] for r in rows])), 2),
            "miou@1": round(float(np.mean([i[0] for i in ious])), 4),
            "miou@5": round(float(np.mean([i[min(4, len(i) - 1)] for i in ious])), 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.model_options(parser)
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--clicks", type=options.positive_int, default=5)
    parser.add_argument(
        "--magnify",
        default=f"1,{MAGNIFY:g}",
        help="magnifications of the first zoom window, comma-separated",
    )
    options.threads_option(parser)
    args = parser.parse_args()
    options.set_threads(args)
    magnifications = [float(m) for m in args.magnify.split(",")]

    model = options.load_chosen_model(args, device="cpu")
    predictor = Predictor(model)
    names = ["whole"] + [f"zoom x{m:g}" for m in magnifications] + ["zoom, scales " + ",".join(
        f"x{MAGNIFY * s:g}" for s in SCALES
    )]  # fmt: skip
    rows: list[dict] = []
    for image in real_images(args.split):
        source = SliceSource(image.image, image.window, rgb=image.image.ndim == 3)
        embedding = embed_slice(model, source, EmbeddingStore(model.encoder_id))
        for label in range(1, int(image.labels.max()) + 1):
            gt = image.labels == label
            if not gt.any():
                continue
            raw, limits = source.raw_slice(()), source.limits()
            zoomed = [
                ZoomingPredictor(predictor, raw, limits, magnify=m, scales=(1.0,))
                for m in magnifications
            ] + [ZoomingPredictor(predictor, raw, limits)]
            runs = list(zip(names, [predictor, *zoomed], strict=True))
            turn = len(rows) % len(runs)
            row: dict = {"subset": image.subset, "label": label}
            for name, decoder in runs[turn:] + runs[:turn]:
                seconds, ious = timed_episode(decoder, embedding, gt, args.clicks)
                windows = getattr(decoder, "windows_encoded", 0)
                row[name] = {"seconds": seconds, "ious": ious, "windows": windows}
            rows.append(row)
            print(f"{len(rows)} objects", file=sys.stderr, end="\r")
    report = {
        "model": model.model_id,
        "split": args.split,
        "clicks": args.clicks,
        "threads": args.threads,
        "overall": summary(rows, names),
        "subsets": {
            subset: summary([r for r in rows if r["subset"] == subset], names)
            for subset in sorted({r["subset"] for r in rows})
        },
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
