"""Exemplar prompts: objects like the ones the user committed, found without a person.

From committed objects a prototype: the image embedding averaged inside each mask (weighted
by how much of each embedding cell the mask covers), and a background prototype from a ring
around them. On any slice whose embedding comes from the same encoder, every cell is scored
by its cosine similarity to the object prototype minus that to the background; peaks of the
score become point prompts, each with the box of the similar region around it. SAM answers
them; the user accepts or rejects each, or a quality threshold does. They give the
preference stage its prompts on images nobody outlined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.feature import peak_local_max

from ..engine.checkpoints import LoadedModel
from ..engine.embeddings import SliceEncoder
from ..engine.geometry import grid_fractions
from ..engine.preprocess import to_sam_rgb
from ..engine.store import Embedding
from ..engine.zoom import Window
from ..errors import ActiveSamError
from ..prompts import Click, PromptSet

RING_CELLS = 2
"""Width, in embedding cells, of the background ring around each exemplar."""
BOX_AREA = 4.0
"""A similar region larger than this many typical exemplars likely holds several objects:
its peak is prompted with the point alone."""
MIN_SCORE = 0.05
"""Cells scoring at or below this (object minus background similarity) are never a peak."""


@dataclass(frozen=True)
class Prototypes:
    """What the exemplars look like to the encoder: unit vectors of the embedding's width.

    Attributes
    ----------
    inside, around : torch.Tensor
        float32 ``(C,)``: mean embedding inside the exemplars, and in the rings around them.
    encoder_id : str
        The encoder whose embeddings they were taken from (others do not compare).
    exemplars : int
    typical_cells : float
        Median area of an exemplar, in embedding cells (sets how far apart peaks lie).
    side : int
        Side, in pixels of the slice, of the windows the exemplars were seen in (search
        tiles have the same).
    """

    inside: torch.Tensor
    around: torch.Tensor
    encoder_id: str
    exemplars: int
    typical_cells: float
    side: int


def _weights(mask: np.ndarray, embedding: Embedding, img_size: int):
    grid = int(embedding.features.shape[-1])
    fraction, on_image = grid_fractions(mask, embedding.input_size, img_size, grid)
    inside = torch.from_numpy(fraction)
    width = 2 * RING_CELLS + 1
    dilated = F.max_pool2d(inside[None, None], width, 1, RING_CELLS)[0, 0]
    ring = (dilated - inside).clamp(min=0) * torch.from_numpy(on_image)
    return inside, ring


def _centred_features(embedding: Embedding) -> torch.Tensor:
    """``(C, g, g)`` features minus their mean over the slice: what every cell shares (most
    of an embedding's length) says nothing about what makes an object."""
    features = embedding.features.float()
    return features - features.mean(dim=(1, 2), keepdim=True)


def prototypes(exemplars: Sequence[tuple[Embedding, np.ndarray]], encoder_id: str,
               img_size: int, side: int = 0) -> Prototypes:  # fmt: skip
    """Prototypes of ``exemplars``: ``(embedding of its slice or window, boolean mask)``
    pairs; ``side`` is the windows' side (0: whole slices).

    Raises
    ------
    ActiveSamError
        No exemplar with pixels.
    """
    inside_sum = around_sum = None
    areas = []
    for embedding, mask in exemplars:
        if not np.any(mask):
            continue
        features = _centred_features(embedding).flatten(1)  # (C, g*g)
        inside, ring = _weights(np.asarray(mask, bool), embedding, img_size)
        inside_mean = features @ inside.flatten() / inside.sum().clamp(min=1e-6)
        ring_mean = features @ ring.flatten() / ring.sum().clamp(min=1e-6)
        inside_sum = inside_mean if inside_sum is None else inside_sum + inside_mean
        around_sum = ring_mean if around_sum is None else around_sum + ring_mean
        areas.append(float(inside.sum()))
    if inside_sum is None:
        raise ActiveSamError("Commit at least one object to find objects like it.")
    return Prototypes(F.normalize(inside_sum, dim=0), F.normalize(around_sum, dim=0),
                      encoder_id, len(areas), float(np.median(areas)), side)  # fmt: skip


def similarity(embedding: Embedding, found: Prototypes) -> np.ndarray:
    """float32 ``(g, g)``: cosine similarity of every cell to the object prototype minus
    that to the background prototype (cells in SAM's padding score −1)."""
    features = F.normalize(_centred_features(embedding), dim=0)  # (C, g, g)
    score = torch.einsum("chw,c->hw", features, found.inside - found.around)
    grid = features.shape[-1]
    height, width = embedding.input_size
    scale = grid / max(embedding.input_size[0], embedding.input_size[1], 1)
    rows, cols = int(np.ceil(height * scale)), int(np.ceil(width * scale))
    padded = torch.full_like(score, -1.0)
    padded[:rows, :cols] = score[:rows, :cols]
    return padded.numpy()


def find_similar(
    embedding: Embedding,
    found: Prototypes,
    encoder_id: str,
    count: int = 20,
    exclude: np.ndarray | None = None,
    min_score: float = MIN_SCORE,
) -> list[tuple[PromptSet, float]]:
    """Point prompts (each with the box of its similar region) at objects that look like
    the exemplars, with their scores, best first, in pixels of ``embedding``'s slice.

    Parameters
    ----------
    embedding : Embedding
        Of the slice to search.
    found : Prototypes
    encoder_id : str
        The encoder ``embedding`` came from (must be the prototypes').
    count : int
        At most this many prompts.
    exclude : np.ndarray, optional
        Boolean ``(H, W)``: pixels already taken (committed objects); no peak lies there.

    Raises
    ------
    ActiveSamError
        An embedding from another encoder.
    """
    if encoder_id != found.encoder_id:
        raise ActiveSamError(
            f"The exemplars were seen by encoder {found.encoder_id}, this slice by "
            f"{encoder_id}: find similar objects with the model that encoded the exemplars."
        )
    score = similarity(embedding, found)
    grid = score.shape[-1]
    height, width = embedding.original_size
    to_pixels = max(height, width) / grid  # SAM's resize keeps the aspect: one scale
    if exclude is not None and np.any(exclude):
        taken = torch.as_tensor(np.asarray(exclude, np.float32))[None, None]
        size = (int(np.ceil(height / to_pixels)), int(np.ceil(width / to_pixels)))
        cells = F.adaptive_max_pool2d(taken, size)[0, 0].numpy() > 0
        score[: size[0], : size[1]][cells] = -1.0
    spacing = max(1, int(round(np.sqrt(found.typical_cells) / 2)))
    peaks = peak_local_max(score, min_distance=spacing, threshold_abs=min_score,
                           exclude_border=False, num_peaks=count)  # fmt: skip
    regions, _ = ndimage.label(score > max(min_score, float(score.max()) / 2))
    prompts: list[tuple[PromptSet, float]] = []
    for row, col in peaks:
        x, y = (col + 0.5) * to_pixels - 0.5, (row + 0.5) * to_pixels - 0.5
        if not (0 <= x < width and 0 <= y < height):
            continue
        box = None
        region = regions == regions[row, col]
        if regions[row, col] and region.sum() <= BOX_AREA * found.typical_cells:
            rr, cc = np.nonzero(region)
            box = (max(cc.min() * to_pixels, 0.0), max(rr.min() * to_pixels, 0.0),
                   min((cc.max() + 1) * to_pixels, width - 1.0),
                   min((rr.max() + 1) * to_pixels, height - 1.0))  # fmt: skip
            if box[0] >= box[2] or box[1] >= box[3]:
                box = None
        prompts.append((PromptSet((Click(float(x), float(y), True),), box), float(score[row, col])))
    return prompts


MIN_CELLS = 9.0
"""An exemplar should cover at least this many embedding cells to be recognised: smaller
objects are looked at through windows zoomed in by up to :data:`MAX_ZOOM`."""
MAX_ZOOM = 4


Exemplars = Sequence[tuple[np.ndarray, tuple[float, float], Sequence[np.ndarray]]]
"""Objects to learn the look of: per slice, ``(raw slice, intensity limits, masks)``."""


def exemplar_prototypes(model: LoadedModel, exemplars: Exemplars) -> Prototypes:
    """Prototypes of objects (boolean masks of their slices), each seen in a window centred
    on it, at a zoom that makes a typical one cover :data:`MIN_CELLS` cells or more.

    Raises
    ------
    ActiveSamError
        No mask with pixels.
    """
    found = [(raw, limits, np.asarray(m, bool)) for raw, limits, masks in exemplars
             for m in masks if np.any(m)]  # fmt: skip
    if not found:
        raise ActiveSamError("Commit at least one object to find objects like it.")
    img_size = model.architecture.img_size
    cell = img_size / model.architecture.embedding_size  # model-input pixels per cell
    # Slice pixels per model-input pixel without zoom, and a typical object in cells.
    natives = [max(1.0, max(raw.shape[:2]) / img_size) for raw, _, _ in found]
    area = float(np.median([m.sum() / (n * cell) ** 2 for (_, _, m), n in
                            zip(found, natives, strict=True)]))  # fmt: skip
    zoom = 1
    while zoom < MAX_ZOOM and area * zoom**2 < MIN_CELLS:
        zoom *= 2
    side = int(round(img_size * float(np.median(natives)) / zoom))
    encoder = SliceEncoder(model)
    seen = []
    for raw, limits, mask in found:
        rows, cols = np.nonzero(mask)
        window = _centred(raw.shape[:2], side, rows.mean(), cols.mean())
        (embedding,) = encoder.encode([to_sam_rgb(raw[window.slices], limits)], ["exemplar"])
        seen.append((embedding, mask[window.slices]))
    return prototypes(seen, model.encoder_id, img_size, side)


def _centred(size: tuple[int, int], side: int, row: float, col: float) -> Window:
    rows, cols = size
    height, width = min(side, rows), min(side, cols)
    top = int(np.clip(round(row - height / 2), 0, rows - height))
    left = int(np.clip(round(col - width / 2), 0, cols - width))
    return Window(top, left, height, width)


def search_slice(
    model: LoadedModel,
    raw: np.ndarray,
    limits: tuple[float, float],
    found: Prototypes,
    count: int = 50,
    exclude: np.ndarray | None = None,
) -> list[tuple[PromptSet, float]]:
    """:func:`find_similar` over a whole slice, at the scale the exemplars were seen at
    (tiles of :attr:`Prototypes.side`, overlapping by half; blank tiles left out); prompts
    found twice are kept once. Best first, in pixels of the slice."""
    size = raw.shape[:2]
    side = found.side or max(size)
    encoder = SliceEncoder(model)
    tiles = _tiles(size, side) if side < max(size) else [None]
    merged: list[tuple[PromptSet, float]] = []
    cell = 1.0  # pixels per embedding cell
    for tile in tiles:
        crop = raw if tile is None else raw[tile.slices]
        if limits[1] <= limits[0] or np.ptp(crop) == 0:  # a blank field holds no object
            continue
        (embedding,) = encoder.encode([to_sam_rgb(crop, limits)], ["search"])
        cell = max(crop.shape[:2]) / embedding.features.shape[-1]
        taken = None
        if exclude is not None:
            taken = exclude if tile is None else exclude[tile.slices]
        for prompts, score in find_similar(embedding, found, model.encoder_id, count, taken):
            if tile is not None:
                prompts = prompts.translated(tile.top, tile.left)
            merged.append((prompts, score))
    merged.sort(key=lambda item: -item[1])
    spacing = cell * np.sqrt(max(found.typical_cells, 1.0)) / 2  # about an object's radius
    kept: list[tuple[PromptSet, float]] = []
    for prompts, score in merged:
        click = prompts.clicks[0]
        if all(np.hypot(click.x - k.clicks[0].x, click.y - k.clicks[0].y) >= spacing
               for k, _ in kept):  # fmt: skip
            kept.append((prompts, score))
    return kept[:count]


def _tiles(size: tuple[int, int], side: int) -> list[Window]:
    """Windows of ``side`` covering a slice of ``size``, overlapping by half."""

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        return sorted({*range(0, length - side, side // 2), length - side})

    rows, cols = size
    return [Window(top, left, min(side, rows), min(side, cols))
            for top in starts(rows) for left in starts(cols)]  # fmt: skip
