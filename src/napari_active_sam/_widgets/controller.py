"""Annotation state of the Active SAM dock: session, latest-request-wins decoding, suggestions.

The controller builds no widget. It draws into the layers it manages (:mod:`.layers`): the
preview, the map and the suggestion marks are napari model data, not Qt, and a commit reads
back the mask the user saw. Committed objects are kept by :mod:`.objects`, propagation and
the corrections of a propagated object are :mod:`.volumes`'s part; every encoder
run, decode, training step and estimate runs on a worker of its ``workers``. A dock keeps
the controller's choices in step with its controls and learns the rest from the
:data:`EVENTS`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from napari.utils.events import EmitterGroup, Event
from napari.utils.notifications import show_error, show_info

from ..core.active.acquisition import Uncertainty
from ..core.active.bayes_head import DEFAULT_SAMPLES
from ..core.annotate.session import AnnotationSession, Answer
from ..core.enums import Acquisition
from ..core.errors import ActiveSamError
from ..core.prompts import PromptSet, Suggestion, left_out
from . import layers
from .adaptation import ModelAdaptation
from .events import EVENTS
from .loading import ModelRequest, SessionLoader
from .objects import CommittedObjects
from .previews import Asked, Offer
from .volumes import VolumeActions
from .workers import LatestRequest, WorkerHost

if TYPE_CHECKING:
    from pathlib import Path

    import napari

    from ..core.quality.estimators import QualityModels


class AnnotationController(VolumeActions):
    """Interactive segmentation of one image layer in a viewer, with suggested clicks.

    Parameters
    ----------
    viewer : napari.viewer.Viewer

    Attributes
    ----------
    session : AnnotationSession or None
    acquisition : str or None
        The acquisition function drawn after each decode (None: no map, no suggestions).
    samples : int
        Posterior samples of the Bayesian head.
    offer : Offer or None
        The suggestions on screen.
    encoder : WorkerBase or None
        The latest encoding or propagation worker.
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self.viewer = viewer
        self.events = EmitterGroup(source=self, **dict.fromkeys(EVENTS, Event))
        self.workers = WorkerHost(status=self._say,
                                  busy=lambda value: self.events.busy(value=value))  # fmt: skip
        self.objects = CommittedObjects(viewer, self.workers, self.events, self._report,
                                        lambda: (self.session, self.quality))  # fmt: skip
        self.adaptation = ModelAdaptation(self.workers, self.events, self._report,
                                          self._use_models,
                                          lambda: (self.session, self.quality))  # fmt: skip
        self.loader = SessionLoader(self.workers, self._session_made, self._say, self._report,
                                    self._model_kept)  # fmt: skip
        self.session: AnnotationSession | None = None
        self.quality: QualityModels | None = None  # estimators' networks for the model
        self.image: napari.layers.Image | None = None
        self._session_image: napari.layers.Image | None = None  # that the session reads
        self.acquisition: str | None = Acquisition.BALD.value
        self.samples = DEFAULT_SAMPLES
        # propagation stops where SAM's heads disagree more (nats; None: never)
        self.max_uncertainty: float | None = None
        self.offer: Offer | None = None
        self.encoder = None
        self._decodes = LatestRequest(self._decode)
        self._shown: tuple | None = None  # (slice, prompts) the preview was made from
        # each slice's preview was made from: its prompts, as asked, and the mask corrected
        self._previewed: dict[tuple[int, ...], Asked] = {}
        self._shown_settings: tuple | None = None  # and the map settings
        # C pressed before the preview caught up: the (slice, prompts) to commit once drawn
        self._commit_for: tuple | None = None
        # bumped when the session, its model or its head changes: an answer started before
        # is not drawn
        self._generation = 0
        self.correcting: int | None = None  # the propagated object a correction re-grows
        self.events.learned.connect(self._learned)
        self.events.committed.connect(self._refresh_slice_list)
        viewer.dims.events.current_step.connect(self._slice_changed)
        viewer.layers.events.removed.connect(self._layer_removed)

    @property
    def _points(self):
        """The prompts layer, made again if the user removed it (and the image is there)."""
        if layers.PROMPTS not in self.viewer.layers and self.image is not None:
            self._ensure_layers(self.image)
        return self.viewer.layers[layers.PROMPTS]

    @property
    def decoding(self) -> bool:
        """Whether a decode is running (a newer request may wait behind it)."""
        return self._decodes.running

    def close(self, *_) -> None:
        """Stop every worker and stop listening to the viewer (the dock is gone)."""
        self.workers.close()
        self.viewer.dims.events.current_step.disconnect(self._slice_changed)
        self.viewer.layers.events.removed.disconnect(self._layer_removed)
        layers.release_layers(self.viewer, self._prompts_changed, self._key_actions())
        if layers.OUTPUT in self.viewer.layers:
            self._listen_to_labels(self.viewer.layers[layers.OUTPUT], False)

    def _layer_removed(self, event) -> None:
        if self.image is not None and event.value is self.image:  # nothing reads it now
            self.cancel_encoding()
            self.loader.forget()
            self.image, self.session, self._session_image = None, None, None
            self._generation += 1
            self._commit_for = None
            self.correcting = None
            self._offer(None)
            self._say("the image was removed: its encoding stopped")
        elif event.value.name == layers.OUTPUT and self.session is not None:
            # Its objects are gone: no correction or regrow can refer to them.
            self.correcting = None
            self.objects.forget_seeds()
            self.objects.clear_candidates()  # they were offered to be committed there
            self.events.objects_removed()
            self._say("the labels layer was removed: the next object starts a new one")

    # ------------------------------------------------------------------- model, session
    def start_session(self, image: napari.layers.Image, request: ModelRequest, window: str,
                      store: Path | None = None):  # fmt: skip
        """(Re)start on ``image``: load the model if needed, read the image with intensity
        ``window`` on a worker, then encode (into the zarr embedding ``store`` if given,
        reading what ``precompute`` stored there). The latest request wins."""
        self.image = image
        self.objects.settings = {"model": request.choice, "window": window,
                                 "image": image.name}  # fmt: skip
        self.cancel_encoding()
        self.loader.request(image, request, window, store)

    def attach_store(self, store: Path | None) -> None:
        """Keep the session's embeddings in the zarr embedding ``store`` from now on (None:
        in memory only), on a worker: the session and everything made in it stay; a store
        that cannot be used is refused in the status, and the session goes on as it was."""
        session = self.session
        if session is None:
            return

        def attached(written: int) -> None:
            where = f"in {store} ({written} written there now)" if store else "in memory only"
            self.events.status(message=f"embeddings are kept {where}")

        self.workers.start(session.store.attach, store, returned=attached,
                           errored=self._report)  # fmt: skip

    def _ensure_layers(self, image: napari.layers.Image, fresh: bool = False) -> None:
        """Create the layers the dock draws into on ``image``'s grid, where missing (the
        user may have removed one), with the dock's keys bound in each; ``fresh`` for a new
        session, whose preview starts empty. A preview made again is empty: no slice's
        preview is up to date then."""
        if fresh or layers.PREVIEW not in self.viewer.layers:
            self._shown = None
            self._previewed.clear()
        layers.ensure_layers(self.viewer, image, self._prompts_changed, self._key_actions(),
                             clear=fresh)  # fmt: skip
        self._listen_to_labels(self.viewer.layers[layers.OUTPUT], True)

    def _key_actions(self) -> dict:
        """The dock's keys in its layers: key → what it does."""
        return {"c": self.commit, "x": self.clear_prompts, "t": self.toggle_last,
                "a": partial(self.answer_suggestion, True),
                "d": partial(self.answer_suggestion, False),
                "s": partial(self.answer_suggestion, None)}  # fmt: skip

    def _listen_to_labels(self, output: napari.layers.Labels, listen: bool) -> None:
        """A correction is asked from the labels: an edit of them (a stroke, a fill, an
        eraser's press: ``paint``) or an undo or redo of one (which napari announces only as
        ``set_data``) may change the preview."""
        for emitter in (output.events.paint, output.events.set_data):
            if listen:
                emitter.connect(self._labels_edited)
            else:
                emitter.disconnect(self._labels_edited)

    def _session_made(self, image, session, quality, head_problem) -> None:
        try:
            self.session = None  # no decode against half-made layers
            self._ensure_layers(image, fresh=True)
        except ActiveSamError as exc:
            self._report(exc)
            return
        new_image = image is not self._session_image
        self.session, self.quality, self._session_image = session, quality, image
        self._generation += 1
        self._commit_for = None
        self.correcting = None  # nothing of another image carries over
        if new_image:  # the objects' seeds were masks of that image
            self.objects.forget_seeds()
        self.adaptation.reset(session, quality)
        self.objects.clear_candidates()
        self._offer(None)
        if head_problem:
            show_error(head_problem)
        self._without_head_no_bald(session.head)
        self.events.session_ready(session=session, new_image=new_image)
        self.request_decode()  # prompts kept from an earlier session get a fresh mask
        head = "with its Bayesian head" if session.head else "without a Bayesian head"
        self._say(f"{session.model.name} ready on {session.model.device}, {head}")
        self.encode_all()

    # ----------------------------------------------------------------------- long work
    def encode(self, indices: list[tuple[int, ...]]):
        """Encode slices on a worker, with progress and cancel; return the worker."""
        if self.session is None:
            return None
        self.cancel_encoding()
        self.encoder = self.workers.start(
            self.session.encode, indices, progress=self._on_progress, errored=self._report,
            cancellable=True,
        )  # fmt: skip
        return self.encoder

    def encode_all(self):
        """The current slice first, then the rest of the volume outwards."""
        if self.session is not None:
            return self.encode(self.session.order_from(self.current_index()))
        return None

    def cancel_encoding(self) -> None:
        """Stop encoding or propagation between slices."""
        self.workers.cancel(self.encoder)
        self.encoder = None

    def cancel_all(self) -> None:
        """Stop encoding, propagation and learning: every cancellable job."""
        self.workers.cancel_all()
        self.encoder = None

    def _asked(self, index: tuple[int, ...], prompts: PromptSet) -> Asked:
        """How ``prompts`` on slice ``index`` are decoded now (:meth:`_correction`)."""
        if not prompts.clicks:
            return Asked(prompts, prompts, None)
        return Asked(prompts, *self._correction(index, prompts))

    def _labels_edited(self, event=None) -> None:
        """The user painted, filled or erased in the labels, or undid such an edit: while
        an object is corrected, the preview may be asked from a mask that has changed (a
        decode that would ask what the preview was made from does nothing)."""
        if self.correcting is not None:
            self.request_decode()

    def _learned(self, event=None) -> None:
        self._generation += 1
        self._shown_settings = None  # same prompts, new head: a new map
        self.request_decode()

    def adapt(self) -> None:
        """Adapt the session's base model to the committed objects (on a worker), aligning
        it on the masks the user ranked, or else on the candidates on offer ranked by the
        quality estimators; an ``adapted`` event follows, and the adapted model decodes
        from then on."""
        self.adaptation.start(self.session, self.objects.committed_labels(),
                              self.objects.candidates)  # fmt: skip

    def _without_head_no_bald(self, head) -> None:
        """BALD needs a Bayesian head: without one, suggest with EIG (and say so)."""
        if head is None and self.acquisition == Acquisition.BALD:
            self.acquisition = Acquisition.EIG.value
            self.events.acquisition(value=self.acquisition)

    def rank_candidate(self) -> None:
        """Show the four masks of the first object like yours on offer, to rank them."""
        self.adaptation.rank(self.session, self.objects.candidates)

    def ranked(self, candidates, order: tuple[int, ...]) -> None:
        """The user ranked ``candidates``: keep it, and offer the next object."""
        self.adaptation.record(candidates, order)
        self.objects.pass_over(candidates.prompts)

    def use_adapted(self, adapted: bool) -> None:
        """Decode with the adapted model, or with the base model again."""
        self.adaptation.use(adapted)

    def _use_models(self, model, head, quality) -> None:
        if self.session is None:
            return
        self.session.use_model(model, head, quality.judge)
        self.quality = quality
        self._without_head_no_bald(head)
        self._generation += 1
        self._shown = self._shown_settings = None  # the same prompts, a new answer
        self.request_decode()

    # ------------------------------------------------------------------------ prompts
    def current_index(self) -> tuple[int, ...]:
        """The data index of the slice on screen (``()`` for a single image)."""
        leading = self.session.source.leading_shape if self.session is not None else ()
        return layers.slice_at_cursor(self.viewer, self.image, leading)

    def current_prompts(self) -> PromptSet:
        if layers.PROMPTS not in self.viewer.layers:
            return PromptSet()
        return layers.prompts_on_slice(self._points, self.current_index())

    def add_click(self, row: float, col: float, positive: bool = True) -> None:
        """Add a click on the current slice (what a mouse click in the prompts layer does)."""
        layers.add_point(self._points, self.current_index(), row, col, positive)

    def toggle_last(self) -> None:
        """Flip the polarity of the last click on the current slice."""
        if layers.toggle_last_point(self._points, self.current_index()):
            self._prompts_changed()

    def clear_prompts(self) -> None:
        """Remove the prompts of the current slice and its preview. A correction ends once
        none of its clicks are left, on any slice: the next click starts afresh."""
        index = self.current_index()
        self._commit_for = None
        layers.remove_points_on_slice(self._points, index)
        if self.correcting is not None and not len(self._points.data):
            self.correcting = None
        if self.session is not None:
            self.session.forget(index)
        self._show(index, Asked(PromptSet(), PromptSet(), None), None)

    def commit(self) -> int | None:
        """Write the previewed object into the output layer (undoable with Ctrl+Z); None
        when there is nothing to commit yet."""
        index, prompts = self.current_index(), self.current_prompts()
        if prompts.clicks and self._shown != (index, prompts):
            # The preview is behind the clicks: commit once it has caught up. (One made from
            # them is what the user sees, even if an edit of the labels since asks anew.)
            self._commit_for = (index, prompts)
            self._say("committing when the mask is up to date ...")
            self.request_decode()
            return None
        shown = layers.PREVIEW in self.viewer.layers
        mask = layers.previewed(self.viewer, index) if shown else None
        if mask is None or not mask.any():
            show_info("Nothing to commit: click inside an object first.")
            return None
        if layers.OUTPUT not in self.viewer.layers and self.image is not None:
            self._ensure_layers(self.image)  # the user removed it: a new one
        # Committed during a correction, the slice's mask (made from the corrected
        # object's) becomes an object of its own, taking its pixels from that object.
        label, pixels = self.objects.write(mask, index, replacing=self.correcting)
        if not pixels:  # every pixel of the mask belongs to another object: keep the clicks
            self._say("nothing was committed: the mask lies on objects committed before; "
                      "tick 'overwrite other objects' to take their pixels")  # fmt: skip
            return None
        self.correcting = None
        self.clear_prompts()  # before an autosave: the prompts of a committed object go
        self.objects.announce(label, f"committed object {label} ({pixels} pixels)")
        return label

    def _prompts_changed(self, event=None) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("ing"):  # adding, removing, changing: the change is not made yet
            return
        layers.colour_points(self._points)
        self.request_decode()

    def _slice_changed(self, event=None) -> None:
        if self.session is not None and layers.PREVIEW in self.viewer.layers:
            self.request_decode()

    # ----------------------------------------------------------------------- decoding
    def choose_map(self, acquisition: str | None, samples: int) -> None:
        """Set the acquisition function (None: none) and posterior samples; redraw."""
        self.acquisition, self.samples = acquisition, samples
        self.request_decode()  # same prompts, another map

    def request_decode(self) -> None:
        """Decode the current prompts on a worker; the latest request wins."""
        self._decodes.request()

    def _decode(self, finished):
        if self.session is None or layers.PROMPTS not in self.viewer.layers:
            return None  # no session, or the user removed the clicks with their layer
        if layers.PREVIEW not in self.viewer.layers:  # the user removed it: a new one
            try:
                self._ensure_layers(self._session_image or self.image)
            except ActiveSamError as exc:
                self._report(exc)
                return None
        index, prompts = self.current_index(), self.current_prompts()
        if self._commit_for not in (None, (index, prompts)):
            self._commit_for = None  # C was for clicks the user has changed since
        settings = (self.acquisition, self.samples)
        now = self._asked(index, prompts)
        if self._up_to_date(index, prompts, now) and self._shown_settings == settings:
            return None  # the preview already shows these prompts
        if not prompts.clicks:
            self.session.forget(index)
            self._show(index, now, None)
            self._shown_settings = settings
            self._refresh_slice_list()
            return None
        return self.workers.start(
            partial(self.session.answer, prior=now.prior), index, now.asked, *settings,
            returned=partial(self._decoded, index, now, settings, self._generation),
            errored=self._decode_failed, finished=finished,
        )  # fmt: skip

    def _up_to_date(self, index: tuple[int, ...], prompts: PromptSet,
                    now: Asked | None = None) -> bool:  # fmt: skip
        """Whether the preview on screen is of slice ``index`` and was made from
        ``prompts`` as they are asked now (``now``, if already known)."""
        if self._shown != (index, prompts):
            return False
        return (now or self._asked(index, prompts)).same(self._previewed.get(index))

    def _decoded(self, index, asked: Asked, settings, generation: int,
                 answer: Answer) -> None:  # fmt: skip
        if generation != self._generation:
            return  # answered by a model, head or image no longer in use: decoded again
        if index != self.current_index() or asked.prompts != self.current_prompts():
            return  # the user moved on: a newer decode follows
        self._show(index, asked, answer)
        self._shown_settings = settings
        self._refresh_slice_list()
        self.events.answered(index=index, prompts=asked.prompts, answer=answer)
        if self._commit_for == (index, asked.prompts):
            self._commit_for = None
            self.commit()

    def _decode_failed(self, exc: Exception) -> None:
        self._commit_for = None  # never commit a mask the user did not see
        self._report(exc)

    def _show(self, index, asked: Asked, answer: Answer | None) -> None:
        """Draw ``answer`` (None: nothing) for ``asked`` on slice ``index``; offer its
        suggestions."""
        prompts = asked.prompts
        found: Uncertainty | None = None if answer is None else answer.uncertainty
        layers.show_preview(self.viewer, index, None if answer is None else answer.mask)
        missed = () if answer is None else left_out(answer.mask, prompts)
        layers.ring_left_out(self.viewer, index, missed)
        layers.show_uncertainty(self.viewer, index, None if found is None else found.scores)
        self._offer(None if found is None else Offer(index, prompts, found.suggestions))
        layers.show_suggestions(self.viewer, index, None if found is None else found.suggestions)
        self._shown = (index, prompts)
        self._previewed[index] = asked

    # -------------------------------------------------------------------- suggestions
    @property
    def suggestions(self) -> tuple[Suggestion, ...]:
        """The suggestions still on offer, best first (empty when there are none)."""
        return self.offer.remaining if self.offer is not None else ()

    def keys_answer_candidates(self) -> bool:
        """Whether A, D and S answer the objects like the committed ones on offer (on the
        slice shown, with no click waiting there) rather than the suggestions."""
        candidates = self.objects.candidates
        return (candidates is not None and candidates[0] == self.current_index()
                and not self.current_prompts().clicks)  # fmt: skip

    def answer_suggestion(self, inside: bool | None) -> None:
        """Answer the offered suggestion: inside (A), outside (D), or skip it (S). While
        objects like the committed ones are on offer on the slice shown and no click waits
        there, the same keys accept (A), reject (D) or pass over (S) the first of them
        instead."""
        if self.keys_answer_candidates():
            self.objects.answer_candidate(inside)
            return
        offer = self.offer
        if offer is None or not offer.suggestions:
            return show_info("No suggestion to answer: click inside an object first.")
        if (offer.index, offer.prompts) != (self.current_index(), self.current_prompts()):
            return show_info("These suggestions belong to other clicks or another slice.")
        if not offer.remaining:
            return show_info("No more suggestions here: click where the mask is wrong.")
        offered = offer.remaining[0]
        if inside is None:
            offer.skipped += 1
            layers.show_suggestions(self.viewer, offer.index, offer.remaining)
            self._offer(offer)
            return
        self._offer(None)
        self.add_click(offered.y, offered.x, positive=inside)

    # --------------------------------------------------------------------- navigation
    def _refresh_slice_list(self, event=None) -> None:
        volume = self.session is not None and bool(self.session.source.leading_shape)
        self.events.uncertain_slices(ranked=self.session.most_uncertain(5) if volume else None)

    def measure(self) -> None:
        """Measure every committed object on a worker (voxel size from the image layer's
        scale, read as mm); a ``measured`` event brings the volumes."""
        if self.image is None or self.session is None:
            return show_info("Choose an image and commit some objects first.")
        spatial = len(self.session.source.spatial_shape)
        self.objects.measure(tuple(float(s) for s in self.image.scale[-spatial:]))

    def go_to_most_uncertain(self) -> None:
        """Move the viewer to the answered slice SAM is least sure of."""
        if self.session is None or not self.session.source.leading_shape:
            return show_info("Slices to compare need a volume.")
        ranked = self.session.most_uncertain(1)
        if not ranked:
            return show_info("No slice has a mask yet: click or propagate first.")
        ((index, score),) = ranked
        self.go_to_slice(index)
        self._say(f"slice {index}: uncertainty {score:.3f}")

    def go_to_slice(self, index: tuple[int, ...]) -> None:
        """Show the slice at data index ``index`` of the image (none once it was removed:
        said so)."""
        if self.image is None:
            show_info("The image was removed: choose it again to go to its slices.")
            return
        layers.show_slice(self.viewer, self.image, index)

    def show_object(self, label: int, index: tuple[int, ...]) -> None:
        """Go to object ``label`` on slice ``index`` and select it in the output layer."""
        if index:
            self.go_to_slice(index)
        self.objects.select(label)
        self._say(f"object {label}" + (f" on slice {index}" if index else ""))

    # ------------------------------------------------------------------------ helpers
    def _offer(self, offer: Offer | None) -> None:
        self.offer = offer
        self.events.offered(suggestions=self.suggestions)

    def _say(self, message: str) -> None:
        self.events.status(message=message)

    def _model_kept(self, request: ModelRequest | None) -> None:
        if request is not None and self.session is not None:  # go on as before the choice
            self.objects.settings["model"] = request.choice
            self.encode_all()
        self.events.model_kept(request=request)

    def _on_progress(self, step) -> None:
        self.events.progress(step=step)

    def _report(self, exc: Exception) -> None:
        self.events.error(error=exc)
        self.workers.report(exc)
