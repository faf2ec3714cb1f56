"""Ground-truth-free quality: the predicted Dice of a mask, without the ground truth.

Five estimators share one interface, :func:`estimate_quality`, keyed by :class:`Estimator`:

- ``iou_head``: SAM's own IoU head, converted to Dice (Dice = 2·IoU / (1 + IoU)). For a
  mask that is not SAM's answer (made by another tool, or edited), SAM is prompted (with the
  mask's prompts if known, else with a box around the mask and a click at its deepest
  point) and the estimate is ``q · IoU(mask, S)``: SAM's predicted IoU ``q`` of its answer
  ``S`` times the mask's agreement with that answer, converted to Dice. Jaccard distance
  (1 − IoU) is a metric, so the triangle inequality bounds the mask's true IoU between
  ``q + a − 1`` and ``1 − |q − a|`` (``a`` = IoU(mask, S)); the product always lies inside
  those bounds and equals ``q`` for SAM's own mask.
- ``posterior``: the expected Dice between the mask and masks sampled from the Bayesian
  head's Laplace posterior
  (:meth:`~napari_active_sam.core.active.bayes_head.BayesHead.sample_logits`).
  For SAM's own mask this is the agreement of the posterior samples with their mean mask;
  for another mask it also measures how far the mask is from what the model believes.
  Without a Bayesian head for the model it falls back to ``iou_head``.
- ``regressor`` (EvanySeg): a small CNN (torchvision's MobileNetV3-Small at half width)
  on a square crop around the mask's box, with a margin, whose red channel is replaced by
  0.5·R + 0.5·mask·255, resized to 64 × 64; trained with MSE on true Dice.
- ``embedding``: the fast variant, a small MLP (torchvision's ``MLP``) on SAM's frozen
  image embedding averaged inside the mask and in a ring around it (the mask downsampled to
  the embedding grid as area fractions), plus four shape numbers.
- ``ensemble``: the mean of the four estimates (of those whose networks the model has).
  Their errors differ (SAM's opinion, the posterior's spread, the image around the mask), so
  the mean ranks masks better than any one of them on held-out data.

The learned estimators are trained on simulated prompting
(:func:`~napari_active_sam.core.quality.training.generated_examples`): episodes of SAM's
interactive recipe, each step giving the masks of all four heads, a box-prompted answer,
and perturbed ground truth (shifted, eroded, dilated, cut, the whole image), so that good
and bad masks are both seen; :func:`~napari_active_sam.core.quality.training.fit_quality`
trains both networks. Without weights for the model, they fall back to ``iou_head``; every
:class:`QualityEstimate` says which estimator answered.

An empty mask has predicted Dice 0 (nothing was segmented). Whole images and volumes are
judged by :mod:`napari_active_sam.core.quality.assess`, slice by slice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..active.bayes_head import DEFAULT_SAMPLES, BayesHead, head_inputs
from ..engine.checkpoints import LoadedModel
from ..engine.device import to_device
from ..engine.embeddings import SliceEncoder
from ..engine.predictor import Prediction, Predictor, ambiguous, shown_head
from ..engine.store import Embedding
from ..engine.zoom import JudgedDecoder, ZoomingPredictor, zooms
from ..enums import Estimator, parse_option
from ..errors import ActiveSamError, ImageError
from ..metrics import iou
from ..prompts import PromptSet
from ..sim.clicker import prompts_from_mask
from .features import embedding_features, overlay_crop
from .networks import QualityRegressor


def iou_to_dice(value: float) -> float:
    """Dice = 2·IoU / (1 + IoU) (exact for one pair of masks)."""
    value = float(np.clip(value, 0.0, 1.0))
    return 2 * value / (1 + value)


@dataclass(frozen=True, eq=False)
class QualitySample:
    """One mask on one slice, with what is known about how it was made.

    Attributes
    ----------
    image : np.ndarray
        uint8 ``(H, W, 3)`` SAM input of the slice (``SliceSource.sam_slice``); uint8
        ``(H, W)`` is taken as grey.
    mask : np.ndarray
        Boolean ``(H, W)`` mask to judge (any nonzero value counts as inside).
    embedding : Embedding, optional
        The slice's embedding; encoded when an estimator needs it and it is missing.
    prompts : PromptSet, optional
        The prompts that made the mask, if SAM made it; else prompts are derived from the
        mask (a box around it and a positive click at its deepest point).
    prediction : Prediction, optional
        SAM's answer to ``prompts`` (saves a decoder pass).
    head : int, optional
        Which head of ``prediction`` the mask came from (default: the head a user sees).

    Raises
    ------
    ImageError
        An image that is not a 2D slice, or a mask whose shape differs from the image's.
    """

    image: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    embedding: Embedding | None = None
    prompts: PromptSet | None = None
    prediction: Prediction | None = None
    head: int | None = None

    def __post_init__(self):
        image = np.asarray(self.image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ImageError(
                f"Expected SAM's input, a uint8 (H, W, 3) slice, got {image.dtype} "
                f"{image.shape}: convert it with to_sam_rgb or use assess_mask."
            )
        mask = np.asarray(self.mask)
        if mask.ndim != 2:
            raise ImageError(
                f"A quality sample is one 2D slice, but the mask has shape {mask.shape}: judge "
                "volumes slice by slice with assess_mask."
            )
        if mask.shape != image.shape[:2]:
            raise ImageError(
                f"The mask has shape {mask.shape} but the image has {image.shape[:2]}: masks "
                "must match their image pixel for pixel."
            )
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "mask", mask.astype(bool))


@dataclass(frozen=True)
class QualityEstimate:
    """A predicted Dice and where it came from.

    Attributes
    ----------
    predicted_dice : float
        In [0, 1].
    estimator : Estimator
        The estimator that answered.
    requested : Estimator
        The estimator asked for (differs from ``estimator`` after a fallback).
    note : str
        Why it fell back, or that the mask was empty; "" otherwise.
    """

    predicted_dice: float
    estimator: Estimator
    requested: Estimator
    note: str = ""


@dataclass(frozen=True)
class ObjectQuality:
    """The estimate for one object on one slice.

    Attributes
    ----------
    label : int
        Instance label of the object.
    index : tuple of int
        Leading index of the slice: ``()`` for a 2D image, ``(z,)`` for a volume.
    estimate : QualityEstimate
    """

    label: int
    index: tuple[int, ...]
    estimate: QualityEstimate


@dataclass(eq=False)
class QualityModels:
    """The networks the estimators may use, for one SAM model.

    Attributes
    ----------
    model : LoadedModel
    bayes_head : BayesHead, optional
        For ``posterior``.
    regressor : QualityRegressor, optional
        For ``regressor`` and ``embedding``.
    samples : int
        Posterior samples per estimate.
    zoom : bool
        Ask SAM about a small object of a large slice in a window at the slice's own
        resolution, as the annotator does
        (:class:`~napari_active_sam.core.engine.zoom.ZoomingPredictor`).

    Raises
    ------
    ModelError
        A head or regressor made for another model.
    """

    model: LoadedModel
    bayes_head: BayesHead | None = None
    regressor: QualityRegressor | None = None
    samples: int = DEFAULT_SAMPLES
    zoom: bool = True

    def __post_init__(self):
        if self.bayes_head is not None:
            self.bayes_head.check_model(self.model)
        if self.regressor is not None:
            self.regressor.check_model(self.model)
        self.predictor = Predictor(self.model)

    @classmethod
    def for_model(
        cls,
        model: LoadedModel,
        checkpoint: Path | None = None,
        head: Path | None = None,
        regressor: Path | None = None,
    ) -> QualityModels:
        """The model with its own Bayesian head and regressor, where it has them.

        Parameters
        ----------
        checkpoint : Path, optional
            The model's local checkpoint (its head and regressor sit next to it).
        head, regressor : Path, optional
            Files to use instead of the model's own.
        """
        bayes_head = BayesHead.load(head, model) if head else BayesHead.for_model(model, checkpoint)
        learned = (
            QualityRegressor.load(regressor, model)
            if regressor
            else QualityRegressor.for_model(model, checkpoint)
        )
        return cls(model, bayes_head, learned)

    def embedding_of(self, sample: QualitySample) -> Embedding:
        """The sample's embedding, encoded from its image when it has none."""
        if sample.embedding is not None:
            return sample.embedding
        (embedding,) = SliceEncoder(self.model).encode([sample.image], ["quality-sample"])
        return embedding

    def judge(
        self, prediction: Prediction, prompts: PromptSet, embedding: Embedding, image: np.ndarray
    ) -> Prediction:
        """``prediction`` with its three multimask heads judged by the ensemble
        (:attr:`Prediction.judged`, which then picks the head shown) when ``prompts`` are a
        lone click; unchanged for other prompts, or when these models hold nothing beyond
        SAM's IoU head (see :mod:`~napari_active_sam.core.quality.choice`).

        Parameters
        ----------
        prediction : Prediction
            SAM's answer to ``prompts``, of the whole slice or a zoom window of it.
        prompts : PromptSet
        embedding : Embedding
            The slice's embedding.
        image : np.ndarray
            uint8 ``(H, W, 3)`` SAM input of the slice (``SliceSource.sam_slice``).
        """
        if not ambiguous(prompts) or not prompts.clicks or not can_judge(self):
            return prediction
        scores = []
        for head in (1, 2, 3):
            sample = QualitySample(image, prediction.mask(head), embedding, prompts,
                                   prediction, head)  # fmt: skip
            found = estimate_quality(Estimator.ENSEMBLE, sample, self, np.random.default_rng(0))
            scores.append(found.predicted_dice)
        return replace(prediction, judged=np.asarray(scores, np.float32))


