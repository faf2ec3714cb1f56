"""Acquisition map → ranked suggestions: where to ask the user next."""

from __future__ import annotations

import numpy as np
from skimage.feature import peak_local_max

MIN_SCORE = 1e-5
"""Scores at or below this mean "nothing to learn here" (nats for the information gains;
float32 rounding alone leaves about 1e-6 where every map agrees)."""


def pick_peaks(
    scores: np.ndarray,
    count: int = 5,
    min_distance: int = 4,
    excluded: np.ndarray | None = None,
    min_score: float = MIN_SCORE,
) -> list[tuple[int, int, float]]:
    """The ``count`` highest local maxima of ``scores``, at least ``min_distance`` apart.

    Parameters
    ----------
    scores : np.ndarray
        ``(H, W)`` acquisition map; NaN counts as no score.
    count : int
        At most this many peaks.
    min_distance : int
        Minimum Chebyshev distance between two peaks, in pixels of ``scores``.
    excluded : np.ndarray, optional
        Boolean ``(H, W)``, True where no peak may lie (already-clicked pixels).
    min_score : float
        Peaks must score above this; a flat or empty map gives no peak at all.

    Returns
    -------
    list of (int, int, float)
        ``(row, col, score)``, best first.
    """
    scores = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0, neginf=0.0, posinf=0.0)
    if scores.ndim != 2:
        raise ValueError(f"An acquisition map is 2D, got shape {scores.shape}.")
    if count < 1 or scores.size == 0:
        return []
    if excluded is not None:
        scores = np.where(excluded, 0.0, scores)
    if scores.max() <= min_score or np.ptp(scores) <= min_score:
        return []  # flat: no pixel is more informative than another
    peaks = peak_local_max(
        scores,
        min_distance=max(int(min_distance), 1),
        threshold_abs=min_score,
        exclude_border=False,
        num_peaks=count,
    )
    return [(int(r), int(c), float(scores[r, c])) for r, c in peaks]
