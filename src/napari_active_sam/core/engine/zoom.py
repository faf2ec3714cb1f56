"""Zoom-in for objects that are small against their image.

A slice larger than the model's input is shrunk to fit it, and an object of a dozen pixels
(a nucleus in a whole-slide tile) then covers two or three of the encoder's cells: too few
to outline. :class:`ZoomingPredictor` decodes instead in a window around the prompts, cut
from the slice and enlarged to the model's input (:data:`MAGNIFY` times the slice's own
resolution at first, as RITM's and FocalClick's zoom-in resize a crop around the object to
the network's input), encoded on first use and kept. A new object's window is the one of a
grid of half-overlapping windows centred nearest its prompts, so neighbouring objects share
windows; later clicks on the object that fit its window with the margin stay in it. A window
depends only on the object's own prompts (and, for a click refining an earlier answer, on
the window of that answer, remembered for the last :data:`RECENT` answers): the same click
gives the same mask whatever was clicked before. If the mask it shows reaches the window's
edge inside the image, the object is larger than the window, and if it is empty though a
click or a box asks for an object, the window saw too little of it: either way the side
doubles and the prompts are decoded again, up to the whole slice. The size of a new
object is not known at its first click, so a lone click can be decoded in windows of
several magnifications (:data:`SCALES`, one by default) and the answer rated best kept;
the object's later clicks stay in its window. Masks and probabilities come back at the
slice's size, zero outside the window.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..prompts import PromptSet
from .embeddings import SliceEncoder
from .predictor import Prediction, Predictor, PriorMask, ambiguous, shown_head
from .preprocess import to_sam_rgb
from .store import Embedding, slice_signature

ZOOM_FROM = 1.5
"""Zoom only on slices whose long side is at least this many times the model's input."""
MAGNIFY = 2.0
"""Model-input pixels per slice pixel in the first window: its side is the model's input
side over this (chosen on the real validation set; see the model card)."""
SCALES = (1.0,)
"""Multiples of the first window's magnification a lone click starting an object is
decoded at (with :data:`MAGNIFY`, × 2); with several, the answer rated best is shown. On
the real validation set, with the quality ensemble rating, the demo model's stage 9 gained
from a second window four times enlarged (mIoU@1 0.573 and @5 0.776 against 0.550 and
0.752 at × 2 alone), the shipped stage 11 does not (0.655 / 0.776 / NoC@85 11.97 with it,
0.654 / 0.775 / 11.55 without, for a third of the windows encoded; see the model card).
``--scales 1,2`` in ``eval_demo_model.py`` and the ``scales`` of :class:`ZoomingPredictor`
ask for more."""
MAX_MAGNIFY = 4.0
"""The largest first-window magnification chosen for a model adapted to small objects."""
OBJECT_SHARE = 0.25
"""Share of the model's input side a typical object should span in the first window of an
adapted model (:func:`magnify_for`)."""
MARGIN = 0.125
"""Space kept between the prompts and the window's edge, as a share of its side."""
RECENT = 16
"""Answers remembered, to know which window fed-back logits were decoded in."""


def zooms(size: tuple[int, ...], img_size: int) -> bool:
    """Whether a slice of ``size`` is large enough against a model's input side to zoom."""
    return max(size) >= ZOOM_FROM * img_size


