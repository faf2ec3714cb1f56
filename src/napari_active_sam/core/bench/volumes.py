"""The 3D interactive protocol: an object annotated in a volume, the way a radiologist does.

One episode (after the CVPR 2025 challenge "Foundation models for interactive 3D biomedical
image segmentation"): a box from the ground truth's extent on the object's largest slice (or
a first click at its centre), the object propagated through the volume, then corrective
interactions. Each goes to the slice of the largest 3D error region's centre (the RITM rule
on the 3D distance transform, in millimetres); there the strategy picks the click(s) — RITM
takes that very point, BALD/EIG/entropy ask where the model is least sure on that slice —
the slice's prompts grow by it, the slice becomes a seed, and the object is propagated
again from every seed. After each interaction: 3D Dice, normalised surface Dice (tolerance
in mm) and the seconds it took.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..active.acquisition import Uncertainty, uncertainty
from ..active.bayes_head import DEFAULT_SAMPLES
from ..annotate.session import AnnotationSession
from ..annotate.volume import Propagated, PropagationSettings, propagate
from ..data.datasets import ImagePair, ObjectTarget, load_scaled_pair
from ..engine.checkpoints import ModelRef
from ..engine.predictor import shown_head
from ..engine.preprocess import IntensityWindow
from ..engine.store import EmbeddingStore
from ..enums import Strategy
from ..errors import ImageError
from ..metrics import dice, largest_error_click, normalised_surface_dice
from ..progress import Progress, drain
from ..prompts import Click, PromptSet, box_around, correction
from ..sim.clicker import ClickList, ritm_next_click
from .episodes import episode_seed, worker_model, worker_quality
from .strategies import STRATEGIES, ClickContext, parse_strategy

NSD_TOLERANCE_MM = 2.0
"""The surface Dice's default tolerance, in the units of the volume's spacing."""

INTERACTIONS = 6
"""The box (or first click) and five corrections."""


@dataclass
class VolumeEpisode:
    """One 3D object annotated with one strategy.

    Attributes
    ----------
    interactions : list of dict
        Per interaction: ``kind`` ("box", "click"), ``slice``, the ``clicks`` added as
        ``[row, col, positive]``, and why propagation stopped (``stops``).
    dsc, nsd : list of float
        3D Dice and normalised surface Dice after each interaction.
    seconds : list of float
        Wall time of each interaction (prompting, decoding and propagation).
    mask : np.ndarray
        Boolean ``(Z, H, W)`` mask after the last interaction.
    """

    interactions: list[dict[str, Any]] = field(default_factory=list)
    dsc: list[float] = field(default_factory=list)
    nsd: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    mask: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        """The challenge's figures: curves, their areas, final values, time."""
        return {
            "dsc": [round(v, 6) for v in self.dsc],
            "nsd": [round(v, 6) for v in self.nsd],
            "dsc_auc": curve_area(self.dsc),
            "nsd_auc": curve_area(self.nsd),
            "final_dsc": round(self.dsc[-1], 6),
            "final_nsd": round(self.nsd[-1], 6),
            "seconds": [round(v, 4) for v in self.seconds],
            "seconds_per_interaction": round(float(np.mean(self.seconds)), 4),
            "interactions": self.interactions,
        }


def curve_area(values: Sequence[float]) -> float:
    """Area under a per-interaction curve by the trapezoid rule, one unit per interaction
    (the challenge's DSC_AUC and NSD_AUC); 0 for a single interaction."""
    values = np.asarray(values, float)
    return round(float(np.sum(values[1:] + values[:-1]) / 2), 6) if len(values) > 1 else 0.0


