"""Stage 2: align the model with preferences among its own candidate masks (DPO).

On objects nobody outlined, the reference model (the stage-1 model, frozen) answers the
object's prompts; thresholding its probability at 0.3, 0.4, 0.5 and 0.6 gives four
candidate masks, which a ranker orders best first: IoU with the truth (simulation), the
quality estimator (no truth), or a person. The loss (Rafailov et al. 2023, in the ranked
four-candidate form of arXiv 2503.04639) is

    −log σ(β1 Δ1 + β2 Δ2 − β2 Δ3 − β1 Δ4),   Δj = log πθ(Yj) − log πref(Yj),

with log π(Y) the Bernoulli log-likelihood of candidate Y under a model's probabilities,
summed over the pixels where the candidates disagree (elsewhere they carry no preference).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from ..engine.checkpoints import LoadedModel
from ..engine.predictor import Predictor, shown_head
from ..errors import ActiveSamError
from ..metrics import iou
from ..progress import Progress
from ..prompts import Click, PromptSet
from ..quality.estimators import QualityModels, QualitySample, estimate_quality
from ..sim.clicker import ritm_next_click
from ..sim.episode import clicks_to_prompts
from ..sim.training import batch_prompts, decode_batch
from .finetune import AdaptConfig, StageResult, run_stage
from .objects import LabelledObject

THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
"""Where the reference's probability is cut into the four candidates."""
BETAS = (1.0, 0.5, -0.5, -1.0)
"""The weights of Δ1..Δ4 (β1 = 1, β2 = 0.5): the best two pulled up, the worst two down."""


@dataclass(frozen=True, eq=False)
class Preference:
    """One object's four candidates, best first, on the decoder's low-resolution grid.

    Attributes
    ----------
    obj : LabelledObject
        The object (its ``gt`` is read only by the IoU ranker).
    prompts : PromptSet
        What the candidates answer.
    head : int
        The head the candidates were cut from.
    ranked : torch.Tensor
        float32 ``(4, g, g)`` candidate masks, best first.
    disputed : torch.Tensor
        Boolean ``(g, g)``: where the candidates disagree.
    reference : torch.Tensor
        float32 ``(g, g)`` the reference model's logits there.
    order : tuple of int
        The thresholds' indices in ranked order (``(0, 1, 2, 3)``: 0.3 best).
    """

    obj: LabelledObject
    prompts: PromptSet
    head: int
    ranked: torch.Tensor
    disputed: torch.Tensor
    reference: torch.Tensor
    order: tuple[int, ...]


Ranker = Callable[[LabelledObject, list[np.ndarray]], list[int]]
"""An object and its candidate masks at the image's resolution → their indices, best first."""


def rank_by_iou(obj: LabelledObject, masks: list[np.ndarray]) -> list[int]:
    """Simulation: the candidates ordered by IoU with the truth.

    Raises
    ------
    ActiveSamError
        An object without a mask.
    """
    if obj.gt is None:
        raise ActiveSamError("Ranking by IoU needs each object's mask: rank by quality.")
    return sorted(range(len(masks)), key=lambda i: -iou(obj.gt, masks[i]))


def quality_ranker(quality: QualityModels) -> Ranker:
    """No truth: the candidates ordered by the base model's quality estimators (their
    ensemble, each mask judged alone as the ``quality`` command judges a mask)."""

    def rank(obj: LabelledObject, masks: list[np.ndarray]) -> list[int]:
        rng = np.random.default_rng(0)
        scores = [
            estimate_quality("ensemble", QualitySample(obj.rgb, mask, obj.base_embedding),
                             quality, rng).predicted_dice if mask.any() else -1.0
            for mask in masks
        ]  # fmt: skip
        return sorted(range(len(masks)), key=lambda i: -scores[i])

    return rank


def make_ranker(name: str, quality: QualityModels | None = None) -> Ranker:
    """``iou`` (simulation, reads the truth) or ``quality`` (needs ``quality``).

    Raises
    ------
    ActiveSamError
        Another name, or ``quality`` without the quality models.
    """
    if name == "iou":
        return rank_by_iou
    if name == "quality":
        if quality is None:
            raise ActiveSamError("Ranking by quality needs the model's quality estimators.")
        return quality_ranker(quality)
    raise ActiveSamError(f"Unknown ranking {name!r}: choose iou or quality.")


