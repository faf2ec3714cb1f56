"""The jobs the docks run on workers: plain functions and generators over core, no Qt.

Each runs off the GUI thread through :class:`~napari_active_sam._widgets.workers.WorkerHost`;
generators yield :class:`~napari_active_sam.core.progress.Progress` and can be cancelled
between yields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.active.bayes_head import HEAD, BayesHead
from ..core.active.head_training import HeadConfig, examples_from_objects, fit_head
from ..core.adapt.adapter import ADAPTER, Adapter
from ..core.adapt.dpo import (
    candidates_of,
    quality_ranker,
)
from ..core.adapt.exemplars import exemplar_prototypes, search_slice
from ..core.adapt.finetune import AdaptConfig, ritm_ious
from ..core.adapt.objects import (
    exemplars_of,
    labelled_objects,
    prompted_objects,
    sized_for,
)
from ..core.adapt.pipeline import AdaptPlan, adapt, head_for
from ..core.annotate.session import AnnotationSession
from ..core.annotate.volume import PropagationSettings, propagate
from ..core.bench.episodes import evaluate_image
from ..core.bench.report import summarise
from ..core.bench.strategies import needing_head, reads_head
from ..core.engine.checkpoints import LoadedModel, load_model
from ..core.engine.embeddings import embed_slice
from ..core.engine.predictor import Predictor, shown_head
from ..core.engine.preprocess import IntensityWindow, SliceSource
from ..core.engine.store import EmbeddingStore, writable_store_path
from ..core.engine.zoom import JudgedDecoder, ZoomingPredictor
from ..core.errors import ActiveSamError, SaveError
from ..core.progress import Progress
from ..core.prompts import PromptSet
from ..core.quality.assess import assess_labels
from ..core.quality.estimators import QualityModels, QualitySample, estimate_quality
from ..core.quality.measure import measure_objects
from ..core.quality.networks import QualityRegressor


def make_session(model: LoadedModel, data, window: str, rgb: bool, checkpoint=None,
                 store: Path | None = None):  # fmt: skip
    """The image as SAM input (percentiles resolved), an embedding store (in memory, or the
    zarr store at ``store``: one ``precompute`` wrote is read, and what is encoded is added
    to it), the model's Bayesian head and quality regressor.

    Returns
    -------
    tuple
        ``(session, quality models, problem with the head or regressor or None)``.
    """
    source = SliceSource(np.asarray(data), IntensityWindow.from_name(window), rgb=rgb)
    if store is not None:  # refused, not kept in memory only, where it cannot be written
        store = writable_store_path(store)
    session = AnnotationSession(model, source, EmbeddingStore(model.encoder_id, path=store))
    problem = None
    try:
        session.head = BayesHead.for_model(model, checkpoint)
    except ActiveSamError as exc:
        problem = f"{exc} Suggestions use EIG until then."
    try:
        regressor = QualityRegressor.for_model(model, checkpoint)
    except ActiveSamError as exc:
        regressor = None
        note = f"{exc} Quality falls back to SAM's IoU head."
        problem = f"{problem} {note}" if problem else note
    quality = QualityModels(model, session.head, regressor)
    session.judge = quality.judge  # the ensemble picks the mask shown for a lone click
    return session, quality, problem


def learning_job(session: AnnotationSession, labels: np.ndarray, model: LoadedModel,
                 predictor: Predictor, initial: BayesHead | None):  # fmt: skip
    """Click sets simulated on every committed object of ``labels`` (same shape as the
    image, without channels) with ``model`` (the session's when Learn was pressed, and its
    ``predictor``; the session may switch models meanwhile), then the head fitted on them
    (starting from ``initial``) and saved as the user's own; returns ``(head, path)``."""

    def embedding(index):
        return lambda: embed_slice(model, session.source, session.store, index,
                                   session.limits)  # fmt: skip

    pairs = []
    for index in session.source.slice_indices():
        plane = labels[index] if index else labels
        for label in np.unique(plane[plane > 0]):
            pairs.append((embedding(index), plane == label))
    if not pairs:
        raise ActiveSamError("No committed objects to learn from: commit some objects first.")
    rng = np.random.default_rng(0)
    examples = yield from examples_from_objects(predictor, pairs, rng)
    config = HeadConfig(steps=300)
    head: BayesHead = yield from fit_head(examples, model, config, initial=initial)
    try:
        saved = f"saved {head.save(HEAD.users(model.model_id))}"
    except SaveError as exc:  # the head is kept elsewhere and still used in this session
        saved = str(exc)
    return head, saved


@dataclass(frozen=True)
class Adaptation:
    """What :func:`adaptation_job` made: the adapted model, its head and quality models
    (no regressor of its own yet), where the adapter was saved (or kept), and the held-out
    figures the dock shows; ``improved`` False when no training step helped (the model is
    then the base model, and nothing was saved)."""

    model: LoadedModel
    head: BayesHead | None
    quality: QualityModels
    saved: str
    objects: int
    held_out: int
    before: float
    after: float
    aligned: int = 0
    improved: bool = True


