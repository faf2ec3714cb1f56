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
    create_widget,
)
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from ..core.embeddings import EmbeddingStore
from ..core.errors import ActiveSamError
from ..core.models import ARCHITECTURES, load_model, model_names
from ..core.persistence import SavedAnnotation, load_annotation, save_annotation
from ..core.preprocess import CT_PRESETS, IntensityWindow, SliceSource
from ..core.session import AnnotationSession, commit_pixels, next_free_label, shown_mask
from ..core.types import PromptSet
from ..core.volume import propagate
from .layers import OUTPUT, PREVIEW, PROMPTS, colour_points, point_for, prompts_on_slice

if TYPE_CHECKING:
    import napari

LOCAL_FILE = "local file"
FROM_FILE = "from the file"


class ActiveSamWidget(Container):
    """Dock widget for interactive SAM segmentation with suggested clicks.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.model_name = ComboBox(label="model", choices=[*model_names(), LOCAL_FILE],
                                   value="demo")  # fmt: skip
        self.checkpoint = FileEdit(label="checkpoint", mode="r", visible=False)
        self.architecture = ComboBox(label="architecture", choices=[FROM_FILE, *ARCHITECTURES],
                                     visible=False)  # fmt: skip
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"])
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.window = ComboBox(label="window", choices=["percentile", *CT_PRESETS])
        self.encode_slice = PushButton(text="Encode current slice")
        self.encode_volume = PushButton(text="Encode whole volume")
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.propagate_button = PushButton(text="Propagate through the volume")
        self.overwrite = CheckBox(text="overwrite other objects")
        self.use_selected = CheckBox(text="commit with the labels layer's selected label")
        self.save_folder = FileEdit(label="annotation folder", mode="d")
        self.autosave = CheckBox(text="save after each commit", value=True)
        self.save_button = PushButton(text="Save")
        self.restore_button = PushButton(text="Restore")
        self.status = Label(label="status", value="choose an image")
        self.extend([self.model_name, self.checkpoint, self.architecture, self.device,
                     self.image, self.window, self.encode_slice, self.encode_volume,
                     self.cancel, self.progress, self.propagate_button, self.overwrite,
                     self.use_selected, self.save_folder, self.autosave, self.save_button,
                     self.restore_button, self.status])  # fmt: skip

        self.native.setMaximumWidth(440)
        self._life = _Lifetime()
        self.native.destroyed.connect(self._life.end)
        self.session: AnnotationSession | None = None
        self._model = None
        self._model_key: tuple | None = None
        self._encoder = None
        self._decoder = None
        self._decode_again = False
        self._shown: tuple | None = None  # (slice, prompts) the preview was made from
        self._commit_when_ready = False
        self._load_request = 0
        self._saver = None
        self._save_again = False

        self.model_name.changed.connect(self._model_changed)
        for control in (self.checkpoint, self.architecture, self.device, self.image, self.window):
            control.changed.connect(self.start_session)
        self.encode_slice.changed.connect(lambda: self.encode([self.current_index()]))
        self.encode_volume.changed.connect(self.encode_all)
        self.cancel.changed.connect(self.cancel_encoding)
        self.propagate_button.changed.connect(self.propagate)
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
    def _model_changed(self) -> None:
        self.checkpoint.visible = self.model_name.value == LOCAL_FILE
        self.architecture.visible = self.model_name.value == LOCAL_FILE
        self.start_session()

    def _model_request(self) -> tuple[str, Any, str]:
        """(name, checkpoint, device) as chosen now, for a worker to load."""
        name = self.model_name.value
        if name != LOCAL_FILE:
            return name, None, self.device.value
        # A checkpoint written by this project names its own architecture.
        arch = self.architecture.value
        return (LOCAL_FILE if arch == FROM_FILE else arch), self.checkpoint.value, self.device.value

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
            returned=lambda model: self._model_loaded(model, key, layer, ticket),
            errored=self._report,
        )

    def _model_loaded(self, model, key, layer, ticket: int) -> None:
        if ticket != self._load_request:
            return  # the user changed the model again meanwhile: a newer load is coming
        self._model, self._model_key = model, key
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
                _ignore_errors=True,
            ),  # fmt: skip
            returned=lambda session: self._session_made(layer, session),
            errored=self._report,
        )

    def _session_made(self, layer: napari.layers.Image, session: AnnotationSession) -> None:
        try:
            self.session = None  # no decode against half-made layers
            self._ensure_layers(layer)
        except ActiveSamError as exc:
            self._report(exc)
            return
        self.session = session
        self.request_decode()  # prompts kept from an earlier session get a fresh mask
        self.status.value = f"{self._model.name} ready on {self._model.device}"
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
        for name in (PROMPTS, PREVIEW, OUTPUT):
            layer = layers[name]
            layer.bind_key("c", lambda _: self.commit(), overwrite=True)
            layer.bind_key("x", lambda _: self.clear_prompts(), overwrite=True)
            layer.bind_key("t", lambda _: self.toggle_last(), overwrite=True)
        self._shown = None
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

    def _encoding_progress(self, step) -> None:
        self.progress.max = max(step.total, 1)
        self.progress.value = step.done
        self.status.value = step.message

    def _encoding_finished(self) -> None:
        self.cancel.enabled = False

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
        if self._shown == (index, prompts):
            return  # the preview already shows these prompts
        if not prompts.clicks:
            self.session.forget(index)
            self._show_preview(index, None)
            self._shown = (index, prompts)
            return
        self._decoder = self._start(
            create_worker(self.session.predict, index, prompts, _ignore_errors=True),
            returned=lambda p: self._decoded(index, prompts, p),
            errored=self._report,
            finished=self._decode_finished,
        )

    def _decoded(self, index, prompts, prediction) -> None:
        if index == self.current_index() and prompts == self.current_prompts():
            self._show_preview(index, shown_mask(prediction, prompts))
            self._shown = (index, prompts)
            if self._commit_when_ready:
                self._commit_when_ready = False
                self.commit()

    def _decode_finished(self) -> None:
        self._decoder = None
        if self._decode_again:
            self._decode_again = False
            self.request_decode()

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
        output.data = saved.labels
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
        """Show an error the user can act on; let anything else surface as the bug it is."""
        self.status.value = f"error: {exc}"
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


def _make_session(model, data, window: str, rgb: bool) -> AnnotationSession:
    """Worker: the image as SAM input (percentiles resolved) and a fresh embedding store."""
    source = SliceSource(np.asarray(data), IntensityWindow.from_name(window), rgb=rgb)
    return AnnotationSession(model, source, EmbeddingStore(model.model_id))


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
