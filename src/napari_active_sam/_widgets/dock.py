"""The "Active SAM" dock widget: choose a model and an image, click, commit.

Every encoder run and every decode happens on a worker thread; the GUI thread only moves
data between layers. Prompts live in a Points layer, the live mask in a preview Labels
layer, committed objects in the output Labels layer, all managed by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from ..core.active.acquisition import ACQUISITIONS, Uncertainty
from ..core.active.bayes_head import (
    DEFAULT_SAMPLES,
    MAX_SAMPLES,
    BayesHead,
    head_for_model,
    user_head_path,
)
from ..core.active.head_training import HeadConfig, examples_from_objects, fit_head
from ..core.annotate.persistence import SavedAnnotation, load_annotation, save_annotation
from ..core.annotate.session import AnnotationSession, Answer, commit_pixels, next_free_label
from ..core.annotate.volume import propagate
from ..core.engine.architectures import ARCHITECTURES
from ..core.engine.checkpoints import load_model
from ..core.engine.embeddings import EmbeddingStore, embed_slice
from ..core.engine.predictor import shown_mask
from ..core.engine.preprocess import CT_PRESETS, IntensityWindow, SliceSource
from ..core.engine.registry import model_names
from ..core.enums import Acquisition
from ..core.errors import ActiveSamError
from ..core.prompts import PromptSet, Suggestion
from ..core.quality.estimators import QualityModels
from ..core.quality.networks import regressor_for_model
from .layers import (
    OUTPUT,
    PREVIEW,
    PROMPTS,
    SUGGESTIONS,
    UNCERTAINTY,
    belief_colours,
    colour_points,
    point_for,
    prompts_on_slice,
    suggestion_points,
)
from .quality import QualityPanel

if TYPE_CHECKING:
    import napari

LOCAL_FILE = "local file"
FROM_FILE = "from the file"
OFF = "off"


def model_choosers() -> tuple[ComboBox, FileEdit, ComboBox]:
    """Model, local checkpoint and architecture choosers (the last two shown only for a
    local file), as both docks offer them."""
    name = ComboBox(label="model", choices=[*model_names(), LOCAL_FILE], value="demo")
    checkpoint = FileEdit(label="checkpoint", mode="r", visible=False)
    architecture = ComboBox(label="architecture", choices=[FROM_FILE, *ARCHITECTURES],
                            visible=False)  # fmt: skip

    def show_local() -> None:
        checkpoint.visible = architecture.visible = name.value == LOCAL_FILE

    name.changed.connect(show_local)
    return name, checkpoint, architecture


def chosen_model(name: ComboBox, checkpoint: FileEdit, architecture: ComboBox):
    """``(name, checkpoint or None)`` for :func:`~napari_active_sam.core.models.load_model`
    from :func:`model_choosers`; a checkpoint written by this project names its own
    architecture."""
    if name.value != LOCAL_FILE:
        return name.value, None
    arch = architecture.value
    return (LOCAL_FILE if arch == FROM_FILE else arch), checkpoint.value


class ActiveSamWidget(Container):
    """Dock widget for interactive SAM segmentation with suggested clicks.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.model_name, self.checkpoint, self.architecture = model_choosers()
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"])
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.window = ComboBox(label="window", choices=["percentile", *CT_PRESETS])
        self.encode_slice = PushButton(text="Encode current slice")
        self.encode_volume = PushButton(text="Encode whole volume")
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.acquisition = ComboBox(label="suggest with", value=Acquisition.BALD.value,
                                    choices=[*(a.value for a in ACQUISITIONS), OFF])  # fmt: skip
        self.samples = SpinBox(label="posterior samples", value=DEFAULT_SAMPLES, min=1,
                               max=MAX_SAMPLES)  # fmt: skip
        self.learn_button = PushButton(text="Learn from my annotations")
        self.uncertain_slices = Label(label="most uncertain", value="-")
        self.goto_uncertain = PushButton(text="Go to the most uncertain slice")
        self.propagate_button = PushButton(text="Propagate through the volume")
        self.overwrite = CheckBox(text="overwrite other objects")
        self.use_selected = CheckBox(text="commit with the labels layer's selected label")
        self.save_folder = FileEdit(label="annotation folder", mode="d")
        self.autosave = CheckBox(text="save after each commit", value=True)
        self.save_button = PushButton(text="Save")
        self.restore_button = PushButton(text="Restore")
        self.status = Label(label="status", value="choose an image")
        self.quality_panel = QualityPanel(self)
        self.extend([self.model_name, self.checkpoint, self.architecture, self.device,
                     self.image, self.window, self.encode_slice, self.encode_volume,
                     self.cancel, self.progress, self.acquisition, self.samples,
                     self.learn_button, self.uncertain_slices, self.goto_uncertain,
                     self.propagate_button, self.overwrite,
                     self.use_selected, self.save_folder, self.autosave, self.save_button,
                     self.restore_button, self.quality_panel, self.status])  # fmt: skip

        self.native.setMaximumWidth(440)
        self._life = _Lifetime()
        self.native.destroyed.connect(self._life.end)
        self.session: AnnotationSession | None = None
        self.quality: QualityModels | None = None  # estimators' networks for the model
        self._model = None
        self._model_key: tuple | None = None
        self._encoder = None
        self._decoder = None
        self._decode_again = False
        self._shown: tuple | None = None  # (slice, prompts) the preview was made from
        self._shown_settings: tuple | None = None  # and the map settings
        self._commit_when_ready = False
        self._load_request = 0
        self._saver = None
        self._save_again = False
        self._learner = None
        self._checkpoint = None  # the checkpoint of the loaded model, if a local file
        # Suggestions on screen: (slice, prompts) they answer, the list, the one offered.
        self._suggested: tuple[tuple, PromptSet, tuple[Suggestion, ...]] | None = None
        self._cursor = 0

        for control in (
            self.model_name,
            self.checkpoint,
            self.architecture,
            self.device,
            self.image,
            self.window,
        ):
            control.changed.connect(self.start_session)
        self.encode_slice.changed.connect(lambda: self.encode([self.current_index()]))
        self.encode_volume.changed.connect(self.encode_all)
        self.cancel.changed.connect(self.cancel_all)
        self.propagate_button.changed.connect(self.propagate)
        self.acquisition.changed.connect(self._acquisition_changed)
        self.samples.changed.connect(self._acquisition_changed)
        self.learn_button.changed.connect(self.learn)
        self.goto_uncertain.changed.connect(self.go_to_most_uncertain)
        self.save_button.changed.connect(self.save)
        self.restore_button.changed.connect(self.restore)
        self.viewer.dims.events.current_step.connect(self._slice_changed)
        if self.image.value is not None:
            self.start_session()

    def _start(self, worker, **slots) -> Any:
        """Connect ``slots`` (signal name → callback) and start ``worker``.

        Callbacks are skipped once the widget is gone (its viewer closed), and the worker
        is asked to quit then.
        """
        for signal, callback in slots.items():
            getattr(worker, signal).connect(self._life.guard(callback))
        self._life.track(worker)
        worker.start()
        return worker

    # ----------------------------------------------------------------------- model, session
    def _model_request(self) -> tuple[str, Any, str]:
        """(name, checkpoint, device) as chosen now, for a worker to load."""
        return *chosen_model(self.model_name, self.checkpoint, self.architecture), self.device.value

    def start_session(self) -> None:
        """(Re)start on the chosen image: load the model if needed, then encode."""
        layer = self.image.value
        if layer is None:
            return
        if self.model_name.value == LOCAL_FILE and not self.checkpoint.value.is_file():
            self.status.value = "choose a checkpoint file"
            return
        self.cancel_encoding()
        request = self._model_request()
        key = (self.model_name.value, *map(str, request))
        if self._model is not None and key == self._model_key:
            self._session_ready(layer)
            return
        self.status.value = f"loading {self.model_name.value} ..."
        self._load_request += 1
        ticket = self._load_request
        self._start(
            create_worker(load_model, *request, _ignore_errors=True),
            returned=lambda model: self._model_loaded(model, key, layer, ticket, request[1]),
            errored=self._report,
        )

    def _model_loaded(self, model, key, layer, ticket: int, checkpoint) -> None:
        if ticket != self._load_request:
            return  # the user changed the model again meanwhile: a newer load is coming
        self._model, self._model_key, self._checkpoint = model, key, checkpoint
        self._session_ready(layer)

    def _session_ready(self, layer: napari.layers.Image) -> None:
        """Build the session on a worker: reading the data and its intensity percentiles can
        take a while for a large or lazy volume."""
        self.status.value = "reading the image ..."
        self._start(
            create_worker(
                _make_session,
                self._model,
                layer.data,
                self.window.value,
                layer.rgb,
                self._checkpoint,
                _ignore_errors=True,
            ),  # fmt: skip
            returned=lambda made: self._session_made(layer, *made),
            errored=self._report,
        )

    def _session_made(
        self,
        layer: napari.layers.Image,
        session: AnnotationSession,
        quality: QualityModels,
        head_problem: str | None,
    ) -> None:
        try:
            self.session = None  # no decode against half-made layers
            self._ensure_layers(layer)
        except ActiveSamError as exc:
            self._report(exc)
            return
        self.session, self.quality = session, quality
        if head_problem:
            show_error(head_problem)
        if session.head is None and self.acquisition.value == Acquisition.BALD:
            self.acquisition.value = Acquisition.EIG.value  # BALD needs a head
        self._shown = None
        self.request_decode()  # prompts kept from an earlier session get a fresh mask
        head = "with its Bayesian head" if session.head else "without a Bayesian head"
        self.status.value = f"{self._model.name} ready on {self._model.device}, {head}"
        self.encode_all()

    def _ensure_layers(self, image: napari.layers.Image) -> None:
        """Create the output, preview and prompts layers, keeping what the user made."""
        shape = image.data.shape[:-1] if image.rgb else image.data.shape
        ndim = len(shape)
        placement = {"scale": image.scale[:ndim], "translate": image.translate[:ndim]}
        layers = self.viewer.layers
        if OUTPUT in layers and layers[OUTPUT].data.shape != shape:
            raise ActiveSamError(
                f"The labels layer '{OUTPUT}' has shape {layers[OUTPUT].data.shape} but the "
                f"image has {shape}: rename or remove that layer to start a new one."
            )
        if OUTPUT not in layers:
            # The image's metadata (a NIfTI affine) lets the labels be saved onto its grid.
            self.viewer.add_labels(np.zeros(shape, np.int32), name=OUTPUT,
                                   metadata=dict(image.metadata), **placement)  # fmt: skip
        if PREVIEW in layers and layers[PREVIEW].data.shape != shape:
            layers.remove(PREVIEW)
        if PREVIEW not in layers:
            self.viewer.add_labels(np.zeros(shape, np.uint8), name=PREVIEW, opacity=0.5,
                                   **placement)  # fmt: skip
        layers[PREVIEW].data[...] = 0
        layers[PREVIEW].refresh()
        if UNCERTAINTY in layers and layers[UNCERTAINTY].data.shape != shape:
            layers.remove(UNCERTAINTY)
        if UNCERTAINTY not in layers:
            self.viewer.add_image(np.zeros(shape, np.float32), name=UNCERTAINTY,
                                  colormap="magma", opacity=0.6, blending="additive",
                                  contrast_limits=(0, 1), **placement)  # fmt: skip
        layers[UNCERTAINTY].data[...] = 0
        if SUGGESTIONS in layers and layers[SUGGESTIONS].ndim != ndim:
            layers.remove(SUGGESTIONS)
        if SUGGESTIONS not in layers:
            self.viewer.add_points(
                np.empty((0, ndim)), name=SUGGESTIONS, ndim=ndim, size=14, symbol="ring",
                features={"rank": np.array([], int), "belief": np.array([], float)},
                text={"string": "{rank}", "color": "white", "anchor": "upper_left",
                      "size": 10},
                border_width=0, **placement,
            )  # fmt: skip
        layers[SUGGESTIONS].editable = False
        if PROMPTS in layers and layers[PROMPTS].ndim != ndim:
            layers.remove(PROMPTS)
        if PROMPTS not in layers:
            points = self.viewer.add_points(
                np.empty((0, ndim)), name=PROMPTS, ndim=ndim, size=8,
                features={"positive": np.array([], bool)}, border_color="white", **placement,
            )  # fmt: skip
            points.feature_defaults["positive"] = True
            points.mode = "add"
        points = layers[PROMPTS]
        # Reconnect (once) so a restarted session keeps the user's clicks.
        points.events.data.disconnect(self._prompts_changed)
        points.events.data.connect(self._prompts_changed)
        if self._right_click_adds_negative not in points.mouse_drag_callbacks:
            # First in the list, so napari's own "add" sees the negative default.
            points.mouse_drag_callbacks.insert(0, self._right_click_adds_negative)
        for name in (PROMPTS, PREVIEW, OUTPUT, UNCERTAINTY, SUGGESTIONS):
            layer = layers[name]
            layer.bind_key("c", lambda _: self.commit(), overwrite=True)
            layer.bind_key("x", lambda _: self.clear_prompts(), overwrite=True)
            layer.bind_key("t", lambda _: self.toggle_last(), overwrite=True)
            layer.bind_key("a", lambda _: self.answer_suggestion(True), overwrite=True)
            layer.bind_key("d", lambda _: self.answer_suggestion(False), overwrite=True)
            layer.bind_key("s", lambda _: self.answer_suggestion(None), overwrite=True)
        self._shown = None
        self._suggested = None
        self.viewer.layers.selection.active = points

    # ---------------------------------------------------------------------------- encoding
    def current_index(self) -> tuple[int, ...]:
        if self.session is None:
            return ()
        leading = len(self.session.source.leading_shape)
        if not leading or self.image.value is None:
            return ()
        # World to the image's data coordinates: right even when other layers differ in scale.
        point = self.image.value.world_to_data(self.viewer.dims.point)
        shape = self.session.source.leading_shape
        return tuple(
            int(np.clip(round(float(v)), 0, n - 1))
            for v, n in zip(point[:leading], shape, strict=True)
        )

    def encode(self, indices: list[tuple[int, ...]]) -> None:
        """Encode slices on a worker, with progress and cancel."""
        if self.session is None:
            return
        self.cancel_encoding()
        self.cancel.enabled = True
        self._encoder = self._start(
            create_worker(self.session.encode, indices, _ignore_errors=True),
            yielded=self._encoding_progress,
            finished=self._encoding_finished,
            errored=self._report,
        )

    def encode_all(self) -> None:
        """The current slice first, then the rest of the volume outwards."""
        if self.session is not None:
            self.encode(self.session.order_from(self.current_index()))

    def cancel_encoding(self) -> None:
        if self._encoder is not None:
            self._encoder.quit()
            self._encoder = None
        self.cancel.enabled = False

    def cancel_all(self) -> None:
        """The Cancel button: stop encoding, propagation and learning."""
        self.cancel_encoding()
        if self._learner is not None:
            self._learner.quit()
            self._learner = None

    def _encoding_progress(self, step) -> None:
        self.progress.max = max(step.total, 1)
        self.progress.value = step.done
        self.status.value = step.message

    def _encoding_finished(self) -> None:
        self.cancel.enabled = self._learner is not None

    # ------------------------------------------------------------------------------ prompts
    def _right_click_adds_negative(self, layer, event):
        """A right click adds a negative point: napari's "add" mode makes the point, with
        the polarity default switched for the duration of the press."""
        if event.button != 2 or layer.mode != "add":
            return
        layer.feature_defaults["positive"] = False
        yield
        while event.type == "mouse_move":
            yield
        layer.feature_defaults["positive"] = True

    def current_prompts(self) -> PromptSet:
        if PROMPTS not in self.viewer.layers:
            return PromptSet()
        return prompts_on_slice(self.viewer.layers[PROMPTS], self.current_index())

    def _prompts_changed(self, event=None) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("ing"):  # adding, removing, changing: the change is not made yet
            return
        colour_points(self.viewer.layers[PROMPTS])
        self.request_decode()

    def _slice_changed(self, event=None) -> None:
        if self.session is not None and PREVIEW in self.viewer.layers:
            self.request_decode()

    def request_decode(self) -> None:
        """Decode the current prompts on a worker; the latest request wins."""
        if self.session is None or not {PROMPTS, PREVIEW} <= {
            lay.name for lay in self.viewer.layers
        }:
            return  # no session, or the user removed our layers
        if self._decoder is not None:
            self._decode_again = True
            return
        index, prompts = self.current_index(), self.current_prompts()
        settings = self._map_settings()
        if self._shown == (index, prompts) and self._shown_settings == settings:
            return  # the preview already shows these prompts
        if not prompts.clicks:
            self.session.forget(index)
            self._show_preview(index, None)
            self._show_uncertainty(index, prompts, None)
            self._shown, self._shown_settings = (index, prompts), settings
            self._refresh_slice_list()
            return
        self._decoder = self._start(
            create_worker(self.session.answer, index, prompts, *settings, _ignore_errors=True),
            returned=lambda answer: self._decoded(index, prompts, settings, answer),
            errored=self._decode_failed,
            finished=self._decode_finished,
        )

    def _map_settings(self) -> tuple[str | None, int]:
        """(acquisition function or None, posterior samples) as chosen now."""
        acquisition = None if self.acquisition.value == OFF else self.acquisition.value
        return acquisition, self.samples.value

    def _decoded(self, index, prompts, settings, answer: Answer) -> None:
        if index == self.current_index() and prompts == self.current_prompts():
            self._show_preview(index, answer.mask)
            self._show_uncertainty(index, prompts, answer.uncertainty)
            self._shown = (index, prompts)
            self._shown_settings = settings
            self._refresh_slice_list()
            if self._commit_when_ready:
                self._commit_when_ready = False
                self.commit()

    def _decode_failed(self, exc: Exception) -> None:
        self._commit_when_ready = False  # never commit a mask the user did not see
        self._report(exc)

    def _decode_finished(self) -> None:
        self._decoder = None
        if self._decode_again:
            self._decode_again = False
            self.request_decode()

    def _acquisition_changed(self, *_) -> None:
        self.request_decode()  # same prompts, another map

    def _show_uncertainty(self, index, prompts: PromptSet, found: Uncertainty | None) -> None:
        """Draw the acquisition map of slice ``index`` and the suggestions on it."""
        layers = self.viewer.layers
        if UNCERTAINTY in layers:
            image = layers[UNCERTAINTY]
            image.data[index] = 0 if found is None else found.scores
            top = float(found.scores.max()) if found is not None else 0.0
            image.contrast_limits = (0.0, top if top > 0 else 1.0)
            image.refresh()
        suggestions = found.suggestions if found is not None else ()
        self._suggested = (index, prompts, suggestions) if found is not None else None
        self._cursor = 0
        self._draw_suggestions()
        if found is not None:
            title = ACQUISITIONS[found.acquisition].title
            if suggestions:
                top = suggestions[0]
                self.status.value = (
                    f"{title}: ask at ({top.y:.0f}, {top.x:.0f}), inside with probability "
                    f"{top.belief:.2f} — A inside, D outside, S skip"
                )
            else:
                self.status.value = f"{title}: no suggestion, the model is sure everywhere"

    def _draw_suggestions(self) -> None:
        if SUGGESTIONS not in self.viewer.layers:
            return
        layer = self.viewer.layers[SUGGESTIONS]
        if self._suggested is None:
            layer.data = np.empty((0, layer.ndim))
            return
        index, _, suggestions = self._suggested
        offered = suggestions[self._cursor :]
        layer.data = suggestion_points(index, offered)
        layer.features = {
            "rank": np.array([s.rank for s in offered], int),
            "belief": np.array([s.belief for s in offered], float),
        }
        if offered:
            layer.border_color = belief_colours(layer.features["belief"].to_numpy())
            layer.border_width = 0.15
        layer.refresh()

    @property
    def suggestions(self) -> tuple[Suggestion, ...]:
        """The suggestions still on offer, best first (empty when there are none)."""
        return self._suggested[2][self._cursor :] if self._suggested is not None else ()

    def answer_suggestion(self, inside: bool | None) -> None:
        """Answer the offered suggestion: inside (A), outside (D), or skip it (S)."""
        if self._suggested is None or not self._suggested[2]:
            show_info("No suggestion to answer: click inside an object first.")
            return
        index, prompts, suggestions = self._suggested
        if (index, prompts) != (self.current_index(), self.current_prompts()):
            show_info("These suggestions belong to other clicks or another slice: wait for "
                      "the new ones.")  # fmt: skip
            return
        if self._cursor >= len(suggestions):
            show_info("No more suggestions here: click where the mask is wrong.")
            return
        offered = suggestions[self._cursor]
        if inside is None:
            self._cursor += 1
            self._draw_suggestions()
            left = len(suggestions) - self._cursor
            self.status.value = f"skipped suggestion {offered.rank}; {left} left"
            return
        self._suggested = None
        self.add_click(offered.y, offered.x, positive=inside)

    def _refresh_slice_list(self) -> None:
        if self.session is None or not self.session.source.leading_shape:
            self.uncertain_slices.value = "-"
            return
        ranked = self.session.most_uncertain(5)
        self.uncertain_slices.value = (
            ", ".join(f"{','.join(map(str, i))}: {v:.3f}" for i, v in ranked) or "-"
        )

    def go_to_most_uncertain(self) -> None:
        """Move the viewer to the answered slice SAM is least sure of."""
        if self.session is None or not self.session.source.leading_shape:
            show_info("Slices to compare need a volume.")
            return
        ranked = self.session.most_uncertain(1)
        if not ranked:
            show_info("No slice has a mask yet: click or propagate first.")
            return
        ((index, score),) = ranked
        self.go_to_slice(index)
        self.status.value = f"slice {index}: uncertainty {score:.3f}"

    def go_to_slice(self, index: tuple[int, ...]) -> None:
        """Show the slice at data index ``index`` of the image."""
        image = self.image.value
        world = image.data_to_world([*index, 0, 0])
        step = list(self.viewer.dims.point)
        offset = len(step) - image.ndim  # napari aligns layers on their trailing axes
        for axis in range(len(index)):
            step[offset + axis] = world[axis]
        self.viewer.dims.point = step

    # ------------------------------------------------------------------------------ learn
    def learn(self) -> None:
        """Retrain the Bayesian head on the committed objects (on a worker)."""
        if self.session is None or OUTPUT not in self.viewer.layers:
            show_info("Choose an image and commit some objects first.")
            return
        if self._learner is not None:
            show_info("Already learning; wait for it to finish.")
            return
        labels = np.asarray(self.viewer.layers[OUTPUT].data).copy()
        self.cancel.enabled = True
        self._learner = self._start(
            create_worker(_learning_job, self.session, labels, _ignore_errors=True),
            yielded=self._encoding_progress,
            returned=self._learned,
            errored=self._report,
            finished=self._learning_finished,
        )

    def _learned(self, result: tuple[BayesHead, str]) -> None:
        head, path = result
        if self.session is not None and self.session.model.model_id == head.model_id:
            self.session.head = head
            if self.quality is not None:
                self.quality.bayes_head = head
        info = head.info
        self.status.value = (
            f"learned from {info['examples']} click sets (loss {info['sam_loss']:.4f} -> "
            f"{info['map_loss']:.4f}); saved {path}"
        )
        self._shown_settings = None  # same prompts, new head: a new map
        self.request_decode()

    def _learning_finished(self) -> None:
        self._learner = None
        self.cancel.enabled = False

    def _show_preview(self, index, mask: np.ndarray | None) -> None:
        if PREVIEW not in self.viewer.layers:
            return
        preview = self.viewer.layers[PREVIEW]
        preview.data[index] = 0 if mask is None else mask.astype(np.uint8)
        preview.refresh()

    # --------------------------------------------------------------------------- commands
    def commit(self) -> int | None:
        """Write the previewed object into the output layer (undoable with Ctrl+Z)."""
        index = self.current_index()
        prompts = self.current_prompts()
        if prompts.clicks and self._shown != (index, prompts):
            # The preview is behind the clicks: commit once it has caught up.
            self._commit_when_ready = True
            self.status.value = "committing when the mask is up to date ..."
            self.request_decode()
            return None
        mask = np.asarray(self.viewer.layers[PREVIEW].data[index]) > 0
        if not mask.any():
            show_info("Nothing to commit: click inside an object first.")
            return None
        output = self.viewer.layers[OUTPUT]
        label = self._commit_label(output)
        rows, cols = commit_pixels(np.asarray(output.data[index]), mask, self.overwrite.value)
        indices = (*(np.full(len(rows), i) for i in index), rows, cols)
        output.data_setitem(indices, label)
        self.clear_prompts()
        self.status.value = f"committed object {label} ({len(rows)} pixels)"
        self._refresh_slice_list()
        self.quality_panel.check_object(label)
        self._autosave()
        return label

    def _commit_label(self, output) -> int:
        """The next free label, or the layer's selected one if the user asked for it."""
        if self.use_selected.value and output.selected_label > 0:
            return int(output.selected_label)
        return next_free_label(output.data)

    def propagate(self) -> None:
        """Grow the prompted object through the volume on a worker; commit it as one object.

        Every slice with prompts seeds the growth (its prompts stay in place).
        """
        if self.session is None or len(self.session.source.leading_shape) != 1:
            show_info("Propagation needs a volume (z, y, x).")
            return
        points = self.viewer.layers[PROMPTS]
        slices = sorted({int(round(p[0])) for p in np.asarray(points.data)})
        prompted = {z: prompts_on_slice(points, (z,)) for z in slices}
        prompted = {z: p for z, p in prompted.items() if p.clicks}
        if not prompted:
            show_info("Click inside the object on at least one slice first.")
            return
        self.cancel_encoding()
        # The slice on screen seeds with the mask the user sees, if it is up to date.
        current = self.current_index()
        shown = {}
        if current and self._shown == (current, prompted.get(current[0])):
            shown[current[0]] = np.asarray(self.viewer.layers[PREVIEW].data[current]) > 0
        self.cancel.enabled = True
        self._encoder = self._start(
            create_worker(_propagation_job, self.session, prompted, shown, _ignore_errors=True),
            yielded=self._encoding_progress,
            returned=self._commit_volume,
            errored=self._report,
        )

    def _commit_volume(self, mask: np.ndarray) -> None:
        self.cancel.enabled = False
        output = self.viewer.layers[OUTPUT]
        label = self._commit_label(output)
        indices = commit_pixels(np.asarray(output.data), mask, self.overwrite.value)
        output.data_setitem(indices, label)
        slices = int(mask.any(axis=(1, 2)).sum())
        self.status.value = f"committed object {label} on {slices} slices"
        self._refresh_slice_list()
        self.quality_panel.check_object(label)
        self._autosave()

    # ------------------------------------------------------------------------ save, restore
    def _current_annotation(self) -> SavedAnnotation:
        points = self.viewer.layers[PROMPTS]
        return SavedAnnotation(
            labels=np.array(self.viewer.layers[OUTPUT].data),
            points=np.asarray(points.data),
            positive=np.asarray(points.features["positive"], bool),
            settings={
                "model": self.model_name.value,
                "window": self.window.value,
                "image": getattr(self.image.value, "name", None),
            },  # fmt: skip
        )

    def _folder(self):
        folder = self.save_folder.value
        return None if folder is None or str(folder) in ("", ".") else folder

    def save(self) -> None:
        """Save labels, prompts and settings to the chosen folder (on a worker)."""
        folder = self._folder()
        if folder is None:
            show_info("Choose an annotation folder first.")
            return
        if self._saver is not None:
            self._save_again = True  # one save at a time; the newest state wins
            return
        self._saver = self._start(
            create_worker(save_annotation, folder, self._current_annotation(), _ignore_errors=True),
            returned=lambda path: setattr(self.status, "value", f"saved to {path}"),
            errored=self._report,
            finished=self._save_finished,
        )

    def _save_finished(self) -> None:
        self._saver = None
        if self._save_again:
            self._save_again = False
            self.save()

    def _autosave(self) -> None:
        if self.autosave.value and self._folder() is not None:
            self.save()

    def restore(self) -> None:
        """Load a saved annotation into the output and prompts layers."""
        folder = self._folder()
        if folder is None or OUTPUT not in self.viewer.layers:
            show_info("Choose an image and the annotation folder first.")
            return
        try:
            saved = load_annotation(folder)
            output = self.viewer.layers[OUTPUT]
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
        points = self.viewer.layers[PROMPTS]
        points.data = saved.points
        points.features = {"positive": saved.positive}
        colour_points(points)
        self.status.value = f"restored {int(saved.labels.max())} objects from {folder}"

    def clear_prompts(self) -> None:
        """Remove the prompts of the current slice."""
        points = self.viewer.layers[PROMPTS]
        index = self.current_index()
        if len(points.data):
            leading = np.round(np.asarray(points.data)[:, :-2]).astype(int)
            here = np.all(leading == np.array(index, int), axis=1) if index else np.ones(
                len(points.data), bool)  # fmt: skip
            points.selected_data = set(np.flatnonzero(here).tolist())
            points.remove_selected()
        if self.session is not None:
            self.session.forget(index)
        self._show_preview(index, None)
        self._show_uncertainty(index, PromptSet(), None)
        self._shown = (index, PromptSet())

    def toggle_last(self) -> None:
        """Flip the polarity of the last click."""
        points = self.viewer.layers[PROMPTS]
        if len(points.data):
            positive = np.asarray(points.features["positive"], bool).copy()
            positive[-1] = not positive[-1]
            points.features = {"positive": positive}
            self._prompts_changed()

    def add_click(self, row: float, col: float, positive: bool = True) -> None:
        """Add a click on the current slice (what a mouse click in the prompts layer does)."""
        points = self.viewer.layers[PROMPTS]
        points.feature_defaults["positive"] = positive
        points.add(point_for(self.current_index(), row, col))
        points.feature_defaults["positive"] = True

    def _report(self, exc: Exception) -> None:
        report_error(self.status, exc)