def check_volume(gt: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float]:
    """``spacing`` as ``(z, y, x)`` floats; a clear error unless ``gt`` is a 3D object.

    Raises
    ------
    ImageError
        A 2D image, a volume of one slice, an empty object, or a spacing that is not three
        positive numbers.
    """
    if gt.ndim != 3:
        raise ImageError(
            f"The 3D protocol needs a volume (Z, H, W); this image has shape {gt.shape}. "
            "Use the 2D protocol (the default) for 2D images."
        )
    if gt.shape[0] < 2:
        raise ImageError(
            "The 3D protocol needs a volume of at least two slices; this one has one. Use the "
            "2D protocol for it."
        )
    if not gt.any():
        raise ImageError("The object is empty: there is nothing to annotate in 3D.")
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ImageError(
            f"The voxel spacing must be three positive numbers (z, y, x), got {spacing}."
        )
    return values  # type: ignore[return-value]


def play_volume(
    session: AnnotationSession,
    gt: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    strategy: str = Strategy.RITM,
    interactions: int = INTERACTIONS,
    first: str = "box",
    rng: np.random.Generator | None = None,
    samples: int = DEFAULT_SAMPLES,
    tolerance: float = NSD_TOLERANCE_MM,
    settings: PropagationSettings | None = None,
) -> Generator[Progress, None, VolumeEpisode]:
    """Annotate the 3D object ``gt`` of the session's volume with ``strategy``.

    Parameters
    ----------
    session : AnnotationSession
        On the volume (one leading axis); its Bayesian head serves BALD.
    gt : np.ndarray
        Boolean ``(Z, H, W)`` ground truth of one object.
    spacing : sequence of float
        ``(z, y, x)`` voxel size (mm): the 3D error's centre and the surface Dice use it.
    strategy : str
        Who picks the clicks on the slice of the largest 3D error (see the module notes).
    interactions : int
        The opening box or click, then ``interactions - 1`` corrections.
    first : str
        ``"box"`` (from the object's extent on its largest slice) or ``"click"`` (its
        centre there).
    rng : np.random.Generator, optional
    samples : int
        Posterior samples for BALD and entropy.
    tolerance : float
        The surface Dice's tolerance, in the units of ``spacing``.
    settings : PropagationSettings, optional

    Yields
    ------
    Progress
        After each interaction.

    Returns
    -------
    VolumeEpisode
    """
    gt = np.asarray(gt, bool)
    spacing = check_volume(gt, spacing)
    if gt.shape != session.source.spatial_shape:
        raise ImageError(
            f"The object's shape {gt.shape} is not the volume's {session.source.spatial_shape}."
        )
    if first not in ("box", "click"):
        raise ImageError(f"The first interaction is a box or a click, not {first!r}.")
    spec = STRATEGIES[parse_strategy(strategy)]
    rng = rng or np.random.default_rng(0)
    result = VolumeEpisode()
    prompts: dict[int, PromptSet] = {}
    seeds: dict[int, np.ndarray] = {}
    clicked = np.zeros_like(gt)
    mask = np.zeros_like(gt)
    for step in range(interactions):
        start = time.perf_counter()
        if step == 0:
            z = opening = int(np.argmax(gt.sum(axis=(1, 2))))
            prompts[z] = _opening(gt[z], first)
            added = [[int(c.y), int(c.x), True] for c in prompts[z].clicks]
            for row, col, _ in added:
                clicked[z, row, col] = True
            kind = first
        else:
            found = largest_error_click(gt, mask, spacing, clicked)
            if found is None:  # nothing left to correct: the last figures stand
                _repeat(result, start)
                yield Progress(step + 1, interactions, "nothing left to correct")
                continue
            (z, row, col), _ = found
            clicks = _slice_clicks(session, spec, strategy, z, (row, col), gt[z], mask,
                                   clicked[z], prompts, opening, rng, samples)  # fmt: skip
            if not clicks:
                _repeat(result, start)
                yield Progress(step + 1, interactions, "the strategy had nothing to ask")
                continue
            prompts[z] = _corrected(prompts, opening, mask, z, clicks)
            for r, c, _ in clicks:
                clicked[z, r, c] = True
            added = [[int(r), int(c), bool(p)] for r, c, p in clicks]
            kind = "click"
        # The slice's prompts refine the mask shown there (as a mask prompt), not whatever
        # propagation's last logits on it were.
        session.forget((z,))
        shown = mask[z] if mask[z].any() else None
        seeds[z] = session.answer((z,), prompts[z], prior=shown).mask
        propagated: Propagated = drain(propagate(session, dict(seeds), settings))
        mask = propagated.mask
        result.seconds.append(time.perf_counter() - start)
        result.dsc.append(dice(gt, mask))
        result.nsd.append(normalised_surface_dice(gt, mask, spacing, tolerance))
        result.interactions.append(
            {"kind": kind, "slice": z, "clicks": added, "stops": list(propagated.stops)}
        )
        yield Progress(step + 1, interactions, f"{kind} on slice {z}: Dice {result.dsc[-1]:.3f}")
    result.mask = mask
    return result