def sam_answer(sample: QualitySample, models: QualityModels) -> tuple[Prediction, PromptSet, int]:
    """SAM's answer for the sample's object: ``(prediction, prompts, head)``.

    The sample's own prediction when given; else SAM prompted with the sample's prompts, or
    with a box around the mask and a click at its deepest point
    (:func:`~napari_active_sam.core.sim.clicker.prompts_from_mask`), decoded as the annotator
    decodes them (a lone click's zoom window and mask chosen by :meth:`QualityModels.judge`).
    ``head`` is the sample's head, else the head a user sees for those prompts (the
    single-mask head for a box).
    """
    if sample.prediction is not None:
        prompts = sample.prompts or PromptSet()
        head = sample.head if sample.head is not None else shown_head(sample.prediction, prompts)
        return sample.prediction, prompts, head
    if sample.prompts is not None and not sample.prompts.is_empty:
        prompts = sample.prompts
    else:
        prompts = prompts_from_mask(sample.mask)
    decoder = models.predictor
    if models.zoom and zooms(sample.image.shape[:2], models.model.architecture.img_size):
        decoder = ZoomingPredictor(models.predictor, sample.image, (0, 255), cache=1)
    judged = JudgedDecoder(decoder, lambda answer, asked, e: models.judge(answer, asked, e,
                                                                           sample.image))
    prediction = judged.predict(models.embedding_of(sample), prompts)
    head = sample.head if sample.head is not None else shown_head(prediction, prompts)
    return prediction, prompts, head


