"""How often the volume's credible interval holds the true volume, on generated CT volumes,
and the widening of the posterior's interval that makes it hold 95 % of them.

For each of ``--volumes`` generated CT-like volumes (``make_ct_volume``, 2.5 × 0.8 × 0.8 mm)
every organ is segmented as a user of the demo model would: its true mask on its largest
slice as the seed, propagated through the volume. Those masks are measured
(``measure_objects`` with the posterior's own interval, ``spread=1``) and checked against
the organ's true volume. The widening (``POSTERIOR_SPREAD``) is fitted on the first half of
the volumes (the 95th percentile of |error| / half-width) and checked on the second half.
Printed as one JSON object: the coverage of the posterior alone, the fitted widening and
its held-out coverage (goal 0.90-0.98 for a 95 % interval), the coverage of the shipped
``POSTERIOR_SPREAD`` on the held-out half, median relative widths, and per object the
figures; then the same, with the shipped widening, on a real volume (nibabel's EPI brain
MRI: the brain and the ventricles).

Examples
--------
::

    python benchmarks/eval_measure.py --volumes 10 > measure.json
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from napari_active_sam.core.active.bayes_head import BayesHead
from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.annotate.volume import propagate
from napari_active_sam.core.data.real import mri_epi_volume
from napari_active_sam.core.data.scenes import make_ct_volume
from napari_active_sam.core.engine.checkpoints import load_model
from napari_active_sam.core.engine.preprocess import IntensityWindow, SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.metrics import dice
from napari_active_sam.core.progress import drain
from napari_active_sam.core.quality.measure import POSTERIOR_SPREAD, measure_objects

SPACING = (2.5, 0.8, 0.8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Coverage of the volume's credible interval.")
    parser.add_argument("--volumes", type=int, default=10)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=100)
    return parser.parse_args(argv)


def _ratio(entry: dict) -> float:
    """|measured - true| over the posterior's half-width on the truth's side."""
    measured, true = entry["measured_mm3"], entry["true_mm3"]
    side = measured - entry["low_mm3"] if true < measured else entry["high_mm3"] - measured
    return abs(measured - true) / max(side, 1e-9)


def measured_objects(model, head, volume, truth, labels, window, spacing, args, seed, spread):
    """Every object of ``truth``, in the order of ``labels`` (a voxel two objects reach goes
    to the first), seeded with its true mask on its largest slice, propagated, measured; per
    object the measurement against its true volume."""
    source = SliceSource(volume, window)
    store = EmbeddingStore(model.encoder_id)
    session = AnnotationSession(model, source, store)
    committed = np.zeros(truth.shape, np.int32)
    for label in labels:
        organ = truth == label
        z = int(np.argmax(organ.sum(axis=(1, 2))))
        grown = drain(propagate(session, {z: organ[z]}))
        committed[grown.mask & (committed == 0)] = label
    steps = measure_objects(model, head, source, committed, spacing, store, args.samples,
                            args.level, seed=seed, spread=spread)  # fmt: skip
    voxel = float(np.prod(spacing))
    objects = []
    for measurement in drain(steps):
        true_volume = float(np.count_nonzero(truth == measurement.label)) * voxel
        objects.append({
            "label": measurement.label,
            "true_mm3": true_volume,
            "measured_mm3": measurement.volume_mm3,
            "low_mm3": measurement.volume_low_mm3,
            "high_mm3": measurement.volume_high_mm3,
            "covered": bool(
                measurement.volume_low_mm3 <= true_volume <= measurement.volume_high_mm3
            ),
            "predicted_dice": float(measurement.predicted_dice),
            "true_dice": float(dice(truth == measurement.label, committed == measurement.label)),
        })  # fmt: skip
    return objects


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = load_model("demo", device="cpu")
    head = BayesHead.for_model(model)
    objects = []
    for number in range(args.volumes):
        volume, truth, names = make_ct_volume(np.random.default_rng(args.seed + number))
        window = IntensityWindow.ct("soft_tissue")
        for entry in measured_objects(model, head, volume, truth, list(names.values()), window,
                                      SPACING, args, number, 1.0):  # fmt: skip
            objects.append({"volume": number, **entry})
        print(f"volume {number + 1}/{args.volumes}", file=sys.stderr, flush=True)
    volume, truth, spacing = mri_epi_volume()
    real = measured_objects(model, head, volume, truth, [1, 2], IntensityWindow.percentile(),
                            spacing, args, 0, POSTERIOR_SPREAD)  # fmt: skip
    widths = [(o["high_mm3"] - o["low_mm3"]) / max(o["measured_mm3"], 1e-9) for o in objects]
    errors = [abs(o["measured_mm3"] - o["true_mm3"]) / o["true_mm3"] for o in objects]
    fit = [o for o in objects if o["volume"] < args.volumes // 2]
    held_out = [o for o in objects if o["volume"] >= args.volumes // 2]
    fitted = float(np.percentile([_ratio(o) for o in fit], args.level * 100))
    report = {
        "model": "demo",
        "level": args.level,
        "samples": args.samples,
        "objects": len(objects),
        "coverage_posterior_alone": float(np.mean([o["covered"] for o in objects])),
        "median_relative_width_posterior_alone": float(np.median(widths)),
        "median_relative_error": float(np.median(errors)),
        "fitted_spread": fitted,
        "held_out_coverage_fitted": float(np.mean([_ratio(o) <= fitted for o in held_out])),
        "shipped_spread": POSTERIOR_SPREAD,
        "held_out_coverage_shipped": float(
            np.mean([_ratio(o) <= POSTERIOR_SPREAD for o in held_out])
        ),
        "held_out_median_relative_width_shipped": float(
            np.median([POSTERIOR_SPREAD * w for o, w in zip(objects, widths, strict=True)
                       if o["volume"] >= args.volumes // 2])  # fmt: skip
        ),
        "coverage_goal": [0.90, 0.98],
        "real_mri_epi_shipped_spread": {
            "coverage": float(np.mean([o["covered"] for o in real])),
            "per_object": real,
        },
        "per_object": objects,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