def centre_click(gt: np.ndarray) -> PromptSet:
    """A click at the point deepest inside the object (the RITM protocol's first click):
    the stand-in for a prompt found without a person (exemplar prompts)."""
    row, col, _ = ritm_next_click(gt, np.zeros_like(gt))
    return clicks_to_prompts([(row, col, True)])


def object_prompts(obj: LabelledObject) -> PromptSet:
    """The prompts an object was found with, else a click deepest inside its mask."""
    return obj.prompts if obj.prompts is not None else centre_click(obj.gt)


@dataclass(frozen=True, eq=False)
class Candidates:
    """One object's four candidate masks, as a ranker (or a person) sees them.

    Attributes
    ----------
    obj : LabelledObject
    prompts : PromptSet
    head : int
        The head they were cut from (the one a user sees for the prompts).
    logits : torch.Tensor
        float32 ``(g, g)``: that head's low-resolution logits.
    grid : torch.Tensor
        float32 ``(4, g, g)``: the candidates on the low-resolution grid, thresholds in
        :data:`THRESHOLDS` order.
    masks : list of np.ndarray
        The same four at the resolution of the object's image.
    """

    obj: LabelledObject
    prompts: PromptSet
    head: int
    logits: torch.Tensor
    grid: torch.Tensor
    masks: list[np.ndarray]

    def preference(self, order: Sequence[int], reference: torch.Tensor) -> Preference | None:
        """The preference for ``order`` (best first) against ``reference`` logits; None
        when the candidates all agree (nothing to learn)."""
        disputed = self.grid.amax(dim=0) != self.grid.amin(dim=0)
        if not disputed.any():
            return None
        return Preference(self.obj, self.prompts, self.head, self.grid[list(order)],
                          disputed, reference, tuple(order))  # fmt: skip


def candidates_of(model: LoadedModel, obj: LabelledObject,
                  prompts: PromptSet | None = None) -> Candidates:  # fmt: skip
    """The four candidates ``model`` gives for ``obj`` (prompted by ``prompts``, default
    :func:`object_prompts`)."""
    prompts = prompts or object_prompts(obj)
    prediction = Predictor(model).predict(obj.embedding, prompts)
    head = shown_head(prediction, prompts)
    probability = prediction.probability(head)
    logits = torch.from_numpy(prediction.low_res_logits[head].copy())
    grid = torch.stack([torch.sigmoid(logits) > t for t in THRESHOLDS]).float()
    return Candidates(obj, prompts, head, logits, grid, [probability > t for t in THRESHOLDS])


def preferences(
    reference: LoadedModel,
    objects: Sequence[LabelledObject],
    ranker: Ranker,
    prompts_of: Callable[[LabelledObject], PromptSet] | None = None,
) -> Generator[Progress, None, list[Preference]]:
    """The reference model's candidates for every object, ranked by ``ranker``; objects
    whose candidates all agree teach nothing and are left out."""
    prompts_of = prompts_of or object_prompts
    found: list[Preference] = []
    for done, obj in enumerate(objects, 1):
        candidates = candidates_of(reference, obj, prompts_of(obj))
        order = ranker(obj, candidates.masks)
        preference = candidates.preference(order, candidates.logits)
        if preference is not None:
            found.append(preference)
        yield Progress(done, len(objects), f"ranked candidates of {done}/{len(objects)} objects")
    return found


def ranked_preferences(
    reference: LoadedModel, ranked: Sequence[tuple[Candidates, Sequence[int]]]
) -> list[Preference]:
    """Preferences from candidates a person ranked earlier (perhaps another model's: DPO
    needs no candidates of its own), the reference model's logits read for each."""
    predictor = Predictor(reference)
    found = []
    for candidates, order in ranked:
        logits = predictor.predict(candidates.obj.embedding, candidates.prompts).low_res_logits
        preference = candidates.preference(order, torch.from_numpy(logits[candidates.head].copy()))
        if preference is not None:
            found.append(preference)
    return found


