"""Ground-truth-free quality in the dock: predicted Dice per object, per-slice plot, review list.

The panel asks the annotation controller for estimates (each runs on a worker) and draws
what comes back: predicted Dice in the output labels layer's features (so napari shows it
when hovering an object), a plot per slice for volumes, and a review list of the objects and
slices under the user's threshold; choosing an entry jumps there. A just-committed object
is judged at once, and a warning names it if it falls under the threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, Select
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from napari.utils.notifications import show_warning

from ..core.enums import Estimator
from .layers import set_object_features, show_predicted_dice

if TYPE_CHECKING:
    from ..core.quality.estimators import ObjectQuality
    from .controller import AnnotationController


class QualityPanel(Container):
    """Quality controls of the Active SAM dock.

    Parameters
    ----------
    controller : AnnotationController
        Its ``objects`` run the estimates; its events announce them (``quality_checked``)
        and the commits.
    """

    def __init__(self, controller: AnnotationController):
        super().__init__(label="quality")
        self.controller = controller
        self.estimator = ComboBox(label="quality by", choices=[e.value for e in Estimator],
                                  value=Estimator.ENSEMBLE.value)  # fmt: skip
        self.threshold = FloatSpinBox(label="review below", value=0.8, min=0.0, max=1.0,
                                      step=0.05)  # fmt: skip
        self.check_button = PushButton(text="Check quality of all objects")
        self.review = Select(label="review", choices=[])
        self.measure_button = PushButton(text="Measure volumes (95 % interval)")
        self.volumes = Select(label="volumes", choices=[])
        self.extend([self.estimator, self.threshold, self.check_button, self.review,
                     self.measure_button, self.volumes])  # fmt: skip
        self.figure = Figure(figsize=(4, 1.8), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setVisible(False)
        self.native.layout().addWidget(self.canvas)
        self.results: dict[tuple[int, tuple[int, ...]], float] = {}
        self._entries: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.check_button.changed.connect(self.check_all)
        self.threshold.changed.connect(self._refresh)
        self.review.changed.connect(self._jump)
        self.measure_button.changed.connect(controller.measure)
        self.volumes.changed.connect(self._jump_to_measured)
        self._measured_entries: dict[str, tuple[int, tuple[int, ...]]] = {}
        controller.events.committed.connect(self._committed)
        controller.events.quality_checked.connect(self._checked)
        controller.events.measured.connect(self._measured)
        controller.events.objects_removed.connect(self.reset)
        controller.events.session_ready.connect(self._session_ready)

    def reset(self, event=None) -> None:
        """Forget every estimate and measurement (their objects are gone)."""
        self.results = {}
        self._measured_entries = {}
        self.volumes.choices = []
        self._refresh()

    def _session_ready(self, event) -> None:
        if event.new_image:  # the estimates were of another image's objects
            self.reset()

    # ------------------------------------------------------------------------------ runs
    def check_all(self) -> None:
        """Estimate every committed object on every slice (on a worker)."""
        self.controller.objects.check_quality(self.estimator.value)

    def check_object(self, label: int) -> None:
        """Estimate one object; a warning follows if it falls under the threshold."""
        self.controller.objects.check_quality(self.estimator.value, label)

    def _committed(self, event) -> None:
        self.check_object(event.label)

    def _checked(self, event) -> None:
        found: list[ObjectQuality] = event.found
        if event.label is None:  # every object was judged: these results replace the old
            self.results = {}
        for item in found:
            self.results[(item.label, item.index)] = item.estimate.predicted_dice
        self._refresh()
        if event.label is None:
            return
        for message in low_quality_warnings(found, self.threshold.value):
            show_warning(message)

    # ------------------------------------------------------------------------- display
    def per_object(self) -> dict[int, float]:
        """Predicted Dice per object: the mean over the slices it is on."""
        grouped: dict[int, list[float]] = {}
        for (label, _), value in self.results.items():
            grouped.setdefault(label, []).append(value)
        return {label: float(np.mean(v)) for label, v in grouped.items()}

    def _refresh(self, *_) -> None:
        """Labels features, review list and per-slice plot from the current results."""
        show_predicted_dice(self.controller.viewer, self.per_object())
        under = sorted(
            (value, label, index)
            for (label, index), value in self.results.items()
            if value < self.threshold.value
        )
        self._entries = {
            f"object {label}" + (f", slice {','.join(map(str, index))}" if index else "")
            + f": {value:.2f}": (label, index)
            for value, label, index in under
        }  # fmt: skip
        self.review.choices = list(self._entries)
        self._plot()

    def _plot(self) -> None:
        slices = {index for _, index in self.results if len(index) == 1}
        self.canvas.setVisible(bool(slices))
        if not slices:
            return
        worst: dict[int, float] = {}
        for (_, index), value in self.results.items():
            if len(index) == 1:
                worst[index[0]] = min(value, worst.get(index[0], 1.0))
        zs = sorted(worst)
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        ax.plot(zs, [worst[z] for z in zs], marker=".", color="tab:blue")
        ax.axhline(self.threshold.value, color="tab:red", linewidth=0.8)
        ax.set_xlabel("slice", fontsize=7)
        ax.set_ylabel("worst predicted Dice", fontsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # slices are whole numbers
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        self.canvas.draw_idle()

    def _measured(self, event) -> None:
        """Volumes and intervals into the output layer's features and the volumes list."""
        found = event.found
        unit = "mm3" if event.unit == "mm³" else "mm2"
        set_object_features(self.controller.viewer, {
            f"volume_{unit}": {m.label: m.volume_mm3 for m in found},
            f"volume_low_{unit}": {m.label: m.volume_low_mm3 for m in found},
            f"volume_high_{unit}": {m.label: m.volume_high_mm3 for m in found},
        })  # fmt: skip
        self._measured_entries = {
            f"object {m.label}: {m.volume_mm3:.0f} {event.unit} ({m.volume_low_mm3:.0f}–"
            f"{m.volume_high_mm3:.0f}), Dice {m.predicted_dice:.2f}":
            (m.label, (m.first_slice,) if event.unit == "mm³" else ())
            for m in found
        }  # fmt: skip
        self.volumes.choices = list(self._measured_entries)

    def _jump_to_measured(self, *_) -> None:
        chosen = self.volumes.value
        if chosen:
            self.controller.show_object(*self._measured_entries[chosen[0]])

    def _jump(self, *_) -> None:
        chosen = self.review.value
        if chosen:
            self.controller.show_object(*self._entries[chosen[0]])


def low_quality_warnings(found: list[ObjectQuality], threshold: float) -> list[str]:
    """One warning per object with slices under ``threshold`` (a propagated object judged
    on many slices gets one, naming how many and the worst), none for the others."""
    low: dict[int, list[ObjectQuality]] = {}
    for item in found:
        if item.estimate.predicted_dice < threshold:
            low.setdefault(item.label, []).append(item)
    messages = []
    for label, items in sorted(low.items()):
        worst = min(items, key=lambda item: item.estimate.predicted_dice)
        dice = worst.estimate.predicted_dice
        slice_ = ",".join(map(str, worst.index))
        if not worst.index:
            where = ""
        elif len(items) == 1:
            where = f" on slice {slice_}"
        else:
            where = f" on {len(items)} slices (worst: slice {slice_})"
        messages.append(
            f"Object {label} has predicted Dice {dice:.2f} < {threshold:.2f}{where}: review "
            "it (the review list has every slice)."
        )
    return messages
