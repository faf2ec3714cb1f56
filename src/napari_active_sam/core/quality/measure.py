"""Measurements with error bars: an object's volume and how sure the model is of it.

For each object of a labels image, every slice it is on is prompted from its own mask (the
box around it and its deepest point), SAM answers, and the Bayesian head's Laplace
posterior refines the answer K times. One posterior draw of the head's last layer is used
on every slice of the object, so draw k is one whole answer for the object (its boundary
errors are shared by its slices, as a systematic error would be) and its volume is one
sample of the volume's posterior. The reported volume is the labels' own; the credible
interval is the posterior's spread around its median, carried over to it (the labels may
be the user's edit of the model's answer) and widened by :data:`POSTERIOR_SPREAD`. The
predicted Dice is the expected 3D Dice of the labels against the posterior's answers.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..active.bayes_head import BayesHead, head_inputs
from ..engine.checkpoints import LoadedModel
from ..engine.embeddings import embed_slice
from ..engine.predictor import Predictor, shown_head
from ..engine.preprocess import SliceSource
from ..engine.store import EmbeddingStore
from ..errors import ActiveSamError, ImageError
from ..keeping import written_whole
from ..progress import Progress
from ..sim.clicker import prompts_from_mask

COLUMNS = (
    "label",
    "volume_mm3",
    "volume_low_mm3",
    "volume_high_mm3",
    "predicted_dice",
    "first_slice",
    "last_slice",
)
"""The columns of ``measure``'s CSV, in order."""

MEASURE_SAMPLES = 64
"""Posterior draws per object."""

def check_draws(samples: int, level: float) -> None:
    """Refuse a credible ``level`` outside (0, 1), and fewer posterior draws than its
    interval's tails need (two beyond each end: 40 for 95 %), which would bound it by the
    extreme draws or by none.

    Raises
    ------
    ActiveSamError
    """
    if not 0 < level < 1:
        raise ActiveSamError(f"The credible level must lie between 0 and 1, got {level}.")
    if samples < (least := math.ceil(2 / (1 - level))):
        raise ActiveSamError(
            f"{samples} posterior draws cannot bound a {level:g} interval (its tails need "
            f"{least} or more): give {least} or more draws (--samples; default 64)."
        )


POSTERIOR_SPREAD = 4.4
"""The Laplace posterior's interval is widened this many times. The posterior over the
head's last layer sees the model's doubt about each boundary but not the systematic errors
of a propagated mask, so alone the demo model's (stage 11) 95 % intervals held the true
volume of 23 % of the organs of generated CT volumes; 4.4 is the 95th percentile of
|error| / half-width on four generated volumes (4.38), rounded up to a tenth, and with it
the intervals held the true volume of 27 of the 28 organs of four others (96 %; median
width 8.6 % of the volume; ``python benchmarks/eval_measure.py --volumes 8``). Stage 9's
errors needed 9 (8.8), which holds all 28 with stage 11 at twice the width."""


@dataclass(frozen=True)
class Measurement:
    """One object's volume with its credible interval.

    Attributes
    ----------
    label : int
    volume_mm3 : float
        The labels' volume: voxels times the voxel's volume (from the image's scale).
    volume_low_mm3, volume_high_mm3 : float
        The credible interval (95 % by default).
    predicted_dice : float
        Expected Dice of the labels against the posterior's answers.
    first_slice, last_slice : int
        The slices the object spans (0 for a 2D image).
    """

    label: int
    volume_mm3: float
    volume_low_mm3: float
    volume_high_mm3: float
    predicted_dice: float
    first_slice: int
    last_slice: int

    def row(self) -> dict[str, float | int]:
        return {key: value for key, value in asdict(self).items() if key in COLUMNS}


