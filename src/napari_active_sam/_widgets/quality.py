"""Ground-truth-free quality in the dock: predicted Dice per object, per-slice plot, review list.

The panel belongs to the Active SAM dock; every estimate runs on a worker through the
dock's worker bookkeeping. Predicted Dice lands in the output labels layer's features (so
napari shows it when hovering an object), a plot per slice for volumes, and a review list of
the objects and slices under the user's threshold; choosing an entry jumps there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, Select
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.qt.threading import create_worker
from napari.utils.notifications import show_warning

from ..core.enums import Estimator
from ..core.quality.assess import assess_labels
from ..core.quality.estimators import ObjectQuality
from .layers import OUTPUT

if TYPE_CHECKING:
    from .dock import ActiveSamWidget


class QualityPanel(Container):
    """Quality controls of the Active SAM dock.

    Parameters
    ----------
    dock : ActiveSamWidget
        The dock whose session, layers and workers the panel uses.
    """

    def __init__(self, dock: ActiveSamWidget):
        super().__init__(label="quality")
        self.dock = dock
        self.estimator = ComboBox(label="quality by", choices=[e.value for e in Estimator],
                                  value=Estimator.ENSEMBLE.value)  # fmt: skip
        self.threshold = FloatSpinBox(label="review below", value=0.8, min=0.0, max=1.0,
                                      step=0.05)  # fmt: skip
        self.check_button = PushButton(text="Check quality of all objects")
        self.review = Select(label="review", choices=[])
        self.extend([self.estimator, self.threshold, self.check_button, self.review])
        self.figure = Figure(figsize=(4, 1.8), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setVisible(False)
        self.native.layout().addWidget(self.canvas)
        self.results: dict[tuple[int, tuple[int, ...]], float] = {}
        self._worker = None
        self._entries: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.check_button.changed.connect(self.check_all)
        self.threshold.changed.connect(self._refresh)
        self.review.changed.connect(self._jump)

    # ------------------------------------------------------------------------------ runs
    def check_all(self) -> None:
        """Estimate every committed object on every slice (on a worker)."""
        labels = self._committed_labels()
        if labels is None:
            self.dock.status.value = "commit some objects first"
            return
        self._run(labels, None, replace=True)

    def check_object(self, label: int) -> None:
        """Estimate one just-committed object and warn if it falls under the threshold."""
        labels = self._committed_labels()
        if labels is None:
            return
        self._run(labels, label, replace=False, warn=True)

    def _committed_labels(self) -> np.ndarray | None:
        dock = self.dock
        if dock.session is None or dock.quality is None or OUTPUT not in dock.viewer.layers:
            return None
        return np.asarray(dock.viewer.layers[OUTPUT].data).copy()

    def _run(self, labels: np.ndarray, label: int | None, replace: bool, warn: bool = False):
        dock = self.dock
        session = dock.session
        job = create_worker(_assess, self.estimator.value, session.source, labels, label,
                            dock.quality, session.store, _ignore_errors=True)  # fmt: skip
        dock._start(
            job,
            yielded=dock._encoding_progress,
            returned=lambda found: self._found(found, replace, warn),
            errored=dock._report,
        )

    def _found(self, found: list[ObjectQuality], replace: bool, warn: bool) -> None:
        if replace:
            self.results = {}
        for item in found:
            self.results[(item.label, item.index)] = item.estimate.predicted_dice
        self._refresh()
        if not found:
            self.dock.status.value = "no committed object to judge: commit some objects first"
            return
        notes = {item.estimate.note for item in found if item.estimate.note}
        self.dock.status.value = (
            f"predicted Dice of {len({i.label for i in found})} object(s) by "
            f"{found[0].estimate.estimator}" + (f" ({'; '.join(sorted(notes))})" if notes else "")
        )
        if warn:
            low = [i for i in found if i.estimate.predicted_dice < self.threshold.value]
            for item in low:
                where = f" on slice {item.index}" if item.index else ""
                show_warning(
                    f"Object {item.label}{where} has predicted Dice "
                    f"{item.estimate.predicted_dice:.2f} < {self.threshold.value:.2f}: "
                    "review it (it is in the review list)."
                )

    # ------------------------------------------------------------------------- display
    def per_object(self) -> dict[int, float]:
        """Predicted Dice per object: the mean over the slices it is on."""
        grouped: dict[int, list[float]] = {}
        for (label, _), value in self.results.items():
            grouped.setdefault(label, []).append(value)
        return {label: float(np.mean(v)) for label, v in grouped.items()}

    def _refresh(self, *_) -> None:
        """Labels features, review list and per-slice plot from the current results."""
        dock = self.dock
        if OUTPUT in dock.viewer.layers:
            output = dock.viewer.layers[OUTPUT]
            objects = self.per_object()
            keep = sorted(objects)
            output.features = {
                "index": np.array([0, *keep], int),
                "predicted_dice": np.array([np.nan, *(objects[k] for k in keep)]),
            }
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
        ax.set_ylabel("predicted Dice\n(worst object)", fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        self.canvas.draw_idle()

    def _jump(self, *_) -> None:
        chosen = self.review.value
        if not chosen:
            return
        label, index = self._entries[chosen[0]]
        dock = self.dock
        if index:
            dock.go_to_slice(index)
        if OUTPUT in dock.viewer.layers:
            dock.viewer.layers[OUTPUT].selected_label = label
        dock.status.value = f"object {label}" + (f" on slice {index}" if index else "")


def _assess(estimator, source, labels: np.ndarray, label: int | None, models, store):
    """Worker generator: :func:`assess_labels` on every object, or on object ``label``
    alone (selected here, off the GUI thread)."""
    if label is not None:
        labels = np.where(labels == label, label, 0)
    if not labels.any():
        return []
    return (yield from assess_labels(estimator, source, labels, models, store))
