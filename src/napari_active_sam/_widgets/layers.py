"""Layers the widget manages, and the one place napari's (row, col) becomes SAM's (x, y)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.types import Click, PromptSet

if TYPE_CHECKING:
    import napari

PROMPTS = "SAM prompts"
PREVIEW = "SAM preview"
OUTPUT = "SAM labels"

POSITIVE_COLOUR = "#2ecc71"
NEGATIVE_COLOUR = "#e74c3c"


def prompts_on_slice(points: napari.layers.Points, index: tuple[int, ...]) -> PromptSet:
    """The clicks of ``points`` that lie on slice ``index``, as SAM prompts.

    Points carry napari's data coordinates ``(..., row, col)`` and a ``positive`` feature;
    points on other slices (or moved between slices) are left out.
    """
    if len(points.data) == 0:
        return PromptSet()
    data = np.asarray(points.data)
    positive = np.asarray(points.features.get("positive", np.ones(len(data), bool)), bool)
    leading = np.round(data[:, :-2]).astype(int)
    here = np.all(leading == np.array(index, int), axis=1) if index else np.ones(len(data), bool)
    return PromptSet(
        clicks=tuple(
            Click(x=float(col), y=float(row), positive=bool(p))
            for (row, col), p in zip(data[here, -2:], positive[here], strict=True)
        )
    )


def point_for(index: tuple[int, ...], row: float, col: float) -> np.ndarray:
    """napari data coordinates of a click at (row, col) on slice ``index``."""
    return np.array([*index, row, col], float)


def colour_points(points: napari.layers.Points) -> None:
    """Green for positive clicks, red for negative ones."""
    if len(points.data):
        positive = np.asarray(points.features["positive"], bool)
        points.face_color = [POSITIVE_COLOUR if p else NEGATIVE_COLOUR for p in positive]
