"""Acquisition map → ranked suggestions: where to ask the user next.

Peaks are found where the map lives (on the GPU for a model there): a maximum filter keeps
the cells that are the maximum of their neighbourhood, and only the few best of those travel
to the host, where they are spaced and ranked.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..engine.device import to_device, to_host
from ..engine.geometry import CellGrid
from ..prompts import PromptSet, Suggestion

MIN_SCORE = 1e-5
"""Scores at or below this mean "nothing to learn here" (nats for the information gains;
float32 rounding alone leaves about 1e-6 where every map agrees)."""

SPARE_PEAKS = 8
"""Candidates kept per peak asked for, for the spacing on the host to choose from."""


def peak_candidates(
    scores: torch.Tensor,
    count: int,
    min_distance: int,
    excluded: torch.Tensor | None = None,
    min_score: float = MIN_SCORE,
) -> torch.Tensor:
    """The local maxima of ``scores`` that may become peaks, best first, on its device.

    A cell is a candidate when it is the maximum of the ``(2 d + 1)²`` square around it
    (``d = min_distance``), scores above ``min_score``, is not excluded, and the map is not
    flat. Nothing here waits for the device.

    Returns
    -------
    torch.Tensor
        float32 ``(N, 3)``: ``(row, col, score)``, N at most ``count * SPARE_PEAKS + 16``;
        rows of score ``-inf`` are no candidate.
    """
    values = torch.nan_to_num(scores.float(), nan=0.0, posinf=0.0, neginf=0.0)
    if excluded is not None:
        values = values.masked_fill(excluded, 0.0)
    biggest = _neighbourhood_max(values, max(int(min_distance), 1))
    stands_out = (values.max() - values.min()) > min_score  # a flat map has no peak
    peaks = (values == biggest) & (values > min_score) & stands_out
    ranked = torch.where(peaks, values, float("-inf")).flatten()
    best = torch.topk(ranked, min(count * SPARE_PEAKS + 16, ranked.numel()))
    width = values.shape[1]
    rows = torch.div(best.indices, width, rounding_mode="floor")
    return torch.stack([rows.float(), (best.indices % width).float(), best.values], dim=1)


def _neighbourhood_max(values: torch.Tensor, distance: int) -> torch.Tensor:
    """The maximum of the ``(2 d + 1)²`` square around each cell (clipped at the border):
    scipy's filter on a CPU (several times faster there), a separable max-pool elsewhere."""
    if values.device.type == "cpu":
        size = 2 * distance + 1
        return torch.from_numpy(ndimage.maximum_filter(values.numpy(), size, mode="nearest"))
    return pooled_max(values, distance)


def pooled_max(values: torch.Tensor, distance: int) -> torch.Tensor:
    """:func:`_neighbourhood_max` as two max-pools (rows, then columns), on any device."""
    size = 2 * distance + 1
    rows = F.max_pool2d(values[None, None], (1, size), stride=1, padding=(0, distance))
    return F.max_pool2d(rows, (size, 1), stride=1, padding=(distance, 0))[0, 0]


def spaced_peaks(
    candidates: np.ndarray, count: int, min_distance: int
) -> list[tuple[int, int, float]]:
    """The ``count`` best of :func:`peak_candidates` (on the host), each at least
    ``min_distance`` (Chebyshev) from every better one; equal scores in raster order."""
    candidates = candidates[np.isfinite(candidates[:, 2])]
    rows, cols, values = candidates[:, 0], candidates[:, 1], candidates[:, 2]
    order = np.lexsort((cols, rows, -values))
    distance = max(int(min_distance), 1)
    kept: list[tuple[int, int, float]] = []
    for i in order:
        row, col = int(rows[i]), int(cols[i])
        if all(max(abs(row - r), abs(col - c)) >= distance for r, c, _ in kept):
            kept.append((row, col, float(values[i])))
            if len(kept) == count:
                break
    return kept


