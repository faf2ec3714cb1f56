"""Prompts and a cached embedding to SAM's masks: all four heads, IoUs, probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from ..errors import PromptError
from ..prompts import Click, PromptSet, left_out
from .checkpoints import LoadedModel
from .device import to_device, to_host
from .geometry import CellGrid, upscale_grid
from .store import Embedding

Maps = TypeVar("Maps", np.ndarray, torch.Tensor)

PRIOR_LOGIT = 8.0
"""Logit a :class:`PriorMask` gives SAM's mask prompt wholly inside (and minus it wholly
outside) the mask. On the 3D protocol's two volumes (``benchmarks/eval_volumes.py``, RITM,
box + 5) 3, 8 and 16 gave the real MRI 0.653, 0.642 and 0.662 and the sample CT 0.969–0.970:
differences of one or two objects' corrections and no trend, so the middle value."""


@dataclass(frozen=True, eq=False)
class PriorMask:
    """A mask SAM's answer should start from, given in the slice's (or a window's) pixels:
    the neighbouring slice's mask when an object grows through a volume. It is fed to SAM's
    mask prompt in place of an earlier answer's logits (micro-sam's volume segmentation
    projects a slice's mask onto the next as its box, as box and mask, or as points and
    mask).

    Attributes
    ----------
    mask : np.ndarray
        Boolean ``(H, W)``, the size of the slice decoded.
    decoded_in : tuple of int, optional
        ``(top, left, height, width)`` of the zoom window the mask was decoded in, when it
        is an answer edited (see :class:`InsistingPredictor`): asked again, it is decoded
        in that window, as a click refining an answer is.
    """

    mask: np.ndarray
    decoded_in: tuple[int, int, int, int] | None = None

    def check_size(self, size: tuple[int, ...]) -> None:
        """Refuse a mask of another size than the slice's ``(H, W)``.

        Raises
        ------
        PromptError
        """
        if self.mask.shape != tuple(size):
            raise PromptError(f"The prior mask is {self.mask.shape}, the slice {tuple(size)}: "
                              "give a mask of the slice.")  # fmt: skip

    def logits(self, input_size: tuple[int, int], img_size: int, grid: int) -> torch.Tensor:
        """``(grid, grid)`` float32 logits on the decoder's grid: the mask resized as the
        slice was for the model (``input_size``, padded to ``img_size``), each cell's share
        of mask (area averages) mapped linearly to ``±PRIOR_LOGIT``. A cell the mask
        touches is never pushed below 0: an object thinner than a cell would otherwise be
        told away (the box still says where it is)."""
        height, width = input_size
        mask = torch.as_tensor(np.ascontiguousarray(self.mask), dtype=torch.float32)[None, None]
        resized = F.interpolate(mask, (height, width), mode="area")
        padded = F.pad(resized, (0, img_size - width, 0, img_size - height))
        share = F.interpolate(padded, (grid, grid), mode="area")[0, 0]
        linear = (2 * share - 1) * PRIOR_LOGIT
        return torch.where(share > 0, linear.clamp(min=0), linear)


