"""Small immutable records passed between the core and the GUI."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

    def with_click(self, click: Click) -> PromptSet:
        """Return a new prompt set with ``click`` appended."""
        return PromptSet(clicks=(*self.clicks, click), box=self.box)

    def point_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(coords, labels)``: float32 (N, 2) in (x, y) and int32 (N,) with 1/0."""
        coords = np.array([(c.x, c.y) for c in self.clicks], dtype=np.float32).reshape(-1, 2)
        labels = np.array([int(c.positive) for c in self.clicks], dtype=np.int32)
        return coords, labels


@dataclass(frozen=True)
class Progress:
    """A step of long-running work, yielded by core generators.

    Attributes
    ----------
    done, total : int
        Units finished so far and units in all (``total`` 0 when unknown).
    message : str
        What is happening, for a status line.
    """

    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass(frozen=True, eq=False)
class Prediction:
    """SAM's answer to one prompt set on one slice.

    Head order everywhere is SAM's: index 0 is the single-mask head, indices 1-3 the three
    multimask heads. Masks at the image's resolution are upscaled from the low-resolution
    logits when first asked for, head by head: an answer usually shows one head.

    Attributes
    ----------
    low_res_logits : np.ndarray
        float32 (4, h, w) logits on SAM's low-resolution grid (256 × 256 for a 1024 model).
    iou : np.ndarray
        float32 (4,) SAM's predicted IoU of each head.
    img_size : int
        The model's square input size.
    input_size : tuple of int
        ``(h, w)`` of the slice resized for the model (before padding).
    original_size : tuple of int
        ``(H, W)`` of the slice.
    """

    low_res_logits: np.ndarray
    iou: np.ndarray
    img_size: int
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    _upscaled: dict[int, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def probability(self, head: int) -> np.ndarray:
        """float32 ``(H, W)`` sigmoid of ``head``'s logits at the image's resolution."""
        head = range(len(self.low_res_logits))[head]
        if head not in self._upscaled:
            self._upscale([head])
        return self._upscaled[head]

    @property
    def probabilities(self) -> np.ndarray:
        """float32 ``(4, H, W)``: :meth:`probability` of every head."""
        heads = range(len(self.low_res_logits))
        missing = [h for h in heads if h not in self._upscaled]
        if missing:
            self._upscale(missing)
        return np.stack([self._upscaled[h] for h in heads])

    def _upscale(self, heads: list[int]) -> None:
        import torch  # here, not at the top: these records load without torch

        from .predictor import upscale_grid

        with torch.inference_mode():
            logits = torch.from_numpy(np.asarray(self.low_res_logits[heads], np.float32))
            maps = upscale_grid(logits, self.img_size, self.input_size, self.original_size)
            maps = torch.sigmoid(maps).numpy()
        for head, probability in zip(heads, maps, strict=True):
            self._upscaled[head] = probability

    @property
    def multimask_logits(self) -> np.ndarray:
        """float32 (3, h, w) low-res logits of the three multimask heads."""
        return self.low_res_logits[1:]

    @property
    def single_mask_logits(self) -> np.ndarray:
        """float32 (1, h, w) low-res logits of the single-mask head."""
        return self.low_res_logits[:1]

    @property
    def best_multimask_head(self) -> int:
        """Index (1-3) of the multimask head SAM rates best."""
        return int(np.argmax(self.iou[1:])) + 1

    def mask(self, head: int | None = None, threshold: float = 0.5) -> np.ndarray:
        """Boolean (H, W) mask of ``head`` (default: SAM's best multimask head)."""
        head = self.best_multimask_head if head is None else head
        return self.probability(head) > threshold


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
