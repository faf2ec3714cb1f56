"""Seconds per propagated slice and peak memory when growing one object through a volume.

A synthetic ``--slices`` × ``--size`` × ``--size`` int16 volume holds a tube that runs
through every slice. The model encodes every slice with ``encode_slices``, then the tube is
grown with :func:`~napari_active_sam.core.annotate.volume.propagate` as the annotator does:
from a seed on the middle slice (SAM family: slice-to-slice prompting, zoom windows included
unless ``--no-zoom``), or, for a SAM 2 model, tracked with its memory. A SAM 2 model with
``--random-weights`` cannot follow the tube, so the tube is then seeded on the first and the
last slice and every slice between is tracked (what is timed is the same work per slice).
Printed as one JSON object: encoding and propagation seconds per slice (medians of
``--repeats`` runs), the slices reached, the 3D Dice, and the process's peak resident memory
while encoding and propagating (counted from the start of encoding where Linux lets it be
reset) against the resident memory before and the volume's own size. Run once per model,
so that each peak is its own.

Examples
--------
Full run (200 slices of 512 × 512; a few minutes on two CPU cores)::

    python benchmarks/bench_volume.py > bench_volume.json
    python benchmarks/bench_volume.py --model sam2.1_hiera_t --random-weights \
        --slices 40 > bench_volume_sam2.json

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
from pathlib import Path

import numpy as np
import torch

from napari_active_sam.core.annotate.session import AnnotationSession
from napari_active_sam.core.annotate.volume import propagate
from napari_active_sam.core.engine.architectures import NAMED_ARCHITECTURES
from napari_active_sam.core.engine.checkpoints import (
    LoadedModel,
    load_model,
    random_model,
)
from napari_active_sam.core.engine.device import choose_device
from napari_active_sam.core.engine.embeddings import encode_slices
from napari_active_sam.core.engine.preprocess import SliceSource
from napari_active_sam.core.engine.registry import get_spec
from napari_active_sam.core.engine.sam2_family import SMOKE_SAM2_ARCHITECTURE
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.metrics import dice
from napari_active_sam.core.progress import drain


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time propagation; print one JSON object.")
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", help="auto, cpu, cuda or mps")
    parser.add_argument("--model", default="demo", help="a registered model, or tiny-sam2")
    parser.add_argument(
        "--random-weights", action="store_true",
        help="build the model's architecture with random weights (for timing where its "
        "weights cannot be downloaded)",
    )  # fmt: skip
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
    y, x = np.mgrid[:size, :size]
    radius = size / 10
    volume = np.empty((slices, size, size), np.int16)
    tube = np.empty((slices, size, size), bool)
    for z in range(slices):  # slice by slice: no float temporaries the size of the volume
        centre_y = size / 2 + size / 8 * np.sin(z / max(slices, 1) * 2 * np.pi)
        tube[z] = (y - centre_y) ** 2 + (x - size / 2) ** 2 < radius**2
        volume[z] = rng.normal(0, 30, (size, size)) + 400 * tube[z]
    return volume, tube


def _model(name: str, random_weights: bool, device: torch.device) -> LoadedModel:
    if name == SMOKE_SAM2_ARCHITECTURE.name:
        return random_model(SMOKE_SAM2_ARCHITECTURE).to(device)
    if random_weights:
        return random_model(NAMED_ARCHITECTURES[get_spec(name).architecture]).to(device)
    return load_model(name, device=device)


def _status_kb(field: str) -> int | None:
    """A field of ``/proc/self/status`` in kB (Linux), or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Start the peak resident memory afresh from now (Linux: ``clear_refs``); whether it
    could be."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb * 1024


def peak_rss_bytes() -> int:
    """The peak resident memory since :func:`reset_peak_rss` (else since the start)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    return kb * 1024


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    device = choose_device(args.device)
    args.random_weights |= args.model == SMOKE_SAM2_ARCHITECTURE.name  # it has no weights
    model = _model(args.model, args.random_weights, device)
    volume, tube = tube_volume(args.slices, args.size)
    last = args.slices - 1
    if model.is_sam2 and args.random_weights:
        seeds = {0: tube[0], last: tube[last]}
    else:
        seeds = {args.slices // 2: tube[args.slices // 2]}
    before = rss_bytes()
    reset = reset_peak_rss()  # the peak of encoding and propagation, not of making the volume
    encode_s, propagate_s, reached, scores = [], [], [], []
    for _ in range(args.repeats):
        session = AnnotationSession(
            model, SliceSource(volume), EmbeddingStore(model.encoder_id), zoom=args.zoom
        )
        start = time.perf_counter()
        drain(encode_slices(model, session.source, session.store, limits=session.limits))
        encode_s.append((time.perf_counter() - start) / args.slices)
        start = time.perf_counter()
        grown = drain(propagate(session, seeds))
        propagated = max(len(grown.slices), 1)
        propagate_s.append((time.perf_counter() - start) / propagated)
        reached.append(len(seeds) + sum(report.kept for report in grown.slices.values()))
        scores.append(dice(tube, grown.mask))
    report = {
        "torch": torch.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "model": model.name,
        "random_weights": args.random_weights,
        "seeds": sorted(seeds),
        "volume": [args.slices, args.size, args.size],
        "volume_bytes": int(volume.nbytes),
        "zoom": args.zoom,
        "encode_s_per_slice": statistics.median(encode_s),
        "propagate_s_per_slice": statistics.median(propagate_s),
        "slices_reached": reached,
        "dice": [round(float(s), 4) for s in scores],
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_rss_since": "encoding" if reset else "process start",
        "rss_before_bytes": before,
        "runs": args.repeats,
        "wall_s": time.perf_counter() - wall,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