def ranking_job(session: AnnotationSession, index: tuple[int, ...], candidate: Candidate):
    """The four threshold masks of the session model's answer for ``candidate`` on slice
    ``index``, for a person to rank (:class:`~napari_active_sam.core.adapt.dpo.Candidates`,
    on a window of the model's input side around it on a large slice, as adaptation
    decodes it)."""
    given = [candidate.prompts]
    (obj,) = yield from prompted_objects(session.model, session.source, index, given, "ranked",
                                         store=session.store)  # fmt: skip
    return candidates_of(session.model, obj)


def adaptation_job(base: LoadedModel, session: AnnotationSession, labels: np.ndarray,
                   base_quality: QualityModels | None = None, on_offer=None,
                   ranked=()):  # fmt: skip
    """Fine-tune ``base``'s prompt encoder and mask decoder on the committed objects of
    ``labels`` (one in five held out to stop and to measure on, from the session's cached
    embeddings); with candidates ``on_offer`` (``(slice, [Candidate, ...])``, objects found
    like the committed ones) align it on them too, their four threshold masks ranked by
    ``base_quality`` — or, with ``ranked`` (``[(Candidates, order), ...]``), on the masks
    the user ranked; fit a Bayesian head for the result on the committed objects, save the
    adapter as the user's own; returns an :class:`Adaptation`. The adapted model decodes
    small objects zoomed in as far as the committed objects' size asks for. When no training
    step raised the held-out objects' IoU, nothing is fitted or saved and the returned
    :class:`Adaptation` (``improved`` False) holds ``base`` itself."""
    given, base = base, sized_for(base, [labels])
    objects = yield from labelled_objects(base, session.source, labels, "committed",
                                          store=session.store)  # fmt: skip
    found, ranker = [], None
    if not ranked and on_offer and on_offer[1] and base_quality is not None:
        index, candidates = on_offer
        prompts = [c.prompts for c in candidates]
        found = yield from prompted_objects(base, session.source, index, prompts, "candidates",
                                            store=session.store)  # fmt: skip
        ranker = quality_ranker(base_quality)
    plan = AdaptPlan(stage1=AdaptConfig(refit=False))  # held-out objects stay unseen
    result = yield from adapt(base, objects, found, ranker, plan, ranked)
    held, aligned = result.held_out, result.aligned
    before, after = (float(ritm_ious(m, held, 1).mean()) for m in (base, result.model))
    adapter, adapted = result.adapter, result.model
    if not result.improved:  # the adapter would be the base model: saving it would only
        # overwrite an earlier adapter (and its head) that did help
        return Adaptation(given, None, base_quality or QualityModels(given, None),
                          "nothing saved", len(objects), len(held), before, after, aligned,
                          improved=False)  # fmt: skip
    adapter.report["held_out_iou_at_1"] = [round(before, 4), round(after, 4)]
    head = yield from head_for(adapted, objects)
    said = []
    for save in (lambda: adapter.save(ADAPTER.users(base.model_id)),
                 lambda: head.save(HEAD.users(adapted.model_id))):  # fmt: skip
        try:  # each on its own: a head is kept even when its adapter could not be
            said.append(f"saved {save()}")
        except SaveError as exc:  # the adapted model is still used in this session
            said.append(str(exc))
    saved = "; ".join(said)
    quality = QualityModels(adapted, head)
    return Adaptation(adapted, head, quality, saved, len(objects), len(held), before, after,
                      aligned)  # fmt: skip


def saved_adaptation_job(base: LoadedModel) -> Adaptation | None:
    """The adaptation the user made earlier for ``base`` (their adapter and the head fitted
    with it, found in the cache by the model's id), or None."""
    path = ADAPTER.users(base.model_id)
    if not path.is_file():
        return None
    adapter = Adapter.load(path, base)
    adapted = adapter.apply(base)
    head_path = HEAD.users(adapted.model_id)
    head = BayesHead.load(head_path, adapted) if head_path.is_file() else None
    report = adapter.report
    before, after = report.get("held_out_iou_at_1", [float("nan")] * 2)
    return Adaptation(adapted, head, QualityModels(adapted, head), f"found {path}",
                      int(report.get("labelled", 0)), int(report.get("held_out", 0)),
                      float(before), float(after), int(report.get("preferences", 0)))  # fmt: skip


@dataclass(frozen=True, eq=False)
class Candidate:
    """An object like the committed ones, found on a slice: its mask, SAM's prompts for
    it and its predicted Dice."""

    mask: np.ndarray
    prompts: PromptSet
    predicted_dice: float


