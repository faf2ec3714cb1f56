"""Benchmark throughput: episodes per second in one process and on a 2-worker LocalCluster.

Prints one JSON object: episodes/s for the same RITM episodes played (a) one after another
in this process with torch's default threads and (b) by ``run_benchmark`` on a LocalCluster
of two single-threaded workers (after each worker has loaded the model once, timed
apart), the speed-up (goal ≥ 1.6 on two cores), and the time to the
first click of an episode (median over episodes: from the raw image to the first mask,
encoder included, and the first decode alone).

    python benchmarks/bench_eval.py                 # demo model, 12 generated images
    python benchmarks/bench_eval.py --images 4 --clicks 5 --model tiny --checkpoint t.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_active_sam.cli import options
from napari_active_sam.core.bench.episodes import evaluate_pair
from napari_active_sam.core.bench.runner import BenchmarkConfig, run_benchmark
from napari_active_sam.core.cluster import dask_client, load_on_worker
from napari_active_sam.core.data.datasets import discover_pairs, load_pair, object_targets
from napari_active_sam.core.data.scenes import write_dataset
from napari_active_sam.core.engine.embeddings import embed_slice
from napari_active_sam.core.engine.predictor import Predictor
from napari_active_sam.core.engine.store import EmbeddingStore
from napari_active_sam.core.prompts import Click, PromptSet
from napari_active_sam.core.sim.clicker import ritm_next_click


def first_click_latency(config: BenchmarkConfig) -> dict[str, float]:
    model = config.model.load()
    predictor = Predictor(model)
    with_encoder, decode_only = [], []
    for pair in discover_pairs(config.data)[0]:
        source, labels = load_pair(pair, config.window_for(pair.stem))
        for obj in object_targets(labels):
            (index,) = obj.indices
            gt = labels[index] == obj.label
            start = time.perf_counter()
            embedding = embed_slice(model, source, EmbeddingStore(model.encoder_id), index)
            encoded = time.perf_counter()
            row, col, positive = ritm_next_click(gt, np.zeros_like(gt))
            predictor.predict(embedding, PromptSet((Click(col, row, positive),)))
            done = time.perf_counter()
            with_encoder.append(done - start)
            decode_only.append(done - encoded)
    return {
        "first_click_with_encoder_s": float(np.median(with_encoder)),
        "first_click_decode_s": float(np.median(decode_only)),
        "episodes_measured": len(with_encoder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.model_options(parser)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--kind", default="mixed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ref = options.model_ref(args)
        size = ref.load().architecture.img_size
        list(write_dataset(data, args.images, seed=11, kind=args.kind, size=size))
        config = BenchmarkConfig(data=data, model=ref, strategies=("ritm",), clicks=args.clicks)

        pairs, _ = discover_pairs(data)
        start = time.perf_counter()
        episodes = 0
        for pair in pairs:
            _, labels = load_pair(pair, config.window_for(pair.stem))
            todo = [(obj, "ritm") for obj in object_targets(labels)]
            episodes += len(evaluate_pair(ref, pair, config.window_for(pair.stem), todo,
                                          args.clicks, 0))  # fmt: skip
        local_s = time.perf_counter() - start
        print(f"one process: {episodes} episodes in {local_s:.1f} s", file=sys.stderr)

        with dask_client(workers=2) as (client, info):
            # Steady state: each worker imports torch and loads the model once, timed apart.
            warm = time.perf_counter()
            client.run(load_on_worker, ref)
            startup_s = time.perf_counter() - warm
            start = time.perf_counter()
            generator = run_benchmark(config, Path(tmp) / "out", client, info.torch_threads)
            for _ in generator:
                pass
            cluster_s = time.perf_counter() - start
        print(f"cluster: {episodes} episodes in {cluster_s:.1f} s", file=sys.stderr)
        latency = first_click_latency(config)

    report = {
        "model": ref.model_id(),
        "images": args.images,
        "episodes": episodes,
        "clicks": args.clicks,
        "one_process": {
            "seconds": round(local_s, 2),
            "episodes_per_s": episodes / local_s,
            "torch_threads": torch.get_num_threads(),
        },  # fmt: skip
        "local_cluster_2_workers": {
            "seconds": round(cluster_s, 2),
            "episodes_per_s": episodes / cluster_s,
            "torch_threads_per_worker": 1,
            "worker_warm_up_s": round(startup_s, 2),
        },
        "speedup": local_s / cluster_s,
        "goal_speedup": 1.6,
        **latency,
    }
    report["goals_met"] = {"speedup": report["speedup"] >= 1.6}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