def _iou_head(sample: QualitySample, models: QualityModels, rng: np.random.Generator) -> float:
    prediction, _, head = sam_answer(sample, models)
    predicted_iou = float(np.clip(prediction.iou[head], 0.0, 1.0))
    agreement = iou(sample.mask, prediction.mask(head))
    return iou_to_dice(predicted_iou * agreement)


def _posterior(sample: QualitySample, models: QualityModels, rng: np.random.Generator) -> float:
    assert models.bayes_head is not None
    prediction, prompts, head = sam_answer(sample, models)
    cells = prediction.cells(models.model)  # the slice, or the zoom window
    row, col = prediction.origin
    local = prompts.translated(-row, -col)
    inputs = head_inputs(cells.pool(prediction.logits[head]), local, cells)
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    sampled = torch.sigmoid(models.bayes_head.sample_logits(inputs, models.samples, generator))
    mask = to_device(np.asarray(sample.mask, bool), sampled.device)
    area = mask.sum()
    scores = []
    with torch.inference_mode():
        for chunk in torch.split(sampled, 8):
            masks = prediction.place(cells.upscale(chunk)) > 0.5
            inter = (masks & mask).sum(dim=(1, 2))
            total = masks.sum(dim=(1, 2)) + area
            scores.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), 1.0))
    return float(torch.cat(scores).mean())


def _regressor(sample: QualitySample, models: QualityModels, rng: np.random.Generator) -> float:
    assert models.regressor is not None
    crop = overlay_crop(sample.image, sample.mask, models.regressor.crop_size)
    return float(models.regressor.predict_crops(crop[None])[0])


def _embedding(sample: QualitySample, models: QualityModels, rng: np.random.Generator) -> float:
    assert models.regressor is not None
    img_size = models.model.architecture.img_size
    features = embedding_features(models.embedding_of(sample), sample.mask, img_size)
    return float(models.regressor.predict_features(features[None])[0])


ENSEMBLE_MEMBERS = (
    Estimator.IOU_HEAD,
    Estimator.POSTERIOR,
    Estimator.REGRESSOR,
    Estimator.EMBEDDING,
)


def ensemble_members(models: QualityModels) -> list[Estimator]:
    """The estimators :data:`Estimator.ENSEMBLE` averages with ``models``: every member whose
    network the models have."""
    return [e for e in ENSEMBLE_MEMBERS if ESTIMATORS[e].missing(models) is None]


def can_judge(models: QualityModels) -> bool:
    """Whether ``models`` hold anything beyond SAM's IoU head to judge masks with (a Bayesian
    head or a regressor); with the IoU head alone, judging would repeat SAM's choice."""
    return len(ensemble_members(models)) > 1


def _ensemble(sample: QualitySample, models: QualityModels, rng: np.random.Generator) -> float:
    # Ask SAM once; the members read its answer from the sample.
    prediction, prompts, head = sam_answer(sample, models)
    shared = replace(sample, prompts=prompts, prediction=prediction, head=head)
    members = ensemble_members(models)
    return float(np.mean([ESTIMATORS[e].estimate(shared, models, rng) for e in members]))


