"""Where a simulated user clicks: the RITM clicker, SAM's training clicks, prompts from a mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..prompts import Click, PromptSet, box_around


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


ClickList = list[tuple[int, int, bool]]
"""Clicks as ``(row, col, positive)`` in pixels of the slice."""


def random_pixel(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    """A uniformly random ``(row, col)`` of a boolean region, or None for an empty one."""
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return None
    i = rng.integers(rows.size)
    return int(rows[i]), int(cols[i])


def click_inside(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A click in ``region``: half the time its deepest point, else a uniform pixel."""
    if rng.random() < 0.5:
        hit = ritm_next_click(region, np.zeros_like(region))
        if hit is not None:
            return hit[0], hit[1]
    return random_pixel(region, rng)


def error_click(
    gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray, rng: np.random.Generator
) -> tuple[int, int, bool]:
    """A correcting click: the RITM clicker's half the time, else uniform in the error."""
    if rng.random() < 0.5:
        hit = ritm_next_click(gt, pred, clicked)
        if hit is not None:
            return hit
    error = (gt ^ pred) & ~clicked
    if not error.any():  # perfect prediction: confirm with a click inside
        row, col = click_inside(gt & ~clicked if (gt & ~clicked).any() else gt, rng)
        return row, col, True
    row, col = random_pixel(error, rng)
    return row, col, bool(gt[row, col])


def noisy_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    y0, y1, x0, x1 = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = y1 - y0 + 1, x1 - x0 + 1
    jitter = rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
    box = np.array([x0, y0, x1, y1], np.float32) + jitter
    limit = np.array(mask.shape[::-1] * 2, np.float32) - 1
    return np.clip(box, 0, limit)


def prompts_from_mask(mask: np.ndarray) -> PromptSet:
    """A box around ``mask`` (pixel edges, so a one-pixel-thin mask still has an area) and
    a positive click at its deepest point."""
    row, col, _ = ritm_next_click(mask, np.zeros_like(mask))
    return PromptSet(clicks=(Click(float(col), float(row), True),), box=box_around(mask))
