"""The committed objects of the output labels layer: writing, propagating, saving, judging.

A commit never overwrites another object's pixels unless asked, and every write goes
through the layer's edit history so that Ctrl+Z undoes it. Propagation, saving (one save
at a time, the newest state winning), quality estimates and learning the Bayesian head
from the objects run on workers. Results are announced on the controller's event group
(see :mod:`.controller`): ``status``, ``progress``, ``committed``, ``quality_checked`` and
``learned``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info

from ..core.annotate.persistence import SavedAnnotation, load_annotation, save_annotation
from ..core.annotate.session import (
    AnnotationSession,
    commit_pixels,
    committable,
    next_free_label,
)
from ..core.errors import ActiveSamError, AnnotationFileError
from ..core.prompts import PromptSet
from .jobs import (
    Candidate,
    assess_job,
    learning_job,
    measure_job,
    propagation_job,
    similar_objects_job,
)
from .layers import OUTPUT, PROMPTS, colour_points, remove_points_at, show_candidates
from .workers import LatestRequest, WorkerHost

if TYPE_CHECKING:
    import napari
    from napari.utils.events import EmitterGroup

    from ..core.active.bayes_head import BayesHead
    from ..core.quality.estimators import ObjectQuality


def _bounding_box(region: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True of ``region`` (None if there is none)."""
    box = []
    for axis in range(region.ndim):
        others = tuple(a for a in range(region.ndim) if a != axis)
        found = np.flatnonzero(region.any(axis=others))
        if not found.size:
            return None
        box.append(slice(int(found[0]), int(found[-1]) + 1))
    return tuple(box)


@dataclass(frozen=True, eq=False)
class Grown:
    """One commit of a propagated object.

    Attributes
    ----------
    slices : dict of int to str
        A digest of the object's mask as written on each slice it is on.
    seeds : dict of int to np.ndarray
        The seed masks it grew from, by slice (a correction adds to them).
    """

    slices: dict[int, str]
    seeds: dict[int, np.ndarray]

    def agreement(self, now: dict[int, str]) -> int:
        """On how many of its slices the object ``now`` (as :attr:`slices`) is the same."""
        return sum(now.get(z) == digest for z, digest in self.slices.items())


