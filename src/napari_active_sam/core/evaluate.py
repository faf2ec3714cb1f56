"""Interactive segmentation benchmarks: simulated clicks against ground truth.

An *episode* annotates one object with one strategy, click by click. :func:`run_benchmark`
plays every object of a folder of images and masks with every strategy, on a dask cluster,
appending each finished object to ``episodes.jsonl`` so an interrupted run resumes where it
stopped; :mod:`~napari_active_sam.core.report` turns that file into the summary, CSV, plots
and report.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .acquisition import Uncertainty, uncertainty
from .bayes_head import DEFAULT_SAMPLES, BayesHead, find_head
from .cluster import load_on_worker
from .embeddings import Embedding, EmbeddingStore, embed_slice
from .errors import ActiveSamError, ImageError
from .files import IMAGE_SUFFIXES, has_suffix, read_image, stem
from .metrics import dice, iou, oracle_choice
from .models import LoadedModel, ModelRef, file_sha256, is_writable_dir
from .predictor import Predictor, shown_head
from .preprocess import IntensityWindow, SliceSource
from .simulate import STRATEGIES, ClickContext, Strategy, first_click
from .types import Click, Prediction, Progress, PromptSet

EPISODES_FILE = "episodes.jsonl"


@dataclass
class EpisodeResult:
    """One object annotated with one strategy.

    Attributes
    ----------
    clicks : list of list of tuple
        Per iteration, the ``(row, col, positive)`` clicks added (one, or two for micro-sam).
    ious, dices : list of float
        Scores of the shown mask after each iteration.
    oracle_dices : list of float
        Best Dice among the three multimask heads after each iteration ("Oracle Dice").
    first : Prediction
        The model's answer to the first click (all heads).
    shown : np.ndarray
        Boolean ``(H, W)`` mask shown after the last click.
    counts : list of tuple of int
        Per iteration ``(intersection, union, shown area, oracle intersection, oracle
        area)`` in pixels, for metrics pooled over the slices of a volume.
    """

    clicks: list[list[tuple[int, int, bool]]] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    dices: list[float] = field(default_factory=list)
    oracle_dices: list[float] = field(default_factory=list)
    first: Prediction | None = None
    shown: np.ndarray | None = None
    counts: list[tuple[int, int, int, int, int]] = field(default_factory=list)


def run_episode(
    predictor: Predictor,
    embedding: Embedding,
    gt: np.ndarray,
    strategy: str = Strategy.RITM,
    max_clicks: int = 20,
    rng: np.random.Generator | None = None,
    bayes_head: BayesHead | None = None,
    samples: int = DEFAULT_SAMPLES,
) -> EpisodeResult:
    """Annotate ``gt`` with ``strategy``, feeding back the shown head's logits.

    Every strategy but micro-sam's opens with the RITM click (the object's centre); once a
    strategy has nothing left to ask, the last scores are repeated.

    Parameters
    ----------
    predictor : Predictor
    embedding : Embedding
        Of the image ``gt`` belongs to.
    gt : np.ndarray
        Boolean ``(H, W)`` object mask, not empty.
    strategy : str
        A key of :data:`~napari_active_sam.core.simulate.STRATEGIES`.
    max_clicks : int
        Iterations per episode.
    rng : np.random.Generator, optional
        For the random parts of strategies.
    bayes_head : BayesHead, optional
        The Bayesian head (required by BALD; used by entropy when given).
    samples : int
        Posterior samples per map.
    """
    spec = STRATEGIES[Strategy(strategy)]
    require_head([strategy], bayes_head is not None, predictor.model.name)
    rng = rng or np.random.default_rng(0)
    gt = np.asarray(gt, bool)
    result = EpisodeResult()
    shown = np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    prompts = PromptSet()
    previous: np.ndarray | None = None
    state: dict[str, Any] = {}

    def decode(extra: Iterable[tuple[int, int, bool]], iteration: int):
        added = prompts
        for row, col, positive in extra:
            added = added.with_click(Click(x=float(col), y=float(row), positive=positive))
        prediction = predictor.predict(embedding, added, previous)
        if spec.multimask_every_step:
            head = prediction.best_multimask_head
        else:
            head = shown_head(prediction, added)
        return added, prediction, head

    def dice_if_clicked(click: tuple[int, int, bool]) -> float:
        _, prediction, head = decode([click], state["iteration"])
        return dice(gt, prediction.probability(head) > 0.5)

    computed: dict[str, Uncertainty] = {}

    def current_uncertainty(name: str) -> Uncertainty:
        if name not in computed:
            computed[name] = uncertainty(
                name, prediction, prompts, embedding, predictor.model, bayes_head, samples, 5,
                rng=rng, shown=head,
            )  # fmt: skip
        return computed[name]

    prediction: Prediction | None = None
    head: int | None = None
    for iteration in range(1, max_clicks + 1):
        state["iteration"] = iteration
        if iteration == 1:
            clicks = first_click(spec, gt, rng)
        else:
            ctx = ClickContext(
                gt, shown, clicked, prediction, rng, dice_if_clicked, current_uncertainty
            )
            clicks = spec.next_clicks(ctx)
        if not clicks:
            if not result.ious:
                raise ActiveSamError("The object has no pixel to click: its mask is empty.")
            for series in (result.ious, result.dices, result.oracle_dices, result.counts):
                series.append(series[-1])
            result.clicks.append([])
            continue
        for row, col, _ in clicks:
            clicked[row, col] = True
        prompts, prediction, head = decode(clicks, iteration)
        computed.clear()
        shown = prediction.probability(head) > 0.5
        previous = prediction.low_res_logits[head]
        if iteration == 1:
            result.first = prediction
        result.clicks.append(list(clicks))
        result.ious.append(iou(gt, shown))
        result.dices.append(dice(gt, shown))
        best, best_dice = oracle_choice(gt, [prediction.probability(h) for h in (1, 2, 3)])
        result.oracle_dices.append(best_dice)
        result.counts.append(
            (
                int(np.count_nonzero(gt & shown)),
                int(np.count_nonzero(gt | shown)),
                int(np.count_nonzero(shown)),
                int(np.count_nonzero(gt & best)),
                int(np.count_nonzero(best)),
            )
        )
    result.shown = shown
    return result


# ----------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class ObjectTarget:
    """Where an object is evaluated: its label and the slice(s) of it to annotate.

    Attributes
    ----------
    label : int
    indices : tuple of tuple of int
        Leading indices of the slices: ``((),)`` for a 2D image, one slice (the largest)
        for a volume, or every slice the object is on in 3D mode.
    """

    label: int
    indices: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ImagePair:
    """An image file and its instance-label mask file."""

    stem: str
    image: Path
    mask: Path


def discover_pairs(data: Path) -> tuple[list[ImagePair], list[dict[str, str]]]:
    """Match ``data/images/*`` with ``data/masks/*`` by file stem.

    Returns
    -------
    pairs, skipped
        Matched pairs (sorted by stem), and ``{"file", "reason"}`` for files without a
        partner.
    """
    images_dir, masks_dir = Path(data) / "images", Path(data) / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise ActiveSamError(
            f"{data} must hold an images/ and a masks/ folder with matching file names."
        )

    def by_stem(folder: Path) -> dict[str, Path]:
        return {stem(p): p for p in sorted(folder.iterdir()) if has_suffix(p, IMAGE_SUFFIXES)}

    images, masks = by_stem(images_dir), by_stem(masks_dir)
    pairs = [ImagePair(s, images[s], masks[s]) for s in sorted(images.keys() & masks.keys())]
    skipped = [
        {"file": str(masks[s]), "reason": "mask file with no image of the same name"}
        for s in sorted(masks.keys() - images.keys())
    ] + [
        {"file": str(images[s]), "reason": "image with no mask of the same name"}
        for s in sorted(images.keys() - masks.keys())
    ]
    return pairs, skipped


def load_pair(pair: ImagePair, window: IntensityWindow) -> tuple[SliceSource, np.ndarray]:
    """Read an image and its mask; check they fit; return the source and integer labels.

    Raises
    ------
    ImageError
        Shapes that differ, a mask with non-integer values, or a mask with no object.
    """
    image, mask = read_image(pair.image), read_image(pair.mask)
    spatial = image.data.shape[:-1] if image.rgb else image.data.shape
    if mask.data.shape != spatial:
        raise ImageError(
            f"{pair.mask.name} has shape {mask.data.shape} but its image {pair.image.name} "
            f"has {spatial}: masks must match their image pixel for pixel."
        )
    labels = np.asarray(mask.data)
    if labels.dtype.kind == "f" and not (
        np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    ):
        raise ImageError(
            f"{pair.mask.name} holds non-integer values: save instance labels as "
            "integers (0 = background, 1, 2, ... = objects)."
        )
    labels = labels.astype(np.int64)
    if not (labels > 0).any():
        raise ImageError(f"{pair.mask.name} contains no object (all pixels are 0).")
    return SliceSource(image.data, window, rgb=image.rgb), labels


def object_targets(labels: np.ndarray, volume: bool = False) -> list[ObjectTarget]:
    """Every object of an instance-label image.

    In a volume an object is evaluated on its slice of largest area, or, with ``volume``,
    on every slice it appears on (each slice gets its own clicks; scores are pooled over
    the volume).
    """
    objects = []
    for label in np.unique(labels[labels > 0]):
        if labels.ndim == 2:
            objects.append(ObjectTarget(int(label), ((),)))
            continue
        mask = labels == label
        areas = mask.reshape(-1, *mask.shape[-2:]).sum(axis=(1, 2))
        flats = np.flatnonzero(areas) if volume else [int(np.argmax(areas))]
        indices = tuple(
            tuple(int(i) for i in np.unravel_index(flat, mask.shape[:-2])) for flat in flats
        )
        objects.append(ObjectTarget(int(label), indices))
    return objects


def _pooled(counts: list[list[tuple[int, ...]]], gt_area: int) -> dict[str, list[float]]:
    """IoU, Dice and Oracle Dice per iteration, pooled over slices (volume metrics)."""
    totals = np.sum(np.array(counts, np.int64), axis=0)  # (iterations, 5)
    inter, union, shown, oracle_inter, oracle_area = totals.T
    return {
        "iou": [round(float(v), 6) for v in inter / np.maximum(union, 1)],
        "dice": [round(float(v), 6) for v in 2 * inter / np.maximum(gt_area + shown, 1)],
        "oracle_dice": [
            round(float(v), 6) for v in 2 * oracle_inter / np.maximum(gt_area + oracle_area, 1)
        ],
    }


def _clicks_json(clicks: list[list[tuple[int, int, bool]]]) -> list[list[list]]:
    return [[[int(r), int(c), bool(p)] for r, c, p in iteration] for iteration in clicks]


def episode_seed(seed: int, *parts: object) -> int:
    """A seed for one episode that does not depend on scheduling or order."""
    text = "|".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def evaluate_pair(
    ref: ModelRef,
    pair: ImagePair,
    window: IntensityWindow,
    todo: list[tuple[ObjectTarget, str]],
    clicks: int,
    seed: int,
    torch_threads: int | None = None,
    head_file: str | None = None,
) -> list[dict[str, Any]]:
    """Play episodes on one image (a dask task): ``todo`` lists (object, strategy) pairs.

    Returns one JSON-ready record per episode.
    """
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    model = load_on_worker(ref)
    predictor = Predictor(model)
    head = BayesHead.load(Path(head_file), model) if head_file else None
    source, labels = load_pair(pair, window)
    limits = source.limits()
    store = EmbeddingStore(model.model_id)
    records = []
    for obj, strategy in todo:
        rng = np.random.default_rng(episode_seed(seed, pair.stem, obj.label, strategy))
        slices = []
        for index in obj.indices:
            embedding = embed_slice(model, source, store, index, limits)
            gt = labels[index] == obj.label
            result = run_episode(predictor, embedding, gt, strategy, clicks, rng, head)
            slices.append((index, gt, result))
        records.append(_record(pair.stem, obj.label, str(strategy), slices))
    return records


def _record(image: str, label: int, strategy: str, slices: list) -> dict[str, Any]:
    """The JSON record of one object's episode (``slices``: ``(index, gt, result)``)."""
    record: dict[str, Any] = {
        "image": image,
        "label": label,
        "strategy": strategy,
        "area": int(sum(gt.sum() for _, gt, _ in slices)),
    }
    if len(slices) == 1:
        index, gt, result = slices[0]
        record.update(
            slice=list(index),
            clicks=_clicks_json(result.clicks),
            iou=[round(v, 6) for v in result.ious],
            dice=[round(v, 6) for v in result.dices],
            oracle_dice=[round(v, 6) for v in result.oracle_dices],
        )
    else:
        record.update(_pooled([r.counts for *_, r in slices], record["area"]))
        record["slices"] = [
            {
                "slice": list(index),
                "clicks": _clicks_json(result.clicks),
                "iou": [round(v, 6) for v in result.ious],
                "dice": [round(v, 6) for v in result.dices],
            }
            for index, _, result in slices
        ]
    return record


def evaluate_image(
    model: LoadedModel,
    source: SliceSource,
    labels: np.ndarray,
    strategies: Iterable[str],
    clicks: int = 10,
    seed: int = 0,
    bayes_head: BayesHead | None = None,
    store: EmbeddingStore | None = None,
) -> Generator[Progress, None, list[dict[str, Any]]]:
    """Every object of one image (an open napari layer) with every strategy, in-process.

    Objects of a volume are played on their slice of largest area. Yields progress per
    episode; returns records in the format of ``episodes.jsonl`` (for
    :func:`~napari_active_sam.core.report.summarise`).

    Raises
    ------
    ImageError
        Labels whose shape differs from the image's slices, or that hold no object.
    ActiveSamError
        A strategy that needs a Bayesian head when none is given.
    """
    labels = np.asarray(labels)
    shape = np.shape(source.data)
    expected = shape[:-1] if source.rgb else shape
    if labels.shape != expected:
        raise ImageError(
            f"The ground truth has shape {labels.shape} but the image has {expected}: choose "
            "the labels layer drawn on this image."
        )
    strategies = [str(Strategy(s)) for s in strategies]
    require_head(strategies, bayes_head is not None, model.name)
    objects = object_targets(labels.astype(np.int64))
    if not objects:
        raise ImageError("The ground truth holds no object: draw or load labels first.")
    predictor = Predictor(model)
    store = store or EmbeddingStore(model.model_id)
    limits = source.limits()
    total, records = len(objects) * len(strategies), []
    for obj in objects:
        (index,) = obj.indices
        embedding = embed_slice(model, source, store, index, limits)
        gt = labels[index] == obj.label
        for strategy in strategies:
            rng = np.random.default_rng(episode_seed(seed, "layer", obj.label, strategy))
            result = run_episode(predictor, embedding, gt, strategy, clicks, rng, bayes_head)
            records.append(_record("layer", obj.label, strategy, [(index, gt, result)]))
            yield Progress(len(records), total, f"object {obj.label}, {strategy}")
    return records


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
        (:func:`~napari_active_sam.core.bayes_head.find_head`).
    """

    data: Path
    model: ModelRef
    strategies: tuple[str, ...] = ("ritm",)
    clicks: int = 20
    seed: int = 0
    limit: int | None = None
    window: str | None = None
    volume: bool = False
    head: str | None = None

    def __post_init__(self):
        for name in self.strategies:
            if name not in {s.value for s in Strategy}:
                raise ActiveSamError(
                    f"Unknown strategy {name!r}: use {', '.join(s.value for s in Strategy)}."
                )
        if self.clicks < 1:
            raise ActiveSamError("--clicks must be at least 1.")

    def window_for(self, stem: str) -> IntensityWindow:
        if self.window:
            return IntensityWindow.from_name(self.window)
        index = Path(self.data) / "objects.json"
        if index.is_file():
            entry = json.loads(index.read_text()).get("images", {}).get(stem)
            if entry and "window" in entry:
                spec = entry["window"]
                if spec["kind"] == "fixed":
                    return IntensityWindow.fixed(spec["low"], spec["high"], spec["name"])
                return IntensityWindow.percentile(spec["low"], spec["high"])
        return IntensityWindow.percentile()


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
    if not is_writable_dir(out):
        raise ActiveSamError(f"Cannot write to {out}: choose a writable output folder.")
    head_file = _head_file(config)
    _check_same_run(config, out, head_file)
    pairs, skipped = discover_pairs(config.data)
    kept = read_episodes(out)
    done = {(r["image"], r["label"], r["strategy"]) for r in kept}
    # Rewrite what was read (atomically), so a line cut short by an interruption goes.
    temporary = out / f".{EPISODES_FILE}.tmp"
    temporary.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(temporary, out / EPISODES_FILE)

    tasks: list[tuple[ImagePair, IntensityWindow, list[tuple[ObjectTarget, str]]]] = []
    planned: set[tuple[str, int, str]] = set()
    total = 0
    for pair in pairs:
        if config.limit is not None and total >= config.limit * len(config.strategies):
            break
        window = config.window_for(pair.stem)
        try:
            _, labels = load_pair(pair, window)
        except ImageError as exc:
            skipped.append({"file": str(pair.mask), "reason": str(exc)})
            continue
        objects = object_targets(labels, config.volume)
        if config.limit is not None:
            room = config.limit - total // len(config.strategies)
            objects = objects[:room]
        keys = [((pair.stem, obj.label, s), obj, s) for obj in objects for s in config.strategies]
        planned.update(key for key, *_ in keys)
        todo = [(obj, s) for key, obj, s in keys if key not in done]
        total += len(objects) * len(config.strategies)
        if todo:
            tasks.append((pair, window, todo))
    if not pairs:
        raise ActiveSamError(f"{config.data} has no image with a mask of the same name.")

    finished = total - sum(len(todo) for *_, todo in tasks)
    yield Progress(finished, total, f"{finished} of {total} episodes already done")
    futures = {
        client.submit(
            evaluate_pair,
            config.model,
            pair,
            window,
            todo,
            config.clicks,
            config.seed,
            torch_threads,
            head_file,
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


def _head_file(config: BenchmarkConfig) -> str | None:
    """The head file the run needs, or None; a missing one is refused here, before any
    worker starts (a head for another model is refused by the first worker)."""
    wanted = [s for s in config.strategies if STRATEGIES[Strategy(s)].needs_head]
    uses_head = wanted or Strategy.ENTROPY in config.strategies
    if not config.head:
        require_head(wanted, find_head(config.model) is not None, config.model.name)
    if config.head:
        if not Path(config.head).is_file():
            raise ActiveSamError(f"No Bayesian head at {config.head}: give an existing file.")
        return str(config.head)
    found = find_head(config.model) if uses_head else None
    return str(found) if found else None


def require_head(strategies: Iterable[str], has_head: bool, model_name: str) -> None:
    """Raise :class:`ActiveSamError` if any of ``strategies`` needs a Bayesian head and
    there is none."""
    wanted = [str(s) for s in strategies if STRATEGIES[Strategy(s)].needs_head]
    if wanted and not has_head:
        raise ActiveSamError(
            f"{', '.join(wanted)} needs a Bayesian head for {model_name}: fit one with "
            "`napari-active-sam train-head` (or 'Learn from my annotations' in napari) and "
            "pass it with --head, or choose another strategy."
        )


RUN_FILE = "run.json"


def _check_same_run(config: BenchmarkConfig, out: Path, head_file: str | None) -> None:
    """Refuse to resume into a folder holding another run's episodes."""
    identity = {
        "head": file_sha256(Path(head_file))[:16] if head_file else None,
        "model": config.model.model_id(),
        "data": str(Path(config.data).resolve()),
        "clicks": config.clicks,
        "seed": config.seed,
        "window": config.window,
        "volume": config.volume,
    }
    path = out / RUN_FILE
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier != identity:
            changed = sorted(k for k in identity if earlier.get(k) != identity[k])
            raise ActiveSamError(
                f"{out} holds results of another benchmark run (different {', '.join(changed)})"
                ": choose another --out folder, or delete it to start again."
            )
    else:
        path.write_text(json.dumps(identity, indent=1))
