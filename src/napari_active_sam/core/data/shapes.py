"""What generated scenes are made of: the scene record, shapes and the painter that lays
objects into an image with their instance labels and parents."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..engine.preprocess import IntensityWindow
from ..enums import SceneKind


@dataclass
class Scene:
    """A generated image and its ground truth.

    Attributes
    ----------
    image : np.ndarray
        ``(H, W)``: int16 Hounsfield units (ct), uint8 (ultrasound, mixed, random,
        real-crops) or uint16 (nuclei); uint8 ``(H, W, 3)`` RGB for a random scene rendered
        in colour and a tinted real crop.
    labels : np.ndarray
        int32 ``(H, W)`` instance labels, 0 = background. A child object's pixels carry the
        child's label (the parent's label has a hole there).
    parents : dict of int to int
        Child label → parent label, for objects drawn inside another object.
    window : IntensityWindow
        The window to show (and encode) the image with.
    kind : SceneKind
    """

    image: np.ndarray
    labels: np.ndarray
    window: IntensityWindow
    kind: SceneKind
    parents: dict[int, int] = field(default_factory=dict)

    def object_mask(self, label: int, with_children: bool = True) -> np.ndarray:
        """Boolean mask of ``label``, including its children's pixels by default."""
        mask = self.labels == label
        if with_children:
            for child, parent in self.parents.items():
                if parent == label:
                    mask |= self.labels == child
        return mask

    def sample_objects(self, rng: np.random.Generator, count: int) -> list[tuple[int, np.ndarray]]:
        """Up to ``count`` of the scene's objects in random order: ``(label, mask)`` each,
        the mask with its children (:meth:`object_mask`)."""
        labels = rng.permutation(np.unique(self.labels[self.labels > 0]))[:count]
        return [(int(label), self.object_mask(int(label))) for label in labels]


# ----------------------------------------------------------------------------- shapes


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[: shape[0], : shape[1]].astype(np.float32)


def ellipse(shape, center, axes, angle) -> np.ndarray:
    """Boolean ellipse with semi-axes ``axes`` (rows, cols) rotated by ``angle`` radians."""
    yy, xx = _grid(shape)
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = dy * cos + dx * sin, -dy * sin + dx * cos
    return (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1.0


def blob(shape, center, radius, rng: np.random.Generator, irregularity=0.25) -> np.ndarray:
    """Boolean star-shaped blob: radius modulated by a few random harmonics."""
    yy, xx = _grid(shape)
    dy, dx = yy - center[0], xx - center[1]
    theta = np.arctan2(dy, dx)
    r = np.ones_like(theta)
    for k in range(2, 6):
        r += irregularity / k * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 6.3))
    return np.hypot(dy, dx) <= radius * r


def tube(shape, rng: np.random.Generator, width: float, length_fraction=0.8) -> np.ndarray:
    """Boolean thin curved structure (vessel, neurite): a smooth random curve, dilated."""
    h, w = shape
    n = 200
    t = np.linspace(0, 1, n)
    start = rng.uniform([0.1 * h, 0.1 * w], [0.9 * h, 0.9 * w])
    heading = rng.uniform(0, 2 * np.pi)
    curvature = rng.normal(0, 2.5) + 2.0 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t)
    angles = heading + np.cumsum(curvature) / n
    step = length_fraction * max(h, w) / n
    ys = start[0] + np.cumsum(np.sin(angles)) * step
    xs = start[1] + np.cumsum(np.cos(angles)) * step
    seeds = np.zeros(shape, bool)
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    seeds[ys[keep].astype(int), xs[keep].astype(int)] = True
    if not seeds.any():
        seeds[h // 2, w // 2] = True
    # Fill gaps between samples before measuring distance.
    seeds = ndimage.binary_dilation(seeds, iterations=1)
    return ndimage.distance_transform_edt(~seeds) <= width / 2


def smooth_field(shape, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ``scale`` pixels."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), scale)
    return (field_ - field_.mean()) / (field_.std() + 1e-6)


def random_center(rng, shape, margin):
    return rng.uniform(margin, np.array(shape) - margin)


class Painter:
    """Accumulates instance labels and intensities; later objects are drawn on top."""

    def __init__(self, shape, background: np.ndarray):
        self.labels = np.zeros(shape, np.int32)
        self.image = background.astype(np.float32)
        self.parents: dict[int, int] = {}
        self._finished: tuple[np.ndarray, dict[int, int]] | None = None

    def add(self, mask: np.ndarray, value, parent: int = 0, min_pixels: int = 12) -> int:
        visible = mask & (self.labels == parent) if parent else mask
        if visible.sum() < min_pixels:
            return 0
        label = int(self.labels.max()) + 1
        self.labels[visible] = label
        self.image[visible] = value[visible] if isinstance(value, np.ndarray) else value
        if parent:
            self.parents[label] = parent
        return label

    def finish(self) -> tuple[np.ndarray, dict[int, int]]:
        """Drop objects left too small by occlusion and renumber labels 1..n (painting is
        over: the result is kept)."""
        if self._finished is None:
            self._finished = self._renumbered()
        return self._finished

    def _renumbered(self) -> tuple[np.ndarray, dict[int, int]]:
        sizes = np.bincount(self.labels.ravel())
        keep = [lab for lab in range(1, len(sizes)) if sizes[lab] >= 12]
        mapping = np.zeros(len(sizes), np.int32)
        mapping[keep] = np.arange(1, len(keep) + 1)
        labels = mapping[self.labels]
        parents = {
            int(mapping[c]): int(mapping[p])
            for c, p in self.parents.items()
            if mapping[c] and mapping[p]
        }
        return labels, parents

    def scene(
        self, image: np.ndarray, kind: SceneKind, window: IntensityWindow | None = None
    ) -> Scene:
        """The finished scene: ``image`` over the painted objects (see :meth:`finish`),
        shown with ``window`` (percentiles by default)."""
        labels, parents = self.finish()
        window = window or IntensityWindow.percentile()
        return Scene(image=image, labels=labels, window=window, kind=kind, parents=parents)