@dataclass(frozen=True)
class Window:
    """A square-ish part of a slice: ``(top, left)`` and ``(height, width)`` in pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)

    def touches_inside(self, mask: np.ndarray, size: tuple[int, int]) -> bool:
        """Whether ``mask`` (the window's size) reaches an edge that is not the slice's."""
        rows, cols = size
        edges = [
            (self.top > 0, mask[0]),
            (self.left > 0, mask[:, 0]),
            (self.top + self.height < rows, mask[-1]),
            (self.left + self.width < cols, mask[:, -1]),
        ]
        return any(inner and edge.any() for inner, edge in edges)


def magnify_of(model) -> float:
    """The first-window magnification ``model`` decodes at: its own (an adapted model's,
    see :func:`magnify_for`) or :data:`MAGNIFY`."""
    return float(model.extra.get("magnify", MAGNIFY))


def magnify_for(extents, img_size: int) -> float:
    """The first-window magnification for objects whose longer sides are ``extents`` slice
    pixels: the power of two, 1 to :data:`MAX_MAGNIFY`, that makes the median one span
    about :data:`OBJECT_SHARE` of the model's input (an IHC nucleus of 14 pixels: 4; a
    coin of 40: 2)."""
    extents = np.asarray(extents, float)
    extents = extents[extents > 0]
    if not extents.size:
        return MAGNIFY
    wanted = OBJECT_SHARE * img_size / float(np.median(extents))
    return float(np.clip(2.0 ** np.round(np.log2(wanted)), 1.0, MAX_MAGNIFY))


def first_side(img_size: int, magnify: float = MAGNIFY) -> int:
    """Side, in slice pixels, of the first window around a click: the model's input side
    ``img_size`` over ``magnify``."""
    return round(img_size / magnify)


def _points(prompts: PromptSet) -> list[tuple[float, float]]:
    """``(y, x)`` of every click and of the box's corners."""
    points = [(c.y, c.x) for c in prompts.clicks]
    if prompts.box is not None:
        x0, y0, x1, y1 = prompts.box
        points += [(y0, x0), (y1, x1)]
    return points


def _holds(window: Window, points: list[tuple[float, float]], size: tuple[int, int]) -> bool:
    """Whether every ``(y, x)`` point lies inside ``window`` with the margin, on each side
    that is not the edge of the slice of ``size`` as well (the object ends there)."""
    margin = MARGIN * min(window.height, window.width)
    rows, cols = size
    top = window.top + (margin if window.top > 0 else 0)
    left = window.left + (margin if window.left > 0 else 0)
    bottom = window.top + window.height - (margin if window.top + window.height < rows else 0)
    right = window.left + window.width - (margin if window.left + window.width < cols else 0)
    return all(top <= y < bottom and left <= x < right for y, x in points)


def grid_window(prompts: PromptSet, size: tuple[int, int], side: int) -> Window | None:
    """The window of about ``side`` pixels on a grid of half-overlapping windows (corners
    every half side, the last flush with the slice's edge) whose centre is nearest the
    prompts', when it holds them with the margin; else :func:`window_around`. Neighbouring
    objects share grid windows, so a window encoded for one serves the next, while each
    prompt still gets the same window whatever was clicked before."""
    around = window_around(prompts, size, side)
    if around is None or max(around.height, around.width) > side:
        return around  # most of the slice, or prompts spread wider than the side
    points = _points(prompts)
    ys, xs = [y for y, _ in points], [x for _, x in points]
    top = _grid_start(size[0], around.height, (min(ys) + max(ys)) / 2)
    left = _grid_start(size[1], around.width, (min(xs) + max(xs)) / 2)
    snapped = Window(top, left, around.height, around.width)
    return snapped if _holds(snapped, points, size) else around


