"""Uncertainty along z: how sure the model was on each slice of the object last propagated.

After a propagation the panel plots, per slice the model decoded, the disagreement of
SAM's heads (bars; red where growth stopped) and SAM's predicted IoU (a line). A click on
the plot goes to that slice; the button goes to the slice the model was least sure of, the
place to check and correct first, and starts the correction there: a click at the object's
deepest point brings its mask, uncertainty map and suggested clicks; once answered,
*Propagate* grows the object again from its seeds and that slice, under the same label.
Growth can also be told to stop where the heads disagree more than a bound (drawn on the
plot as a line); 0 never stops for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import Container, FloatSpinBox, Label, PushButton
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from ..core.annotate.volume import SliceReport
    from .controller import AnnotationController


IDLE = "how sure the model was, slice by slice, after a propagation"


class AlongZPanel(Container):
    """The per-slice report of the last propagation in the Active SAM dock.

    Parameters
    ----------
    controller : AnnotationController
        Its ``propagated`` event brings the report; it moves the viewer between slices.
    """

    def __init__(self, controller: AnnotationController):
        super().__init__(label="along z")
        self.controller = controller
        self.summary = Label(value=IDLE)
        self.summary.native.setWordWrap(True)  # a long line wraps inside the dock
        # Room for three wrapped lines: the form's rows are sized before the label wraps.
        lines = self.summary.native.fontMetrics().lineSpacing()
        self.summary.native.setMinimumHeight(3 * lines + 16)  # and the theme's padding
        self.worst_button = PushButton(text="Correct the least sure slice", enabled=False)
        self.stop_above = FloatSpinBox(
            label="stop above (nats)", value=controller.max_uncertainty or 0.0, min=0.0,
            max=5.0, step=0.01,
            tooltip="Propagation stops at a slice where SAM's heads disagree more than this "
            "(the bars of the plot); 0: never stops for it",
        )  # fmt: skip
        self.extend([self.summary, self.worst_button, self.stop_above])
        self.figure = Figure(figsize=(4, 1.8), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setVisible(False)
        self.native.layout().addWidget(self.canvas)
        self.slices: dict[int, SliceReport] = {}
        self.least_sure: int | None = None
        self.object_label: int | None = None  # the object last propagated
        self.worst_button.changed.connect(self.go_to_least_sure)
        self.stop_above.changed.connect(self._bound_changed)
        self.canvas.mpl_connect("button_press_event", self._clicked)
        controller.events.propagated.connect(self._propagated)
        controller.events.objects_removed.connect(self.reset)
        controller.events.session_ready.connect(self._session_ready)

    def _bound_changed(self, value: float) -> None:
        """The disagreement above which the next propagation stops (0: none)."""
        self.controller.max_uncertainty = float(value) if value > 0 else None
        self._plot()

    def reset(self, event=None) -> None:
        """Forget the last propagation's report (its object is gone)."""
        self.slices, self.least_sure, self.object_label = {}, None, None
        self.worst_button.enabled = False
        self.summary.value = IDLE
        self._plot()

    def _session_ready(self, event) -> None:
        if event.new_image:  # the report was of an object grown through another image
            self.reset()

    def _propagated(self, event) -> None:
        self.object_label = event.label
        self.slices = dict(event.slices)
        kept = {z: r for z, r in self.slices.items() if r.kept}
        self.least_sure = max(kept, key=lambda z: kept[z].uncertainty) if kept else None
        self.worst_button.enabled = self.least_sure is not None
        if self.least_sure is None:
            why = f": stopped at {', '.join(event.stops)}" if event.stops else ""
            self.summary.value = f"object {event.label}: no slice was propagated{why}"
        else:
            worst = kept[self.least_sure]
            self.summary.value = (
                f"object {event.label}: least sure on slice {self.least_sure} "
                f"({worst.uncertainty:.3f} nats, predicted IoU {worst.predicted_iou:.2f})"
            )
        self._plot()

    def _plot(self) -> None:
        self.canvas.setVisible(bool(self.slices))
        self.figure.clear()
        if not self.slices:
            return
        ax = self.figure.add_subplot(111)
        zs = sorted(self.slices)
        colours = ["tab:blue" if self.slices[z].kept else "tab:red" for z in zs]
        ax.bar(zs, [self.slices[z].uncertainty for z in zs], color=colours, width=0.8)
        bound = self.controller.max_uncertainty
        if bound is not None:
            ax.axhline(bound, color="tab:red", ls="--", lw=1)
        ax.set(xlabel="slice", ylabel="disagreement (nats)")
        ax.set_xlim(min(zs) - 1, max(zs) + 1)
        quality = ax.twinx()
        quality.plot(zs, [self.slices[z].predicted_iou for z in zs], color="tab:orange",
                     marker=".", lw=1)  # fmt: skip
        quality.set_ylim(0, 1.05)
        quality.set_ylabel("predicted IoU")
        self.axes = ax
        self.canvas.draw_idle()

    def _clicked(self, event) -> None:
        """A click on the plot: go to the slice under it."""
        if event.xdata is None or not self.slices:
            return
        nearest = min(self.slices, key=lambda z: abs(z - event.xdata))
        self.controller.go_to_slice((nearest,))

    def go_to_least_sure(self) -> None:
        """Go to the slice the model was least sure of and start correcting the object
        there (its mask, map and suggested clicks drawn on that slice)."""
        if self.least_sure is not None and self.object_label is not None:
            self.controller.correct_slice(self.object_label, self.least_sure)
