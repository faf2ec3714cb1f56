"""Generated 2D scenes with instance ground truth, in the users' modalities.

Five kinds of scene, each a few hundred pixels square:

- ``ct``: a body outline on air in Hounsfield units, organ-like regions, a spine, vessels and
  lesions inside organs; Gaussian noise and smooth inhomogeneity. Shown with the soft-tissue
  window.
- ``ultrasound``: hypo- and hyperechoic regions in multiplicative speckle, log-compressed.
- ``nuclei``: fluorescence-like nuclei, isolated and in touching clusters, blurred, with
  Poisson noise.
- ``mixed``: ellipses, irregular blobs, thin curved structures and objects inside objects on
  textured backgrounds with varied contrast.
- ``random``: domain randomisation after SynthSeg (Billot et al. 2023): random label maps
  (Voronoi tissue, organs, blobs, tubes, crowds of small objects, objects inside objects,
  elastically deformed) with a random appearance per region, bias field, blur, resolution,
  noise model, gamma and clutter that is not an object. Teaches a model what every modality
  shares (an object is a region bounded by a change in statistics) rather than one
  generator's look.

Every scene comes with instance labels (0 = background) and, for objects drawn inside another
object, the parent's label: a click inside a child is ambiguous (child or parent), which is
what SAM's multimask heads are for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from ..engine.preprocess import IntensityWindow
from ..enums import SceneKind


@dataclass
class Scene:
    """A generated image and its ground truth.

    Attributes
    ----------
    image : np.ndarray
        ``(H, W)``: int16 Hounsfield units (ct), uint8 (ultrasound, mixed, random) or uint16
        (nuclei).
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


def _random_center(rng, shape, margin):
    return rng.uniform(margin, np.array(shape) - margin)


class _Painter:
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


# ----------------------------------------------------------------------------- scenes