def _opening(gt_slice: np.ndarray, first: str) -> PromptSet:
    if first == "click":
        row, col, _ = ritm_next_click(gt_slice, np.zeros_like(gt_slice))
        return PromptSet((Click(float(col), float(row), True),))
    return PromptSet(box=box_around(gt_slice))


def _corrected(prompts: dict[int, PromptSet], opening: int, mask: np.ndarray, z: int,
               clicks: ClickList) -> PromptSet:  # fmt: skip
    """Slice ``z``'s prompts once the correction ``clicks`` (``(row, col, positive)``) are
    added to those given there before. On the opening slice they join the box (or click)
    it was opened with, the box stretched over the positive ones
    (:meth:`PromptSet.stretched`). Elsewhere they correct the object as the dock's
    corrections do (:func:`~napari_active_sam.core.prompts.correction`): the mask shown on
    a slice propagation reached, or with a box of the object's size on the nearest slice it
    reached."""
    asked = prompts.get(z, PromptSet())
    for row, col, positive in clicks:
        asked = asked.with_click(Click(float(col), float(row), positive))
    if z == opening:
        return asked.stretched()
    return correction(asked, mask, z)[0]


def _slice_clicks(
    session: AnnotationSession,
    spec,
    strategy: str,
    z: int,
    centre: tuple[int, int],
    gt: np.ndarray,
    mask: np.ndarray,
    clicked: np.ndarray,
    prompts: dict[int, PromptSet],
    opening: int,
    rng: np.random.Generator,
    samples: int,
) -> ClickList:
    """The click(s) ``strategy`` adds on slice ``z`` (``gt`` is that slice's, ``mask`` the
    whole object so far, ``opening`` the slice of the opening box or click): RITM's is the 3D
    error's centre."""
    if parse_strategy(strategy) is Strategy.RITM:
        row, col = centre
        return [(row, col, bool(gt[row, col]))]
    shown = mask[z]
    prior = shown if shown.any() else None  # what a correction there refines
    # The slice as the strategy finds it: its prompts so far, asked as a correction is; on
    # a slice with neither prompts nor object, the click RITM would make there.
    current = _corrected(prompts, opening, mask, z, [])
    if not current.asks_for_object:
        current = _corrected(prompts, opening, mask, z, [(*centre, bool(gt[centre]))])
    prediction = session.decode((z,), current, prior)  # the slice as it stands, every head

    @functools.cache
    def current_uncertainty(name: str) -> Uncertainty:
        return uncertainty(
            name, prediction, current, session.model, session.head, samples, 5, rng=rng,
            shown=shown_head(prediction, current),
        )  # fmt: skip

    def dice_if_clicked(click: tuple[int, int, bool]) -> float:
        trial = _corrected(prompts, opening, mask, z, [click])
        answer = session.decode((z,), trial, prior)
        return dice(gt, answer.mask(shown_head(answer, trial)))

    context = ClickContext(gt, shown, clicked, prediction, rng, dice_if_clicked,
                           current_uncertainty)  # fmt: skip
    return spec.next_clicks(context)


def _repeat(result: VolumeEpisode, start: float) -> None:
    result.dsc.append(result.dsc[-1])
    result.nsd.append(result.nsd[-1])
    result.seconds.append(time.perf_counter() - start)
    result.interactions.append({"kind": "none", "slice": None, "clicks": [], "stops": []})


