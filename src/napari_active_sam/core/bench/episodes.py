"""Benchmark episodes: one object annotated with one strategy, and its JSON record."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..active.acquisition import Uncertainty, uncertainty
from ..active.bayes_head import DEFAULT_SAMPLES, BayesHead
from ..adapt.adapter import Adapter
from ..data.datasets import ImagePair, ObjectTarget, check_labels, load_pair, object_targets
from ..engine.checkpoints import LoadedModel, ModelRef
from ..engine.embeddings import embed_slice
from ..engine.predictor import InsistingPredictor, Prediction, Predictor, shown_head
from ..engine.preprocess import IntensityWindow, SliceSource
from ..engine.store import Embedding, EmbeddingStore
from ..engine.zoom import ZoomingPredictor
from ..enums import Strategy
from ..errors import ActiveSamError, ImageError, ModelError
from ..metrics import dice, iou, oracle_choice
from ..progress import Progress
from ..prompts import PromptSet
from ..quality.choice import JudgingPredictor
from ..quality.estimators import QualityModels
from ..quality.networks import QualityRegressor
from ..sim.episode import ClickList, Step, clicks_to_prompts, episode
from .strategies import STRATEGIES, ClickContext, first_click, parse_strategy, require_head


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

    def record(self, gt: np.ndarray, step: Step) -> None:
        """Add one step's clicks and scores."""
        shown, prediction = step.shown, step.prediction
        if step.iteration == 1:
            self.first = prediction
        self.clicks.append(list(step.turn.added))
        self.ious.append(iou(gt, shown))
        self.dices.append(dice(gt, shown))
        best, best_dice = oracle_choice(gt, [prediction.probability(h) for h in (1, 2, 3)])
        self.oracle_dices.append(best_dice)
        self.counts.append(
            (
                int(np.count_nonzero(gt & shown)),
                int(np.count_nonzero(gt | shown)),
                int(np.count_nonzero(shown)),
                int(np.count_nonzero(gt & best)),
                int(np.count_nonzero(best)),
            )
        )
        self.shown = shown

    def repeat_last(self, iterations: int) -> None:
        """Repeat the last scores up to ``iterations`` (a strategy with nothing left to ask
        keeps the mask it has)."""
        while len(self.ious) < iterations:
            for series in (self.ious, self.dices, self.oracle_dices, self.counts):
                series.append(series[-1])
            self.clicks.append([])


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
        A key of :data:`~napari_active_sam.core.bench.strategies.STRATEGIES`.
    max_clicks : int
        Iterations per episode.
    rng : np.random.Generator, optional
        For the random parts of strategies.
    bayes_head : BayesHead, optional
        The Bayesian head (required by BALD; used by entropy when given).
    samples : int
        Posterior samples per map.
    """
    spec = STRATEGIES[parse_strategy(strategy)]
    require_head([strategy], bayes_head is not None, predictor.model.name)
    rng = rng or np.random.default_rng(0)
    gt = np.asarray(gt, bool)
    opening = first_click(spec, gt, rng)
    if not opening:
        raise ActiveSamError("The object has no pixel to click: its mask is empty.")
    choose = _best_multimask if spec.multimask_every_step else shown_head

    def correct(step: Step) -> ClickList:
        def dice_if_clicked(click: tuple[int, int, bool]) -> float:
            prompts = step.prompts.with_click(clicks_to_prompts([click]).clicks[0])
            prediction = predictor.predict(embedding, prompts, step.feedback)
            return dice(gt, prediction.mask(choose(prediction, prompts)))

        @functools.cache
        def current_uncertainty(name: str) -> Uncertainty:
            return uncertainty(
                name, step.prediction, step.prompts, predictor.model, bayes_head,
                samples, 5, rng=rng, shown=step.head,
            )  # fmt: skip

        context = ClickContext(gt, step.shown, step.clicked, step.prediction, rng,
                               dice_if_clicked, current_uncertainty)  # fmt: skip
        return spec.next_clicks(context)

    result = EpisodeResult()
    steps = episode(predictor, embedding, clicks_to_prompts(opening), correct, max_clicks, choose)
    for step in steps:
        result.record(gt, step)
    result.repeat_last(max_clicks)
    return result


def _best_multimask(prediction: Prediction, prompts: PromptSet) -> int:
    """The top-rated multimask head whatever the prompts (EIG's and entropy's episodes):
    judged by the quality ensemble after a lone click when the run judges, else SAM's."""
    return prediction.best_multimask_head


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
    zoom: bool = False,
    adapter_file: str | None = None,
    judge: bool = False,
    insist: bool = False,
) -> list[dict[str, Any]]:
    """Play episodes on one image (a dask task): ``todo`` lists (object, strategy) pairs;
    with ``zoom``, small objects are decoded in a window at the image's resolution; with
    ``adapter_file`` the model is adapted first; with ``judge``, the quality ensemble picks
    the mask shown for the first click, as in the annotator (:mod:`..quality.choice`); with
    ``insist``, SAM is asked again when the mask shown leaves clicks out
    (:class:`~napari_active_sam.core.engine.predictor.InsistingPredictor`).

    Returns one JSON-ready record per episode.
    """
    model, head = worker_model(ref, torch_threads, adapter_file, head_file)
    predictor = Predictor(model)
    source, labels = load_pair(pair, window)
    limits = source.limits()
    quality = worker_quality(ref, model, head) if judge else None
    store = EmbeddingStore(model.encoder_id)
    records = []
    for obj, strategy in todo:
        rng = np.random.default_rng(episode_seed(seed, pair.stem, obj.label, strategy))
        slices = []
        for index in obj.indices:
            embedding = embed_slice(model, source, store, index, limits)
            gt = labels[index] == obj.label
            used = _zooming(predictor, source, index, limits) if zoom else predictor
            if quality is not None:
                used = JudgingPredictor(used, quality, source.sam_slice(index, limits))
            if insist:
                used = InsistingPredictor(used)
            result = run_episode(used, embedding, gt, strategy, clicks, rng, head)
            slices.append((index, gt, result))
        records.append(_record(pair.stem, obj.label, str(strategy), slices))
    return records