def log_likelihoods(logits: torch.Tensor, candidates: torch.Tensor,
                    disputed: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """log π(Y) for each candidate: ``(B, g, g)`` logits, ``(B, 4, g, g)`` candidates,
    ``(B, g, g)`` disputed pixels → ``(B, 4)``."""
    per_pixel = -F.binary_cross_entropy_with_logits(
        logits[:, None].expand_as(candidates), candidates, reduction="none"
    )
    return (per_pixel * disputed[:, None]).sum(dim=(-2, -1))


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, candidates: torch.Tensor,
             disputed: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The ranked DPO loss, averaged over the batch (see the module's docstring)."""
    deltas = log_likelihoods(policy, candidates, disputed) - log_likelihoods(
        reference, candidates, disputed
    )
    margin = deltas @ torch.tensor(BETAS, dtype=deltas.dtype, device=deltas.device)
    return -F.logsigmoid(margin).mean()


def align(
    reference: LoadedModel,
    prefs: Sequence[Preference],
    held_out: Sequence[LabelledObject],
    config: AdaptConfig | None = None,
) -> Generator[Progress, None, StageResult]:
    """Stage 2: DPO on ``prefs`` from ``reference``, checked on ``held_out`` (labelled
    objects the earlier stage did not train on).

    Raises
    ------
    ActiveSamError
        No preference to learn from.
    """
    config = config or AdaptConfig(learning_rate=1e-5)
    if not prefs:
        raise ActiveSamError("No object gave candidates that differ: nothing to align on.")

    def loss_of_batch(adapted: LoadedModel, rng: np.random.Generator):
        chosen = [prefs[i] for i in rng.choice(len(prefs), size=min(config.batch_size,
                                                                    len(prefs)), replace=False)]
        device = adapted.sam.device
        loss = dpo_loss(_policy_logits(adapted, chosen),
                        torch.stack([p.reference for p in chosen]).to(device),
                        torch.stack([p.ranked for p in chosen]).to(device),
                        torch.stack([p.disputed for p in chosen]).to(device))  # fmt: skip
        return loss, float(loss.item())

    return (yield from run_stage(reference, held_out, config, loss_of_batch, "preferences"))


def _policy_logits(model: LoadedModel, chosen: Sequence[Preference]) -> torch.Tensor:
    """``(B, g, g)``: the trained model's logits of each preference's head for its prompts,
    decoded in batches of prompts of one shape (SAM's prompt encoder takes no mix)."""
    sam = model.sam
    device = sam.device
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, pref in enumerate(chosen):
        groups.setdefault((len(pref.prompts.clicks), pref.prompts.box is not None), []).append(i)
    found: list[torch.Tensor | None] = [None] * len(chosen)
    for members in groups.values():
        embeddings = torch.stack([chosen[i].obj.embedding.features for i in members])
        framed = [_model_frame(chosen[i].prompts, chosen[i].obj, model) for i in members]
        points, boxes = batch_prompts(framed, device)
        sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
        low_res, _ = decode_batch(sam.mask_decoder, embeddings.to(device, torch.float32),
                                  sam.prompt_encoder.get_dense_pe(), sparse, dense)  # fmt: skip
        for row, i in enumerate(members):
            found[i] = low_res[row, chosen[i].head]
    return torch.stack(found)


def _model_frame(prompts: PromptSet, obj: LabelledObject, model: LoadedModel) -> PromptSet:
    """``prompts`` (clicks and box) in the model's input frame, as
    :meth:`~napari_active_sam.core.engine.predictor.Predictor.predict` gives them to the
    prompt encoder."""
    transform = ResizeLongestSide(model.architecture.img_size)
    size = obj.embedding.original_size
    coords, labels = prompts.point_arrays()
    moved = transform.apply_coords(coords.astype(np.float64), size)
    pairs = zip(moved, labels, strict=True)
    clicks = tuple(Click(float(x), float(y), bool(p)) for (x, y), p in pairs)
    box = None
    if prompts.box is not None:
        box = tuple(float(v) for v in transform.apply_boxes(np.array(prompts.box), size)[0])
    return PromptSet(clicks=clicks, box=box)
