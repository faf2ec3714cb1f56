"""How well each quality estimator ranks masks, on held-out generated scenes."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.scenes import scene_kinds
from ..engine.predictor import shown_head
from ..engine.store import Embedding
from ..engine.zoom import ZoomingPredictor
from ..enums import Estimator
from ..errors import ActiveSamError
from ..metrics import dice
from ..progress import Progress
from ..sim.episode import Step, episode, sam_recipe
from ..sim.sources import encoded_real_images, encoded_scenes
from .choice import JudgingPredictor
from .estimators import (
    ESTIMATORS,
    QualityModels,
    QualitySample,
    can_judge,
    estimate_quality,
    parse_estimator,
)
from .training import PERTURBATIONS, perturbed_mask


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


PROMPTED = (Estimator.IOU_HEAD, Estimator.POSTERIOR, Estimator.ENSEMBLE)
"""Estimators whose answer depends on the prompts (judged again from the mask alone)."""


def _judge(
    sample: QualitySample, models: QualityModels, names: Sequence[Estimator]
) -> dict[str, float]:
    """Each estimator's predicted Dice of one sample, with a fixed seed."""
    return {
        e.value: estimate_quality(e, sample, models, np.random.default_rng(0)).predicted_dice
        for e in names
    }


def _judge_heads(
    step: Step,
    gt: np.ndarray,
    rgb: np.ndarray,
    embedding: Embedding,
    models: QualityModels,
    names: Sequence[Estimator],
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Every head's mask after one step, judged knowing SAM's answer and from the mask
    alone; and the true Dice of the multimask mask each estimator (SAM's IoU head, an
    oracle) would pick. ``shown`` marks the head a user is shown."""
    prediction, prompts = step.prediction, step.prompts
    shown = shown_head(prediction, prompts)
    records, truths, predicted = [], [], []
    for head in range(4):
        mask = prediction.mask(head)
        truth = dice(gt, mask)
        own = _judge(QualitySample(rgb, mask, embedding, prompts, prediction, head), models, names)
        found = {"step": step.iteration, "origin": f"head{head}", "true_dice": truth,
                 "shown": head == shown}  # fmt: skip
        records.append({**found, "setting": "sam_outputs", "predicted": own})
        if mask.any():
            alone = _judge(QualitySample(rgb, mask, embedding), models,
                           [e for e in names if e in PROMPTED])  # fmt: skip
            records.append({**found, "setting": "masks_only", "predicted": {**own, **alone}})
        truths.append(truth)
        predicted.append(own)
    multimask = range(1, 4)
    sams_pick = int(np.argmax(prediction.iou[1:])) + 1  # not the judged pick
    choice = {"sam_iou_head": truths[sams_pick],
              "oracle": max(truths[h] for h in multimask)}  # fmt: skip
    for e in names:
        choice[e.value] = truths[max(multimask, key=lambda h: predicted[h][e.value])]
    return records, choice


def _decoder(models: QualityModels, rgb: np.ndarray) -> JudgingPredictor:
    """What decodes an episode's prompts on one image, as the annotator does: the mask
    shown for a lone click chosen by the quality ensemble
    (:mod:`~napari_active_sam.core.quality.choice`; SAM's IoU head when the models have
    nothing else), and when ``models`` zoom, decoded in zoom windows, a lone click's chosen
    the same way and each widened while the mask shown is cut off by it."""
    if models.zoom:
        return JudgingPredictor(ZoomingPredictor(models.predictor, rgb, (0, 255)), models, rgb)
    return JudgingPredictor(models.predictor, models, rgb)


def evaluate_estimators(
    models: QualityModels,
    images: int = 30,
    seed: int = 1,
    kind: str = "all",
    clicks: int = 3,
    objects_per_image: int = 6,
    perturbations: int = 3,
    estimators: Sequence[str] = tuple(Estimator),
    real: str | None = None,
) -> Generator[Progress, None, dict[str, Any]]:
    """Predicted against true Dice on held-out generated scenes (or, with ``real``, on the
    real images of that split), for each estimator.

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
        Held-out scenes (see
        :func:`~napari_active_sam.core.quality.training.generated_examples`; use a seed not
        used in training).
    clicks : int
        Clicks per simulated session.
    estimators : sequence of str
        Keys of :data:`ESTIMATORS`; those whose network is missing are skipped.
    real : str, optional
        ``validation`` or ``test``: judge masks on the real images of that split
        (:func:`~napari_active_sam.core.sim.sources.encoded_real_images`) instead of
        generated scenes; ``images`` and ``kind`` are then not used.

    Returns
    -------
    dict
        ``{"summary": {...}, "records": [...]}``; a record per judged mask with its
        ``setting``, ``origin``, ``true_dice`` and ``predicted`` per estimator.
    """
    names = [parse_estimator(e) for e in estimators]
    names = [e for e in names if ESTIMATORS[e].missing(models) is None]
    if not names:
        raise ActiveSamError("None of the estimators can answer with these models.")
    model = models.model
    rng = np.random.default_rng(seed)
    if real is not None:
        scenes = list(encoded_real_images(model, real))
        images, kind = len(scenes), f"real-{real}"
    else:
        scenes = encoded_scenes(model, images, rng, scene_kinds(kind), f"quality-eval-{seed}")
    records: list[dict[str, Any]] = []
    selections: list[dict[str, float]] = []
    for done, (scene, rgb, embedding) in enumerate(scenes, 1):
        for label, gt in scene.sample_objects(rng, objects_per_image):
            where = {"image": done, "kind": str(scene.kind), "label": label}
            opening, correct = sam_recipe(gt, rng)
            decoder = _decoder(models, rgb)
            for step in episode(decoder, embedding, opening, correct, clicks):
                judged, choice = _judge_heads(step, gt, rgb, embedding, models, names)
                records += [{**where, **record} for record in judged]
                selections.append(choice)
            for perturbation in rng.choice(PERTURBATIONS, perturbations, replace=False):
                mask = perturbed_mask(gt, str(perturbation), rng)
                if not mask.any():
                    continue
                sample = QualitySample(rgb, mask, embedding)
                records.append({**where, "step": 0, "setting": "masks_only",
                                "origin": str(perturbation), "true_dice": dice(gt, mask),
                                "predicted": _judge(sample, models, names)})  # fmt: skip
        yield Progress(done, images, f"judged masks on held-out image {done}/{images}")

    summary: dict[str, Any] = {
        "model": model.model_id,
        "images": images,
        "seed": seed,
        "kind": kind,
        "clicks": clicks,
        "zoom": models.zoom,
        "lone_click_judged": can_judge(models),
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
