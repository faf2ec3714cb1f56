"""The benchmark run: every (object, strategy) episode of a labelled folder on a dask cluster,
resumable from ``episodes.jsonl``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..active.bayes_head import HEAD, BayesHead
from ..adapt.adapter import Adapter
from ..data.datasets import (
    ImagePair,
    ObjectTarget,
    dataset_window,
    discover_pairs,
    load_pair,
    object_targets,
)
from ..engine.checkpoints import ModelRef, file_sha256
from ..engine.downloads import is_writable_dir
from ..engine.preprocess import IntensityWindow
from ..engine.zoom import SCALES
from ..enums import Protocol, Strategy, parse_option
from ..errors import ActiveSamError, ImageError, ModelError
from ..keeping import written_whole
from ..progress import Progress
from .episodes import evaluate_pair
from .strategies import parse_strategy, reads_head, require_head
from .volumes import NSD_TOLERANCE_MM, check_volume, evaluate_volume_pair

EPISODES_FILE = "episodes.jsonl"


@dataclass(frozen=True)
class BenchmarkConfig:
    """What :func:`run_benchmark` evaluates.

    Attributes
    ----------
    data : Path
        Folder with ``images/`` and ``masks/``.
    model : ModelRef
    strategies : tuple of str
    clicks : int
        Iterations per episode (20 for NoC).
    seed : int
    limit : int, optional
        Evaluate at most this many objects (the first in file and label order).
    window : str, optional
        ``percentile`` or a CT preset for every image; default: the window recorded in
        ``data/objects.json`` by ``make-dataset``, else percentile.
    volume : bool
        Annotate 3D objects on every slice (scores pooled over the volume) instead of on
        their slice of largest area.
    head : str, optional
        Bayesian head file for BALD (and entropy); default: the model's own
        (:meth:`~napari_active_sam.core.engine.companions.Companion.find_for`).
    zoom : bool
        Decode small objects in a window at the image's resolution, as the annotator does
        (:class:`~napari_active_sam.core.engine.zoom.ZoomingPredictor`; images under 1.5
        times the model's input are decoded whole either way).
    adapter : str, optional
        An adapter file (``napari-active-sam adapt``) applied to the model on each worker.
    protocol : Protocol
        ``2d`` (clicks on a slice) or ``3d`` (:mod:`~napari_active_sam.core.bench.volumes`:
        ``clicks`` is then the number of corrections after the opening box or click).
    first : str
        The 3D protocol's opening: ``box`` or ``click``.
    tolerance : float
        The 3D protocol's surface Dice tolerance, in the volume's units (mm).
    spacing : tuple of float, optional
        ``(z, y, x)`` voxel size (mm) the 3D protocol gives a volume whose file states none
        (else 1 per axis); a file's own voxel size is kept.
    judge : bool
        The quality ensemble picks the mask shown for a lone click among SAM's three (and
        the zoom window, see :data:`~napari_active_sam.core.engine.zoom.SCALES`), as
        the annotator does (:mod:`~napari_active_sam.core.quality.choice`); else SAM's IoU
        head picks.
    insist : bool
        When the mask shown leaves clicks out, SAM is asked once more from the mask edited
        at them, as the annotator does
        (:class:`~napari_active_sam.core.engine.predictor.InsistingPredictor`).
    """

    data: Path
    model: ModelRef
    strategies: tuple[Strategy, ...] = (Strategy.RITM,)
    clicks: int = 20
    seed: int = 0
    limit: int | None = None
    window: str | None = None
    volume: bool = False
    head: str | None = None
    zoom: bool = True
    adapter: str | None = None
    protocol: Protocol = Protocol.TWO_D
    first: str = "box"
    tolerance: float = NSD_TOLERANCE_MM
    spacing: tuple[float, float, float] | None = None
    judge: bool = True
    insist: bool = True

    def __post_init__(self):
        object.__setattr__(self, "strategies", tuple(parse_strategy(s) for s in self.strategies))
        object.__setattr__(self, "protocol", parse_option(Protocol, str(self.protocol),
                                                          "benchmark protocol"))  # fmt: skip
        if self.first not in ("box", "click"):
            raise ActiveSamError(
                f"The 3D protocol opens with a box or a click, not {self.first!r}."
            )
        if not (np.isfinite(self.tolerance) and self.tolerance > 0):
            raise ActiveSamError(
                f"The surface Dice tolerance must be positive (mm), got {self.tolerance}."
            )
        if self.clicks < 1:
            raise ActiveSamError("--clicks must be at least 1.")
        if self.spacing is not None and (
            len(self.spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in self.spacing)
        ):
            raise ActiveSamError(
                f"A voxel size is three positive sizes (z, y, x) in mm, got {self.spacing}."
            )

    def window_for(self, stem: str) -> IntensityWindow:
        """The intensity window of image ``stem`` (see :func:`dataset_window`)."""
        return dataset_window(self.data, stem, self.window)


def read_episodes(out: Path) -> list[dict[str, Any]]:
    """Records already in ``out/episodes.jsonl`` (a truncated last line is ignored)."""
    path = Path(out) / EPISODES_FILE
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by an interruption: that episode is redone
    return records


def run_benchmark(
    config: BenchmarkConfig,
    out: Path,
    client: Any,
    torch_threads: int | None = None,
) -> Generator[Progress, None, list[dict[str, Any]]]:
    """Play every (object, strategy) episode on a dask cluster; resumable.

    Finished episodes are appended to ``out/episodes.jsonl`` as each image completes; a
    rerun skips what is there. Yields :class:`Progress` in episodes; returns all records
    and, in ``out/skipped.json``, the files that could not be evaluated and why.

    Raises
    ------
    ActiveSamError
        If ``out`` cannot be written or ``data`` has no image/mask pairs.
    """
    from distributed import as_completed

    out = Path(out)
    if out.is_dir() and not (out / RUN_FILE).is_file() and any(out.iterdir()):
        raise ActiveSamError(f"{out} holds files of no benchmark run, which the results would "
                             "replace: choose a new or empty --out folder.")  # fmt: skip
    if config.adapter:  # a damaged adapter or one for another model stops the run here
        path = Path(config.adapter)
        Adapter.load(path).check_base(config.model.model_id(), config.model.name, path)
    head_file = _head_file(config)
    # Only now is --out made: a run refused above leaves no folder behind.
    if not is_writable_dir(out):
        raise ActiveSamError(f"Cannot write to {out}: choose a writable output folder.")
    _check_same_run(config, out, head_file)
    pairs, skipped = discover_pairs(config.data)
    kept = read_episodes(out)
    done = {(r["image"], r["label"], r["strategy"]) for r in kept}
    # Rewrite what was read (atomically), so a line cut short by an interruption goes.
    lines = "".join(json.dumps(r) + "\n" for r in kept)
    written_whole(lambda partial: partial.write_text(lines), out / EPISODES_FILE)

    if not pairs:
        raise ActiveSamError(f"{config.data} has no image with a mask of the same name.")
    tasks, planned, total = _plan(config, pairs, done, skipped)
    finished = total - sum(len(todo) for *_, todo in tasks)
    yield Progress(finished, total, f"{finished} of {total} episodes already done")
    three_d = config.protocol is Protocol.THREE_D
    extra = (config.first, config.tolerance) if three_d else ()
    given = {"spacing": config.spacing} if three_d else {}
    futures = {
        client.submit(
            evaluate_volume_pair if three_d else evaluate_pair,
            config.model,
            pair,
            window,
            todo,
            config.clicks,
            config.seed,
            torch_threads,
            head_file,
            config.zoom,
            config.adapter,
            *extra,
            **given,
            judge=config.judge,
            insist=config.insist,
            pure=False,
        ): (pair, todo)
        for pair, window, todo in tasks
    }
    with open(out / EPISODES_FILE, "a") as handle:
        for future in as_completed(futures):
            pair, todo = futures[future]
            try:
                records = future.result()
            except ActiveSamError as exc:  # one unreadable image does not stop the run
                skipped.append({"file": str(pair.image), "reason": str(exc)})
                records = []
            handle.writelines(json.dumps(r) + "\n" for r in records)
            handle.flush()
            finished += len(todo)
            yield Progress(finished, total, f"{finished}/{total} episodes")
    (out / "skipped.json").write_text(json.dumps(skipped, indent=1))
    return [r for r in read_episodes(out) if (r["image"], r["label"], r["strategy"]) in planned]


Task = tuple[ImagePair, IntensityWindow, list[tuple[ObjectTarget, Strategy]]]
"""One image's episodes still to play: the pair, its window, (object, strategy) pairs."""


