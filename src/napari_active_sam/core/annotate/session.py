"""One annotation session: an image, a model, its embeddings, prompts per slice, commits.

The napari widget owns one session; everything here runs without Qt, so the same logic is
tested directly and used by scripts.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..active.acquisition import Uncertainty, mutual_information, uncertainty
from ..active.bayes_head import DEFAULT_SAMPLES, BayesHead
from ..engine.checkpoints import LoadedModel
from ..engine.embeddings import embed_slice, encode_slices
from ..engine.predictor import (
    InsistingPredictor,
    Prediction,
    Predictor,
    PriorMask,
    ambiguous,
    insistence,
    refining_head,
    shown_head,
)
from ..engine.preprocess import SliceSource
from ..engine.store import Embedding, EmbeddingStore, slice_key, slice_signature
from ..engine.zoom import JudgedDecoder, ZoomingPredictor, decode, widened, zooms
from ..errors import ModelError
from ..progress import Progress
from ..prompts import PromptSet, left_out

ZOOM_SLICES = 4
"""Slices whose zoom windows a session keeps (the most recently clicked)."""
ZOOM_WINDOWS = 4
"""Window embeddings kept per slice."""

HeadJudge = Callable[[Prediction, PromptSet, Embedding, np.ndarray], Prediction]
"""Judges the three masks of an answer to a lone click, given the slice's embedding and SAM
input: :meth:`QualityModels.judge
<napari_active_sam.core.quality.estimators.QualityModels.judge>` of the model's quality
networks, whose verdict picks the mask shown."""


@dataclass(frozen=True, eq=False)
class Answer:
    """What one click gives the user: SAM's answer, the mask to show, the uncertainty.

    Attributes
    ----------
    prediction : Prediction
    head : int
        The head whose mask is shown
        (:func:`~napari_active_sam.core.engine.predictor.shown_head`).
    mask : np.ndarray
        Boolean ``(H, W)`` mask to preview: that of ``head``.
    uncertainty : Uncertainty or None
        Map and suggestions, when an acquisition function was asked for.
    """

    prediction: Prediction
    head: int
    mask: np.ndarray
    uncertainty: Uncertainty | None = None


@dataclass
class AnnotationSession:
    """State of interactive segmentation on one image layer.

    Attributes
    ----------
    model : LoadedModel
    source : SliceSource
        The image and its intensity window.
    store : EmbeddingStore
        Embeddings of ``source``'s slices for ``model``.
    zoom : bool
        Decode clicks on small objects of a large slice in a window at the slice's own
        resolution (:class:`~napari_active_sam.core.engine.zoom.ZoomingPredictor`); slices
        under 1.5 times the model's input are always decoded whole.
    judge : HeadJudge, optional
        Chooses the mask shown for a lone click among SAM's three (and, zoomed in, the window
        among those of :data:`~napari_active_sam.core.engine.zoom.SCALES`; default: SAM's IoU
        head chooses).
    insist : bool
        Ask SAM once more, from the mask edited at the clicks, when the mask shown leaves
        some of them out
        (:class:`~napari_active_sam.core.engine.predictor.InsistingPredictor`).
    """

    model: LoadedModel
    source: SliceSource
    store: EmbeddingStore
    limits: tuple[float, float] = field(init=False)
    predictor: Predictor = field(init=False)
    head: BayesHead | None = None
    zoom: bool = True
    judge: HeadJudge | None = None
    insist: bool = True
    previous: dict[tuple[int, ...], tuple[PromptSet, torch.Tensor]] = field(
        default_factory=dict, init=False
    )
    slice_uncertainty: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict, init=False)
    """Slice → :func:`object_uncertainty` of its latest answer (clicks or propagation)."""
    _zooming: dict[tuple[int, ...], ZoomingPredictor] = field(
        default_factory=dict, init=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        self.limits = self.source.limits()
        self.predictor = Predictor(self.model)

    def is_encoded(self, index: tuple[int, ...]) -> bool:
        signature = slice_signature(
            self.source.raw_slice(index), self.model.encoder_id, self.source.parameters(self.limits)
        )
        return self.store.has(slice_key(index), signature)

    def encode(self, indices: list[tuple[int, ...]]) -> Generator[Progress, None, None]:
        """Encode ``indices`` in order (skipping those done), yielding progress."""
        yield from encode_slices(self.model, self.source, self.store, indices, limits=self.limits)

    def order_from(self, current: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Every slice, nearest to ``current`` first (the user's slice, then outwards)."""
        indices = self.source.slice_indices()
        here = np.array(current or (0,), float)
        return sorted(indices, key=lambda i: float(np.abs(np.array(i or (0,)) - here).sum()))

    def answer(
        self,
        index: tuple[int, ...],
        prompts: PromptSet,
        acquisition: str | None = None,
        samples: int = DEFAULT_SAMPLES,
        suggestions: int = 5,
        rng: np.random.Generator | None = None,
        prior: np.ndarray | None = None,
    ) -> Answer:
        """Decode ``prompts`` on slice ``index`` (encoding it first if needed), and draw the
        acquisition map and suggestions when one is named (BALD needs :attr:`head`).

        The slice's embedding is looked up once and the shown head chosen once; both serve
        the mask and the map. The logits of the previous answer on this slice are fed back,
        as in SAM's interactive use, but only when ``prompts`` extend the prompts of that
        answer (clicks added, nothing moved, removed or flipped); otherwise SAM starts
        afresh, or from ``prior`` (a boolean mask of the slice, such as the neighbouring
        slice's when an object grows through a volume) when one is given. Clicks that
        correct ``prior`` are shown by the head SAM rates best among those that take most
        of them in (:func:`~napari_active_sam.core.engine.predictor.refining_head`):
        given a mask to refine, SAM may answer a click on a slice propagation got wrong by
        returning that mask again, and its single-mask answer to a negative click on the
        rim of a large mask can cut half of it away (the real EPI brain: 2,102 of 4,257
        pixels left, Dice 0.65, where the multimask head rated best kept 3,928, Dice
        0.93). When the mask shown still leaves clicks out and :attr:`insist` is
        set, SAM is asked once more from that mask edited at them, and that answer is shown
        if it leaves fewer out (the rule of
        :class:`~napari_active_sam.core.engine.predictor.InsistingPredictor`); the check
        reads the mask already brought to the host, so an answer that takes every click in
        costs nothing more. Safe to call from several worker threads.
        """
        embedding = embed_slice(self.model, self.source, self.store, index, self.limits)
        refining = prior is not None
        with self._lock:
            earlier = self.previous.get(index)
            logits = earlier[1] if earlier and _extends(prompts, earlier[0]) else None
            if logits is None and refining:
                logits = PriorMask(np.asarray(prior, bool))
            prediction, head = self._decoded(index, embedding, prompts, logits, refining)
        answer = self._drawn(prediction, head, prompts, acquisition, samples, suggestions, rng)
        found = insistence(answer.mask, prompts, prediction) if self.insist else None
        if found is not None:
            missed, edited = found
            with self._lock:
                again = self._decoded(index, embedding, prompts, edited, refining)
            retried = self._drawn(*again, prompts, acquisition, samples, suggestions, rng)
            if len(left_out(retried.mask, prompts)) < missed:
                (prediction, head), answer = again, retried
        with self._lock:
            self.previous[index] = (prompts, prediction.logits[head])
            self.slice_uncertainty[index] = object_uncertainty(prediction)
        return answer

    def _decoded(self, index: tuple[int, ...], embedding: Embedding, prompts: PromptSet,
                 logits, refining: bool) -> tuple[Prediction, int]:  # fmt: skip
        """SAM's answer to ``prompts`` starting from ``logits``, judged, and the head shown
        (one that takes the clicks in when ``refining`` a given mask); decoded again in a
        larger window while that head is cut off by the window's edge."""
        decoder, side = self._decoder(index), 0

        def judge(prediction: Prediction) -> Prediction:
            return self._judged(index, prediction, prompts, embedding)

        while True:
            prediction = decode(decoder, embedding, prompts, logits, judge, side)
            head = shown_head(prediction, prompts)
            if refining and prompts.clicks:
                head = refining_head(prediction, prompts)
            side = widened(prediction, head)
            if not side:
                return prediction, head

    def _drawn(self, prediction: Prediction, head: int, prompts: PromptSet,
               acquisition: str | None, samples: int, suggestions: int,
               rng: np.random.Generator | None) -> Answer:  # fmt: skip
        """The answer a user sees: ``head``'s mask and, when ``acquisition`` is named, the
        map and suggestions, brought to the host together."""
        if not acquisition:
            return Answer(prediction, head, prediction.mask(head))
        found = uncertainty(
            acquisition, prediction, prompts, self.model, self.head, samples,
            suggestions, rng=rng, shown=head,
        )  # fmt: skip
        return Answer(prediction, head, prediction.mask(head), found)  # its map came along

    def decode(self, index: tuple[int, ...], prompts: PromptSet,
               prior: np.ndarray | None = None) -> Prediction:  # fmt: skip
        """SAM's answer to ``prompts`` on slice ``index`` (starting from ``prior``, a mask of
        the slice, if given), without the previous answer's logits and without being
        remembered: a look-ahead (what would this click give?) that leaves the session as
        it was."""
        embedding = embed_slice(self.model, self.source, self.store, index, self.limits)
        start = None if prior is None else PriorMask(np.asarray(prior, bool))
        with self._lock:
            decoder = JudgedDecoder(self._decoder(index), functools.partial(self._judged, index))
            if self.insist:
                decoder = InsistingPredictor(decoder)
            return decoder.predict(embedding, prompts, start)

    def _judged(self, index: tuple[int, ...], prediction: Prediction, prompts: PromptSet,
                embedding: Embedding) -> Prediction:  # fmt: skip
        """``prediction`` judged by :attr:`judge` when it answers a lone click."""
        if self.judge is None or not ambiguous(prompts):
            return prediction
        return self.judge(prediction, prompts, embedding, self.source.sam_slice(index, self.limits))

    def use_model(self, model: LoadedModel, head: BayesHead | None = None,
                  judge: HeadJudge | None = None) -> None:  # fmt: skip
        """Decode with ``model`` from now on (an adapted model, or the base model back),
        with its Bayesian head and its judge of masks; the embeddings (and zoom windows) are
        kept, so ``model`` must share this session's image encoder.

        Raises
        ------
        ModelError
            A model with another image encoder (start a session for it instead).
        """
        if model.encoder_id != self.model.encoder_id:
            raise ModelError(
                f"{model.model_id} has another image encoder than {self.model.model_id}: "
                "open the image with that model instead."
            )
        # No lock: a decode in flight finishes with the model it started with (the newest
        # request is decoded again), and the zoom windows' embeddings stay valid.
        predictor = Predictor(model)
        self.model, self.predictor, self.head, self.judge = model, predictor, head, judge
        for zooming in list(self._zooming.values()):
            zooming.predictor = predictor
        self.previous.clear()

    def _decoder(self, index: tuple[int, ...]) -> Predictor | ZoomingPredictor:
        """What decodes clicks on slice ``index``: a zooming predictor for a slice large
        against the model's input (its window embeddings kept for the slice), else the
        plain one."""
        size = tuple(self.source.spatial_shape[-2:])
        if not self.zoom or not zooms(size, self.model.architecture.img_size):
            return self.predictor
        zooming = self._zooming.pop(index, None) or ZoomingPredictor(
            self.predictor, self.source.raw_slice(index), self.limits, cache=ZOOM_WINDOWS
        )
        self._zooming[index] = zooming  # the most recently clicked last
        while len(self._zooming) > ZOOM_SLICES:
            self._zooming.pop(next(iter(self._zooming)))
        return zooming

    @property
    def windows_encoded(self) -> int:
        """Zoom windows encoded for the slices still held."""
        return sum(z.windows_encoded for z in self._zooming.values())

    def note_uncertainty(self, index: tuple[int, ...], score: torch.Tensor) -> None:
        """Record how unsure the model was of slice ``index`` when the answer came from
        elsewhere (SAM 2's tracking) or from several answers (a slice grown piece by
        piece): :meth:`most_uncertain` ranks it with the rest."""
        with self._lock:
            self.slice_uncertainty[index] = score

    def forget(self, index: tuple[int, ...]) -> None:
        with self._lock:
            self.previous.pop(index, None)

    def most_uncertain(self, count: int = 5) -> list[tuple[tuple[int, ...], float]]:
        """Slices with an answer, most uncertain first: ``[(index, score), ...]``. Safe to
        call while a worker adds answers (propagation does, slice after slice)."""
        with self._lock:
            held = list(self.slice_uncertainty.items())
        scores = [(index, float(score)) for index, score in held]
        return sorted(scores, key=lambda item: -item[1])[:count]


