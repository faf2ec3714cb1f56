"""The "Active SAM" dock widget: the controls of interactive segmentation with suggested clicks.

The dock builds controls, passes what the user chooses to its
:class:`~napari_active_sam._widgets.controller.AnnotationController` and shows what the
controller announces: status, progress, whether Cancel has work to stop, the suggestion to
answer, the most uncertain slices. The annotation itself (session, decoding, suggestions,
commits, workers, the layers) is the controller's; the dock's public methods hand on to it,
for scripts and tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
from qtpy.QtWidgets import QFileDialog

from ..core.active.acquisition import ACQUISITIONS
from ..core.active.bayes_head import DEFAULT_SAMPLES, MAX_SAMPLES
from ..core.engine.preprocess import CT_PRESETS
from ..core.enums import Acquisition
from ..core.prompts import PromptSet, Suggestion, left_out
from ..io import PLUGIN, READER_SUFFIXES
from .adapt import AdaptPanel
from .along_z import AlongZPanel
from .closing import when_closed
from .controller import AnnotationController
from .layers import MANAGED
from .loading import ModelRequest
from .models import (
    FROM_FILE,
    checkpoint_missing,
    chosen_model,
    device_chooser,
    model_choosers,
)
from .previews import hint
from .quality import QualityPanel

if TYPE_CHECKING:
    import napari

    from ..core.annotate.session import AnnotationSession

OFF = "off"


class ActiveSamWidget(Container):
    """Dock widget for interactive SAM segmentation with suggested clicks.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.controller = AnnotationController(viewer)
        self._reverting = False
        self._opened_from: Path | None = None  # where the open dialog starts next time
        self._chosen_store: Path | None = None  # the embedding store last taken
        self.model_name, self.checkpoint, self.architecture = model_choosers()
        self.device = device_chooser()
        self.open_button = PushButton(text="Open image or DICOM series…")
        self.image = create_widget(annotation="napari.layers.Image", label="image",
                                   options={"choices": self._user_images})  # fmt: skip
        self.window = ComboBox(label="window", choices=["percentile", *CT_PRESETS])
        self.store = FileEdit(label="embedding store", mode="d",
                              tooltip="a folder that precompute wrote (or a new one): "
                              "embeddings stored there are read, new ones added")  # fmt: skip
        self.encode_slice = PushButton(text="Encode current slice")
        self.encode_volume = PushButton(text="Encode whole volume")
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.acquisition = ComboBox(label="suggest with", value=Acquisition.BALD.value,
                                    choices=[*(a.value for a in ACQUISITIONS), OFF])  # fmt: skip
        self.samples = SpinBox(label="posterior samples", value=DEFAULT_SAMPLES, min=1,
                               max=MAX_SAMPLES)  # fmt: skip
        self.hint = Label(label="next", value="click inside an object")
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
        self.along_z = AlongZPanel(self.controller)
        self.quality_panel = QualityPanel(self.controller)
        self.adapt_panel = AdaptPanel(self.controller)
        self.extend([self.model_name, self.checkpoint, self.architecture, self.device,
                     self.open_button, self.image, self.window, self.store, self.encode_slice,
                     self.encode_volume, self.cancel, self.progress, self.acquisition, self.samples,
                     self.hint, self.learn_button, self.uncertain_slices, self.goto_uncertain,
                     self.propagate_button, self.along_z, self.overwrite,
                     self.use_selected, self.save_folder, self.autosave, self.save_button,
                     self.restore_button, self.quality_panel, self.adapt_panel,
                     self.status])  # fmt: skip
        self.native.setMaximumWidth(440)

        events = self.controller.events
        events.status.connect(self._show_status)
        events.progress.connect(self._show_progress)
        events.busy.connect(self._show_busy)
        events.model_kept.connect(self._show_model_kept)
        events.acquisition.connect(self._show_acquisition)
        events.uncertain_slices.connect(self._show_uncertain_slices)
        events.answered.connect(self._show_answer)
        events.offered.connect(self._show_hint)
        events.candidates.connect(self._show_hint)
        viewer.dims.events.current_step.connect(self._show_hint)  # candidates are per slice
        controller, show_hint = self.controller, self._show_hint

        def closed() -> None:  # nothing of the dock's Qt side: it may be gone
            controller.close()
            viewer.dims.events.current_step.disconnect(show_hint)

        when_closed(self.native, closed)
        for control in (self.model_name, self.checkpoint, self.architecture, self.device,
                        self.image, self.window):  # fmt: skip
            control.changed.connect(self.start_session)
        # A path is taken once typed (Return, or focus leaving) or chosen, not per keystroke.
        self.store.line_edit.native.editingFinished.connect(self.choose_store)
        self.store.choose_btn.changed.connect(self.choose_store)  # after its dialog
        for control in (self.acquisition, self.samples, self.overwrite, self.use_selected,
                        self.save_folder, self.autosave):  # fmt: skip
            control.changed.connect(self._choices_changed)
        self._choices_changed()
        self.open_button.changed.connect(self.choose_file)
        self.encode_slice.changed.connect(lambda: self.encode([self.current_index()]))
        self.encode_volume.changed.connect(self.encode_all)
        self.cancel.changed.connect(self.cancel_all)
        self.propagate_button.changed.connect(self.propagate)
        self.learn_button.changed.connect(self.learn)
        self.goto_uncertain.changed.connect(self.go_to_most_uncertain)
        self.save_button.changed.connect(self.save)
        self.restore_button.changed.connect(self.restore)
        if self.image.value is not None:
            self.start_session()

    # ----------------------------------------------------------------------- choices
    def _user_images(self, _widget=None) -> list:
        """The image layers to choose from: the user's, not the dock's own uncertainty map."""
        import napari

        images = [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Image)]
        return [layer for layer in images if layer.name not in MANAGED]

    def start_session(self) -> None:
        """(Re)start on the chosen image: load the model if needed, then encode."""
        layer = self.image.value
        if layer is None or self._reverting:
            return
        if checkpoint_missing(self.model_name, self.checkpoint):
            self.status.value = "choose a checkpoint file"
            return
        name, checkpoint = chosen_model(self.model_name, self.checkpoint, self.architecture)
        request = ModelRequest(self.model_name.value, name, checkpoint, self.device.value)
        store = self._store_path()
        cleared = store is not None and self.controller.image not in (None, layer)
        if cleared:  # a store holds one image's slices: another image's would replace them
            self._chosen_store, self.store.line_edit.value, store = None, "", None
        self.controller.start_session(layer, request, self.window.value, store)
        if cleared:
            self.status.value = "embedding store cleared: it holds the previous image's slices"

    def _store_path(self) -> Path | None:
        value = self.store.value
        return None if value is None or str(value) in ("", ".") else Path(value)

    def choose_store(self, *_) -> None:
        """Keep the session's embeddings in the store now named (or in memory only, the
        field emptied): the session and its work stay."""
        store = self._store_path()
        if store == self._chosen_store:
            return  # focus left the field without a change
        self._chosen_store = store
        self.controller.attach_store(store)

    def _choices_changed(self, *_) -> None:
        objects = self.controller.objects
        objects.overwrite, objects.use_selected = self.overwrite.value, self.use_selected.value
        objects.autosave = self.autosave.value
        folder = self.save_folder.value
        objects.folder = None if folder is None or str(folder) in ("", ".") else folder
        acquisition = None if self.acquisition.value == OFF else self.acquisition.value
        if (acquisition, self.samples.value) != (self.controller.acquisition,
                                                 self.controller.samples):  # fmt: skip
            self.controller.choose_map(acquisition, self.samples.value)

    def choose_file(self) -> QFileDialog:
        """Ask for an image file (a DICOM file brings its whole series) and open it with this
        plugin's reader, so that napari has no reader to ask about; return the dialog."""
        dialog = QFileDialog(self.native, "Open an image or a file of a DICOM series")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setNameFilters([f"Images ({' '.join('*' + s for s in READER_SUFFIXES)})",
                               "All files (*)"])  # fmt: skip
        # Qt's own dialog: the same on every platform and driven by key presses in tests.
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog)
        if self._opened_from is not None:
            dialog.setDirectory(str(self._opened_from))
        dialog.fileSelected.connect(self.open_file)
        dialog.open()
        return dialog

    def open_file(self, path: str) -> None:
        """Open ``path`` (an image file, a DICOM file or a DICOM series folder) with this
        plugin's reader and annotate it; a file that cannot be read is said in the status."""
        try:
            layers = self.viewer.open(path, plugin=PLUGIN)
        except Exception as error:  # napari wraps the reader's ImageError in its own error
            cause = error.__cause__ or error
            self.status.value = f"could not open {Path(path).name}: {cause}"
            return
        self._opened_from = Path(path).parent
        if layers:
            self.image.reset_choices()
            self.image.value = layers[-1]

    # -------------------------------------------------------------------------- drawing
    def _show_model_kept(self, event) -> None:
        """The chosen model failed to load: show the one clicks still use."""
        request = event.request
        if request is None:
            return
        self._reverting = True  # these changes restore the session in use; start none
        try:
            self.model_name.value, self.device.value = request.choice, request.device
            if request.checkpoint is not None:
                self.checkpoint.value = request.checkpoint
                known = request.name in self.architecture.choices
                self.architecture.value = request.name if known else FROM_FILE
        finally:
            self._reverting = False

    def _show_status(self, event) -> None:
        self.status.value = event.message

    def _show_progress(self, event) -> None:
        """Progress goes on the bar itself, so the status line keeps what happened last (an
        error, a restore's result) while slices are encoded."""
        step = event.step
        self.progress.max = max(step.total, 1)
        self.progress.value = step.done
        self.progress.native.setFormat(step.message or "%p%")
        self.progress.native.setToolTip(step.message)

    def _show_busy(self, event) -> None:
        self.cancel.enabled = event.value

    def _show_acquisition(self, event) -> None:
        self.acquisition.value = event.value or OFF

    def _show_answer(self, event) -> None:
        """Say what the map on screen is and how many suggestions it gives (the hint line
        asks the first one), and which clicks the mask leaves out."""
        said = []
        found = event.answer.uncertainty
        if found is not None:
            title = ACQUISITIONS[found.acquisition].title
            said.append(f"{title}: {len(found.suggestions)} suggestions" if found.suggestions
                        else f"{title}: no suggestion, the model is sure everywhere")  # fmt: skip
        missed = left_out(event.answer.mask, event.prompts)
        if missed:
            them = "it" if len(missed) == 1 else "them"
            said.append(f"the mask leaves out {len(missed)} of your clicks (ringed): the "
                        f"model could not take {them} in; click nearby, or adapt the model "
                        "to your objects")  # fmt: skip
        if said:
            self.status.value = "; ".join(said)

    def _show_hint(self, event=None) -> None:
        """What A, D and S answer now: the first object like yours on offer, or the first
        suggestion (:meth:`AnnotationController.keys_answer_candidates`)."""
        if not self.controller.keys_answer_candidates():
            self.hint.value = hint(self.controller.suggestions)
            return
        _, found = self.controller.objects.candidates
        self.hint.value = (f"object like yours (1 of {len(found)}, predicted Dice "
                           f"{found[0].predicted_dice:.2f}): A = accept, D = reject, "
                           "S = next")  # fmt: skip

    def _show_uncertain_slices(self, event) -> None:
        ranked = event.ranked or []
        self.uncertain_slices.value = (
            ", ".join(f"{','.join(map(str, i))}: {v:.3f}" for i, v in ranked) or "-"
        )

    # ---------------------------------------------------- the controller, for scripts
    @property
    def session(self) -> AnnotationSession | None:
        return self.controller.session

    @property
    def suggestions(self) -> tuple[Suggestion, ...]:
        """The suggestions still on offer, best first (empty when there are none)."""
        return self.controller.suggestions

    def current_index(self) -> tuple[int, ...]:
        """The data index of the slice on screen (``()`` for a single image)."""
        return self.controller.current_index()

    def current_prompts(self) -> PromptSet:
        """The prompts on the slice on screen, in SAM's (x, y)."""
        return self.controller.current_prompts()

    def add_click(self, row: float, col: float, positive: bool = True) -> None:
        """Add a click at (row, col) on the current slice, as a mouse click would."""
        self.controller.add_click(row, col, positive)

    def toggle_last(self) -> None:
        """Flip the polarity of the last click."""
        self.controller.toggle_last()

    def clear_prompts(self) -> None:
        """Remove the prompts of the current slice."""
        self.controller.clear_prompts()

    def answer_suggestion(self, inside: bool | None) -> None:
        """Answer the offered suggestion: inside (True), outside (False), skip (None)."""
        self.controller.answer_suggestion(inside)

    def commit(self) -> int | None:
        """Write the previewed object into the output layer; its label, or None."""
        return self.controller.commit()

    def encode(self, indices: list[tuple[int, ...]]):
        """Encode slices on a worker; return the worker."""
        return self.controller.encode(indices)

    def encode_all(self):
        """Encode every slice, the current one first, on a worker; return the worker."""
        return self.controller.encode_all()

    def cancel_encoding(self) -> None:
        """Stop encoding or propagation."""
        self.controller.cancel_encoding()

    def cancel_all(self) -> None:
        """Stop encoding, propagation and learning."""
        self.controller.cancel_all()

    def propagate(self) -> None:
        """Grow the prompted object through the volume and commit it."""
        self.controller.propagate()

    def learn(self) -> None:
        """Retrain the Bayesian head on the committed objects."""
        self.controller.objects.learn()

    def save(self) -> None:
        """Save labels, prompts and settings to the annotation folder."""
        self.controller.objects.save()

    def restore(self) -> None:
        """Load the annotation saved in the annotation folder."""
        self.controller.objects.restore()

    def go_to_most_uncertain(self) -> None:
        """Move to the answered slice SAM is least sure of."""
        self.controller.go_to_most_uncertain()

    def go_to_slice(self, index: tuple[int, ...]) -> None:
        """Show the slice at data index ``index`` of the image."""
        self.controller.go_to_slice(index)
