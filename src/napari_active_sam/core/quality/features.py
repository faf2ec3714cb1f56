"""What the learned quality estimators read: the overlay crop and the pooled embedding."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.geometry import grid_fractions
from ..engine.store import Embedding

CROP_SIZE = 64
"""Side in pixels of the regressor's input crop."""


CROP_MARGIN = 0.25
"""Margin on each side of the mask's box, as a fraction of the box's longer side."""


MIN_CROP = 16
"""Smallest crop side in image pixels (a tiny mask still shows its surroundings)."""


RING_CELLS = 2
"""Width, in embedding-grid cells, of the ring around the mask for ``embedding``."""


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(row0, col0, row1, col1)`` of a non-empty boolean mask, ends inclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def overlay_crop(
    image: np.ndarray, mask: np.ndarray, size: int = CROP_SIZE, margin: float = CROP_MARGIN
) -> np.ndarray:
    """The regressor's input: a square crop around the mask with the mask in the red channel.

    The crop is centred on the mask's box, its side the box's longer side plus ``margin``
    of it on each side (at least :data:`MIN_CROP` pixels); pixels beyond the image are 0.
    The red channel becomes 0.5·R + 0.5·mask·255; the crop is resized (antialiased) to
    ``size`` × ``size``.

    Parameters
    ----------
    image : np.ndarray
        uint8 ``(H, W, 3)``.
    mask : np.ndarray
        Boolean ``(H, W)``, not empty.

    Returns
    -------
    np.ndarray
        uint8 ``(3, size, size)``.
    """
    height, width = mask.shape
    row0, col0, row1, col1 = mask_box(mask)
    side = max(row1 - row0 + 1, col1 - col0 + 1)
    side = max(int(np.ceil(side * (1 + 2 * margin))), MIN_CROP)
    top = int(np.floor((row0 + row1 + 1) / 2 - side / 2))
    left = int(np.floor((col0 + col1 + 1) / 2 - side / 2))
    crop = np.zeros((3, side, side), np.float32)
    r0, r1 = max(top, 0), min(top + side, height)
    c0, c1 = max(left, 0), min(left + side, width)
    if r1 > r0 and c1 > c0:
        window = np.moveaxis(image[r0:r1, c0:c1], -1, 0).astype(np.float32)
        window[0] = 0.5 * window[0] + 0.5 * 255.0 * mask[r0:r1, c0:c1]
        crop[:, r0 - top : r1 - top, c0 - left : c1 - left] = window
    resized = F.interpolate(
        torch.from_numpy(crop)[None], (size, size), mode="bilinear", antialias=True
    )[0]
    return resized.round().clamp(0, 255).to(torch.uint8).numpy()


def cell_fractions(
    mask: np.ndarray, embedding: Embedding, img_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The mask on the embedding grid: ``(fraction, on_image)``, float32 ``(g, g)`` each.

    ``fraction`` is the share of each cell the mask covers, ``on_image`` the share of each
    cell that lies on the image (SAM pads the resized image at the bottom and right).
    """
    grid = int(embedding.features.shape[-1])
    fraction, on_image = grid_fractions(mask, embedding.input_size, img_size, grid)
    return fraction, on_image


def embedding_features(embedding: Embedding, mask: np.ndarray, img_size: int) -> np.ndarray:
    """Features of the ``embedding`` estimator for one mask.

    The mask becomes area fractions on the embedding grid; the embedding is averaged inside
    (weighted by those fractions) and in a ring :data:`RING_CELLS` cells wide around it
    (zeros when the mask leaves no ring, e.g. the whole image). Four shape numbers follow:
    log(1 + area in cells), area / image area, ring / (area + ring), and area / cells
    touched (how fully the mask fills the cells it touches).

    Parameters
    ----------
    embedding : Embedding
        ``(C, g, g)`` features of the slice.
    mask : np.ndarray
        Boolean ``(H, W)``, not empty.
    img_size : int
        The model's input side (``LoadedModel.architecture.img_size``).

    Returns
    -------
    np.ndarray
        float32 ``(2C + 4,)``.
    """
    fraction, on_image = cell_fractions(mask, embedding, img_size)
    features = embedding.features.float().reshape(embedding.features.shape[0], -1).numpy()
    inside = fraction.ravel()
    width = 2 * RING_CELLS + 1
    dilated = F.max_pool2d(torch.from_numpy(fraction)[None, None], width, 1, RING_CELLS)
    ring = (np.clip(dilated[0, 0].numpy() - fraction, 0, None) * on_image).ravel()
    area, ring_area = float(inside.sum()), float(ring.sum())
    mean_inside = features @ inside / max(area, 1e-6)
    mean_ring = features @ ring / ring_area if ring_area > 1e-6 else np.zeros_like(mean_inside)
    touched = max(int(np.count_nonzero(inside > 1e-3)), 1)
    shape = [
        np.log1p(area),
        area / max(float(on_image.sum()), 1e-6),
        ring_area / max(area + ring_area, 1e-6),
        area / touched,
    ]
    return np.concatenate([mean_inside, mean_ring, shape]).astype(np.float32)
