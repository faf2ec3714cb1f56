"""Where things lie: image pixels, SAM's low-resolution grid and acquisition cells."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from .checkpoints import LoadedModel


def upscale_grid(
    maps: torch.Tensor,
    img_size: int,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
) -> torch.Tensor:
    """Maps on SAM's low-resolution grid ``(C, g, g)`` → ``(C, H, W)`` at the image's size.

    The steps of :meth:`Sam.postprocess_masks` (bilinear to the padded model input, crop the
    padding, bilinear to the original size), without the last resize when the image already
    has the input's size (an identity).
    """
    maps = F.interpolate(
        maps[None].float(), (img_size, img_size), mode="bilinear", align_corners=False
    )
    maps = maps[..., : input_size[0], : input_size[1]]
    if tuple(input_size) != tuple(original_size):
        maps = F.interpolate(maps, tuple(original_size), mode="bilinear", align_corners=False)
    return maps[0]


ACQUISITION_CELL = 4
"""The head and the acquisition maps work on cells of about this many model-input pixels:
SAM's own low-resolution grid at 1024 px input (256 × 256 cells). Models with a finer grid
(the 256 px demo model's 128 × 128) average their logits over cells of this size, which keeps
the head's work, its K maps and the peak search the same size relative to the image."""


def acquisition_stride(model: LoadedModel) -> int:
    """Low-resolution grid pixels per acquisition cell side (1 for SAM at 1024 px)."""
    grid, img_size = model.architecture.low_res_size, model.architecture.img_size
    stride = max(1, round(ACQUISITION_CELL * grid / img_size))
    return stride if grid % stride == 0 else 1


def acquisition_grid(model: LoadedModel) -> int:
    """Side of the grid of acquisition cells: the head's grid."""
    return model.architecture.low_res_size // acquisition_stride(model)


def cell_logits(logits: np.ndarray | torch.Tensor, model: LoadedModel) -> torch.Tensor:
    """Low-resolution logits ``(..., g, g)`` averaged over acquisition cells."""
    logits = torch.as_tensor(np.asarray(logits, np.float32))
    stride = acquisition_stride(model)
    if stride == 1:
        return logits
    shape = logits.shape[:-2]
    pooled = F.avg_pool2d(logits.reshape(-1, 1, *logits.shape[-2:]), stride)
    return pooled.reshape(*shape, *pooled.shape[-2:])


def _scales(original_size: tuple[int, int], img_size: int) -> np.ndarray:
    """``(sx, sy)``: input pixels per original pixel after ResizeLongestSide."""
    height, width = original_size
    new_h, new_w = ResizeLongestSide.get_preprocess_shape(height, width, img_size)
    return np.array([new_w / width, new_h / height])


def image_to_grid(
    xy: np.ndarray, original_size: tuple[int, int], img_size: int, grid: int
) -> np.ndarray:
    """Image pixel ``(x, y)`` → grid ``(gx, gy)``, pixel centres to pixel centres; ``(N, 2)``."""
    scale = _scales(original_size, img_size) * grid / img_size
    return (np.asarray(xy, np.float64) + 0.5) * scale - 0.5


def grid_to_image(
    gxy: np.ndarray, original_size: tuple[int, int], img_size: int, grid: int
) -> np.ndarray:
    """Inverse of :func:`image_to_grid`, clipped to the image: grid → pixel ``(x, y)``."""
    height, width = original_size
    scale = _scales(original_size, img_size) * grid / img_size
    xy = (np.asarray(gxy, np.float64) + 0.5) / scale - 0.5
    return np.clip(xy, 0, [width - 1, height - 1])


def grid_fractions(
    mask: np.ndarray, input_size: tuple[int, int], img_size: int, grid: int
) -> np.ndarray:
    """float32 ``(2, grid, grid)``: the share of each grid cell a mask covers, and the share
    that lies on the image (0 in SAM's padding, which is at the bottom and right).

    Parameters
    ----------
    mask : np.ndarray
        ``(H, W)`` mask of the original slice.
    input_size : tuple of int
        The slice's size after ResizeLongestSide (``Embedding.input_size``).
    img_size : int
        The model's square input side.
    grid : int
        Output grid side (the head's grid of acquisition cells, or the embedding's).
    """
    h, w = input_size
    tensor = torch.as_tensor(np.asarray(mask, np.float32))[None, None]
    resized = F.interpolate(tensor, (h, w), mode="bilinear", align_corners=False)
    stacked = torch.cat([resized, torch.ones_like(resized)], dim=1)
    padded = F.pad(stacked, (0, img_size - w, 0, img_size - h))
    return F.adaptive_avg_pool2d(padded, grid)[0].numpy()