def _ct(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    air = np.full(shape, -1000.0, np.float32)
    painter = _Painter(shape, air)
    c = np.array(shape) / 2 + rng.normal(0, size * 0.03, 2)
    body = ellipse(shape, c, (size * rng.uniform(0.3, 0.4), size * rng.uniform(0.4, 0.47)), 0)
    fat = -100 + 15 * smooth_field(shape, rng, 8)
    painter.image[body] = fat[body]
    muscle_ring = body & ~ellipse(shape, c, (size * 0.27, size * 0.36), 0)
    painter.image[muscle_ring] = 45
    # Organs: a liver-like blob, kidneys, spleen, a spine, vessels.
    organs = [
        (blob(shape, c + [-0.02 * size, -0.14 * size], 0.14 * size, rng, 0.35), 60),
        (ellipse(shape, c + [0.1 * size, -0.17 * size], (0.06 * size, 0.04 * size), 0.3), 35),
        (ellipse(shape, c + [0.1 * size, 0.17 * size], (0.06 * size, 0.04 * size), -0.3), 35),
        (blob(shape, c + [-0.05 * size, 0.18 * size], 0.07 * size, rng, 0.3), 50),
    ]
    organ_labels = []
    for mask, hu in organs:
        if rng.random() < 0.85:
            jitter = hu + rng.normal(0, 15) + 8 * smooth_field(shape, rng, 4)
            organ_labels.append(painter.add(mask & body, jitter))
    spine = ellipse(shape, c + [0.2 * size, 0], (0.05 * size, 0.05 * size), 0)
    painter.add(spine & body, 700 + 80 * smooth_field(shape, rng, 2))
    aorta = ellipse(shape, c + [0.1 * size, 0.02 * size], (0.025 * size, 0.025 * size), 0)
    painter.add(aorta & body, 180.0)
    if rng.random() < 0.6:
        vessel = tube(shape, rng, width=rng.uniform(2.5, 5), length_fraction=0.4)
        painter.add(vessel & body, 170.0)
    # Lesions inside organs: the ambiguous objects-inside-objects.
    for parent in organ_labels:
        if parent and rng.random() < 0.5:
            ys, xs = np.nonzero(painter.labels == parent)
            i = rng.integers(len(ys))
            radius = rng.uniform(0.02, 0.045) * size
            lesion = blob(shape, (ys[i], xs[i]), radius, rng, 0.2)
            painter.add(lesion, rng.choice([10.0, 110.0]), parent=parent)
    image = painter.image + 3 * smooth_field(shape, rng, 20) + rng.normal(0, 12, shape)
    hounsfield = np.clip(image, -1024, 3071).astype(np.int16)
    return painter.scene(hounsfield, SceneKind.CT, IntensityWindow.ct("soft_tissue"))


def _ultrasound(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    reflectivity = 0.5 + 0.15 * smooth_field(shape, rng, 10)
    painter = _Painter(shape, reflectivity)
    for _ in range(rng.integers(1, 4)):
        center = _random_center(rng, shape, size * 0.2)
        radius = rng.uniform(0.07, 0.18) * size
        mask = blob(shape, center, radius, rng, rng.uniform(0.05, 0.35))
        level = rng.choice([rng.uniform(0.03, 0.2), rng.uniform(0.9, 1.4)])
        label = painter.add(mask, float(level))
        if label and rng.random() < 0.3:
            inner = blob(shape, center, radius * rng.uniform(0.3, 0.5), rng, 0.1)
            painter.add(inner, float(rng.uniform(1.2, 1.6)), parent=label)
    labels, _ = painter.finish()
    edges = ndimage.gaussian_gradient_magnitude(labels.astype(np.float32), 1.0) > 0
    intensity = painter.image + 0.4 * edges
    speckle = rng.rayleigh(1.0, shape).astype(np.float32)
    speckle = ndimage.gaussian_filter(speckle, (1.5, 0.6))  # elongated speckle cells
    envelope = np.clip(intensity, 0.01, None) * speckle
    log_image = 20 * np.log10(envelope + 1e-3)
    image = np.clip((log_image + 40) / 50 * 255, 0, 255)
    depth = np.linspace(1.0, 0.6, size, dtype=np.float32)[:, None]  # attenuation with depth
    return painter.scene((image * depth).astype(np.uint8), SceneKind.ULTRASOUND)


def _nuclei(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    painter = _Painter(shape, np.zeros(shape, np.float32))
    base = rng.uniform(0.025, 0.05) * size  # typical nucleus semi-axis
    clusters = rng.integers(2, 5)
    for _ in range(clusters):
        center = _random_center(rng, shape, size * 0.15)
        for _ in range(rng.integers(1, 6)):
            offset = rng.normal(0, base * 1.6, 2)
            axes = base * rng.uniform(0.8, 1.3, 2)
            mask = ellipse(shape, center + offset, axes, rng.uniform(0, np.pi))
            mask &= blob(shape, center + offset, axes.max() * 1.05, rng, 0.12)
            brightness = rng.uniform(0.4, 1.0)
            texture = brightness * (1 + 0.15 * smooth_field(shape, rng, 1.5))
            painter.add(mask, texture)
    signal = ndimage.gaussian_filter(painter.image, rng.uniform(0.7, 1.5))
    photons = rng.uniform(40, 400)
    counts = rng.poisson(np.clip(signal + 0.03, 0, None) * photons).astype(np.float32)
    image = counts + rng.normal(100, 2, shape)  # camera offset and read noise
    return painter.scene(np.clip(image, 0, 65535).astype(np.uint16), SceneKind.NUCLEI)


def _mixed(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    contrast = rng.uniform(0.15, 0.6)
    background = 0.5 + 0.15 * smooth_field(shape, rng, rng.uniform(3, 20))
    painter = _Painter(shape, background)
    for _ in range(rng.integers(2, 6)):
        choice = rng.random()
        center = _random_center(rng, shape, size * 0.12)
        level = 0.5 + rng.choice([-1, 1]) * contrast * rng.uniform(0.6, 1.0)
        if choice < 0.35:
            axes = rng.uniform(0.04, 0.2, 2) * size
            mask = ellipse(shape, center, axes, rng.uniform(0, np.pi))
        elif choice < 0.7:
            mask = blob(shape, center, rng.uniform(0.05, 0.18) * size, rng, rng.uniform(0.2, 0.5))
        else:
            mask = tube(shape, rng, width=rng.uniform(3, 8), length_fraction=rng.uniform(0.3, 0.7))
        texture = level + 0.05 * smooth_field(shape, rng, 2)
        label = painter.add(mask, texture)
        if label and choice < 0.7 and rng.random() < 0.35:
            inner = blob(shape, center, rng.uniform(0.3, 0.5) * mask.sum() ** 0.5 / 1.8, rng, 0.2)
            painter.add(inner, float(np.clip(level + rng.choice([-1, 1]) * 0.25, 0, 1)), label)
    noise = rng.uniform(0.02, 0.08)
    image = painter.image + noise * rng.standard_normal(shape)
    return painter.scene(np.clip(image * 255, 0, 255).astype(np.uint8), SceneKind.MIXED)


# ----------------------------------------------------------------------------- domain randomisation

_EIGHT_NEIGHBOURS = np.ones((3, 3), bool)


def _coarse_field(rng: np.random.Generator, shape, scale: float) -> np.ndarray:
    """Like :func:`smooth_field` (zero mean, unit std, correlation length ``scale`` pixels), but
    drawn on a grid ``scale / 2`` times coarser and upsampled: a millisecond at any scale."""
    factor = max(1.0, scale / 2)
    coarse = tuple(max(2, int(np.ceil(n / factor))) for n in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), scale / factor)
    field_ = ndimage.zoom(noise, (shape[0] / coarse[0], shape[1] / coarse[1]), order=1)
    return (field_ - field_.mean()) / (field_.std() + 1e-6)


def _crop_around(shape, center, reach) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """The window of ``shape`` within ``reach`` pixels of ``center``: its slices and its
    row/column offsets from the centre (float32), or None if it lies outside the image."""
    y0, x0 = (max(int(c - reach), 0) for c in center)
    y1, x1 = (min(int(c + reach) + 2, n) for c, n in zip(center, shape, strict=True))
    if y0 >= y1 or x0 >= x1:
        return None
    dy, dx = np.ogrid[y0:y1, x0:x1]
    return (
        (slice(y0, y1), slice(x0, x1)),
        (dy - center[0]).astype(np.float32),
        (dx - center[1]).astype(np.float32),
    )


def _blob_crop(shape, center, radius, rng: np.random.Generator, irregularity=0.25, aspect=1.0):
    """Like :func:`blob`, stretched by ``aspect`` along a random direction, computed in its
    bounding window only: ``(slices, mask)`` or None outside the image."""
    angle = rng.uniform(0, np.pi)
    phases = rng.uniform(0, 6.3, 4)
    weights = irregularity / np.arange(2, 6) * rng.uniform(0.3, 1.0, 4)
    window = _crop_around(shape, center, radius * max(aspect, 1) * (1 + 1.3 * irregularity))
    if window is None:
        return None
    where, dy, dx = window
    u = dy * np.cos(angle) + dx * np.sin(angle)
    v = (-dy * np.sin(angle) + dx * np.cos(angle)) / aspect
    theta = np.arctan2(v, u)
    r = 1 + sum(
        w * np.cos(k * theta + p) for k, w, p in zip(range(2, 6), weights, phases, strict=True)
    )
    return where, np.hypot(u, v) <= radius * r


def _curve_crop(shape, rng: np.random.Generator, width: float, length: float):
    """Like :func:`tube` (a smooth random curve ``length`` pixels long, ``width`` wide), computed
    in its bounding window only: ``(slices, mask)`` or None outside the image."""
    n = max(int(length), 8)
    t = np.linspace(0, 1, n)
    heading = rng.uniform(0, 2 * np.pi)
    curvature = rng.normal(0, 2.5) + 2.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t)
    angles = heading + np.cumsum(curvature) / n
    start = rng.uniform(0, 1, 2) * shape
    ys = start[0] + np.cumsum(np.sin(angles)) * length / n
    xs = start[1] + np.cumsum(np.cos(angles)) * length / n
    keep = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
    if keep.sum() < 4:
        return None
    ys, xs = ys[keep].astype(int), xs[keep].astype(int)
    margin = int(width) + 2
    y0, x0 = max(ys.min() - margin, 0), max(xs.min() - margin, 0)
    y1, x1 = min(ys.max() + margin + 1, shape[0]), min(xs.max() + margin + 1, shape[1])
    outside = np.ones((y1 - y0, x1 - x0), bool)
    outside[ys - y0, xs - x0] = False
    return (slice(y0, y1), slice(x0, x1)), ndimage.distance_transform_edt(outside) <= width / 2


class _Looks:
    """Random appearances (SynthSeg's per-label intensity model): each look has a mean, a
    spread of its regions' means around it, white noise and the amplitudes of three texture
    fields (fine, coarse, stripes). Look 0 is the background's."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows: list[tuple[float, ...]] = []
        self.add(mean=float(rng.uniform(0, 1)), spread=0.0)

    def add(self, mean: float | None = None, spread: float | None = None, small=False) -> int:
        """A new look: ``mean`` given, or drawn against the background: mostly a clear
        difference of either sign; sometimes any mean, or texture alone, unless the look is
        for ``small`` objects (on which a texture would not show)."""
        rng = self.rng
        textured = False
        if mean is None:
            background = self.rows[0][0]
            draw = 1.0 if small else rng.random()
            if draw < 0.15:
                mean, textured = background, True
            elif draw < 0.3:
                mean = rng.uniform(0, 1)
            else:
                step = rng.choice([-1, 1]) * rng.uniform(0.12, 0.6)
                if not 0 <= background + step <= 1:
                    step = -step
                mean = float(np.clip(background + step, 0, 1))
        if spread is None:
            spread = rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0.05, 0.25)])
        noise = rng.uniform(0, 0.05)
        fine = rng.uniform(0.05, 0.15) if textured or rng.random() < 0.35 else 0.0
        coarse = rng.uniform(0.03, 0.15) if rng.random() < 0.35 else 0.0
        stripes = rng.uniform(0.05, 0.2) if textured and rng.random() < 0.4 else 0.0
        self.rows.append((float(mean), float(spread), noise, fine, coarse, stripes))
        return len(self.rows) - 1

    def table(self) -> np.ndarray:
        """``(n_looks, 6)`` float32: mean, spread, noise, fine, coarse, stripes."""
        return np.array(self.rows, np.float32)


class _RegionPainter(_Painter):
    """A :class:`_Painter` that paints label maps for domain randomisation: every painted
    region (target object or not) gets its own id in ``regions`` and a look; the image is
    rendered from the regions once the label map is final (:func:`_render`)."""

    def __init__(self, shape, looks: _Looks):
        super().__init__(shape, np.zeros(shape, np.float32))
        self.looks = looks
        self.regions = np.zeros(shape, np.int32)  # 0: the background, look 0
        self.region_looks = [0]
        self._next_label = 1

    def paint(self, where, mask: np.ndarray, look: int, target=True, parent: int = 0) -> int:
        """Paint ``mask`` (a window ``where`` of the image) with ``look``: a target object
        (its label returned; 0 if under 12 pixels show) or, with ``target=False``, a
        structure that is not an object (clutter, membranes: label ``parent``). A child
        (``parent`` non-zero) shows only over its parent."""
        cells = mask.astype(np.int32)
        labels = self.paint_cells(where, cells, [look], target, parent)
        return labels[0] if labels else 0

    def paint_cells(self, where, cells: np.ndarray, looks, target=True, parent: int = 0):
        """Paint the cells of ``cells`` (a window ``where``: 0 = leave, ``k`` = cell ``k``)
        at once, cell ``k`` with ``looks[k - 1]``. Returns the cells' labels (0 where under
        12 pixels show; all 0 with ``target=False``)."""
        labels = self.labels[where]
        if parent:
            cells = np.where(labels == parent, cells, 0)
        count = len(looks)
        sizes = np.bincount(cells.ravel(), minlength=count + 1)
        shown = sizes[1:] >= (12 if target else 1)
        region = np.zeros(count + 1, np.int32)
        region[1:][shown] = len(self.region_looks) + np.arange(shown.sum())
        self.region_looks += [look for look, s in zip(looks, shown, strict=True) if s]
        label = np.full(count + 1, -1, np.int32)
        if target:
            label[1:][shown] = self._next_label + np.arange(shown.sum())
            self._next_label += int(shown.sum())
            for value in label[1:][shown]:
                if parent:
                    self.parents[int(value)] = parent
        else:
            label[1:][shown] = parent
        paint = cells > 0
        paint[paint] = shown[cells[paint] - 1]
        labels[paint] = label[cells[paint]]
        self.regions[where][paint] = region[cells[paint]]
        return [int(v) if target and v > 0 else 0 for v in label[1:]]

    def deform(self, rng: np.random.Generator, amplitude: float, scale: float) -> None:
        """Elastic deformation: move every pixel by a smooth random displacement (up to about
        ``amplitude`` pixels, correlation length ``scale``), labels and regions alike."""
        shape = self.labels.shape
        rows, cols = np.ogrid[: shape[0], : shape[1]]
        dy, dx = (amplitude * _coarse_field(rng, shape, scale) for _ in range(2))
        iy = np.clip(np.rint(rows + dy), 0, shape[0] - 1).astype(np.intp)
        ix = np.clip(np.rint(cols + dx), 0, shape[1] - 1).astype(np.intp)
        self.labels = self.labels[iy, ix]
        self.regions = self.regions[iy, ix]

    def keep_largest_pieces(self) -> None:
        """Make every object one 8-connected piece of at least 12 pixels: smaller pieces (left
        by occlusion or deformation) become background, in labels and look alike."""
        for label, where in enumerate(ndimage.find_objects(self.labels), 1):
            if where is None:
                continue
            mine = self.labels[where] == label
            pieces, n = ndimage.label(mine, _EIGHT_NEIGHBOURS)
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            drop = mine & (pieces != sizes.argmax()) if sizes.max() >= 12 else mine
            if n > 1 or drop.any():
                self.labels[where][drop] = 0
                self.regions[where][drop] = 0
        # A child cut off from its parent (by occlusion or the parent's lost pieces) is an
        # object of its own.
        windows = ndimage.find_objects(self.labels)
        self.parents = {
            child: parent
            for child, parent in self.parents.items()
            if child <= len(windows)
            and windows[child - 1]
            and self._touches(windows, child, parent)
        }

    def _touches(self, windows, child: int, parent: int) -> bool:
        rows, cols = windows[child - 1]
        where = (slice(max(rows.start - 1, 0), rows.stop + 1),
                 slice(max(cols.start - 1, 0), cols.stop + 1))  # fmt: skip
        near = ndimage.binary_dilation(self.labels[where] == child)
        return bool((self.labels[where][near] == parent).any())


def _random_organs(painter: _RegionPainter, rng, size) -> None:
    """Large smooth regions (organs), overlapping into shared boundaries, with lesions."""
    shape = painter.labels.shape
    for _ in range(rng.integers(1, 5)):
        radius = rng.uniform(0.12, 0.3) * size
        center = _random_center(rng, shape, 0.1 * size)
        crop = _blob_crop(shape, center, radius, rng, rng.uniform(0.15, 0.5), rng.uniform(1, 1.8))
        label = painter.paint(*crop, painter.looks.add()) if crop else 0
        if label and rng.random() < 0.5:
            _random_children(painter, rng, label, radius, rng.integers(1, 4))


def _random_children(painter: _RegionPainter, rng, parent: int, radius: float, count: int):
    """``count`` blobs inside object ``parent`` (of typical radius ``radius``): lesions,
    nuclei, compartments. They share one look."""
    ys, xs = np.nonzero(painter.labels == parent)
    if not len(ys):
        return
    look = painter.looks.add(small=True)
    for _ in range(count):
        i = rng.integers(len(ys))
        child_radius = max(radius * rng.uniform(0.12, 0.4), 2.5)
        crop = _blob_crop(painter.labels.shape, (ys[i], xs[i]), child_radius, rng, 0.2,
                          rng.uniform(1, 1.5))  # fmt: skip
        if crop:
            painter.paint(*crop, look, parent=parent)


def _random_tissue(painter: _RegionPainter, rng, size) -> None:
    """Voronoi cells packed in a region (or the whole image): touching objects that share
    their boundaries, with a clear, weak or no intensity step between them, or separated by
    membranes or gaps; sometimes each with a nucleus."""
    shape = painter.labels.shape
    if rng.random() < 0.4:
        where = (slice(0, shape[0]), slice(0, shape[1]))
        region = np.ones(shape, bool)
    else:
        crop = _blob_crop(shape, _random_center(rng, shape, 0.2 * size),
                          rng.uniform(0.2, 0.4) * size, rng, 0.3)  # fmt: skip
        if crop is None:
            return
        where, region = crop
    cell_radius = rng.uniform(0.04, 0.12) * size
    count = max(2, int(region.sum() / (np.pi * cell_radius**2)))
    seeds = np.zeros(region.shape, bool)
    rows, cols = (rng.integers(0, n, count) for n in region.shape)
    seeds[rows, cols] = True
    nearest = ndimage.distance_transform_edt(~seeds, return_distances=False,
                                             return_indices=True)  # fmt: skip
    seed_ids = np.zeros(region.shape, np.int32)
    seed_ids[rows, cols] = np.arange(1, count + 1)  # duplicate seeds: the last one wins
    cells = np.where(region, seed_ids[nearest[0], nearest[1]], 0)
    if rng.random() < 0.3:
        looks = [painter.looks.add() for _ in range(count)]  # every cell its own look
    else:  # one look: the step between neighbours is clear, weak or (rarely) absent
        steps = [0.0, rng.uniform(0.02, 0.06), rng.uniform(0.1, 0.3)]
        looks = [painter.looks.add(spread=rng.choice(steps, p=[0.15, 0.3, 0.55]))] * count
    labels = painter.paint_cells(where, cells, looks)
    boundary = rng.random()
    if boundary < 0.5:  # membranes (a look of their own) or gaps (background)
        edge = np.zeros(cells.shape, bool)
        edge[1:] |= cells[1:] != cells[:-1]
        edge[:, 1:] |= cells[:, 1:] != cells[:, :-1]
        edge &= cells > 0
        if rng.random() < 0.5:
            edge = ndimage.binary_dilation(edge)
        look = painter.looks.add() if boundary < 0.35 else 0
        painter.paint(where, edge, look, target=False)
    if rng.random() < 0.4:
        nucleus = painter.looks.add(small=True)
        for seed, label in zip(zip(rows, cols, strict=True), labels, strict=True):
            if label and painter.labels[where][seed] == label:
                center = (seed[0] + where[0].start, seed[1] + where[1].start)
                crop = _blob_crop(shape, center, cell_radius * rng.uniform(0.25, 0.45), rng,
                                  0.15, rng.uniform(1, 1.4))  # fmt: skip
                if crop:
                    painter.paint(*crop, nucleus, parent=label)


def _random_blobs(painter: _RegionPainter, rng, size) -> None:
    """A few medium blobs, each its own look, some with objects inside."""
    shape = painter.labels.shape
    for _ in range(rng.integers(1, 7)):
        radius = rng.uniform(0.04, 0.14) * size
        crop = _blob_crop(shape, _random_center(rng, shape, 0.05 * size), radius, rng,
                          rng.uniform(0.05, 0.5), rng.uniform(1, 2.5))  # fmt: skip
        label = painter.paint(*crop, painter.looks.add()) if crop else 0
        if label and rng.random() < 0.35:
            _random_children(painter, rng, label, radius, rng.integers(1, 3))


def _random_tubes(painter: _RegionPainter, rng, size) -> None:
    """Thin curvilinear objects (vessels, neurites, fibres)."""
    shared = painter.looks.add(small=True) if rng.random() < 0.5 else None
    for _ in range(rng.integers(1, 6)):
        width = rng.uniform(2, 7) * size / 256
        length = rng.uniform(0.3, 0.9) * size
        crop = _curve_crop(painter.labels.shape, rng, max(width, 2.0), length)
        if crop:
            painter.paint(*crop, shared if shared is not None else painter.looks.add(small=True))


def _random_crowd(painter: _RegionPainter, rng, size) -> None:
    """Many small objects (nuclei, cells, particles), scattered or clustered, touching where
    they overlap (a little, or freely); one look with a random spread, or a look each."""
    shape = painter.labels.shape
    count = rng.integers(10, 80)
    radius = rng.uniform(0.012, 0.045) * size
    clusters = None  # scattered over the image, or in 1-5 clusters
    if rng.random() < 0.5:
        clusters = np.stack([_random_center(rng, shape, 0.1 * size)
                             for _ in range(rng.integers(1, 6))])  # fmt: skip
    max_overlap = rng.choice([0.15, 1.0])
    shared = painter.looks.add(small=True) if rng.random() < 0.7 else None
    first = painter._next_label
    for _ in range(count):
        if clusters is None:
            center = rng.uniform(0, 1, 2) * shape
        else:
            spread = radius * rng.uniform(1.5, 4)
            center = clusters[rng.integers(len(clusters))] + rng.normal(0, spread, 2)
        crop = _blob_crop(shape, center, max(radius * rng.uniform(0.7, 1.3), 2.5), rng,
                          rng.uniform(0.02, 0.2), rng.uniform(1, 1.6))  # fmt: skip
        if crop is None:
            continue
        where, mask = crop
        crowded = painter.labels[where][mask] >= first
        if not crowded.size or crowded.mean() > max_overlap:
            continue
        painter.paint(where, mask, shared if shared is not None else painter.looks.add(small=True))


def _random_clutter(painter: _RegionPainter, rng, size) -> None:
    """Structures that are not objects: background compartments, lines, specks."""
    shape = painter.labels.shape
    if rng.random() < 0.45:
        field_ = _coarse_field(rng, shape, rng.uniform(0.08, 0.25) * size)
        levels = np.digitize(field_, np.sort(rng.uniform(-1, 1, rng.integers(1, 3))))
        every = (slice(0, shape[0]), slice(0, shape[1]))
        looks = [painter.looks.add(spread=0.0) for _ in range(levels.max())]
        painter.paint_cells(every, levels, looks, target=False)
    if rng.random() < 0.4:
        look = painter.looks.add()
        for _ in range(rng.integers(1, 7)):
            crop = _curve_crop(shape, rng, rng.uniform(1, 2.5), rng.uniform(0.2, 1.0) * size)
            if crop:
                painter.paint(*crop, look, target=False)
    if rng.random() < 0.4:
        specks = np.zeros(shape, bool)
        count = rng.integers(10, 150)
        specks[rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)] = True
        if rng.random() < 0.5:
            specks = ndimage.binary_dilation(specks)
        painter.paint((slice(0, shape[0]), slice(0, shape[1])), specks, painter.looks.add(),
                      target=False)  # fmt: skip


_RANDOM_LAYOUTS = (
    (_random_tissue, 0.35),
    (_random_organs, 0.35),
    (_random_blobs, 0.45),
    (_random_tubes, 0.3),
    (_random_crowd, 0.4),
)
"""Label-map components and the chance each is in a scene, in drawing order (later on top)."""


def _render(painter: _RegionPainter, rng: np.random.Generator, size: int) -> np.ndarray:
    """The image of a finished label map: each region's intensity and textures, then a bias
    field, blur, a resolution change, a noise model, gamma and sometimes inversion; uint8."""
    shape = painter.labels.shape
    table = painter.looks.table()
    looks = np.array(painter.region_looks)
    mean = table[looks, 0] + table[looks, 1] * rng.standard_normal(len(looks)).astype(np.float32)
    mean[0] = table[0, 0]
    per_region = np.column_stack([mean, table[looks, 2:]]).astype(np.float32)
    regions = painter.regions
    image = per_region[regions, 0]
    image += per_region[regions, 1] * rng.standard_normal(shape, dtype=np.float32)
    fine = _coarse_field(rng, shape, rng.uniform(0.8, 3))
    image += per_region[regions, 2] * fine
    coarse = _coarse_field(rng, shape, rng.uniform(0.02, 0.08) * size)
    image += per_region[regions, 3] * coarse
    if table[:, 5].any():
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 12)
        rows, cols = np.ogrid[: shape[0], : shape[1]]
        phase = (rows * np.sin(angle) + cols * np.cos(angle)) * (2 * np.pi / period)
        stripes = np.sin(phase + 2 * _coarse_field(rng, shape, 0.1 * size))
        image += per_region[regions, 4] * stripes
    if rng.random() < 0.7:  # a smooth multiplicative bias field
        image *= np.exp(
            rng.uniform(0.05, 0.4) * _coarse_field(rng, shape, rng.uniform(0.2, 0.6) * size)
        )
    if rng.random() < 0.7:  # the point-spread function, sometimes anisotropic
        sigma = rng.uniform(0.3, 2.0) * rng.uniform(0.6, 1.0, 2)
        image = ndimage.gaussian_filter(image, sigma)
    if rng.random() < 0.3:  # acquired at a lower resolution
        factor = rng.uniform(1.5, 3.5)
        small = ndimage.zoom(ndimage.gaussian_filter(image, 0.4 * factor), 1 / factor, order=1)
        image = ndimage.zoom(small, (shape[0] / small.shape[0], shape[1] / small.shape[1]), order=1)
    low, high = np.percentile(image[::3, ::3], [0.5, 99.5])
    image = np.clip((image - low) / max(high - low, 1e-3), 0, 1)
    model = rng.integers(4)
    if model == 0:  # Gaussian
        image = image + rng.uniform(0.005, 0.1) * rng.standard_normal(shape, dtype=np.float32)
    elif model == 1:  # Poisson (photon counting)
        photons = rng.uniform(10, 300)
        image = rng.poisson((image + 0.02) * photons).astype(np.float32) / photons
    elif model == 2:  # Rician (magnitude MRI)
        sigma = rng.uniform(0.01, 0.12)
        real = image + sigma * rng.standard_normal(shape, dtype=np.float32)
        image = np.hypot(real, sigma * rng.standard_normal(shape, dtype=np.float32))
    else:  # multiplicative speckle (ultrasound, OCT), sometimes correlated
        speckle = rng.rayleigh(np.sqrt(2 / np.pi), shape).astype(np.float32)
        if rng.random() < 0.5:
            speckle = ndimage.gaussian_filter(speckle, rng.uniform(0.5, 1.5, 2))
            speckle /= speckle.mean()
        image = image * (1 + rng.uniform(0.2, 1.0) * (speckle - 1))
    low, high = np.percentile(image[::3, ::3], [0.5, 99.5])
    image = np.clip((image - low) / max(high - low, 1e-3), 0, 1)
    image = image ** np.exp(rng.normal(0, 0.35))
    if rng.random() < 0.15:
        image = 1 - image
    return np.rint(image * 255).astype(np.uint8)


def _random(rng: np.random.Generator, size: int) -> Scene:
    shape = (size, size)
    painter = _RegionPainter(shape, _Looks(rng))
    _random_clutter(painter, rng, size)
    chosen = [rng.random() < p for _, p in _RANDOM_LAYOUTS]
    if not any(chosen):
        chosen[rng.integers(len(chosen))] = True
    for (layout, _), use in zip(_RANDOM_LAYOUTS, chosen, strict=True):
        if use:
            layout(painter, rng, size)
    if rng.random() < 0.8:
        painter.deform(rng, rng.uniform(0.005, 0.03) * size, rng.uniform(0.1, 0.3) * size)
    painter.keep_largest_pieces()
    return painter.scene(_render(painter, rng, size), SceneKind.RANDOM)


_GENERATORS = {
    SceneKind.CT: _ct,
    SceneKind.ULTRASOUND: _ultrasound,
    SceneKind.NUCLEI: _nuclei,
    SceneKind.MIXED: _mixed,
    SceneKind.RANDOM: _random,
}


MODALITY_KINDS = (SceneKind.CT, SceneKind.ULTRASOUND, SceneKind.NUCLEI, SceneKind.MIXED)
"""The modality-like kinds: those ``mixed`` draws from and ``"all"`` cycles through. Not
``random``: adding it would change every scene drawn from a seed before it existed."""


def make_scene(kind: str | SceneKind, rng: np.random.Generator, size: int = 256) -> Scene:
    """Generate one scene of ``kind`` (``mixed`` draws one of :data:`MODALITY_KINDS`, its own
    generic shapes included).

    Parameters
    ----------
    kind : str or SceneKind
        ``ct``, ``ultrasound``, ``nuclei``, ``mixed`` or ``random``.
    rng : np.random.Generator
        Source of randomness (a seeded generator makes scenes reproducible).
    size : int
        Side of the square image in pixels.
    """
    kind = SceneKind(kind)
    if kind is SceneKind.MIXED:
        kind = SceneKind(str(rng.choice(MODALITY_KINDS)))
    return _draw(kind, rng, size)


def _draw(kind: SceneKind, rng: np.random.Generator, size: int) -> Scene:
    while True:  # a scene whose objects were all occluded away is drawn again
        scene = _GENERATORS[kind](rng, size)
        if scene.labels.max() > 0:
            return scene


def training_scene(
    rng: np.random.Generator, size: int = 256, random_fraction: float = 0.5
) -> Scene:
    """One scene of the training mix: a domain-randomised ``random`` scene with probability
    ``random_fraction``, else one of :data:`MODALITY_KINDS` drawn uniformly (``mixed`` meaning
    its own generic shapes here).

    Parameters
    ----------
    rng : np.random.Generator
    size : int
        Side of the square image in pixels.
    random_fraction : float
        Chance of a ``random`` scene, in [0, 1].

    Raises
    ------
    ValueError
        ``random_fraction`` outside [0, 1].
    """
    if not 0 <= random_fraction <= 1:
        raise ValueError(f"random_fraction must lie in [0, 1], got {random_fraction}")
    if rng.random() < random_fraction:
        return _draw(SceneKind.RANDOM, rng, size)
    return _draw(MODALITY_KINDS[rng.integers(len(MODALITY_KINDS))], rng, size)


def scene_kinds(kind: str) -> list[SceneKind]:
    """The kinds a run of generated scenes cycles through: :data:`MODALITY_KINDS` for
    ``"all"`` (``random`` only when asked for by name), else ``kind`` alone.

    Raises
    ------
    ValueError
        An unknown kind.
    """
    return list(MODALITY_KINDS) if kind == "all" else [SceneKind(kind)]


def write_dataset(
    out, count: int, seed: int, kind: str | SceneKind = SceneKind.MIXED, size: int = 256
):
    """Write ``count`` scenes as ``out/images/NAME.tif`` and ``out/masks/NAME.tif``.

    Masks are int32 instance labels. ``out/objects.json`` records each image's kind, its
    intensity window and which objects lie inside which (child → parent). A generator,
    yielding the number of scenes written so far.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = {}
    for i in range(count):
        scene = make_scene(kind, rng, size)
        name = f"{scene.kind.value}_{i:04d}"
        tifffile.imwrite(out / "images" / f"{name}.tif", scene.image, compression="zlib")
        tifffile.imwrite(out / "masks" / f"{name}.tif", scene.labels, compression="zlib")
        index[name] = {
            "kind": scene.kind.value,
            "window": scene.window.to_dict(),
            "parents": {str(c): p for c, p in scene.parents.items()},
        }
        yield i + 1
    (out / "objects.json").write_text(json.dumps({"seed": seed, "images": index}, indent=1))


def make_ct_volume(
    rng: np.random.Generator, slices: int = 24, size: int = 256
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """A CT-like abdominal volume in Hounsfield units with organ ground truth.

    Organs are ellipsoid-like bodies whose cross-section changes from slice to slice: a
    liver with a lesion inside, two kidneys over part of the volume, a spleen, the aorta and
    the spine throughout, in a body outline on air.

    Returns
    -------
    volume : np.ndarray
        int16 ``(slices, size, size)`` Hounsfield units.
    labels : np.ndarray
        uint8 ``(slices, size, size)`` organ labels.
    names : dict of str to int
        Organ name → label.
    """
    shape = (size, size)
    c = np.array(shape) / 2
    names = {"liver": 1, "lesion": 2, "kidney_right": 3, "kidney_left": 4, "spleen": 5,
             "aorta": 6, "spine": 7}  # fmt: skip
    seeds = {name: int(rng.integers(1 << 31)) for name in names}
    volume = np.full((slices, *shape), -1000.0, np.float32)
    labels = np.zeros((slices, *shape), np.uint8)
    zc = (slices - 1) / 2

    def extent(z, centre, half):  # cross-section scale of an ellipsoid at slice z
        t = (z - centre) / half
        return np.sqrt(max(0.0, 1 - t * t))

    organs = [
        # name, centre offset (rows, cols) in units of size, radius, z-centre, z-half, HU
        ("liver", (-0.06, -0.13), 0.14, zc - 2, slices * 0.55, 60.0),
        ("spleen", (-0.06, 0.2), 0.07, zc - 4, slices * 0.3, 50.0),
        ("kidney_right", (0.14, -0.2), 0.055, zc + 3, slices * 0.3, 35.0),
        ("kidney_left", (0.14, 0.2), 0.055, zc + 4, slices * 0.3, 35.0),
    ]
    for z in range(slices):
        body = ellipse(shape, c, (size * 0.36, size * 0.45), 0)
        volume[z][body] = -100
        volume[z][body & ~ellipse(shape, c, (size * 0.3, size * 0.39), 0)] = 45
        for name, offset, radius, z0, half, hu in organs:
            scale = extent(z, z0, half)
            if scale * radius * size < 2:
                continue
            mask = body & blob(shape, c + np.array(offset) * size, radius * size * scale,
                               np.random.default_rng(seeds[name]), 0.3)  # fmt: skip
            volume[z][mask] = hu
            labels[z][mask] = names[name]
        lesion_scale = extent(z, zc - 2, 3.5)
        if lesion_scale > 0:
            lesion_rng = np.random.default_rng(seeds["lesion"])
            lesion_radius = 0.035 * size * lesion_scale
            lesion = blob(
                shape, c + np.array([-0.04, -0.15]) * size, lesion_radius, lesion_rng, 0.2
            )
            lesion &= labels[z] == names["liver"]
            volume[z][lesion] = 5.0
            labels[z][lesion] = names["lesion"]
        aorta = ellipse(shape, c + [0.1 * size, 0.02 * size], (0.025 * size,) * 2, 0)
        volume[z][aorta] = 180
        labels[z][aorta] = names["aorta"]
        spine = ellipse(shape, c + [0.22 * size, 0], (0.05 * size, 0.05 * size), 0)
        volume[z][spine] = 700
        labels[z][spine] = names["spine"]
    volume += rng.normal(0, 12, volume.shape).astype(np.float32)
    return np.clip(volume, -1024, 3071).astype(np.int16), labels, names


SAMPLE_SEED = 7
"""Seed of the sample images shipped in ``sample_data/``."""


def write_sample_data(folder) -> list:
    """Generate the shipped sample images and their ground truth into ``folder``.

    ``ct_volume.tif`` (int16 Hounsfield units, 24 × 256 × 256, 2.5 × 0.8 × 0.8 mm) with
    ``ct_volume_labels.tif``; ``ultrasound.tif`` and ``nuclei.tif`` (2D) with their
    ``*_labels.tif``; ``samples.json`` holds the volume's spacing and organ names. Returns
    the paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SAMPLE_SEED)
    volume, labels, names = make_ct_volume(rng)
    items = {"ct_volume": (volume, labels, {"spacing": [2.5, 0.8, 0.8], "labels": names})}
    for kind in ("ultrasound", "nuclei"):
        scene = make_scene(kind, rng, 256)
        items[kind] = (scene.image, scene.labels.astype(np.uint16), {})
    written = []
    for name, (image, truth, _) in items.items():
        for suffix, data in (("", image), ("_labels", truth)):
            path = folder / f"{name}{suffix}.tif"
            tifffile.imwrite(path, data, photometric="minisblack", compression="zlib")
            written.append(path)
    index = folder / "samples.json"
    index.write_text(json.dumps({name: extra for name, (*_, extra) in items.items()}, indent=1))
    return [*written, index]