def report_error(status: Label, exc: Exception) -> None:
    """Show an error the user can act on in ``status`` and a notification; let anything
    else surface as the bug it is."""
    status.value = f"error: {exc}"
    if not isinstance(exc, ActiveSamError):
        raise exc
    show_error(str(exc))


class _Lifetime:
    """Whether the widget still exists, and the workers to stop when it goes.

    Kept apart from the widget so the Qt ``destroyed`` signal can reach it after the
    widget's own Qt objects are gone.
    """

    def __init__(self):
        self.ended = False
        self.workers: set = set()

    def track(self, worker) -> None:
        self.workers.add(worker)
        worker.finished.connect(lambda: self.workers.discard(worker))

    def guard(self, callback):
        def guarded(*args):
            if not self.ended:
                return callback(*args)
            return None

        return guarded

    def end(self, *_) -> None:
        self.ended = True
        for worker in list(self.workers):
            worker.quit()


def _make_session(model, data, window: str, rgb: bool, checkpoint=None):
    """Worker: the image as SAM input (percentiles resolved), a fresh embedding store, the
    model's Bayesian head and quality regressor; returns ``(session, quality models,
    problem with the head or regressor or None)``."""
    source = SliceSource(np.asarray(data), IntensityWindow.from_name(window), rgb=rgb)
    session = AnnotationSession(model, source, EmbeddingStore(model.model_id))
    problem = None
    try:
        session.head = head_for_model(model, checkpoint)
    except ActiveSamError as exc:
        problem = f"{exc} Suggestions use EIG until then."
    try:
        regressor = regressor_for_model(model, checkpoint)
    except ActiveSamError as exc:
        regressor = None
        note = f"{exc} Quality falls back to SAM's IoU head."
        problem = f"{problem} {note}" if problem else note
    return session, QualityModels(model, session.head, regressor), problem


