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
  head's Laplace posterior (:meth:`~napari_active_sam.core.bayes_head.BayesHead.sample`).
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

The learned estimators are trained on simulated prompting (:func:`generated_examples`):
click sessions as in :func:`~napari_active_sam.core.bayes_head.simulate_examples`, each
step giving the masks of all four heads, a box-prompted answer, and perturbed ground truth
(shifted, eroded, dilated, cut, the whole image), so that good and bad masks are both
seen. :func:`fit_quality` trains both networks and yields :class:`Progress`. Without
weights for the model, they fall back to ``iou_head``; every :class:`QualityEstimate`
says which estimator answered.

An empty mask has predicted Dice 0 (nothing was segmented). :func:`assess_mask` and
:func:`assess_labels` take 2D images or volumes; a volume is judged slice by slice.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from scipy import ndimage
from torch import nn

from .bayes_head import DEFAULT_SAMPLES, BayesHead, grid_fractions, head_for_model, head_inputs
from .embeddings import Embedding, EmbeddingStore, SliceEncoder, embed_slice
from .errors import ActiveSamError, CheckpointError, ImageError, ModelError
from .metrics import dice, iou
from .models import (
    LoadedModel,
    ModelRef,
    companion_path,
    find_companion,
    read_companion,
    save_companion,
    shipped_companion_path,
    user_companion_path,
)
from .predictor import Predictor, shown_head
from .preprocess import IntensityWindow, SliceSource
from .types import Click, Prediction, Progress, PromptSet

CROP_SIZE = 64
"""Side in pixels of the regressor's input crop."""
CROP_MARGIN = 0.25
"""Margin on each side of the mask's box, as a fraction of the box's longer side."""
MIN_CROP = 16
"""Smallest crop side in image pixels (a tiny mask still shows its surroundings)."""
RING_CELLS = 2
"""Width, in embedding-grid cells, of the ring around the mask for ``embedding``."""
SHAPE_FEATURES = 4
"""Shape numbers appended to the pooled embedding (see :func:`embedding_features`)."""
QUALITY_FORMAT = 1
QUALITY_FILE_KIND = "quality"
"""Companion-file kind of a quality regressor: ``NAME.quality.pt``."""
COLUMNS = ("file", "label", "slice", "predicted_dice", "estimator")
"""Columns of the quality CSV, in order."""


class Estimator(StrEnum):
    """Ground-truth-free estimators of a mask's Dice."""

    IOU_HEAD = "iou_head"
    """SAM's IoU head, times the mask's agreement with SAM's answer, as Dice."""
    POSTERIOR = "posterior"
    """Expected Dice against masks sampled from the Bayesian head's posterior."""
    REGRESSOR = "regressor"
    """EvanySeg: a small CNN on the image crop with the mask in the red channel."""
    EMBEDDING = "embedding"
    """A small MLP on SAM's embedding pooled inside and around the mask."""
    ENSEMBLE = "ensemble"
    """The mean of the four above, of those the models can answer with."""


def iou_to_dice(value: float) -> float:
    """Dice = 2·IoU / (1 + IoU) (exact for one pair of masks)."""
    value = float(np.clip(value, 0.0, 1.0))
    return 2 * value / (1 + value)


def dice_to_iou(value: float) -> float:
    """IoU = Dice / (2 − Dice)."""
    value = float(np.clip(value, 0.0, 1.0))
    return value / (2 - value)


# ------------------------------------------------------------------------------ records


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

    @property
    def fell_back(self) -> bool:
        return self.estimator != self.requested


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


# ----------------------------------------------------------------------- model inputs


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(row0, col0, row1, col1)`` of a non-empty boolean mask, ends inclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def overlay_crop(
    image: np.ndarray, mask: np.ndarray, size: int = CROP_SIZE, margin: float = CROP_MARGIN
) -> np.ndarray:
    """The regressor's input: a square crop around the mask with the mask in the red channel.

    The crop is centred on the mask's box, its side the box's longer side plus ``margin``
    of it on each side (at least :data:`MIN_CROP` pixels); pixels beyond the image are 0.
    The red channel becomes 0.5·R + 0.5·mask·255; the crop is resized (antialiased) to
    ``size`` × ``size``.

    Parameters
    ----------
    image : np.ndarray
        uint8 ``(H, W, 3)``.
    mask : np.ndarray
        Boolean ``(H, W)``, not empty.

    Returns
    -------
    np.ndarray
        uint8 ``(3, size, size)``.
    """
    height, width = mask.shape
    row0, col0, row1, col1 = mask_box(mask)
    side = max(row1 - row0 + 1, col1 - col0 + 1)
    side = max(int(np.ceil(side * (1 + 2 * margin))), MIN_CROP)
    top = int(np.floor((row0 + row1 + 1) / 2 - side / 2))
    left = int(np.floor((col0 + col1 + 1) / 2 - side / 2))
    crop = np.zeros((3, side, side), np.float32)
    r0, r1 = max(top, 0), min(top + side, height)
    c0, c1 = max(left, 0), min(left + side, width)
    if r1 > r0 and c1 > c0:
        window = np.moveaxis(image[r0:r1, c0:c1], -1, 0).astype(np.float32)
        window[0] = 0.5 * window[0] + 0.5 * 255.0 * mask[r0:r1, c0:c1]
        crop[:, r0 - top : r1 - top, c0 - left : c1 - left] = window
    resized = F.interpolate(
        torch.from_numpy(crop)[None], (size, size), mode="bilinear", antialias=True
    )[0]
    return resized.round().clamp(0, 255).to(torch.uint8).numpy()


