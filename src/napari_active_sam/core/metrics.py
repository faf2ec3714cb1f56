"""Segmentation metrics: IoU, Dice, surface Dice, and the interactive ones (NoC, mIoU@k)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    union = np.count_nonzero(gt | pred)
    return 1.0 if union == 0 else np.count_nonzero(gt & pred) / union


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    total = np.count_nonzero(gt) + np.count_nonzero(pred)
    return 1.0 if total == 0 else 2 * np.count_nonzero(gt & pred) / total


def number_of_clicks(ious: np.ndarray, threshold: float, max_clicks: int = 20) -> int:
    """NoC@threshold: clicks until IoU ≥ threshold; ``max_clicks`` if never reached.

    Parameters
    ----------
    ious : np.ndarray
        IoU after click 1, 2, ... (click 1 first).
    """
    ious = np.asarray(ious, float)[:max_clicks]
    reached = np.flatnonzero(ious >= threshold)
    return int(reached[0]) + 1 if reached.size else max_clicks


NOC_THRESHOLDS = (0.80, 0.85, 0.90)
"""IoU thresholds of the standard NoC@80/85/90."""

MSA_THRESHOLDS = tuple(np.round(np.arange(0.50, 0.951, 0.05), 2))
"""IoU thresholds averaged by micro-sam's mean segmentation accuracy."""


def oracle_choice(
    gt: np.ndarray, probabilities: np.ndarray | Sequence[np.ndarray]
) -> tuple[np.ndarray, float]:
    """Oracle Dice: the candidate mask (of SAM's multimask heads: ``(K, H, W)``
    probabilities, or K ``(H, W)`` maps) with the best Dice against ``gt``, and that Dice."""
    masks = np.asarray(probabilities) > 0.5
    scores = [dice(gt, m) for m in masks]
    best = int(np.argmax(scores))
    return masks[best], scores[best]


def area_under_curve(ious: np.ndarray) -> float:
    """Area under the IoU-per-click curve: the mean IoU over clicks 1..N (in [0, 1])."""
    return float(np.mean(ious))


def mean_segmentation_accuracy(ious: np.ndarray) -> float:
    """micro-sam's mSA for single-object episodes: the fraction of IoU thresholds
    0.50, 0.55, ..., 0.95 that each object's IoU reaches, averaged over objects.

    Parameters
    ----------
    ious : np.ndarray
        Final (or per-iteration) IoU of each object, ``(objects,)``.
    """
    ious = np.asarray(ious, float)[:, None]
    return float((ious >= np.array(MSA_THRESHOLDS)[None]).mean())


def delta_iou_curve(
    curves: np.ndarray, iterations: int = 15, normalise: tuple[float, float] | None = None
) -> np.ndarray:
    """BALD-SAM's ΔIoU: mean gain over the first click, ``IoU_k - IoU_1``, k = 1..iterations.

    Parameters
    ----------
    curves : np.ndarray
        ``(objects, clicks)`` IoU per click.
    normalise : tuple of float, optional
        ``(lo, hi)``: min-max normalise the mean curve per dataset (e.g. the smallest and
        largest mean IoU any strategy reached on it) before taking differences.
    """
    mean = np.asarray(curves, float)[:, :iterations].mean(axis=0)
    if normalise is not None:
        lo, hi = normalise
        mean = (mean - lo) / (hi - lo) if hi > lo else np.zeros_like(mean)
    return mean - mean[0]


def _surface(mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` with a face neighbour outside it (the image border counts
    as outside)."""
    padded = np.pad(mask, 1)
    inner = ndimage.binary_erosion(padded, ndimage.generate_binary_structure(mask.ndim, 1))
    return (padded & ~inner)[tuple(slice(1, -1) for _ in range(mask.ndim))]


def normalised_surface_dice(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float] | None = None,
    tolerance: float = 2.0,
) -> float:
    """Normalised surface Dice (Nikolov et al. 2021): the share of both surfaces that lies
    within ``tolerance`` (in the units of ``spacing``, mm for a scanned volume) of the
    other surface. 1.0 when both masks are empty, 0.0 when only one is.

    Parameters
    ----------
    gt, pred : np.ndarray
        Boolean masks of one shape, 2D or 3D.
    spacing : sequence of float, optional
        Voxel size along each axis (default 1).
    tolerance : float
        How far a surface may be from the other and still count as agreeing.
    """
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    if gt.shape != pred.shape:
        raise ValueError(f"Masks of different shapes: {gt.shape} and {pred.shape}.")
    if not gt.any() and not pred.any():
        return 1.0
    if not gt.any() or not pred.any():
        return 0.0
    spacing = tuple(float(s) for s in (spacing or (1.0,) * gt.ndim))
    surfaces = _surface(gt), _surface(pred)
    near = 0
    for this, other in (surfaces, surfaces[::-1]):
        distance = ndimage.distance_transform_edt(~other, sampling=spacing)
        near += int(np.count_nonzero(distance[this] <= tolerance))
    return near / (np.count_nonzero(surfaces[0]) + np.count_nonzero(surfaces[1]))


def largest_error_click(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float] | None = None,
    clicked: np.ndarray | None = None,
) -> tuple[tuple[int, ...], bool] | None:
    """The RITM rule in any dimension: the point of the largest connected error region
    (missed or extra, face-connected) farthest from that region's boundary (exact
    Euclidean distance in the units of ``spacing``; the image border counts as boundary).

    Voxels already clicked (``clicked``) are never chosen, as by the 2D clicker
    (:func:`~napari_active_sam.core.sim.clicker.ritm_next_click`): a click the model
    ignored leaves its voxel an error, and clicking it again would tell the model nothing
    new. The click goes to the deepest voxel not yet clicked of the largest region that
    has one.

    Returns
    -------
    tuple or None
        ``(index, positive)``: the voxel, and whether it is missed object (a positive
        click); None when the masks agree, or every error voxel was clicked.
    """
    gt, pred = np.asarray(gt, bool), np.asarray(pred, bool)
    errors = gt ^ pred
    if clicked is not None:
        clicked = np.asarray(clicked, bool)
        if clicked.shape != gt.shape:
            raise ValueError(f"Clicks of shape {clicked.shape} for masks of {gt.shape}.")
    if not errors.any():
        return None
    regions, count = ndimage.label(errors)
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]
    spacing = tuple(float(s) for s in (spacing or (1.0,) * gt.ndim))
    for label in np.argsort(-sizes, kind="stable") + 1:
        region = regions == label
        inside = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)
        inside = inside[tuple(slice(1, -1) for _ in range(gt.ndim))]
        if clicked is not None:
            inside[clicked] = 0
        if inside.max() > 0:
            index = np.unravel_index(int(np.argmax(inside)), gt.shape)
            return tuple(int(i) for i in index), bool(gt[index])
    return None
