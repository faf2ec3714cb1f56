"""``napari-active-sam demo``: napari ready to click, or a headless run with simulated clicks."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..core.enums import SceneKind, Strategy
from ..core.errors import ActiveSamError
from . import options

HEADLESS_SCENES = (SceneKind.CT, SceneKind.ULTRASOUND, SceneKind.NUCLEI)


NAME = "demo"
HELP = "open napari with the sample CT volume, the demo model and the Active SAM widget"
DESCRIPTION = (
    "Opens napari ready to click. --screenshot clicks once, saves the window "
    "and exits (use xvfb-run without a display); --headless segments generated CT, "
    "ultrasound and nuclei images with simulated clicks and prints the IoU instead."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--headless", action="store_true", help="no window: print IoU per click")
    options.model_options(parser)
    parser.add_argument("--device", help="auto, cuda, mps or cpu")
    parser.add_argument("--clicks", type=options.positive_int, default=5)
    parser.add_argument("--seed", type=options.seed, default=3)
    parser.add_argument(
        "--screenshot", type=Path, help="save a PNG (of the window, or with --headless a figure)"
    )


def run(args: argparse.Namespace) -> int:
    if args.screenshot is not None:
        _check_screenshot(Path(args.screenshot))
    if not args.headless:
        _check_display()
        from .._widgets.demo import run_demo

        run_demo(args.model, args.device, args.screenshot, args.checkpoint)
        if args.screenshot:
            print(f"screenshot: {args.screenshot}")
        return 0
    return _headless(args)


def _check_screenshot(path: Path) -> None:
    """Refuse, before the demo runs, a screenshot that could not be saved as asked: a name
    that is no PNG, or a folder; the folder it goes in is made."""
    if path.is_dir():
        raise ActiveSamError(f"--screenshot {path} is a folder: give the PNG file to write, "
                             f"such as {path / 'demo.png'}.")  # fmt: skip
    if path.suffix.lower() != ".png":
        raise ActiveSamError(f"--screenshot {path} is saved as a PNG: give a name ending in "
                             ".png.")  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ActiveSamError(f"Cannot make the folder of --screenshot {path} ({exc}): choose "
                             "another place.") from None


def _check_display() -> None:
    """A clear error, before Qt aborts the process, where there is no display to open
    napari on (Linux without X11 or Wayland, and no Qt platform chosen)."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ActiveSamError(
            "There is no display to open napari on: run `xvfb-run -a napari-active-sam demo "
            "...` (with --screenshot to save the window), or use --headless."
        )


def _headless(args: argparse.Namespace) -> int:
    import numpy as np

    from ..core.bench.episodes import run_episode
    from ..core.data.scenes import make_scene
    from ..core.engine.checkpoints import load_model
    from ..core.engine.embeddings import embed_slice
    from ..core.engine.predictor import Predictor
    from ..core.engine.preprocess import SliceSource
    from ..core.engine.store import EmbeddingStore

    model = load_model(args.model, args.checkpoint, device=args.device)
    predictor = Predictor(model)
    rng = np.random.default_rng(args.seed)
    size = model.architecture.img_size
    rows, panels = [], []
    for kind in HEADLESS_SCENES:
        scene = make_scene(kind, rng, size)
        embedding = embed_slice(model, SliceSource(scene.image, scene.window),
                                EmbeddingStore(model.encoder_id))  # fmt: skip
        shown = np.zeros(scene.labels.shape, np.int32)
        for label in range(1, scene.labels.max() + 1):
            gt = scene.labels == label
            result = run_episode(predictor, embedding, gt, Strategy.RITM, args.clicks)
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
        _figure(panels, args.screenshot)
        print(f"figure: {args.screenshot}")
    return 0


def _figure(panels, path: Path) -> None:
    """The headless run's masks over each scene, ground truth outlined."""
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
