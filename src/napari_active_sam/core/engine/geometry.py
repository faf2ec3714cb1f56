"""Where things lie: image pixels, SAM's low-resolution grid and acquisition cells."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from ..prompts import PromptSet
from .checkpoints import LoadedModel
from .store import Embedding


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


def acquisition_grid(model: LoadedModel) -> int:
    """Side of the grid of acquisition cells: the head's grid."""
    return acquisition_cells(model)[1]


def acquisition_cells(model: LoadedModel) -> tuple[int, int]:
    """``(stride, side)``: low-resolution grid pixels per acquisition cell side (1 for SAM
    at 1024 px), and cells per side."""
    grid, img_size = model.architecture.low_res_size, model.architecture.img_size
    stride = max(1, round(ACQUISITION_CELL * grid / img_size))
    stride = stride if grid % stride == 0 else 1
    return stride, grid // stride


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


@dataclass(frozen=True)
class CellGrid:
    """The acquisition cells of one slice for one model: where the Bayesian head, the
    acquisition maps and the suggestions live (SAM's low-resolution grid, averaged over
    :func:`acquisition_cells` pixels per side).

    Attributes
    ----------
    img_size : int
        The model's square input side.
    stride : int
        Low-resolution grid pixels per cell side.
    side : int
        Cells per side (:func:`acquisition_grid`).
    original_size, input_size : tuple of int
        ``(H, W)`` of the slice, and after ResizeLongestSide (before padding).
    """

    img_size: int
    stride: int
    side: int
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @classmethod
    def of(cls, model: LoadedModel, embedding: Embedding) -> CellGrid:
        """The cells of the slice ``embedding`` was computed from."""
        return cls.sized(model, embedding.original_size, embedding.input_size)

    @classmethod
    def sized(cls, model: LoadedModel, original_size: tuple[int, int],
              input_size: tuple[int, int]) -> CellGrid:  # fmt: skip
        """The cells of a slice (or window) of ``original_size``, resized to ``input_size``."""
        stride, side = acquisition_cells(model)
        return cls(
            model.architecture.img_size, stride, side, tuple(original_size), tuple(input_size)
        )

    def pool(self, logits: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Low-resolution logits ``(..., g, g)`` averaged over the cells: ``(..., c, c)``,
        on the logits' device."""
        if isinstance(logits, torch.Tensor):
            logits = logits.float()
        else:
            logits = torch.from_numpy(np.asarray(logits, np.float32))
        if self.stride == 1:
            return logits
        shape = logits.shape[:-2]
        pooled = F.avg_pool2d(logits.reshape(-1, 1, *logits.shape[-2:]), self.stride)
        return pooled.reshape(*shape, *pooled.shape[-2:])

    def to_cells(self, xy: np.ndarray) -> np.ndarray:
        """Image pixels ``(N, 2)`` in ``(x, y)`` → cell coordinates ``(N, 2)``."""
        return image_to_grid(xy, self.original_size, self.img_size, self.side)

    def to_image(self, cxy: np.ndarray) -> np.ndarray:
        """Cell coordinates ``(N, 2)`` → image pixels ``(x, y)``, clipped to the image."""
        return grid_to_image(cxy, self.original_size, self.img_size, self.side)

    def upscale(self, maps: torch.Tensor) -> torch.Tensor:
        """Cell maps ``(C, c, c)`` → ``(C, H, W)`` the way SAM upscales its masks, on the
        maps' device."""
        return upscale_grid(maps, self.img_size, self.input_size, self.original_size)

    def fractions(self, mask: np.ndarray) -> np.ndarray:
        """:func:`grid_fractions` of ``mask`` on the cells: ``(2, c, c)``."""
        return grid_fractions(mask, self.input_size, self.img_size, self.side)

    def clicked(self, prompts: PromptSet) -> np.ndarray:
        """Boolean ``(c, c)``: the cells the prompts' clicks fall in."""
        cells = np.zeros((self.side, self.side), bool)
        if prompts.clicks:
            coords, _ = prompts.point_arrays()
            at = np.clip(np.rint(self.to_cells(coords)), 0, self.side - 1).astype(int)
            cells[at[:, 1], at[:, 0]] = True
        return cells

    def on_image(self) -> np.ndarray:
        """Boolean ``(c, c)``: the cells on the slice (not in SAM's padding, at the bottom
        and right)."""
        h, w = self.input_size
        inside = np.zeros((self.side, self.side), bool)
        inside[
            : int(np.ceil(h * self.side / self.img_size)),
            : int(np.ceil(w * self.side / self.img_size)),
        ] = True
        return inside