def worker_model(
    ref: ModelRef, torch_threads: int | None, adapter_file: str | None, head_file: str | None
) -> tuple[LoadedModel, BayesHead | None]:
    """On a dask worker: the model (loaded once per worker, the adapter applied) and the
    Bayesian head of a benchmark task."""
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    from ..cluster import load_on_worker  # dask, only where episodes run on a cluster

    model = load_on_worker(ref)
    if adapter_file:
        model = Adapter.load(Path(adapter_file), model).apply(model)
    return model, BayesHead.load(Path(head_file), model) if head_file else None


def worker_quality(ref: ModelRef, model: LoadedModel, head: BayesHead | None) -> QualityModels:
    """The networks the annotator judges masks with: the benchmark's Bayesian head, else the
    model's own, and the model's quality regressor, where it has them (an adapted model has
    none of its own; those of its base model do not fit it)."""
    checkpoint = Path(ref.checkpoint) if ref.checkpoint else None

    def own(kind):
        try:
            return kind.for_model(model, checkpoint)
        except ModelError:  # the base model's file, found for an adapted model
            return None

    return QualityModels(model, head if head is not None else own(BayesHead),
                         own(QualityRegressor))  # fmt: skip


def _zooming(predictor: Predictor, source: SliceSource, index: tuple[int, ...],
             limits: tuple[float, float]) -> ZoomingPredictor:  # fmt: skip
    return ZoomingPredictor(predictor, source.raw_slice(index), limits)


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
    zoom: bool = True,
) -> Generator[Progress, None, list[dict[str, Any]]]:
    """Every object of one image (an open napari layer) with every strategy, in-process.

    Objects of a volume are played on their slice of largest area; with ``zoom`` small
    objects of a large slice are decoded in a window, as in the annotator. Yields progress per
    episode; returns records in the format of ``episodes.jsonl`` (for
    :func:`~napari_active_sam.core.bench.report.summarise`).

    Raises
    ------
    ImageError
        Labels whose shape differs from the image's slices, or that hold no object.
    ActiveSamError
        A strategy that needs a Bayesian head when none is given.
    """
    labels = check_labels(labels, source.spatial_shape, "The ground truth")
    strategies = [str(parse_strategy(s)) for s in strategies]
    require_head(strategies, bayes_head is not None, model.name)
    objects = object_targets(labels)
    if not objects:
        raise ImageError("The ground truth holds no object: draw or load labels first.")
    predictor = Predictor(model)
    store = store or EmbeddingStore(model.encoder_id)
    limits = source.limits()
    total, records = len(objects) * len(strategies), []
    for obj in objects:
        (index,) = obj.indices
        embedding = embed_slice(model, source, store, index, limits)
        gt = labels[index] == obj.label
        for strategy in strategies:
            rng = np.random.default_rng(episode_seed(seed, "layer", obj.label, strategy))
            used = _zooming(predictor, source, index, limits) if zoom else predictor
            result = run_episode(used, embedding, gt, strategy, clicks, rng, bayes_head)
            records.append(_record("layer", obj.label, strategy, [(index, gt, result)]))
            yield Progress(len(records), total, f"object {obj.label}, {strategy}")
    return records
