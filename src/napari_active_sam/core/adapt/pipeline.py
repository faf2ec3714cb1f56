"""One adaptation run: split the labelled objects, fine-tune, align on the unlabelled ones,
and keep the result as an :class:`~.adapter.Adapter`."""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from ..active.bayes_head import BayesHead
from ..active.head_training import HeadConfig, examples_from_objects, fit_head
from ..engine.checkpoints import LoadedModel
from ..engine.predictor import Predictor
from ..engine.zoom import magnify_of
from ..errors import ModelError
from ..progress import Progress
from .adapter import Adapter
from .dpo import Candidates, Ranker, align, preferences, ranked_preferences
from .finetune import AdaptConfig, StageResult, finetune, trained_state
from .objects import LabelledObject, reencoded, split_objects


@dataclass(frozen=True)
class AdaptPlan:
    """What one run does.

    Attributes
    ----------
    stage1 : AdaptConfig
        Fine-tuning on the labelled objects.
    stage2 : AdaptConfig or None
        Preference alignment on the unlabelled objects (None: stage 1 only).
    held_out : float
        Share of the labelled objects kept aside to choose when to stop (at least one).
    seed : int
    """

    stage1: AdaptConfig = field(default_factory=AdaptConfig)
    stage2: AdaptConfig | None = field(
        default_factory=lambda: AdaptConfig(steps=60, learning_rate=1e-4, refit=False)
    )
    held_out: float = 0.2
    seed: int = 0


@dataclass
class AdaptResult:
    """The adapter, the adapted model (under its own identity), each stage's checks, the
    labelled objects held out of training and the number of preferences aligned on."""

    adapter: Adapter
    model: LoadedModel
    stage1: StageResult
    stage2: StageResult | None
    held_out: list[LabelledObject] = field(default_factory=list)
    aligned: int = 0

    @property
    def improved(self) -> bool:
        """Whether a stage kept a step after its first: else the adapter is the model as
        it was (no step raised the held-out objects' IoU)."""
        return any(stage is not None and stage.best_step > 0
                   for stage in (self.stage1, self.stage2))  # fmt: skip


def adapt(
    model: LoadedModel,
    labelled: Sequence[LabelledObject],
    unlabelled: Sequence[LabelledObject] = (),
    ranker: Ranker | None = None,
    plan: AdaptPlan | None = None,
    ranked: Sequence[tuple[Candidates, Sequence[int]]] = (),
) -> Generator[Progress, None, AdaptResult]:
    """Adapt ``model`` to the user's objects.

    Parameters
    ----------
    labelled : sequence of LabelledObject
        Objects the user outlined (at least two: one is held out).
    unlabelled : sequence of LabelledObject
        Objects for stage 2; their masks are read only by the IoU ranker (simulation) and
        to place their prompt (the click deepest inside).
    ranker : Ranker, optional
        Orders each object's four candidates (stage 2 runs only with one).
    plan : AdaptPlan, optional
    ranked : sequence of (Candidates, order)
        Candidate masks a person ranked: stage 2 aligns on these instead of ranking the
        unlabelled objects' candidates.

    Raises
    ------
    ActiveSamError
        Fewer than two labelled objects.
    ModelError
        A SAM 2 model (adaptation trains SAM's decoder).
    """
    if model.is_sam2:
        raise ModelError(
            f"{model.name} is a SAM 2 model, which napari-active-sam does not adapt yet: "
            "adapt a SAM model (demo, vit_b, medsam) to your objects instead."
        )
    plan = plan or AdaptPlan()
    started = time.perf_counter()
    train, held_out = split_objects(labelled, plan.held_out, np.random.default_rng(plan.seed))
    first = yield from finetune(model, train, held_out, plan.stage1)
    current, second, prefs = first.model, None, []
    checks = held_out
    if plan.stage2 is not None and ranked:
        prefs = ranked_preferences(current, ranked)
    elif plan.stage2 is not None and ranker is not None and unlabelled:
        if plan.stage1.train_encoder:  # stage 2 reads the adapted encoder's embeddings
            unlabelled, checks = reencoded(current, unlabelled), reencoded(current, held_out)
        prefs = yield from preferences(current, unlabelled, ranker)
    if prefs:
        second = yield from align(current, prefs, checks, plan.stage2)
        current = second.model
    report = {
        "labelled": len(labelled),
        "trained_on": len(train),
        "held_out": len(held_out),
        "unlabelled": len(unlabelled),
        "preferences": len(prefs),
        "ranked_by": "a person" if ranked and prefs else "a ranker" if prefs else None,
        "stage1": _stage_report(first),
        "stage2": _stage_report(second) if second else None,
        "plan": {"stage1": asdict(plan.stage1),
                 "stage2": asdict(plan.stage2) if plan.stage2 else None},  # fmt: skip
        "seconds": round(time.perf_counter() - started, 1),
        "magnify": magnify_of(model),
    }
    adapter = Adapter(trained_state(current, plan.stage1.parts), model.model_id, report)
    return AdaptResult(adapter, adapter.apply(model), first, second, held_out, len(prefs))


def head_for(
    model: LoadedModel, objects: Sequence[LabelledObject], steps: int = 300
) -> Generator[Progress, None, BayesHead]:
    """A Bayesian head fitted for an adapted model on the objects it was adapted to (click
    sets simulated on each, from the objects' embeddings: for a model whose image encoder
    was adapted too, give objects it encoded, see :func:`~.objects.reencoded`)."""
    pairs = [((lambda obj=obj: obj.embedding), obj.gt) for obj in objects if obj.gt is not None]
    examples = yield from examples_from_objects(Predictor(model), pairs, np.random.default_rng(0))
    return (yield from fit_head(examples, model, HeadConfig(steps=steps)))


def _stage_report(result: StageResult) -> dict:
    return {
        "held_out_iou_before": round(result.before, 4),
        "held_out_iou_after": round(result.after, 4),
        "best_step": result.best_step,
        "steps": result.steps,
        "refitted_on": result.refitted,
        "history": result.history,
    }