def volume_record(image: str, label: int, strategy: str, gt: np.ndarray,
                  episode: VolumeEpisode, spacing: Sequence[float],
                  spacing_known: bool = True, spacing_given: bool = False,
                  ) -> dict[str, Any]:  # fmt: skip
    """The JSON record of one 3D episode (a line of ``episodes.jsonl``); ``spacing_known``:
    whether the image file records its voxel size; ``spacing_given``: whether ``spacing``
    was given for a file that records none (else it is 1 per axis)."""
    return {
        "image": image,
        "label": int(label),
        "strategy": str(strategy),
        "protocol": "3d",
        "voxels": int(np.count_nonzero(gt)),
        "slices": [int(z) for z in np.flatnonzero(gt.any(axis=(1, 2)))],
        "spacing": [float(s) for s in spacing],
        "spacing_known": bool(spacing_known),
        "spacing_given": bool(spacing_given),
        **episode.summary(),
    }


def evaluate_volume_pair(
    ref: ModelRef,
    pair: ImagePair,
    window: IntensityWindow,
    todo: list[tuple[ObjectTarget, str]],
    corrections: int,
    seed: int,
    torch_threads: int | None = None,
    head_file: str | None = None,
    zoom: bool = True,
    adapter_file: str | None = None,
    first: str = "box",
    tolerance: float = NSD_TOLERANCE_MM,
    spacing: Sequence[float] | None = None,
    judge: bool = False,
    insist: bool = False,
) -> list[dict[str, Any]]:
    """Play 3D episodes on one volume (a dask task): ``todo`` lists (object, strategy)
    pairs; each gets the opening box or click and ``corrections`` corrections. The spacing
    comes from the file, else ``spacing`` where given, else 1 per axis; with ``judge``, the
    quality ensemble picks the mask shown for an opening click; with ``insist``, a
    correction the mask leaves out is asked again (:attr:`AnnotationSession.insist`).
    Returns one JSON-ready record per episode.

    Raises
    ------
    ImageError
        An image that is not a volume of at least two slices.
    """
    model, head = worker_model(ref, torch_threads, adapter_file, head_file)
    source, labels, found, known = load_scaled_pair(pair, window)
    if labels.ndim != 3:
        check_volume(labels, found)  # says why: a 2D image
    given = not known and spacing is not None
    spacing = tuple(spacing) if given else found
    # a click opening: the quality ensemble picks the mask shown, as annotated
    quality = worker_quality(ref, model, head) if judge else None
    # On disk as well as in memory: every slice stays encoded however large the volume.
    with tempfile.TemporaryDirectory(prefix="volume-embeddings-") as folder:
        store = EmbeddingStore(model.encoder_id, path=Path(folder) / "store.zarr")

        def fresh_session() -> AnnotationSession:
            session = AnnotationSession(model, source, store, zoom=zoom, insist=insist)
            session.head = head
            session.judge = quality.judge if quality is not None else None
            return session

        # Every slice is encoded before the first episode, as the annotator encodes a
        # volume in the background when it opens: no interaction is charged for it.
        start = time.perf_counter()
        drain(fresh_session().encode(source.slice_indices()))
        encode_seconds = round(time.perf_counter() - start, 4)
        records = []
        for obj, strategy in todo:
            rng = np.random.default_rng(episode_seed(seed, pair.stem, obj.label, strategy, "3d"))
            gt = labels == obj.label
            # A session of its own: nothing decoded in another episode carries over.
            played = play_volume(fresh_session(), gt, spacing, strategy, corrections + 1,
                                 first, rng, tolerance=tolerance)  # fmt: skip
            episode = drain(played)
            record = volume_record(pair.stem, obj.label, strategy, gt, episode, spacing, known,
                                   given)  # fmt: skip
            records.append({**record, "encode_seconds": encode_seconds})
    return records