@torch.inference_mode()
def object_uncertainty(prediction: Prediction) -> torch.Tensor:
    """How unsure SAM is of one answer: the mean information gain over its multimask heads
    (nats) inside the union of their masks, on the decoder's grid; 0 for no mask. A 0-d
    tensor on the logits' device: computing it does not wait for the device."""
    logits = prediction.logits[1:].float().clamp(-30, 30)
    probabilities = torch.sigmoid(logits)
    region = (probabilities > 0.5).any(dim=0)
    gain = mutual_information(probabilities)
    return (gain * region).sum() / region.sum().clamp(min=1)


def _extends(prompts: PromptSet, earlier: PromptSet) -> bool:
    """Whether ``prompts`` are ``earlier`` plus new clicks (same box)."""
    count = len(earlier.clicks)
    return (
        prompts.box == earlier.box
        and len(prompts.clicks) > count
        and prompts.clicks[:count] == earlier.clicks
    )


def next_free_label(labels: np.ndarray) -> int:
    """The smallest label larger than every label in use."""
    return int(np.max(labels, initial=0)) + 1


def commit_pixels(
    labels: np.ndarray, mask: np.ndarray, overwrite: bool = False, replacing: int | None = None
) -> tuple[np.ndarray, ...]:
    """Indices of the ``mask`` pixels a commit may write into ``labels`` (same shape): those
    of :func:`committable`."""
    return np.nonzero(committable(labels, mask, overwrite, replacing))


def committable(
    labels: np.ndarray, mask: np.ndarray, overwrite: bool = False, replacing: int | None = None
) -> np.ndarray:
    """The ``mask`` pixels a commit may write into ``labels`` (same shape), as a boolean
    array.

    Without ``overwrite`` pixels that already belong to another object are left alone,
    except those of object ``replacing`` (the object a correction started from, whose
    mask the committed one was made from).
    """
    labels, mask = np.asarray(labels), np.asarray(mask, bool)
    if labels.shape != mask.shape:
        raise ValueError(f"Mask {mask.shape} and labels {labels.shape} differ in shape.")
    if overwrite:
        return mask
    free = labels == 0
    if replacing is not None:
        free |= labels == replacing
    return mask & free