@dataclass(frozen=True, eq=False)
class Prediction:
    """SAM's answer to one prompt set on one slice.

    Head order everywhere is SAM's: index 0 is the single-mask head, indices 1-3 the three
    multimask heads. Masks at the image's resolution are upscaled from the low-resolution
    logits when first asked for, head by head: an answer usually shows one head.

    The logits stay on the device that decoded them, where the uncertainty maps are drawn
    from them too; what is shown comes to the host once, at the image's resolution.

    Attributes
    ----------
    logits : torch.Tensor
        float32 (4, h, w) logits on SAM's low-resolution grid (256 × 256 for a 1024
        model), on the decoding device (a numpy array is taken as CPU logits).
    iou : np.ndarray
        float32 (4,) SAM's predicted IoU of each head.
    img_size : int
        The model's square input size.
    input_size : tuple of int
        ``(h, w)`` of the slice resized for the model (before padding).
    original_size : tuple of int
        ``(H, W)`` of the slice, or of the window of it that was decoded.
    origin : tuple of int
        ``(row, column)`` of that window in the slice (``(0, 0)`` for the whole slice).
    full_size : tuple of int, optional
        ``(H, W)`` of the slice when a window of it was decoded: masks and probabilities
        then come back at this size, zero outside the window.
    judged : np.ndarray, optional
        float32 (3,) quality of the three multimask heads' masks as an estimator judged
        them (:meth:`QualityModels.judge
        <napari_active_sam.core.quality.estimators.QualityModels.judge>`); when given, it
        ranks the multimask heads instead of SAM's IoU head.
    """

    logits: torch.Tensor
    iou: np.ndarray
    img_size: int
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    origin: tuple[int, int] = (0, 0)
    full_size: tuple[int, int] | None = None
    judged: np.ndarray | None = None
    _upscaled: dict[int, np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self):
        if not isinstance(self.logits, torch.Tensor):
            logits = torch.from_numpy(np.asarray(self.logits, np.float32))
            object.__setattr__(self, "logits", logits)

    @cached_property
    def low_res_logits(self) -> np.ndarray:
        """float32 (4, h, w) :attr:`logits` on the host (a view of them on a CPU)."""
        (host,) = to_host(self.logits.float())
        return host

    def probability(self, head: int) -> np.ndarray:
        """float32 ``(H, W)`` sigmoid of ``head``'s logits at the image's resolution."""
        head = range(len(self.logits))[head]
        if head not in self._upscaled:
            self._upscale([head])
        return self._upscaled[head]

    @property
    def probabilities(self) -> np.ndarray:
        """float32 ``(4, H, W)``: :meth:`probability` of every head."""
        heads = range(len(self.logits))
        missing = [h for h in heads if h not in self._upscaled]
        if missing:
            self._upscale(missing)
        return np.stack([self._upscaled[h] for h in heads])

    def _upscale(self, heads: list[int]) -> None:
        (maps,) = to_host(self.device_probabilities(heads))
        for head, probability in zip(heads, maps, strict=True):
            self.keep(head, probability)

    @torch.inference_mode()
    def device_probabilities(self, heads: list[int]) -> torch.Tensor:
        """float32 ``(len(heads), H, W)``: :meth:`probability` of ``heads``, left on the
        logits' device (not kept: bring them to the host with other results, then
        :meth:`keep` them)."""
        logits = self.logits[heads].float()
        maps = upscale_grid(logits, self.img_size, self.input_size, self.original_size)
        return self.place(torch.sigmoid(maps))

    def keep(self, head: int, probability: np.ndarray) -> None:
        """Keep ``head``'s probability at the image's resolution, from
        :meth:`device_probabilities`, for :meth:`probability` and :meth:`mask`."""
        self._upscaled[range(len(self.logits))[head]] = probability

    @property
    def zoomed(self) -> bool:
        """Whether a window of the slice was decoded rather than the whole slice."""
        return self.full_size is not None

    def cells(self, model: LoadedModel) -> CellGrid:
        """The acquisition cells of what was decoded: the slice, or the window of it that a
        :class:`~napari_active_sam.core.engine.zoom.ZoomingPredictor` zoomed into."""
        return CellGrid.sized(model, self.original_size, self.input_size)

    def place(self, maps: Maps) -> Maps:
        """Maps ``(C, h, w)`` of the decoded window → ``(C, H, W)`` of the slice, zero
        outside the window (the maps themselves for a whole slice); numpy or torch, on the
        maps' device."""
        if self.full_size is None:
            return maps
        shape = (maps.shape[0], *self.full_size)
        if isinstance(maps, torch.Tensor):
            placed = maps.new_zeros(shape)
        else:
            placed = np.zeros(shape, maps.dtype)
        (row, col), (height, width) = self.origin, self.original_size
        placed[:, row : row + height, col : col + width] = maps
        return placed

    @property
    def multimask_logits(self) -> np.ndarray:
        """float32 (3, h, w) low-res logits of the three multimask heads."""
        return self.low_res_logits[1:]

    @property
    def best_multimask_head(self) -> int:
        """Index (1-3) of the multimask head rated best: by :attr:`judged` when the answer
        was judged, else by SAM's IoU head."""
        scores = self.iou[1:] if self.judged is None else self.judged
        return int(np.argmax(scores)) + 1

    def mask(self, head: int | None = None, threshold: float = 0.5) -> np.ndarray:
        """Boolean (H, W) mask of ``head`` (default: SAM's best multimask head)."""
        head = self.best_multimask_head if head is None else head
        return self.probability(head) > threshold