def _plan(
    config: BenchmarkConfig,
    pairs: list[ImagePair],
    done: set[tuple[str, int, str]],
    skipped: list[dict[str, str]],
) -> tuple[list[Task], set[tuple[str, int, str]], int]:
    """The episodes of a run, up to ``config.limit`` objects: the tasks still to play (not
    in ``done``), the keys of every episode planned, and their number. Images that cannot
    be read are added to ``skipped``."""
    tasks: list[Task] = []
    planned: set[tuple[str, int, str]] = set()
    total = 0
    for pair in pairs:
        if config.limit is not None and total >= config.limit * len(config.strategies):
            break
        window = config.window_for(pair.stem)
        try:
            _, labels = load_pair(pair, window)
            if config.protocol is Protocol.THREE_D:
                check_volume(labels > 0, (1.0, 1.0, 1.0))
        except ImageError as exc:
            skipped.append({"file": str(pair.image), "reason": str(exc)})
            continue
        objects = object_targets(labels, config.volume or config.protocol is Protocol.THREE_D)
        if config.limit is not None:
            room = config.limit - total // len(config.strategies)
            objects = objects[:room]
        keys = [((pair.stem, obj.label, s), obj, s) for obj in objects for s in config.strategies]
        planned.update(key for key, *_ in keys)
        todo = [(obj, s) for key, obj, s in keys if key not in done]
        total += len(objects) * len(config.strategies)
        if todo:
            tasks.append((pair, window, todo))
    return tasks, planned, total


