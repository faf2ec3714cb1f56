"""Seconds per propagated slice and peak memory when growing one object through a volume.

A synthetic ``--slices`` × ``--size`` × ``--size`` int16 volume holds a tube that runs
through every slice; the demo model (SAM1 family; its 256-pixel encoder makes a CPU run
practical) encodes every slice with ``encode_slices``, then grows the tube from a seed on
the middle slice with :func:`~napari_active_sam.core.annotate.volume.propagate`, as the
annotator does (zoom windows included unless ``--no-zoom``). Printed as one JSON object:
encoding and propagation seconds per slice (medians of ``--repeats`` runs), the slices
reached, the 3D Dice, and the process's peak resident memory against the volume's own
size. SAM2-family models are not measured here (the engine has no SAM2 path yet).

Examples
--------
Full run (200 slices of 512 × 512; a few minutes on two CPU cores)::

    python benchmarks/bench_volume.py > bench_volume.json

Smoke run::

    python benchmarks/bench_volume.py --slices 20 --size 256 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np
import torch

from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.annotate.volume import propagate
from napari_active_sam.core.engine.checkpoints import choose_device, load_model
from napari_active_sam.core.engine.embeddings import encode_slices
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.metrics import dice
from napari_active_sam.core.progress import drain


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time propagation; print one JSON object.")
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", help="auto, cpu, cuda or mps")
    parser.add_argument(
        "--no-zoom", dest="zoom", action="store_false",
        help="decode every slice whole (default: as the annotator, zoom windows on large "
        "slices)",
    )  # fmt: skip
    return parser.parse_args(argv)


def tube_volume(slices: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int16 ``(slices, size, size)`` noise with a bright tube whose centre drifts, and
    the tube's mask."""
    rng = np.random.default_rng(seed)
    z = np.arange(slices)[:, None, None]
    y, x = (axis[None] for axis in np.mgrid[:size, :size])
    centre_y = size / 2 + size / 8 * np.sin(z / max(slices, 1) * 2 * np.pi)
    radius = size / 10
    tube = (y - centre_y) ** 2 + (x - size / 2) ** 2 < radius**2
    volume = rng.normal(0, 30, (slices, size, size)) + 400 * tube
    return volume.astype(np.int16), tube


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    device = choose_device(args.device)
    model = load_model("demo", device=device)
    volume, tube = tube_volume(args.slices, args.size)
    before = peak_rss_bytes()
    encode_s, propagate_s, reached, scores = [], [], [], []
    for _ in range(args.repeats):
        session = AnnotationSession(
            model, SliceSource(volume), EmbeddingStore(model.model_id), zoom=args.zoom
        )
        start = time.perf_counter()
        drain(encode_slices(model, session.source, session.store, limits=session.limits))
        encode_s.append((time.perf_counter() - start) / args.slices)
        middle = args.slices // 2
        start = time.perf_counter()
        grown = drain(propagate(session, {middle: tube[middle]}))
        propagated = max(int(grown.mask.any(axis=(1, 2)).sum()) - 1, 1)
        propagate_s.append((time.perf_counter() - start) / propagated)
        reached.append(propagated + 1)
        scores.append(dice(tube, grown.mask))
    report = {
        "torch": torch.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "model": model.name,
        "volume": [args.slices, args.size, args.size],
        "volume_bytes": int(volume.nbytes),
        "zoom": args.zoom,
        "encode_s_per_slice": statistics.median(encode_s),
        "propagate_s_per_slice": statistics.median(propagate_s),
        "slices_reached": reached,
        "dice": [round(float(s), 4) for s in scores],
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_before_bytes": before,
        "runs": args.repeats,
        "wall_s": time.perf_counter() - wall,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
