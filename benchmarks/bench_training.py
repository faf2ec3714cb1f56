"""Training speed of the demo model: steps per second with 0, 1 and 2 data workers, the
image encoder trained or frozen.

Each setting trains the demo architecture for ``--steps`` steps from the bundled model (the
first ``--skip`` steps, which include starting the worker processes, are not timed), in the
same process, one after another; prints JSON with the median of ``--repeats`` runs and each
setting's ratio to the first. ``--click-threads`` simulates each batch's corrective clicks
in that many threads and ``--click-loss`` weighs the click loss, in every setting alike.

    python benchmarks/bench_training.py --steps 30 --repeats 3
    python benchmarks/bench_training.py --workers 0 --encoder trained,frozen --click-loss 0.5
    python benchmarks/bench_training.py --device cuda --batch-size 32 --workers 0,12 \
        --click-threads 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from napari_active_sam.core.engine.device import choose_device
from napari_active_sam.core.engine.downloads import bundled_path
from napari_active_sam.core.sim.training import DemoTrainingConfig, train_demo_model


def steps_per_second(config: DemoTrainingConfig, device: torch.device, skip: int) -> float:
    """Steps per second after the first ``skip`` steps of one short run."""
    marks: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        run = train_demo_model(Path(folder) / "m.pt", 0, config,
                               init=bundled_path("demo_model.pt"), device=device)  # fmt: skip
        for progress in run:
            marks.append((progress.done, time.perf_counter()))
    timed = [(done, t) for done, t in marks if done >= skip]
    (first, start), (last, end) = timed[0], timed[-1]
    return (last - first) / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", default="0,1,2", help="data worker counts to compare")
    parser.add_argument("--encoder", default="trained",
                        help="trained, frozen or both (trained,frozen) to compare")  # fmt: skip
    parser.add_argument("--click-threads", type=int, default=0)
    parser.add_argument("--click-loss", type=float, default=0.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = choose_device(args.device)
    results = {}
    settings = [(int(workers), encoder) for workers in args.workers.split(",")
                for encoder in args.encoder.split(",")]  # fmt: skip
    for workers, encoder in settings:
        if encoder not in ("trained", "frozen"):
            parser.error(f"--encoder takes trained and frozen, not {encoder!r}")
        config = DemoTrainingConfig(steps=args.steps, batch_size=args.batch_size,
                                    warmup_steps=1, data_workers=workers,
                                    click_threads=args.click_threads,
                                    click_weight=args.click_loss,
                                    freeze_encoder=encoder == "frozen",
                                    checkpoint_every_s=1e9)  # fmt: skip
        runs = [steps_per_second(config, device, args.skip) for _ in range(args.repeats)]
        results[f"{workers} data workers, {encoder} encoder"] = {
            "median_steps_per_s": round(statistics.median(runs), 3),
            "runs": [round(r, 3) for r in runs],
        }
    baseline = results[next(iter(results))]["median_steps_per_s"]
    for entry in results.values():
        entry["ratio_to_first"] = round(entry["median_steps_per_s"] / baseline, 3)
    print(json.dumps({
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "click_threads": args.click_threads,
        "click_loss": args.click_loss,
        "steps": args.steps,
        "timed_after": args.skip,
        "settings": results,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