def _grid_start(length: int, extent: int, centre: float) -> int:
    """Of the grid's starts along an axis of ``length`` (every half ``extent``, and the
    last flush with the end), the one whose window is centred nearest ``centre``."""
    starts = np.append(np.arange(0, length - extent + 1, max(extent // 2, 1)), length - extent)
    return int(starts[np.argmin(np.abs(starts + extent / 2 - centre))])


def window_around(prompts: PromptSet, size: tuple[int, int], side: int) -> Window | None:
    """A window of about ``side`` pixels holding every prompt with a margin, inside a slice
    of ``size``; None when that is most of the slice (decode the whole slice then)."""
    rows, cols = size
    points = _points(prompts)
    ys = [y for y, _ in points]
    xs = [x for _, x in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys))
    side = int(max(side, np.ceil(span / (1 - 2 * MARGIN))))
    if side >= 0.75 * max(rows, cols):
        return None
    height, width = min(side, rows), min(side, cols)
    centre_row, centre_col = (min(ys) + max(ys)) / 2, (min(xs) + max(xs)) / 2
    top = int(np.clip(round(centre_row - height / 2), 0, rows - height))
    left = int(np.clip(round(centre_col - width / 2), 0, cols - width))
    return Window(top, left, height, width)


class ZoomingPredictor:
    """A :class:`Predictor` for one slice that decodes small objects in a window around the
    prompts, enlarged to the model's input.

    Parameters
    ----------
    predictor : Predictor
    raw : np.ndarray
        The slice as stored (``(H, W)`` or ``(H, W, 3)``).
    limits : tuple of float
        The intensity window the whole slice is encoded with (windows use the same).
    cache : int
        Window embeddings kept.
    magnify : float, optional
        Model-input pixels per slice pixel in the first window (1: the slice's own
        resolution); by default the model's own (:func:`magnify_of`).
    scales : tuple of float, optional
        Multiples of ``magnify`` a lone click starting an object is decoded at, the answer
        rated best returned (``(1.0,)``: ``magnify`` only). By default :data:`SCALES`, or
        ``magnify`` only for a model adapted to objects of a known size (one that carries
        its magnification, :func:`magnify_for`).
    """

    def __init__(self, predictor: Predictor, raw: np.ndarray, limits: tuple[float, float],
                 cache: int = 8, magnify: float | None = None,
                 scales: tuple[float, ...] | None = None):  # fmt: skip
        if magnify is not None and magnify < 1:
            raise ValueError(f"magnify is at least 1 (the slice's own resolution), got {magnify}")
        if scales is not None and not (scales and all(np.isfinite(scales)) and min(scales) >= 1):
            raise ValueError(f"scales are at least 1 (the first window's magnification), "
                             f"got {scales}")  # fmt: skip
        self.predictor, self.raw, self.limits = predictor, raw, limits
        self._magnify = magnify
        self._scales = None if scales is None else tuple(float(s) for s in scales)
        self.size = tuple(raw.shape[:2])
        self._embeddings: OrderedDict[Window, Embedding] = OrderedDict()
        self._cache = cache
        self._recent: deque[tuple[Prediction, Window | None]] = deque(maxlen=RECENT)
        self.windows_encoded = 0

    @property
    def model(self):
        return self.predictor.model

    @property
    def magnify(self) -> float:
        """The first window's magnification: the one given, else the model's own (it
        follows a predictor swapped for another model's)."""
        return magnify_of(self.model) if self._magnify is None else self._magnify

    @property
    def scales(self) -> tuple[float, ...]:
        """Multiples of :attr:`magnify` a lone click starting an object is decoded at: the
        ones given, else :data:`SCALES`, or one for a model that carries its magnification
        (it follows a predictor swapped for another model's)."""
        if self._scales is not None:
            return self._scales
        return (1.0,) if "magnify" in self.model.extra else SCALES

    @property
    def zooms(self) -> bool:
        """Whether the slice is large enough against the model's input to zoom at all."""
        return zooms(self.size, self.model.architecture.img_size)

    def _embedding(self, window: Window) -> Embedding:
        if window not in self._embeddings:
            crop = self.raw[window.slices]
            signature = slice_signature(
                crop, self.model.encoder_id, {"window": [window.top, window.left]}
            )
            (embedding,) = SliceEncoder(self.model).encode(
                [to_sam_rgb(crop, self.limits)], [signature]
            )
            self._embeddings[window] = embedding
            self.windows_encoded += 1
            while len(self._embeddings) > self._cache:
                self._embeddings.popitem(last=False)
        self._embeddings.move_to_end(window)
        return self._embeddings[window]

    def predict(
        self,
        embedding: Embedding,
        prompts: PromptSet,
        previous_logits: np.ndarray | torch.Tensor | PriorMask | None = None,
        min_side: int = 0,
        judge: Callable[[Prediction], Prediction] | None = None,
    ) -> Prediction:
        """As :meth:`Predictor.predict` on the whole slice's ``embedding``, decoded in a
        window around the prompts where the slice is large enough.

        Prompts that refine an earlier answer (``previous_logits`` are its logits, or a
        :class:`PriorMask` edited from it) and lie inside its window with the margin are
        decoded in that window again; otherwise in :func:`grid_window` for them, doubled
        while too small. The window depends only on the object's own prompts, never on what
        was clicked before it: the same click gives the same mask. ``previous_logits`` are
        fed back only when they come from the window decoded now (logits of another window
        lie on another grid); a :class:`PriorMask` of the slice is cut to the window. The
        window's side is at least ``min_side`` (from :func:`widened`, when the mask a user
        is shown was cut off by a smaller one).

        A lone click that starts an object is decoded at each of :attr:`scales` times the
        first window's magnification, and the answer whose best multimask mask is rated
        highest is returned: rated by ``judge`` (a function that returns an answer with its
        three multimask masks judged, such as the quality ensemble's) when given, else by
        SAM's IoU head. ``judge`` is applied to every answer returned.
        """
        if isinstance(previous_logits, PriorMask):
            previous_logits.check_size(self.size)  # before it is cut to a window
        judge = judge or (lambda prediction: prediction)
        if not self.zooms or prompts.is_empty:
            return judge(self.predictor.predict(embedding, prompts, previous_logits))
        if previous_logits is None and not min_side and ambiguous(prompts):
            answers = [judge(self._decode(embedding, prompts, None, 0, self.magnify * scale))
                       for scale in self.scales]  # fmt: skip
            return max(answers, key=_rating)  # the lower magnification on a tie
        return judge(self._decode(embedding, prompts, previous_logits, min_side, self.magnify))

    def _decode(self, embedding: Embedding, prompts: PromptSet, previous_logits,
                min_side: int, magnify: float) -> Prediction:  # fmt: skip
        """:meth:`predict` at one first-window magnification."""
        window = self._refined(previous_logits, prompts)
        side = first_side(self.model.architecture.img_size, magnify)
        if window is not None:
            side = max(window.height, window.width)
        if min_side > side:
            window, side = None, min_side
        while True:
            if window is None:
                window = grid_window(prompts, self.size, side)
            if window is None:
                feedback = self._feedback(previous_logits, None)
                prediction = self.predictor.predict(embedding, prompts, feedback)
                self._recent.append((prediction, None))
                return prediction
            feedback = self._feedback(previous_logits, window)
            local = self.predictor.predict(
                self._embedding(window), prompts.translated(-window.top, -window.left), feedback
            )
            shown = local.mask(shown_head(local, prompts))
            missed = prompts.asks_for_object and not shown.any()
            if not (missed or window.touches_inside(shown, self.size)):
                prediction = replace(local, origin=(window.top, window.left),
                                     full_size=self.size)  # fmt: skip
                self._recent.append((prediction, window))
                return prediction
            side, window = 2 * side, None

    def _refined(self, previous, prompts: PromptSet) -> Window | None:
        """The window the answer with ``previous`` logits (or a prior mask edited from it)
        was decoded in, when every prompt lies inside it with the margin; else None."""
        if isinstance(previous, PriorMask):
            if previous.decoded_in is None:
                return None
            decoded = Window(*previous.decoded_in)
            return decoded if _holds(decoded, _points(prompts), self.size) else None
        if previous is None:
            return None
        for answer, decoded in reversed(self._recent):
            if any(_same_logits(previous, head) for head in answer.logits):
                if decoded is not None and _holds(decoded, _points(prompts), self.size):
                    return decoded
                return None
        return None

    def _feedback(self, previous: np.ndarray | torch.Tensor | PriorMask | None,
                  window: Window | None):  # fmt: skip
        """``previous`` when an earlier answer decoded in ``window`` produced it, else None;
        a prior mask cut to ``window``."""
        if previous is None:
            return None
        if isinstance(previous, PriorMask):
            return previous if window is None else PriorMask(previous.mask[window.slices])
        for answer, decoded in reversed(self._recent):
            if any(_same_logits(previous, head) for head in answer.logits):
                return previous if decoded == window else None
        return None


def decode(
    decoder: Predictor | ZoomingPredictor,
    embedding: Embedding,
    prompts: PromptSet,
    previous_logits: np.ndarray | torch.Tensor | PriorMask | None = None,
    judge: Callable[[Prediction], Prediction] | None = None,
    min_side: int = 0,
) -> Prediction:
    """``decoder``'s answer to ``prompts``, judged by ``judge`` when given: a zooming
    decoder judges each magnification it tries for a lone click and returns the answer
    judged best (:meth:`ZoomingPredictor.predict`); a plain one's answer is judged as it
    is (``min_side`` only applies to a zooming one)."""
    if isinstance(decoder, ZoomingPredictor):
        return decoder.predict(embedding, prompts, previous_logits, min_side, judge)
    prediction = decoder.predict(embedding, prompts, previous_logits)
    return judge(prediction) if judge is not None else prediction


class JudgedDecoder:
    """A decoder whose answers are judged, for use where a plain decoder is expected (an
    :class:`~napari_active_sam.core.engine.predictor.InsistingPredictor`, a benchmark's
    episode): :func:`decode` with ``judge``, decoded again in a larger window while the
    head now shown is cut off by the window's edge (:func:`widened`), as the annotator does.

    Parameters
    ----------
    decoder : Predictor or ZoomingPredictor
    judge : callable
        ``judge(prediction, prompts, embedding)``: the answer with its three multimask masks
        judged (:attr:`Prediction.judged`).
    """

    def __init__(self, decoder: Predictor | ZoomingPredictor,
                 judge: Callable[[Prediction, PromptSet, Embedding], Prediction]):  # fmt: skip
        self.decoder, self.judge = decoder, judge

    @property
    def model(self):
        return self.decoder.model

    def predict(self, embedding: Embedding, prompts: PromptSet,
                previous_logits=None) -> Prediction:  # fmt: skip
        def judged(prediction: Prediction) -> Prediction:
            return self.judge(prediction, prompts, embedding)

        prediction = decode(self.decoder, embedding, prompts, previous_logits, judged)
        while side := widened(prediction, shown_head(prediction, prompts)):
            prediction = decode(self.decoder, embedding, prompts, previous_logits, judged, side)
        return prediction


def _rating(prediction: Prediction) -> float:
    """How well ``prediction``'s best multimask mask is rated: as judged, else by SAM's
    IoU head."""
    scores = prediction.iou[1:] if prediction.judged is None else prediction.judged
    return float(np.max(scores))


def widened(prediction: Prediction, head: int) -> int:
    """The side of a window twice that ``prediction`` was decoded in, when ``head``'s mask
    reaches the window's edge inside the slice; 0 when it does not, or the whole slice was
    decoded. A :class:`ZoomingPredictor` sizes its window by the head :func:`shown_head`
    picks; one chosen after it (the quality ensemble's pick, a head that takes a correction
    in) may reach further, and is cut off unless decoded again with ``min_side`` this."""
    if not prediction.zoomed:
        return 0
    (top, left), (height, width) = prediction.origin, prediction.original_size
    window = Window(top, left, height, width)
    if not window.touches_inside(prediction.mask(head)[window.slices], prediction.full_size):
        return 0
    return 2 * max(height, width)


def _same_logits(given: np.ndarray | torch.Tensor, head: torch.Tensor) -> bool:
    """Whether ``given`` are ``head``'s logits: the same memory, or equal values."""
    given = torch.as_tensor(given)
    if given.shape != head.shape:
        return False
    if (given.device == head.device and given.data_ptr() == head.data_ptr()
            and given.stride() == head.stride()):  # fmt: skip
        return True
    return bool(torch.equal(given.to(head.device), head))
