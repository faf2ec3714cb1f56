"""Click simulators: where a user (or a strategy standing in for one) clicks next."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _inner_distance(region: np.ndarray) -> np.ndarray:
    """Exact L2 distance of each region pixel to the nearest non-region pixel or border."""
    padded = np.pad(region, 1, constant_values=False)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def ritm_next_click(
    gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray | None = None
) -> tuple[int, int, bool] | None:
    """The RITM clicker (Sofiiuk et al. 2022): the next click a careful annotator makes.

    The click goes to the point of the false-negative or false-positive region farthest
    from that region's boundary (exact L2 distance transform, the image border counted as
    boundary). It is positive iff the false-negative maximum is strictly larger than the
    false-positive one; ties between pixels go to the first in row-major order. Pixels
    already clicked are never chosen.

    Parameters
    ----------
    gt, pred : np.ndarray
        Boolean ``(H, W)`` ground truth and current prediction.
    clicked : np.ndarray, optional
        Boolean ``(H, W)``, True where a click was already placed.

    Returns
    -------
    tuple of (int, int, bool) or None
        ``(row, col, positive)``, or None when no error pixel is left to click.
    """
    gt = np.asarray(gt, bool)
    pred = np.asarray(pred, bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt and pred must be equal 2D shapes, got {gt.shape}, {pred.shape}.")
    allowed = np.ones_like(gt) if clicked is None else ~np.asarray(clicked, bool)
    fn_dist = _inner_distance(gt & ~pred) * allowed
    fp_dist = _inner_distance(~gt & pred) * allowed
    fn_max, fp_max = fn_dist.max(), fp_dist.max()
    if fn_max == 0 and fp_max == 0:
        return None
    positive = bool(fn_max > fp_max)
    dist, peak = (fn_dist, fn_max) if positive else (fp_dist, fp_max)
    row, col = np.argwhere(dist == peak)[0]
    return int(row), int(col), positive
