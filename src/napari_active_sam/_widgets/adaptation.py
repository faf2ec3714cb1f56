"""Adapting the session's model to the user's committed objects, and switching between the
base model and the adapted one. No Qt: the adaptation runs on a worker of the host, results
are announced on the controller's events (``adapted``, ``status``, ``progress``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_info

from ..core.adapt.objects import MIN_OBJECTS
from ..core.errors import ActiveSamError
from .jobs import Adaptation, adaptation_job, ranking_job, saved_adaptation_job

if TYPE_CHECKING:
    from napari.utils.events import EmitterGroup

    from ..core.active.bayes_head import BayesHead
    from ..core.adapt.dpo import Candidates
    from ..core.annotate.session import AnnotationSession
    from ..core.engine.checkpoints import LoadedModel
    from ..core.quality.estimators import QualityModels
    from .workers import WorkerHost

Swap = Callable[["LoadedModel", "BayesHead | None", "QualityModels"], None]
"""Makes the session decode with a model, its head and its quality models."""


class ModelAdaptation:
    """The base model of a session, its adapted version once made, and which one decodes.

    Parameters
    ----------
    workers : WorkerHost
    events : EmitterGroup
        The controller's events.
    report : callable
        Shows an error.
    swap : callable
        ``swap(model, head, quality)`` makes the session use them.
    current : callable
        Returns the session and its quality models now, ``(session, quality)``.
    """

    def __init__(self, workers: WorkerHost, events: EmitterGroup, report, swap: Swap,
                 current: Callable[[], tuple]):  # fmt: skip
        self.workers, self.events, self._report, self._swap = workers, events, report, swap
        self._current = current
        self._session: AnnotationSession | None = None
        self.base: tuple[LoadedModel, BayesHead | None, QualityModels] | None = None
        self.adaptation: Adaptation | None = None
        self.using_adapted = False
        self.ranked: list[tuple[Candidates, tuple[int, ...]]] = []
        """Candidate masks the user ranked (best first), for the next adaptation."""
        self._worker = None
        events.learned.connect(self._head_learned)

    def _head_learned(self, event) -> None:
        """A Bayesian head learned for the model not in use now (the user switched between
        the base and the adapted model while it was learned) is kept with that model, to be
        used when the user switches back."""
        head = event.head
        if self.base is not None and self.using_adapted and head.model_id == self.base[0].model_id:
            model, _, quality = self.base
            quality.bayes_head = head
            self.base = (model, head, quality)
        elif (self.adaptation is not None and not self.using_adapted
              and head.model_id == self.adaptation.model.model_id):  # fmt: skip
            self.adaptation.quality.bayes_head = head
            self.adaptation = replace(self.adaptation, head=head)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def reset(self, session: AnnotationSession, quality: QualityModels) -> None:
        """A new session: its model is the base; an adapter the user made for it earlier is
        looked for on a worker and, if found, offered (``adapter_found``), not applied."""
        base, self._session = session.model, session
        self.base = (base, session.head, quality)
        self.adaptation, self.using_adapted, self.ranked = None, False, []
        self.workers.start(saved_adaptation_job, base,
                           returned=lambda found: self._found(base, found),
                           errored=self._report)  # fmt: skip

    def _found(self, base: LoadedModel, found: Adaptation | None) -> None:
        if found is None or self.base is None or self.base[0] is not base:
            return  # none saved, or the session changed meanwhile
        if self.adaptation is None:  # one made in this session wins
            self.adaptation = found
            self.events.adapter_found(adaptation=found)

    def start(self, session: AnnotationSession | None, labels, on_offer=None) -> None:
        """Adapt the base model to the committed objects of ``labels`` on a worker, and
        align it on the candidates ``on_offer`` (``(slice, candidates)``) if any."""
        if session is None or self.base is None or labels is None:
            show_info("Choose an image and commit some objects first.")
            return
        if self._worker is not None:
            show_info("Already adapting; wait for it to finish or cancel it.")
            return
        count = 0  # objects per slice, counted only as far as needed
        for plane in labels.reshape(-1, *labels.shape[-2:]):
            count += np.unique(plane[plane > 0]).size
            if count >= MIN_OBJECTS:
                break
        if count < MIN_OBJECTS:
            show_info(f"Commit at least {MIN_OBJECTS} objects first: one to learn from, one "
                      "to check the adapted model on.")  # fmt: skip
            return
        worker = self.workers.start(
            adaptation_job, self.base[0], session, labels, self.base[2], on_offer,
            list(self.ranked), progress=lambda step: self.events.progress(step=step),
            returned=self._done, errored=self._report,
            finished=lambda: self._finished(worker), cancellable=True,
        )  # fmt: skip
        self._worker = worker

    def rank(self, session: AnnotationSession | None, on_offer) -> None:
        """Prepare the first candidate on offer (``(slice, candidates)``) for the user to
        rank its four masks (on a worker); a ``to_rank`` event brings them."""
        if session is None or not on_offer or not on_offer[1]:
            show_info("Find objects like yours first: their masks are what you rank.")
            return
        index, (first, *_) = on_offer

        def ready(found) -> None:
            if session is self._session:  # not another image's by now
                self.events.to_rank(candidates=found)

        self.workers.start(ranking_job, session, index, first, returned=ready,
                           errored=self._report)  # fmt: skip

    def record(self, candidates: Candidates, order: tuple[int, ...]) -> None:
        """Keep the user's ranking of ``candidates`` (indices, best first)."""
        self.ranked.append((candidates, tuple(order)))
        self.events.status(message=f"{len(self.ranked)} object(s) ranked by you: Adapt "
                                   "aligns the model on your rankings")  # fmt: skip

    def _finished(self, worker) -> None:
        if self._worker is worker:
            self._worker = None

    def _done(self, result: Adaptation) -> None:
        self._worker = None  # done once its result is here: adapting again may start
        if not result.improved:
            if self.base is not None and result.model.model_id == self.base[0].model_id:
                self.events.status(message=f"{describe(result)}: {NOT_IMPROVED}")
                self.events.not_adapted(adaptation=result)
            return
        if self.base is None or result.model.extra.get("base_model_id") != self.base[0].model_id:
            return  # the session changed model meanwhile
        self.adaptation = result
        self.use(adapted=True)
        self.events.status(message=f"{describe(result)}; {result.saved}")
        self.events.adapted(adaptation=result)

    def use(self, adapted: bool) -> None:
        """Decode with the adapted model, or with the base model again."""
        if self.base is None or (adapted and self.adaptation is None):
            return
        session, quality = self._current()
        if session is not None:  # a head learned since is kept with its model
            if self.using_adapted and self.adaptation is not None:
                self.adaptation = replace(self.adaptation, head=session.head, quality=quality)
            elif not self.using_adapted:
                self.base = (self.base[0], session.head, quality)
        chosen = self.adaptation if adapted else None
        try:
            if chosen is not None:
                self._swap(chosen.model, chosen.head, chosen.quality)
            else:
                self._swap(*self.base)
        except ActiveSamError as error:  # e.g. an adapter whose image encoder differs
            self._report(error)
            return
        self.using_adapted = adapted


NOT_IMPROVED = ("no training step raised it, so the model stays as it was and nothing was "
                "saved; commit more objects, or ones more like those to come, and adapt again")


def describe(result: Adaptation) -> str:
    """The figure the dock shows: mean IoU after one click on the held-out objects."""
    objects = "object" if result.held_out == 1 else "objects"
    return (
        f"mean IoU after one click: {result.before:.2f} → {result.after:.2f} on "
        f"{result.held_out} {objects} you did not train on (trained on "
        f"{result.objects - result.held_out}"
        + (f", aligned on {result.aligned} found like them)" if result.aligned else ")")
    )
