"""What a user tells SAM and what the plugin asks back: clicks, prompt sets, suggestions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def box_around(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The box ``(x0, y0, x1, y1)`` around a non-empty ``(H, W)`` mask, on the pixels' outer
    edges (so a one-pixel-thin mask still has an area)."""
    rows, cols = np.nonzero(mask)
    if not rows.size:
        raise ValueError("An empty mask has no box.")
    return (float(cols.min() - 0.5), float(rows.min() - 0.5),
            float(cols.max() + 0.5), float(rows.max() + 0.5))  # fmt: skip


def nearest_filled(volume, z: int, value: int | bool = True) -> int | None:
    """The slice of ``volume`` nearest slice ``z`` that holds some of an object (``z`` itself
    if it does; the lower of two as near), or None if none does: ``volume`` is ``(Z, H, W)``,
    a boolean object or labels with the object's label ``value``. Slices are read outwards
    from ``z``, so an object on a nearby slice costs a few slices, not the volume."""
    depth = len(volume)
    for distance in range(depth):
        for candidate in (z - distance, z + distance) if distance else (z,):
            if 0 <= candidate < depth and (np.asarray(volume[candidate]) == value).any():
                return candidate
    return None


def correction(prompts: PromptSet, volume, z: int,
               value: int | bool = True) -> tuple[PromptSet, np.ndarray | None]:  # fmt: skip
    """How the clicks of ``prompts`` on slice ``z`` correct an object of ``volume`` (a
    boolean ``(Z, H, W)`` object, or labels with the object's label ``value``), and the
    mask they correct (SAM's mask prompt; None if none). Where the object is on ``z`` they
    refine its mask there (:meth:`PromptSet.refining`); where it is on other slices only,
    they go with a box of its size on the nearest (:meth:`PromptSet.placed`); where it is
    nowhere, alone. The 3D benchmark's corrections and the dock's ask the same."""
    clicks = PromptSet(prompts.clicks)
    nearest = nearest_filled(volume, z, value)
    if nearest is None:
        return clicks, None
    mask = np.asarray(volume[nearest]) == value
    if nearest == z:
        return clicks.refining(mask), mask
    return clicks.placed(mask), None


