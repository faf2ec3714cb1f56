"""The ``napari-active-sam`` command: models, precompute (and more as the plugin grows)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .core.errors import ActiveSamError
from .core.progress import Progress


def _drain_with_bar(
    progress: Generator[Progress, None, Any], description: str, unit: str = "slice"
) -> Any:
    """Drain a core generator, drawing a tqdm bar on stderr; return its return value."""
    from tqdm import tqdm

    with tqdm(desc=description, unit=unit, file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            try:
                step = next(progress)
            except StopIteration as stop:
                return stop.value
            bar.total = step.total
            bar.n = step.done
            bar.set_postfix_str(step.message, refresh=False)
            bar.refresh()


def _cmd_models(args: argparse.Namespace) -> int:
    from .core.engine.checkpoints import cache_dir, cached_path, choose_device
    from .core.engine.registry import MODELS

    rows = []
    for spec in MODELS.values():
        path = cached_path(spec)
        rows.append(
            {
                "name": spec.name,
                "title": spec.title,
                "architecture": spec.architecture,
                "size_mb": round(spec.size_bytes / 1e6) if spec.size_bytes else None,
                "license": spec.license,
                "source": spec.url or "bundled with the plugin",
                "sha256": spec.sha256,
                "cached": str(path) if path else None,
            }
        )
    if args.json:
        print(
            json.dumps(
                {"cache_dir": str(cache_dir()), "device": str(choose_device()), "models": rows},
                indent=2,
            )
        )
        return 0
    print(f"cache: {cache_dir()}    device: {choose_device()}")
    header = f"{'name':8} {'architecture':13} {'size':>8}  {'status':14} license"
    print(header)
    print("-" * len(header))
    for row in rows:
        size = f"{row['size_mb']} MB" if row["size_mb"] else "-"
        if row["cached"]:
            status = "ready"
        elif row["sha256"]:
            status = "downloads"
        else:
            status = "not available"
        print(f"{row['name']:8} {row['architecture']:13} {size:>8}  {status:14} {row['license']}")
    return 0


def _image_files(path: Path) -> list[Path]:
    from .core.data.files import IMAGE_SUFFIXES, has_suffix

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and has_suffix(p, IMAGE_SUFFIXES))
        if not files:
            raise ActiveSamError(
                f"{path} holds no image file ({', '.join(IMAGE_SUFFIXES)}): nothing to encode."
            )
        return files
    return [path]


def _model_ref(args: argparse.Namespace):
    """The model named on the command line, downloaded here once rather than per worker."""
    from .core.engine.checkpoints import ModelRef

    return ModelRef(args.model, str(args.checkpoint) if args.checkpoint else None).fetch()


def _cmd_precompute(args: argparse.Namespace) -> int:
    from .core.cluster import dask_client
    from .core.data.files import read_image, stem
    from .core.engine.embeddings import EmbeddingStore, precompute
    from .core.engine.preprocess import IntensityWindow, SliceSource

    ref = _model_ref(args)
    identity = ref.model_id()
    window = IntensityWindow.from_name(args.window)
    inputs = Path(args.image)
    files = _image_files(inputs)
    with dask_client(args.scheduler, args.workers) as (client, info):
        for file in files:
            image = read_image(file)
            source = SliceSource(image.data, window=window, rgb=image.rgb)
            out = Path(args.out) / stem(file) if inputs.is_dir() else Path(args.out)
            store = EmbeddingStore(identity, max_bytes=0, path=out, overwrite=args.overwrite)
            if store.path is None:
                raise ActiveSamError(f"Cannot write the store {out}: choose a writable --out.")
            steps = precompute(ref, source, store, client, torch_threads=info.torch_threads)
            _drain_with_bar(steps, file.name)
            print(f"{file} -> {store.path or 'memory only'}", file=sys.stderr)
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from .core.bench.report import write_outputs
    from .core.bench.runner import BenchmarkConfig, run_benchmark
    from .core.cluster import dask_client

    ref = _model_ref(args)
    config = BenchmarkConfig(
        data=args.data,
        model=ref,
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
        clicks=args.clicks,
        seed=args.seed,
        limit=args.limit,
        window=args.window,
        volume=args.volume,
        head=str(args.head) if args.head else None,
    )
    with dask_client(args.scheduler, args.workers) as (client, info):
        steps = run_benchmark(config, args.out, client, info.torch_threads)
        records = _drain_with_bar(steps, "benchmark", unit="episode")
    meta = {
        "model": ref.model_id(),
        "data": str(args.data),
        "clicks": args.clicks,
        "seed": args.seed,
        "strategies": list(config.strategies),
    }
    summary = write_outputs(records, meta, args.out)
    for name, figures in summary["strategies"].items():
        print(
            f"{name:9} objects {figures['objects']:4d}  mIoU@1 {figures['miou'][0]:.3f}  "
            f"AUC {figures['auc']:.3f}  NoC@85 {figures['noc']['85']:.2f}",
            file=sys.stderr,
        )
    print(f"results in {args.out}", file=sys.stderr)
    return 0


def _cmd_make_dataset(args: argparse.Namespace) -> int:
    from .core.data.scenes import write_dataset

    progress = (
        Progress(done, args.n, "scenes written")
        for done in write_dataset(args.out, args.n, args.seed, args.kind, args.size)
    )
    _drain_with_bar(progress, "make-dataset", unit="scene")
    print(f"wrote {args.n} scenes to {args.out}", file=sys.stderr)
    return 0


def _cmd_train_demo_model(args: argparse.Namespace) -> int:
    import torch

    from .core.engine.checkpoints import choose_device
    from .core.sim.training import DemoTrainingConfig, train_demo_model

    if args.threads:
        torch.set_num_threads(args.threads)
    config = DemoTrainingConfig(
        batch_size=args.batch_size, pool_size=args.pool_size, click_iterations=args.prompts
    )
    if args.steps:
        config = replace(config, steps=args.steps)
    device = choose_device(args.device)
    _drain_with_bar(
        train_demo_model(args.out, args.seed, config, init=args.init, device=device),
        "train",
        unit="step",
    )
    print(f"saved {args.out}", file=sys.stderr)
    return 0


def _cmd_train_head(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .core.active.bayes_head import HEAD
    from .core.active.head_training import (
        HeadConfig,
        examples_from_objects,
        fit_head,
        generated_examples,
    )
    from .core.engine.checkpoints import load_model
    from .core.engine.predictor import Predictor

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.checkpoint)
    if args.data:
        objects = ((e, m) for _, e, m in _labelled_objects(args.data, model, args.window))
        rng = np.random.default_rng(args.seed)
        steps = examples_from_objects(Predictor(model), objects, rng, args.clicks)
        examples = _drain_with_bar(steps, "simulate", unit="object")
    else:
        steps = generated_examples(model, args.images, args.seed, clicks=args.clicks)
        examples = _drain_with_bar(steps, "simulate", unit="image")
    config = HeadConfig(
        steps=args.steps,
        structure=args.structure,
        prior=args.prior,
        fit_pixels=args.fit_pixels,
        seed=args.seed,
    )
    head = _drain_with_bar(fit_head(examples, model, config), "fit", unit="step")
    out = head.save(args.out or HEAD.users(model.model_id))
    info = head.info
    print(
        f"saved {out}: {info['examples']} click sets, BCE {info['sam_loss']:.4f} (SAM) -> "
        f"{info['map_loss']:.4f} (head), prior precision {info['prior_precision'][0]:.3g}",
        file=sys.stderr,
    )
    return 0


def _cmd_quality(args: argparse.Namespace) -> int:
    import torch

    from .core.data.datasets import load_pair, pair_folders
    from .core.engine.checkpoints import load_model
    from .core.engine.preprocess import IntensityWindow
    from .core.errors import ImageError
    from .core.quality.assess import assess_labels, quality_rows, write_quality_csv
    from .core.quality.estimators import QualityModels, resolve_estimator

    if args.threads:
        torch.set_num_threads(args.threads)
    pairs, skipped = pair_folders(args.images, args.masks)
    if not pairs:
        raise ActiveSamError(
            f"No image in {args.images} has a mask of the same name in {args.masks}."
        )
    window = IntensityWindow.from_name(args.window)
    model = load_model(args.model, args.checkpoint)
    models = QualityModels.for_model(model, args.checkpoint, args.head, args.regressor)
    _, note = resolve_estimator(args.estimator, models)
    if note:
        print(f"note: {note}", file=sys.stderr)
    rows = []
    for pair in pairs:
        try:
            source, labels = load_pair(pair, window)
            steps = assess_labels(args.estimator, source, labels, models)
            results = _drain_with_bar(steps, pair.mask.name, unit="object")
        except ImageError as exc:  # one bad file does not stop the ranking
            skipped.append({"file": str(pair.mask), "reason": str(exc)})
            continue
        rows += quality_rows(str(pair.mask), results)
    for entry in skipped:
        print(f"skipped {entry['file']}: {entry['reason']}", file=sys.stderr)
    if not rows:
        raise ActiveSamError("No object could be judged: see the skipped files above.")
    write_quality_csv(rows, args.out)
    print(f"{len(rows)} objects ranked, worst first, in {args.out}", file=sys.stderr)
    return 0


def _labelled_objects(data: Path, model, window: str | None):
    """``(SAM input, embedding, object mask)`` for every object of a labelled folder."""
    from .core.bench.runner import BenchmarkConfig
    from .core.data.datasets import discover_pairs, load_pair, object_targets
    from .core.engine.checkpoints import ModelRef
    from .core.engine.embeddings import EmbeddingStore, embed_slice

    config = BenchmarkConfig(data=data, model=ModelRef(model.name), window=window)
    pairs, _ = discover_pairs(data)
    for pair in pairs:
        source, labels = load_pair(pair, config.window_for(pair.stem))
        store, limits = EmbeddingStore(model.model_id), source.limits()
        for obj in object_targets(labels):
            (index,) = obj.indices
            embedding = embed_slice(model, source, store, index, limits)
            yield source.sam_slice(index, limits), embedding, labels[index] == obj.label


def _cmd_train_quality(args: argparse.Namespace) -> int:
    import torch

    from .core.engine.checkpoints import load_model
    from .core.quality.networks import QUALITY
    from .core.quality.training import (
        QualityConfig,
        examples_from_objects,
        fit_quality,
        generated_examples,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, args.checkpoint)
    if args.data:
        objects = _labelled_objects(args.data, model, args.window)
        steps = examples_from_objects(model, objects, args.seed, args.clicks)
        examples = _drain_with_bar(steps, "simulate", unit="object")
    else:
        steps = generated_examples(model, args.images, args.seed, args.kind, args.clicks)
        examples = _drain_with_bar(steps, "simulate", unit="image")
    config = QualityConfig(
        crop_steps=args.crop_steps, feature_steps=args.feature_steps, seed=args.seed
    )
    regressor = _drain_with_bar(fit_quality(examples, model, config), "fit", unit="step")
    out = regressor.save(args.out or QUALITY.users(model.model_id))
    info = regressor.info
    print(
        f"saved {out}: {info['examples']} masks (mean Dice {info['dice_mean']:.3f}); "
        f"held-out Pearson {info['crop_validation'].get('pearson', float('nan')):.3f} (crop), "
        f"{info['feature_validation'].get('pearson', float('nan')):.3f} (embedding); "
        f"{info['wall_time_s']:.0f} s training",
        file=sys.stderr,
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if not args.headless:
        from ._widgets.demo import run_demo

        run_demo(args.model, args.device, args.screenshot, args.checkpoint)
        if args.screenshot:
            print(f"screenshot: {args.screenshot}")
        return 0
    import numpy as np

    from .core.bench.episodes import run_episode
    from .core.data.scenes import make_scene
    from .core.engine.checkpoints import load_model
    from .core.engine.embeddings import EmbeddingStore, embed_slice
    from .core.engine.predictor import Predictor
    from .core.engine.preprocess import SliceSource

    model = load_model(args.model, args.checkpoint, device=args.device)
    predictor = Predictor(model)
    rng = np.random.default_rng(args.seed)
    size = model.architecture.img_size
    rows, panels = [], []
    for kind in ("ct", "ultrasound", "nuclei"):
        scene = make_scene(kind, rng, size)
        embedding = embed_slice(model, SliceSource(scene.image, scene.window),
                                EmbeddingStore(model.model_id))  # fmt: skip
        shown = np.zeros(scene.labels.shape, np.int32)
        for label in range(1, scene.labels.max() + 1):
            result = run_episode(predictor, embedding, scene.labels == label, "ritm", args.clicks)
            rows.append((kind, label, result.ious))
            shown[result.shown & (shown == 0)] = label
        panels.append((kind, scene, shown))
    print(f"model {model.model_id} on {model.device}; RITM clicks, IoU after each click")
    print(f"{'scene':11} {'object':>6}  " + " ".join(f"{i:>5}" for i in range(1, args.clicks + 1)))
    for kind, label, ious in rows:
        print(f"{kind:11} {label:6d}  " + " ".join(f"{v:5.2f}" for v in ious))
    mean = np.mean([r[2] for r in rows], axis=0)
    print(f"{'mean':18}  " + " ".join(f"{v:5.2f}" for v in mean))
    if args.screenshot:
        _demo_figure(panels, args.screenshot)
        print(f"figure: {args.screenshot}")
    return 0


def _demo_figure(panels, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2))
    for ax, (kind, scene, shown) in zip(np.atleast_1d(axes), panels, strict=True):
        lo, hi = scene.window.limits(scene.image)
        ax.imshow(scene.image, cmap="gray", vmin=lo, vmax=hi)
        ax.imshow(np.ma.masked_equal(shown, 0), cmap="tab10", alpha=0.45, interpolation="none")
        ax.contour(scene.labels > 0, levels=[0.5], colors="yellow", linewidths=0.6)
        ax.set_title(f"{kind}: masks (colour), ground truth (yellow)", fontsize=9)
        ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` (default the demo model) and ``--checkpoint`` (a local file)."""
    parser.add_argument("--model", default="demo")
    parser.add_argument("--checkpoint", type=Path, help="local checkpoint file")


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-active-sam",
        description="Segment Anything with uncertainty and suggested clicks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list models, the cache folder and what is cached")
    models.add_argument("--json", action="store_true", help="print JSON")
    models.set_defaults(func=_cmd_models)

    pre = sub.add_parser(
        "precompute",
        help="encode every slice of a volume or folder of images into a zarr store",
        description="Encode slices through dask.distributed; rerunning skips finished slices.",
    )
    pre.add_argument("image", type=Path, help="image or volume file, or a folder of images")
    pre.add_argument(
        "--model",
        default="vit_b",
        help="registered model (default vit_b), or the architecture of --checkpoint",
    )
    pre.add_argument("--checkpoint", type=Path, help="local checkpoint file")
    pre.add_argument("--out", type=Path, required=True, help="zarr store to write (STORE.zarr)")
    pre.add_argument(
        "--window",
        default="percentile",
        help="intensity window: percentile (default), soft_tissue, lung, bone, brain",
    )
    where = pre.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running dask scheduler")
    where.add_argument("--workers", type=int, help="local worker processes (default: cores)")
    pre.add_argument(
        "--overwrite", action="store_true", help="replace a store made with another model"
    )
    pre.set_defaults(func=_cmd_precompute)

    bench = sub.add_parser(
        "benchmark",
        help="simulate click strategies against ground truth (NoC, mIoU, EIG vs oracle)",
        description="Runs every object of DATA/images + DATA/masks with each strategy through "
        "dask.distributed; rerunning with the same --out resumes.",
    )
    bench.add_argument("--data", type=Path, required=True, help="folder with images/, masks/")
    _model_options(bench)
    bench.add_argument(
        "--strategies",
        default="ritm,eig,entropy,random,oracle,microsam",
        help="comma-separated: ritm, microsam, oracle, bald, eig, entropy, random",
    )
    bench.add_argument(
        "--head", type=Path, help="Bayesian head file for bald (default: the model's own)"
    )
    bench.add_argument("--clicks", type=int, default=20)
    bench.add_argument("--out", type=Path, required=True)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--limit", type=int, help="evaluate at most N objects")
    bench.add_argument(
        "--window", help="percentile or a CT preset for all images (default: per dataset)"
    )
    bench.add_argument(
        "--3d",
        dest="volume",
        action="store_true",
        help="annotate 3D objects on every slice (volume scores) instead of the largest slice",
    )
    where = bench.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="address of a running dask scheduler")
    where.add_argument("--workers", type=int, help="local worker processes (default: cores)")
    bench.set_defaults(func=_cmd_benchmark)

    data = sub.add_parser(
        "make-dataset",
        help="generate images with instance ground truth (images/ and masks/ TIFFs)",
    )
    data.add_argument("--out", type=Path, required=True, help="folder to write")
    data.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--kind", default="mixed", choices=["ct", "ultrasound", "nuclei", "mixed"])
    data.add_argument("--size", type=int, default=256, help="image side in pixels")
    data.set_defaults(func=_cmd_make_dataset)

    train = sub.add_parser("train-demo-model", help="train the small demo model on generated data")
    train.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--steps", type=int, help="optimiser steps (default 1400: ~45 min on 2 CPU cores)"
    )
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--pool-size", type=int, default=2000, help="generated training scenes")
    train.add_argument(
        "--prompts", type=int, default=8, help="prompts per simulated session (default 8)"
    )
    train.add_argument(
        "--init", type=Path, help="continue training from this demo-architecture checkpoint"
    )
    train.add_argument("--device", default="cpu", help="cpu (default), cuda, mps or auto")
    _threads_option(train)
    train.set_defaults(func=_cmd_train_demo_model)

    head = sub.add_parser(
        "train-head",
        help="fit the Bayesian head (MAP + Laplace posterior) for a model",
        description="Simulates click sets on generated scenes (or on the objects of a "
        "labelled --data folder), trains the head to its MAP and fits a Laplace posterior over "
        "its last layer with laplace-torch.",
    )
    _model_options(head)
    head.add_argument(
        "--out", type=Path, help="head file to write (default: the user's head for the model)"
    )
    head.add_argument("--data", type=Path, help="labelled folder (images/, masks/) to learn from")
    head.add_argument("--window", help="intensity window for --data (default: per dataset)")
    head.add_argument("--images", type=int, default=150, help="generated scenes without --data")
    head.add_argument("--clicks", type=int, default=6, help="clicks simulated per object")
    head.add_argument("--steps", type=int, default=600, help="MAP optimiser steps")
    head.add_argument("--structure", default="diag", choices=["diag", "kron", "full"])
    head.add_argument("--prior", default="marglik", choices=["marglik", "gridsearch"])
    head.add_argument("--fit-pixels", type=int, default=20_000, help="pixels for the posterior")
    head.add_argument("--seed", type=int, default=0)
    _threads_option(head)
    head.set_defaults(func=_cmd_train_head)

    quality = sub.add_parser(
        "quality",
        help="predict each object's Dice without ground truth, to rank masks for review",
        description="Judges every object of every mask in --masks (instance labels, 0 = "
        "background; 3D masks slice by slice) against its image of the same name in --images, "
        "with no ground truth, and writes file,label,slice,predicted_dice,estimator rows, "
        "worst first (file: the mask file).",
    )
    quality.add_argument("--images", type=Path, required=True, help="folder of images")
    quality.add_argument(
        "--masks", type=Path, required=True, help="folder of masks named like their images"
    )
    quality.add_argument("--out", type=Path, required=True, help="CSV file to write")
    quality.add_argument(
        "--estimator",
        default="ensemble",
        choices=["iou_head", "posterior", "regressor", "embedding", "ensemble"],
        help="ensemble (default; the mean of the other four), regressor (EvanySeg crop CNN), "
        "embedding (MLP on SAM's embedding), iou_head or posterior (Bayesian head); without "
        "its network an estimator falls back to iou_head, and the estimator column says "
        "which answered",
    )
    _model_options(quality)
    quality.add_argument("--head", type=Path, help="Bayesian head file (default: the model's)")
    quality.add_argument(
        "--regressor", type=Path, help="quality regressor file (default: the model's)"
    )
    quality.add_argument(
        "--window",
        default="percentile",
        help="intensity window: percentile (default), soft_tissue, lung, bone, brain",
    )
    _threads_option(quality)
    quality.set_defaults(func=_cmd_quality)

    train_quality = sub.add_parser(
        "train-quality",
        help="train the learned quality estimators (crop CNN and embedding MLP) for a model",
        description="Simulates prompting on generated scenes (or on the objects of a labelled "
        "--data folder), collects every head's masks and perturbed ground truth with their "
        "true Dice, and trains both regressors with MSE.",
    )
    _model_options(train_quality)
    train_quality.add_argument(
        "--out", type=Path, help="file to write (default: the user's regressor for the model)"
    )
    train_quality.add_argument(
        "--data", type=Path, help="labelled folder (images/, masks/) to learn from"
    )
    train_quality.add_argument("--window", help="intensity window for --data")
    train_quality.add_argument(
        "--images", type=int, default=200, help="generated scenes without --data"
    )
    train_quality.add_argument(
        "--kind", default="all", choices=["all", "ct", "ultrasound", "nuclei", "mixed"]
    )
    train_quality.add_argument("--clicks", type=int, default=3, help="clicks per session")
    train_quality.add_argument("--crop-steps", type=int, default=2000)
    train_quality.add_argument("--feature-steps", type=int, default=2000)
    train_quality.add_argument("--seed", type=int, default=0)
    _threads_option(train_quality)
    train_quality.set_defaults(func=_cmd_train_quality)

    demo = sub.add_parser(
        "demo",
        help="open napari with the sample CT volume, the demo model and the Active SAM widget",
        description="Opens napari ready to click. --screenshot clicks once, saves the window "
        "and exits (use xvfb-run without a display); --headless segments generated CT, "
        "ultrasound and nuclei images with simulated clicks and prints the IoU instead.",
    )
    demo.add_argument("--headless", action="store_true", help="no window: print IoU per click")
    _model_options(demo)
    demo.add_argument("--device", help="auto, cuda, mps or cpu")
    demo.add_argument("--clicks", type=int, default=5)
    demo.add_argument("--seed", type=int, default=3)
    demo.add_argument(
        "--screenshot", type=Path, help="save a PNG (of the window, or with --headless a figure)"
    )
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ActiveSamError as exc:
        print(f"napari-active-sam: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
