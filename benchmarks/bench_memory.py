"""Peak memory while encoding and annotating a volume larger than memory should allow.

Writes a ``--slices`` × ``--size`` × ``--size`` uint16 OME-Zarr volume (4.3 GB by default,
one chunk per slice) with a bright tube through it, then, in a fresh process, opens it the
way the annotator does (``read_image``: a lazy dask array), encodes every slice into an
embedding store capped at ``--cache-mb``, answers a click on three slices and propagates
the tube through ``--propagate`` slices (whole slices, no zoom windows). Printed as one JSON
object: the volume's size on disk and in memory, the peak resident memory of the measuring
process, its memory before the volume was opened (Python, torch, the model), and the goal
(peak under 1.5 GB plus the cache's cap).

Examples
--------
::

    python benchmarks/bench_memory.py --out /tmp/big.ome.zarr > memory.json
    python benchmarks/bench_memory.py --slices 16 --size 512 --out /tmp/small.ome.zarr
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GOAL_BYTES = int(1.5 * 2**30)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Peak memory on a large volume; one JSON.")
    parser.add_argument("--slices", type=int, default=512)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--cache-mb", type=int, default=256, help="embedding cache cap")
    parser.add_argument("--propagate", type=int, default=40, help="slices to propagate over")
    parser.add_argument("--out", type=Path, required=True, help="where the volume is written")
    parser.add_argument("--reuse", action="store_true", help="measure a volume written before")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def tube(size: int, z: int, slices: int) -> np.ndarray:
    """Boolean ``(size, size)``: the tube's cross-section on slice ``z``."""
    rows, cols = np.ogrid[:size, :size]
    centre = size / 2 + size / 8 * np.sin(2 * np.pi * z / slices)
    return (rows - centre) ** 2 + (cols - size / 2) ** 2 < (size / 12) ** 2


def write_volume(args: argparse.Namespace) -> None:
    """The volume, slice by slice (never whole in memory)."""
    import dask.array as da
    import zarr
    from ome_zarr.writer import write_image

    def block(block_info=None):
        z = block_info[None]["chunk-location"][0]
        rng = np.random.default_rng(z)
        plane = rng.normal(100, 20, (args.size, args.size)) + 900 * tube(args.size, z, args.slices)
        return plane.astype(np.uint16)[None]

    volume = da.map_blocks(block, dtype=np.uint16,
                           chunks=((1,) * args.slices, (args.size,), (args.size,)))  # fmt: skip
    group = zarr.open_group(str(args.out), mode="w")
    write_image(volume, group, axes="zyx", scale_factors=(), scale={"z": 2.0, "y": 0.5, "x": 0.5})


def measure(args: argparse.Namespace) -> dict:
    """Open, encode, click, propagate; in this (fresh) process."""
    import psutil

    from napari_active_sam.core.annotate.session import AnnotationSession
    from napari_active_sam.core.annotate.volume import propagate
    from napari_active_sam.core.data.files import read_image
    from napari_active_sam.core.engine.checkpoints import load_model
    from napari_active_sam.core.engine.preprocess import SliceSource
    from napari_active_sam.core.engine.store import EmbeddingStore
    from napari_active_sam.core.progress import drain
    from napari_active_sam.core.prompts import Click, PromptSet

    model = load_model("demo", device="cpu")
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    image = read_image(args.out)
    store = EmbeddingStore(model.encoder_id, max_bytes=args.cache_mb * 2**20)
    # Whole slices (no zoom windows): this noisy synthetic tube is followed whole, and the
    # figure is about memory, which zoom windows add little to (4 small embeddings a slice).
    session = AnnotationSession(model, SliceSource(image.data), store, zoom=False)
    drain(session.encode(session.source.slice_indices()))
    encoded_s = time.perf_counter() - start
    middle = args.slices // 2
    for z in (middle - 5, middle, middle + 5):
        rows, cols = np.nonzero(tube(args.size, z, args.slices))
        click = Click(float(np.median(cols)), float(np.median(rows)), True)
        session.answer((z,), PromptSet((click,)), "eig")
    clicked_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Empty seeds bound the growth to about --propagate slices around the middle.
    empty = np.zeros((args.size, args.size), bool)
    low, high = max(0, middle - args.propagate), min(args.slices - 1, middle + args.propagate)
    seeds = {low: empty, middle: tube(args.size, middle, args.slices), high: empty}
    grown = drain(propagate(session, seeds))
    reached = len(grown.masks.slices())
    return {
        "rss_before_volume_bytes": int(before),
        "peak_rss_before_propagation_bytes": int(clicked_peak),
        "encode_s": encoded_s,
        "propagated_slices": reached,
        "stops": list(grown.stops),
        "propagated_mask_bytes": grown.masks.nbytes,
        "store_memory_bytes": store.memory_bytes,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args)))
        return 0
    start = time.perf_counter()
    if not (args.reuse and Path(args.out).is_dir()):
        write_volume(args)
    written_s = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    child = subprocess.run([sys.executable, __file__, "--measure", *map(str, sys.argv[1:])],
                           capture_output=True, text=True, check=False)  # fmt: skip
    if child.returncode != 0:
        print(child.stderr, file=sys.stderr)
        return child.returncode
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    cache = args.cache_mb * 2**20
    report = {
        "volume": [args.slices, args.size, args.size],
        "volume_bytes": args.slices * args.size * args.size * 2,
        "disk_bytes": disk,
        "write_s": written_s,
        "peak_rss_bytes": peak,
        **measured,
        "cache_cap_bytes": cache,
        "goal_bytes": GOAL_BYTES + cache,
        "goal_met": peak <= GOAL_BYTES + cache,
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
