"""Acquisition map → ranked suggestions: where to ask the user next."""

from __future__ import annotations

import numpy as np
from skimage.feature import peak_local_max

from ..engine.geometry import CellGrid
from ..prompts import PromptSet, Suggestion

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


def suggest(
    ranking: np.ndarray,
    belief: np.ndarray,
    cells: CellGrid,
    prompts: PromptSet,
    count: int = 5,
    min_distance: float = 8.0,
) -> tuple[Suggestion, ...]:
    """Ranked suggestions from a ranking map on one slice's acquisition cells.

    Clicked cells and padding cells (outside the image) never hold a suggestion, and no
    suggestion lands on a pixel already clicked.

    Parameters
    ----------
    ranking : np.ndarray
        ``(c, c)`` what suggestions are ranked by (the score of :class:`Suggestion`).
    belief : np.ndarray
        ``(c, c)`` the model's probability that each cell is inside the object.
    cells : CellGrid
    prompts : PromptSet
        The clicks so far.
    count : int
        At most this many suggestions.
    min_distance : float
        Minimum distance between suggestions, in image pixels.

    Returns
    -------
    tuple of Suggestion
        Best first, in image pixels; empty where the map is flat.
    """
    per_pixel = cells.side / max(cells.original_size)  # cells per image pixel
    peaks = pick_peaks(
        ranking,
        count=count,
        min_distance=max(1, int(round(min_distance * per_pixel))),
        excluded=cells.clicked(prompts) | ~cells.on_image(),
    )
    taken = {(round(c.x), round(c.y)) for c in prompts.clicks}
    found: list[Suggestion] = []
    places = cells.to_image(np.array([[col, row] for row, col, _ in peaks]).reshape(-1, 2))
    for (row, col, score), (x, y) in zip(peaks, places, strict=True):
        if (round(x), round(y)) not in taken:
            rank = len(found) + 1
            found.append(Suggestion(float(x), float(y), score, float(belief[row, col]), rank))
    return tuple(found)