def _learning_job(session: AnnotationSession, labels: np.ndarray):
    """Worker generator: click sets simulated on every committed object, then the head
    fitted on them (starting from the current head) and saved as the user's own."""

    def embedding(index):
        return lambda: embed_slice(session.model, session.source, session.store, index,
                                   session.limits)  # fmt: skip

    pairs = []
    for index in session.source.slice_indices():
        plane = labels[index] if index else labels
        for label in np.unique(plane[plane > 0]):
            pairs.append((embedding(index), plane == label))
    if not pairs:
        raise ActiveSamError("No committed objects to learn from: commit some objects first.")
    rng = np.random.default_rng(0)
    examples = yield from examples_from_objects(session.predictor, pairs, rng)
    config = HeadConfig(steps=300)
    head = yield from fit_head(examples, session.model, config, initial=session.head)
    path = head.save(user_head_path(session.model.model_id))
    return head, str(path)


def _propagation_job(
    session: AnnotationSession, prompted: dict[int, PromptSet], shown: dict[int, np.ndarray]
):
    """Worker generator: seed masks from the prompted slices (the previewed mask where the
    user saw one), then grow through the volume."""
    seeds = dict(shown)
    for z, prompts in prompted.items():
        if z not in seeds:
            seeds[z] = shown_mask(session.predict((z,), prompts), prompts)
    return (yield from propagate(session, seeds))