def similar_objects_job(session: AnnotationSession, quality: QualityModels,
                        labels: np.ndarray, index: tuple[int, ...], count: int = 30):  # fmt: skip
    """Objects like the committed ones of ``labels`` on slice ``index``: exemplar prompts
    (:mod:`~napari_active_sam.core.adapt.exemplars`), SAM's answer to each (zoomed in on a
    large slice) and its predicted Dice; answers that mostly cover committed objects or a
    better candidate are left out. Returns candidates, best predicted Dice first."""
    source, limits = session.source, session.limits
    found = exemplar_prototypes(session.model, exemplars_of(source, labels))
    raw = source.raw_slice(index)
    taken = (labels[index] if index else labels) > 0
    prompts_found = search_slice(session.model, raw, limits, found, count, taken)
    embedding = embed_slice(session.model, source, session.store, index, limits)
    rgb = source.sam_slice(index, limits)
    zooming = ZoomingPredictor(session.predictor, raw, limits)
    decoder = JudgedDecoder(zooming, lambda answer, asked, e: quality.judge(answer, asked, e, rgb))
    rng = np.random.default_rng(0)
    candidates: list[Candidate] = []
    for done, (prompts, _) in enumerate(prompts_found, 1):
        prediction = decoder.predict(embedding, prompts)
        head = shown_head(prediction, prompts)
        mask = prediction.mask(head)
        if mask.any() and (mask & taken).sum() < 0.5 * mask.sum():
            if prediction.judged is not None:  # the ensemble has judged the shown mask
                dice = float(prediction.judged[head - 1])
            else:
                sample = QualitySample(rgb, mask, embedding, prompts, prediction, head)
                dice = estimate_quality("ensemble", sample, quality, rng).predicted_dice
            candidates.append(Candidate(mask, prompts, dice))
        yield Progress(done, len(prompts_found), f"judged {done}/{len(prompts_found)} candidates")
    kept: list[Candidate] = []
    union = taken.copy()
    for candidate in sorted(candidates, key=lambda c: -c.predicted_dice):
        if (candidate.mask & union).sum() < 0.5 * candidate.mask.sum():
            kept.append(candidate)
            union |= candidate.mask
    return kept


def propagation_job(
    session: AnnotationSession,
    prompted: dict[int, PromptSet],
    shown: dict[int, np.ndarray],
    kept: dict[int, np.ndarray] | None = None,
    priors: dict[int, np.ndarray] | None = None,
    max_uncertainty: float | None = None,
):
    """Seed masks from the prompted slices (the previewed ``(H, W)`` mask where the user
    saw one, else the answer to their prompts, starting from the mask they correct where
    ``priors`` gives one) and the ``kept`` seeds of an object being corrected (those
    slices not prompted again), then grow through the volume (stopping also where SAM's
    heads disagree more than ``max_uncertainty``, in nats, when given); returns the grown
    object and where it stopped
    (:class:`~napari_active_sam.core.annotate.volume.Propagated`), and its seeds."""
    seeds = {z: mask for z, mask in (kept or {}).items() if z not in prompted}
    seeds.update(shown)
    priors = priors or {}
    for z, prompts in prompted.items():
        if z not in seeds:
            seeds[z] = session.answer((z,), prompts, prior=priors.get(z)).mask
    settings = PropagationSettings(max_uncertainty=max_uncertainty)
    return (yield from propagate(session, seeds, settings)), seeds


def assess_job(estimator, source, labels: np.ndarray, label: int | None, models, store):
    """:func:`~napari_active_sam.core.quality.assess.assess_labels` on every object, or on
    object ``label`` alone (selected here, off the GUI thread)."""
    if label is not None:
        labels = np.where(labels == label, label, 0)
    if not labels.any():
        return []
    return (yield from assess_labels(estimator, source, labels, models, store))


def measure_job(session, labels: np.ndarray, spacing: tuple[float, ...]):
    """:func:`~napari_active_sam.core.quality.measure.measure_objects` on every committed
    object with the session's model, head and embeddings."""
    if not labels.any():
        return []
    return (yield from measure_objects(session.model, session.head, session.source, labels,
                                       spacing, session.store))  # fmt: skip


def evaluation_job(name, checkpoint, data, rgb: bool, labels: np.ndarray, window: str,
                   strategies: list[str], clicks: int):  # fmt: skip
    """Load the model (and its head if a strategy reads it), play every episode against
    ``labels``, return the summary; strategies that need a head the model lacks are left
    out (``summary["left_out"]``), and only if none is left is that an error."""
    yield Progress(0, 0, f"loading {name} ...")  # a cancel pressed before loading stops here
    model = load_model(name, checkpoint)
    head = BayesHead.for_model(model, checkpoint) if reads_head(strategies) else None
    left_out = [] if head is not None else needing_head(strategies)
    if left_out and len(left_out) == len(strategies):
        raise ActiveSamError(
            f"{', '.join(left_out)} needs a Bayesian head, and {model.name} has none: fit "
            "one with 'Learn from my annotations' in the Active SAM dock, or choose another "
            "strategy."
        )
    strategies = [s for s in strategies if s not in left_out]
    source = SliceSource(np.asarray(data), IntensityWindow.from_name(window), rgb=rgb)
    records = yield from evaluate_image(model, source, labels, strategies, clicks, 0, head)
    return summarise(records, {"model": model.model_id, "clicks": clicks, "left_out": left_out})
