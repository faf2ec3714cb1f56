"""Volumes: grow an object from prompted slices through its neighbours.

A SAM 2 model tracks the object with its memory of the slices before (SAM 2's video
predictor, on the cached embeddings): every prompted slice conditions it, in both
directions, and its object-score head says where the object ends. For a SAM model each new
slice is prompted from its neighbour's result: the box around the neighbour's mask and, by
default, the mask itself as SAM's mask prompt (no click: on the sample CT's organs a box
followed the object better than a box with a click at the mask's deepest point, mean Dice
per slice 0.95 against 0.87, chiefly on a small organ where the click chose a larger
structure). Growth in a direction stops, saying why, when the object vanishes, leaks into a
larger structure, SAM's predicted IoU collapses, or the mask's intensity leaves its seed's
(another tissue); those rules judge the answer to the box alone, except that where it
says stop, the answer to box and mask carries growth on if they pass it and it hardly grows
(:attr:`PropagationSettings.max_held_growth`), and where a neighbour in several pieces
stops, its pieces are asked one by one (:attr:`PropagationSettings.min_piece_fraction`).
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide
from skimage import measure

from ..engine.device import to_device
from ..engine.embeddings import embed_slice
from ..engine.predictor import Prediction
from ..progress import Progress
from ..prompts import PromptSet, box_around
from .session import AnnotationSession, object_uncertainty

VANISHED = "the object ended on the slice before (it vanished)"
"""Why growth stops past a slice that held no object."""


@dataclass(frozen=True)
class PropagationSettings:
    """How propagation prompts each slice, and when it stops.

    Attributes
    ----------
    min_iou : float
        Stop when SAM's predicted IoU of the chosen mask falls below this. 0.3, chosen on
        the 3D protocol's volumes with an earlier stage of the demo model and the rules of
        its time (`benchmarks/eval_volumes.py`): at 0.5 growth from the EPI brain's box
        stopped on the next slice (predicted IoU 0.45–0.48) and the real MRI volume reached
        3D Dice 0.22 after the box, 0.47 at 0.3 (slices prompted by the box alone then);
        the sample CT's organs were the same at 0.5, 0.4, 0.3 and 0.2.
    min_area_fraction : float
        Stop when the mask shrinks below this fraction of the neighbour's area (the object
        is vanishing).
    max_area_growth : float
        Stop when the mask grows past this multiple of the neighbour's area (it has leaked
        into a surrounding structure, e.g. from a lesion into its organ).
    max_uncertainty : float, optional
        Stop when SAM's heads disagree about the mask more than this: the mean information
        gain over its three multimask heads inside their masks, in nats
        (:func:`~napari_active_sam.core.annotate.session.object_uncertainty`); None never
        stops for it.
    max_intensity_shift : float, optional
        Stop when the mean intensity inside the mask (on the model's input, after the
        window) moves further than this many standard deviations from the mean inside the
        seed it grew from (the deviation taken at least :data:`MIN_INTENSITY_SPREAD`): the
        mask has left the object's tissue for another, as a mask carried past the
        object's end onto the tissue around it. None never stops for it. 2, chosen on
        the 3D protocol's volumes with an earlier stage of the demo model
        (`benchmarks/eval_volumes.py`): the
        real EPI volume's ventricles reached 3D Dice 0.471 after the box and 0.506 after
        five RITM corrections against 0.441 and 0.480 without the rule (growth up from
        their largest slice stops at slice 21, 2.2 deviations darker, instead of carrying
        the mask over three slices of brain); 1.5 gave the same (0.506; it also stopped
        growth down at slice 14, where a box around the two frontal horns is answered
        with the septum between them, 1.7 deviations darker), at 2.5 it never fired; the
        brain and the sample CT's organs were unchanged (CT 0.969).
    mask_prompt : bool
        SAM models: prompt each slice with its neighbour's mask as well as the box around
        it (SAM's mask prompt), so that the outline the user corrected carries on to the
        next slices. The rules above judge the answer to the box alone (but see
        :attr:`max_held_growth`), and an answer to box and mask that they would reject is
        replaced by it. SAM 2 models track with their memory instead.
    max_held_growth : float
        With ``mask_prompt``: where the box alone says stop, growth goes on with the
        answer to box and mask when the rules pass it and it holds at most this multiple
        of the neighbour's area. A small model can answer a box around a whole organ
        with a part of it (the real EPI brain's top slices: 700 of 3,800 pixels, a
        "vanishing" object) while the answer with the neighbour's mask keeps the outline;
        past an organ's end that answer spreads into the tissue around it, growing slice
        by slice, which the bound stops. 1.1, chosen on the 3D protocol's volumes
        (`benchmarks/eval_volumes.py`): with the stage-11 demo model the EPI brain's 3D
        Dice rose from 0.780 to 0.924 after the box and from 0.745 to 0.945 after five
        RITM corrections (0.885 with 1.0; 1.3 the same as 1.1), and the sample CT's
        smallest organ stayed at 0.85 after the box (0.10 with no bound, its mask carried
        over 16 slices past its end).
    min_piece_fraction : float, optional
        SAM models: where the neighbour's mask lies in pieces and the answer to the box
        around all of it says stop, each 8-connected piece holding at least this fraction
        of it is prompted on its own (its box, its mask), judged against its own area, and
        growth goes on with the union of the pieces that pass. A structure connected in 3D
        can lie in several pieces on a slice (the lateral ventricles' frontal and posterior
        horns), and one box around them all takes in the tissue between. Smaller pieces
        end there. None always prompts the whole mask with one box. 0.1, chosen from 0.1
        and 0.2 on the EPI ventricles grown from the true outline of each slice where they
        lie in pieces (`README.md`, 3D benchmark): mean 3D Dice 0.27 with one box a slice,
        0.42 at 0.1, 0.40 at 0.2.
    """

    min_iou: float = 0.3
    min_area_fraction: float = 0.2
    max_area_growth: float = 2.0
    max_uncertainty: float | None = None
    max_intensity_shift: float | None = 2.0
    mask_prompt: bool = True
    max_held_growth: float = 1.1
    min_piece_fraction: float | None = 0.1

    def stop_reason(self, model: str, iou: float, unsure: float, area: int,
                    before: int, shift: float = 0.0) -> str:  # fmt: skip
        """Why growth stops at a slice whose mask has ``area`` pixels (its neighbour's
        ``before``), predicted IoU ``iou``, disagreement ``unsure`` and mean intensity
        ``shift`` standard deviations from its seed's; "" if it goes on. ``model`` names
        who answered ("SAM", "SAM 2")."""
        if iou < self.min_iou:
            return f"{model}'s predicted IoU {iou:.2f} < {self.min_iou:g} (uncertain)"
        if self.max_uncertainty is not None and unsure > self.max_uncertainty:
            return (f"{model}'s heads disagree, {unsure:.3f} nats > "
                    f"{self.max_uncertainty:g} (uncertain)")  # fmt: skip
        if area < self.min_area_fraction * before:
            return f"the mask shrank to {area} pixels from {before} (it is vanishing)"
        if area > self.max_area_growth * before:
            return f"the mask grew to {area} pixels from {before} (it leaked)"
        if self.max_intensity_shift is not None and abs(shift) > self.max_intensity_shift:
            return (f"the mask's mean intensity moved {shift:+.1f} standard deviations from "
                    "its seed's (it left the object's tissue)")  # fmt: skip
        return ""


MIN_INTENSITY_SPREAD = 2.0
"""The least standard deviation (grey levels of the model's 0–255 input) a seed's intensity
is measured against, so that a seed of one flat grey does not stop growth at noise."""


@dataclass(frozen=True)
class Intensity:
    """Mean and standard deviation of a slice's grey levels inside a seed mask."""

    mean: float
    spread: float

    @classmethod
    def inside(cls, grey: np.ndarray, mask: np.ndarray) -> Intensity:
        values = grey[np.asarray(mask, bool)]
        if not values.size:
            return cls(0.0, np.inf)  # nothing to compare with: never stops
        return cls(float(values.mean()), max(float(values.std()), MIN_INTENSITY_SPREAD))

    def shift(self, grey: np.ndarray, mask: np.ndarray) -> float:
        """How many standard deviations the mean of ``grey`` inside ``mask`` is from this
        one's (0 for an empty mask)."""
        values = grey[np.asarray(mask, bool)]
        return float((values.mean() - self.mean) / self.spread) if values.size else 0.0


def _grey(session: AnnotationSession, z: int) -> np.ndarray:
    """Slice ``z`` as the model sees it, in grey levels (the mean of its three channels)."""
    return session.source.sam_slice((z,), session.limits).mean(axis=-1, dtype=np.float32)


@dataclass(eq=False)
class SliceMasks:
    """A boolean ``(Z, H, W)`` volume held as each slice's mask cropped to its bounding box:
    a grown object takes the memory of its own extent, not of the volume (a tube through 266
    slices of 2048 × 2048 holds 50 MB, not 1.1 GB).

    Parameters
    ----------
    shape : tuple of int
        ``(Z, H, W)``.
    """

    shape: tuple[int, int, int]
    _crops: dict[int, tuple[int, int, np.ndarray]] = field(default_factory=dict, repr=False)

    def __setitem__(self, z: int, mask: np.ndarray) -> None:
        mask = np.asarray(mask, bool)
        if mask.shape != self.shape[1:]:
            raise ValueError(f"A slice mask must be {self.shape[1:]}, not {mask.shape}.")
        rows = np.flatnonzero(mask.any(axis=1))
        if not rows.size:
            self._crops.pop(z, None)
            return
        cols = np.flatnonzero(mask.any(axis=0))
        top, left = int(rows[0]), int(cols[0])
        self._crops[z] = (top, left, mask[top : rows[-1] + 1, left : cols[-1] + 1].copy())

    def __getitem__(self, z: int) -> np.ndarray:
        """Slice ``z``'s boolean ``(H, W)`` mask (a new array)."""
        mask = np.zeros(self.shape[1:], bool)
        if z in self._crops:
            top, left, crop = self._crops[z]
            mask[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
        return mask

    def slices(self) -> list[int]:
        """The slices the object is on, in order."""
        return sorted(self._crops)

    @property
    def nbytes(self) -> int:
        return sum(crop.nbytes for _, _, crop in self._crops.values())

    def dense(self) -> np.ndarray:
        """The whole boolean ``(Z, H, W)`` volume."""
        volume = np.zeros(self.shape, bool)
        for z in self._crops:
            volume[z] = self[z]
        return volume


@dataclass(frozen=True, eq=False)
class Propagated:
    """A grown object and where it stopped.

    Attributes
    ----------
    masks : SliceMasks
        The object, slice by slice (:attr:`mask` is the whole volume).
    stops : tuple of str
        ``"slice z: why"`` for each direction that stopped before the volume's end or the
        next seed's half.
    slices : dict of int to SliceReport
        How sure the model was on every slice it decoded (kept or not): what a strip
        along z shows, and where to look first.
    """

    masks: SliceMasks
    stops: tuple[str, ...] = ()
    slices: dict[int, SliceReport] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """Boolean ``(Z, H, W)``: the whole volume (a new array at each call)."""
        return self.masks.dense()

    @property
    def least_sure(self) -> int | None:
        """The kept slice the model was least sure of (None if none was propagated)."""
        kept = {z: r for z, r in self.slices.items() if r.kept}
        return max(kept, key=lambda z: kept[z].uncertainty) if kept else None


@dataclass(frozen=True)
class SliceReport:
    """The model's answer on one propagated slice.

    Attributes
    ----------
    uncertainty : float
        Mean information gain over SAM's multimask heads inside their masks (nats).
    predicted_iou : float
        SAM's predicted IoU of the mask.
    area : int
        Pixels of the mask.
    kept : bool
        Whether the mask was kept (False where propagation stopped).
    """

    uncertainty: float
    predicted_iou: float
    area: int
    kept: bool


def propagate(
    session: AnnotationSession,
    seeds: dict[int, np.ndarray],
    settings: PropagationSettings | None = None,
) -> Generator[Progress, None, Propagated]:
    """Grow a 3D mask from seed masks on some slices of a ``(Z, H, W)`` volume.

    With a SAM model growth runs outwards from every seed, in both directions, until it
    meets the region of the next seed (half-way between them), leaves the volume, or stops
    (see :class:`PropagationSettings`); where growth from one seed stops short of the
    half-way slice, growth from the seed on the other side goes on into the slices it left
    empty. Each slice is prompted with the box around its neighbour's mask and, by default,
    that mask itself. A SAM 2 model tracks the object through every slice
    between the seeds, conditioned on all of them, and beyond the first and the last until
    its object-score head or the same rules stop it.

    Parameters
    ----------
    session : AnnotationSession
        On a volume (one leading axis).
    seeds : dict of int to np.ndarray
        Slice index → boolean ``(H, W)`` mask the user made there; these slices are kept
        as they are.
    settings : PropagationSettings, optional

    Yields
    ------
    Progress
        After each slice.

    Returns
    -------
    Propagated
        The object slice by slice, and where and why growth stopped.
    """
    settings = settings or PropagationSettings()
    if session.model.is_sam2:
        return (yield from _track(session, seeds, settings))
    (depth,) = session.source.leading_shape
    order = sorted(seeds)
    result = SliceMasks((depth, *seeds[order[0]].shape))
    for z, mask in seeds.items():
        result[z] = mask
    references = {z: _reference(session, settings, z, mask) for z, mask in seeds.items()}
    runs = []
    for i, start in enumerate(order):
        upper = (start + order[i + 1]) // 2 + 1 if i + 1 < len(order) else depth
        lower = (order[i - 1] + start) // 2 if i > 0 else -1
        runs += [(start, +1, upper), (start, -1, lower)]
    total = depth - len(order)
    done = 0
    stops = []
    reports: dict[int, SliceReport] = {}

    def grow(start: int, direction: int, limit: int, seed: int):
        """Grow from slice ``start`` (kept) towards ``limit`` (excluded), judged against
        ``seed``'s intensity; returns the slice where growth stopped, or None if it reached
        ``limit``."""
        nonlocal done
        z = start + direction
        while z != limit and z not in seeds:
            mask, reason = _from_neighbour(session, result[z - direction], z, settings,
                                           reports, references[seed])  # fmt: skip
            if mask is None:
                stops.append((z, reason))
                return z
            result[z] = mask
            done += 1
            yield Progress(done, total, f"propagated to slice {z}")
            z += direction
        return None

    ended = {}
    for start, direction, limit in runs:
        ended[start, direction] = yield from grow(start, direction, limit, start)
    # Where growth from one seed stopped short of the half-way slice, growth from the other
    # side goes on into the slices left empty, up to where the first stopped.
    for below, above in itertools.pairwise(order):
        up, down = ended[below, +1], ended[above, -1]
        half = (below + above) // 2
        if up is None and down is not None:
            yield from grow(half, +1, down + 1, below)
        elif down is None and up is not None:
            yield from grow(half + 1, -1, up - 1, above)
    yield Progress(total, total, "propagation finished")
    grown = set(result.slices())  # a stop that growth from the other side overcame is no stop
    said = tuple(f"slice {z}: {reason}" for z, reason in stops if z not in grown)
    return Propagated(result, said, reports)


def _from_neighbour(
    session: AnnotationSession,
    neighbour: np.ndarray,
    z: int,
    settings: PropagationSettings,
    reports: dict[int, SliceReport],
    reference: Intensity | None,
) -> tuple[np.ndarray | None, str]:
    """The mask on slice ``z`` prompted from its neighbour's, or None and why growth stops
    there; what the model said is added to ``reports``; ``reference`` is the intensity of
    the seed growth started from.

    The whole neighbour is asked first (:func:`_from_piece`). Where that says stop and the
    neighbour lies in pieces (:func:`pieces`), each piece is asked on its own and the mask
    is the union of those that go on; growth stops when none does, for the largest
    piece's reason. The report of a slice grown piece by piece is its most uncertain kept
    piece's, with the union's area.
    """
    if not neighbour.any():
        return None, VANISHED
    answers = [_from_piece(session, neighbour, z, settings, reference)]
    if answers[0][0] is None and len(parts := pieces(neighbour, settings.min_piece_fraction)) > 1:
        answers = [_from_piece(session, piece, z, settings, reference) for piece in parts]
    kept = [(mask, report) for mask, _, report in answers if mask is not None]
    if not kept:
        _, reason, report = answers[0]
        reports[z] = report
        return None, reason
    mask = np.logical_or.reduce([mask for mask, _ in kept])
    worst = max((report for _, report in kept), key=lambda report: report.uncertainty)
    reports[z] = SliceReport(worst.uncertainty, worst.predicted_iou, int(mask.sum()), True)
    session.note_uncertainty((z,), torch.tensor(worst.uncertainty))
    return mask, ""


def pieces(mask: np.ndarray, min_fraction: float | None) -> list[np.ndarray]:
    """The pieces of ``mask`` that propagation prompts one by one, largest first: its
    8-connected components holding at least ``min_fraction`` of its pixels (the largest
    always); ``[mask]`` when ``min_fraction`` is None."""
    if min_fraction is None:
        return [mask]
    labelled = measure.label(mask, connectivity=2)
    sizes = np.bincount(labelled.ravel())[1:]
    order = np.argsort(sizes, kind="stable")[::-1]
    least = min_fraction * sizes.sum()
    big = [i for i in order if sizes[i] >= least] or [order[0]]
    return [labelled == i + 1 for i in big]


def _from_piece(
    session: AnnotationSession,
    piece: np.ndarray,
    z: int,
    settings: PropagationSettings,
    reference: Intensity | None,
) -> tuple[np.ndarray | None, str, SliceReport]:
    """The answer on slice ``z`` to one piece of its neighbour, or None and why it ends
    there, with what the model said of the answer judged.

    Whether the piece goes on is asked of the box around it alone: given the piece's mask
    as well, SAM tends to copy it onto slices the object has left, so the rules would not
    see it vanish or leak. The mask kept is then the answer to the box and the piece's
    mask (with ``settings.mask_prompt``), which follows the neighbour's outline,
    corrections included, unless the same rules reject it. Where the box alone says
    stop, that answer carries growth on when the rules pass it and it grows at most
    :attr:`PropagationSettings.max_held_growth` times the piece's area. A copy of the
    piece past the object's end passes that bound; the predicted IoU and the intensity
    rule are then what stop it.
    """
    before = int(piece.sum())
    prompts = PromptSet(box=box_around(piece))
    session.forget((z,))
    probe = session.answer((z,), prompts)
    shift = _shift(session, reference, z)
    reason, judged = _judge_slice(settings, probe, before, shift(probe.mask))
    if not settings.mask_prompt:
        return (None if reason else probe.mask), reason, judged
    session.forget((z,))
    refined = session.answer((z,), prompts, prior=piece)
    rejected, report = _judge_slice(settings, refined, before, shift(refined.mask))
    if reason and (rejected or refined.mask.sum() > settings.max_held_growth * before):
        return None, reason, judged
    if rejected:
        return probe.mask, "", judged
    return refined.mask, "", report


def _reference(session: AnnotationSession, settings: PropagationSettings, z: int,
               mask: np.ndarray) -> Intensity | None:  # fmt: skip
    """The intensity inside seed ``mask`` on slice ``z`` that growth from it is judged
    against; None when ``settings`` do not stop for it (the slice is not read)."""
    if settings.max_intensity_shift is None:
        return None
    return Intensity.inside(_grey(session, z), mask)


def _shift(session: AnnotationSession, reference: Intensity | None, z: int):
    """How far a mask on slice ``z`` moved from ``reference``'s intensity, as a function of
    the mask (slice ``z`` read once; always 0 without a reference)."""
    if reference is None:
        return lambda mask: 0.0
    grey = _grey(session, z)
    return lambda mask: reference.shift(grey, mask)


def _judge_slice(settings: PropagationSettings, answer, before: int,
                 shift: float = 0.0) -> tuple[str, SliceReport]:  # fmt: skip
    """Why growth stops at ``answer`` (a neighbour of ``before`` pixels, its intensity
    ``shift`` deviations from its seed's; "" if it goes on), and the report of it."""
    iou = float(answer.prediction.iou[answer.head])
    unsure = float(object_uncertainty(answer.prediction))
    area = int(answer.mask.sum())
    reason = settings.stop_reason("SAM", iou, unsure, area, before, shift)
    return reason, SliceReport(unsure, iou, area, kept=not reason)


def _track(
    session: AnnotationSession,
    seeds: dict[int, np.ndarray],
    settings: PropagationSettings,
) -> Generator[Progress, None, Propagated]:
    """:func:`propagate` for a SAM 2 model: its video predictor, conditioned on every seed.

    Tracking runs forwards from the first seed to the volume's end, then backwards from it
    to the start. Between seeds every slice is kept; beyond them a direction stops where
    SAM 2's object-score head says the object is gone, or where the rules of ``settings``
    (predicted IoU, disagreement, shrinking, leaking) say so.
    """
    network = session.model.sam
    (depth,) = session.source.leading_shape
    order = sorted(seeds)
    first, last = order[0], order[-1]
    shape = seeds[first].shape
    # every slice of a volume has its shape, so its size on the model's input too
    input_size = ResizeLongestSide.get_preprocess_shape(*shape, network.img_size)

    def features(z: int) -> torch.Tensor:
        embedding = embed_slice(session.model, session.source, session.store, (z,),
                                session.limits)  # fmt: skip
        return to_device(embedding.features, network.device).float()[None]

    state = network.volume_state(depth, features)
    for z in order:
        network.add_new_mask(state, frame_idx=z, obj_id=1,
                             mask=_on_input(seeds[z], input_size, network.img_size))  # fmt: skip
    result = SliceMasks((depth, *shape))
    for z, mask in seeds.items():
        result[z] = mask
    reports: dict[int, SliceReport] = {}
    stops: list[str] = []
    ends = {False: _reference(session, settings, last, seeds[last]),
            True: _reference(session, settings, first, seeds[first])}  # fmt: skip
    total, done = depth - len(order), 0
    for reverse in (False, True):
        frames = network.propagate_in_video(state, start_frame_idx=first, reverse=reverse)
        for z, _, _ in frames:
            if z in seeds:
                continue
            beyond = z > last if not reverse else z < first
            neighbour = result[z + 1 if reverse else z - 1]
            mask, reason = _tracked(session, z, input_size, shape, neighbour, beyond, settings,
                                    reports, ends[reverse])  # fmt: skip
            if reason:
                stops.append(f"slice {z}: {reason}")
                break
            result[z] = mask
            done += 1
            yield Progress(done, total, f"tracked to slice {z}")
    yield Progress(total, total, "propagation finished")
    return Propagated(result, tuple(stops), reports)


def _on_input(mask: np.ndarray, input_size: tuple[int, int], img_size: int) -> torch.Tensor:
    """A slice's ``(H, W)`` mask on the model's padded ``S × S`` input, as float 0/1."""
    tensor = torch.as_tensor(np.asarray(mask, np.float32))[None, None]
    resized = F.interpolate(tensor, input_size, mode="bilinear", align_corners=False,
                            antialias=True)  # fmt: skip
    height, width = input_size
    padded = F.pad(resized, (0, img_size - width, 0, img_size - height))
    return (padded[0, 0] >= 0.5).float()


def _tracked(
    session: AnnotationSession,
    z: int,
    input_size: tuple[int, int],
    shape: tuple[int, ...],
    neighbour: np.ndarray,
    beyond_seeds: bool,
    settings: PropagationSettings,
    reports: dict[int, SliceReport],
    reference: Intensity | None,
) -> tuple[np.ndarray, str]:
    """The mask SAM 2 tracked on slice ``z``, and why growth stops there ("" if it does not;
    only ``beyond_seeds`` it may, judged against the intensity of the seed it left,
    ``reference``); what the heads said is added to ``reports``."""
    heads = session.model.sam.last_heads
    multimask, ious = heads.multimask_logits, heads.ious.float().cpu().numpy()
    if len(multimask) != 3:  # SAM 2 decoded one mask: its heads cannot disagree
        multimask, ious = multimask[:1].expand(3, -1, -1), np.repeat(ious[:1], 3)
    prediction = Prediction(  # the kept mask is the head SAM 2 rates best
        logits=torch.cat([heads.chosen_logits[None], multimask]).float(),
        iou=np.concatenate([[ious.max()], ious]).astype(np.float32),
        img_size=session.model.architecture.img_size,
        input_size=input_size,
        original_size=tuple(shape),
    )
    mask = prediction.mask(0)
    iou = float(prediction.iou[0])
    unsure = object_uncertainty(prediction)
    session.forget((z,))
    session.note_uncertainty((z,), unsure)
    unsure = float(unsure)
    area, before = int(mask.sum()), int(neighbour.sum())
    reason = ""
    if beyond_seeds:
        if not before:
            reason = VANISHED
        elif heads.object_score <= 0:
            reason = (f"SAM 2's object score {heads.object_score:.2f} ≤ 0: the object "
                      "ended (it vanished)")  # fmt: skip
        else:
            shift = _shift(session, reference, z)(mask)
            reason = settings.stop_reason("SAM 2", iou, unsure, area, before, shift)
    reports[z] = SliceReport(unsure, iou, area, kept=not reason)
    return mask, reason