def pick_peaks(
    scores: np.ndarray | torch.Tensor,
    count: int = 5,
    min_distance: int = 4,
    excluded: np.ndarray | torch.Tensor | None = None,
    min_score: float = MIN_SCORE,
) -> list[tuple[int, int, float]]:
    """The ``count`` highest local maxima of ``scores``, at least ``min_distance`` apart.

    Parameters
    ----------
    scores : array
        ``(H, W)`` acquisition map; NaN counts as no score.
    count : int
        At most this many peaks.
    min_distance : int
        Minimum Chebyshev distance between two peaks, in pixels of ``scores``.
    excluded : array, optional
        Boolean ``(H, W)``, True where no peak may lie (already-clicked pixels).
    min_score : float
        Peaks must score above this; a flat or empty map gives no peak at all.

    Returns
    -------
    list of (int, int, float)
        ``(row, col, score)``, best first.
    """
    if np.ndim(scores) != 2:
        raise ValueError(f"An acquisition map is 2D, got shape {tuple(np.shape(scores))}.")
    if count < 1 or np.size(scores) == 0:
        return []
    scores = scores if isinstance(scores, torch.Tensor) else torch.from_numpy(np.asarray(scores))
    if excluded is not None:
        excluded = to_device(excluded, scores.device).bool()
    (candidates,) = to_host(peak_candidates(scores, count, min_distance, excluded, min_score))
    return spaced_peaks(candidates, count, min_distance)


def suggestion_candidates(
    ranking: torch.Tensor,
    belief: torch.Tensor,
    cells: CellGrid,
    prompts: PromptSet,
    count: int = 5,
    min_distance: float = 8.0,
) -> torch.Tensor:
    """:func:`peak_candidates` of a ranking map on one slice's acquisition cells, each with
    the belief at its cell: float32 ``(N, 4)`` ``(row, col, score, belief)`` on the maps'
    device. Clicked cells and padding cells (outside the image) are never candidates."""
    excluded = to_device(cells.clicked(prompts) | ~cells.on_image(), ranking.device)
    found = peak_candidates(ranking, count, _cell_distance(cells, min_distance), excluded)
    at = found[:, :2].long()
    return torch.cat([found, belief[at[:, 0], at[:, 1]][:, None].float()], dim=1)


def suggestions_from(
    candidates: np.ndarray,
    cells: CellGrid,
    prompts: PromptSet,
    count: int = 5,
    min_distance: float = 8.0,
) -> tuple[Suggestion, ...]:
    """Ranked suggestions, in image pixels, from :func:`suggestion_candidates` brought to
    the host; none lands on a pixel already clicked."""
    belief = {(int(r), int(c)): float(b) for r, c, _, b in candidates if np.isfinite(b)}
    peaks = spaced_peaks(candidates[:, :3], count, _cell_distance(cells, min_distance))
    taken = {(round(c.x), round(c.y)) for c in prompts.clicks}
    found: list[Suggestion] = []
    places = cells.to_image(np.array([[col, row] for row, col, _ in peaks]).reshape(-1, 2))
    for (row, col, score), (x, y) in zip(peaks, places, strict=True):
        if (round(x), round(y)) not in taken:
            rank = len(found) + 1
            found.append(Suggestion(float(x), float(y), score, belief[row, col], rank))
    return tuple(found)


def suggest(
    ranking: np.ndarray | torch.Tensor,
    belief: np.ndarray | torch.Tensor,
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
    ranking : array
        ``(c, c)`` what suggestions are ranked by (the score of :class:`Suggestion`).
    belief : array
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
    ranking, belief = torch.as_tensor(ranking), torch.as_tensor(belief)
    found = suggestion_candidates(ranking, belief, cells, prompts, count, min_distance)
    (candidates,) = to_host(found)
    return suggestions_from(candidates, cells, prompts, count, min_distance)


def _cell_distance(cells: CellGrid, min_distance: float) -> int:
    """``min_distance`` image pixels in cells (at least one)."""
    per_pixel = cells.side / max(cells.original_size)  # cells per image pixel
    return max(1, int(round(min_distance * per_pixel)))
