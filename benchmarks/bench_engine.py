"""Benchmark the SAM engine against segment-anything's own ``SamPredictor``.

Measures, side by side in one process:

``embedding``
    Seconds to embed one slice: ``to_sam_rgb`` + ``slice_signature`` +
    ``SliceEncoder.encode`` against ``SamPredictor.set_image`` on the same uint8 RGB image.
    Runs alternate in order (ours first, then baseline first, ...) after one warm-up each.
    Goal: ratio ours/baseline <= 1.05.
``click``
    Seconds to decode one positive click and produce the mask it shows:
    ``Predictor.predict`` (all four heads on the decoder's grid) and the shown head's mask
    at the image's resolution, against ``SamPredictor.predict(..., multimask_output=True)``
    (three masks at the image's resolution) on the same embedded image, alternating in the
    same way. Goal: ratio <= 1.10.
``encoder_ceiling``
    The image encoder by itself: seconds per image for a batch of already normalised
    inputs at the model's input size, in the precision the engine encodes with (bf16
    autocast and TF32 on CUDA unless ``--precision fp32``), median of the repeats. No
    engine can encode faster than this.
``store_reopen``
    Seconds to encode a synthetic volume into a zarr ``EmbeddingStore`` with
    ``encode_slices`` (once, not repeated; batches of ``--batch`` slices), per slice and as
    a ratio to the encoder's ceiling (goal on a GPU: <= 1.2), against reopening that store
    and getting every slice (intensity limits and signatures included; the page cache is
    warm; goal: >= 20 times faster than encoding).
``precision_agreement``
    The masks of one click at the centre of every object of two real images (the bundled
    demo model): bf16 embeddings resized on the device against fp32 embeddings resized as
    ``SamPredictor`` does. Goal: mean IoU >= 0.99.
``bytes_per_value``
    ``EmbeddingStore.memory_bytes`` per feature value of an in-memory store holding one
    embedding per slice (goal <= 2, i.e. fp16), and the process's RSS growth while holding
    them per value.

Medians of the repeats and ratios ours/baseline are printed as one JSON object on stdout;
progress goes to stderr. The model is segment-anything's ViT-B with random weights (timing
does not depend on the weights), on the device ``choose_device`` picks unless ``--device``
says otherwise. Torch's default thread count is used.

Examples
--------
Smoke run (a tiny model, small images, a few repeats; under a minute on a laptop CPU)::

    python benchmarks/bench_engine.py --quick

Full run (ViT-B, 512 x 512, 20 slices, 5 repeats; about ten minutes on two CPU cores)::

    python benchmarks/bench_engine.py > bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from segment_anything import SamPredictor

from napari_active_sam.core.engine.architectures import ARCHITECTURES, SMOKE_ARCHITECTURE
from napari_active_sam.core.engine.checkpoints import LoadedModel, random_model
from napari_active_sam.core.engine.device import (
    choose_device,
    encoder_arithmetic,
    resolve_precision,
)
from napari_active_sam.core.engine.embeddings import SliceEncoder, encode_slices
from napari_active_sam.core.engine.predictor import Predictor
from napari_active_sam.core.engine.preprocess import SliceSource, to_sam_rgb
from napari_active_sam.core.engine.store import (
    Embedding,
    EmbeddingStore,
    slice_key,
    slice_signature,
)
from napari_active_sam.core.prompts import Click, PromptSet

GOALS = {
    "embedding": 1.05,
    "click": 1.10,
    "bytes_per_value": 2.0,
    "encode_over_ceiling": 1.2,
    "reopen_speedup": 20.0,
    "precision_agreement": 0.99,
}
"""Time ratios ours/baseline, bytes per stored feature value and encoding over the
encoder's ceiling (upper bounds); reopening's speed-up over encoding and the masks'
agreement across precisions (lower bounds)."""

TINY = SMOKE_ARCHITECTURE

FULL = {"arch": "vit_b", "repeats": 5, "click_repeats": 20, "size": 512, "slices": 20}
QUICK = {"arch": "tiny", "repeats": 2, "click_repeats": 3, "size": 128, "slices": 3}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the engine against SamPredictor; print one JSON object."
    )
    parser.add_argument("--repeats", type=int, help=f"embedding runs (default {FULL['repeats']})")
    parser.add_argument(
        "--click-repeats", type=int, help=f"click runs (default {FULL['click_repeats']})"
    )
    parser.add_argument("--size", type=int, help=f"image side in pixels (default {FULL['size']})")
    parser.add_argument("--slices", type=int, help=f"volume depth (default {FULL['slices']})")
    parser.add_argument(
        "--arch",
        choices=[*ARCHITECTURES, TINY.name],
        help=f"architecture (default {FULL['arch']}; {QUICK['arch']} with --quick)",
    )
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps")
    parser.add_argument(
        "--precision", default=None, help="encoder arithmetic: auto (default), fp32, bf16"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help="slices per encoder pass (default: 8 on a "
        "GPU, 1 on a CPU)"
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("repeats", "click_repeats", "size", "slices"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# ------------------------------------------------------------------------------- helpers


def synthetic_volume(slices: int, size: int, seed: int) -> np.ndarray:
    """int16 ``(slices, size, size)``: a bright ball on a gradient, with noise."""
    rng = np.random.default_rng(seed)
    z = np.linspace(-1, 1, slices, dtype=np.float32)[:, None, None]
    y = np.linspace(-1, 1, size, dtype=np.float32)[None, :, None]
    x = np.linspace(-1, 1, size, dtype=np.float32)[None, None, :]
    ball = (x**2 + y**2 + 0.5 * z**2 < 0.4**2).astype(np.float32)
    volume = 400 * ball + 100 * x + rng.normal(0, 20, (slices, size, size)).astype(np.float32)
    return volume.astype(np.int16)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def paired_times(
    ours: Callable[[], Any],
    baseline: Callable[[], Any],
    repeats: int,
    device: torch.device,
    label: str,
) -> tuple[list[float], list[float]]:
    """Time ``ours`` and ``baseline`` ``repeats`` times each, alternating which goes first.

    One untimed warm-up of each precedes the timed runs.
    """

    def timed(fn: Callable[[], Any]) -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    timed(ours)
    timed(baseline)
    ours_s: list[float] = []
    baseline_s: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            ours_s.append(timed(ours))
            baseline_s.append(timed(baseline))
        else:
            baseline_s.append(timed(baseline))
            ours_s.append(timed(ours))
        log(
            f"  {label} {i + 1}/{repeats}: ours {ours_s[-1]:.4f} s, baseline {baseline_s[-1]:.4f} s"
        )
    return ours_s, baseline_s


def comparison(ours_s: list[float], baseline_s: list[float], goal: float) -> dict[str, Any]:
    """Medians and their ratio; minima too, the figure least touched by other load."""
    ours, baseline = statistics.median(ours_s), statistics.median(baseline_s)
    return {
        "ours_s": ours,
        "baseline_s": baseline,
        "ratio": ours / baseline,
        "goal": goal,
        "runs": len(ours_s),
        "ours_min_s": min(ours_s),
        "baseline_min_s": min(baseline_s),
        "min_ratio": min(ours_s) / min(baseline_s),
    }


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc only), so RSS counts live memory."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


def rss_bytes() -> int:
    gc.collect()
    _release_free_heap()
    return psutil.Process().memory_info().rss


# ---------------------------------------------------------------------------- benchmarks


def bench_embedding(
    model: LoadedModel,
    source: SliceSource,
    index: tuple[int, ...],
    repeats: int,
    precision: str | None = None,
) -> tuple[dict[str, Any], Embedding, SamPredictor]:
    """Our slice embedding vs ``SamPredictor.set_image``; returns both, set on the slice."""
    limits = source.limits()
    parameters = source.parameters(limits)
    raw = source.raw_slice(index)
    rgb = to_sam_rgb(raw, limits)
    encoder = SliceEncoder(model, precision)
    predictor = SamPredictor(model.sam)
    result: dict[str, Embedding] = {}

    def ours() -> None:
        image = to_sam_rgb(raw, limits)
        signature = slice_signature(raw, model.encoder_id, parameters)
        (result["embedding"],) = encoder.encode([image], [signature])

    def baseline() -> None:
        predictor.set_image(rgb)

    ours_s, baseline_s = paired_times(ours, baseline, repeats, model.device, "embedding")
    return comparison(ours_s, baseline_s, GOALS["embedding"]), result["embedding"], predictor


def bench_click(
    model: LoadedModel, embedding: Embedding, predictor: SamPredictor, repeats: int
) -> dict[str, Any]:
    """One positive click at the image centre: ``Predictor`` vs ``SamPredictor.predict``."""
    height, width = embedding.original_size
    x, y = width // 2, height // 2
    ours_predictor = Predictor(model)
    prompts = PromptSet((Click(x, y, True),))
    coords, labels = np.array([[x, y]]), np.array([1])

    def ours() -> None:
        ours_predictor.predict(embedding, prompts).mask()

    def baseline() -> None:
        predictor.predict(point_coords=coords, point_labels=labels, multimask_output=True)

    ours_s, baseline_s = paired_times(ours, baseline, repeats, model.device, "click")
    return comparison(ours_s, baseline_s, GOALS["click"])


def encoder_ceiling(
    model: LoadedModel, batch: int, repeats: int, precision: str | None = None
) -> dict[str, Any]:
    """Seconds per image of the image encoder alone on a ready batch, in ``precision``."""
    chosen = resolve_precision(precision, model.device)
    size = model.architecture.img_size
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, size, size, generator=generator).to(model.device)

    @torch.inference_mode()
    def run() -> None:
        with encoder_arithmetic(chosen, model.device):
            model.sam.image_encoder(inputs)

    times = []
    run()  # warm-up
    for i in range(repeats):
        synchronize(model.device)
        start = time.perf_counter()
        run()
        synchronize(model.device)
        times.append((time.perf_counter() - start) / batch)
        log(f"  ceiling {i + 1}/{repeats}: {times[-1]:.4f} s per image")
    return {
        "precision": chosen.value,
        "batch": batch,
        "per_image_s": statistics.median(times),
        "per_image_min_s": min(times),
        "runs": repeats,
    }


def bench_store(
    model: LoadedModel,
    source: SliceSource,
    directory: Path,
    batch: int,
    precision: str | None = None,
    ceiling_s: float | None = None,
) -> tuple[dict[str, Any], list[Embedding]]:
    """Encode every slice into a zarr store, then reopen it and get every slice."""
    path = directory / "s.zarr"
    indices = source.slice_indices()
    log(f"store: encoding {len(indices)} slices into {path}, {batch} per pass")
    store = EmbeddingStore(model.encoder_id, path=path)
    start = time.perf_counter()
    for progress in encode_slices(model, source, store, batch_size=batch, precision=precision):
        log(f"  {progress.message} ({time.perf_counter() - start:.1f} s)")
    encode_s = time.perf_counter() - start
    del store

    log("store: reopening")
    start = time.perf_counter()
    store = EmbeddingStore(model.encoder_id, path=path)
    parameters = source.parameters(source.limits())
    embeddings = [
        store.get(
            slice_key(index),
            slice_signature(source.raw_slice(index), model.encoder_id, parameters),
        )
        for index in indices
    ]
    reopen_s = time.perf_counter() - start
    found = [e for e in embeddings if e is not None]
    log(f"  reopened {len(found)}/{len(indices)} slices in {reopen_s:.3f} s")
    per_slice = encode_s / len(indices)
    return {
        "slices": len(indices),
        "batch": batch,
        "encode_s": encode_s,
        "encode_per_slice_s": per_slice,
        "encode_over_ceiling": per_slice / ceiling_s if ceiling_s else None,
        "encode_over_ceiling_goal": GOALS["encode_over_ceiling"],
        "encode_over_3_min": encode_s > 180,
        "reopen_s": reopen_s,
        "reopen_per_slice_s": reopen_s / len(indices),
        "speedup": encode_s / reopen_s,
        "speedup_goal": GOALS["reopen_speedup"],
        "all_found": len(found) == len(indices),
    }, found


def _centre_click_masks(model: LoadedModel, images, encoder: SliceEncoder) -> list[np.ndarray]:
    """The shown mask of one click at the centre of each object of ``images``."""
    predictor = Predictor(model)
    masks = []
    for image in images:
        rgb = to_sam_rgb(image.image, image.window.limits(image.image))
        (embedding,) = encoder.encode([rgb], ["agreement"])
        for label in np.unique(image.labels)[1:]:
            rows, cols = np.nonzero(image.labels == label)
            middle = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
            prompts = PromptSet((Click(float(cols[middle]), float(rows[middle]), True),))
            masks.append(predictor.predict(embedding, prompts).mask())
    return masks


def bench_precision_agreement(device: torch.device) -> dict[str, Any]:
    """bf16 embeddings resized on the device against the fp32 reference (demo model)."""
    from napari_active_sam.core.data.real import nuclei_ihc, photo_coins
    from napari_active_sam.core.engine.checkpoints import load_model
    from napari_active_sam.core.metrics import iou

    model = load_model("demo", device=device)
    images = [nuclei_ihc("validation")[0], photo_coins("validation")[0]]
    reference = _centre_click_masks(model, images, SliceEncoder(model, "fp32", False))
    fast = _centre_click_masks(model, images, SliceEncoder(model, "bf16", True))
    agreement = [iou(a, b) for a, b in zip(fast, reference, strict=True) if b.any()]
    log(f"precision: bf16 vs fp32 mean IoU {np.mean(agreement):.4f} on {len(agreement)} clicks")
    return {
        "model": "demo",
        "images": [image.name for image in images],
        "clicks": len(agreement),
        "mean_iou": float(np.mean(agreement)),
        "min_iou": float(np.min(agreement)),
        "goal": GOALS["precision_agreement"],
    }


def bench_bytes(model: LoadedModel, embeddings: list[Embedding]) -> dict[str, Any]:
    """Bytes per feature value of an in-memory store, by its count and by the process's RSS."""
    store = EmbeddingStore(model.encoder_id)
    before = rss_bytes()
    for i, embedding in enumerate(embeddings):
        copy = Embedding(
            embedding.features.clone(),
            embedding.original_size,
            embedding.input_size,
            embedding.signature,
        )
        store.put(slice_key((i,)), copy)
        del copy
    after = rss_bytes()
    values = sum(e.features.nelement() for e in embeddings)
    held = sum(store.has(slice_key((i,)), e.signature) for i, e in enumerate(embeddings))
    result = {
        "embeddings": len(embeddings),
        "held": held,
        "values": values,
        "memory_bytes": store.memory_bytes,
        "bytes_per_value": store.memory_bytes / values,
        "rss_growth_bytes": after - before,
        "rss_bytes_per_value": (after - before) / values,
        "goal": GOALS["bytes_per_value"],
    }
    log(
        f"bytes: {result['bytes_per_value']:.3f} per value, "
        f"RSS {result['rss_bytes_per_value']:.3f} per value"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    arch = TINY if args.arch == TINY.name else ARCHITECTURES[args.arch]
    device = choose_device(args.device)
    batch = args.batch or (8 if device.type == "cuda" else 1)
    log(f"building {arch.name} with random weights on {device}")
    model = random_model(arch, seed=args.seed).to(device)

    volume = synthetic_volume(args.slices, args.size, args.seed)
    source = SliceSource(volume)
    middle = (args.slices // 2,)

    log(f"embedding: {args.repeats} runs each at {args.size} x {args.size}")
    embedding_result, embedding, predictor = bench_embedding(
        model, source, middle, args.repeats, args.precision
    )
    log(f"click: {args.click_repeats} runs each")
    click_result = bench_click(model, embedding, predictor, args.click_repeats)
    del predictor
    log(f"encoder ceiling: batches of {batch}")
    ceiling = encoder_ceiling(model, batch, args.repeats, args.precision)

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as directory:
        store_result, embeddings = bench_store(
            model, source, Path(directory), batch, args.precision, ceiling["per_image_s"]
        )
    bytes_result = bench_bytes(model, embeddings)
    agreement = bench_precision_agreement(device)

    report = {
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "architecture": arch.name,
        "precision": resolve_precision(args.precision, device).value,
        "image_size": [args.size, args.size],
        "slices": args.slices,
        "quick": args.quick,
        "embedding": embedding_result,
        "click": click_result,
        "encoder_ceiling": ceiling,
        "store_reopen": store_result,
        "bytes_per_value": bytes_result,
        "precision_agreement": agreement,
        "goals_met": {
            "embedding": embedding_result["ratio"] <= GOALS["embedding"],
            "click": click_result["ratio"] <= GOALS["click"],
            "bytes_per_value": bytes_result["bytes_per_value"] <= GOALS["bytes_per_value"],
            "encode_over_ceiling": store_result["encode_over_ceiling"]
            <= GOALS["encode_over_ceiling"],
            "reopen_speedup": store_result["speedup"] >= GOALS["reopen_speedup"],
            "precision_agreement": agreement["mean_iou"] >= GOALS["precision_agreement"],
        },
        "wall_s": time.perf_counter() - wall,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
