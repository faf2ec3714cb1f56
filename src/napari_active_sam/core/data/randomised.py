"""Domain-randomised scenes after SynthSeg (Billot et al. 2023): random label maps (Voronoi
tissue, organs, blobs, tubes, crowds of small objects, objects inside objects, elastically
deformed) with a random appearance per region, bias field, blur, resolution, noise model,
gamma and clutter that is not an object; some scenes in colour, as a stained bright-field
slide (Beer–Lambert absorbance of a random stain per look) or a fluorescence composite (a
random emission colour per look)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..enums import SceneKind
from .shapes import Painter, Scene, random_center

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


def _curve_crop(shape, rng: np.random.Generator, width: float, length: float, start=None):
    """Like :func:`tube` (a smooth random curve ``length`` pixels long, ``width`` wide, from
    ``start`` or a random point), computed in its bounding window only: ``(slices, mask)`` or
    None outside the image."""
    n = max(int(length), 8)
    t = np.linspace(0, 1, n)
    heading = rng.uniform(0, 2 * np.pi)
    curvature = rng.normal(0, 2.5) + 2.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t)
    angles = heading + np.cumsum(curvature) / n
    start = rng.uniform(0, 1, 2) * shape if start is None else np.asarray(start, float)
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


class _RegionPainter(Painter):
    """A :class:`Painter` that paints label maps for domain randomisation: every painted
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
    """Large smooth regions (organs), overlapping into shared boundaries, some with
    structures inside them, with lesions; sometimes the first one fills most of the field,
    as a brain does a head MRI slice."""
    shape = painter.labels.shape
    for i in range(rng.integers(1, 5)):
        if i == 0 and rng.random() < 0.4:
            radius = rng.uniform(0.3, 0.46) * size
            center = random_center(rng, shape, 0.35 * size)
        else:
            radius = rng.uniform(0.12, 0.3) * size
            center = random_center(rng, shape, 0.1 * size)
        crop = _blob_crop(shape, center, radius, rng, rng.uniform(0.15, 0.5), rng.uniform(1, 1.8))
        label = painter.paint(*crop, painter.looks.add()) if crop else 0
        if label and rng.random() < 0.5:
            _interior(painter, rng, label, radius)
        if label and rng.random() < 0.5:
            _random_children(painter, rng, label, radius, rng.integers(1, 4))


def _interior(painter: _RegionPainter, rng, parent: int, radius: float) -> None:
    """Structures inside object ``parent`` that belong to it and are not objects: patches of
    other looks (grey and white matter) and folds (sulci), so that the answer to a box or a
    click on a heterogeneous organ is its outline, as for a brain on an MRI slice."""
    ys, xs = np.nonzero(painter.labels == parent)
    if not len(ys):
        return
    if rng.random() < 0.7:
        window = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        shape = (window[0].stop - window[0].start, window[1].stop - window[1].start)
        field_ = _coarse_field(rng, shape, rng.uniform(0.08, 0.4) * radius)
        levels = np.digitize(field_, np.sort(rng.uniform(-1, 1, rng.integers(1, 3))))
        looks = [painter.looks.add() for _ in range(int(levels.max()))]
        painter.paint_cells(window, levels, looks, target=False, parent=parent)
    if rng.random() < 0.6:
        look = painter.looks.add(small=True)
        for _ in range(rng.integers(3, 13)):
            i = rng.integers(len(ys))
            crop = _curve_crop(painter.labels.shape, rng, rng.uniform(1, 3),
                               rng.uniform(0.3, 1.0) * radius, start=(ys[i], xs[i]))  # fmt: skip
            if crop:
                painter.paint(*crop, look, target=False, parent=parent)


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
        crop = _blob_crop(shape, random_center(rng, shape, 0.2 * size),
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
        crop = _blob_crop(shape, random_center(rng, shape, 0.05 * size), radius, rng,
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
        clusters = np.stack([random_center(rng, shape, 0.1 * size)
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
    if rng.random() < COLOUR_CHANCE:
        image = _colour(image, np.array(painter.region_looks)[painter.regions], rng)
    elif rng.random() < 0.15:
        image = 1 - image
    return np.rint(image * 255).astype(np.uint8)


COLOUR_CHANCE = 0.35
"""Share of domain-randomised scenes rendered in colour."""

_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
"""Optical density per unit of hematoxylin, eosin and DAB in R, G, B (Ruifrok & Johnston
2001), the stains random ones are mixed from."""


def _colour(image: np.ndarray, looks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 3)`` in [0, 1]: the grey rendering ``image`` coloured by each pixel's look.

    Half the time a bright-field slide: a look's stain (a random mix of hematoxylin, eosin
    and DAB, or a random absorbance) absorbs in proportion to the grey image's darkness, so
    two looks equally dark differ in hue only, as nuclei and DAB do. Else a fluorescence
    composite: each look emits a random colour with the grey image's brightness. The grey
    contrast is sometimes squeezed so that hue carries most of the difference between
    looks, and each channel gets its own noise.
    """
    count = int(looks.max()) + 1
    if rng.random() < 0.5:
        contrast = rng.uniform(0.15, 0.6)
        image = image.mean() + contrast * (image - image.mean())
    if rng.random() < 0.5:
        mix = rng.dirichlet(np.full(3, 0.5), count) @ _STAINS
        mix = np.where(rng.random((count, 1)) < 0.2, rng.uniform(0.05, 1, (count, 3)), mix)
        mix = np.clip(mix + rng.normal(0, 0.05, mix.shape), 0.02, None)
        mix /= np.linalg.norm(mix, axis=1, keepdims=True)
        field = _smooth_colours(mix.astype(np.float32), looks, rng)
        density = (1 - image)[..., None] * rng.uniform(1.0, 3.0)
        rgb = np.exp(-density * field)
    else:
        hues = rng.uniform(0, 1, (count, 3)) ** 0.7
        hues /= np.maximum(hues.max(axis=1, keepdims=True), 1e-3)
        rgb = image[..., None] * _smooth_colours(hues.astype(np.float32), looks, rng)
    rgb += rng.uniform(0, 0.03) * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(rgb, 0, 1)


def _smooth_colours(colours: np.ndarray, looks: np.ndarray, rng) -> np.ndarray:
    """``(H, W, 3)``: each pixel's look's colour, blurred a little so that colour edges are
    as soft as the blurred image's."""
    sigma = rng.uniform(0.3, 1.5)
    return np.stack([ndimage.gaussian_filter(colours[looks, c], sigma) for c in range(3)], -1)


def random_scene(rng: np.random.Generator, size: int) -> Scene:
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