class Predictor:
    """SAM's prompt encoder and mask decoder over precomputed embeddings.

    Unlike ``SamPredictor.predict`` it returns every head at once: the decoder computes all
    four mask tokens in one pass anyway, and the uncertainty methods need them all.

    Parameters
    ----------
    model : LoadedModel
        The model whose embeddings will be passed to :meth:`predict`.
    """

    def __init__(self, model: LoadedModel):
        self.model = model
        self.transform = ResizeLongestSide(model.architecture.img_size)
        self._features: tuple[Embedding, torch.Tensor] | None = None

    def _device_features(self, embedding: Embedding) -> torch.Tensor:
        """``(1, C, h, w)`` float32 features of ``embedding`` on the model's device; those of
        the last embedding are kept, as the next clicks usually land on the same slice."""
        kept = self._features
        if kept is not None and kept[0] is embedding:
            return kept[1]
        features = to_device(embedding.features, self.model.device).float()[None]
        self._features = (embedding, features)
        return features

    def _check_prompts(self, prompts: PromptSet, size: tuple[int, int]) -> None:
        height, width = size
        for click in prompts.clicks:
            if not (-0.5 <= click.x < width - 0.5 and -0.5 <= click.y < height - 0.5):
                raise PromptError(
                    f"Point (x={click.x:g}, y={click.y:g}) lies outside the {height}×{width} "
                    "image: place points on the image."
                )
        if prompts.box is not None:
            x0, y0, x1, y1 = prompts.box
            if not (x0 < x1 and y0 < y1):
                raise PromptError(f"Box {prompts.box} is empty: give (x0, y0, x1, y1), x0 < x1.")
            if x1 < -0.5 or y1 < -0.5 or x0 >= width - 0.5 or y0 >= height - 0.5:
                raise PromptError(f"Box {prompts.box} lies outside the {height}×{width} image.")

    @torch.inference_mode()
    def predict(
        self,
        embedding: Embedding,
        prompts: PromptSet,
        previous_logits: np.ndarray | torch.Tensor | PriorMask | None = None,
    ) -> Prediction:
        """Decode masks for ``prompts`` on the slice ``embedding`` was computed from.

        Parameters
        ----------
        embedding : Embedding
            From :class:`~napari_active_sam.core.engine.embeddings.SliceEncoder` or the store.
        prompts : PromptSet
            Clicks and box in (x, y) pixels of the original slice.
        previous_logits : np.ndarray or torch.Tensor, optional
            ``(h, w)`` or ``(1, h, w)`` low-res logits of an earlier prediction (e.g.
            ``Prediction.logits[head]``, which stays on the device), fed to SAM's mask
            prompt; or a :class:`PriorMask` of the slice, fed to it the same way.

        Returns
        -------
        Prediction
            Low-res logits of all four heads and SAM's predicted IoUs; each head's
            probabilities at the slice's resolution are upscaled when first asked for.

        Raises
        ------
        PromptError
            For no prompt at all, points or a box outside the image, previous logits of
            the wrong shape, or a prior mask of another size than the slice.
        """
        sam = self.model.sam
        device = sam.device
        if prompts.is_empty and previous_logits is None:
            raise PromptError("Give at least one point or a box.")
        self._check_prompts(prompts, embedding.original_size)

        points = None
        if prompts.clicks:
            coords, labels = prompts.point_arrays()
            coords = self.transform.apply_coords(coords, embedding.original_size)
            points = (
                torch.as_tensor(coords, dtype=torch.float, device=device)[None],
                torch.as_tensor(labels, dtype=torch.int, device=device)[None],
            )
        boxes = None
        if prompts.box is not None:
            box = self.transform.apply_boxes(
                np.array(prompts.box, np.float32), embedding.original_size
            )
            boxes = torch.as_tensor(box, dtype=torch.float, device=device)
        masks = None
        if isinstance(previous_logits, PriorMask):
            previous_logits.check_size(embedding.original_size)
            previous_logits = previous_logits.logits(
                tuple(embedding.input_size), self.model.architecture.img_size,
                self.model.architecture.low_res_size,
            )  # fmt: skip
        if previous_logits is not None:
            grid = self.model.architecture.low_res_size
            shape = tuple(previous_logits.shape)
            if shape not in ((grid, grid), (1, grid, grid)):
                raise PromptError(
                    f"Previous logits must be {grid}×{grid} (the decoder's grid), got {shape}."
                )
            masks = to_device(previous_logits, device).float().reshape(1, 1, grid, grid)

        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=masks)
        low_res, iou = sam.mask_decoder.predict_masks(
            image_embeddings=self._device_features(embedding),
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        (scores,) = to_host(iou[0].float())
        return Prediction(
            logits=low_res[0].float(),
            iou=scores,
            img_size=self.model.architecture.img_size,
            input_size=tuple(embedding.input_size),
            original_size=tuple(embedding.original_size),
        )


def ambiguous(prompts: PromptSet) -> bool:
    """Whether ``prompts`` are a lone click (or nothing), which SAM answers with three
    candidate masks (a part, the object, a whole) rather than one."""
    return len(prompts.clicks) <= 1 and prompts.box is None


def shown_head(prediction: Prediction, prompts: PromptSet) -> int:
    """The head a user sees: the best-rated multimask head for a lone click (ambiguous);
    for a box alone, the head SAM's IoU head rates best of all four (its single-mask answer
    unless a multimask head is rated above it: on a large organ of many textures the
    single-mask answer of a small model can be a faint patch where a multimask head has the
    outline); the single-mask head for several clicks, or clicks with a box (SAM's own
    recommendation)."""
    if ambiguous(prompts):
        return prediction.best_multimask_head
    if prompts.box is not None and not prompts.clicks:
        return int(np.argmax(prediction.iou))
    return 0


def contradicted(prediction: Prediction, head: int, prompts: PromptSet) -> int:
    """How many of the clicks ``head``'s mask contradicts: positive clicks outside it and
    negative clicks inside it (:func:`~napari_active_sam.core.prompts.left_out`)."""
    return len(left_out(prediction.mask(head), prompts))


def honouring_head(prediction: Prediction, prompts: PromptSet, head: int) -> int:
    """``head``, or when its mask contradicts some of the clicks (:func:`contradicted`), the
    head that contradicts fewest, SAM's best-rated first among equals: a correction that
    SAM answers by keeping the mask it was given is shown by a head that takes it in."""
    wrong = contradicted(prediction, head, prompts)
    if not wrong:
        return head
    order = np.argsort(-np.asarray(prediction.iou, float), kind="stable")
    fewest, _, best = min(
        (contradicted(prediction, int(h), prompts), rank, int(h)) for rank, h in enumerate(order)
    )
    return best if fewest < wrong else head


def refining_head(prediction: Prediction, prompts: PromptSet) -> int:
    """The head shown when ``prompts`` with clicks correct a mask given to SAM's mask
    prompt: the one SAM's IoU head rates best among those that contradict fewest clicks
    (:func:`honouring_head` from the best-rated head). Given a mask to refine, SAM's
    single-mask answer may return it with a click left out, or answer a negative click on
    its rim by cutting much of it away."""
    return honouring_head(prediction, prompts, int(np.argmax(prediction.iou)))


def edited_at(mask: np.ndarray, clicks: tuple[Click, ...], radius: float) -> np.ndarray:
    """``mask`` with a disc of ``radius`` pixels around each of ``clicks`` put in (a
    positive click) or taken out (a negative one): what the clicks say of the mask."""
    edited = np.array(mask, bool)
    rows, cols = np.ogrid[: edited.shape[0], : edited.shape[1]]
    for click in clicks:
        disc = (rows - click.y) ** 2 + (cols - click.x) ** 2 <= radius**2
        edited[disc] = click.positive
    return edited


class InsistingPredictor:
    """A decoder that asks SAM once more when the mask a user would see leaves clicks out.

    A small model often answers a correction with a mask that still leaves the clicked pixel
    out (on the real validation set's nuclei, the demo model's stage 9 did for 57 % of RITM's
    corrections). The mask shown is then edited at those clicks (a disc of one cell of the
    decoder's grid, at least :data:`INSIST_RADIUS` pixels, put in or taken out) and given
    to SAM's mask prompt with the same prompts: SAM outlines the object with the clicks
    taken in far more often than the disc alone would (74 % of those nuclei), and its answer
    is kept when it leaves fewer clicks out.

    Parameters
    ----------
    decoder
        A :class:`Predictor`, or one that zooms or judges (same ``predict``).
    """

    def __init__(self, decoder):
        self.decoder = decoder

    @property
    def model(self) -> LoadedModel:
        return self.decoder.model

    def predict(self, embedding: Embedding, prompts: PromptSet, previous_logits=None,
                **options) -> Prediction:  # fmt: skip
        """As the decoder's ``predict``; again from the edited mask when the head
        :func:`shown_head` picks leaves some of the clicks out."""
        prediction = self.decoder.predict(embedding, prompts, previous_logits, **options)
        found = insistence(prediction.mask(shown_head(prediction, prompts)), prompts, prediction)
        if found is None:
            return prediction
        missed, edited = found
        again = self.decoder.predict(embedding, prompts, edited, **options)
        if len(left_out(again.mask(shown_head(again, prompts)), prompts)) < missed:
            return again
        return prediction


def insistence(shown: np.ndarray, prompts: PromptSet,
               prediction: Prediction) -> tuple[int, PriorMask] | None:  # fmt: skip
    """When ``shown`` (the mask a user sees of ``prediction``) leaves clicks out: how many,
    and the mask edited at them to ask SAM again from (an answer is kept when it leaves
    fewer out); None when it takes every click in."""
    missed = left_out(shown, prompts)
    if not missed:
        return None
    window = (*prediction.origin, *prediction.original_size) if prediction.zoomed else None
    return len(missed), PriorMask(edited_at(shown, missed, insist_radius(prediction)), window)


INSIST_RADIUS = 2.0
"""The smallest disc, in slice pixels, an insisting decoder puts in or takes out at a click."""


def insist_radius(prediction: Prediction) -> float:
    """The radius, in slice pixels, of the disc put in or taken out at a click left out of
    ``prediction``'s mask: one cell of the decoder's grid where it was decoded, at least
    :data:`INSIST_RADIUS`."""
    input_pixels = prediction.img_size / prediction.logits.shape[-1]
    scale = max(prediction.original_size) / max(prediction.input_size)
    return max(INSIST_RADIUS, input_pixels * scale)
