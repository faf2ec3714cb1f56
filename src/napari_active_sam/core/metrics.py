"""Segmentation metrics: IoU, Dice, and the interactive ones (NoC, mIoU@k)."""

from __future__ import annotations

import numpy as np


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