def _needs(has: Callable[[QualityModels], bool], missing: str, remedy: str):
    """A ``missing`` check for :class:`EstimatorSpec`: why SAM's IoU head answers instead
    (``missing`` for the model, and what to fit) when ``has`` is false."""

    def why(models: QualityModels) -> str | None:
        if has(models):
            return None
        return f"{missing} for {models.model.name}, so SAM's IoU head answered ({remedy})"

    return why


_needs_head = _needs(
    lambda models: models.bayes_head is not None,
    "no Bayesian head",
    "fit one with `napari-active-sam train-head`",
)
_needs_regressor = _needs(
    lambda models: models.regressor is not None,
    "no quality regressor",
    "train one with `napari-active-sam train-quality`",
)
_needs_head_or_regressor = _needs(
    lambda models: len(ensemble_members(models)) > 1,
    "neither a Bayesian head nor a quality regressor",
    "fit them with `napari-active-sam train-head` and `train-quality`",
)


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator: how it estimates, what it needs, and who answers without it.

    Attributes
    ----------
    title : str
    estimate : callable
        ``(sample, models, rng) -> float`` for a non-empty mask.
    missing : callable
        ``(models) -> str | None``: why it cannot answer with these models, or None.
    fallback : Estimator, optional
        Answers when ``missing`` gives a reason.
    needs_embedding : bool
        Whether it reads the slice's embedding (callers may skip encoding otherwise).
    """

    title: str
    estimate: Callable[[QualitySample, QualityModels, np.random.Generator], float]
    missing: Callable[[QualityModels], str | None] = lambda models: None
    fallback: Estimator | None = None
    needs_embedding: bool = True


ESTIMATORS: dict[Estimator, EstimatorSpec] = {
    Estimator.IOU_HEAD: EstimatorSpec("SAM's IoU head", _iou_head),
    Estimator.POSTERIOR: EstimatorSpec(
        "Posterior agreement", _posterior, _needs_head, Estimator.IOU_HEAD
    ),
    Estimator.REGRESSOR: EstimatorSpec(
        "Learned regressor (image crop)",
        _regressor,
        _needs_regressor,
        Estimator.IOU_HEAD,
        needs_embedding=False,
    ),
    Estimator.EMBEDDING: EstimatorSpec(
        "Learned regressor (SAM embedding)", _embedding, _needs_regressor, Estimator.IOU_HEAD
    ),
    Estimator.ENSEMBLE: EstimatorSpec(
        "Mean of the estimators", _ensemble, _needs_head_or_regressor, Estimator.IOU_HEAD
    ),
}


def parse_estimator(estimator: str) -> Estimator:
    """The :class:`Estimator` named ``estimator``; a clear error for an unknown name."""
    return parse_option(Estimator, estimator, "quality estimator")


def resolve_estimator(estimator: str, models: QualityModels) -> tuple[Estimator, str]:
    """The estimator that will answer for ``estimator`` with ``models``, and why it differs
    ("" when it does not)."""
    answered, reasons = parse_estimator(estimator), []
    while (reason := ESTIMATORS[answered].missing(models)) is not None:
        reasons.append(reason)
        fallback = ESTIMATORS[answered].fallback
        if fallback is None:
            raise ActiveSamError(reason)
        answered = fallback
    return answered, "; ".join(reasons)


def estimate_quality(
    estimator: str,
    sample: QualitySample,
    models: QualityModels,
    rng: np.random.Generator | None = None,
) -> QualityEstimate:
    """Predicted Dice of ``sample.mask`` against the (unknown) true object.

    Parameters
    ----------
    estimator : str
        A key of :data:`ESTIMATORS`.
    sample : QualitySample
        One 2D slice and mask (see
        :func:`~napari_active_sam.core.quality.assess.assess_mask` for volumes).
    models : QualityModels
    rng : np.random.Generator, optional
        Seeds the posterior samples (default: a fixed seed, so estimates repeat).

    Returns
    -------
    QualityEstimate
        0 for an empty mask. Estimators that lack their network fall back to ``iou_head``;
        the estimate says so.

    Raises
    ------
    ActiveSamError
        An unknown estimator.
    """
    requested = parse_estimator(estimator)
    if not sample.mask.any():
        return QualityEstimate(0.0, requested, requested, "empty mask: nothing segmented")
    answered, note = resolve_estimator(requested, models)
    rng = rng if rng is not None else np.random.default_rng(0)
    if ESTIMATORS[answered].needs_embedding and sample.embedding is None:
        sample = replace(sample, embedding=models.embedding_of(sample))  # encoded once
    value = ESTIMATORS[answered].estimate(sample, models, rng)
    return QualityEstimate(float(np.clip(value, 0.0, 1.0)), answered, requested, note)