@dataclass(frozen=True)
class Click:
    """One point prompt in image pixel coordinates.

    Attributes
    ----------
    x, y : float
        Column and row of the click in pixels of the original image (SAM's (X, Y) order).
    positive : bool
        True for "inside the object", False for "outside".
    """

    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class PromptSet:
    """Everything the user told SAM about one object on one slice.

    Attributes
    ----------
    clicks : tuple of Click
        Point prompts, in the order they were given.
    box : tuple of float or None
        ``(x0, y0, x1, y1)`` box in pixels of the original image, or None.
    """

    clicks: tuple[Click, ...] = ()
    box: tuple[float, float, float, float] | None = None

    @property
    def is_empty(self) -> bool:
        return not self.clicks and self.box is None

    @property
    def asks_for_object(self) -> bool:
        """Whether a positive click or a box says an object is there."""
        return self.box is not None or any(click.positive for click in self.clicks)

    def with_click(self, click: Click) -> PromptSet:
        """Return a new prompt set with ``click`` appended."""
        return PromptSet(clicks=(*self.clicks, click), box=self.box)

    def stretched(self) -> PromptSet:
        """The same prompts, the box stretched over every positive click outside it: the
        object reaches there, and SAM answers inside the box, leaving such a click out."""
        if self.box is None:
            return self
        x0, y0, x1, y1 = self.box
        for click in self.clicks:
            if click.positive:
                x0, y0 = min(x0, click.x - 0.5), min(y0, click.y - 0.5)
                x1, y1 = max(x1, click.x + 0.5), max(y1, click.y + 0.5)
        return PromptSet(clicks=self.clicks, box=(float(x0), float(y0), float(x1), float(y1)))

    def refining(self, mask: np.ndarray) -> PromptSet:
        """The prompts of a correction of ``mask`` (a mask shown on the slice, not empty):
        these clicks, with the box around the mask stretched over the positive ones."""
        return PromptSet(clicks=self.clicks, box=box_around(mask)).stretched()

    def placed(self, mask: np.ndarray) -> PromptSet:
        """The prompts of clicks on a slice an object has not reached yet, ``mask`` being
        the object on the nearest slice it is on (not empty): these clicks with a box the
        size of the one around ``mask``, centred on the positive clicks and stretched over
        them (moved inwards where it would reach past the slice's edge). The clicks say
        where the object is, its neighbour how large: a lone click leaves SAM's three masks
        to choose from, the smallest part or the whole organ around it. Without a positive
        click, the clicks alone."""
        positive = [click for click in self.clicks if click.positive]
        if not positive:
            return PromptSet(clicks=self.clicks)
        x0, y0, x1, y1 = box_around(mask)
        x = float(np.mean([click.x for click in positive]))
        y = float(np.mean([click.y for click in positive]))
        rows, cols = mask.shape
        left, right = _span(x, x1 - x0, cols)
        top, bottom = _span(y, y1 - y0, rows)
        return PromptSet(clicks=self.clicks, box=(left, top, right, bottom)).stretched()

    def translated(self, rows: float, cols: float) -> PromptSet:
        """The same prompts moved by ``rows`` down and ``cols`` right (into a window of the
        slice whose corner is at ``(-rows, -cols)``)."""
        clicks = tuple(Click(c.x + cols, c.y + rows, c.positive) for c in self.clicks)
        box = None
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            box = (x0 + cols, y0 + rows, x1 + cols, y1 + rows)
        return PromptSet(clicks=clicks, box=box)

    def scaled(self, factor: float) -> PromptSet:
        """The same prompts on an image resized by ``factor`` (pixel centres to pixel
        centres); the prompts themselves for a factor of 1."""
        if factor == 1:
            return self

        def move(value: float) -> float:
            return (value + 0.5) * factor - 0.5

        clicks = tuple(Click(move(c.x), move(c.y), c.positive) for c in self.clicks)
        box = None if self.box is None else tuple(move(v) for v in self.box)
        return PromptSet(clicks=clicks, box=box)

    def point_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(coords, labels)``: float32 (N, 2) in (x, y) and int32 (N,) with 1/0."""
        coords = np.array([(c.x, c.y) for c in self.clicks], dtype=np.float32).reshape(-1, 2)
        labels = np.array([int(c.positive) for c in self.clicks], dtype=np.int32)
        return coords, labels


def _span(centre: float, length: float, extent: int) -> tuple[float, float]:
    """``(start, end)`` of a box side ``length`` long (at most ``extent``) centred on
    ``centre``, moved inwards to lie on a slice ``extent`` pixels across."""
    start = min(max(centre - length / 2, -0.5), extent - 0.5 - length)
    return start, start + length


def left_out(mask: np.ndarray, prompts: PromptSet) -> tuple[Click, ...]:
    """The clicks a boolean ``(H, W)`` mask of their slice disagrees with: positive clicks
    outside it and negative clicks inside it, in the order given. A click counts on the
    pixel it falls in (pixel centres at whole coordinates); one off the slice, on the
    nearest pixel."""
    rows, cols = mask.shape

    def pixel(value: float, length: int) -> int:
        return min(max(int(np.floor(value + 0.5)), 0), length - 1)

    return tuple(
        click
        for click in prompts.clicks
        if bool(mask[pixel(click.y, rows), pixel(click.x, cols)]) != click.positive
    )


@dataclass(frozen=True)
class Suggestion:
    """A pixel whose label the model would most like to know.

    Attributes
    ----------
    x, y : float
        Column and row in pixels of the original image (SAM's (X, Y) order).
    score : float
        What suggestions are ranked by: the acquisition function's value there, times the
        chance that the answer corrects the mask shown (the value alone for random).
    belief : float
        The model's current probability that the pixel is inside the object.
    rank : int
        1 for the best suggestion.
    """

    x: float
    y: float
    score: float
    belief: float
    rank: int

    def click(self, positive: bool) -> Click:
        """The click that answers this suggestion."""
        return Click(self.x, self.y, positive)