def _head_file(config: BenchmarkConfig) -> str | None:
    """The head file the run needs, or None; a missing or unreadable one is refused here,
    before any worker starts, as is one fitted for another model (by the model id the
    file records; its grid is checked by the first worker, which loads the model)."""
    if config.head:
        if not Path(config.head).is_file():
            raise ActiveSamError(f"No Bayesian head at {config.head}: give an existing file.")
        head = BayesHead.load(Path(config.head))  # says what is wrong with a damaged file
        expected = config.model.model_id()
        if config.adapter:
            expected = Adapter.load(Path(config.adapter)).adapted_id(config.model)
        if head.model_id != expected:
            raise ModelError(
                f"The Bayesian head {Path(config.head).name} was fitted for model "
                f"{head.model_id}, not {expected}: give the head of this model, or leave "
                "--head out to use the one found for it."
            )
        return str(config.head)
    if not reads_head(config.strategies):
        return None
    if config.adapter:  # the head fitted for the adapted model, found by its id
        adapted_id = Adapter.load(Path(config.adapter)).adapted_id(config.model)
        candidate = HEAD.users(adapted_id)
        found = candidate if candidate.is_file() else None
        name = f"{config.model.name} with the adapter {Path(config.adapter).name}"
    else:
        found, name = HEAD.find_for(config.model), config.model.name
    require_head(config.strategies, found is not None, name)
    return str(found) if found else None


RUN_FILE = "run.json"


def _files_digest(data: Path) -> str:
    """A digest of the names, sizes and modification times of the files in ``data``'s
    images and masks: a data set made again (other images under the same names) is another
    run's."""
    digest = hashlib.blake2b(digest_size=8)
    found_files = (p for part in ("images", "masks") for p in (data / part).rglob("*"))
    for path in sorted(p for p in found_files if p.is_file()):
        found = path.stat()
        digest.update(f"{path.relative_to(data)}\0{found.st_size}\0{found.st_mtime_ns}\n"
                      .encode())  # fmt: skip
    return digest.hexdigest()


def _check_same_run(config: BenchmarkConfig, out: Path, head_file: str | None) -> None:
    """Refuse to resume into a folder holding another run's episodes."""
    identity = {
        "head": file_sha256(Path(head_file))[:16] if head_file else None,
        "model": config.model.model_id(),
        "data": str(Path(config.data).resolve()),
        "files": _files_digest(Path(config.data)),
        "clicks": config.clicks,
        "seed": config.seed,
        "window": config.window,
        "volume": config.volume,
        # 3D runs time each interaction with the volume encoded before the episodes
        **({"protocol": "3d", "first": config.first, "tolerance": config.tolerance,
            "timing": "encoded before"}
           if config.protocol is Protocol.THREE_D else {}),  # fmt: skip
        **({"spacing": list(config.spacing)} if config.spacing else {}),
        **({"zoom": True, "zoom_scales": list(SCALES)} if config.zoom else {}),  # unzoomed
        # runs match those made before; zoomed ones record how a lone click is decoded
        **({"judge": True} if config.judge else {}),  # as are runs where SAM chose
        **({"insist": True} if config.insist else {}),  # and runs that took clicks as given
        **({"adapter": file_sha256(Path(config.adapter))[:16]} if config.adapter else {}),
    }
    path = out / RUN_FILE
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier != identity:
            changed = sorted(k for k in identity.keys() | earlier.keys()
                             if earlier.get(k) != identity.get(k))  # fmt: skip
            raise ActiveSamError(
                f"{out} holds results of another benchmark run (different {', '.join(changed)})"
                ": choose another --out folder, or delete it to start again."
            )
    else:
        path.write_text(json.dumps(identity, indent=1))
