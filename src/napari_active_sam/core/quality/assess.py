"""Judging whole images and volumes: every object on every slice, and the review CSV."""

from __future__ import annotations

import csv
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import check_labels
from ..engine.embeddings import embed_slice
from ..engine.preprocess import IntensityWindow, SliceSource
from ..engine.store import EmbeddingStore
from ..keeping import written_whole
from ..progress import Progress, drain
from .estimators import (
    ESTIMATORS,
    ObjectQuality,
    QualityEstimate,
    QualityModels,
    QualitySample,
    estimate_quality,
    parse_estimator,
    resolve_estimator,
)

COLUMNS = ("file", "label", "slice", "predicted_dice", "estimator")
"""Columns of the quality CSV, in order."""


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
    labels = check_labels(labels, source.spatial_shape)
    answered, _ = resolve_estimator(requested, models)
    needs_embedding = ESTIMATORS[answered].needs_embedding
    store = store or EmbeddingStore(models.model.encoder_id)
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
    labels = (check_labels(mask, source.spatial_shape) != 0).astype(np.int32)
    if not labels.any():
        requested = parse_estimator(estimator)
        empty = QualityEstimate(0.0, requested, requested, "empty mask: nothing segmented")
        return [ObjectQuality(1, (), empty)]
    return drain(assess_labels(estimator, source, labels, models))


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

    def write(partial: Path) -> None:  # whole or not at all: a full disk keeps the old table
        with open(partial, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(ordered)

    return written_whole(write, path)