def cell_fractions(
    mask: np.ndarray, embedding: Embedding, img_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The mask on the embedding grid: ``(fraction, on_image)``, float32 ``(g, g)`` each.

    ``fraction`` is the share of each cell the mask covers, ``on_image`` the share of each
    cell that lies on the image (SAM pads the resized image at the bottom and right).
    """
    grid = int(embedding.features.shape[-1])
    fraction, on_image = grid_fractions(mask, embedding.input_size, img_size, grid)
    return fraction, on_image


def embedding_features(embedding: Embedding, mask: np.ndarray, img_size: int) -> np.ndarray:
    """Features of the ``embedding`` estimator for one mask.

    The mask becomes area fractions on the embedding grid; the embedding is averaged inside
    (weighted by those fractions) and in a ring :data:`RING_CELLS` cells wide around it
    (zeros when the mask leaves no ring, e.g. the whole image). Four shape numbers follow:
    log(1 + area in cells), area / image area, ring / (area + ring), and area / cells
    touched (how fully the mask fills the cells it touches).

    Parameters
    ----------
    embedding : Embedding
        ``(C, g, g)`` features of the slice.
    mask : np.ndarray
        Boolean ``(H, W)``, not empty.
    img_size : int
        The model's input side (``LoadedModel.architecture.img_size``).

    Returns
    -------
    np.ndarray
        float32 ``(2C + 4,)``.
    """
    fraction, on_image = cell_fractions(mask, embedding, img_size)
    features = embedding.features.float().reshape(embedding.features.shape[0], -1).numpy()
    inside = fraction.ravel()
    width = 2 * RING_CELLS + 1
    dilated = F.max_pool2d(torch.from_numpy(fraction)[None, None], width, 1, RING_CELLS)
    ring = (np.clip(dilated[0, 0].numpy() - fraction, 0, None) * on_image).ravel()
    area, ring_area = float(inside.sum()), float(ring.sum())
    mean_inside = features @ inside / max(area, 1e-6)
    mean_ring = features @ ring / ring_area if ring_area > 1e-6 else np.zeros_like(mean_inside)
    touched = max(int(np.count_nonzero(inside > 1e-3)), 1)
    shape = [
        np.log1p(area),
        area / max(float(on_image.sum()), 1e-6),
        ring_area / max(area + ring_area, 1e-6),
        area / touched,
    ]
    return np.concatenate([mean_inside, mean_ring, shape]).astype(np.float32)


# --------------------------------------------------------------------------- networks


class CropQualityNet(nn.Module):
    """EvanySeg's regressor: torchvision's MobileNetV3-Small (half width, one output).

    ``forward`` takes uint8 or float crops ``(B, 3, S, S)`` in 0-255 and returns the
    predicted Dice ``(B,)`` in [0, 1].
    """

    def __init__(self, size: int = CROP_SIZE):
        super().__init__()
        self.size = size
        self.backbone = torchvision.models.mobilenet_v3_small(num_classes=1, width_mult=0.5)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = (crops.float() / 255.0 - 0.5) / 0.25
        return torch.sigmoid(self.backbone(x)[:, 0])


class FeatureQualityNet(nn.Module):
    """The fast regressor: standardised features into torchvision's ``MLP`` (64, 32, 1).

    ``forward`` takes ``(B, F)`` features from :func:`embedding_features` and returns the
    predicted Dice ``(B,)`` in [0, 1].
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.register_buffer("centre", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        self.mlp = torchvision.ops.MLP(in_features, [64, 32, 1], activation_layer=nn.ReLU)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.float() - self.centre) / self.scale
        return torch.sigmoid(self.mlp(x)[:, 0])


@dataclass(eq=False)
class QualityRegressor:
    """The two learned estimators of one model, saved together.

    Attributes
    ----------
    crop_net : CropQualityNet
    feature_net : FeatureQualityNet
    model_id : str
        :attr:`LoadedModel.model_id` of the model the training data came from.
    info : dict
        How it was trained: examples, steps, validation errors and correlations, wall time.
    """

    crop_net: CropQualityNet
    feature_net: FeatureQualityNet
    model_id: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.crop_net.eval()
        self.feature_net.eval()

    @property
    def crop_size(self) -> int:
        return self.crop_net.size

    def check_model(self, model: LoadedModel) -> None:
        """Raise :class:`ModelError` unless the regressor was trained for ``model``."""
        if model.model_id != self.model_id:
            raise ModelError(
                f"This quality regressor was trained for model {self.model_id}, not "
                f"{model.model_id}: train one for this model (`napari-active-sam "
                "train-quality`) or choose the model it was made for."
            )

    @torch.inference_mode()
    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """float32 ``(N,)`` predicted Dice of uint8 ``(N, 3, S, S)`` crops."""
        return self.crop_net(torch.as_tensor(np.asarray(crops))).numpy()

    @torch.inference_mode()
    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """float32 ``(N,)`` predicted Dice of ``(N, F)`` embedding features."""
        return self.feature_net(torch.as_tensor(np.asarray(features, np.float32))).numpy()

    # ----------------------------------------------------------------------- files

    def save(self, path: Path) -> Path:
        """Write the weights (float16, to keep the file small) with ``torch.save``."""

        def compact(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}

        payload = {
            "format": QUALITY_FORMAT,
            "crop_size": self.crop_size,
            "in_features": int(self.feature_net.centre.numel()),
            "crop_net": compact(self.crop_net.state_dict()),
            "feature_net": compact(self.feature_net.state_dict()),
            "model_id": self.model_id,
            "info": self.info,
        }
        return save_companion(path, QUALITY_FILE_KIND, payload)

    @classmethod
    def load(cls, path: Path, model: LoadedModel | None = None) -> QualityRegressor:
        """Read a regressor saved by :meth:`save` (weights only); check it fits ``model``.

        Raises
        ------
        CheckpointError
            No file, or not a quality regressor file.
        ModelError
            A regressor trained for another model than ``model``.
        """
        remedy = "train one with `napari-active-sam train-quality`"
        payload = read_companion(path, QUALITY_FILE_KIND, "quality regressor", remedy)

        def full(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

        try:
            crop_net = CropQualityNet(int(payload["crop_size"]))
            feature_net = FeatureQualityNet(int(payload["in_features"]))
            crop_net.load_state_dict(full(payload["crop_net"]))
            feature_net.load_state_dict(full(payload["feature_net"]))
            info = dict(payload["info"])
            regressor = cls(crop_net, feature_net, str(payload["model_id"]), info)
        except (KeyError, AttributeError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{path} is damaged ({error}): {remedy}.") from None
        if model is not None:
            regressor.check_model(model)
        return regressor


def quality_path(checkpoint: Path) -> Path:
    """Where the regressor of a model checkpoint lives: next to it, ``NAME.quality.pt``."""
    return companion_path(checkpoint, QUALITY_FILE_KIND)


def user_quality_path(model_id: str) -> Path:
    """Where a regressor the user trained is kept (the model cache)."""
    return user_companion_path(model_id, QUALITY_FILE_KIND)


def shipped_quality_path(ref: ModelRef) -> Path:
    """The regressor that comes with a model (see :func:`~.models.shipped_companion_path`)."""
    return shipped_companion_path(ref, QUALITY_FILE_KIND)


def regressor_for_model(
    model: LoadedModel, checkpoint: Path | None = None
) -> QualityRegressor | None:
    """The regressor to use with a loaded model: the user's own if trained, else the one
    next to ``checkpoint`` or shipped with a registered model; None if it has none.

    Raises
    ------
    ModelError
        A regressor file found for the model but trained for other weights.
    """
    path = find_companion(model, QUALITY_FILE_KIND, checkpoint)
    return QualityRegressor.load(path, model) if path is not None else None


# ------------------------------------------------------------------------- estimators


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

    Raises
    ------
    ModelError
        A head or regressor made for another model.
    """

    model: LoadedModel
    bayes_head: BayesHead | None = None
    regressor: QualityRegressor | None = None
    samples: int = DEFAULT_SAMPLES

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
        bayes_head = BayesHead.load(head, model) if head else head_for_model(model, checkpoint)
        learned = (
            QualityRegressor.load(regressor, model)
            if regressor
            else regressor_for_model(model, checkpoint)
        )
        return cls(model, bayes_head, learned)

    def embedding_of(self, sample: QualitySample) -> Embedding:
        """The sample's embedding, encoded from its image when it has none."""
        if sample.embedding is not None:
            return sample.embedding
        (embedding,) = SliceEncoder(self.model).encode([sample.image], ["quality-sample"])
        return embedding


def prompts_for_mask(mask: np.ndarray) -> PromptSet:
    """A box around ``mask`` (pixel edges) and a positive click at its deepest point.

    The same prompt :func:`~napari_active_sam.core.volume.prompts_from_mask` gives a
    neighbouring slice.
    """
    from .volume import prompts_from_mask

    return prompts_from_mask(np.asarray(mask, bool))


def sam_answer(sample: QualitySample, models: QualityModels) -> tuple[Prediction, PromptSet, int]:
    """SAM's answer for the sample's object: ``(prediction, prompts, head)``.

    The sample's own prediction when given; else SAM prompted with the sample's prompts, or
    with :func:`prompts_for_mask`. ``head`` is the sample's head, else the head a user sees
    for those prompts (the single-mask head for a box).
    """
    if sample.prediction is not None:
        prompts = sample.prompts or PromptSet()
        head = sample.head if sample.head is not None else shown_head(sample.prediction, prompts)
        return sample.prediction, prompts, head
    if sample.prompts is not None and not sample.prompts.is_empty:
        prompts = sample.prompts
    else:
        prompts = prompts_for_mask(sample.mask)
    prediction = models.predictor.predict(models.embedding_of(sample), prompts)
    head = sample.head if sample.head is not None else shown_head(prediction, prompts)
    return prediction, prompts, head


def _iou_head(sample: QualitySample, models: QualityModels, rng: np.random.Generator) -> float:
    prediction, _, head = sam_answer(sample, models)
    predicted_iou = float(np.clip(prediction.iou[head], 0.0, 1.0))
    agreement = iou(sample.mask, prediction.mask(head))
    return iou_to_dice(predicted_iou * agreement)


def _posterior(sample: QualitySample, models: QualityModels, rng: np.random.Generator) -> float:
    assert models.bayes_head is not None
    model = models.model
    embedding = models.embedding_of(sample)
    prediction, prompts, head = sam_answer(sample, models)
    inputs = head_inputs(prediction.low_res_logits[head], prompts, embedding, model)
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    sampled = models.bayes_head.sample(inputs, models.samples, generator)
    mask = torch.as_tensor(sample.mask)
    area = int(mask.sum())
    scores = []
    with torch.inference_mode():
        for chunk in torch.split(sampled, 8):
            maps = model.sam.postprocess_masks(
                chunk[None].float(), embedding.input_size, embedding.original_size
            )[0]
            masks = maps > 0.5
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


def _ensemble(sample: QualitySample, models: QualityModels, rng: np.random.Generator) -> float:
    # Encode the slice and ask SAM once; the members then read both from the sample.
    shared = replace(sample, embedding=models.embedding_of(sample))
    prediction, prompts, head = sam_answer(shared, models)
    shared = replace(shared, prompts=prompts, prediction=prediction, head=head)
    members = ensemble_members(models)
    return float(np.mean([ESTIMATORS[e].estimate(shared, models, rng) for e in members]))


def _needs_head_or_regressor(models: QualityModels) -> str | None:
    if len(ensemble_members(models)) > 1:
        return None
    return (
        f"neither a Bayesian head nor a quality regressor for {models.model.name}, so SAM's "
        "IoU head answered alone (fit them with `napari-active-sam train-head` and "
        "`train-quality`)"
    )


def _needs_head(models: QualityModels) -> str | None:
    if models.bayes_head is not None:
        return None
    return (
        f"no Bayesian head for {models.model.name}, so SAM's IoU head answered (fit one with "
        "`napari-active-sam train-head`)"
    )


def _needs_regressor(models: QualityModels) -> str | None:
    if models.regressor is not None:
        return None
    return (
        f"no quality regressor for {models.model.name}, so SAM's IoU head answered (train "
        "one with `napari-active-sam train-quality`)"
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
    try:
        return Estimator(estimator)
    except ValueError:
        raise ActiveSamError(
            f"Unknown quality estimator {estimator!r}: use {', '.join(e.value for e in Estimator)}."
        ) from None


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
        One 2D slice and mask (see :func:`assess_mask` for volumes).
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
    value = ESTIMATORS[answered].estimate(sample, models, rng)
    return QualityEstimate(float(np.clip(value, 0.0, 1.0)), answered, requested, note)


# ----------------------------------------------------------------- images and volumes


def _spatial_shape(source: SliceSource) -> tuple[int, ...]:
    shape = np.shape(source.data)
    return shape[:-1] if source.rgb else shape


def assess_labels(
    estimator: str,
    source: SliceSource,
    labels: np.ndarray,
    models: QualityModels,
    store: EmbeddingStore | None = None,
) -> Generator[Progress, None, list[ObjectQuality]]:
    """Predicted Dice of every object of an instance-label image, slice by slice.

    Parameters
    ----------
    estimator : str
        A key of :data:`ESTIMATORS`.
    source : SliceSource
        The image: ``(H, W)``, or ``(Z, H, W)`` (any leading axes) for a volume.
    labels : np.ndarray
        Integer ``source``-shaped instance labels (0 = background); in a volume each object
        is judged on every slice it appears on.
    models : QualityModels
    store : EmbeddingStore, optional
        Embeddings to reuse (e.g. the GUI's); an in-memory store otherwise.

    Yields
    ------
    Progress
        After each object on each slice.

    Returns
    -------
    list of ObjectQuality
        Ordered by label, then slice.

    Raises
    ------
    ImageError
        Labels whose shape differs from the image's, or that are not integers.
    """
    requested = parse_estimator(estimator)
    labels = np.asarray(labels)
    expected = _spatial_shape(source)
    if labels.shape != expected:
        raise ImageError(
            f"The mask has shape {labels.shape} but the image has {expected}: masks must "
            "match their image pixel for pixel."
        )
    if labels.dtype.kind not in "biuf":
        raise ImageError(f"The mask has dtype {labels.dtype}: give integer instance labels.")
    if labels.dtype.kind == "f" and not (
        np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))
    ):
        raise ImageError(
            "The mask holds non-integer values: give instance labels as integers "
            "(0 = background, 1, 2, ... = objects)."
        )
    labels = labels.astype(np.int64)
    answered, _ = resolve_estimator(requested, models)
    needs_embedding = ESTIMATORS[answered].needs_embedding
    store = store or EmbeddingStore(models.model.model_id)
    limits = source.limits()
    leading = labels.shape[:-2]
    flat = labels.reshape(-1, *labels.shape[-2:])
    present = [np.unique(plane[plane > 0]) for plane in flat]
    total = int(sum(len(p) for p in present))
    results: list[ObjectQuality] = []
    for position, objects in enumerate(present):
        if not len(objects):
            continue
        index = tuple(int(i) for i in np.unravel_index(position, leading)) if leading else ()
        image = source.sam_slice(index, limits)
        embedding = (
            embed_slice(models.model, source, store, index, limits) if needs_embedding else None
        )
        for label in objects:
            sample = QualitySample(image, flat[position] == label, embedding)
            rng = np.random.default_rng([int(label), position])
            estimate = estimate_quality(requested, sample, models, rng)
            results.append(ObjectQuality(int(label), index, estimate))
            yield Progress(len(results), total, f"object {label} on slice {index or 'image'}")
    results.sort(key=lambda r: (r.label, r.index))
    return results


def assess_mask(
    estimator: str,
    image: np.ndarray | SliceSource,
    mask: np.ndarray,
    models: QualityModels,
    window: IntensityWindow | None = None,
    rgb: bool = False,
) -> list[ObjectQuality]:
    """Predicted Dice of one object's mask on an image or a volume (slice by slice).

    Parameters
    ----------
    estimator : str
        A key of :data:`ESTIMATORS`.
    image : np.ndarray or SliceSource
        ``(H, W)``, ``(H, W, 3)`` with ``rgb``, or ``(Z, H, W)``.
    mask : np.ndarray
        Boolean (nonzero = object) with the image's spatial shape.
    window : IntensityWindow, optional
        For an array image (default: percentiles).

    Returns
    -------
    list of ObjectQuality
        Label 1; one per slice the mask is on (``index`` ``()`` for 2D). A mask empty
        everywhere gives one estimate of 0 with ``index`` ``()``.

    Raises
    ------
    ImageError
        A mask whose shape differs from the image's.
    """
    if isinstance(image, SliceSource):
        source = image
    else:
        source = SliceSource(np.asarray(image), window or IntensityWindow(), rgb=rgb)
    mask = np.asarray(mask)
    if mask.shape != _spatial_shape(source):
        raise ImageError(
            f"The mask has shape {mask.shape} but the image has {_spatial_shape(source)}: "
            "masks must match their image pixel for pixel."
        )
    labels = (mask != 0).astype(np.int32)
    if not labels.any():
        requested = parse_estimator(estimator)
        empty = QualityEstimate(0.0, requested, requested, "empty mask: nothing segmented")
        return [ObjectQuality(1, (), empty)]
    steps = assess_labels(estimator, source, labels, models)
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


# ---------------------------------------------------------------------------- folders


def pair_folders(images: Path, masks: Path) -> tuple[list[Any], list[dict[str, str]]]:
    """Match ``images/*`` with ``masks/*`` by file stem.

    Returns
    -------
    pairs, skipped
        :class:`~napari_active_sam.core.evaluate.ImagePair` (sorted by stem; paths built
        from the folders as given), and ``{"file", "reason"}`` for files without a partner.

    Raises
    ------
    ActiveSamError
        A folder that does not exist.
    """
    from .evaluate import ImagePair
    from .files import IMAGE_SUFFIXES, has_suffix, stem

    for folder in (images, masks):
        if not Path(folder).is_dir():
            raise ActiveSamError(f"{folder} is not a folder: give a folder of image files.")

    def by_stem(folder: Path) -> dict[str, Path]:
        files = sorted(p for p in Path(folder).iterdir() if has_suffix(p, IMAGE_SUFFIXES))
        return {stem(p): p for p in files}

    found_images, found_masks = by_stem(images), by_stem(masks)
    common = sorted(found_images.keys() & found_masks.keys())
    pairs = [ImagePair(s, found_images[s], found_masks[s]) for s in common]
    skipped = [
        {"file": str(found_masks[s]), "reason": "mask with no image of the same name"}
        for s in sorted(found_masks.keys() - found_images.keys())
    ] + [
        {"file": str(found_images[s]), "reason": "image with no mask of the same name"}
        for s in sorted(found_images.keys() - found_masks.keys())
    ]
    return pairs, skipped


def quality_rows(file: str, results: Iterable[ObjectQuality]) -> list[dict[str, Any]]:
    """CSV rows (:data:`COLUMNS`) for one file's results; ``slice`` is "" for 2D, the
    slice index for a volume (indices joined by "-" for more leading axes)."""
    return [
        {
            "file": file,
            "label": r.label,
            "slice": "-".join(str(i) for i in r.index),
            "predicted_dice": f"{r.estimate.predicted_dice:.4f}",
            "estimator": r.estimate.estimator.value,
        }
        for r in results
    ]


def write_quality_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write rows with the columns :data:`COLUMNS`, worst predicted Dice first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda r: float(r["predicted_dice"]))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(ordered)
    return path


# ----------------------------------------------------------------------- training data


@dataclass(frozen=True)
class QualityExample:
    """One candidate mask with its true Dice, as both learned estimators see it.

    Attributes
    ----------
    crop : np.ndarray
        uint8 ``(3, S, S)`` from :func:`overlay_crop`.
    features : np.ndarray
        float32 ``(2C + 4,)`` from :func:`embedding_features`.
    dice : float
        True Dice against the ground truth.
    origin : str
        Where the mask came from: ``click-head0`` ... ``box-head3``, or a perturbation of
        the ground truth (``truth``, ``shifted``, ``eroded``, ``dilated``, ``cut``,
        ``whole``).
    """

    crop: np.ndarray = field(repr=False)
    features: np.ndarray = field(repr=False)
    dice: float
    origin: str


PERTURBATIONS = ("truth", "shifted", "eroded", "dilated", "cut", "whole")
"""Ways :func:`perturbed_mask` changes a ground-truth mask."""


def _shifted(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved down by ``dy`` and right by ``dx`` pixels; what leaves the image is
    lost."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    if abs(dy) < height and abs(dx) < width:
        out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = mask[
            max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
        ]
    return out


def perturbed_mask(gt: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A plausible bad (or perfect) segmentation of ``gt``, as other tools make them.

    ``truth``: ``gt`` itself; ``shifted``: moved by 0.3-1.2 object diameters; ``eroded`` /
    ``dilated``: by 10-50 % of the object's radius; ``cut``: a random half-plane through the
    object removed; ``whole``: every pixel.

    Parameters
    ----------
    gt : np.ndarray
        Boolean ``(H, W)``, not empty.
    kind : str
        One of :data:`PERTURBATIONS`.
    """
    gt = np.asarray(gt, bool)
    radius = max(np.sqrt(gt.sum() / np.pi), 1.0)
    if kind == "truth":
        return gt.copy()
    if kind == "whole":
        return np.ones_like(gt)
    if kind == "shifted":
        angle = rng.uniform(0, 2 * np.pi)
        distance = rng.uniform(0.3, 1.2) * 2 * radius
        dy, dx = int(round(distance * np.sin(angle))), int(round(distance * np.cos(angle)))
        return _shifted(gt, dy, dx)
    if kind in ("eroded", "dilated"):
        steps = max(1, int(round(rng.uniform(0.1, 0.5) * radius)))
        grow = ndimage.binary_dilation if kind == "dilated" else ndimage.binary_erosion
        return grow(gt, iterations=steps)
    if kind == "cut":
        rows, cols = np.nonzero(gt)
        angle = rng.uniform(0, 2 * np.pi)
        i = rng.integers(len(rows))
        yy, xx = np.mgrid[: gt.shape[0], : gt.shape[1]]
        side = (yy - rows[i]) * np.sin(angle) + (xx - cols[i]) * np.cos(angle)
        return gt & (side < 0)
    raise ActiveSamError(f"Unknown perturbation {kind!r}: use {', '.join(PERTURBATIONS)}.")


def candidate_masks(
    predictor: Predictor,
    embedding: Embedding,
    gt: np.ndarray,
    rng: np.random.Generator,
    clicks: int = 3,
    perturbations: int = 2,
) -> list[tuple[str, np.ndarray]]:
    """Masks of one object from simulated prompting, good and bad, named by origin.

    A click session as in :func:`~napari_active_sam.core.bayes_head.simulate_examples`
    (first click inside, later ones into the error of the shown mask, logits fed back)
    gives all four heads' masks after every click; a box-and-click prompt from the ground
    truth gives four more; ``perturbations`` random :func:`perturbed_mask` results follow.
    Empty masks are left out.
    """
    from .training import click_inside, error_click

    gt = np.asarray(gt, bool)
    candidates: list[tuple[str, np.ndarray]] = []
    if not gt.any():
        return candidates
    clicked = np.zeros_like(gt)
    row, col = click_inside(gt, rng)
    prompts = PromptSet((Click(float(col), float(row), True),))
    clicked[row, col] = True
    previous = None
    for step in range(clicks):
        prediction = predictor.predict(embedding, prompts, previous)
        candidates += [(f"click-head{h}", prediction.mask(h)) for h in range(4)]
        if step == clicks - 1:
            break
        head = shown_head(prediction, prompts)
        shown = prediction.mask(head)
        row, col, positive = error_click(gt, shown, clicked, rng)
        clicked[row, col] = True
        prompts = prompts.with_click(Click(float(col), float(row), positive))
        previous = prediction.low_res_logits[head]
    boxed = predictor.predict(embedding, prompts_for_mask(gt))
    candidates += [(f"box-head{h}", boxed.mask(h)) for h in range(4)]
    weights = np.array([1.0, 2.0, 2.0, 2.0, 2.0, 0.5])
    for kind in rng.choice(PERTURBATIONS, perturbations, replace=False, p=weights / weights.sum()):
        candidates.append((str(kind), perturbed_mask(gt, str(kind), rng)))
    return [(origin, mask) for origin, mask in candidates if mask.any()]


def quality_examples(
    image: np.ndarray,
    embedding: Embedding,
    gt: np.ndarray,
    candidates: Iterable[tuple[str, np.ndarray]],
    model: LoadedModel,
    crop_size: int = CROP_SIZE,
) -> list[QualityExample]:
    """Training examples of candidate masks of one object on one slice.

    Parameters
    ----------
    image : np.ndarray
        uint8 ``(H, W, 3)`` SAM input.
    embedding : Embedding
        Of ``image``.
    gt : np.ndarray
        Boolean ``(H, W)`` ground truth.
    candidates : iterable of (str, np.ndarray)
        ``(origin, boolean (H, W) mask)``, e.g. from :func:`candidate_masks`.
    """
    img_size = model.architecture.img_size
    return [
        QualityExample(
            overlay_crop(image, mask, crop_size),
            embedding_features(embedding, mask, img_size),
            dice(gt, mask),
            origin,
        )
        for origin, mask in candidates
        if mask.any()
    ]


def generated_examples(
    model: LoadedModel,
    images: int,
    seed: int,
    kind: str = "mixed",
    clicks: int = 3,
    objects_per_image: int = 6,
    perturbations: int = 2,
) -> Generator[Progress, None, list[QualityExample]]:
    """Quality examples from simulated prompting on freshly generated scenes.

    Parameters
    ----------
    model : LoadedModel
    images : int
        Scenes to generate (kinds cycle through ct, ultrasound, nuclei, mixed when ``kind``
        is ``"all"``).
    seed : int
        Seeds the scenes and the clicks.
    kind : str
        A :class:`~napari_active_sam.core.synthetic.SceneKind`, or ``"all"``.

    Yields
    ------
    Progress
        After each scene.
    """
    from .preprocess import to_sam_rgb
    from .synthetic import SceneKind, make_scene

    rng = np.random.default_rng(seed)
    kinds = list(SceneKind) if kind == "all" else [SceneKind(kind)]
    encoder, predictor = SliceEncoder(model), Predictor(model)
    size = model.architecture.img_size
    examples: list[QualityExample] = []
    for done in range(1, images + 1):
        scene = make_scene(kinds[(done - 1) % len(kinds)], rng, size)
        rgb = to_sam_rgb(scene.image, scene.window.limits(scene.image))
        (embedding,) = encoder.encode([rgb], [f"quality-{seed}-{done}"])
        labels = np.unique(scene.labels[scene.labels > 0])
        for label in rng.permutation(labels)[:objects_per_image]:
            gt = scene.object_mask(int(label))
            found = candidate_masks(predictor, embedding, gt, rng, clicks, perturbations)
            examples += quality_examples(rgb, embedding, gt, found, model)
        yield Progress(done, images, f"simulating prompts on generated image {done}/{images}")
    return examples


def examples_from_objects(
    model: LoadedModel,
    objects: Iterable[tuple[np.ndarray, Embedding, np.ndarray]],
    seed: int,
    clicks: int = 3,
    perturbations: int = 2,
) -> Generator[Progress, None, list[QualityExample]]:
    """Quality examples from simulated prompting on labelled objects; yield progress.

    Parameters
    ----------
    objects : iterable of (np.ndarray, Embedding, np.ndarray)
        ``(SAM input uint8 (H, W, 3), its embedding, boolean (H, W) object mask)``.
    """
    rng = np.random.default_rng(seed)
    predictor = Predictor(model)
    examples: list[QualityExample] = []
    for done, (image, embedding, gt) in enumerate(objects, 1):
        found = candidate_masks(predictor, embedding, gt, rng, clicks, perturbations)
        examples += quality_examples(image, embedding, gt, found, model)
        yield Progress(done, 0, f"simulating prompts on object {done}")
    return examples


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class QualityConfig:
    """Hyper-parameters of :func:`fit_quality`."""

    crop_steps: int = 2000
    feature_steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.1
    seed: int = 0


def _fit(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    config: QualityConfig,
    generator: torch.Generator,
    name: str,
    augment: bool,
    done: int,
    total: int,
) -> Generator[Progress, None, list[float]]:
    """MSE training of one regressor on ``(inputs, targets)``; cosine learning rate."""
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    net.train()
    losses: list[float] = []
    for step in range(steps):
        batch = torch.randint(len(targets), (config.batch_size,), generator=generator)
        x = inputs[batch]
        if augment:  # flips and transposes keep a mask's Dice
            if torch.rand(1, generator=generator) < 0.5:
                x = x.flip(-1)
            if torch.rand(1, generator=generator) < 0.5:
                x = x.flip(-2)
            if torch.rand(1, generator=generator) < 0.5:
                x = x.transpose(-1, -2)
        loss = F.mse_loss(net(x), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if (step + 1) % 25 == 0 or step + 1 == steps:
            yield Progress(
                done + step + 1, total, f"training the {name}: MSE {np.mean(losses[-25:]):.4f}"
            )
    net.eval()
    return losses


def _scores(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Validation MSE and Pearson correlation of ``net``."""
    from scipy import stats

    if len(targets) < 3:
        return {}
    with torch.inference_mode():
        predicted = torch.cat([net(chunk) for chunk in torch.split(inputs, 256)]).numpy()
    predicted, truth = predicted.astype(np.float64), targets.numpy().astype(np.float64)
    with warnings.catch_warnings():  # a barely trained net may predict a near-constant
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        pearson = stats.pearsonr(predicted, truth)[0] if np.std(predicted) > 0 else 0.0
    return {"mse": float(np.mean((predicted - truth) ** 2)), "pearson": float(pearson)}


def fit_quality(
    examples: Sequence[QualityExample],
    model: LoadedModel,
    config: QualityConfig | None = None,
) -> Generator[Progress, None, QualityRegressor]:
    """Train both learned estimators with MSE on true Dice; yield progress.

    A random ``validation_fraction`` of the examples is held out and scored (MSE, Pearson)
    into ``info``.

    Parameters
    ----------
    examples : sequence of QualityExample
        From :func:`generated_examples` or :func:`quality_examples`.
    model : LoadedModel
        The model the examples were simulated with.
    config : QualityConfig, optional

    Raises
    ------
    ActiveSamError
        No examples.
    """
    config = config or QualityConfig()
    if len(examples) == 0:
        raise ActiveSamError("No candidate masks to learn from: simulate some first.")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(examples), generator=generator)
    held = int(len(examples) * config.validation_fraction) if len(examples) >= 20 else 0
    train, validation = order[held:], order[:held]
    crops = torch.as_tensor(np.stack([e.crop for e in examples]))
    features = torch.as_tensor(np.stack([e.features for e in examples]))
    targets = torch.as_tensor(np.array([e.dice for e in examples], np.float32))
    total = config.crop_steps + config.feature_steps

    crop_net = CropQualityNet(int(crops.shape[-1]))
    losses_crop = yield from _fit(
        crop_net, crops[train], targets[train], config.crop_steps, config, generator,
        "crop regressor", augment=True, done=0, total=total,
    )  # fmt: skip
    feature_net = FeatureQualityNet(int(features.shape[1]))
    with torch.no_grad():
        feature_net.centre.copy_(features[train].mean(dim=0))
        feature_net.scale.copy_(features[train].std(dim=0).clamp(min=1e-4))
    losses_features = yield from _fit(
        feature_net, features[train], targets[train], config.feature_steps, config, generator,
        "embedding regressor", augment=False, done=config.crop_steps, total=total,
    )  # fmt: skip
    info = {
        **asdict(config),
        "examples": len(examples),
        "validation_examples": int(held),
        "dice_mean": float(targets.mean()),
        "dice_std": float(targets.std()) if len(targets) > 1 else 0.0,
        "crop_train_mse": float(np.mean(losses_crop[-50:])) if losses_crop else None,
        "feature_train_mse": float(np.mean(losses_features[-50:])) if losses_features else None,
        "crop_validation": _scores(crop_net, crops[validation], targets[validation]),
        "feature_validation": _scores(feature_net, features[validation], targets[validation]),
        "wall_time_s": time.perf_counter() - started,
        "torch_version": str(torch.__version__),
    }
    yield Progress(total, total, "quality regressors ready")
    return QualityRegressor(crop_net, feature_net, model.model_id, info)


# --------------------------------------------------------------------------- evaluation


def _correlations(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float | int | None]:
    from scipy import stats

    predicted, truth = np.asarray(predicted, float), np.asarray(truth, float)
    constant = len(truth) < 3 or np.std(predicted) == 0 or np.std(truth) == 0
    return {
        "objects": int(len(truth)),
        "pearson": None if constant else round(float(stats.pearsonr(predicted, truth)[0]), 4),
        "spearman": None if constant else round(float(stats.spearmanr(predicted, truth)[0]), 4),
        "mae": round(float(np.mean(np.abs(predicted - truth))), 4) if len(truth) else None,
    }


def evaluate_estimators(
    models: QualityModels,
    images: int = 30,
    seed: int = 1,
    kind: str = "all",
    clicks: int = 3,
    objects_per_image: int = 6,
    perturbations: int = 3,
    estimators: Sequence[str] = tuple(Estimator),
) -> Generator[Progress, None, dict[str, Any]]:
    """Predicted against true Dice on held-out generated scenes, for each estimator.

    Two settings: ``sam_outputs`` judges the masks of SAM's four heads after each click of
    a simulated session, knowing the prompts and SAM's answer (the interactive case);
    ``masks_only`` judges those masks and perturbed ground truth (:func:`perturbed_mask`)
    from the mask alone, as the ``quality`` command does for another tool's masks. For
    each, Pearson and Spearman correlation and mean absolute error. ``selection`` is the
    mean true Dice when the best of SAM's three multimask masks after each click is
    chosen by each estimator, by SAM's IoU head, and by an oracle, and each estimator's
    gain over SAM's choice.

    Parameters
    ----------
    models : QualityModels
    images, seed, kind
        Held-out scenes (see :func:`generated_examples`; use a seed not used in training).
    clicks : int
        Clicks per simulated session.
    estimators : sequence of str
        Keys of :data:`ESTIMATORS`; those whose network is missing are skipped.

    Returns
    -------
    dict
        ``{"summary": {...}, "records": [...]}``; a record per judged mask with its
        ``setting``, ``origin``, ``true_dice`` and ``predicted`` per estimator.
    """
    from .preprocess import to_sam_rgb
    from .synthetic import SceneKind, make_scene
    from .training import click_inside, error_click

    names = [parse_estimator(e) for e in estimators]
    names = [e for e in names if ESTIMATORS[e].missing(models) is None]
    if not names:
        raise ActiveSamError("None of the estimators can answer with these models.")
    model, predictor = models.model, models.predictor
    rng = np.random.default_rng(seed)
    kinds = list(SceneKind) if kind == "all" else [SceneKind(kind)]
    encoder = SliceEncoder(model)
    records: list[dict[str, Any]] = []
    selections: list[dict[str, float]] = []

    def judge(sample: QualitySample, chosen: Sequence[Estimator]) -> dict[str, float]:
        return {
            e.value: estimate_quality(e, sample, models, np.random.default_rng(0)).predicted_dice
            for e in chosen
        }

    prompted = (Estimator.IOU_HEAD, Estimator.POSTERIOR, Estimator.ENSEMBLE)
    mask_only = [e for e in names if e in prompted]
    for done in range(1, images + 1):
        scene = make_scene(kinds[(done - 1) % len(kinds)], rng, model.architecture.img_size)
        rgb = to_sam_rgb(scene.image, scene.window.limits(scene.image))
        (embedding,) = encoder.encode([rgb], [f"quality-eval-{seed}-{done}"])
        labels = np.unique(scene.labels[scene.labels > 0])
        for label in rng.permutation(labels)[:objects_per_image]:
            gt = scene.object_mask(int(label))
            where = {"image": done, "kind": scene.kind.value, "label": int(label)}
            clicked = np.zeros_like(gt)
            row, col = click_inside(gt, rng)
            prompts = PromptSet((Click(float(col), float(row), True),))
            clicked[row, col] = True
            previous = None
            for step in range(1, clicks + 1):
                prediction = predictor.predict(embedding, prompts, previous)
                truths, predicted = [], []
                for head in range(4):
                    mask = prediction.mask(head)
                    truth = dice(gt, mask)
                    sample = QualitySample(rgb, mask, embedding, prompts, prediction, head)
                    own = judge(sample, names)
                    records.append({**where, "step": step, "setting": "sam_outputs",
                                    "origin": f"head{head}", "true_dice": truth,
                                    "predicted": own})  # fmt: skip
                    if mask.any():
                        external = QualitySample(rgb, mask, embedding)
                        alone = {**own, **judge(external, mask_only)}
                        records.append({**where, "step": step, "setting": "masks_only",
                                        "origin": f"head{head}", "true_dice": truth,
                                        "predicted": alone})  # fmt: skip
                    truths.append(truth)
                    predicted.append(own)
                multimask = range(1, 4)
                choice = {"sam_iou_head": truths[prediction.best_multimask_head],
                          "oracle": max(truths[h] for h in multimask)}  # fmt: skip
                for e in names:
                    best = max(multimask, key=lambda h: predicted[h][e.value])
                    choice[e.value] = truths[best]
                selections.append(choice)
                head = shown_head(prediction, prompts)
                shown = prediction.mask(head)
                row, col, positive = error_click(gt, shown, clicked, rng)
                clicked[row, col] = True
                prompts = prompts.with_click(Click(float(col), float(row), positive))
                previous = prediction.low_res_logits[head]
            kinds_left = rng.choice(PERTURBATIONS, perturbations, replace=False)
            for perturbation in kinds_left:
                mask = perturbed_mask(gt, str(perturbation), rng)
                if not mask.any():
                    continue
                sample = QualitySample(rgb, mask, embedding)
                records.append({**where, "step": 0, "setting": "masks_only",
                                "origin": str(perturbation), "true_dice": dice(gt, mask),
                                "predicted": judge(sample, names)})  # fmt: skip
        yield Progress(done, images, f"judged masks on held-out image {done}/{images}")

    summary: dict[str, Any] = {
        "model": model.model_id,
        "images": images,
        "seed": seed,
        "kind": kind,
        "clicks": clicks,
        "estimators": [e.value for e in names],
    }
    for setting in ("sam_outputs", "masks_only"):
        chosen = [r for r in records if r["setting"] == setting]
        truth = np.array([r["true_dice"] for r in chosen])
        summary[setting] = {
            e.value: _correlations(np.array([r["predicted"][e.value] for r in chosen]), truth)
            for e in names
        }
    base = float(np.mean([s["sam_iou_head"] for s in selections])) if selections else 0.0
    summary["selection"] = {
        "choices": len(selections),
        "mean_dice": {
            k: round(float(np.mean([s[k] for s in selections])), 4)
            for k in (selections[0] if selections else {})
        },  # fmt: skip
        "gain_over_sam": {
            e.value: round(float(np.mean([s[e.value] for s in selections])) - base, 4)
            for e in names
        },
    }
    return {"summary": summary, "records": records}


def plot_quality(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Scatter plots of predicted against true Dice: a row per setting, a column per
    estimator (records from :func:`evaluate_estimators`); saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = ["sam_outputs", "masks_only"]
    names = sorted({k for r in records for k in r["predicted"]}, key=list(Estimator).index)
    fig, axes = plt.subplots(
        len(settings), len(names), figsize=(3.2 * len(names), 3.2 * len(settings)), squeeze=False
    )
    for row, setting in enumerate(settings):
        chosen = [r for r in records if r["setting"] == setting]
        truth = np.array([r["true_dice"] for r in chosen])
        for col, name in enumerate(names):
            ax = axes[row, col]
            predicted = np.array([r["predicted"][name] for r in chosen])
            ax.scatter(truth, predicted, s=4, alpha=0.4)
            ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            scores = _correlations(predicted, truth)
            ax.set_title(
                f"{name} ({setting})\nPearson {scores['pearson']}, Spearman {scores['spearman']}",
                fontsize=8,
            )
            ax.set_xlabel("true Dice", fontsize=8)
            ax.set_ylabel("predicted Dice", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