class CommittedObjects:
    """Commit, propagate, save, restore, judge and learn from the output layer's objects.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    workers : WorkerHost
    events : napari.utils.events.EmitterGroup
        The controller's events, announced through here too.
    report : callable
        Shows an error (the controller's error path).
    current : callable
        Returns the session and its quality models now, ``(session, quality)``, either
        possibly None.

    Attributes
    ----------
    overwrite, use_selected : bool
        Commit over other objects; commit with the output layer's selected label.
    folder : Path or None
        Where annotations are saved; ``autosave`` saves there after each commit.
    settings : dict
        Model, window and image name, saved with the annotation.
    """

    def __init__(self, viewer: napari.viewer.Viewer, workers: WorkerHost,
                 events: EmitterGroup, report, current) -> None:  # fmt: skip
        self.viewer, self.workers, self.events = viewer, workers, events
        self._report, self._current = report, current
        self.overwrite = False
        self.use_selected = False
        self.folder: Path | None = None
        self.autosave = True
        self.settings: dict[str, Any] = {}
        self._saves = LatestRequest(self._save)
        self._learner = None
        self.candidates: tuple[tuple[int, ...], list[Candidate]] | None = None
        self._grown: dict[int, list[Grown]] = {}
        """Each propagated object's commits, oldest first, by label."""
        self._announced: dict[int, str] = {}
        """What committing each object said, until its quality check says it again."""

    # ---------------------------------------------------------------------------- writing
    def write(self, mask: np.ndarray, index: tuple[int, ...] = (), label: int | None = None,
              replacing: int | None = None) -> tuple[int, int]:  # fmt: skip
        """Write boolean ``mask`` (a slice ``(H, W)`` at ``index``, or the whole image) as
        one object (``label``, or else the selected or next free one), over object
        ``replacing`` where it lies there; return ``(label, pixels written)``."""
        output = self.viewer.layers[OUTPUT]
        if label is None:
            selected = int(output.selected_label)
            label = selected if self.use_selected and selected > 0 else None
            label = label or next_free_label(output.data)
        mask = np.asarray(mask, bool)
        # Only the box around the mask can be written: a volume is read no further.
        box = _bounding_box(mask)
        if box is None:
            return label, 0
        region = np.asarray(output.data[index])[box]
        written = commit_pixels(region, mask[box], self.overwrite, replacing)
        count = len(written[0])
        placed = (found + where.start for found, where in zip(written, box, strict=True))
        output.data_setitem((*(np.full(count, i) for i in index), *placed), label)
        return label, count

    def announce(self, label: int, message: str) -> None:
        """Tell the docks about committed object ``label``; save if asked to."""
        self._say(message)
        self._announced[label] = message  # kept in the status its quality check leaves
        self.events.committed(label=label)
        if self.autosave and self.folder is not None:
            self.save()

    def propagate(self, session: AnnotationSession, prompted: dict[int, PromptSet],
                  shown: dict[int, np.ndarray], correcting: int | None = None,
                  priors: dict[int, np.ndarray] | None = None,
                  done: Callable[[int], None] | None = None,
                  max_uncertainty: float | None = None):  # fmt: skip
        """Grow one object through the volume from the ``prompted`` slices (seeded with the
        ``shown`` masks where given, else with the answer to their prompts, starting from
        ``priors`` where given) on a worker, also stopping where SAM's heads disagree more
        than ``max_uncertainty`` when given, and commit it, then call ``done`` with its
        label; return the worker. When ``correcting`` names a propagated object, it grows again
        from its own seeds plus the prompted slices and replaces that object under the same
        label."""

        clicks = np.asarray(self.viewer.layers[PROMPTS].data)
        seeds = clicks[np.isin(np.round(clicks[:, 0]), list(prompted))]
        kept = self.seeds(correcting) if correcting is not None else {}
        output = self.viewer.layers[OUTPUT]

        def commit(result) -> None:
            """Write the grown object (a ``core.annotate.volume.Propagated``)."""
            grown, used = result
            if OUTPUT not in self.viewer.layers or self.viewer.layers[OUTPUT] is not output:
                self._say("the labels layer was removed while the object grew: nothing was "
                          "written; the clicks are kept, Propagate grows it again")  # fmt: skip
                return
            if not grown.masks.slices():
                self._say("nothing grew from the clicks (no mask on any slice): nothing was "
                          "written; the clicks are kept")  # fmt: skip
                return
            if correcting is not None:  # regrown: the same object, under its label
                label = self.replace(correcting, grown.mask)
            else:
                label, written = self.write(grown.mask)
                if not written:
                    self._say("nothing was written: the grown object lies on objects "
                              "committed before; tick 'overwrite other objects' to take "
                              "their voxels; the clicks are kept")  # fmt: skip
                    return
            self._grown.setdefault(label, []).append(Grown(self._object_slices(label), used))
            slices = len(grown.masks.slices())
            if PROMPTS in self.viewer.layers:  # the seeds' clicks are done with; later ones stay
                remove_points_at(self.viewer.layers[PROMPTS], seeds)
            stopped = f"; stopped at {', '.join(grown.stops)}" if grown.stops else ""
            worst = grown.least_sure
            unsure = f"; least sure on slice {worst}" if worst is not None else ""
            self.announce(label, f"committed object {label} on {slices} slices{stopped}{unsure}")
            self.events.propagated(label=label, slices=grown.slices, stops=grown.stops)
            if done is not None:
                done(label)

        def cancelled() -> None:
            self._say("propagation was cancelled: nothing was written; the clicks are kept, "
                      "Propagate grows the object again")  # fmt: skip

        return self.workers.start(
            propagation_job, session, prompted, shown, kept, priors, max_uncertainty,
            progress=self._progress,
            returned=commit, errored=self._report, cancellable=True, aborted=cancelled,
        )  # fmt: skip

    def seeds(self, label: int) -> dict[int, np.ndarray]:
        """The seed masks (slice → mask) object ``label`` grew from, for the object as the
        labels layer holds it now; a regrow starts from them.

        Once Ctrl+Z has taken a regrow back, they are those of the commit it brought back,
        so that the next regrow leaves the undone correction out. Where the object was
        edited since it was committed (painted, erased, or some of it taken by another
        object), each slice edited seeds with the object as it is there now, so that a
        regrow keeps the user's edits; the other slices are those of the commit the object
        is closest to. Empty for an object never propagated."""
        commits = self._grown.get(label)
        if not commits:
            return {}
        now = self._object_slices(label)
        for grown in reversed(commits):
            if grown.slices == now:
                return dict(grown.seeds)
        base = max(reversed(commits), key=lambda grown: grown.agreement(now))
        edited = {z for z in now.keys() | base.slices.keys()
                  if now.get(z) != base.slices.get(z)}  # fmt: skip
        seeds = {z: mask for z, mask in base.seeds.items() if z not in edited}
        labels = self.viewer.layers[OUTPUT].data
        seeds.update({z: np.asarray(labels[z]) == label for z in edited if z in now})
        return seeds

    def forget_seeds(self) -> None:
        """Forget every object's seeds (the labels layer they were committed to is gone, or
        they were masks of another image)."""
        self._grown.clear()

    def _object_slices(self, label: int) -> dict[int, str]:
        """Object ``label`` in the output layer, slice by slice: a digest of its mask on
        each slice it is on (empty without the layer)."""
        if OUTPUT not in self.viewer.layers:
            return {}
        inside = np.asarray(self.viewer.layers[OUTPUT].data) == label
        return {int(z): hashlib.blake2b(np.packbits(inside[z]).tobytes(), digest_size=16)
                .hexdigest() for z in np.flatnonzero(inside.any(axis=(1, 2)))}  # fmt: skip

    def replace(self, label: int, mask: np.ndarray) -> int:
        """Make object ``label`` the boolean ``mask`` (the whole image), in one undo step:
        where ``mask`` is on another object's pixels they stay that object's (unless
        :attr:`overwrite`). Only the pixels that change are written, so that regrowing a
        large object rewrites what moved, not the whole of it. Returns ``label``."""
        output = self.viewer.layers[OUTPUT]
        labels = np.asarray(output.data)
        mine = labels == label
        mask = np.asarray(mask, bool)
        # Only the box around the object and the mask can change: read the rest no further.
        box = _bounding_box(mine | mask)
        if box is None:
            return label
        mine, kept = mine[box], committable(labels[box], mask[box], self.overwrite, label)
        starts = [s.start for s in box]
        with output.block_history():
            for where, value in ((mine & ~kept, 0), (kept & ~mine, label)):
                found = np.nonzero(where)
                output.data_setitem(tuple(i + s for i, s in zip(found, starts, strict=True)), value)
        return label

    def select(self, label: int) -> None:
        """Make ``label`` the output layer's selected label."""
        if OUTPUT in self.viewer.layers:
            self.viewer.layers[OUTPUT].selected_label = label

    def committed_labels(self) -> np.ndarray | None:
        """A copy of the output layer's labels for a worker (None without the layer)."""
        if OUTPUT not in self.viewer.layers:
            return None
        return np.asarray(self.viewer.layers[OUTPUT].data).copy()

    # ----------------------------------------------------------------------- save, restore
    def save(self) -> None:
        """Save labels, prompts and settings to :attr:`folder` (on a worker)."""
        if self.folder is None:
            show_info("Choose an annotation folder first.")
            return
        self._saves.request()  # one save at a time; the newest state wins

    @property
    def saving(self) -> bool:
        """Whether a save is running (another may wait behind it)."""
        return self._saves.running

    def _save(self, finished):
        if self.folder is None:
            return None
        if OUTPUT not in self.viewer.layers:
            self._say("nothing to save: the labels layer was removed; commit an object first")
            return None
        labels = np.array(self.viewer.layers[OUTPUT].data)
        if PROMPTS in self.viewer.layers:
            points = self.viewer.layers[PROMPTS]
            clicks = np.asarray(points.data)
            positive = np.asarray(points.features["positive"], bool)
        else:  # the user removed it: no clicks to keep
            clicks, positive = np.empty((0, labels.ndim)), np.array([], bool)
        annotation = SavedAnnotation(labels=labels, points=clicks, positive=positive,
                                     settings=dict(self.settings))  # fmt: skip
        return self.workers.start(
            save_annotation, self.folder, annotation,
            returned=lambda path: self._say(f"saved to {path}"),
            errored=self._report, finished=finished,
        )  # fmt: skip

    def restore(self) -> None:
        """Load the annotation saved in :attr:`folder` into the output and prompts layers,
        as one undoable edit; the user's labels stay as they are if it does not fit."""
        folder = self.folder
        if folder is None or OUTPUT not in self.viewer.layers:
            show_info("Choose an image and the annotation folder first.")
            return
        try:
            saved = load_annotation(folder)
            output = self.viewer.layers[OUTPUT]
            image, other = self.settings.get("image"), saved.settings.get("image")
            if image is not None and other is not None and other != image:
                raise AnnotationFileError(
                    f"{folder} holds the annotation of image {other!r}, not of {image!r}: "
                    f"choose {other!r} in the dock to restore it (or rename this layer "
                    f"{other!r} if it is that image)."
                )
            if saved.labels.shape != output.data.shape:
                raise ActiveSamError(
                    f"The saved labels have shape {saved.labels.shape} but this image needs "
                    f"{output.data.shape}: choose the image the annotation was made on."
                )
        except ActiveSamError as exc:
            self._report(exc)
            return
        # Through the layer's edit history, so Ctrl+Z brings back what was there before.
        changed = np.nonzero(np.asarray(output.data) != saved.labels)
        output.data_setitem(changed, saved.labels[changed])
        if PROMPTS in self.viewer.layers:  # else the clicks cannot be shown: labels only
            points = self.viewer.layers[PROMPTS]
            points.data = np.empty((0, points.ndim))
            # Click by click, each with its polarity, as the user made them: the preview is
            # asked once the last is in, of the clicks as they were.
            for point, positive in zip(saved.points, saved.positive, strict=True):
                points.feature_defaults["positive"] = bool(positive)
                points.add(point)
            points.feature_defaults["positive"] = True
            colour_points(points)
        self._say(f"restored {int(saved.labels.max())} objects from {folder}")

    # ---------------------------------------------------------------------------- quality
    def check_quality(self, estimator: str, label: int | None = None) -> None:
        """Estimate the Dice of object ``label``, or of every object (on a worker); the
        result comes as a ``quality_checked(found, label)`` event."""
        session, quality = self._current()
        labels = self.committed_labels()
        if session is None or quality is None or labels is None:
            if label is None:
                self._say("commit some objects first")
            return

        def judged(found) -> None:
            if self._current()[0] is session:  # not judged on an image left since
                self._judged(found, label)

        self.workers.start(
            assess_job, estimator, session.source, labels, label, quality, session.store,
            progress=self._progress, returned=judged, errored=self._report,
        )  # fmt: skip

    def measure(self, spacing: tuple[float, ...]) -> None:
        """Measure every committed object (on a worker): its volume with a credible interval
        from the Bayesian head's posterior; the result comes as a ``measured(found)``
        event."""
        session, _ = self._current()
        labels = self.committed_labels()
        if session is None or labels is None or not labels.any():
            self._say("commit some objects first")
            return
        if session.head is None:
            self._say("measuring with error bars needs a Bayesian head: use 'Learn from my "
                      "annotations' first")  # fmt: skip
            return

        def measured(found) -> None:
            if self._current()[0] is session:  # not measured on an image left since
                self._measured(found, len(spacing))

        self.workers.start(
            measure_job, session, labels, spacing, progress=self._progress, returned=measured,
            errored=self._report,
        )  # fmt: skip

    def _measured(self, found, dimensions: int) -> None:
        unit = "mm³" if dimensions == 3 else "mm²"
        self.events.measured(found=found, unit=unit)
        self._say(f"measured {len(found)} object(s) in {unit}, with 95 % credible intervals")

    def _judged(self, found: list[ObjectQuality], label: int | None) -> None:
        self.events.quality_checked(found=found, label=label)
        if not found:
            self._say("no committed object to judge: commit some objects first")
            return
        notes = {item.estimate.note for item in found if item.estimate.note}
        committed = self._announced.pop(label, None) if label is not None else None
        self._say(
            (f"{committed}; " if committed else "")
            + f"predicted Dice of {len({i.label for i in found})} object(s) by "
            f"{found[0].estimate.estimator}" + (f" ({'; '.join(sorted(notes))})" if notes else "")
        )

    # ------------------------------------------------------------------- similar objects
    def find_similar(self, index: tuple[int, ...]) -> None:
        """Objects like the committed ones on slice ``index`` (on a worker); they are shown
        in the candidates layer with their predicted Dice, for :meth:`accept_candidates`."""
        session, quality = self._current()
        labels = self.committed_labels()
        if session is None or quality is None or labels is None or not labels.any():
            show_info("Commit at least one object first: its look is what is searched for.")
            return

        def found(candidates) -> None:
            if self._current()[0] is not session:
                return  # found on an image that is no longer annotated
            self._offer_candidates(index, candidates)
            self._say(f"found {len(candidates)} object(s) like yours on this slice")

        self.workers.start(
            similar_objects_job, session, quality, labels, index, progress=self._progress,
            returned=found, errored=self._report, cancellable=True,
        )  # fmt: skip

    def accept_candidates(self, threshold: float) -> list[int]:
        """Commit every candidate whose predicted Dice reaches ``threshold`` (each an undo
        step of its own); the rest stay on offer. Returns the labels committed."""
        if self.candidates is None or OUTPUT not in self.viewer.layers:
            return []
        index, candidates = self.candidates
        accepted = [c for c in candidates if c.predicted_dice >= threshold]
        labels = []
        for candidate in accepted:
            label, count = self.write(candidate.mask, index)
            if count:
                labels.append(label)
                self.announce(label, f"committed object {label} (predicted Dice "
                                     f"{candidate.predicted_dice:.2f})")  # fmt: skip
        self._offer_candidates(index, [c for c in candidates if c not in accepted])
        return labels

    def answer_candidate(self, accept: bool | None) -> int | None:
        """Accept (True: commit it), reject (False) or pass over (None: it goes last) the
        first candidate on offer; returns the label committed, if any."""
        if self.candidates is None or OUTPUT not in self.viewer.layers:
            return None
        index, (first, *rest) = self.candidates
        label = None
        if accept:
            label, count = self.write(first.mask, index)
            if count:
                self.announce(label, f"committed object {label} (predicted Dice "
                                     f"{first.predicted_dice:.2f})")  # fmt: skip
        elif accept is None:
            rest.append(first)
        self._offer_candidates(index, rest)
        return label

    def pass_over(self, prompts: PromptSet) -> None:
        """Move the candidate found with ``prompts`` to the end of the offer."""
        if self.candidates is None:
            return
        index, candidates = self.candidates
        moved = [c for c in candidates if c.prompts == prompts]
        self._offer_candidates(index, [c for c in candidates if c.prompts != prompts] + moved)

    def clear_candidates(self) -> None:
        """Take every candidate off offer (a new session: they belong to another image)."""
        if self.candidates is not None:
            self._offer_candidates(self.candidates[0], [])

    def _offer_candidates(self, index: tuple[int, ...], candidates: list[Candidate]) -> None:
        """Show ``candidates`` (the first is the one the keys answer) and announce them."""
        self.candidates = (index, candidates) if candidates else None
        show_candidates(self.viewer, index, [c.mask for c in candidates],
                        [c.predicted_dice for c in candidates])  # fmt: skip
        self.events.candidates(count=len(candidates),
                               first=candidates[0] if candidates else None)  # fmt: skip

    # ---------------------------------------------------------------------------- learning
    @property
    def learning(self) -> bool:
        return self._learner is not None

    def learn(self) -> None:
        """Retrain the Bayesian head on the committed objects (on a worker); the session
        takes it, and a ``learned(head, saved)`` event follows (``saved`` says where the head
        was written, or where it was kept when that failed)."""
        session, _ = self._current()
        if session is None or OUTPUT not in self.viewer.layers:
            show_info("Choose an image and commit some objects first.")
            return
        if self._learner is not None:
            show_info("Already learning; wait for it to finish.")
            return
        worker = self.workers.start(
            learning_job, session, self.committed_labels(), session.model, session.predictor,
            session.head, progress=self._progress,
            returned=self._learned, errored=self._report,
            finished=lambda: self._learning_finished(worker), cancellable=True,
        )  # fmt: skip
        self._learner = worker

    def _learned(self, result: tuple[BayesHead, str]) -> None:  # (head, where it was saved)
        self._learner = None  # done once its result is here: learning again may start
        head, saved = result
        session, quality = self._current()  # the session now, perhaps another image's
        in_use = session is not None and session.model.model_id == head.model_id
        if in_use:
            session.head = head
            if quality is not None:
                quality.bayes_head = head
        info = head.info
        other = "" if in_use else "; it is for another model than the one decoding now"
        self._say(f"learned from {info['examples']} click sets (loss {info['sam_loss']:.4f} "
                  f"-> {info['map_loss']:.4f}); {saved}{other}")  # fmt: skip
        self.events.learned(head=head, saved=saved)

    def _learning_finished(self, worker) -> None:
        if self._learner is worker:  # not a run started after this one was cancelled
            self._learner = None

    def _say(self, message: str) -> None:
        self.events.status(message=message)

    def _progress(self, step) -> None:
        self.events.progress(step=step)
