"""Layers the widget manages, and the one place napari's (row, col) becomes SAM's (x, y)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.prompts import Click, PromptSet, Suggestion

if TYPE_CHECKING:
    import napari

PROMPTS = "SAM prompts"
PREVIEW = "SAM preview"
OUTPUT = "SAM labels"
UNCERTAINTY = "SAM uncertainty"
SUGGESTIONS = "SAM suggestions"

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


def suggestion_points(index: tuple[int, ...], suggestions: tuple[Suggestion, ...]) -> np.ndarray:
    """napari data coordinates ``(N, ndim)`` of suggestions on slice ``index``."""
    if not suggestions:
        return np.empty((0, len(index) + 2))
    return np.array([point_for(index, s.y, s.x) for s in suggestions])


def belief_colours(beliefs: np.ndarray) -> np.ndarray:
    """RGBA ``(N, 4)``: red where the model believes "outside", green for "inside"."""
    beliefs = np.clip(np.asarray(beliefs, float), 0, 1)[:, None]
    outside, inside = np.array([0.91, 0.30, 0.24, 1.0]), np.array([0.18, 0.80, 0.44, 1.0])
    return (1 - beliefs) * outside + beliefs * inside
