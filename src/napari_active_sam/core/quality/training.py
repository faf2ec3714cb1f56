"""Training the learned quality estimators on simulated prompting, good and bad masks alike."""

from __future__ import annotations

import time
import warnings
from collections.abc import Generator, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..engine.checkpoints import LoadedModel
from ..engine.predictor import Predictor
from ..engine.store import Embedding
from ..errors import ActiveSamError
from ..metrics import dice
from ..progress import Progress
from ..sim.clicker import prompts_from_mask, random_pixel
from ..sim.episode import episode, sam_recipe
from ..sim.sources import on_generated_scenes
from .features import CROP_SIZE, embedding_features, overlay_crop
from .networks import CropQualityNet, FeatureQualityNet, QualityRegressor


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
        angle = rng.uniform(0, 2 * np.pi)
        row, col = random_pixel(gt, rng)
        yy, xx = np.mgrid[: gt.shape[0], : gt.shape[1]]
        side = (yy - row) * np.sin(angle) + (xx - col) * np.cos(angle)
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

    An episode of SAM's interactive recipe
    (:func:`~napari_active_sam.core.sim.episode.sam_recipe`: first click inside, later ones
    into the error of the shown mask, logits fed back) gives all four heads' masks after
    every click; a box-and-click prompt from the ground
    truth gives four more; ``perturbations`` random :func:`perturbed_mask` results follow.
    Empty masks are left out.
    """
    gt = np.asarray(gt, bool)
    candidates: list[tuple[str, np.ndarray]] = []
    if not gt.any():
        return candidates
    opening, correct = sam_recipe(gt, rng)
    for step in episode(predictor, embedding, opening, correct, clicks):
        candidates += [(f"click-head{h}", step.prediction.mask(h)) for h in range(4)]
    boxed = predictor.predict(embedding, prompts_from_mask(gt))
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
        A :class:`~napari_active_sam.core.enums.SceneKind`, or ``"all"``.

    Yields
    ------
    Progress
        After each scene.
    """
    predictor = Predictor(model)

    def simulate(rgb, embedding, gt, rng):
        found = candidate_masks(predictor, embedding, gt, rng, clicks, perturbations)
        return quality_examples(rgb, embedding, gt, found, model)

    return (
        yield from on_generated_scenes(
            model, images, seed, kind, objects_per_image, simulate, "simulating prompts"
        )
    )


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


MIN_EXAMPLES = 20
"""The fewest candidate masks :func:`fit_quality` learns from (it holds a tenth out)."""


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
        Fewer than :data:`MIN_EXAMPLES` examples, or true Dice that hardly vary.
    """
    config = config or QualityConfig()
    if len(examples) == 0:
        raise ActiveSamError("No candidate masks to learn from: simulate some first.")
    truths = np.array([e.dice for e in examples], np.float64)
    if len(examples) < MIN_EXAMPLES or np.ptp(truths) < 0.05:
        raise ActiveSamError(
            f"{len(examples)} candidate mask{'s' if len(examples) != 1 else ''} with true "
            f"Dice from {truths.min():.2f} to {truths.max():.2f}: a quality regressor needs "
            f"{MIN_EXAMPLES} or more, good and bad, to learn from: give more --images, or "
            "--data with more labelled objects (of more sizes), and fit again; nothing was "
            "fitted or written."
        )
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