def measure_objects(
    model: LoadedModel,
    head: BayesHead,
    source: SliceSource,
    labels: np.ndarray,
    spacing: Sequence[float],
    store: EmbeddingStore | None = None,
    samples: int = MEASURE_SAMPLES,
    level: float = 0.95,
    seed: int = 0,
    spread: float = POSTERIOR_SPREAD,
) -> Generator[Progress, None, list[Measurement]]:
    """Measure every object of ``labels`` (one progress record per object).

    Parameters
    ----------
    model : LoadedModel
    head : BayesHead
        Fitted for ``model``: its posterior gives the error bars.
    source : SliceSource
        The image, ``(Z, H, W)`` or ``(H, W)``.
    labels : np.ndarray
        Integer labels of the image's shape (0 = background).
    spacing : sequence of float
        Voxel size per axis, in mm (``(z, y, x)``, or ``(y, x)`` for a 2D image, whose
        "volume" is then an area in mm²).
    store : EmbeddingStore, optional
    samples : int
        Posterior draws per object.
    level : float
        The credible interval's probability.
    seed : int
    spread : float
        How many times the posterior's own interval is widened (1: the posterior alone).

    Raises
    ------
    ImageError
        Labels of another shape than the image, a spacing that does not fit it, or no
        object.
    ActiveSamError
        A level outside (0, 1).
    """
    labels = np.asarray(labels)
    shape = tuple(source.spatial_shape)
    if labels.ndim not in (2, 3):
        raise ImageError(
            f"The labels have {labels.ndim} dimensions {labels.shape}: measure a 2D image or "
            "a volume (z, y, x); save each time point or channel as its own file."
        )
    if labels.shape != shape:
        raise ImageError(
            f"The labels have shape {labels.shape}, the image {shape}: measure labels made "
            "on this image."
        )
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != labels.ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ImageError(
            f"The voxel size {spacing} does not fit a {labels.ndim}D image: give one positive "
            "size per axis (mm)."
        )
    check_draws(samples, level)
    head.check_model(model)
    found = [int(v) for v in np.unique(labels) if v > 0]
    if not found:
        raise ImageError("The labels hold no object (all 0): nothing to measure.")
    volume = labels if labels.ndim == 3 else labels[None]
    voxel = float(np.prod(spacing))
    store = store or EmbeddingStore(model.encoder_id)
    limits = source.limits()
    predictor = Predictor(model)
    generator = torch.Generator().manual_seed(seed)
    results = []
    for number, label in enumerate(found, start=1):
        weights = head.sample_weights(samples, generator)
        measured = _measure(model, head, predictor, source, store, limits, volume == label,
                            weights, labels.ndim == 3)  # fmt: skip
        areas, overlaps, slices = measured
        committed = int(np.count_nonzero(volume == label))
        sampled = areas.sum(axis=1) * voxel
        tail = (1 - level) / 2
        low, middle, high = np.quantile(sampled, [tail, 0.5, 1 - tail])
        dice = 2 * overlaps.sum(axis=1) / np.maximum(areas.sum(axis=1) + committed, 1)
        results.append(Measurement(
            label=label,
            volume_mm3=committed * voxel,
            volume_low_mm3=max(0.0, committed * voxel - spread * (middle - low)),
            volume_high_mm3=committed * voxel + spread * (high - middle),
            predicted_dice=float(np.mean(dice)),
            first_slice=int(slices[0]),
            last_slice=int(slices[-1]),
        ))  # fmt: skip
        yield Progress(number, len(found), f"measured object {label}")
    return results


def _measure(model, head, predictor, source, store, limits, mask, weights, is_volume):
    """Per posterior draw and slice: the answer's area and its overlap with ``mask``."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    areas = np.zeros((len(weights), len(slices)), np.int64)
    overlaps = np.zeros_like(areas)
    for i, z in enumerate(slices):
        index = (int(z),) if is_volume else ()
        prompts = prompts_from_mask(mask[z])
        embedding = embed_slice(model, source, store, index, limits)
        prediction = predictor.predict(embedding, prompts)
        cells = prediction.cells(model)
        shown = shown_head(prediction, prompts)
        with torch.inference_mode():
            inputs = head_inputs(cells.pool(prediction.logits[shown]), prompts, cells)
            logits = head.sample_logits(inputs, weights=weights)
            answers = prediction.place(cells.upscale(logits)) > 0  # p > 0.5
            truth = torch.as_tensor(mask[z], device=answers.device)
            areas[:, i] = answers.sum(dim=(1, 2)).cpu().numpy()
            overlaps[:, i] = (answers & truth).sum(dim=(1, 2)).cpu().numpy()
    return areas, overlaps, slices


def write_measurements(measurements: list[Measurement], path: Path,
                       unit: str = "mm3") -> Path:  # fmt: skip
    """``path`` as a CSV with :data:`COLUMNS`, ``unit`` (``voxels`` or ``pixels`` when the
    image stated no voxel size) in place of ``mm3``, written whole or not at all (its folder
    made if need be; an unwritable place raises ``OSError``:
    :func:`~napari_active_sam.core.keeping.save_or_keep` keeps the table elsewhere then)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    named = {c: c.replace("_mm3", f"_{unit}") for c in COLUMNS}

    def write(partial: Path) -> None:
        with open(partial, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(named.values()))
            writer.writeheader()
            for measurement in measurements:
                writer.writerow({named[k]: v for k, v in measurement.row().items()})

    return written_whole(write, path)
