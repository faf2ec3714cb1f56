"""The "Evaluate" dock widget: benchmark models and strategies on the user's own image.

Every object of a ground-truth Labels layer is annotated by simulated clicks with each
chosen strategy, on a worker; the mean IoU after each click is drawn in the dock, with the
area under each curve and NoC@85 in a table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
    create_widget,
)
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from ..core.engine.preprocess import CT_PRESETS
from ..core.enums import Strategy
from .closing import when_closed
from .jobs import evaluation_job
from .layers import full_resolution
from .models import checkpoint_missing, chosen_model, model_choosers
from .workers import WorkerHost

if TYPE_CHECKING:
    import napari


class EvaluateWidget(Container):
    """Run the benchmark on the current image against a ground-truth Labels layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.model_name, self.checkpoint, self.architecture = model_choosers()
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        self.ground_truth = create_widget(annotation="napari.layers.Labels", label="ground truth")
        self.window = ComboBox(label="window", choices=["percentile", *CT_PRESETS])
        self.strategies = Select(label="strategies", choices=[s.value for s in Strategy],
                                 value=["ritm", "bald", "eig", "random"])  # fmt: skip
        self.clicks = SpinBox(label="clicks", value=10, min=1, max=50)
        self.run_button = PushButton(text="Evaluate")
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.table = Label(label="results", value="-")
        self.status = Label(label="status", value="choose an image and its ground truth")
        self.extend([self.model_name, self.checkpoint, self.architecture, self.image,
                     self.ground_truth, self.window, self.strategies, self.clicks,
                     self.run_button, self.cancel, self.progress, self.table,
                     self.status])  # fmt: skip
        self.figure = Figure(figsize=(4, 3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.native.layout().addWidget(self.canvas)
        self.native.setMaximumWidth(440)
        self.summary: dict[str, Any] | None = None
        self.workers = WorkerHost(status=self._say)
        when_closed(self.native, self.workers.close)  # the host is no Qt object
        self._worker = None
        self._stopped = False
        self.run_button.changed.connect(self.run)
        self.cancel.changed.connect(self.stop)

    def run(self) -> None:
        """Start the evaluation on a worker (the GUI thread only copies the layers' data)."""
        image, truth = self.image.value, self.ground_truth.value
        if image is None or truth is None:
            self.status.value = "choose an image and a ground-truth labels layer"
            return
        if not self.strategies.value:
            self.status.value = "choose at least one strategy"
            return
        if self._worker is not None:
            return
        if checkpoint_missing(self.model_name, self.checkpoint):
            self.status.value = "choose a checkpoint file"
            return
        name, checkpoint = chosen_model(self.model_name, self.checkpoint, self.architecture)
        self.run_button.enabled, self.cancel.enabled = False, True
        self.status.value = "evaluating ..."
        self.summary, self.table.value = None, "-"  # no figures of an earlier run stay
        self.figure.clear()
        self.canvas.draw_idle()
        self._stopped = False
        self._worker = self.workers.start(
            evaluation_job, name, checkpoint, full_resolution(image), image.rgb,
            np.array(full_resolution(truth)), self.window.value, list(self.strategies.value),
            self.clicks.value, progress=self._progress, returned=self._show,
            finished=self._finished,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the evaluation before its next episode."""
        if self._worker is not None:
            self.workers.cancel(self._worker)
            self._stopped = True
            self.progress.value = 0
            self.status.value = "cancelled"

    def _progress(self, step) -> None:
        if self._stopped:  # steps already on their way when Cancel was pressed
            return
        self.progress.max = max(step.total, 1)
        self.progress.value = step.done
        self.status.value = step.message

    def _finished(self) -> None:
        self._worker = None
        self.run_button.enabled, self.cancel.enabled = True, False

    def _show(self, summary: dict[str, Any]) -> None:
        """Draw mean IoU per click for each strategy and list AUC and NoC@85."""
        if self._stopped:  # it finished as Cancel was pressed: what was asked is said
            return
        self.summary = summary
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        rows = []
        for name, figures in summary["strategies"].items():
            curve = figures["miou"]
            ax.plot(range(1, len(curve) + 1), curve, marker=".", label=name)
            rows.append(
                f"{name}: AUC {figures['auc']:.3f}, mIoU@1 {curve[0]:.3f}, "
                f"NoC@85 {figures['noc']['85']:.1f}"
            )
        ax.set_xlabel("click")
        ax.set_ylabel("mean IoU")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        self.canvas.draw_idle()
        self.table.value = "\n".join(rows)
        objects = next(iter(summary["strategies"].values()))["objects"]
        said = f"evaluated {objects} object{'s' if objects != 1 else ''}"
        if summary.get("left_out"):
            said += f"; {', '.join(summary['left_out'])} left out: the model has no Bayesian head"
        self.status.value = said

    def _say(self, message: str) -> None:
        self.status.value = message
